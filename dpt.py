"""Importance-aware data-parallel training (Sheikholeslami et al., DAIS 2023): the training script.

    torchrun --nproc_per_node=4 dpt.py --dataset cifar10 --model resnet18 \\
        --heuristic stripes --measure variance --warmup-epochs 20 \\
        --interval-epochs 5 --ignore-epochs 5 --total-epochs 100 --seed 17611
    python dpt.py --dataset fashionmnist --subset 2000 --total-epochs 6 --warmup-epochs 3 --interval-epochs 1 --ignore-epochs 1

Vanilla DPT for E_warmup epochs (a DistributedSampler per worker) while every example's loss is
recorded; then intervals of E_interval epochs on fixed partitions (a ConstantSampler per
worker), each chosen by a heuristic from the importance of the examples over the window before
(the warmup minus its first E_ignore epochs, then the previous interval). Test accuracy every
epoch; one CSV row per run in the paper's schema and a JSON log beside it (results.py).

Plain `python dpt.py` is world size 1. Under torchrun, the process group comes from RANK,
WORLD_SIZE and LOCAL_RANK (NCCL with CUDA, gloo without; --backend overrides). Only rank 0
evaluates, prints and writes results.
"""
import argparse
import contextlib
import importlib.util
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

import augment
import data
import heuristics
import importance
import models
import results
import samplers
from samplers import WorkerBatches

PAPER_SEEDS = (17611, 74606, 8271, 33432, 15455, 64937, 99740, 58915, 61898, 85405)


def die(message: str) -> None:
    """Bad input: one line on stderr (once per node under torchrun), exit status 2, no traceback."""
    if os.environ.get("LOCAL_RANK", "0") == "0":
        print(f"dpt.py: error: {message}", file=sys.stderr)
    sys.exit(2)


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        die(message)


