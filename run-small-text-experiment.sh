#!/usr/bin/env bash
# Quick start for language modelling: importance-aware DPT of a small GPT on 2,000 chunks of the King
# James Bible (Debian's bible-kjv, installed by setup.sh), offline, in about 2.5 minutes on 2 CPU cores.
# 2 workers launched by torchrun (gloo on CPUs; one rank emulating both on a single GPU):
# 3 warmup epochs -> Stripes over loss variance, repartitioned every 2 epochs; held-out perplexity and
# bits per byte printed every epoch; a CSV row (best bits per byte) at the end, and the command that
# compares it with vanilla DPT and the random-partition control.
#
#     bash setup.sh && bash run-small-text-experiment.sh [extra dpt.py flags, e.g. --model lstm]
set -euo pipefail
cd "$(dirname "$0")"
source quickstart.sh
need_venv run-small-text-experiment.sh
results=${RESULTS_DIR:-results/small-text-experiment}

launch_small "$results" "the tables (bits per byte: lower is better)" \
  --dataset kjv --model gpt --subset 2000 --test-subset 500 --seq-len 128 --heuristic stripes --measure variance \
  --total-epochs 9 --warmup-epochs 3 --ignore-epochs 1 --interval-epochs 2 --batch-size 32 --optimizer adamw \
  --lr 0.01 --weight-decay 0.1 --description "run-small-text-experiment.sh" "$@"
compare lm "" "about 25 minutes"
