#!/usr/bin/env bash
# Quick start: importance-aware DPT end to end on a small slice of the real Fashion-MNIST, offline,
# in a few minutes on 2 CPU cores. 2 workers launched by torchrun (gloo on CPUs, NCCL on 2+ GPUs,
# one rank emulating both on a single GPU),
# warmup -> repartition (Stripes over loss variance) -> intervals -> a CSV row in the paper's schema.
# The paper's settings but for the size: 2000 examples, 8 epochs, batch 64 per worker (so lr 0.05).
#
#     bash setup.sh && bash run-small-experiment.sh [extra dpt.py flags]
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
  launch=(--nproc_per_node=1 dpt.py --emulate-workers 2)
else
  launch=(--nproc_per_node=2 dpt.py)
fi

OMP_NUM_THREADS=1 .venv/bin/torchrun --standalone "${launch[@]}" \
  --dataset fashionmnist --model resnet18 --subset 2000 --test-subset 1000 \
  --heuristic stripes --measure variance --total-epochs 8 --warmup-epochs 3 --ignore-epochs 1 \
  --interval-epochs 2 --batch-size 64 --lr 0.05 \
  --results-dir "$results" --description "run-small-experiment.sh" "$@"

echo
echo "Results: $results/FashionMNIST-ResNet18-Stripes-Variance/W3-INT2-IGN1.csv (one row per run, the paper's schema)"
echo "         $results/FashionMNIST-ResNet18-Stripes-Variance/logs/ (per-run JSON: args, per-epoch accuracy, loss, overheads)"
