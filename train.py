"""One epoch of training and one evaluation, for the workers one process hosts (a DDP rank, or N
workers emulated on one device). dpt.py calls them every epoch; bench.py times them:

    python -c "import torch, train, models, data, tasks; from samplers import WorkerBatches, for_window; \
s = data.Split(torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8), torch.randint(0, 10, (64,))); \
m = models.build('resnet18', 10, 3, workers=2); \
step = train.Step.build(workers=2, batch_size=8, device=torch.device('cpu'), task=tasks.of('cifar10')); \
b = WorkerBatches(for_window(range(64), None, range(2), 2, shuffle=True, sampler_seed=0, seed=0), 8); \
print(train.train_epoch(m, models.optimizer(m, 0.1, 0.9, 5e-4), b, s, step, epoch=0))"

Every example's training signals (its loss, whether it was right, ...) come from the forward pass
that trains (the task's `signals`), and go to the recorder by one scatter per step: no second pass,
no per-example Python loop, no device sync per step. Everything task-specific is the Step's task
(tasks.py): how a batch is taken and augmented, the loss, the throughput's unit.
"""
import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, Dataset

import augment
import console
import importance
import models
import reducers
import tasks
import topology
from samplers import WorkerBatches


@dataclass(frozen=True)
class Step:
    """What a training step and an evaluation need beyond the model and the data."""
    workers: int  # workers this process hosts (--emulate-workers)
    batch_size: int  # per worker
    device: torch.device
    task: tasks.Task  # what the batches are and how they are evaluated
    sequential: bool = False  # one forward/backward per worker (the reference) instead of one fused pass
    seed: int = 0  # keys each example's augmentation
    on_device: bool = False  # the split is resident on `device`: gather batches there, no DataLoader
    eval_protocol: str = "standard"
    channels: tuple[str, ...] = ("loss",)  # what the recorder records
    reducer: "reducers.ReducerState | None" = None  # exchanges the workers' gradients (None: DDP's all-reduce)
    readers: list | None = None  # --data-source streaming: each local worker's streaming.WorkerReader
    progress: bool = False  # a bar of the epoch's steps (console.progress_wanted: rank 0 on a terminal)
    head: Callable[[nn.Module], nn.Linear] = models.last_linear  # the model's (models.Spec.head)
    ctx: contextlib.AbstractContextManager = field(default_factory=contextlib.nullcontext)  # autocast, built once

    @staticmethod
    def build(amp: bool = False, **fields) -> "Step":
        device = fields["device"]
        ctx = torch.autocast(device.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext()
        return Step(ctx=ctx, **fields)


@dataclass
class Trainer:
    """What trains: the model (`model`; `ddp` is what the steps call: DDP under torchrun, else the same
    module), the gradient exchange (a reducer's state, or None), the step's inputs and the optimizer."""
    model: nn.Module
    ddp: nn.Module
    exchange: "reducers.ReducerState | None"
    step: Step
    optimizer: torch.optim.Optimizer


class DeviceTimer:
    """Sums the time of short sections without a sync per section: CUDA events on a GPU, the wall
    clock on a CPU. `seconds()` syncs once."""

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


class HeadInput:
    """Keeps the input of the last linear layer of the latest forward pass (a forward pre-hook)."""

    def __init__(self, layer: nn.Linear):
        self.value = None
        self.bias = layer.bias is not None
        self.handle = layer.register_forward_pre_hook(self._keep)

    def _keep(self, module, inputs) -> None:
        self.value = inputs[0].detach()


class IndexedDataset(Dataset):
    """Map-style view of a split for the DataLoader path: items are addressed by the keys of
    samplers.WorkerBatches (index, or index + N for padding) and carry their key along."""

    def __init__(self, split, task: tasks.Task):
        self.split, self.task = split, task

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, key: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        inputs, targets = self.task.take(self.split, torch.tensor([key % len(self.split)]))
        return inputs[0], targets[0], key


def epoch_batches(batches: WorkerBatches, split, step: Step) -> Iterator[tuple[torch.Tensor, ...]]:
    """This epoch's steps as (raw inputs, targets, keys, example indices) on the device: gathered from
    a device-resident split, or through a DataLoader (for data that does not fit on the device). A key
    is the index, or index + N for a padding copy."""
    if step.readers is not None:  # each worker reads its own examples through its own cache, as a rank would
        for keys in batches:
            keys = torch.tensor(keys)
            index = keys % len(split)
            parts = [reader.batch(mine.tolist()) for reader, mine in zip(step.readers, index.chunk(len(step.readers)))]
            images, labels = torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts])
            yield images.to(step.device), labels.to(step.device), keys.to(step.device), index.to(step.device)
        return
    if step.on_device:
        keys = batches.keys().to(step.device)  # the whole epoch's keys in one copy
        size = batches.batch_size
        for i in range(len(batches)):
            step_keys = keys[:, i * size:(i + 1) * size].reshape(-1)
            index = step_keys % len(split)
            yield *step.task.take(split, index), step_keys, index
        return
    loader = DataLoader(IndexedDataset(split, step.task), batch_sampler=batches, pin_memory=step.device.type == "cuda")
    for images, labels, keys in loader:
        keys = keys.to(step.device, non_blocking=True)
        yield (
            images.to(step.device, non_blocking=True),
            labels.to(step.device, non_blocking=True),
            keys,
            keys % len(split),
        )


