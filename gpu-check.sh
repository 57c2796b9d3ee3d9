#!/usr/bin/env bash
# One call on a lent GPU measures what the performance docs quote, in about 8 minutes on one
# H100/H200: bench.py at full size (ResNet-18, 4 workers x 256, bf16 and float32, tracking off, loss
# only and every channel, the paper-style loop; the language models' tokens/s; the reducers against
# torch.topk; the I/O simulator), bench.py --concurrent 1 4 8 16 with the 1830-run estimate, a
# world-size-1 torchrun run (NCCL on a GPU), and real Fashion-MNIST runs (4 emulated workers x 256,
# lr 0.1, 30 epochs; Stripes-variance W10 I5 E_ignore 5 and vanilla, standard and paper evaluation)
# beside the reference 90.7-91.3%. Writes OUT_DIR/summary.json and summary.md (device, torch and CUDA,
# the commit, every figure) and each step's log; then, with the minutes left, vanilla, Stripes-variance
# and the random control over GPU_CHECK_STUDY_SEEDS seeds at once, and whether importance beats the
# control (report.py on those runs). It never downloads (Fashion-MNIST's four .gz files
# come from --data-dir). --smoke runs every step CPU-sized in a few minutes (CI runs it).
#
#     bash gpu-check.sh --smoke /tmp/gpu-check                          # anywhere, CPU-sized
#     bash gpu-check.sh results/gpu-check --data-dir data/fashion-mnist  # on the GPU
set -uo pipefail  # empty arrays are written ${a[@]+"${a[@]}"}: bash before 4.4 calls them unbound
cd "$(dirname "$0")"
smoke=0
if [ "${1:-}" = --smoke ]; then smoke=1; shift; fi
out=${1:-}
if [ -z "$out" ]; then
  echo "gpu-check.sh: error: usage: bash gpu-check.sh [--smoke] OUT_DIR [--data-dir FOLDER]" >&2
  exit 2
fi
shift
data=/usr/share/datasets/fashion-mnist
if [ "${1:-}" = --data-dir ]; then data=${2:?--data-dir needs a folder}; fi
for f in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz; do
  if [ ! -f "$data/$f" ]; then
    echo "gpu-check.sh: error: $data/$f is missing; put Fashion-MNIST's four .gz files there (or pass --data-dir)" >&2
    exit 2
  fi
done
py=.venv/bin/python
[ -x "$py" ] || py=python3
mkdir -p "$out" || exit 2
: > "$out/steps.txt"

# Each step: its log, its exit status and seconds in steps.txt; a failed step does not stop the others.
step() {
  local name=$1 start rc
  shift
  start=$(date +%s)
  echo "gpu-check.sh: $name ..." >&2
  "$@" > "$out/$name.log" 2>&1
  rc=$?
  echo "$name $rc $(( $(date +%s) - start ))" >> "$out/steps.txt"
}

if [ $smoke -eq 1 ]; then
  bench=(--workers 2 --batch-size 4 --text-batch 4 --steps 2 --partition-examples 2000 --sim-examples 2000
         --sim-epochs 30 --score-examples 16)
  concurrent=(--workers 2 --batch-size 4 --steps 2 --concurrent 1 2)
  fmnist=(--subset 512 --test-subset 256 --batch-size 32 --total-epochs 3 --emulate-workers 4)
  schedule=(--warmup-epochs 1 --interval-epochs 1 --ignore-epochs 0)
  ranked=(--subset 256 --test-subset 128 --batch-size 32)
else
  bench=()
  concurrent=(--concurrent 1 4 8 16)
  fmnist=(--batch-size 256 --total-epochs 30 --emulate-workers 4 --data-on-device --amp bf16)
  schedule=(--warmup-epochs 10 --interval-epochs 5 --ignore-epochs 5)
  ranked=(--subset 2048 --test-subset 512 --batch-size 64)
fi
common=(--dataset fashionmnist --model resnet18 --data-dir "$data" --lr 0.1 --checkpoint-every 0)

step bench "$py" bench.py ${bench[@]+"${bench[@]}"} --out "$out/bench.json"
[ $smoke -eq 1 ] || step bench-float32 "$py" bench.py --amp none --out "$out/bench-float32.json"
step concurrent "$py" bench.py "${concurrent[@]}" --out "$out/concurrent.json"
step torchrun "$py" -m torch.distributed.run --standalone --nproc_per_node=1 dpt.py "${common[@]}" "${ranked[@]}" \
  --total-epochs 2 --warmup-epochs 1 --interval-epochs 1 --ignore-epochs 0 --results-dir "$out/runs-torchrun"
for protocol in standard paper; do
  step "fmnist-stripes-$protocol" "$py" dpt.py "${common[@]}" "${fmnist[@]}" "${schedule[@]}" --heuristic stripes \
    --measure variance --eval-protocol "$protocol" --results-dir "$out/runs-$protocol"
  step "fmnist-vanilla-$protocol" "$py" dpt.py "${common[@]}" "${fmnist[@]}" --heuristic none \
    --eval-protocol "$protocol" --results-dir "$out/runs-$protocol"
done
# With the minutes left: vanilla, Stripes-variance and the random-partition control, every seed at once
# on the one device (as run-experiments.sh --per-gpu would), then report.py on them.
seeds=${GPU_CHECK_STUDY_SEEDS:-$([ $smoke -eq 1 ] && echo 2 || echo 3)}
study() {
  local pids=() rc=0 seed arm
  for seed in $(seq 1 "$seeds"); do
    for arm in none stripes random; do
      if [ "$arm" = none ]; then sched=(); else sched=("${schedule[@]}"); fi
      "$py" dpt.py "${common[@]}" "${fmnist[@]}" ${sched[@]+"${sched[@]}"} --heuristic "$arm" --measure variance \
        --eval-protocol standard --seed "$seed" --results-dir "$out/runs-study" > "$out/study-$arm-$seed.log" 2>&1 &
      pids+=($!)
    done
  done
  for pid in "${pids[@]}"; do wait "$pid" || rc=1; done
  "$py" report.py "$out/runs-study" --paper '' || rc=1
  return $rc
}
step study study
"$py" gpucheck.py "$out" --smoke "$smoke"
