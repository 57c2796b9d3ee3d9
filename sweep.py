"""The paper's study as a list of dpt.py runs, and a runner for one node. run-experiments.sh calls it:

    ./run-experiments.sh --dry-run                              # print the study's 1830 commands
    ./run-experiments.sh --table 1                              # Table 1's 36 settings and its baseline, 10 seeds each
    ./run-experiments.sh --baselines-only --seeds 17611 74606
    ./run-experiments.sh --table 1 --gpus 1 --per-gpu 4         # one GPU, 4 runs at once, each emulating the 4 workers
    ./run-experiments.sh --table 1 --launch torchrun --gpus 4   # the paper's way: each run on 4 GPUs (4 ranks)
    ./run-experiments.sh --table 1 --epochs 30 --warmups 10 20 --intervals 5 -- --subset 5000   # a short trial

Flags after `--` go to every dpt.py command. Resumable: a run whose row is already in its CSV is
skipped, and every run checkpoints and resumes (dpt.py --checkpoint-every, --resume), so a killed
sweep restarts where it stopped. A run that fails is logged (sweep-failures.txt) and the sweep goes
on; the exit status is 1 if any failed. Concurrent runs append to shared CSVs under a lock.
Every command is also written to <results-dir>/commands.txt, one per line, for a scheduler:
    sed -n "${SLURM_ARRAY_TASK_ID}p" results/paper/commands.txt | bash     # a SLURM array, or
    parallel --jobs 4 < results/paper/commands.txt                        # GNU parallel
"""
import argparse
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

import dpt
import results

REPO = Path(__file__).resolve().parent
# The paper's Tables 1-5: (dataset, model, heuristic, measure); each has the baseline of its dataset and model.
TABLES = {1: ("cifar10", "resnet18", "stripes", "variance"), 2: ("cifar10", "resnet18", "stripes", "average"),
          3: ("cifar10", "resnet18", "blocks", "variance"), 4: ("cifar10", "resnet34", "stripes", "variance"),
          5: ("cifar100", "resnet34", "stripes", "variance")}
WARMUPS = (10, 15, 20, 30, 40, 60)
INTERVALS = (1, 5, 8, 10, 15, 30)


@dataclass
class Run:
    flags: list[str]  # dpt.py's arguments
    csv: Path
    seed: int

    @property
    def name(self) -> str:
        return results.run_name(self.csv, self.seed)


def study(opts: argparse.Namespace) -> tuple[list[Run], int]:
    """The selected runs, baselines first, and how many (W, I) settings were left out as impossible."""
    common = ["--total-epochs", str(opts.epochs), "--results-dir", str(opts.results_dir),
              "--checkpoint-every", str(opts.checkpoint_every), "--resume", *opts.dpt_flags]
    tables = sorted(set(opts.table or TABLES))
    settings = []
    if not opts.no_baselines:
        for dataset, model in dict.fromkeys(TABLES[t][:2] for t in tables):
            settings.append(["--dataset", dataset, "--model", model, "--heuristic", "none"])
    impossible = 0
    if not opts.baselines_only:
        for t in tables:
            dataset, model, heuristic, measure = TABLES[t]
            for w in opts.warmups:
                for i in opts.intervals:
                    if not (opts.ignore < w < opts.epochs and 1 <= i <= opts.epochs - w):
                        impossible += 1
                        continue
                    settings.append(["--dataset", dataset, "--model", model, "--heuristic", heuristic, "--measure", measure,
                                     "--warmup-epochs", str(w), "--interval-epochs", str(i), "--ignore-epochs", str(opts.ignore)])
    runs = []
    for setting in settings:
        for seed in opts.seeds:
            flags = setting + ["--seed", str(seed)] + common
            a = dpt.parse_args(flags)  # dpt.py's own resolution names the CSV (and rejects bad pass-through flags)
            csv = results.csv_path(a.results_dir, a.dataset, a.model, a.heuristic, a.measure, a.warmup_epochs,
                                   a.interval_epochs, a.total_epochs)
            runs.append(Run(flags, csv, seed))
    return runs, impossible


