#!/usr/bin/env bash
# Quick start for language modelling: importance-aware DPT of a small GPT on 2,000 chunks of the King
# James Bible (Debian's bible-kjv, installed by setup.sh), offline, in about 2.5 minutes on 2 CPU cores.
# 2 workers launched by torchrun (gloo on CPUs; one rank emulating both on a single GPU):
# 3 warmup epochs -> Stripes over loss variance, repartitioned every 2 epochs; held-out perplexity and
# bits per byte printed every epoch; a CSV row (best bits per byte) at the end.
#
#     bash setup.sh && bash run-small-text-experiment.sh [extra dpt.py flags, e.g. --model lstm]
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/torchrun ]; then
  echo "run-small-text-experiment.sh: error: no .venv here; run 'bash setup.sh' first" >&2
  exit 2
fi
results=${RESULTS_DIR:-results/small-text-experiment}

gpus=$(.venv/bin/python -c "import torch; print(torch.cuda.device_count())")
if [ "$gpus" -eq 1 ]; then
  nproc=1 emulate=(--emulate-workers 2)
else
  nproc=2 emulate=()
fi
args=("${emulate[@]}" --dataset kjv --model gpt --subset 2000 --test-subset 500 --seq-len 128
      --heuristic stripes --measure variance --total-epochs 9 --warmup-epochs 3 --ignore-epochs 1
      --interval-epochs 2 --batch-size 32 --optimizer adamw --lr 0.01 --weight-decay 0.1
      --results-dir "$results" --description "run-small-text-experiment.sh" "$@")

# Every up-front check first (one line and exit 2 on bad input, not torchrun's failure summary).
.venv/bin/python dpt.py --preflight "$nproc" "${args[@]}" > /dev/null
OMP_NUM_THREADS=1 .venv/bin/torchrun --standalone --nproc_per_node="$nproc" dpt.py "${args[@]}"

# The exact paths and the next commands, to paste as they are.
where=$(pwd)
shown=$(cd "$results" && pwd)
echo
echo "The row and its JSON log are under $shown. Next, from $where:"
echo "  .venv/bin/python report.py $shown      # the tables (bits per byte: lower is better)"
echo "  DPT_RESULTS=$shown DPT_FIGURES=$shown/figures .venv/bin/jupyter nbconvert --to notebook --execute \\"
echo "      plots.ipynb --output-dir $shown/figures      # the figures, listed when it ends"
