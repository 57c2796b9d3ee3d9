"""The sweep on a Slurm cluster: an sbatch script for a job array over a selection's commands.txt,
submitted with sbatch, and the state of every run of a study folder. run-experiments.sh calls it:

    ./run-experiments.sh --study measures --slurm --dry-run      # print the sbatch script, submit nothing
    ./run-experiments.sh --study measures --slurm --partition gpu --per-gpu 4 --time 08:00:00
    ./run-experiments.sh --study measures --status               # finished, running, failed, pending

Array task i runs the commands.txt lines listed on line i of slurm-array-<time>.txt, --per-gpu of them at
once on its GPU (bench.py --concurrent measures what that buys), or a --launch torchrun run on
--gpus-per-run GPUs of each of --nodes nodes (srun starts one torchrun per node; c10d rendezvous on
the first node, from SLURM_* variables). Resubmitting skips the runs that have their row (each
submission has its own slurm-array-<time>.txt). Before the time limit (lead_time: 5 minutes, or 1.5
epochs and a minute) Slurm sends SIGUSR1 to the task's shell (--signal=B:USR1@<lead>); the shell
forwards it to its dpt.py processes (on other nodes through an overlapping srun step), each
finishes its epoch, saves a checkpoint and exits, and the task requeues itself (scontrol requeue):
the rerun resumes (--resume). A preempted task (SIGTERM) keeps
its runs' last checkpoints and comes back through --requeue. Array tasks append to one CSV per
workload on the shared results folder under fcntl (POSIX record) locks, which NFS clients forward
to the server's lock manager (NFSv3's lockd, NFSv4 natively); flock() is not used, since older NFS
clients keep it local.
"""
import argparse
import fcntl
import json
import math
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

GRACE_S = 300  # SIGUSR1 this long before the limit: time to end an epoch and write a checkpoint
SHARED = {"nfs", "nfs4", "lustre", "gpfs", "beegfs", "cifs", "smb2", "ceph", "fuse.ceph", "glusterfs", "fuse.glusterfs",
          "panfs", "wekafs", "9p", "fuse.sshfs"}
TIME = re.compile(r"^(?:(?P<d>\d+)-)?(?P<a>\d+)(?::(?P<b>\d+))?(?::(?P<c>\d+))?$")
ENDLESS = ("UNLIMITED", "INFINITE")  # Slurm's words for no time limit
LONGEST_S = 365 * 24 * 3600  # a longer limit is a typo: name it UNLIMITED
NAME = re.compile(r"^[A-Za-z0-9_.-]+(,[A-Za-z0-9_.-]+)*$")  # a partition or account (or a list of them)
SBATCH_LINE = re.compile(r"^(?:#SBATCH )?--(?P<name>[a-z][a-z0-9-]*)=(?P<value>[^\s'\"\\;&|`$<>]+)$")
SET_BY_SCRIPT = {"wrap", "array", "output", "error", "job-name", "open-mode", "requeue", "signal", "chdir", "parsable",
                 "nodes", "ntasks-per-node", "gres", "partition", "account", "time", "cpus-per-task"}


class Refused(Exception):
    """A submission that cannot work; the message names the fix."""


def seconds(limit: str) -> int | None:
    """A Slurm time limit in seconds (None: UNLIMITED): minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or
    D-HH:MM:SS, each field within its range, as Slurm reads them."""
    if limit.upper() in ENDLESS:
        return None
    m = TIME.match(limit)
    if not m:
        raise Refused(f"--time {limit} is not a Slurm time (minutes, HH:MM:SS, D-HH:MM:SS or UNLIMITED)")
    d, a, b, c = (int(m[k]) if m[k] else None for k in ("d", "a", "b", "c"))
    if d is not None:  # D-HH[:MM[:SS]]
        fields, total = [(a, 24), (b, 60), (c, 60)], ((d * 24 + a) * 60 + (b or 0)) * 60 + (c or 0)
    elif c is not None:  # HH:MM:SS
        fields, total = [(b, 60), (c, 60)], (a * 60 + b) * 60 + c
    else:  # minutes, or MM:SS
        fields, total = [(b, 60)], a * 60 + (b or 0) if b is not None else a * 60
    if any(v is not None and v >= top for v, top in fields):
        raise Refused(f"--time {limit}: a field is out of its range (hours under 24 after days, minutes and seconds "
                      "under 60)")
    if total > LONGEST_S:
        raise Refused(f"--time {limit} is over a year; pass UNLIMITED for no limit, or the time the runs need")
    return total