def build_parser() -> argparse.ArgumentParser:
    """Defaults are the paper's settings (section 5.1 and its code)."""
    p = Parser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    w = p.add_argument_group("workload")
    w.add_argument("--dataset", default="cifar10", choices=list(data.SPECS))
    w.add_argument("--model", default="resnet18", choices=list(models.MODELS))
    w.add_argument("--heuristic", default="stripes", choices=["none", *heuristics.HEURISTICS, *heuristics.ALIASES.keys() - {"none"}],
                   help="partitioning heuristic; none = vanilla DPT for every epoch (the baseline); "
                        "the paper's code names roundrobin (= stripes) and steps (= blocks) are accepted")
    w.add_argument("--measure", default="variance", choices=list(importance.MEASURES), help="importance of an example from its row of losses")
    s = p.add_argument_group("schedule (epochs)")
    s.add_argument("--total-epochs", type=int, default=100, help="T")
    s.add_argument("--warmup-epochs", type=int, default=20, help="E_warmup: vanilla epochs before the first partition (set to T under --heuristic none)")
    s.add_argument("--interval-epochs", type=int, default=5, help="E_interval: epochs per fixed partition; the last interval also runs the (T - W) mod I leftover epochs")
    s.add_argument("--ignore-epochs", type=int, default=5, help="E_ignore: first warmup epochs left out of the first importance")
    s.add_argument("--repartition", choices=["once", "interval"], default=None,
                   help="interval: repartition every E_interval epochs (default with a heuristic); "
                        "once: one partition for all T - W epochs after warmup (default, and the only mode, with --heuristic none)")
    s.add_argument("--shuffle", choices=["yes", "no"], default="yes", help="reshuffle each worker's fixed partition every epoch")
    o = p.add_argument_group("optimization")
    o.add_argument("--batch-size", type=int, default=256, help="per worker (the paper: 4 workers x 256)")
    o.add_argument("--lr", type=float, default=0.1, help="constant, no schedule (as the paper's code)")
    o.add_argument("--momentum", type=float, default=0.9, help="Nesterov momentum")
    o.add_argument("--weight-decay", type=float, default=5e-4)
    o.add_argument("--seed", type=int, default=PAPER_SEEDS[0], help="torch.manual_seed in every process; also keys each example's augmentation")
    o.add_argument("--sampler-seed", type=int, default=0,
                   help="seed of the samplers' shuffles (the paper's code left DistributedSampler at its default 0 for every run)")
    r = p.add_argument_group("run")
    r.add_argument("--eval-protocol", choices=["paper", "standard"], default="paper",
                   help="paper: test set with the training augmentation, BatchNorm in training mode (the paper's code); "
                        "standard: eval mode, no augmentation")
    r.add_argument("--data-dir", default="data", help="where datasets are (or are downloaded to)")
    r.add_argument("--subset", type=int, default=0, help="train on the first N training examples only (0: all)")
    r.add_argument("--test-subset", type=int, default=0, help="evaluate on the first N test examples only (0: all)")
    r.add_argument("--results-dir", default="results", help="CSV rows and JSON logs go under here")
    r.add_argument("--description", default="", help="free text stored in the log (and W&B notes)")
    r.add_argument("--save-partitions", action="store_true",
                   help="also save every partition and the examples each rank recorded per window (<log>.partitions.pt)")
    r.add_argument("--checkpoint-every", type=int, default=0,
                   help="save the run's state every K epochs (0: never) to <results-dir>/<workload>/checkpoints/<run>.pt")
    r.add_argument("--resume", action="store_true",
                   help="continue from this run's checkpoint if there is one (else start afresh), to the same result row")
    r.add_argument("--backend", choices=["nccl", "gloo"], default=None, help="process-group backend (default: nccl with CUDA, else gloo)")
    r.add_argument("--deterministic", action="store_true", help="torch.use_deterministic_algorithms(True), for bitwise repeatable runs")
    f = p.add_argument_group("speed (one GPU as N workers)")
    f.add_argument("--emulate-workers", type=int, default=1,
                   help="logical workers per process, with exactly the semantics of that many DDP ranks "
                        "(own batches, own BatchNorm statistics, averaged gradients); workers = processes x this")
    f.add_argument("--emulation", choices=["fused", "sequential"], default="fused",
                   help="fused: the workers' batches in one forward pass, BatchNorm per worker (fast); sequential: one "
                        "forward/backward per worker, gradients accumulated: bit for bit 2-rank DDP's arithmetic (a reference)")
    f.add_argument("--data-on-device", action="store_true",
                   help="hold the datasets as uint8 tensors on the device and gather batches there (no DataLoader)")
    f.add_argument("--amp", choices=["none", "bf16"], default="none", help="autocast the forward pass to bfloat16")
    b = p.add_argument_group("Weights & Biases (optional)")
    b.add_argument("--wandb", action="store_true", help="log each epoch to W&B (WANDB_MODE=offline works without a network)")
    b.add_argument("--wandb-project", default="importance-aware-dpt")
    b.add_argument("--wandb-entity", default=None)
    b.add_argument("--wandb-name", default=None, help="run name (default: the run's CSV file and seed)")
    return p


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Check the flags against each other and fill in the derived ones; die() on bad input."""
    args.heuristic = heuristics.ALIASES.get(args.heuristic, args.heuristic)
    T, W, I, E = args.total_epochs, args.warmup_epochs, args.interval_epochs, args.ignore_epochs
    if T < 1:
        die(f"--total-epochs must be at least 1 (got {T})")
    if args.batch_size < 1:
        die(f"--batch-size is per worker and must be at least 1 (got {args.batch_size})")
    if args.lr <= 0 or args.momentum <= 0 or args.weight_decay < 0:
        die("--lr and --momentum must be positive (Nesterov SGD needs momentum) and --weight-decay non-negative")
    if args.subset < 0 or args.test_subset < 0:
        die("--subset and --test-subset take a number of examples (0 for all)")
    if args.emulate_workers < 1:
        die(f"--emulate-workers is the number of workers each process hosts and must be at least 1 (got {args.emulate_workers})")
    if args.checkpoint_every < 0:
        die(f"--checkpoint-every takes a number of epochs, 0 for never (got {args.checkpoint_every})")
    if args.heuristic == "none":
        if args.repartition == "interval":
            die("--heuristic none trains vanilla DPT for all epochs and never repartitions; "
                "drop --repartition interval, or pick --heuristic stripes or blocks")
        args.warmup_epochs, args.repartition, args.interval_epochs = T, "once", 0
        return args
    if W > T:
        die(f"--warmup-epochs {W} exceeds --total-epochs {T}; warmup is part of the T epochs")
    args.repartition = args.repartition or "interval"
    if W < 1 or W == T:
        die(f"--heuristic {args.heuristic} needs 1 <= --warmup-epochs < --total-epochs (got W={W}, T={T}); "
            "for vanilla DPT throughout use --heuristic none")
    if E < 0 or E >= W:
        die(f"--ignore-epochs {E} leaves no warmup loss column to score (W={W}); pass 0 <= --ignore-epochs < --warmup-epochs")
    if args.repartition == "once":
        args.interval_epochs = T - W
    elif I < 1:
        die(f"--interval-epochs must be at least 1 in interval mode (got {I}); or pass --repartition once")
    elif I > T - W:
        die(f"--interval-epochs {I} exceeds the {T - W} epochs after warmup; pass at most {T - W} or --repartition once")
    return args


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return resolve(build_parser().parse_args(argv))


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


class DeviceTimer:
    """Sums the time of short sections without a sync per section: CUDA events on a GPU,
    the wall clock on a CPU. `seconds()` syncs once."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.events, self.wall = [], 0.0

    def __enter__(self):
        if self.cuda:
            self.events.append((torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)))
            self.events[-1][0].record()
        else:
            self.start = time.perf_counter()

    def __exit__(self, *exc):
        if self.cuda:
            self.events[-1][1].record()
        else:
            self.wall += time.perf_counter() - self.start

    def seconds(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
            return sum(a.elapsed_time(b) for a, b in self.events) / 1000
        return self.wall


def epoch_batches(batches: WorkerBatches, train: data.Split, device: torch.device, on_device: bool):
    """This epoch's steps as (uint8 images, labels, keys, example indices) on `device`: gathered from a
    device-resident split, or through a DataLoader (the general path, for data that does not fit on
    the device). A key is the index, or index + N for a padding copy."""
    if on_device:
        keys = batches.keys().to(device)  # the whole epoch's keys in one copy
        size = batches.batch_size
        for step in range(len(batches)):
            step_keys = keys[:, step * size:(step + 1) * size].reshape(-1)
            index = step_keys % len(train)
            yield train.images[index], train.labels[index], step_keys, index
        return
    loader = DataLoader(data.IndexedDataset(train), batch_sampler=batches, pin_memory=device.type == "cuda")
    for images, labels, keys in loader:
        keys = keys.to(device, non_blocking=True)
        yield images.to(device, non_blocking=True), labels.to(device, non_blocking=True), keys, keys % len(train)


def sequential_backward(model, inputs: torch.Tensor, labels: torch.Tensor, args) -> torch.Tensor:
    """The emulated workers one after another on the same parameters, gradients accumulated (the
    plain reference for the fused path). Each pass is exactly a rank's computation, and scaling by
    1/2 and summing two terms are exact, so 2 workers reproduce 2-rank DDP bit for bit. Only worker
    0 updates BatchNorm's running statistics, as DDP keeps rank 0's. Returns per-example losses."""
    workers = args.emulate_workers
    module = model.module if isinstance(model, DDP) else model
    losses = []
    for k, (x, y) in enumerate(zip(inputs.chunk(workers), labels.chunk(workers))):
        last = k == workers - 1
        with (contextlib.nullcontext() if last or not isinstance(model, DDP) else model.no_sync()), \
                (contextlib.nullcontext() if k == 0 else models.batch_statistics(module)), \
                torch.autocast(inputs.device.type, dtype=torch.bfloat16, enabled=args.amp == "bf16"):
            worker_losses = F.cross_entropy(model(x).float(), y, reduction="none")
        (worker_losses.mean() / workers).backward()
        losses.append(worker_losses.detach())
    return torch.cat(losses)


def train_epoch(model, optimizer, batches: WorkerBatches, train: data.Split, spec: data.Spec, epoch: int,
                args, device: torch.device, matrix: importance.LossMatrix | None, column: int) -> dict:
    """One epoch over this process's workers' batches. Per-example losses come from the same
    forward pass as the training loss and go to the loss matrix (None: not recorded, for
    bench.py); nothing syncs the device per step."""
    batches.set_epoch(epoch)
    tracking = DeviceTimer(device)
    loss_sum = torch.zeros((), device=device)
    start = time.perf_counter()
    for images, labels, keys, index in epoch_batches(batches, train, device, args.data_on_device):
        inputs = augment.augment(images, index, args.seed, epoch, augment.TRAIN, spec.mean, spec.std, spec.crop_padding)
        optimizer.zero_grad(set_to_none=True)
        if args.emulation == "sequential" and args.emulate_workers > 1:
            losses = sequential_backward(model, inputs, labels, args)
        else:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp == "bf16"):
                logits = model(inputs)
            losses = F.cross_entropy(logits.float(), labels, reduction="none")
            # Every worker's chunk has the same size, so this is the mean of the workers' mean losses:
            # with DDP averaging over processes, the gradient N ranks of one worker each would compute.
            losses.mean().backward()
        optimizer.step()
        if matrix is not None:
            with tracking:
                matrix.record(keys, column, losses)
        loss_sum += losses.detach().sum()
    totals = torch.tensor([loss_sum.item(), batches.samples_per_worker * len(batches.samplers)], device=device)
    seconds = time.perf_counter() - start
    if dist.is_initialized():
        dist.all_reduce(totals)  # over all workers, padding included
    loss_total, samples = totals.tolist()
    return {"train_loss": loss_total / samples, "images_per_s": samples / seconds, "train_s": seconds,
            "tracking_s": tracking.seconds()}


