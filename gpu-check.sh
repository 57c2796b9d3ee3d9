#!/usr/bin/env bash
# One command on a GPU machine measures what the performance docs quote, within a budget (8 minutes by
# default) on one H100/H200, the most wanted figures first, each step stopped at its share and at the
# deadline, the summary rewritten after every step (a check cut short still says what it measured):
#   preflight      every module imports, torch sees the GPU, dpt.py's own preflight on the data (fails fast)
#   bench          bench.py at full size in bf16: the training paths (paper-style loop, ours, tracking off,
#                  loss only, every channel), the language models, the partition overhead, the reducers
#                  against torch.topk, the I/O simulator, the scoring pass
#   concurrent     bench.py --concurrent 1 4 8 16, with the 1830-run estimate
#   runs           at once: Fashion-MNIST (4 emulated workers x 256, lr 0.1, 30 epochs, Stripes-variance
#                  W10 I5 E_ignore 5 and vanilla, standard and paper evaluation) beside the reference
#                  90.7-91.3%, the random-partition control, a world-size-1 torchrun run (NCCL), and as many
#                  more seeds of vanilla / Stripes-variance / control as the concurrent figures say fit
#   study          report.py on those runs: does importance beat the random control?
#   bench-float32  bench.py's training paths and language models in float32
#   bench-speed    bench.py's speed options: optimizer kernels, layout, torch.compile default and
#                  reduce-overhead (CUDA graphs), each compilation's first epoch apart
# Writes OUT_DIR/summary.json and summary.md (device, torch and CUDA, the commit, every figure against its
# target) and each step's log; --export FOLDER copies the summary and OUT_DIR as one .tgz there after
# every step (one archive to copy back from a remote machine). It never downloads: Fashion-MNIST's four .gz files come
# from --data-dir. --smoke runs every step CPU-sized (CI runs it). GPU_CHECK_BUDGET_S sets the budget
# (default 480; smoke 900), GPU_CHECK_STUDY_SEEDS the study's seeds an arm at most (default 4; smoke 2).
#
#     bash gpu-check.sh --smoke /tmp/gpu-check                          # anywhere, CPU-sized
#     bash gpu-check.sh results/gpu-check --data-dir data/fashion-mnist  # on the GPU
set -uo pipefail  # empty arrays are written ${a[@]+"${a[@]}"}: bash before 4.4 calls them unbound
usage="usage: bash gpu-check.sh [--smoke] OUT_DIR [--data-dir FOLDER] [--export FOLDER]"
die() { echo "gpu-check.sh: error: $*" >&2; exit 2; }
absolute() { case $1 in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }  # given from the caller's folder
smoke=0 out="" data=/usr/share/datasets/fashion-mnist export_to=""
while [ $# -gt 0 ]; do
  case $1 in
    --smoke) smoke=1; shift ;;
    --data-dir|--export)
      [ $# -ge 2 ] && [ -n "$2" ] && [ "${2#-}" = "$2" ] || die "$1 needs a folder; $usage"
      if [ "$1" = --data-dir ]; then data=$(absolute "$2"); else export_to=$(absolute "$2"); fi
      shift 2 ;;
    -*) die "unknown option $1; $usage" ;;
    *) [ -z "$out" ] || die "one OUT_DIR, not '$out' and '$1'; $usage"; out=$(absolute "$1"); shift ;;
  esac
done
cd "$(dirname "$0")"
[ -n "$out" ] || die "$usage"
for f in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz; do
  [ -f "$data/$f" ] || die "$data/$f is missing; put Fashion-MNIST's four .gz files there (or pass --data-dir)"
