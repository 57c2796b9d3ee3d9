#!/usr/bin/env bash
# Quick start for recommendation: importance-aware DPT of NeuMF (NCF) on GENERATED ratings in the
# MovieLens-1M layout (movielens.generate: 600 users x 500 items, seeded; its numbers say nothing about
# MovieLens), offline, in about a minute on 2 CPU cores. 2 workers launched by torchrun (gloo on
# CPUs; one rank emulating both on a single GPU): 3 warmup epochs -> Stripes over loss variance,
# repartitioned every 2 epochs; HR@10 and NDCG@10 of each user's held-out item every epoch; a CSV row
# (best HR@10) at the end. For the real data put ml-1m/ratings.dat in a folder and pass --data-dir.
#
#     bash setup.sh && bash run-small-ncf-experiment.sh [extra dpt.py flags, e.g. --seed 2]
set -euo pipefail
cd "$(dirname "$0")"
source quickstart.sh
need_venv run-small-ncf-experiment.sh
results=${RESULTS_DIR:-results/small-ncf-experiment}
generated=data/movielens-generated
# written every time (the same seeded file), so that nothing else left there is trained on
.venv/bin/python -c "import movielens; print('GENERATED ratings (not MovieLens):', \
movielens.generate('$generated', users=600, items=500, per_user=30))"

launch_small "$results" "the tables (HR@10: higher is better; generated data)" \
  --dataset movielens-1m --data-dir "$generated" --heuristic stripes --measure variance --total-epochs 9 \
  --warmup-epochs 3 --ignore-epochs 1 --interval-epochs 2 --batch-size 256 --optimizer adamw --lr 0.001 \
  --weight-decay 0 --description "run-small-ncf-experiment.sh (generated MovieLens-format data)" "$@"