def sequential_backward(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, step: Step,
                        channels: tuple[str, ...] = ("loss",), features: HeadInput | None = None,
                        tracking: contextlib.AbstractContextManager | None = None) -> dict[str, torch.Tensor]:
    """The emulated workers one after another on the same parameters (the plain reference for the
    fused path). Each pass is exactly a rank's computation. Without a reducer the gradients are
    accumulated (scaling by 1/2 and summing two terms are exact, so 2 workers reproduce 2-rank DDP bit
    for bit); with one, each worker's gradient is kept apart, flattened into one bucket (the parameters
    in order), and `step.reducer` exchanges them as its DDP hook would across ranks. Only worker 0
    updates BatchNorm's running statistics, as DDP keeps rank 0's."""
    module = model.module if isinstance(model, DDP) else model
    params = [p for p in module.parameters() if p.requires_grad]
    signals, grads = [], []
    for k, (x, y) in enumerate(zip(inputs.chunk(step.workers), targets.chunk(step.workers))):
        last = k == step.workers - 1
        with (contextlib.nullcontext() if last or not isinstance(model, DDP) else model.no_sync()), \
                (contextlib.nullcontext() if k == 0 else models.batch_statistics(module)):
            with step.ctx:
                logits = model(x)
            loss = step.task.example_loss(logits, y)
            with tracking or contextlib.nullcontext():
                signals.append(step.task.signals(logits, y, channels, features, loss))
            if step.reducer is None:
                (loss.mean() / step.workers).backward()
                continue
            loss.mean().backward()
            grads.append(torch.cat([p.grad.reshape(-1) for p in params]))
            for p in params:
                p.grad = None
    if step.reducer is not None:
        update = reducers.reduce(step.reducer, torch.stack(grads))
        for p, g in zip(params, update.split([p.numel() for p in params])):
            p.grad = g.view_as(p)
    return {c: torch.cat([s[c] for s in signals]) for c in signals[0]}


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, batches: WorkerBatches, split, step: Step,
                epoch: int, recorder: importance.Recorder | None = None, column: int = 0) -> dict:
    """One epoch over this process's workers' batches; every example's signals go to `recorder`
    (None: not recorded, for bench.py). Nothing syncs the device per step. `tracking_s` is the time
    importance tracking adds: the signals beyond the training loss, and the recorder's scatter."""
    batches.set_epoch(epoch)
    tracking = DeviceTimer(step.device)
    channels, timed = (step.channels, tracking) if recorder is not None else (("loss",), contextlib.nullcontext())
    module = model.module if isinstance(model, DDP) else model
    features = HeadInput(step.head(module)) if "grad_norm" in channels else None
    loss_sum = torch.zeros((), device=step.device)
    samples = 0
    start = time.perf_counter()
    for raw, targets, keys, index in console.steps(epoch_batches(batches, split, step), len(batches), step.progress,
                                                   f"epoch {epoch + 1}"):
        inputs = step.task.inputs(raw, index, step.seed, epoch, augment.TRAIN)
        optimizer.zero_grad(set_to_none=True)
        if (step.sequential and step.workers > 1) or (step.reducer is not None and not isinstance(model, DDP)):
            signals = sequential_backward(model, inputs, targets, step, channels, features, timed)
        else:
            with step.ctx:
                logits = model(inputs)
            loss = step.task.example_loss(logits, targets)
            with timed:
                signals = step.task.signals(logits, targets, channels, features, loss)
            loss.mean().backward()
        optimizer.step()
        if recorder is not None:
            with tracking:
                recorder.record(keys, column, signals)
        loss_sum += signals["loss"].sum()
        samples += len(keys)
    if features is not None:
        features.handle.remove()
    totals = torch.stack([loss_sum, torch.tensor(float(samples), device=step.device)])
    if step.device.type == "cuda":
        torch.cuda.synchronize(step.device)  # the epoch ends when its kernels do, not when the host queued them
    seconds = time.perf_counter() - start
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(totals)  # over all workers, padding included
    loss_total, examples = totals.tolist()
    rate = step.task.throughput(examples, seconds, split)
    return {"train_loss": loss_total / examples, **rate, "train_s": seconds, "tracking_s": tracking.seconds()}


class Diverged(ArithmeticError):
    """The training loss is no longer finite: the run stops (dpt.py says so in one line, no row written)."""


def epoch_figures(stats: dict, epoch: int, exchange: "reducers.ReducerState | None", readers: list) -> dict:
    """The epoch's training figures, with this rank's gradient exchange (bytes it sent, its selection
    time) and what every worker's streaming cache fetched, as the filesystem counted it; Diverged when
    the loss is not finite (on every rank alike: the training loss is all-reduced)."""
    if not math.isfinite(stats["train_loss"]):
        raise Diverged(f"training diverged in epoch {epoch + 1} (training loss {stats['train_loss']}); no row was "
                       "written; lower --lr (or use --amp none)")
    if exchange:
        stats["exchange"] = exchange.take_stats()
    if readers:
        stats["io"] = [row for rows in topology.gather_objects([r.stats().iloc[-1].to_dict() for r in readers])
                       for row in rows]
    return stats