done
budget=${GPU_CHECK_BUDGET_S:-$([ $smoke -eq 1 ] && echo 900 || echo 480)}
seeds=${GPU_CHECK_STUDY_SEEDS:-$([ $smoke -eq 1 ] && echo 2 || echo 4)}
case "$budget$seeds" in *[!0-9]*) die "GPU_CHECK_BUDGET_S and GPU_CHECK_STUDY_SEEDS take whole numbers (got '$budget', '$seeds')" ;; esac
budget=$((10#$budget)) seeds=$((10#$seeds))  # 0480 is 480 seconds, not octal
[ "$seeds" -ge 1 ] || die "GPU_CHECK_STUDY_SEEDS must be at least 1 (the named runs' seed)"
[ ! -e "$out/steps.txt" ] || die "$out holds an earlier check (steps.txt); name a new OUT_DIR (nothing was changed)"
case "$export_to/" in "$out"/*) die "--export $export_to is inside OUT_DIR, whose archive would hold itself" ;; esac
mkdir -p "$out" || exit 2
if [ -n "$export_to" ]; then mkdir -p "$export_to" || exit 2; fi
py=.venv/bin/python
[ -x "$py" ] || py=python3
deadline=$(( $(date +%s) + budget ))
: > "$out/steps.txt"

# The summary after every step (a failure of its own says so in summary.md); with --export, it and the
# whole folder where it is wanted. tar's exit 1 is a file that changed while read: the archive stands.
summarize() {
  if ! timeout -k 5 60 "$py" gpucheck.py "$out" --smoke "$smoke" > /dev/null 2> "$out/summarize.log" &&
      ! grep -q "steps failed or were stopped" "$out/summarize.log"; then
    { echo "# gpu-check: the summary itself failed (summarize.log says why); the steps so far:"; echo
      cat "$out/steps.txt"; } > "$out/summary.md"
  fi
  if [ -n "$export_to" ]; then
    cp "$out"/summary.md "$export_to"/
    [ ! -f "$out/summary.json" ] || cp "$out/summary.json" "$export_to"/
    tar -czf "$export_to/gpu-check.tgz.part" -C "$(dirname "$out")" -- "$(basename "$out")"
    [ $? -gt 1 ] || mv "$export_to/gpu-check.tgz.part" "$export_to/gpu-check.tgz"
  fi
}

# seconds to the end of the running step (at least 1): what a step's function gives each command
remaining() {
  local r=$(( end - $(date +%s) ))
  [ "$r" -ge 1 ] || r=1
  echo "$r"
}

# step NAME CAP COMMAND...: its log, status, seconds and limit in steps.txt; at most CAP seconds (smoke:
# the budget), ending 10 s before the deadline (timeout's grace to kill), skipped when under 15 s are
# left for it. A shell function runs as is and bounds each of its commands by $(remaining). A failed
# step does not stop the others.
step() {
  local name=$1 cap=$2 start rc
  shift 2
  [ $smoke -eq 0 ] || cap=$budget
  limit=$(( deadline - $(date +%s) - 10 ))
  [ "$limit" -le "$cap" ] || limit=$cap
  if [ "$limit" -lt 15 ]; then
    echo "gpu-check.sh: $name skipped: not enough of the $budget s budget left for it" >&2
    echo "$name skipped 0 0" >> "$out/steps.txt"
  else
    echo "gpu-check.sh: $name (at most $limit s) ..." >&2
    start=$(date +%s)
    end=$(( start + limit ))
    if declare -F "$1" > /dev/null; then
      "$@" > "$out/$name.log" 2>&1
    else
      timeout -k 10 "$limit" "$@" > "$out/$name.log" 2>&1
    fi
    rc=$?
    echo "$name $rc $(( $(date +%s) - start )) $limit" >> "$out/steps.txt"
  fi
  summarize
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

preflight() {
  timeout -k 10 "$(remaining)" "$py" gpucheck.py "$out" --start "$budget" --smoke "$smoke" &&
    timeout -k 10 "$(remaining)" "$py" dpt.py --preflight 1 "${common[@]}" "${fmnist[@]}" "${schedule[@]}" \
      --heuristic stripes --measure variance --results-dir "$out/runs-preflight"
}

# bg LOG COMMAND...: one of the runs, in the background, stopped at the step's limit
bg() {
  local log=$1
  shift
  OMP_NUM_THREADS=1 timeout -k 10 "$(remaining)" "$@" > "$out/$log.log" 2>&1 &
  pids+=($!)
}

# Every run at once on the one device (as run-experiments.sh --per-gpu would): the named runs, the
# control and torchrun's whatever the time, then the extra seeds gpucheck.py says fit before the limit.
runs() {
  local pids=() rc=0 r extra seed protocol heuristic sched folder pid
  # the plan is the optional part: without it the named runs still start
  extra=$(timeout -k 5 30 "$py" gpucheck.py "$out" --seeds-for $(( $(remaining) - 15 )) --most $(( seeds - 1 )) \
    --smoke "$smoke") || { echo "the plan of extra seeds failed: none"; extra=""; }
  echo "at once: the named runs, the random control and torchrun's; extra seeds: ${extra:-none}"
  bg run-torchrun "$py" -m torch.distributed.run --standalone --nproc_per_node=1 dpt.py "${common[@]}" "${ranked[@]}" \
    --total-epochs 2 --warmup-epochs 1 --interval-epochs 1 --ignore-epochs 0 --results-dir "$out/runs-torchrun"
  for protocol in standard paper; do
    folder=$out/runs-paper
    [ $protocol = paper ] || folder=$out/runs-study  # the standard ones are the study's first seed
    bg "run-stripes-$protocol" "$py" dpt.py "${common[@]}" "${fmnist[@]}" "${schedule[@]}" --heuristic stripes \
      --measure variance --eval-protocol "$protocol" --results-dir "$folder"
    bg "run-vanilla-$protocol" "$py" dpt.py "${common[@]}" "${fmnist[@]}" --heuristic none \
      --eval-protocol "$protocol" --results-dir "$folder"
  done
  bg run-random "$py" dpt.py "${common[@]}" "${fmnist[@]}" "${schedule[@]}" --heuristic random --measure variance \
    --eval-protocol standard --results-dir "$out/runs-study"
  for seed in $extra; do
    for heuristic in none stripes random; do
      sched=("${schedule[@]}")
      [ $heuristic != none ] || sched=()
      bg "run-$heuristic-$seed" "$py" dpt.py "${common[@]}" "${fmnist[@]}" ${sched[@]+"${sched[@]}"} \
        --heuristic "$heuristic" --measure variance --eval-protocol standard --seed "$seed" \
        --results-dir "$out/runs-study"
    done
  done
  for pid in "${pids[@]}"; do
    wait "$pid"
    r=$?
    case $r in  # a failure says more than a run stopped at the limit, which says more than success
      0) ;;
      124|137) [ "$rc" -ne 0 ] || rc=$r ;;
      *) rc=$r ;;
    esac
  done
  return "$rc"
}

step preflight 60 preflight
status=$(tail -n 1 "$out/steps.txt" | cut -d' ' -f2)
if [ "$status" != 0 ]; then
  # nothing else could run: stop now, with the budget's time left for a second try
  "$py" gpucheck.py "$out" --smoke "$smoke"
  if [ "$status" = skipped ]; then
    echo "gpu-check.sh: error: no time for the preflight in a $budget s budget (GPU_CHECK_BUDGET_S)" >&2
  else
    echo "gpu-check.sh: error: the preflight failed; $out/preflight.log says why" >&2
  fi
  exit 1
fi
step bench 150 "$py" bench.py ${bench[@]+"${bench[@]}"} --parts paths text partition reducers iosim scoring \
  --out "$out/bench.json"
# the concurrent figures only with 300 s left after them: 240 for the named runs, 60 for the rest
share=$(( deadline - $(date +%s) - 300 ))
[ "$share" -le 120 ] || share=120
step concurrent "$share" "$py" bench.py "${concurrent[@]}" --out "$out/concurrent.json"
# the runs leave 180 s for the study's report, float32 and speed, but take 240 s if need be (the named ones)
share=$(( deadline - $(date +%s) - 180 ))
[ "$share" -ge 240 ] || share=240
step runs "$share" runs
step study 60 "$py" report.py "$out/runs-study" --paper ''
step bench-float32 60 "$py" bench.py ${bench[@]+"${bench[@]}"} --amp none --parts paths text \
  --out "$out/bench-float32.json"
compile=()  # Triton needs a C compiler and Python.h (plan.json says): without, the plain speed options only
"$py" -c "import json, sys; sys.exit(not json.load(open(sys.argv[1]))['can_compile'])" "$out/plan.json" ||
  compile=(--compile-modes)
step bench-speed "$budget" "$py" bench.py ${bench[@]+"${bench[@]}"} ${compile[@]+"${compile[@]}"} --parts layout speed \
  --out "$out/bench-speed.json"
"$py" gpucheck.py "$out" --smoke "$smoke"
