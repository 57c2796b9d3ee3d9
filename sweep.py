"""The paper's study (and the follow-up studies) as a list of dpt.py runs, and a runner for one node.
run-experiments.sh calls it:

    ./run-experiments.sh --dry-run                              # print the paper's 1830 commands
    ./run-experiments.sh --table 1                              # Table 1's 36 settings and its baseline, 10 seeds each
    ./run-experiments.sh --baselines-only --seeds 17611 74606
    ./run-experiments.sh --table 1 --gpus 1 --per-gpu 4         # one GPU, 4 runs at once, each emulating the 4 workers
    ./run-experiments.sh --table 1 --launch torchrun --gpus 4   # the paper's way: each run on 4 GPUs (4 ranks)
    ./run-experiments.sh --table 1 --epochs 30 --warmups 10 20 --intervals 5 -- --subset 5000   # a short trial

Flags after `--` go to every dpt.py command (but not those the sweep sets itself). Resumable: a run
whose row is already in its CSV is skipped, and every run checkpoints and resumes (dpt.py
--checkpoint-every, --resume), so a killed sweep restarts where it stopped. A run that fails is
logged (sweep-failures.txt) and the sweep goes on; the exit status is 1 if any failed. SIGINT,
SIGTERM and SIGHUP stop the running runs too. Every command is also written to
<results-dir>/commands.txt, one per line, runnable from any directory, for a scheduler:
    sed -n "${SLURM_ARRAY_TASK_ID}p" results/paper/commands.txt | bash     # a SLURM array, or
    parallel --jobs 4 < results/paper/commands.txt                        # GNU parallel
"""
import argparse
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import catalog as C
import flags
import results
import slurm
import stops
import workload as names
from workload import Workload

REPO = Path(__file__).resolve().parent
# dpt.py flags the sweep sets for every run: passing them after `--` would quietly change the study.
SET_BY_SWEEP = ("--dataset", "--model", "--heuristic", "--measure", "--total-epochs", "--warmup-epochs",
                "--interval-epochs", "--ignore-epochs", "--seed", "--results-dir", "--checkpoint-every", "--resume",
                "--emulate-workers", "--data-on-device", "--repartition", "--reducer", "--density", "--keep-checkpoint",
                "--preflight")


@dataclass
class Run:
    argv: list[str]  # dpt.py's arguments, exactly as the run is started (launch flags first, --'s last)
    csv: Path
    seed: int

    @property
    def name(self) -> str:
        return results.run_name(self.csv, self.seed)


def die(message: str) -> None:
    flags.die(message, "run-experiments.sh")


def selected_tables(opts: argparse.Namespace) -> list[Workload]:
    """The study's workloads (W and I open), with the sweep's T, E_ignore and any --dataset/--model."""
    if opts.study == "paper":
        tables = [names.PAPER_TABLES[t] for t in sorted(set(opts.table or names.PAPER_TABLES))]
    else:
        tables = names.STUDIES[opts.study].tables()
    change = {k: getattr(opts, k) for k in ("dataset", "model") if getattr(opts, k)}
    sized = [replace(t, dataset=opts.sized.dataset, model=opts.sized.model) if opts.sized else t for t in tables]
    return list(dict.fromkeys(replace(t, total_epochs=opts.epochs, ignore_epochs=opts.ignore, workers=opts.workers,
                                      **change) for t in sized))


def grid(opts: argparse.Namespace) -> tuple[list[Workload], int]:
    """The selected workloads, baselines first, and how many (W, I) settings were left out as impossible."""
    tables = selected_tables(opts)
    chosen = []
    if not opts.no_baselines:
        chosen += list(dict.fromkeys(Workload(t.dataset, t.model, "none", "variance", opts.epochs, opts.epochs, 0, 0,
                                              t.reducer, t.density, opts.workers) for t in tables))
    impossible = 0
    if not opts.baselines_only:
        for table in tables:
            for w in opts.warmups:
                for i in opts.intervals:
                    if not (opts.ignore < w < opts.epochs and 1 <= i <= opts.epochs - w):
                        impossible += 1
                        continue
                    chosen.append(table.at(w, i))
    return chosen, impossible


