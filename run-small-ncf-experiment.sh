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
if [ ! -x .venv/bin/torchrun ]; then
  echo "run-small-ncf-experiment.sh: error: no .venv here; run 'bash setup.sh' first" >&2
  exit 2
fi
results=${RESULTS_DIR:-results/small-ncf-experiment}
generated=data/movielens-generated
if [ ! -f "$generated/ml-1m/ratings.dat" ]; then
  .venv/bin/python -c "import movielens; print('GENERATED ratings (not MovieLens):', \
movielens.generate('$generated', users=600, items=500, per_user=30))"
fi

gpus=$(.venv/bin/python -c "import torch; print(torch.cuda.device_count())")
if [ "$gpus" -eq 1 ]; then
  nproc=1 emulate=(--emulate-workers 2)
else
  nproc=2 emulate=()
fi
args=("${emulate[@]}" --dataset movielens-1m --data-dir "$generated" --heuristic stripes --measure variance
      --total-epochs 9 --warmup-epochs 3 --ignore-epochs 1 --interval-epochs 2 --batch-size 256
      --optimizer adamw --lr 0.001 --weight-decay 0 --results-dir "$results"
      --description "run-small-ncf-experiment.sh (generated MovieLens-format data)" "$@")

# Every up-front check first (one line and exit 2 on bad input, not torchrun's failure summary).
.venv/bin/python dpt.py --preflight "$nproc" "${args[@]}" > /dev/null
OMP_NUM_THREADS=1 .venv/bin/torchrun --standalone --nproc_per_node="$nproc" dpt.py "${args[@]}"

# The exact paths and the next commands, to paste as they are.
where=$(pwd)
shown=$(cd "$results" && pwd)
echo
echo "The row and its JSON log are under $shown (generated data). Next, from $where:"
echo "  .venv/bin/python report.py $shown      # the tables (HR@10: higher is better)"
echo "  DPT_RESULTS=$shown DPT_FIGURES=$shown/figures .venv/bin/jupyter nbconvert --to notebook --execute \\"
echo "      plots.ipynb --output-dir $shown/figures      # the figures, listed when it ends"
