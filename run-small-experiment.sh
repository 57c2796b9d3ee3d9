#!/usr/bin/env bash
# Quick start: importance-aware DPT end to end on the real Fashion-MNIST, offline, in a couple of
# minutes on 2 CPU cores. 2 workers launched by torchrun (gloo on CPUs, NCCL on 2+ GPUs, one rank
# emulating both on a single GPU): LeNet-5 (the CPU image model) on 10,000 images, the paper's
# optimizer, 3 warmup epochs -> Stripes over loss variance, repartitioned every 2 epochs -> a CSV row
# in the paper's schema. Its last lines give the one command that compares it with vanilla DPT and
# the random-partition control over 3 seeds, and prints report.py's answer.
#
#     bash setup.sh && bash run-small-experiment.sh [extra dpt.py flags, e.g. --seed 2]
set -euo pipefail
cd "$(dirname "$0")"
source quickstart.sh
need_venv run-small-experiment.sh
results=${RESULTS_DIR:-results/small-experiment}

launch_small "$results" "the tables (one run; the comparison below tests it)" \
  --dataset fashionmnist --model lenet5 --subset 10000 --heuristic stripes --measure variance --total-epochs 8 \
  --warmup-epochs 3 --ignore-epochs 1 --interval-epochs 2 --batch-size 32 --eval-protocol standard \
  --description "run-small-experiment.sh" "$@"
compare partitions "--subset 10000" "about 20 minutes"