def dpt_flags(w: Workload) -> list[str]:
    out = ["--dataset", w.dataset, "--model", w.model, "--heuristic", w.heuristic]
    if not w.vanilla:
        out += ["--measure", w.measure, "--warmup-epochs", str(w.warmup_epochs),
                "--interval-epochs", str(w.interval_epochs), "--ignore-epochs", str(w.ignore_epochs)]
    if w.reducer != "none":
        out += ["--reducer", w.reducer] + (["--density", f"{w.density:g}"] if w.reducer != "exact" else [])
    return out + ["--total-epochs", str(w.total_epochs)]


def launch_flags(w: Workload, opts: argparse.Namespace) -> list[str]:
    """How a run hosts its workers: one process emulating them all (a reducer exchanges each worker's
    own gradient, which the sequential emulation forms), or one torchrun rank each (none needed)."""
    if opts.launch == "torchrun":
        return []
    sequential = ["--emulation", "sequential"] if w.reducer != "none" else []
    return ["--emulate-workers", str(opts.workers), *sequential, "--data-on-device"]


PATH_FLAGS = ("--data-dir", "--text-file", "--stream-remote", "--cache-dir")


def absolute(argv: list[str], cwd: Path) -> list[str]:
    """dpt.py flags with their paths made absolute (URLs aside): commands.txt runs from any directory."""
    out = list(argv)
    for i, arg in enumerate(out[:-1]):
        if arg in PATH_FLAGS and "://" not in out[i + 1]:
            out[i + 1] = str((cwd / out[i + 1]).resolve())
    return out


def study(opts: argparse.Namespace) -> tuple[list[Run], int]:
    """Every run of the selection (seeds within each workload), each checked as dpt.py checks its flags
    (so a flag after -- that the runs would refuse stops the sweep before its first run), and the
    impossible settings left out."""
    chosen, impossible = grid(opts)
    study_flags = (*(opts.sized.flags if opts.sized else ()),
                   *(names.STUDIES[opts.study].flags if opts.study in names.STUDIES else ()))
    passed = absolute(opts.dpt_flags, Path.cwd())
    data_dir = [] if "--data-dir" in passed else ["--data-dir", str(REPO / "data")]
    common = ["--results-dir", str(opts.results_dir), "--checkpoint-every", str(opts.checkpoint_every), "--resume",
              *(["--keep-checkpoint"] if opts.keep_checkpoints else []), *data_dir, *study_flags, *passed]
    runs = []
    for w in chosen:
        for seed in opts.seeds:
            argv = launch_flags(w, opts) + dpt_flags(w) + ["--seed", str(seed)] + common
            a = flags.parse_args(argv, prog="run-experiments.sh")  # dpt.py's own checks refuse bad flags after --
            runs.append(Run(argv, results.csv_path(a.results_dir, flags.workload(a, opts.workers)), seed))
    return runs, impossible


def command(run: Run, opts: argparse.Namespace, python: str) -> list[str]:
    """A run's command, with absolute paths so it runs from any directory."""
    script = str(REPO / "dpt.py")
    if opts.launch == "torchrun":
        # one node: a standalone rendezvous; more: the array task's c10d rendezvous (PET_* variables, slurm.py)
        rendezvous = ["--standalone"] if opts.nodes == 1 else []
        return [python, "-m", "torch.distributed.run", *rendezvous, f"--nproc_per_node={opts.workers // opts.nodes}",
                script, *run.argv]
    return [python, script, *run.argv]


def preflight(pending: list[Run], opts: argparse.Namespace) -> None:
    """Once before the first run: dpt.py's every up-front check (the data readable, memory, the result
    folders) for the first pending run of each distinct data source; a refusal stops the sweep with its
    line, rather than every run failing in turn with the reason in its own log."""
    seen = set()
    for run in pending:
        a = flags.parse_args(run.argv, prog="run-experiments.sh")
        source = (a.dataset, a.data_dir, a.text_file, a.stream_remote)
        if source in seen:
            continue
        seen.add(source)
        world = opts.workers if opts.launch == "torchrun" else 1
        proc = subprocess.run([sys.executable, str(REPO / "dpt.py"), "--preflight", str(world), *run.argv], cwd=REPO,
                              capture_output=True, text=True)
        if proc.returncode:
            die(f"{run.name}: {reason(proc.stderr) or f'exit {proc.returncode}'} (dpt.py --preflight; no run was "
                "started)")


