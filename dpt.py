"""Importance-aware data-parallel training (Sheikholeslami et al., DAIS 2023): the training script.

    torchrun --nproc_per_node=4 dpt.py --dataset cifar10 --model resnet18 \
        --heuristic stripes --measure variance --warmup-epochs 20 \
        --interval-epochs 5 --ignore-epochs 5 --total-epochs 100 --seed 17611
    python dpt.py --dataset fashionmnist --subset 2000 --total-epochs 6 --warmup-epochs 3 \
        --interval-epochs 1 --ignore-epochs 1

Vanilla DPT for E_warmup epochs (a DistributedSampler per worker) while every example's training
signals are recorded; then intervals of E_interval epochs on fixed partitions (a ConstantSampler
per worker), each chosen by a heuristic from the importance of the examples over the window before
(the warmup minus its first E_ignore epochs, then the previous interval). Test accuracy every epoch;
one CSV row per run in the paper's schema and a JSON log beside it (results.py).

Plain `python dpt.py` is world size 1. Under torchrun, the process group comes from RANK,
WORLD_SIZE and LOCAL_RANK (NCCL with CUDA, gloo without; --backend overrides). Only rank 0
evaluates, prints and writes results. Every flag is in flags.py.
"""
import sys

import flags

if __name__ == "__main__":
    flags.parse_args(sys.argv[1:])  # a typo fails here, in a fraction of a second, before the torch import below

import datetime
import fcntl
import math
import netrc
import os
import shutil
import time
from argparse import Namespace
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import data
import heuristics
import importance
import lm
import models
import reducers
import results
import samplers
import text
import train
import workload as names
from flags import die
from samplers import WorkerBatches
from workload import Workload


# ---- the schedule ------------------------------------------------------------------------------

def windows(total: int, warmup: int, interval: int) -> list[tuple[int, int]]:
    """(first epoch, number of epochs) of the warmup and of each interval, as the paper's code:
    floor((T - W) / I) intervals after warmup, the last running I + (T - W) mod I epochs."""
    plan = [(0, warmup)]
    if warmup < total:
        count = (total - warmup) // interval
        plan += [(warmup + k * interval, interval) for k in range(count)]
        plan[-1] = (plan[-1][0], plan[-1][1] + (total - warmup) % interval)
    assert sum(n for _, n in plan) == total and all(n >= 1 for _, n in plan)
    return plan


# ---- up-front checks: everything that can be wrong is found before any process group -----------

@dataclass
class Job:
    """What the checks found: the data, where results go, and the checkpoint to resume from."""
    workload: Workload
    train: data.Split
    test: data.Split
    num_workers: int
    csv: Path
    checkpoint_path: Path
    checkpoint: dict | None
    lock: object = None  # the run's lock file, held open for the process's life
    provenance: dict = field(default_factory=dict)  # this process's code and packages (results.provenance)
    finished: bool = False  # the run's row is in its CSV already (--resume: nothing to do)
    readers: list = field(default_factory=list)  # --data-source streaming: this process's workers' readers

    @property
    def labels(self) -> torch.Tensor | None:
        return getattr(self.train, "labels", None)


def writable(folder: Path, flag: str) -> None:
    """Create `folder` and write a probe file there, or die naming `flag`."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        die(f"cannot write results to {folder} ({err.strerror or err}); pass a writable {flag}")


def check_wandb(args: Namespace) -> None:
    """W&B logs only with credentials or an offline mode: find out now, not after training."""
    import importlib.util
    if importlib.util.find_spec("wandb") is None:
        die("--wandb needs the wandb package: pip install wandb (or drop --wandb)")
    if os.environ.get("WANDB_MODE") in ("offline", "disabled", "dryrun") or os.environ.get("WANDB_API_KEY"):
        return
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0]
    try:
        if netrc.netrc(os.environ.get("NETRC")).authenticators(host):
            return
    except (OSError, netrc.NetrcParseError):
        pass
    die("--wandb needs a W&B login: run `wandb login`, or set WANDB_MODE=offline to log locally")


def check_memory(args: Namespace, num_examples: int, device: torch.device) -> None:
    """The recorder holds (channels x examples x epochs of the longest window) float32 values."""
    T, W, I = args.total_epochs, args.warmup_epochs, args.interval_epochs
    longest = max(W, I + (T - W) % I) if W < T else W  # the warmup, or the last (longest) interval
    need = importance.Recorder.nbytes(num_examples, longest, len(channels(args)))
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        free = int(meminfo["MemAvailable"].split()[0]) * 1024
    if need > free // 2:
        die(f"recording {num_examples} examples x {longest} epochs x {len(channels(args))} channels needs "
            f"{need / 2**30:.1f} GiB and {free / 2**30:.1f} GiB are free on {device.type}; lower --total-epochs "
            f"(or --warmup-epochs / --interval-epochs) or --subset")


def acquire(lock_path: Path):
    """Hold the run's lock, or die: two processes running one run would append two rows for it."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(lock_path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        die(f"another process is running this run ({handle.read().strip() or 'pid unknown'}, lock {lock_path}); "
            f"wait for it to finish or stop it, then run again")
    handle.truncate(0)
    handle.write(f"pid {os.getpid()} on {os.uname().nodename}")
    handle.flush()
    return handle


