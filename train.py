"""One epoch of training and one evaluation, for the workers one process hosts (a DDP rank, or N
workers emulated on one device). dpt.py calls them every epoch; bench.py times them:

    python -c "import torch, train, models, data; from samplers import WorkerBatches, for_window; \
s = data.Split(torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8), torch.randint(0, 10, (64,))); \
m = models.build('resnet18', 10, 3, workers=2); \
step = train.Step.build(workers=2, batch_size=8, device=torch.device('cpu'), spec=data.SPECS['cifar10']); \
b = WorkerBatches(for_window(range(64), None, range(2), 2, shuffle=True, sampler_seed=0, seed=0), 8); \
print(train.train_epoch(m, models.optimizer(m, 0.1, 0.9, 5e-4), b, s, step, epoch=0))"

Every example's training signals (its loss, whether it was right, ...) come from the forward pass
that trains, and go to the recorder by one scatter per step: no second pass, no per-example Python
loop, no device sync per step.
"""
import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

import augment
import data
import importance
import models
import reducers
import text
from samplers import WorkerBatches


@dataclass(frozen=True)
class Step:
    """What a training step and an evaluation need beyond the model and the data."""
    workers: int  # workers this process hosts (--emulate-workers)
    batch_size: int  # per worker
    device: torch.device
    spec: data.Spec | None = None  # an image dataset's normalization and crop; None: text (tokens)
    sequential: bool = False  # one forward/backward per worker (the reference) instead of one fused pass
    seed: int = 0  # keys each example's augmentation
    on_device: bool = False  # the split is resident on `device`: gather batches there, no DataLoader
    eval_protocol: str = "standard"
    channels: tuple[str, ...] = ("loss",)  # what the recorder records
    reducer: "reducers.ReducerState | None" = None  # exchanges the workers' gradients (None: DDP's all-reduce)
    readers: list | None = None  # --data-source streaming: each local worker's streaming.WorkerReader
    ctx: contextlib.AbstractContextManager = field(default_factory=contextlib.nullcontext)  # autocast, built once

    @staticmethod
    def build(amp: bool = False, **fields) -> "Step":
        device = fields["device"]
        ctx = torch.autocast(device.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext()
        return Step(ctx=ctx, **fields)


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


def head(model: nn.Module) -> nn.Linear:
    """The last linear layer (ResNet's fc, a language model's head): per-example gradient norms are
    taken there."""
    module = model.module if isinstance(model, DDP) else model
    return module.fc if hasattr(module, "fc") else module.head


class HeadInput:
    """Keeps the input of the last linear layer of the latest forward pass (a forward pre-hook)."""

    def __init__(self, layer: nn.Linear):
        self.value = None
        self.bias = layer.bias is not None
        self.handle = layer.register_forward_pre_hook(self._keep)

    def _keep(self, module, inputs) -> None:
        self.value = inputs[0].detach()


def take(split, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch's raw inputs and targets: uint8 images and labels, or a chunk's bytes shifted by one."""
    if isinstance(split, data.Split):
        return split.images[index], split.labels[index]
    chunks = split.tokens[index].long()
    return chunks[:, :-1], chunks[:, 1:]


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
            yield *take(split, index), step_keys, index
        return
    loader = DataLoader(data.IndexedDataset(split), batch_sampler=batches, pin_memory=step.device.type == "cuda")
    for images, labels, keys in loader:
        keys = keys.to(step.device, non_blocking=True)
        yield (
            images.to(step.device, non_blocking=True),
            labels.to(step.device, non_blocking=True),
            keys,
            keys % len(split),
        )


def inputs_for(raw: torch.Tensor, index: torch.Tensor, step: Step, epoch: int, stream: int) -> torch.Tensor:
    if step.spec is None:
        return raw
    return augment.augment(raw, index, step.seed, epoch, stream, step.spec.mean, step.spec.std, step.spec.crop_padding)


def example_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Each example's cross-entropy, (B,): images (B, C) with labels (B,), or text (B, L, V) with next
    bytes (B, L), where an example's loss is the mean over its L tokens. Training minimizes its mean."""
    z = logits.float().reshape(-1, logits.shape[-1])
    return F.cross_entropy(z, targets.reshape(-1), reduction="none").view(targets.shape[0], -1).mean(dim=1)


def per_example(logits: torch.Tensor, targets: torch.Tensor, channels: tuple[str, ...],
                features: HeadInput | None = None, loss: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Each example's training signals, (B,) each (on text: each example's mean over its tokens):
    "loss" cross-entropy (`loss` if given: the training loss itself); "correct" argmax == target;
    "el2n" ||softmax - onehot||; "grad_norm" the exact norm of the example's gradient w.r.t. the last
    linear layer (weights and bias): with e_t = p_t - y_t and g_t = [h_t, 1] (h: the layer's
    input), it is ||(1/L) sum_t e_t g_t^T||_F, which is ||e|| sqrt(||h||^2 + 1) for one token."""
    n = targets.shape[0]
    out = {"loss": (example_loss(logits, targets) if loss is None else loss).detach()}
    if not set(channels) - {"loss"}:
        return out
    z = logits.detach().float().reshape(-1, logits.shape[-1])
    t = targets.reshape(-1)
    if "correct" in channels:
        out["correct"] = (z.argmax(dim=1) == t).float().view(n, -1).mean(dim=1)
    if "el2n" in channels or "grad_norm" in channels:
        error = z.softmax(dim=1)
        error[torch.arange(len(t), device=t.device), t] -= 1
        if "el2n" in channels:
            out["el2n"] = error.norm(dim=1).view(n, -1).mean(dim=1)
        if "grad_norm" in channels:
            g = features.value.float().reshape(len(t), -1)
            if features.bias:
                g = torch.cat([g, torch.ones(len(t), 1, device=g.device)], dim=1)
            e, g = error.view(n, -1, error.shape[1]), g.view(n, -1, g.shape[1])
            if e.shape[1] == 1:
                out["grad_norm"] = e[:, 0].norm(dim=1) * g[:, 0].norm(dim=1)
            else:  # ||sum_t e_t g_t^T||^2 = sum_{t,s} (e_t . e_s)(g_t . g_s)
                gram = (e @ e.transpose(1, 2)) * (g @ g.transpose(1, 2))
                out["grad_norm"] = gram.sum(dim=(1, 2)).clamp(min=0).sqrt() / e.shape[1]
    return out


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
            loss = example_loss(logits, y)
            with tracking or contextlib.nullcontext():
                signals.append(per_example(logits, y, channels, features, loss))
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
    features = HeadInput(head(model)) if "grad_norm" in channels else None
    loss_sum = torch.zeros((), device=step.device)
    samples = 0
    start = time.perf_counter()
    for raw, targets, keys, index in epoch_batches(batches, split, step):
        inputs = inputs_for(raw, index, step, epoch, augment.TRAIN)
        optimizer.zero_grad(set_to_none=True)
        if (step.sequential and step.workers > 1) or (step.reducer is not None and not isinstance(model, DDP)):
            signals = sequential_backward(model, inputs, targets, step, channels, features, timed)
        else:
            with step.ctx:
                logits = model(inputs)
            loss = example_loss(logits, targets)
            with timed:
                signals = per_example(logits, targets, channels, features, loss)
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
    seconds = time.perf_counter() - start
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(totals)  # over all workers, padding included
    loss_total, examples = totals.tolist()
    rate = {"images_per_s": examples / seconds} if step.spec is not None else \
        {"tokens_per_s": examples * (split.tokens.shape[1] - 1) / seconds}
    return {"train_loss": loss_total / examples, **rate, "train_s": seconds, "tracking_s": tracking.seconds()}


@torch.no_grad()
def evaluate(model: nn.Module, split, step: Step, epoch: int) -> dict:
    """Images: test accuracy in percent. paper protocol: the training augmentation and BatchNorm
    batch statistics, as the paper's code (which never switched to eval mode); standard: eval mode,
    plain images. Batches of --batch-size, as one worker's (BatchNorm statistics depend on the
    batch). Text: held-out loss (nats per byte), perplexity and bits per byte, in eval mode."""
    paper = step.eval_protocol == "paper"
    total, correct = torch.zeros((), device=step.device, dtype=torch.float64), torch.zeros((), device=step.device)
    with models.batch_statistics(model) if paper else models.eval_mode(model):
        for start in range(0, len(split), step.batch_size):
            index = torch.arange(start, min(start + step.batch_size, len(split)))
            raw, targets = take(split, index.to(split_device(split)))
            raw, targets = raw.to(step.device, non_blocking=True), targets.to(step.device, non_blocking=True)
            if step.spec is None:
                inputs = raw
            elif paper:
                inputs = inputs_for(raw, index.to(step.device), step, epoch, augment.TEST)
            else:
                inputs = augment.normalize(raw, step.spec.mean, step.spec.std).contiguous(
                    memory_format=torch.channels_last
                )
            with step.ctx:
                logits = model(inputs)
            if step.spec is None:
                total += example_loss(logits, targets).double().sum()
            else:
                correct += (logits.argmax(dim=1) == targets).sum()
    if step.spec is not None:
        return {"test_accuracy": 100.0 * correct.item() / len(split)}
    loss = total.item() / len(split)
    return {"test_loss": loss, "perplexity": math.exp(loss), "bits_per_byte": text.bits_per_byte(loss)}


def split_device(split) -> torch.device:
    return (split.images if isinstance(split, data.Split) else split.tokens).device
