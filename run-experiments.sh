#!/usr/bin/env bash
# The paper's whole study (183 workloads x 10 seeds: 3 vanilla baselines and the five W x I grids of
# Tables 1-5), or any part of it, resumable. All options: ./run-experiments.sh --help (sweep.py).
#
#     nohup ./run-experiments.sh &> sweep.log &                   # everything, as the paper's artifact ran it
#     ./run-experiments.sh --table 1 --gpus 1 --per-gpu 4         # Table 1 on one GPU, 4 runs at a time
#     ./run-experiments.sh --table 1 --dry-run                    # the commands only (also in results/paper/commands.txt)
#     .venv/bin/python report.py results/paper                    # then the tables
set -euo pipefail
# no cd: relative paths (--results-dir, --data-dir after --) are the caller's
here="$(cd "$(dirname "$0")" && pwd)"
if [ ! -x "$here/.venv/bin/python" ]; then
  echo "run-experiments.sh: error: no .venv here; run 'bash setup.sh' first (it installs what the runs need)" >&2
  exit 2
fi
exec "$here/.venv/bin/python" "$here/sweep.py" "$@"
