#!/usr/bin/env bash
# One-time set-up on a fresh machine (idempotent): a virtual environment in .venv with
# requirements.txt, and the real Fashion-MNIST files from Debian's dataset-fashion-mnist.
#
#     bash setup.sh && bash run-small-experiment.sh     # the quick start
#     bash setup.sh && .venv/bin/python -m pytest       # the tests
set -euo pipefail
cd "$(dirname "$0")"

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
.venv/bin/python -m pip install -q -r requirements.txt 2>&1 | grep -v "is ignored" || true
.venv/bin/python -c "import torch, torchvision" || { echo "setup.sh: installing requirements.txt failed" >&2; exit 1; }

fmnist=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
if [ ! -f "$fmnist" ] && command -v apt-get >/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
  { $sudo apt-get update -qq && $sudo apt-get install -y -qq dataset-fashion-mnist; } >/dev/null 2>&1 ||
    echo "setup.sh: could not install Debian's dataset-fashion-mnist; put the four Fashion-MNIST .gz files in data/ instead" >&2
fi
echo "setup.sh: ready ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