def command(run: Run, opts: argparse.Namespace, python: str) -> list[str]:
    if opts.launch == "torchrun":
        return [python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={opts.workers}", "dpt.py", *run.flags]
    return [python, "dpt.py", "--emulate-workers", str(opts.workers), "--data-on-device", *run.flags]


def slots(opts: argparse.Namespace) -> list[str | None]:
    """One entry per run that may go at once: the CUDA_VISIBLE_DEVICES it gets (None on CPUs)."""
    if opts.gpus == 0:
        return [None] * opts.per_gpu
    if opts.launch == "torchrun":
        groups = [",".join(str(g) for g in range(k, k + opts.workers)) for k in range(0, opts.gpus - opts.workers + 1, opts.workers)]
        return [g for g in groups for _ in range(opts.per_gpu)]
    return [str(g) for g in range(opts.gpus) for _ in range(opts.per_gpu)]


def execute(pending: list[Run], opts: argparse.Namespace) -> list[Run]:
    """Run everything on this node, `len(slots)` at a time; return the runs that failed."""
    logs = opts.results_dir / "sweep-logs"
    failures_file = opts.results_dir / "sweep-failures.txt"
    free, active, failed, done = slots(opts), {}, [], 0
    total = len(pending)
    queue = list(pending)
    try:
        while queue or active:
            while queue and free:
                run, slot = queue.pop(0), free.pop(0)
                env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
                if slot is not None:
                    env["CUDA_VISIBLE_DEVICES"] = slot
                log = logs / run.csv.parent.name / f"{run.name}.log"
                log.parent.mkdir(parents=True, exist_ok=True)
                with open(log, "a") as out:
                    proc = subprocess.Popen(command(run, opts, sys.executable), cwd=REPO, env=env, stdout=out,
                                            stderr=subprocess.STDOUT)
                active[proc] = (run, slot, log, time.time())
            time.sleep(0.2)
            for proc in [p for p in active if p.poll() is not None]:
                run, slot, log, started = active.pop(proc)
                free.append(slot)
                if proc.returncode == 0:
                    done += 1
                    if not opts.keep_checkpoints:
                        results.checkpoint_path(run.csv, run.seed).unlink(missing_ok=True)
                else:
                    failed.append(run)
                    with open(failures_file, "a") as f:
                        f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} exit {proc.returncode} {run.name} log {log}\n"
                                f"    {shlex.join(command(run, opts, 'python'))}\n")
                print(f"[{done + len(failed)}/{total}, {len(failed)} failed, {len(active)} running] {run.csv.parent.name}/{run.name} "
                      f"{'done' if proc.returncode == 0 else f'FAILED (exit {proc.returncode}, see {log})'} in {time.time() - started:.0f}s",
                      flush=True)
    except KeyboardInterrupt:
        for proc in active:
            proc.wait()
        print(f"interrupted; {done} runs finished. Run the same command again to go on (checkpoints resume).", flush=True)
        sys.exit(130)
    return failed


def parse(argv: list[str]) -> argparse.Namespace:
    dpt_flags = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(prog="run-experiments.sh", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--table", type=int, action="append", choices=sorted(TABLES), help="a paper table's workload (repeatable; default: all five)")
    p.add_argument("--baselines-only", action="store_true", help="only the vanilla baselines")
    p.add_argument("--no-baselines", action="store_true", help="leave the vanilla baselines out")
    p.add_argument("--seeds", type=int, nargs="+", default=list(dpt.PAPER_SEEDS), help="default: the paper's ten")
    p.add_argument("--epochs", type=int, default=100, help="T for every run (short trials: fewer)")
    p.add_argument("--warmups", type=int, nargs="+", default=list(WARMUPS), help="the W values of the grid")
    p.add_argument("--intervals", type=int, nargs="+", default=list(INTERVALS), help="the I values of the grid")
    p.add_argument("--ignore", type=int, default=5, help="E_ignore of every importance-aware run")
    p.add_argument("--launch", choices=["emulate", "torchrun"], default="emulate",
                   help="emulate: one process per run emulating the workers on one device; torchrun: one rank per worker")
    p.add_argument("--workers", type=int, default=4, help="workers per run (the paper: 4)")
    p.add_argument("--gpus", type=int, default=torch.cuda.device_count(), help="GPUs on this node (0: run on CPUs)")
    p.add_argument("--per-gpu", type=int, default=1, help="runs at once per GPU (per group of --workers GPUs under torchrun; per node on CPUs)")
    p.add_argument("--results-dir", type=Path, default=Path("results/paper"))
    p.add_argument("--checkpoint-every", type=int, default=10, help="epochs between a run's checkpoints")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep a finished run's checkpoint (about 90 MB for ResNet-18)")
    p.add_argument("--dry-run", action="store_true", help="print the commands (and write commands.txt); run nothing")
    opts = p.parse_args(argv)
    opts.dpt_flags = dpt_flags
    if opts.baselines_only and opts.no_baselines:
        p.error("--baselines-only and --no-baselines leave nothing to run")
    if opts.per_gpu < 1 or opts.workers < 1 or opts.gpus < 0:
        p.error("--per-gpu and --workers must be at least 1, --gpus at least 0")
    if opts.launch == "torchrun" and 0 < opts.gpus < opts.workers:
        p.error(f"--launch torchrun puts each of the {opts.workers} workers on its own GPU, and this node has {opts.gpus}; "
                f"use --launch emulate")
    return opts


def main(argv: list[str] | None = None) -> None:
    opts = parse(sys.argv[1:] if argv is None else argv)
    runs, impossible = study(opts)
    opts.results_dir.mkdir(parents=True, exist_ok=True)
    commands_file = opts.results_dir / "commands.txt"
    commands_file.write_text("".join(shlex.join(command(r, opts, "python")) + "\n" for r in runs))
    pending = [r for r in runs if not results.has_row(r.csv, r.seed)]
    print(f"{len(runs)} runs ({len(runs) - len(pending)} already have their row, {len(pending)} to go)"
          + (f"; {impossible} (W, I) settings left out: they need W < T and I <= T - W" if impossible else "")
          + f"; commands in {commands_file}", flush=True)
    if opts.dry_run:
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `--dry-run | head` ends quietly
        for run in pending:
            print(shlex.join(command(run, opts, "python")))
        return
    failed = execute(pending, opts)
    print(f"sweep finished: {len(pending) - len(failed)} runs done, {len(failed)} failed"
          + (f" (see {opts.results_dir / 'sweep-failures.txt'}); run again to retry them" if failed else ""), flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
