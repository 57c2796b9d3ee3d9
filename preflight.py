"""Everything that can be wrong with a run, found before any process group starts: the launch, the
data, the memory the recorder needs, where results go, the checkpoint to resume from, and the run's
lock. dpt.py calls `check` first; `python dpt.py --preflight N ...` runs it alone for a launch of N
processes (the launcher scripts do, before torchrun):

    python dpt.py --preflight 2 --dataset fashionmnist --subset 2000 --total-epochs 6 --warmup-epochs 3 \
        --interval-epochs 1 --ignore-epochs 1

Each check says what is wrong and the fix in one line (Refused); checks that belong to one kind of
thing live beside it (a task's in its Task.check, a heuristic's in its registration (heuristics.refusal), the reducers'
in reducers.refusal). Reads and probes only; it writes the run's lock and, for a result file's first
run, the file's manifest (results.claim).
"""
import fcntl
import hashlib
import importlib.util
import netrc
import os
import shutil
from argparse import Namespace
from dataclasses import dataclass, field
from pathlib import Path

import torch

import catalog as C
import checkpoint
import data
import flags
import heuristics
import importance
import models
import reducers
import results
import tasks
from topology import Topology
from workload import Workload


class Refused(ValueError):
    """Bad input: one line naming the fix; dpt.py ends with it (exit 2)."""


@dataclass
class Streamed:
    """The training split of --data-source streaming: its examples stay in the shards, read through
    each worker's cache (train.epoch_batches); here only its size, where it comes from, and the hash
    of the remote's index (which names every shard and its bytes)."""
    num_examples: int
    source: str
    index_sha256: str

    def __len__(self) -> int:
        return self.num_examples


def identity(split) -> dict:
    """What a split is, for a checkpoint to be resumed on the same data only: the SHA-256 of its
    example tensors (or of a streamed split's index), its size, and where it was read from."""
    digest = hashlib.sha256()
    for name, value in sorted(vars(split).items()):
        if isinstance(value, torch.Tensor):
            digest.update(name.encode() + str(tuple(value.shape)).encode())
            digest.update(value.detach().cpu().contiguous().numpy().data)
        elif name == "index_sha256":
            digest.update(value.encode())
    return {"sha256": digest.hexdigest(), "examples": len(split), "source": split.source}


@dataclass
class Job:
    """What the checks found: the data, where results go, and the checkpoint to resume from."""
    workload: Workload
    task: tasks.Task
    top: Topology
    train: object  # the task's Split, or Streamed
    test: object
    channels: tuple[str, ...]  # what the recorder records
    shard_size: int  # examples per storage shard (shard-stripes, streaming)
    csv: Path
    checkpoint_path: Path
    data: dict = field(default_factory=dict)  # each split's identity (a checkpoint resumes on the same only)
    checkpoint: dict | None = None
    lock: object = None  # the run's lock file, held open for the process's life
    finished: bool = False  # the run's row is in its CSV already (--resume: nothing to do)
    readers: list = field(default_factory=list)  # --data-source streaming: this process's workers' readers

    def storage(self) -> dict | None:
        """A streaming run's storage as its caches see it (each shard file's bytes, a worker's cache, the
        policy): what iosim needs to simulate the run exactly (report.py --io, beside what it measured)."""
        if not self.readers:
            return None
        st = self.readers[0].storage
        return {"shard_bytes": st.shard_bytes.tolist(), "cache_bytes": st.cache_bytes, "policy": st.policy}


def recorded_channels(args: Namespace) -> tuple[str, ...]:
    """What the run records: exactly what its measure reads (vanilla runs record the loss, as the
    paper's warmup-only baseline did)."""
    return importance.channels(args.measure) if args.heuristic != "none" else ("loss",)