def text_task(args: Namespace) -> bool:
    return args.dataset in names.TEXT_DATASETS


def on_device(args: Namespace) -> bool:
    """Text is small: it always lives on the device; images when --data-on-device."""
    return args.data_on_device or text_task(args)


def load_data(args: Namespace, num_workers: int) -> tuple:
    """The training and test (held-out) splits of --dataset; die() on missing or bad data."""
    try:
        if text_task(args):
            corpus = "kjv" if args.dataset == "kjv" else args.text_file
            return (text.load(corpus, args.data_dir, args.seq_len, True, subset=args.subset, min_examples=num_workers),
                    text.load(corpus, args.data_dir, args.seq_len, False, subset=args.test_subset))
        test = data.load(args.dataset, args.data_dir, train=False, subset=args.test_subset)
        if args.data_source == "streaming":
            return Streamed(0, args.stream_remote), test  # sized once the readers have the remote's index
        return data.load(args.dataset, args.data_dir, train=True, subset=args.subset), test
    except data.DataError as err:
        die(str(err))


@dataclass
class Streamed:
    """The training split of --data-source streaming: its examples stay in the shards, read through
    each worker's cache (train.epoch_batches); here only its size and where it comes from."""
    num_examples: int
    source: str

    def __len__(self) -> int:
        return self.num_examples


def open_readers(args: Namespace, csv: Path, num_workers: int) -> list:
    """This process's workers' streaming readers, each in a cache folder of its own (named by host and
    process, so a second launch of the run cannot touch a live run's caches; removed when the run ends;
    a resumed run starts cold). The default cache: 1/n of the shards' bytes plus the largest shard."""
    import streaming  # litdata takes seconds to import: only for streaming runs

    root = Path(args.cache_dir or csv.parent / "cache" / results.run_name(csv, args.seed))
    remove_stale_caches(root)
    options = {"endpoint_url": args.stream_endpoint} if args.stream_endpoint else None
    readers = []
    try:
        for w in my_workers(args):
            folder = root / f"worker-{w}-{os.uname().nodename}-{os.getpid()}"
            reader = streaming.WorkerReader(args.stream_remote, folder, args.cache_bytes or 2**62, args.cache_policy,
                                            options)
            if args.cache_bytes is None:
                shards = reader.storage.shard_bytes
                cache = int(shards.sum()) // num_workers + int(shards.max())
                shutil.rmtree(folder)  # only the index is there yet
                reader = streaming.WorkerReader(args.stream_remote, folder, cache, args.cache_policy, options)
            readers.append(reader)
    except (ValueError, data.DataError) as err:
        die(str(err))
    return readers


def remove_stale_caches(root: Path) -> None:
    """The cache folders of this host's processes that are gone: a killed run (SIGKILL, or torchrun's
    SIGTERM) never reaches its own clean-up."""
    for folder in root.glob(f"worker-*-{os.uname().nodename}-*"):
        try:
            os.kill(int(folder.name.rsplit("-", 1)[1]), 0)  # signal 0: only asks whether the process exists
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (ValueError, PermissionError):  # not one of our names, or another user's live process
            pass


