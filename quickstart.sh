# What the three quick starts (run-small-experiment.sh, run-small-text-experiment.sh,
# run-small-ncf-experiment.sh) share, sourced by each: the venv check, the launch of 2 workers and the
# closing lines with the exact paths and the next commands, the comparison among them.
#
#     source quickstart.sh; need_venv run-small-experiment.sh; launch_small RESULTS "NOTE" DPT_FLAGS...
#     compare STUDY "DPT_FLAGS" "TIME"

need_venv() {  # need_venv SCRIPT: setup.sh's venv, or one line naming it
  if [ ! -x .venv/bin/torchrun ]; then
    echo "$1: error: no .venv here; run 'bash setup.sh' first" >&2
    exit 2
  fi
}

# launch_small RESULTS NOTE DPT_FLAGS...: 2 workers through torchrun (gloo on CPUs, NCCL on 2+ GPUs;
# NCCL cannot put two ranks on one GPU, so there one rank emulates both), results under RESULTS; NOTE
# says what the report's tables hold.
launch_small() {
  local results=$1 note=$2 gpus nproc where shown
  shift 2
  local emulate=()
  gpus=$(.venv/bin/python -c "import torch; print(torch.cuda.device_count())")
  if [ "$gpus" -eq 1 ]; then
    nproc=1 emulate=(--emulate-workers 2)
  else
    nproc=2
  fi
  local args=(${emulate[@]+"${emulate[@]}"} --results-dir "$results" "$@")
  # Every up-front check first, as the launch will run them: bad input (or a run that is done) is one
  # line and exit 2 here, rather than that line inside torchrun's 40-line failure summary.
  .venv/bin/python dpt.py --preflight "$nproc" "${args[@]}" > /dev/null
  OMP_NUM_THREADS=1 .venv/bin/torchrun --standalone --nproc_per_node="$nproc" dpt.py "${args[@]}"

  where=$(pwd)
  shown=$(cd "$results" && pwd)
  echo
  echo "The row and its JSON log are under $shown. Next, from $where:"
  echo "  .venv/bin/python report.py $shown      # $note"
  echo "  DPT_RESULTS=$shown DPT_FIGURES=$shown/figures .venv/bin/jupyter nbconvert --to notebook --execute \\"
  echo "      plots.ipynb --output-dir $shown/figures      # the figures, listed when it ends"
}

# compare STUDY PASSED TIME: the closing command that answers "does it beat vanilla and the random
# control?": the study's arms at its CPU size (run-experiments.sh --size cpu) in one (W, I) cell of
# its grid, 3 seeds, then report.py's answer; PASSED: dpt.py flags for every run (a smaller size).
compare() {
  local study=$1 passed=$2 time=$3 folder
  folder=results/compare-$study
  echo
  echo "Does it beat vanilla DPT and a random fixed partition? Its arms, the baseline and the control over 3 seeds"
  echo "($time on 2 CPU cores, one run per core; resumable), then the report's answer:"
  echo "  ./run-experiments.sh --study $study --size cpu --seeds 17611 74606 8271 --warmups \\"
  echo "      $(.venv/bin/python -c "import sweep; o = sweep.parse(['--study', '$study', '--size', 'cpu']); \
print(o.warmups[0], '--intervals', o.intervals[0], end='')") --results-dir $folder${passed:+ -- $passed} \\"
  echo "      && .venv/bin/python report.py $folder"
}