def check(args: Namespace, top: Topology) -> Job:
    """Every check that needs files or memory, in the order a user would fix them; Refused on the first
    problem."""
    if args.wandb and top.master:
        check_wandb()
    workload, task = flags.workload(args, top.workers), tasks.of(args.dataset)
    csv = results.csv_path(args.results_dir, workload)
    test, train, readers = load_data(args, task, csv, top)
    n = top.workers
    if len(train) < n:
        raise Refused(f"{len(train)} training examples cannot be split across {n} workers; raise --subset")
    shard_size = args.shard_size or (readers[0].shard_size if readers else min(100, len(train) // n))
    for why in (heuristics.refusal(args.heuristic, len(train), n, shard_size),
                reducers.refusal(args.reducer, top.launched, top.emulated), task.check(args, train, test, n)):
        if why:
            raise Refused(why)
    channels = recorded_channels(args)
    check_memory(args, len(train), len(channels),
                 models.step_bytes(args.model, args, task.shape(train), args.batch_size * top.emulated), top)
    if csv.is_dir():
        raise Refused(f"the result file {csv} is a folder; move it away or pass another --results-dir")
    job = Job(workload, task, top, train, test, channels, shard_size, csv, results.checkpoint_path(csv, args.seed),
              {"train": identity(train), "test": identity(test)}, readers=readers)
    check_results(args, job)
    if args.resume:
        try:
            job.checkpoint = checkpoint.load(job.checkpoint_path, args, top, job.data)
        except checkpoint.CheckpointError as err:
            raise Refused(str(err)) from None
    if top.master:
        data = {split: job.data[split]["sha256"] for split in ("train", "test")}  # other data: another experiment
        clash = results.claim(csv, flags.settings(args, top.workers) | {"data": data}, write=args.preflight is None)
        if clash:
            raise Refused(f"{csv} holds runs set otherwise ({clash}); pass another --results-dir, or the same flags")
    if results.has_row(csv, args.seed):  # never two rows for one run
        if not args.resume:
            raise Refused(f"{csv} already holds the row of --seed {args.seed}: this run is done; pass another --seed "
                          f"or --results-dir (or --resume, which then does nothing)")
        job.finished = True
    return job


def load_data(args: Namespace, task: tasks.Task, csv: Path, top: Topology) -> tuple:
    """The test split, the training split (Streamed for a streaming run) and this process's streaming readers."""
    try:
        if args.data_source != "streaming":
            train = task.load(args, train=True, num_workers=top.workers)
            return task.load(args, train=False), train, []
        test = task.load(args, train=False)
        import streaming  # litdata takes seconds to import: only for streaming runs

        root = Path(args.cache_dir or csv.parent / "cache" / results.run_name(csv, args.seed))
        readers = streaming.open_readers(args.stream_remote, root, top.mine, top.workers, args.cache_bytes,
                                         args.cache_policy, args.stream_endpoint)
    except (ValueError, data.DataError) as err:
        raise Refused(str(err)) from None
    train = Streamed(len(readers[0]), f"{args.stream_remote} (shards of {readers[0].shard_size}, streamed)",
                     readers[0].index_sha256)
    if args.subset and args.subset != len(train):
        raise Refused(f"--subset {args.subset}: a streamed split is the whole remote ({len(train)} examples); "
                      "write the subset with streaming.py instead")
    if args.shard_size is not None and args.shard_size != readers[0].shard_size:
        raise Refused(f"--shard-size {args.shard_size} differs from the remote's shards of {readers[0].shard_size}; "
                      "drop it")
    return test, train, readers


def check_results(args: Namespace, job: Job) -> None:
    """Rank 0 writes: its folders are writable and have room, the run's own files are not folders, and
    the result file takes this run's rows."""
    if not job.top.master:
        return
    writable(job.csv.parent, "--results-dir")
    writable(job.csv.parent / "logs", "--results-dir")
    writable(job.checkpoint_path.parent, "--results-dir")  # the run's lock lives there, whatever it saves
    for path in (job.checkpoint_path, job.checkpoint_path.with_suffix(".lock")):
        if path.is_dir():
            raise Refused(f"{path} is a folder where this run keeps a file; move it away or pass another "
                          "--results-dir")
    for path in (job.csv, results.manifest_path(job.csv), job.checkpoint_path, job.checkpoint_path.with_suffix(".lock"),
                 job.csv.with_name(job.csv.name + ".partial")):
        try:
            results.refuse_link(path)
        except results.LinkRefused as err:
            raise Refused(str(err)) from None
    need = 2**20 + (checkpoint_bytes(args, job) if args.checkpoint_every or args.resume else 0)
    room = shutil.disk_usage(job.csv.parent).free
    if room < need:
        raise Refused(f"{job.csv.parent} has {room / 2**20:.1f} MiB free and the run needs about "
                      f"{need / 2**20:.1f} MiB (its log, row and checkpoint); free some space or pass another "
                      "--results-dir")
    try:
        results.check_appendable(job.csv, results.columns(args.total_epochs, job.workload.task))
    except ValueError as err:
        raise Refused(str(err)) from None


def checkpoint_bytes(args: Namespace, job: Job) -> int:
    """About what a checkpoint takes on disk: the model and the optimizer's state (SGD: momentum,
    AdamW: two moments), twice over while the new one is written, and the recorder's current window."""
    copies = 3 if args.optimizer == "adamw" else 2
    parameters = models.parameters(args.model, args, job.task.shape(job.train))
    window = importance.Recorder.nbytes(len(job.train), max(args.warmup_epochs, args.interval_epochs),
                                        len(job.channels))
    return 2 * (4 * copies * parameters + window)


def writable(folder: Path, flag: str) -> None:
    """Create `folder` (a folder of the project's own: never a link) and write a probe file there, or
    refuse naming `flag`."""
    try:
        results.folder(folder, own=True)
        probe = folder / f".probe-{os.getpid()}"
        os.close(results.open_file(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
        probe.unlink()
    except results.LinkRefused as err:
        raise Refused(str(err)) from None
    except OSError as err:
        raise Refused(f"cannot write results to {folder} ({err.strerror or err}); pass a writable {flag}") from None


def check_wandb() -> None:
    """W&B logs only with credentials or an offline mode: find out now, not after training."""
    if importlib.util.find_spec("wandb") is None:
        raise Refused("--wandb needs the wandb package: pip install wandb (or drop --wandb)")
    if os.environ.get("WANDB_MODE") in ("offline", "disabled", "dryrun") or os.environ.get("WANDB_API_KEY"):
        return
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0]
    try:
        if netrc.netrc(os.environ.get("NETRC")).authenticators(host):
            return
    except (OSError, netrc.NetrcParseError):
        pass
    raise Refused("--wandb needs a W&B login: run `wandb login`, or set WANDB_MODE=offline to log locally")


def check_memory(args: Namespace, num_examples: int, channels: int, step: int, top: Topology) -> None:
    """The recorder holds (channels x examples x epochs of the longest window) float32 values; a
    training step needs `step` bytes (the task's estimate). Both must fit in half the free memory."""
    T, W, I = args.total_epochs, args.warmup_epochs, args.interval_epochs
    longest = max(W, I + (T - W) % I) if W < T else W  # the warmup, or the last (longest) interval
    need = importance.Recorder.nbytes(num_examples, longest, channels)
    free = free_memory(top)
    if need > free // 2:
        raise Refused(f"recording {num_examples} examples x {longest} epochs x {channels} channels needs "
                      f"{need / 2**30:.1f} GiB and {free / 2**30:.1f} GiB are free on {top.device.type}; lower "
                      "--total-epochs (or --warmup-epochs / --interval-epochs) or --subset")
    if step > free // 2:
        sizes = [o for o in C.task_of(args.dataset).options if o.type is int and getattr(args, o.dest) is not None]
        given = "".join(f"{o.flag} {getattr(args, o.dest)}, " for o in sizes)
        raise Refused(f"a training step of --model {args.model} at this size ({given}{args.batch_size * top.emulated} "
                      f"examples a process) needs about {step / 2**30:.1f} GiB and {free / 2**30:.1f} GiB are free on "
                      f"{top.device.type}; lower {', '.join(o.flag for o in sizes)} or --batch-size")


def free_memory(top: Topology) -> int:
    """Bytes free on the training device."""
    if top.device.type == "cuda":
        return torch.cuda.mem_get_info(top.device)[0]
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    return int(meminfo["MemAvailable"].split()[0]) * 1024


def acquire(lock_path: Path):
    """Hold the run's lock, or refuse: two processes running one run would append two rows for it."""
    results.folder(lock_path.parent, own=True)
    try:
        handle = os.fdopen(results.open_file(lock_path, os.O_RDWR | os.O_CREAT), "r+")
    except IsADirectoryError:
        raise Refused(f"{lock_path} is a folder where this run keeps its lock; move it away") from None
    except results.LinkRefused as err:
        raise Refused(str(err)) from None
    try:
        fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a POSIX record lock: NFS clients forward it
    except (BlockingIOError, PermissionError):
        handle.seek(0)
        raise Refused(f"another process is running this run ({handle.read().strip() or 'pid unknown'}, lock "
                      f"{lock_path}); wait for it to finish or stop it, then run again") from None
    handle.truncate(0)
    handle.write(f"pid {os.getpid()} on {os.uname().nodename}")
    handle.flush()
    return handle


def release(job: Job) -> None:
    """The run's lock and its streaming caches, and the folders they leave empty."""
    if job.lock:
        job.checkpoint_path.with_suffix(".lock").unlink(missing_ok=True)  # while held: nobody can take it in between
        job.lock.close()
    for reader in job.readers:
        shutil.rmtree(reader.cache_dir, ignore_errors=True)  # a cache: the shards stay at the remote
    for folder in {r.cache_dir.parent for r in job.readers} | {job.checkpoint_path.parent}:
        for empty in (folder, folder.parent) if folder.parent.name == "cache" else (folder,):
            try:
                empty.rmdir()
            except OSError:  # not empty, or already gone
                pass


def planned(job: Job, args: Namespace) -> str:
    """What the run would do, in one line (dpt.py --preflight)."""
    n = job.top.workers
    return (f"{results.run_name(job.csv, args.seed)} would train {n} worker{'s' if n > 1 else ''} on {len(job.train)} "
            f"examples ({C.TASKS[job.workload.task].title}) and append its row to {job.csv}"
            + ("; it would resume from its checkpoint" if job.checkpoint else ""))