def reason(output: str) -> str | None:
    """The first error line a run printed (dpt.py's one line), without its program prefix."""
    for line in output.splitlines():
        if ": error: " in line:
            return line.split(": error: ", 1)[1][:300]
    return None


def slots(opts: argparse.Namespace) -> list[str | None]:
    """One entry per run that may go at once: the CUDA_VISIBLE_DEVICES it gets (None on CPUs)."""
    if opts.gpus == 0:
        return [None] * opts.per_gpu
    if opts.launch == "torchrun":
        groups = [
            ",".join(str(g) for g in range(k, k + opts.workers))
            for k in range(0, opts.gpus - opts.workers + 1, opts.workers)
        ]
        return [g for g in groups for _ in range(opts.per_gpu)]
    return [str(g) for g in range(opts.gpus) for _ in range(opts.per_gpu)]


class Stop(Exception):
    """SIGTERM or SIGHUP: stop as on Ctrl-C."""


def _stop(signum, frame) -> None:
    raise Stop(signal.Signals(signum).name)


def execute(pending: list[Run], opts: argparse.Namespace) -> list[Run]:
    """Run everything on this node, `len(slots)` at a time; return the runs that failed. Each run is
    the leader of its own process group, so stopping the sweep stops the whole run (torchrun's ranks
    included), and nothing is left running to race a rerun."""
    logs = opts.results_dir / "sweep-logs"
    failures_file = opts.results_dir / "sweep-failures.txt"
    free, active, failed, done = slots(opts), {}, [], 0
    queue = list(pending)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _stop)
    try:
        while queue or active:
            while queue and free:
                run, slot = queue.pop(0), free.pop(0)
                env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
                if slot is not None:
                    env["CUDA_VISIBLE_DEVICES"] = slot
                log = logs / run.csv.parent.name / f"{run.name}.log"
                results.folder(log.parent, own=True)
                with os.fdopen(results.open_file(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND), "a") as out:
                    proc = subprocess.Popen(command(run, opts, sys.executable), cwd=REPO, env=env, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True,
                                            preexec_fn=stops.die_with_parent)  # a SIGKILLed sweep stops them too
                active[proc] = (run, slot, log, time.time())
            time.sleep(0.2)
            for proc in [p for p in active if p.poll() is not None]:
                run, slot, log, started = active.pop(proc)
                free.append(slot)
                why = None
                if proc.returncode == 0:
                    done += 1
                else:
                    failed.append(run)
                    why = reason(log.read_text(errors="replace")) or f"exit {proc.returncode}"
                    results.append_text(failures_file, f"{time.strftime('%Y-%m-%d %H:%M:%S')} exit {proc.returncode} "
                                        f"{run.name} log {log}\n    {why}\n    "
                                        f"{shlex.join(command(run, opts, sys.executable))}\n")
                print(
                    f"[{done + len(failed)}/{len(pending)}, {len(failed)} failed, {len(active)} running] "
                    f"{run.csv.parent.name}/{run.name} "
                    f"{'done' if proc.returncode == 0 else f'FAILED (exit {proc.returncode}: {why}; log {log})'} "
                    f"in {time.time() - started:.0f}s",
                    flush=True,
                )
    except (KeyboardInterrupt, Stop) as why:
        for proc in active:
            with_group(proc, signal.SIGTERM)
        for proc in active:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with_group(proc, signal.SIGKILL)
                proc.wait()
        print(
            f"stopped ({why or 'SIGINT'}); {done} runs finished, {len(active)} stopped. "
            "Run the same command again to go on "
            f"(checkpoints resume).",
            flush=True,
        )
        sys.exit(130)
    return failed