def check_values(opts: argparse.Namespace) -> None:
    """Every value that reaches the generated script, checked as Slurm reads it: names without spaces or
    shell characters, times in range, extra #SBATCH lines of one --name=value option (never --wrap,
    nor what the script sets itself), and a results folder sbatch can take on an #SBATCH line."""
    if opts.nodes > 1 and opts.launch != "torchrun":
        raise Refused(f"--nodes {opts.nodes} spreads one run's ranks over nodes, which needs --launch torchrun")
    for flag in ("partition", "account"):
        value = getattr(opts, flag)
        if value is not None and not NAME.match(value):
            raise Refused(f"--{flag} {value!r} is not a Slurm name (letters, digits, '_', '.', '-'; a list: commas)")
    limit = seconds(opts.time) if opts.time else None
    if limit is not None and limit <= GRACE_S:
        raise Refused(f"--time {opts.time} leaves no time to train: the runs are asked to checkpoint {GRACE_S} s "
                      "before the limit; give a longer --time")
    for line in opts.sbatch_line:
        m = SBATCH_LINE.match(line)
        if not m:
            raise Refused(f"--sbatch-line {line!r}: give one option as --name=value (no spaces, quotes or shell "
                          "characters), e.g. --sbatch-line=--qos=long")
        if m["name"] in SET_BY_SCRIPT:
            raise Refused(f"--sbatch-line {line!r}: --{m['name']} is run-experiments.sh's own"
                          + (" (and runs a command of its own)" if m["name"] == "wrap" else
                             f"; pass it as run-experiments.sh --{m['name']}" if m["name"] in
                             ("partition", "account", "time", "cpus-per-task", "nodes") else ""))
    if re.search(r"[\s'\"\\$`]", str(opts.results_dir)):
        raise Refused(f"--results-dir {str(opts.results_dir)!r}: Slurm reads it from an #SBATCH line, which takes "
                      "no spaces, quotes, '$' or '`'; pass a folder without them")


def groups(lines: list[int], per_task: int) -> list[list[int]]:
    """The commands.txt line numbers each array task runs at once."""
    assert per_task >= 1
    return [lines[i:i + per_task] for i in range(0, len(lines), per_task)]


def epoch_estimate(folder: Path) -> float | None:
    """The longest mean seconds per epoch among the runs logged under `folder` (a trial, an earlier
    submission); None before any run has finished there."""
    longest = None
    for path in folder.rglob("logs/*.json"):
        try:
            epochs = json.loads(path.read_text()).get("epochs", [])
        except (OSError, ValueError, AttributeError):
            continue
        times = [e["epoch_s"] for e in epochs if isinstance(e, dict) and "epoch_s" in e]
        if times:
            longest = max(longest or 0.0, sum(times) / len(times))
    return longest


