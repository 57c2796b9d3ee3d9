#!/usr/bin/env bash
# Quick start for recommendation: importance-aware DPT of NeuMF (NCF) on the real MovieLens-100K
# (GroupLens's 100,000 ratings of 943 users on 1,682 movies, which setup.sh takes from RecBole's wheel
# on PyPI), offline, in about 2 minutes on 2 CPU cores. 2 workers launched by torchrun (gloo on CPUs;
# one rank emulating both on a single GPU): 3 warmup epochs -> Stripes over loss variance,
# repartitioned every 2 epochs; HR@10 and NDCG@10 of each user's held-out item every epoch; a CSV row
# (best HR@10) at the end, and the command that compares it with vanilla DPT and the random control.
#
#     bash setup.sh && bash run-small-ncf-experiment.sh [extra dpt.py flags, e.g. --seed 2]
set -euo pipefail
cd "$(dirname "$0")"
source quickstart.sh
need_venv run-small-ncf-experiment.sh
results=${RESULTS_DIR:-results/small-ncf-experiment}
echo "MovieLens-100K: the real ratings (GroupLens), read from data/ml-100k"

launch_small "$results" "the tables (HR@10: higher is better)" \
  --dataset movielens-100k --data-dir data --heuristic stripes --measure variance --total-epochs 8 \
  --warmup-epochs 3 --ignore-epochs 1 --interval-epochs 2 --batch-size 256 --optimizer adamw --lr 0.001 \
  --weight-decay 0 --description "run-small-ncf-experiment.sh (MovieLens-100K)" "$@"
compare ncf "" "about 35 minutes"