def check_inputs(args: Namespace, world: int, rank: int) -> Job:
    """Every check that needs files or memory, in the order a user would fix them; die() on the
    first problem. Reads and probes only: nothing is written but the run's lock."""
    device = torch.device(f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if torch.cuda.is_available() else "cpu")
    if (args.backend or ("nccl" if device.type == "cuda" else "gloo")) == "nccl" and device.type != "cuda":
        die("--backend nccl needs CUDA GPUs; use --backend gloo on CPUs")
    if args.wandb and rank == 0:
        check_wandb(args)
    num_workers = world * args.emulate_workers
    workload = flags.workload(args)
    csv = results.csv_path(args.results_dir, workload)
    train_split, test_split = load_data(args, num_workers)
    readers = []
    if args.data_source == "streaming":
        readers = open_readers(args, csv, num_workers)
        train_split = Streamed(len(readers[0]), f"{args.stream_remote} (shards of {readers[0].shard_size}, streamed)")
        if args.subset and args.subset != len(train_split):
            die(f"--subset {args.subset}: a streamed split is the whole remote ({len(train_split)} examples); "
                "write the subset with streaming.py instead")
        if args.shard_size is not None and args.shard_size != readers[0].shard_size:
            die(f"--shard-size {args.shard_size} differs from the remote's shards of {readers[0].shard_size}; drop it")
    if len(train_split) < num_workers:
        die(f"{len(train_split)} training examples cannot be split across {num_workers} workers; raise --subset")
    shards = math.ceil(len(train_split) / shard_size(args, readers, len(train_split), num_workers))
    if args.heuristic == "shard-stripes" and shards < num_workers:
        die(f"--heuristic shard-stripes deals whole shards, and {len(train_split)} examples make {shards} shards for "
            f"{num_workers} workers; pass a --shard-size of at most {len(train_split) // num_workers}")
    if args.reducer != "none" and launch_of(args) == "torchrun" and args.emulate_workers > 1:
        die(f"--reducer {args.reducer} under torchrun hosts one worker per rank (its communication hook); "
            "drop --emulate-workers, or run one process emulating every worker")
    if workload.task == "image":  # BatchNorm cannot normalize a batch of one: refuse now rather than crash mid-run
        per_worker = math.ceil(len(train_split) / num_workers)
        if per_worker % args.batch_size == 1:
            die(f"{len(train_split)} examples on {num_workers} workers give {per_worker} per worker, leaving a batch "
                f"of one with --batch-size {args.batch_size}, which BatchNorm cannot train on; "
                "change --batch-size or --subset")
        if args.eval_protocol == "paper" and len(test_split) % args.batch_size == 1:
            die(f"{len(test_split)} test examples leave a last batch of one with --batch-size {args.batch_size}, which "
                "the paper's protocol (BatchNorm in training mode) cannot evaluate; "
                "change --batch-size or --test-subset")
    check_memory(args, len(train_split), device)  # the recorder lives on the training device
    if csv.is_dir():
        die(f"the result file {csv} is a folder; move it away or pass another --results-dir")
    checkpoint_path = results.checkpoint_path(csv, args.seed)
    job = Job(workload, train_split, test_split, num_workers, csv, checkpoint_path, None, readers=readers)
    if rank == 0:  # the one that writes
        writable(csv.parent, "--results-dir")
        writable(csv.parent / "logs", "--results-dir")
        if args.checkpoint_every or args.resume:
            writable(checkpoint_path.parent, "--results-dir")
        try:
            results.check_appendable(csv, results.columns(args.total_epochs, workload.task))
        except ValueError as err:
            die(str(err))

    if args.resume:
        job.checkpoint = load_checkpoint(checkpoint_path, args, num_workers)
    clash = results.settings_clash(csv, vars(args), flags.row_defining(args.heuristic)) if rank == 0 else None
    if clash:
        die(f"{csv} holds runs set otherwise ({clash}); pass another --results-dir, or the same flags")
    if results.has_row(csv, args.seed):  # never two rows for one run
        if not args.resume:
            die(f"{csv} already holds the row of --seed {args.seed}: this run is done; pass another --seed or "
                f"--results-dir (or --resume, which then does nothing)")
        job.finished = True
        return job
    if rank == 0:
        job.lock = acquire(checkpoint_path.with_suffix(".lock"))  # last: no check after it can leave it held
    return job


# ---- importance and partitions --------------------------------------------------------------------

def channels(args: Namespace) -> tuple[str, ...]:
    """What the run records: exactly what its measure reads (vanilla runs record the loss, as the
    paper's warmup-only baseline did)."""
    return importance.MEASURES[args.measure].channels if args.heuristic != "none" else ("loss",)