def filesystem(path: Path) -> str:
    """The type of the filesystem holding `path` (stat -f), '' when it cannot be told."""
    out = subprocess.run(["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else ""


def lead_time(epoch: float | None) -> int:
    """Seconds before the limit that SIGUSR1 comes: enough to end the epoch under way and save (1.5
    epochs and a minute), at least GRACE_S."""
    return GRACE_S if epoch is None else max(GRACE_S, math.ceil(1.5 * epoch) + 60)


def check_array(tasks: int) -> None:
    """An array no larger than the cluster's MaxArraySize allows (scontrol show config)."""
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True) \
        if shutil.which("scontrol") else None
    m = re.search(r"^MaxArraySize\s*=\s*(\d+)", out.stdout, re.M) if out and out.returncode == 0 else None
    if m and tasks > int(m[1]) - 1:
        raise Refused(f"{tasks} array tasks exceed this cluster's MaxArraySize {m[1]}; pass --per-gpu K to put K runs "
                      "in a task, or submit a part of the selection (--table, --seeds) at a time")


def check(opts: argparse.Namespace) -> list[str]:
    """Refuse what cannot work before anything is submitted (a dry run needs no Slurm here); return
    the warnings."""
    if not shutil.which("sbatch") and not opts.dry_run:
        raise Refused("--slurm needs Slurm's sbatch on PATH, and there is none on this machine; run on the cluster's "
                      "login node (or install slurm-wlm), or drop --slurm to run here")
    if opts.partition and shutil.which("sinfo"):
        listed = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True)
        known = sorted(set(listed.stdout.split()))
        if listed.returncode == 0 and opts.partition not in known:
            raise Refused(f"--partition {opts.partition} does not exist on this cluster; sinfo lists "
                          f"{', '.join(known) or 'none'}")
    warnings = []
    limit = seconds(opts.time) if opts.time else None
    if limit is not None:
        epoch = epoch_estimate(opts.results_dir)
        if epoch is not None and limit < lead_time(epoch) + epoch:
            raise Refused(f"--time {opts.time} ({limit} s) is shorter than one epoch ({epoch:.0f} s, the longest mean "
                          f"in {opts.results_dir}'s logs) plus the {lead_time(epoch)} s the runs get to checkpoint; "
                          "give a longer --time")
        if epoch is None:
            warnings.append(f"no epoch time is known yet (no run has finished under {opts.results_dir}): --time "
                            f"{opts.time} is not checked against one")
    kind = filesystem(opts.results_dir)
    if opts.nodes > 1 and kind and kind not in SHARED:
        warnings.append(f"--results-dir {opts.results_dir} is on {kind}, not a shared filesystem: with --nodes "
                        f"{opts.nodes} the other nodes cannot see its checkpoints and rows; put it on shared storage")
    return warnings


def resources(opts: argparse.Namespace) -> list[str]:
    """The #SBATCH lines of one array task."""
    gpus = opts.gpus_per_run if opts.gpus_per_run is not None else (opts.workers if opts.launch == "torchrun" else 1)
    lines = [f"--nodes={opts.nodes}", "--ntasks-per-node=1"]
    lines += [f"--gres=gpu:{gpus}"] if gpus else []
    lines += [f"--{name}={getattr(opts, name)}" for name in ("partition", "account", "time") if getattr(opts, name)]
    lines += [f"--cpus-per-task={opts.cpus_per_task}"] if opts.cpus_per_task else []
    return lines


