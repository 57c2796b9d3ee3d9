#!/usr/bin/env bash
# Quick start: importance-aware DPT end to end on a small slice of the real Fashion-MNIST, offline,
# in a few minutes on 2 CPU cores. 2 workers launched by torchrun (gloo on CPUs, NCCL on 2+ GPUs,
# one rank emulating both on a single GPU),
# warmup -> repartition (Stripes over loss variance) -> intervals -> a CSV row in the paper's schema.
# The paper's settings but for the size: 2000 examples, 8 epochs, batch 64 per worker (so lr 0.05).
#
#     bash setup.sh && bash run-small-experiment.sh [extra dpt.py flags, e.g. --seed 2]
set -euo pipefail
cd "$(dirname "$0")"
source quickstart.sh
need_venv run-small-experiment.sh
results=${RESULTS_DIR:-results/small-experiment}

launch_small "$results" "the tables (one run: no tests yet; add --seed 2 runs)" \
  --dataset fashionmnist --model resnet18 --subset 2000 --test-subset 1000 --heuristic stripes --measure variance \
  --total-epochs 8 --warmup-epochs 3 --ignore-epochs 1 --interval-epochs 2 --batch-size 64 --lr 0.05 \
  --description "run-small-experiment.sh" "$@"