def worker_samplers(
    dataset, partition: heuristics.Partition | None, workers: range, num_workers: int, args: Namespace
) -> list:
    """The samplers of `workers`: random slices every epoch in warmup (vanilla DPT), then their fixed
    partitions, shuffled from the run's seed as the paper's code did."""
    return samplers.for_window(dataset, partition, workers, num_workers, shuffle=args.shuffle == "yes",
                               sampler_seed=args.sampler_seed, seed=args.seed, batch_size=args.batch_size)


def movement(before: torch.Tensor, after: heuristics.Partition) -> dict:
    """Per worker, how many examples left its partition and how many joined, against `before` (the
    worker that trained each example in the last epoch)."""
    now = torch.empty_like(before)
    for w, part in enumerate(after):
        now[part] = w
    left, joined = samplers.movement(before, now, len(after))
    return {"left": left.sum(dim=1).tolist(), "joined": joined.sum(dim=1).tolist(), "moved": int(joined.sum())}


def repartition(recorder: importance.Recorder, window_index: int, previous: dict | None, args: Namespace,
                num_workers: int, labels: torch.Tensor | None = None, before: torch.Tensor | None = None,
                shard_size: int | None = None) -> tuple[torch.Tensor, heuristics.Partition, dict, float]:
    """Merge the window before `window_index` across processes, score, sort and partition: identical
    on every process, since all hold the same merged signals and the sorts are stable. The first
    E_ignore columns are dropped only when scoring the warmup (window_index 1), as the paper's code
    did; later intervals are scored whole. `previous`: each channel's column just before the window
    (forgetting counts a transition across the boundary); `labels` and `before` (who trained each
    example last) for the heuristics that read them. Returns the scores, the partition, the window's
    last column (the next window's `previous`) and the seconds taken."""
    start = time.perf_counter()
    ignore = args.ignore_epochs if window_index == 1 else 0
    merged = recorder.merged()
    window = {c: m[:, ignore:] for c, m in merged.items()}
    if window_index == 1:
        previous = {c: m[:, ignore - 1] for c, m in merged.items()} if ignore else None
    scores, order = importance.rank(args.measure, window, previous)
    context = heuristics.Context(scores.cpu(), labels, before, window_index, args.seed, shard_size)
    parts = heuristics.partition(order.cpu(), num_workers, args.heuristic, context)
    return scores, parts, {c: m[:, -1] for c, m in merged.items()}, time.perf_counter() - start


def begin_window(run: "Run", index: int, plan: list, args: Namespace, job: "Job", device: torch.device,
                 record: tuple[str, ...]) -> None:
    """Start window `index`: after warmup, repartition from the window before (logging how many
    examples each worker lost and gained); then an empty recorder."""
    first_epoch, length = plan[index]
    if index > 0:
        everyone = worker_samplers(job.train, run.partition, range(job.num_workers), job.num_workers, args)
        before = samplers.assignment(everyone, first_epoch - 1)
        if args.save_partitions:
            run.partitions[-1]["trained"] = trained_in(plan[index - 1], run.partition, args, job)
        shards = shard_size(args, job.readers, len(job.train), job.num_workers)
        scores, run.partition, run.carry, seconds = repartition(run.recorder, index, run.carry, args, job.num_workers,
                                                                 job.labels, before, shards)
        moved = movement(before, run.partition)
        run.log["intervals"].append({"start_epoch": first_epoch + 1, "epochs": length, "heuristic_s": seconds,
                                     "partition_sizes": [len(p) for p in run.partition], "movement": moved})
        if args.save_partitions:
            run.partitions.append({"start_epoch": first_epoch + 1, "epochs": length, "partition": run.partition,
                                   "importance": scores.cpu(), "movement": moved})
    elif args.save_partitions:
        run.partitions.append({"start_epoch": 1, "epochs": length, "partition": None})
    run.window, run.recorder = index, importance.Recorder(len(job.train), length, record, device)
    for w, reader in zip(my_workers(args), job.readers):
        reader.set_window(None if run.partition is None else run.partition[w])


# ---- checkpoints -----------------------------------------------------------------------------------

def launch_of(args: Namespace) -> str:
    """How the workers exchange gradients: as torchrun ranks (DDP buckets), or emulated in one process."""
    return "torchrun" if "RANK" in os.environ else "emulated"