def script(opts: argparse.Namespace, commands: Path, array: Path, tasks: int, repo: Path, stamp: str) -> str:
    """The sbatch script of the array: task i runs, at once, the lines of `commands` (this submission's
    copy of commands.txt) that line i of `array` names; each line's output and exit status go under
    slurm-logs/<stamp>/. Every value from the command line is checked (check_values) before it gets here."""
    logs = opts.results_dir / "slurm-logs" / stamp
    extra = [f"#SBATCH {line.removeprefix('#SBATCH ')}" for line in opts.sbatch_line]  # check_values' form
    heading = [f"#SBATCH --job-name=dpt-{opts.study}", f"#SBATCH --array=1-{tasks}",
               f"#SBATCH --output={logs}/%A_%a.out", "#SBATCH --open-mode=append", "#SBATCH --requeue",
               f"#SBATCH --signal=B:USR1@{lead_time(epoch_estimate(opts.results_dir))}",
               *(f"#SBATCH {r}" for r in resources(opts)), *extra]
    # One torchrun per node of a multi-node run: c10d rendezvous on the job's first node (torchrun reads PET_*).
    launch = ('srun --nodes="$SLURM_JOB_NUM_NODES" --ntasks-per-node=1 --kill-on-bad-exit=1 '
              if opts.nodes > 1 else "")
    rendezvous = ['export PET_NNODES="$SLURM_JOB_NUM_NODES" PET_RDZV_BACKEND=c10d '
                  'PET_RDZV_ID="${SLURM_ARRAY_JOB_ID:-$SLURM_JOB_ID}_${SLURM_ARRAY_TASK_ID:-0}"',
                  'export PET_RDZV_ENDPOINT="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1):29500"'] \
        if opts.nodes > 1 else []
    # Several nodes: their ranks are slurmstepd's children there, not this shell's; an overlapping step
    # on every node signals this job's dpt.py processes (not torchrun's agent).
    remote = ('  srun --overlap --jobid="$SLURM_JOB_ID" --nodes="$SLURM_JOB_NUM_NODES" --ntasks-per-node=1 bash -c \\\n'
              '    \'for p in $(pgrep -f dpt.py); do if [ "$p" != $$ ] && ! grep -qa torch.distributed.run '
              '/proc/$p/cmdline && grep -qa "SLURM_JOB_ID=$SLURM_JOB_ID" /proc/$p/environ; then kill -USR1 $p; '
              'fi; done\' || true\n' if opts.nodes > 1 else "")
    body = f"""
# Written by run-experiments.sh --slurm for {opts.results_dir}; resubmitting the same selection skips
# the runs that have their row. SIGUSR1 before the limit: every run checkpoints, then the task requeues.
set -u
cd {shlex.quote(str(repo))}
export OMP_NUM_THREADS="${{OMP_NUM_THREADS:-1}}"
{chr(10).join(rendezvous)}
lines=$(sed -n "${{SLURM_ARRAY_TASK_ID}}p" {shlex.quote(str(array))})
echo "slurm task ${{SLURM_ARRAY_JOB_ID:-?}}_${{SLURM_ARRAY_TASK_ID}} on $(hostname): lines $lines of \\
{shlex.quote(commands.name)}"
pids=() numbers=() asked=0
descendants() {{ local p; for p in $(pgrep -P "$1"); do echo "$p"; descendants "$p"; done; }}
checkpoint() {{  # dpt.py turns SIGUSR1 into a checkpoint at its epoch's end; torchrun itself is spared
  asked=1
  echo "slurm task: SIGUSR1 (time limit near): asking every run for a checkpoint"
  for pid in "${{pids[@]}}"; do
    for p in "$pid" $(descendants "$pid"); do
      if grep -qa dpt.py "/proc/$p/cmdline" 2>/dev/null && ! grep -qa -e torch.distributed.run -e srun \\
          "/proc/$p/cmdline"; then kill -USR1 "$p" 2>/dev/null; fi
    done
  done
{remote}}}
trap checkpoint USR1
trap 'kill -TERM "${{pids[@]}}" 2>/dev/null' TERM
for n in $lines; do  # each run's output in its own log; its exit status in exits.txt (--status reads both)
  {launch}bash -c "$(sed -n "${{n}}p" {shlex.quote(str(commands))})" >> {shlex.quote(str(logs))}/line$n.log 2>&1 &
  pids+=($!) numbers+=("$n")
done
failed=0
for k in "${{!pids[@]}}"; do
  while :; do
    wait "${{pids[$k]}}"; rc=$?
    if [ "$rc" -gt 128 ] && kill -0 "${{pids[$k]}}" 2>/dev/null; then continue; fi  # a trapped signal woke the wait
    break
  done
  if [ "$asked" -eq 1 ] && [ "$rc" -ne 0 ]; then rc=75; fi  # stopped for its checkpoint (torchrun says 1)
  echo "${{numbers[$k]}} $rc" >> {shlex.quote(str(logs))}/exits.txt
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 75 ] && [ "$asked" -eq 0 ]; then failed=1; fi
done
if [ "$asked" -eq 1 ]; then
  echo "slurm task: checkpoints written; requeueing to resume"
  scontrol requeue "${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}"
fi
exit $failed
"""
    return "#!/bin/bash\n" + "\n".join(heading) + "\n" + body