def with_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def gpu_count() -> int:
    """GPUs on this node, without importing torch (nvidia-smi; 0 when there is none)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([g for g in visible.split(",") if g.strip()])
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(line.startswith("GPU ") for line in out.stdout.splitlines()) if out.returncode == 0 else 0


def build_parser() -> argparse.ArgumentParser:
    p = flags.Parser(prog="run-experiments.sh", formatter_class=flags.HelpFormatter,
                     usage="%(prog)s [OPTIONS] [-- DPT.PY FLAGS ...]",
                     description="The paper's study (Tables 1-5 and their baselines), or a follow-up study (--study), "
                                 "as dpt.py runs on this node (--gpus, --per-gpu) or as a Slurm job array (--slurm). "
                                 "Resumable: a run whose row is already in its CSV is skipped, and a stopped run "
                                 "resumes from its checkpoint, so the same command goes on where it stopped.",
                     epilog="Flags after -- go to every dpt.py command, which is how a study is shrunk or changed "
                            "(those the sweep sets itself, such as --seed or --results-dir, are refused there): "
                            "./run-experiments.sh --study heuristics --size cpu --seeds 17611 74606 -- --subset 5000. "
                            "--dry-run prints the commands (also written to <results-dir>/commands.txt); "
                            "report.py <results-dir> prints the study's tables and tests. docs/reproduce.md and "
                            "docs/studies.md say more.")
    p.add_argument("--study", choices=["paper", *names.STUDIES], default="paper", metavar="NAME",
                   help="paper (the paper's Tables 1-5), " + ", ".join(f"{n} ({s.what})" for n, s in
                                                                      names.STUDIES.items()) + " (docs/studies.md)")
    p.add_argument("--table", type=int, action="append", choices=sorted(names.PAPER_TABLES),
                   help="with --study paper: a paper table's workload (repeatable; default: all five)")
    p.add_argument("--size", choices=["full", *names.SIZES], default="full", metavar="SIZE",
                   help="full: the study's own datasets, models and schedule (the paper's for the image studies); "
                        + "; ".join(f"{n}: on each task a size that learns in minutes a run on 2 CPU cores ("
                                    + ", ".join(f"{t}: {z.what}" for t, z in sizes.items()) + ")"
                                    for n, sizes in names.SIZES.items()))
    p.add_argument("--dataset", choices=list(C.DATASETS), metavar="NAME",
                   help=f"run the study on this dataset instead: {', '.join(C.DATASETS)}")
    p.add_argument("--model", choices=list(C.MODELS), metavar="NAME",
                   help=f"run the study with this model instead: {', '.join(C.MODELS)}")
    p.add_argument("--baselines-only", action="store_true", help="only the vanilla baselines")
    p.add_argument("--no-baselines", action="store_true", help="leave the vanilla baselines out")
    p.add_argument("--seeds", type=int, nargs="+", default=list(names.PAPER_SEEDS), help="default: the paper's ten")
    p.add_argument("--epochs", type=int, help="T for every run (default: the study's; short trials: fewer)")
    p.add_argument("--warmups", type=int, nargs="+", help="the W values of the grid (default: the study's)")
    p.add_argument("--intervals", type=int, nargs="+", help="the I values of the grid (default: the study's)")
    p.add_argument("--ignore", type=int, help="E_ignore of every importance-aware run (default: the study's)")
    p.add_argument(
        "--launch",
        choices=["emulate", "torchrun"], metavar="LAUNCH",
        default="emulate",
        help="emulate: one process per run emulating the workers on one device; torchrun: one rank per worker",
    )
    p.add_argument("--workers", type=int, default=4, help="workers per run (the paper: 4)")
    p.add_argument(
        "--gpus",
        type=int,
        default=None,
        help="GPUs on this node (default: as many as nvidia-smi lists; 0: run on CPUs)",
    )
    p.add_argument("--per-gpu", type=int, default=None,
                   help="runs at once per GPU (1 unless given; per group of --workers GPUs under torchrun), or on a "
                        "node without GPUs (there: one per core unless given, each on one thread)")
    p.add_argument("--results-dir", type=Path, help="default: results/<study>")
    p.add_argument("--checkpoint-every", type=int, default=10, help="epochs between a run's checkpoints")
    p.add_argument(
        "--keep-checkpoints", action="store_true", help="keep a finished run's checkpoint (about 90 MB for ResNet-18)"
    )
    p.add_argument("--dry-run", action="store_true",
                   help="print the commands (and write commands.txt), or with --slurm the sbatch script; run nothing")
    p.add_argument("--status", action="store_true",
                   help="how many of the selection's runs are finished, running, failed (and why) and pending")
    s = p.add_argument_group("Slurm (slurm.py): the selection as a job array, one task per --per-gpu runs")
    s.add_argument("--slurm", action="store_true", help="submit the pending runs as a Slurm job array (sbatch)")
    s.add_argument("--partition", help="the partition to submit to (default: the cluster's)")
    s.add_argument("--account", help="the account to charge (default: yours)")
    s.add_argument("--time", help="each array task's time limit, e.g. 04:00:00 (default: the partition's); the runs "
                                  f"checkpoint {slurm.GRACE_S} s before it and the task requeues itself")
    s.add_argument("--gpus-per-run", type=int, default=None,
                   help="GPUs per node for each task (default: 1 with --launch emulate, --workers / --nodes with "
                        "torchrun; 0: CPUs only)")
    s.add_argument("--nodes", type=int, default=1, help="nodes per run (more than 1: --launch torchrun over nodes)")
    s.add_argument("--cpus-per-task", type=int, default=None, help="CPUs per task (default: the partition's)")
    s.add_argument("--sbatch-line", action="append", default=[], metavar="LINE",
                   help="an extra #SBATCH option (repeatable), one --name=value each: --sbatch-line=--qos=long, "
                        "--sbatch-line=--constraint=h100")
    return p


def parse(argv: list[str]) -> argparse.Namespace:
    dpt_args = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = build_parser()
    opts = p.parse_args(argv)
    opts.dpt_flags = dpt_args
    study = names.STUDIES.get(opts.study)
    base = study.base if study else names.PAPER_TABLES[1]
    opts.sized = names.SIZES[opts.size][base.task] if opts.size != "full" else None
    grid_from = opts.sized or study
    opts.warmups = opts.warmups or list(grid_from.warmups if grid_from else names.PAPER_WARMUPS)
    opts.intervals = opts.intervals or list(grid_from.intervals if grid_from else names.PAPER_INTERVALS)
    opts.results_dir = (opts.results_dir or Path("results", opts.study if opts.size == "full" else
                                                 f"{opts.study}-{opts.size}")).resolve()
    opts.epochs = opts.epochs if opts.epochs is not None else (opts.sized or base).total_epochs
    opts.ignore = opts.ignore if opts.ignore is not None else (opts.sized or base).ignore_epochs
    if opts.table and study:
        die(f"--table selects among the paper's tables; --study {opts.study} has its own workloads (drop --table)")
    opts.gpus = gpu_count() if opts.gpus is None else opts.gpus
    if opts.per_gpu is None:
        opts.per_gpu = 1 if opts.gpus or opts.slurm or opts.status else os.cpu_count() or 1
    study_set = {f for f in (study.flags if study else ()) if f.startswith("--")}
    clash = sorted({a.split("=")[0] for a in dpt_args} & (set(SET_BY_SWEEP) | study_set))
    if clash:
        die(f"{', '.join(clash)} after -- would override what the sweep sets for each run; use the sweep's own options "
            f"(--seeds, --epochs, --warmups, --intervals, --ignore, --results-dir, --workers, --table)")
    if opts.baselines_only and opts.no_baselines:
        die("--baselines-only and --no-baselines leave nothing to run")
    if opts.per_gpu < 1 or opts.workers < 1 or opts.gpus < 0 or opts.checkpoint_every < 1 or opts.epochs < 1:
        die("--per-gpu, --workers, --checkpoint-every and --epochs must be at least 1, --gpus at least 0")
    if (
        not opts.seeds
        or any(not 0 <= s < flags.SEED_LIMIT for s in opts.seeds)
        or len(set(opts.seeds)) != len(opts.seeds)
    ):
        die(f"--seeds takes distinct seeds in 0..{flags.SEED_LIMIT - 1}")
    if opts.launch == "torchrun" and 0 < opts.gpus < opts.workers and not (opts.slurm or opts.status):
        die(f"--launch torchrun puts each of the {opts.workers} workers on its own GPU, and this node has {opts.gpus}; "
            f"use --launch emulate")
    if opts.nodes < 1 or opts.workers % opts.nodes:
        die(f"--nodes {opts.nodes} must be at least 1 and divide --workers {opts.workers} (each node runs as many "
            "ranks)")
    if opts.gpus_per_run is not None and opts.gpus_per_run < 0:
        die("--gpus-per-run must be at least 0")
    if opts.cpus_per_task is not None and opts.cpus_per_task < 1:
        die(f"--cpus-per-task must be at least 1 (got {opts.cpus_per_task})")
    controlled = [v for v in (str(opts.results_dir), *dpt_args, *opts.sbatch_line, opts.partition or "",
                              opts.account or "", opts.time or "") if re.search(r"[\x00-\x1f\x7f]", v)]
    if controlled:
        die(f"{controlled[0]!r} holds a control character (a newline, a tab, ...), which a command line or script "
            "written from it would take for a new command; pass a value without one")
    if not (opts.slurm or opts.status) and (opts.partition or opts.account or opts.time or opts.nodes > 1 or
                                            opts.sbatch_line or opts.gpus_per_run is not None or opts.cpus_per_task):
        die("--partition, --account, --time, --nodes, --gpus-per-run, --cpus-per-task and --sbatch-line are for "
            "--slurm; add --slurm, or drop them to run on this node")
    if opts.nodes > 1 and opts.per_gpu > 1:
        die(f"--nodes {opts.nodes} with --per-gpu {opts.per_gpu}: runs spread over nodes go one per task (they would "
            "share one rendezvous); drop --per-gpu")
    if opts.gpus_per_run is None and opts.launch == "torchrun" and opts.slurm:
        opts.gpus_per_run = opts.workers // opts.nodes
    if opts.slurm:
        try:
            slurm.check_values(opts)
        except slurm.Refused as err:
            die(str(err))
    if opts.results_dir.exists() and not opts.results_dir.is_dir():
        die(f"--results-dir {opts.results_dir} is a file; pass a folder")
    return opts


def submission_files(results_dir: Path, stamp: str) -> tuple[Path, Path]:
    """A submission's copy of the commands and its array's task lines."""
    return results_dir / f"slurm-{stamp}.commands.txt", results_dir / f"slurm-array-{stamp}.txt"


def claim_stamp(results_dir: Path) -> str:
    """A submission's own name: the time to the second, with -2, -3, ... when another submission of that
    second holds it (its log folder, created here only if it was not there, is the claim)."""
    logs = results.folder(results_dir / "slurm-logs", own=True)
    base = time.strftime("%Y%m%d-%H%M%S")
    for k in range(1, 1000):
        stamp = base if k == 1 else f"{base}-{k}"
        try:
            (logs / stamp).mkdir(mode=results.FOLDER_MODE & ~0o002)
            return stamp
        except FileExistsError:
            continue
    die(f"{logs} holds 999 submissions of the second {base}: remove the old ones")


def submit(runs: list[Run], pending: list[Run], commands_file: Path, opts: argparse.Namespace) -> None:
    """The pending runs as a Slurm job array: checked, written (slurm.sbatch, slurm-array.txt), submitted;
    with --dry-run the script is printed instead."""
    try:
        for warning in slurm.check(opts):
            print(f"run-experiments.sh: warning: {warning}", file=sys.stderr)
    except slurm.Refused as err:
        die(str(err))
    waiting = {id(r) for r in pending}
    tasks = slurm.groups([n for n, r in enumerate(runs, start=1) if id(r) in waiting], opts.per_gpu)
    # Each submission reads its own copy of the commands (and logs under its own folder), so a later
    # selection written to commands.txt never changes the lines of an array still queued.
    try:
        slurm.check_array(len(tasks))
    except slurm.Refused as err:
        die(str(err))
    if opts.dry_run:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        print(slurm.script(opts, *submission_files(opts.results_dir, stamp), len(tasks), REPO, stamp), end="")
        return
    if not tasks:
        print("nothing to submit: every run has its row")
        return
    preflight(pending, opts)
    stamp = claim_stamp(opts.results_dir)
    snapshot, array = submission_files(opts.results_dir, stamp)
    path = opts.results_dir / f"slurm-{stamp}.sbatch"
    text = slurm.script(opts, snapshot, array, len(tasks), REPO, stamp)
    results.write_bytes(snapshot, commands_file.read_bytes())
    results.write_bytes(array, "".join(" ".join(map(str, t)) + "\n" for t in tasks).encode())
    results.write_bytes(path, text.encode())
    try:
        job = slurm.submit(path)
    except slurm.Refused as err:
        die(str(err))
    given = sys.argv[1:]
    at = given.index("--") if "--" in given else len(given)  # before the flags that go to dpt.py
    again = shlex.join(["./run-experiments.sh", *given[:at], "--status", *given[at:]])
    print(f"submitted job {job}: {len(tasks)} array tasks for {len(pending)} runs ({path}); follow it with "
          f"`squeue -j {job}` and `{again}`; task logs in {opts.results_dir / 'slurm-logs' / stamp}", flush=True)


def main(argv: list[str] | None = None) -> None:
    opts = parse(sys.argv[1:] if argv is None else argv)
    runs, impossible = study(opts)
    if not runs:
        die(
            f"the selection holds no run ({impossible} (W, I) settings left out: "
            "they need E_ignore < W < T and I <= T - W)"
        )
    listed = "".join(shlex.join(command(r, opts, sys.executable)) + "\n" for r in runs)
    commands_file = opts.results_dir / "commands.txt"
    try:
        results.refuse_link(commands_file)  # read or written, the sweep's own file is never someone's link
    except results.LinkRefused as err:
        die(str(err))
    kept = (opts.dry_run or opts.status) and commands_file.is_file() and commands_file.read_text() != listed
    try:
        results.folder(opts.results_dir)
        if not kept and not opts.status:  # a dry run never replaces another selection's commands (an array's)
            results.write_bytes(commands_file, listed.encode())
    except results.LinkRefused as err:
        die(str(err))
    except OSError as err:
        die(f"cannot write to --results-dir {opts.results_dir} ({err.strerror or err}); pass a writable folder")
    if opts.status:
        print(slurm.status(opts.results_dir, runs, listed.splitlines(), results.has_row)[0])
        return
    pending = [r for r in runs if not results.has_row(r.csv, r.seed)]
    for csv, run in {r.csv: r for r in runs}.items():  # a row of a trial must not stand for the study's run
        args = flags.parse_args(run.argv, prog="run-experiments.sh")
        clash = results.claim(csv, flags.settings(args, opts.workers), write=False)
        if clash:
            die(f"{csv} holds runs set otherwise than this sweep's ({clash}); pass another --results-dir")
    print(
        f"{len(runs)} runs ({len(runs) - len(pending)} already have their row, {len(pending)} to go)"
        + (f"; {impossible} (W, I) settings left out: they need E_ignore < W < T and I <= T - W" if impossible else "")
        + (f"; {commands_file} holds another selection's commands and is left as it is" if kept else
           f"; commands in {commands_file}"),
        flush=True,
    )
    if opts.slurm:
        submit(runs, pending, commands_file, opts)
        return
    if opts.dry_run:
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `--dry-run | head` ends quietly
        for run in pending:
            print(shlex.join(command(run, opts, sys.executable)))
        return
    preflight(pending, opts)
    failed = execute(pending, opts)
    print(
        f"sweep finished: {len(pending) - len(failed)} runs done, {len(failed)} failed"
        + (f" (see {opts.results_dir / 'sweep-failures.txt'}); run again to retry them" if failed else ""),
        flush=True,
    )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
