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
if [ ! -x .venv/bin/torchrun ]; then
  echo "run-small-experiment.sh: error: no .venv here; run 'bash setup.sh' first" >&2
  exit 2
fi
results=${RESULTS_DIR:-results/small-experiment}

# NCCL cannot put two ranks on one GPU: there, one rank emulates both workers.
gpus=$(.venv/bin/python -c "import torch; print(torch.cuda.device_count())")
if [ "$gpus" -eq 1 ]; then
  nproc=1 emulate=(--emulate-workers 2)
else
  nproc=2 emulate=()
fi
args=("${emulate[@]}" --dataset fashionmnist --model resnet18 --subset 2000 --test-subset 1000
      --heuristic stripes --measure variance --total-epochs 8 --warmup-epochs 3 --ignore-epochs 1
      --interval-epochs 2 --batch-size 64 --lr 0.05 --results-dir "$results" --description "run-small-experiment.sh"
      "$@")

# Every up-front check first, as the launch will run them: bad input (or a run that is done) is one
# line and exit 2 here, rather than that line inside torchrun's 40-line failure summary.
.venv/bin/python dpt.py --preflight "$nproc" "${args[@]}" > /dev/null
OMP_NUM_THREADS=1 .venv/bin/torchrun --standalone --nproc_per_node="$nproc" dpt.py "${args[@]}"

# The exact paths and the next commands, to paste as they are.
where=$(pwd)
shown=$(cd "$results" && pwd)
echo
echo "The row and its JSON log are under $shown. Next, from $where:"
echo "  .venv/bin/python report.py $shown      # the tables (one run: no tests yet; add --seed 2 runs)"
echo "  DPT_RESULTS=$shown DPT_FIGURES=$shown/figures .venv/bin/jupyter nbconvert --to notebook --execute \\"
echo "      plots.ipynb --output-dir $shown/figures      # the figures, listed when it ends"
