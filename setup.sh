#!/usr/bin/env bash
# One-time set-up on a fresh machine (idempotent): a virtual environment in .venv with
# requirements.txt, and the real datasets that Debian packages: Fashion-MNIST (dataset-fashion-mnist)
# and the King James Bible (bible-kjv) for the language-modelling task.
#
#     bash setup.sh && bash run-small-experiment.sh     # the quick start
#     bash setup.sh && .venv/bin/python -m ruff check . && .venv/bin/python -m pytest   # lint and the tests
set -euo pipefail
cd "$(dirname "$0")"

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# pip's own output stays quiet; a failed install stops here with pip's error and a non-zero status.
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
.venv/bin/python -c "import torch, torchvision" || { echo "setup.sh: requirements.txt installed, but torch does not import" >&2; exit 1; }

missing=()
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || missing+=(dataset-fashion-mnist)
command -v bible >/dev/null || [ -f data/kjv/kjv.txt ] || missing+=(bible-kjv)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
  if command -v apt-get >/dev/null && { $sudo apt-get update -qq && $sudo apt-get install -y -qq "${missing[@]}"; } >/dev/null 2>&1; then
    echo "setup.sh: installed ${missing[*]}"
  else
    echo "setup.sh: could not install Debian's ${missing[*]} (apt-get install ${missing[*]}); without them put the four" \
         "Fashion-MNIST .gz files in data/ and pass --text-file for the text task" >&2
  fi
fi
echo "setup.sh: ready ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