def submit(path: Path) -> str:
    """sbatch the script; its job id, or Refused with sbatch's own reason."""
    out = subprocess.run(["sbatch", "--parsable", str(path)], capture_output=True, text=True)
    if out.returncode:
        why = (out.stderr.strip().splitlines() or [f"exit {out.returncode}"])[-1].removeprefix("sbatch: error: ")
        raise Refused(f"sbatch refused {path}: {why}")
    return out.stdout.strip().split(";")[0]


def held(lock: Path) -> bool:
    """Whether a run's lock is held now (by a dpt.py on this or, over NFS, another node)."""
    try:
        fd = os.open(lock, os.O_RDWR)  # never O_CREAT: a lock its run just released stays gone
    except FileNotFoundError:
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.lockf(fd, fcntl.LOCK_UN)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def failures(folder: Path) -> dict[str, str]:
    """A run's command -> the first error line of its log, for the commands whose last exit in any
    submission (slurm-<stamp>.commands.txt, its slurm-logs/<stamp>/exits.txt) was a failure: not 0,
    and not 75 (stopped with a checkpoint). Later submissions override earlier ones."""
    out = {}
    for snapshot in sorted(folder.glob("slurm-*.commands.txt")):
        logs = folder / "slurm-logs" / snapshot.name.removeprefix("slurm-").removesuffix(".commands.txt")
        commands = snapshot.read_text().splitlines()
        exits = logs / "exits.txt"
        last: dict[int, int] = {}
        for entry in exits.read_text().split("\n") if exits.is_file() else []:
            if len(entry.split()) == 2 and all(x.isdigit() for x in entry.split()):
                n, rc = map(int, entry.split())
                last[n] = rc
        for n, rc in last.items():
            if not 1 <= n <= len(commands):
                continue
            out.pop(commands[n - 1], None)
            if rc not in (0, 75):
                log = logs / f"line{n}.log"
                text = log.read_text(errors="replace") if log.is_file() else ""
                errors = [line.split(": error: ", 1)[1] for line in text.splitlines() if ": error: " in line]
                out[commands[n - 1]] = f"{(errors[0] if errors else f'exit {rc}')[:200]} (log {log})"
    return out


def local_failures(folder: Path) -> dict[str, str]:
    """Run name -> its reason and log, from the local sweep's sweep-failures.txt (the last entry wins)."""
    path = folder / "sweep-failures.txt"
    lines = path.read_text(errors="replace").splitlines() if path.is_file() else []
    out = {}
    for head, why in zip(lines, lines[1:]):
        m = re.match(r"\S+ \S+ exit -?\d+ (?P<run>\S+) log (?P<log>.+)$", head)
        if m:
            out[m["run"]] = f"{why.strip()} (log {m['log']})"
    return out


def status(folder: Path, runs: list, commands: list[str], has_row) -> tuple[str, dict[str, list[str]]]:
    """How many runs of the selection (`commands`: each one's command) are finished, running (their lock
    held), failed (with the first line of the reason) and pending, and the runs in each state; then the
    folder's other runs that are running now (locks held outside this selection)."""
    failed_with = failures(folder)
    here = local_failures(folder)
    running = {lock for lock in folder.glob("*/checkpoints/*.lock") if held(lock)}
    states: dict[str, list[str]] = {"finished": [], "running": [], "failed": [], "pending": []}
    reasons = []
    for run, line in zip(runs, commands, strict=True):
        lock = run.csv.parent / "checkpoints" / f"{run.name}.lock"
        state = ("finished" if has_row(run.csv, run.seed) else "running" if lock in running
                 else "failed" if line in failed_with or run.name in here else "pending")
        running.discard(lock)
        states[state].append(run.name)
        if state == "failed":
            reasons.append(f"  failed {run.csv.parent.name}/{run.name}: {failed_with.get(line) or here[run.name]}")
    lines = [f"{folder}: {len(runs)} runs: " + ", ".join(f"{len(v)} {k}" for k, v in states.items()), *reasons]
    if running:
        others = sorted(f"{lock.parent.parent.name}/{lock.stem}" for lock in running)
        lines.append(f"  and {len(others)} of the folder's runs outside this selection running now: "
                     + ", ".join(others[:6]) + (", ..." if len(others) > 6 else ""))
    return "\n".join(lines), states
