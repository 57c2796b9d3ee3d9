#!/usr/bin/env bash
# One-time set-up on a fresh machine (idempotent): a virtual environment in .venv with
# requirements.txt, the real datasets that Debian packages: Fashion-MNIST (dataset-fashion-mnist)
# and the King James Bible (bible-kjv) for the language-modelling task, and MovieLens-100K's ratings
# for recommendation (from a wheel on PyPI).
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
# the plug-in for users' own loops (importance_dpt), editable: examples/ import it as an installed package would
out=$(.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e . 2>&1) || { echo "$out" >&2; exit 1; }

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
# MovieLens-100K, real and offline: RecBole's wheel on PyPI ships GroupLens's ratings as ml-100k.inter;
# only that file is kept (RecBole is not installed), checked against its SHA-256.
ml100k=data/ml-100k/ml-100k.inter
if [ ! -f "$ml100k" ] && [ ! -f data/ml-100k/u.data ]; then
  wheel=$(mktemp -d)
  if .venv/bin/python -m pip download -q --no-deps --disable-pip-version-check recbole==1.2.1 -d "$wheel" >/dev/null 2>&1 &&
     .venv/bin/python - "$wheel" "$ml100k" <<'PY'
import glob, hashlib, pathlib, sys, zipfile
body = zipfile.ZipFile(glob.glob(sys.argv[1] + "/recbole-*.whl")[0]).read("recbole/dataset_example/ml-100k/ml-100k.inter")
assert hashlib.sha256(body).hexdigest() == "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff"
out = pathlib.Path(sys.argv[2])
out.parent.mkdir(parents=True, exist_ok=True)
out.with_suffix(".part").write_bytes(body)
out.with_suffix(".part").rename(out)
PY
  then
    echo "setup.sh: MovieLens-100K's ratings in $ml100k (from RecBole's wheel)"
  else
    echo "setup.sh: could not fetch MovieLens-100K (pip download recbole==1.2.1); the recommendation quick start" \
         "needs data/ml-100k/u.data from https://files.grouplens.org/datasets/movielens/ml-100k.zip" >&2
  fi
  rm -rf "$wheel"
fi
echo "setup.sh: ready ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