def load_checkpoint(path: Path, args: Namespace, num_workers: int) -> dict | None:
    """This run's checkpoint for --resume, checked against the flags; None if there is none."""
    results.clean_temporaries(path)
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        die(f"corrupt checkpoint {path} ({type(err).__name__}); delete it to start the run afresh")
    if not isinstance(state, dict) or not CHECKPOINT_KEYS <= state.keys():
        missing = sorted(CHECKPOINT_KEYS - set(state)) if isinstance(state, dict) else "everything"
        die(
            f"{path} is not a checkpoint of dpt.py (missing {missing}); "
            f"delete it to start the run afresh"
        )
    changed = [f"--{k.replace('_', '-')} {state['args'].get(k)} -> {getattr(args, k)}" for k in flags.run_defining()
               if state["args"].get(k) != getattr(args, k)]
    if state["num_workers"] != num_workers:
        changed.append(f"workers {state['num_workers']} -> {num_workers} (processes x --emulate-workers)")
    launch = launch_of(args)
    if args.reducer != "none" and state.get("launch", launch) != launch:  # older checkpoints did not say
        changed.append(f"the reducer's exchange {state.get('launch')} -> {launch} (its state is per DDP bucket and "
                       f"rank, or one bucket for every emulated worker)")
    if changed:
        die(f"checkpoint {path} belongs to another run ({'; '.join(changed)}); drop --resume or restore those flags")
    return state


CHECKPOINT_KEYS = {"args", "num_workers", "epoch", "window", "model", "optimizer", "rng", "recorded", "exchange",
                   "carry", "partition", "metrics", "log", "log_name", "partitions", "elapsed_s"}


@dataclass
class Run:
    """The state a run carries from epoch to epoch, and what a checkpoint saves."""
    window: int = 0  # the window (0: warmup) the next epoch belongs to, or the one just finished
    epoch: int = 0  # epochs trained so far
    partition: heuristics.Partition | None = None
    recorder: importance.Recorder | None = None
    carry: dict | None = None  # each channel's last column of the window before the current one
    metrics: list = field(default_factory=list)  # the row's per-epoch metric
    log: dict = field(default_factory=dict)
    log_name: str = ""
    partitions: list = field(default_factory=list)  # --save-partitions: one entry per window
    elapsed_s: float = 0.0


def save_checkpoint(run: Run, window_start: int, model, optimizer, exchange, args: Namespace, job: Job,
                    started: float) -> None:
    """Every process takes part (the recorder's merge and the reducers' states are collectives); rank 0 writes."""
    recorded = run.recorder.merged(run.epoch - window_start)
    # one per rank: the reducers' residuals, the random generators and what each recorded differ
    exchanges = gather_to_first(exchange.state_dict()) if exchange else None
    rngs = gather_to_first(rng_states())
    if not dist.is_initialized() or dist.get_rank() == 0:
        results.save_torch(job.checkpoint_path, {
            "args": vars(args), "num_workers": job.num_workers, "launch": launch_of(args), "epoch": run.epoch,
            "window": run.window,
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "rng": rngs,
            "recorded": {c: v.cpu() for c, v in recorded.items()}, "exchange": exchanges,
            "carry": run.carry and {c: v.cpu() for c, v in run.carry.items()}, "partition": run.partition,
            "metrics": run.metrics, "log": run.log, "log_name": run.log_name, "partitions": run.partitions,
            "elapsed_s": time.perf_counter() - started, "provenance": job.provenance})
    if dist.is_initialized():
        dist.barrier()  # the others wait for the file: a rank failing right after must not take it with it