@torch.no_grad()
def evaluate(model, test: data.Split, spec: data.Spec, epoch: int, args, device: torch.device) -> float:
    """Test accuracy in percent. paper: the training augmentation and BatchNorm batch statistics, as
    the paper's code (which never switched to eval mode); standard: eval mode, plain images.
    Batches of --batch-size, as one worker's (BatchNorm statistics depend on the batch)."""
    correct = torch.zeros((), dtype=torch.int64, device=device)
    paper = args.eval_protocol == "paper"
    with models.batch_statistics(model) if paper else models.eval_mode(model):
        for start in range(0, len(test), args.batch_size):
            images = test.images[start:start + args.batch_size].to(device, non_blocking=True)
            labels = test.labels[start:start + args.batch_size].to(device, non_blocking=True)
            if paper:
                index = torch.arange(start, start + len(labels), device=device)
                inputs = augment.augment(images, index, args.seed, epoch, augment.TEST, spec.mean, spec.std, spec.crop_padding)
            else:
                inputs = augment.normalize(images, spec.mean, spec.std).contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp == "bf16"):
                correct += (model(inputs).argmax(dim=1) == labels).sum()
    return 100.0 * correct.item() / len(test)


def repartition(matrix: importance.LossMatrix, window_index: int, args, num_workers: int) -> tuple[torch.Tensor, heuristics.Partition, float]:
    """Merge the losses of the window before `window_index` across processes, score, sort and
    partition: identical on every process, since all hold the same merged matrix and the sort is
    stable. Returns the scores too. The first E_ignore columns are dropped only when scoring the
    warmup (window_index 1), as the paper's code did; later intervals are scored whole."""
    start = time.perf_counter()
    ignore = args.ignore_epochs if window_index == 1 else 0
    window = matrix.merged()[:, ignore:]
    scores = importance.MEASURES[args.measure](window)
    parts = heuristics.partition(importance.order(scores).cpu(), num_workers, args.heuristic)
    return scores, parts, time.perf_counter() - start