def restore(state: dict, model, optimizer, exchange, plan: list, args: Namespace, job: Job, device: torch.device,
            rank: int, world: int) -> Run:
    """The run where its checkpoint left it, the current window's signals so far included (merged
    values: rank 0 restores them, the others start empty, so the next merge sums to the same), and
    this rank's reducer state (residuals, thresholds, blocks). The number of processes may have
    changed (same workers, other hosts): its random generators then keep their fresh per-rank seeds."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    rngs = [(state["rng"], None)] if isinstance(state["rng"], torch.Tensor) else state["rng"]  # older checkpoints
    if len(rngs) == world:
        cpu, cuda = rngs[rank]
        torch.set_rng_state(cpu)
        if cuda is not None and device.type == "cuda":
            torch.cuda.set_rng_state(cuda, device)
    if exchange:  # a reducer run resumes on the same processes (load_checkpoint)
        exchange.load_state_dict(state["exchange"][rank], device, rebuilding=dist.is_initialized())
    length = plan[state["window"]][1]
    recorder = importance.Recorder(len(job.train), length, tuple(state["recorded"]), device)
    if rank == 0:
        recorder.restore(state["recorded"])
    carry = state["carry"] and {c: v.to(device) for c, v in state["carry"].items()}
    run = Run(state["window"], state["epoch"], state["partition"], recorder, carry, state["metrics"], state["log"],
              state["log_name"], state["partitions"], state["elapsed_s"])
    run.log["resumed_at_epoch"].append(run.epoch + 1)
    run.log.setdefault("resume_provenance", []).append(job.provenance)  # the code may have changed since
    return run


# ---- the run -------------------------------------------------------------------------------------

def build_model(args: Namespace, device: torch.device) -> torch.nn.Module:
    """ResNets as the paper's code built them (channels_last: augmented batches arrive NHWC, and DDP's
    gradient buckets want the gradients' layout to match the parameters'), or a language model."""
    if text_task(args):
        given = {"layers": args.layers, "hidden": args.hidden, "heads": args.heads, "dropout": args.dropout}
        arguments = {"lstm": {"layers": ["layers"], "hidden": ["embed", "hidden"], "dropout": ["dropout"]},
                     "gpt": {"layers": ["n_layer"], "hidden": ["n_embd"], "heads": ["n_head"], "dropout": ["dropout"]}}
        sizes = {name: given[flag] for flag, targets in arguments[args.model].items() for name in targets
                 if given[flag] is not None}
        return lm.build(args.model, text.VOCAB, args.seq_len, **sizes).to(device)
    spec = data.SPECS[args.dataset]
    model = models.build(args.model, spec.num_classes, spec.channels, workers=args.emulate_workers,
                         fused=args.emulation == "fused")
    return model.to(device, memory_format=torch.channels_last)


def gradient_exchange(args: Namespace, train_model, launched: bool, rank: int, num_workers: int):
    """The --reducer's state: registered as the DDP model's communication hook under torchrun (this
    rank's worker), or hosting every emulated worker of this process (train.sequential_backward)."""
    if args.reducer == "none":
        return None
    if launched:
        state = reducers.make_state(args.reducer, args.density, num_workers, workers=[rank])
        train_model.register_comm_hook(state, reducers.hook)
        return state
    return reducers.make_state(args.reducer, args.density, num_workers)


def start_process_group(args: Namespace, launched: bool, local_rank: int) -> torch.device:
    """The process group from torchrun's environment, and this rank's device (its own GPU, whatever the
    backend: CUDA events, streams and the recorder all follow the current device)."""
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    if launched:
        backend = args.backend or ("nccl" if torch.cuda.is_available() else "gloo")
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=args.timeout))
    return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")