def gather_rows(rows: torch.Tensor) -> list[torch.Tensor]:
    """Every process's recorded rows, on every process (only for --save-partitions)."""
    if not dist.is_initialized():
        return [rows.cpu()]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, rows.cpu())
    return out


def worker_samplers(dataset, partition: heuristics.Partition | None, my_workers: range, num_workers: int, args) -> list:
    """This process's workers' samplers: random slices every epoch in warmup (vanilla DPT), then
    their fixed partitions."""
    return samplers.for_window(dataset, partition, my_workers, num_workers, shuffle=args.shuffle == "yes",
                               sampler_seed=args.sampler_seed, seed=args.seed)


# What makes two runs the same run: a checkpoint resumes only under the same values.
RUN_DEFINING = ("dataset", "model", "heuristic", "measure", "total_epochs", "warmup_epochs", "interval_epochs",
                "ignore_epochs", "repartition", "shuffle", "batch_size", "lr", "momentum", "weight_decay", "seed",
                "sampler_seed", "eval_protocol", "subset", "test_subset")


def load_checkpoint(path: Path, args, num_workers: int) -> dict | None:
    """This run's checkpoint for --resume, checked against the flags; None if there is none."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        die(f"corrupt checkpoint {path} ({type(err).__name__}); delete it to start the run afresh")
    changed = [f"--{k.replace('_', '-')} {state['args'][k]} -> {getattr(args, k)}" for k in RUN_DEFINING
               if state["args"][k] != getattr(args, k)]
    if state["num_workers"] != num_workers:
        changed.append(f"workers {state['num_workers']} -> {num_workers} (processes x --emulate-workers)")
    if changed:
        die(f"checkpoint {path} belongs to another run ({'; '.join(changed)}); drop --resume or restore those flags")
    return state


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    launched = "RANK" in os.environ  # torchrun, nanoGPT-style
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    master = rank == 0
    backend = args.backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl" and not torch.cuda.is_available():
        die("--backend nccl needs CUDA GPUs; use --backend gloo on CPUs")
    if args.wandb and importlib.util.find_spec("wandb") is None:
        die("--wandb needs the wandb package: pip install wandb (or drop --wandb)")
    num_workers = world * args.emulate_workers
    spec = data.SPECS[args.dataset]
    csv_path = results.csv_path(args.results_dir, args.dataset, args.model, args.heuristic, args.measure,
                                args.warmup_epochs, args.interval_epochs, args.total_epochs)
    run_name = results.run_name(csv_path, args.seed)
    checkpoint_path = results.checkpoint_path(csv_path, args.seed)
    try:
        train = data.load(args.dataset, args.data_dir, train=True, subset=args.subset)
        test = data.load(args.dataset, args.data_dir, train=False, subset=args.test_subset)
        results.check_appendable(csv_path, args.total_epochs)
    except (data.DataError, ValueError) as err:
        die(str(err))
    if len(train) < num_workers:
        die(f"{len(train)} training examples cannot be split across {num_workers} workers; raise --subset")
    # Training-mode BatchNorm cannot normalize a batch of one example (the last step of an epoch,
    # or the last test batch under the paper's protocol): refuse now rather than crash mid-run.
    per_worker = math.ceil(len(train) / num_workers)
    if per_worker % args.batch_size == 1:
        die(f"{len(train)} examples on {num_workers} workers give {per_worker} per worker, leaving a last batch of one "
            f"with --batch-size {args.batch_size}, which BatchNorm cannot train on; change --batch-size or --subset")
    if args.eval_protocol == "paper" and len(test) % args.batch_size == 1:
        die(f"{len(test)} test examples leave a last batch of one with --batch-size {args.batch_size}, which the paper's "
            f"protocol (BatchNorm in training mode) cannot evaluate; change --batch-size or --test-subset")
    checkpoint = load_checkpoint(checkpoint_path, args, num_workers) if args.resume else None
    if checkpoint and checkpoint["epoch"] == args.total_epochs and results.has_row(csv_path, args.seed):
        if master:
            print(f"{run_name} finished already: its row is in {csv_path}; nothing to do")
        return

    # Everything above only reads; from here on processes talk to each other.
    if launched:
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if args.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = not args.deterministic
    torch.manual_seed(args.seed)
    if args.data_on_device:
        train, test = train.to(device), test.to(device)

    # channels_last: augmented batches arrive NHWC, and DDP's gradient buckets want the grads'
    # layout to match the parameters'.
    model = models.build(args.model, spec.num_classes, spec.channels)
    if args.emulate_workers > 1 and args.emulation == "fused":
        models.emulate_workers(model, args.emulate_workers)
    model.to(device, memory_format=torch.channels_last)
    train_model = DDP(model, device_ids=[local_rank] if device.type == "cuda" else None) if launched else model
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum, nesterov=True,
                                weight_decay=args.weight_decay)
    my_workers = range(rank * args.emulate_workers, (rank + 1) * args.emulate_workers)
    dataset = data.IndexedDataset(train)

    log_path = csv_path.parent / "logs" / f"{run_name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    log = {"args": vars(args), "world_size": world, "workers": num_workers, "device": str(device),
           "torch": str(torch.__version__), "csv": str(csv_path), "epochs": [], "intervals": [], "resumed_at_epoch": []}
    accuracies, saved_windows, start_epoch, resume_window, elapsed = [], [], 0, -1, 0.0
    if checkpoint:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        torch.set_rng_state(checkpoint["rng"])
        accuracies, saved_windows, log = checkpoint["accuracies"], checkpoint["saved_windows"], checkpoint["log"]
        start_epoch, resume_window, elapsed = checkpoint["epoch"], checkpoint["window"], checkpoint["elapsed_s"]
        log_path = Path(checkpoint["log_path"])
        log["args"] = vars(args)
        log["resumed_at_epoch"].append(start_epoch + 1)
    wandb_run = None
    if args.wandb and master:
        import wandb
        wandb_run = wandb.init(project=args.wandb_project, entity=args.wandb_entity, name=args.wandb_name or run_name,
                               config=vars(args), notes=args.description or None)
    if master:
        print(f"{run_name}: {num_workers} workers ({world} processes x {args.emulate_workers}) x batch {args.batch_size}, "
              f"{len(train)} train / {len(test)} test examples, {device}, results -> {csv_path}"
              + (f"; resuming after epoch {start_epoch}" if checkpoint else ""))

    run_start = time.perf_counter() - elapsed
    plan = windows(args.total_epochs, args.warmup_epochs, args.interval_epochs)
    matrix, partition = None, None
    for index, (first_epoch, length) in enumerate(plan):
        if index < resume_window:
            continue
        if index == resume_window:  # the window the checkpoint was taken in: its partition and losses so far
            partition = checkpoint["partition"]
            matrix = importance.LossMatrix(len(train), length, device)
            if master:
                matrix.restore(checkpoint["matrix"])
        else:
            if index > 0:
                trained = gather_rows(matrix.recorded_rows()) if args.save_partitions else None
                scores, partition, heuristic_s = repartition(matrix, index, args, num_workers)
                log["intervals"].append({"start_epoch": first_epoch + 1, "epochs": length, "heuristic_s": heuristic_s,
                                         "partition_sizes": [len(p) for p in partition]})
                if args.save_partitions:
                    saved_windows[-1]["trained"] = trained
                    saved_windows.append({"start_epoch": first_epoch + 1, "epochs": length, "partition": partition,
                                          "importance": scores.cpu()})
            elif args.save_partitions:
                saved_windows.append({"start_epoch": 1, "epochs": length, "partition": None})
            matrix = importance.LossMatrix(len(train), length, device)
        batches = WorkerBatches(worker_samplers(dataset, partition, my_workers, num_workers, args), args.batch_size)
        phase = "vanilla" if args.heuristic == "none" else "warmup" if index == 0 else f"interval {index}"
        for column, epoch in enumerate(range(first_epoch, first_epoch + length)):
            if epoch < start_epoch:
                continue
            stats = train_epoch(train_model, optimizer, batches, train, spec, epoch, args, device, matrix, column)
            if master:
                stats["test_accuracy"] = evaluate(model, test, spec, epoch, args, device)
                accuracies.append(stats["test_accuracy"])
                log["epochs"].append({"epoch": epoch + 1, "phase": phase, **stats})
                print(f"epoch {epoch + 1:3d}/{args.total_epochs} {phase:>11s}  loss {stats['train_loss']:.4f}  "
                      f"test {stats['test_accuracy']:6.2f}%  {stats['images_per_s']:8.0f} img/s  "
                      f"tracking {stats['tracking_s']:.3f}s", flush=True)
                if wandb_run:
                    wandb_run.log({"epoch": epoch + 1, **stats})
            if args.checkpoint_every and (epoch + 1) % args.checkpoint_every == 0:
                merged = matrix.merged()[:, :column + 1]  # a collective: every process takes part
                if master:
                    results.save_torch(checkpoint_path, {
                        "args": vars(args), "num_workers": num_workers, "epoch": epoch + 1, "window": index,
                        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "matrix": merged.cpu(),
                        "partition": partition, "accuracies": accuracies, "log": log, "log_path": str(log_path),
                        "saved_windows": saved_windows, "rng": torch.get_rng_state(), "elapsed_s": time.perf_counter() - run_start})
    if args.save_partitions:
        saved_windows[-1]["trained"] = gather_rows(matrix.recorded_rows())

    if master:
        values = results.row(args.seed, accuracies, args.warmup_epochs, args.interval_epochs, args.measure,
                             heuristics.PAPER_NAMES[args.heuristic], args.model, args.dataset)
        results.append_row(csv_path, values)
        total_s = time.perf_counter() - run_start
        log.update(best_accuracy=values["best_accuracy"], best_epoch=values["best_epoch"], total_training_s=total_s,
                   tracking_s_per_epoch=sum(e["tracking_s"] for e in log["epochs"]) / len(log["epochs"]))
        results.write_json(log_path, log)
        if args.save_partitions:
            results.save_torch(log_path.with_suffix(".partitions.pt"), {"args": vars(args), "windows": saved_windows})
        print(f"best test accuracy {values['best_accuracy']:.2f}% at epoch {values['best_epoch']}, "
              f"{total_s:.1f}s; row appended to {csv_path}, log {log_path}")
        if wandb_run:
            wandb_run.summary.update({"best_accuracy": values["best_accuracy"], "best_epoch": values["best_epoch"]})
            wandb_run.finish()
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