def shard_size(args: Namespace, readers: list, num_examples: int, num_workers: int) -> int:
    """Examples per storage shard (shard-stripes): --shard-size, else the streaming remote's, else 100
    (fewer when the data would give fewer than one shard per worker)."""
    return args.shard_size or (readers[0].shard_size if readers else min(100, num_examples // num_workers))


def my_workers(args: Namespace) -> range:
    """The workers this process hosts: --emulate-workers of them, numbered by rank."""
    rank = int(os.environ.get("RANK", 0))
    return range(rank * args.emulate_workers, (rank + 1) * args.emulate_workers)


def phase(args: Namespace, index: int) -> str:
    return "vanilla" if args.heuristic == "none" else "warmup" if index == 0 else f"interval {index}"


def log_epoch(run: Run, epoch: int, phase: str, stats: dict, args: Namespace, wandb_run) -> None:
    text_run = "bits_per_byte" in stats
    run.metrics.append(stats["bits_per_byte" if text_run else "test_accuracy"])
    run.log["epochs"].append({"epoch": epoch + 1, "phase": phase, **stats})
    held_out = (f"held-out {stats['test_loss']:.4f} nats  ppl {stats['perplexity']:7.3f}  "
                f"{stats['bits_per_byte']:.4f} bpb  {stats['tokens_per_s']:8.0f} tok/s" if text_run else
                f"test {stats['test_accuracy']:6.2f}%  {stats['images_per_s']:8.0f} img/s")
    print(f"epoch {epoch + 1:3d}/{args.total_epochs} {phase:>11s}  loss {stats['train_loss']:.4f}  {held_out}  "
          f"tracking {stats['tracking_s']:.3f}s", flush=True)
    if wandb_run:
        wandb_run.log({"epoch": epoch + 1, **stats})


def main(argv: list[str] | None = None) -> None:
    args = flags.parse_args(argv)
    launched = "RANK" in os.environ  # torchrun, nanoGPT-style
    rank, world, local_rank = (
        int(os.environ.get("RANK", 0)),
        int(os.environ.get("WORLD_SIZE", 1)),
        int(os.environ.get("LOCAL_RANK", 0)),
    )
    job = check_inputs(args, world, rank)
    try:
        if job.finished:
            if rank == 0:
                print(f"{results.run_name(job.csv, args.seed)} finished already: its row is in {job.csv}; "
                      "nothing to do")
            return
        train_run(args, job, launched, rank, world, local_rank)
    finally:
        if job.lock:
            job.lock.close()  # releases the run's lock (the process's exit would too)
        for reader in job.readers:
            shutil.rmtree(reader.cache_dir, ignore_errors=True)  # a cache: the shards stay at the remote


def train_run(args: Namespace, job: Job, launched: bool, rank: int, world: int, local_rank: int) -> None:
    master = rank == 0
    job.provenance = results.provenance()

    # ---- from here on processes talk to each other ----
    device = start_process_group(args, launched, local_rank)
    if args.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = not args.deterministic
    torch.manual_seed(args.seed)
    train_split, test_split = (job.train.to(device), job.test.to(device)) if on_device(args) else (job.train, job.test)
    model = build_model(args, device)
    train_model = DDP(model, device_ids=[local_rank] if device.type == "cuda" else None) if launched else model
    exchange = gradient_exchange(args, train_model, launched, rank, job.num_workers)
    # Every process built the same model from --seed (and DDP broadcasts rank 0's); from here each rank
    # draws its own dropout masks, as an emulation's workers do. Rank 0 keeps --seed's stream as it is.
    if rank:
        torch.manual_seed(args.seed + (rank << 32))
    step = train.Step.build(amp=args.amp == "bf16", workers=args.emulate_workers, batch_size=args.batch_size,
                            device=device, spec=None if text_task(args) else data.SPECS[args.dataset], seed=args.seed,
                            sequential=args.emulation == "sequential", on_device=on_device(args),
                            eval_protocol=args.eval_protocol, channels=channels(args),
                            reducer=None if launched else exchange, readers=job.readers or None)
    optimizer = models.optimizer(model, args.lr, args.momentum, args.weight_decay, args.optimizer)
    plan = windows(args.total_epochs, args.warmup_epochs, args.interval_epochs)
    name = results.run_name(job.csv, args.seed)

    if job.checkpoint:
        run = restore(job.checkpoint, model, optimizer, exchange, plan, args, job, device, rank, world)
        for w, reader in zip(my_workers(args), job.readers):  # pin the window's shards again
            reader.set_window(None if run.partition is None else run.partition[w])
    else:
        run = Run(log_name=f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json")
        run.log = {"workload": vars(job.workload), "provenance": job.provenance, "world_size": world,
                   "workers": job.num_workers, "examples": len(job.train), "device": str(device),
                   "data": job.train.source, "test_data": job.test.source, "csv": str(job.csv), "epochs": [],
                   "intervals": [], "resumed_at_epoch": [],
                   "shard_size": shard_size(args, job.readers, len(job.train), job.num_workers)}
    run.log["args"] = vars(args)
    log_path = job.csv.parent / "logs" / run.log_name  # beside the results given, wherever the checkpoint was made
    wandb_run = None
    if args.wandb and master:
        import wandb
        wandb_run = wandb.init(project=args.wandb_project, entity=args.wandb_entity, name=args.wandb_name or name,
                               config=vars(args), notes=args.description or None)
    if master:
        print(f"{name}: {job.num_workers} workers ({world} processes x {args.emulate_workers}) "
              f"x batch {args.batch_size}, {len(train_split)} train / {len(test_split)} test examples from "
              f"{job.train.source}, {device}, results -> {job.csv}"
              + (f"; resuming after epoch {run.epoch}" if job.checkpoint else ""), flush=True)

    started = time.perf_counter() - run.elapsed_s
    for index in range(run.window, len(plan)):
        first_epoch, length = plan[index]
        if run.epoch == first_epoch:  # a new window (a resumed run may be in the middle of one)
            begin_window(run, index, plan, args, job, device, step.channels)
        batches = WorkerBatches(worker_samplers(train_split, run.partition, my_workers(args), job.num_workers, args),
                                args.batch_size)
        for epoch in range(run.epoch, first_epoch + length):
            for reader in job.readers:
                reader.set_epoch(epoch)
            stats = train.train_epoch(train_model, optimizer, batches, train_split, step, epoch, run.recorder,
                                      epoch - first_epoch)
            stats = epoch_figures(stats, epoch, exchange, job.readers)
            run.epoch = epoch + 1
            if master:
                stats |= train.evaluate(model, test_split, step, epoch)
                log_epoch(run, epoch, phase(args, index), stats, args, wandb_run)
            if args.checkpoint_every and run.epoch % args.checkpoint_every == 0:
                save_checkpoint(run, first_epoch, model, optimizer, exchange, args, job, started)
    if args.save_partitions:
        run.partitions[-1]["trained"] = trained_in(plan[-1], run.partition, args, job)

    if master:
        finish(run, args, job, time.perf_counter() - started, log_path, wandb_run)
    if dist.is_initialized():
        dist.destroy_process_group()


def epoch_figures(stats: dict, epoch: int, exchange, readers: list) -> dict:
    """The epoch's training figures, with this rank's gradient exchange (bytes it sent, its selection
    time) and what every worker's streaming cache fetched, as the filesystem counted it. A diverged
    run stops here, on every rank alike (the training loss is all-reduced)."""
    if not math.isfinite(stats["train_loss"]):
        die(f"training diverged in epoch {epoch + 1} (training loss {stats['train_loss']}); "
            "no row was written; lower --lr (or use --amp none)", status=1)
    if exchange:
        stats["exchange"] = exchange.take_stats()
    if readers:
        stats["io"] = [row for rows in gather_objects([r.stats().iloc[-1].to_dict() for r in readers]) for row in rows]
    return stats


def finish(run: Run, args: Namespace, job: Job, total_s: float, log_path: Path, wandb_run) -> None:
    """The row (appended under the lock), the log, the saved partitions; rank 0 only."""
    values = results.row(args.seed, run.metrics, job.workload)
    metric = results.METRICS[job.workload.task]
    results.append_row(job.csv, values)
    best = {metric.column: values[metric.column], "best_epoch": values["best_epoch"]}
    run.log.update(best, total_training_s=total_s,
                   tracking_s_per_epoch=sum(e["tracking_s"] for e in run.log["epochs"]) / len(run.log["epochs"]))
    results.write_json(log_path, run.log)
    if args.save_partitions:
        results.save_torch(log_path.with_suffix(".partitions.pt"), {"args": vars(args), "windows": run.partitions})
    best_value = values[metric.column]
    shown = f"{best_value:.4f} bits per byte" if job.workload.task == "text" else f"test accuracy {best_value:.2f}%"
    print(f"best {shown} at epoch {values['best_epoch']}, {total_s:.1f}s; row appended to {job.csv}, log {log_path}")
    if wandb_run:
        wandb_run.summary.update(best)
        wandb_run.finish()


def trained_in(window: tuple[int, int], partition: heuristics.Partition | None, args: Namespace,
               job: Job) -> list[torch.Tensor]:
    """What each process's workers trained on in `window` (for --save-partitions), in rank order on
    every process: replayed from their samplers, which alone decide it."""
    first, length = window
    mine = worker_samplers(job.train, partition, my_workers(args), job.num_workers, args)
    return gather_objects(samplers.trained(mine, range(first, first + length)))


def rng_states() -> tuple:
    """This process's random generators: the CPU's, and its GPU's (dropout masks are drawn there)."""
    return torch.get_rng_state(), torch.cuda.get_rng_state() if torch.cuda.is_available() else None


def gather_to_first(value) -> list | None:
    """Every process's `value`, in rank order, on rank 0 (None elsewhere)."""
    if not dist.is_initialized():
        return [value]
    out = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(value, out, dst=0)
    return out


def gather_objects(value) -> list:
    """Every process's `value`, in rank order, on every process."""
    if not dist.is_initialized():
        return [value]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


if __name__ == "__main__":
    main()
