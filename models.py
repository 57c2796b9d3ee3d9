"""The model record (Spec: what generic code asks of a model) and its registry, the image models (the
paper's torchvision ResNets, LeNet-5 for CPUs), BatchNorm per emulated worker, and the optimizer.

dpt.py builds its model through the registry (tasks.Task.build_model); by hand:

    python -c "import models; print(models.build('resnet18', num_classes=10, channels=1))"
    python -c "import models; m = models.build('lenet5', 10, 1); print(sum(p.numel() for p in m.parameters()))"

A model is registered once, where it is defined (`@MODELS.register(name, ...)` on its builder), with its
torch-free facts in its catalog record (catalog.MODELS: task, title, the flags it reads); the text
models are in lm.py, NeuMF in ncf.py. The ResNets are built as the paper's code did: random init, the
ImageNet stem (7x7 stride-2 conv + max-pool) kept, fc replaced by Linear(512, classes), and for
1-channel data conv1 replaced by Conv2d(1, 64, 7, 2, 3).
"""
import contextlib
from argparse import Namespace
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

import catalog as C


@dataclass(frozen=True)
class DataShape:
    """What a model's size depends on in the data (tasks.Task.shape): an image's classes, channels,
    height and width, a vocabulary, the users and items of a recommendation dataset."""
    classes: int = 0
    channels: int = 0
    height: int = 0
    width: int = 0
    vocab: int = 0
    users: int = 0
    items: int = 0


def no_activations(args: Namespace, shape: DataShape, batch: int) -> int:
    """Small whatever the flags allow (the image models, NeuMF): the check counts the parameters only."""
    return 0


def last_linear(model: nn.Module) -> nn.Linear:
    """The last linear layer in the module's order: the classifier head of every model here."""
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


@dataclass(frozen=True)
class Spec:
    """What the generic code (tasks, train, preflight, dpt) asks of a model, so that none of it names one:
    `build(args, shape)` the freshly initialized model (seeded by the caller); `activations(args, shape,
    batch)` about how many float32 values a training step of `batch` examples keeps for backward, for
    the up-front memory check (step_bytes); `head(model)` its last linear layer, whose
    input the gradient-norm channel reads; `channels_last`: the device types where the model runs in
    NHWC memory layout (chosen by bench.py's measurement, recorded in each run's log)."""
    build: Callable[[Namespace, DataShape], nn.Module]
    activations: Callable[[Namespace, DataShape, int], int] = no_activations
    head: Callable[[nn.Module], nn.Linear] = last_linear
    channels_last: frozenset[str] = frozenset()

    def layout(self, device: torch.device) -> torch.memory_format:
        return torch.channels_last if device.type in self.channels_last else torch.contiguous_format


MODELS: dict[str, Spec] = C.Registry(C.MODELS, "model", make=lambda build, **fields: Spec(build, **fields))


def parameters(name: str, args: Namespace, shape: DataShape) -> int:
    """How many parameters model `name` has for these flags and data, counted on the meta device (no
    memory, no random draws); tied ones once."""
    with torch.device("meta"):
        return sum(p.numel() for p in MODELS[name].build(args, shape).parameters())


def step_bytes(name: str, args: Namespace, shape: DataShape, batch: int) -> int:
    """An estimate of the memory one training step of `batch` examples takes: float32 weights, gradients
    and up to two optimizer moments (4 copies of the parameters), and the activations autograd keeps.
    Rough, but the failures it prevents are orders of magnitude off (a --seq-len of 100,000, a model
    wider than memory)."""
    return 4 * (4 * parameters(name, args, shape) + MODELS[name].activations(args, shape, batch))


def build(name: str, num_classes: int, channels: int, workers: int = 1, fused: bool = True,
          size: tuple[int, int] = (32, 32)) -> nn.Module:
    """An image model `name` for `num_classes` classes of `channels`-channel images of `size` (height,
    width); with `workers` > 1 and `fused`, BatchNorm per emulated worker."""
    model = MODELS[name].build(Namespace(), DataShape(num_classes, channels, *size))
    return emulate_workers(model, workers) if workers > 1 and fused else model


def resnet(name: str, shape: DataShape) -> nn.Module:
    """The model as the paper's code built it: random init of the whole 1000-way torchvision model
    first, then (for 1-channel data) conv1 replaced, then fc; the order of these draws fixes the
    initial weights of a seed."""
    import torchvision  # here, not at the top: it takes seconds to import, and text runs never need it

    model = getattr(torchvision.models, name)(weights=None)
    if shape.channels != 3:
        model.conv1 = nn.Conv2d(shape.channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    model.fc = nn.Linear(512, shape.classes)
    return model


@MODELS.register("resnet18", channels_last=frozenset({"cpu", "cuda"}))
def resnet18(args: Namespace, shape: DataShape) -> nn.Module:
    return resnet("resnet18", shape)


@MODELS.register("resnet34", channels_last=frozenset({"cpu", "cuda"}))
def resnet34(args: Namespace, shape: DataShape) -> nn.Module:
    return resnet("resnet34", shape)


class LeNet5(nn.Module):
    """LeNet-5's layout (LeCun et al., Gradient-Based Learning Applied to Document Recognition, 1998):
    two 5x5 convolution + 2x2 max-pool stages, then three fully connected layers, with the widths of
    Caffe's MNIST LeNet (20 and 50 maps, 500 units) and LeNet-5's F6 of 84; ReLU, and BatchNorm after
    each convolution (per emulated worker, as the ResNets). 28x28 inputs: 469,144 parameters for 10
    classes of 1-channel images."""

    def __init__(self, classes: int, channels: int, height: int = 28, width: int = 28):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 20, 5), nn.BatchNorm2d(20), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(20, 50, 5), nn.BatchNorm2d(50), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten())
        side = [((n - 4) // 2 - 4) // 2 for n in (height, width)]  # after two 5x5 convolutions and 2x2 pools
        assert min(side) >= 1, f"LeNet-5 needs images of at least 16x16, not {height}x{width}"
        self.hidden = nn.Sequential(nn.Linear(50 * side[0] * side[1], 500), nn.ReLU(), nn.Linear(500, 84), nn.ReLU())
        self.head = nn.Linear(84, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.hidden(self.features(x)))


@MODELS.register("lenet5", channels_last=frozenset({"cpu", "cuda"}))
def lenet5(args: Namespace, shape: DataShape) -> nn.Module:
    return LeNet5(shape.classes, shape.channels, shape.height, shape.width)


def optimizer(model: nn.Module, lr: float, momentum: float, weight_decay: float,
              name: str = "sgd", impl: str = "default") -> torch.optim.Optimizer:
    """The paper's optimizer: SGD with Nesterov momentum and weight decay, constant learning rate; or
    AdamW (betas 0.9, 0.99, as nanoGPT's small character models), which language models train with.
    `impl`: torch's choice (default: foreach on a GPU, a for-loop on a CPU), or one kernel per
    parameter (for-loop), one per group of tensors (foreach), or one fused kernel for the whole update
    (fused); the same update to float rounding."""
    assert impl in C.OPTIMIZER_IMPLS, impl
    kind = {} if impl == "default" else {"fused": True} if impl == "fused" else {"foreach": impl == "foreach"}
    if name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=weight_decay, **kind)
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, nesterov=True, weight_decay=weight_decay,
                           **kind)


class WorkerBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm for `workers` emulated workers whose batches arrive concatenated in one tensor.

    In N-rank DDP each rank normalizes its own batch, and DDP (broadcast_buffers) keeps rank 0's
    running statistics. So here each of the N equal chunks is normalized by itself, with the same
    kernel and shape a rank would use, and only chunk 0 (worker 0) updates the running buffers.
    Averaging the chunks' statistics, as ghost BatchNorm does, would not be what DDP does.
    """

    def __init__(self, num_features: int, workers: int, **kwargs):
        super().__init__(num_features, **kwargs)
        self.workers = workers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.track_running_stats) or self.workers == 1:
            return super().forward(x)
        assert x.shape[0] % self.workers == 0, "every worker brings a batch of the same size"
        chunks = x.chunk(self.workers)
        out = [super().forward(chunks[0])]  # updates running stats, as rank 0 under DDP
        out += [F.batch_norm(c, None, None, self.weight, self.bias, True, 0.0, self.eps) for c in chunks[1:]]
        return torch.cat(out)


def emulate_workers(model: nn.Module, workers: int) -> nn.Module:
    """Swap every BatchNorm2d for a WorkerBatchNorm2d (same parameters and buffers), in place."""
    for name, child in model.named_children():
        if type(child) is nn.BatchNorm2d:
            bn = WorkerBatchNorm2d(child.num_features, workers, eps=child.eps, momentum=child.momentum,
                                   affine=child.affine, track_running_stats=child.track_running_stats)
            bn.load_state_dict(child.state_dict())
            setattr(model, name, bn.to(child.weight.device))
        else:
            emulate_workers(child, workers)
    return model


@contextlib.contextmanager
def batch_statistics(model: nn.Module) -> Iterator[None]:
    """Training-mode BatchNorm (batch statistics) over whole batches, leaving the running buffers
    untouched: the paper's evaluation ran the model in train mode, where those buffers never
    affect an output, so not updating them changes no result and keeps evaluation side-effect free."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    was_training, tracked = model.training, [m.track_running_stats for m in norms]
    model.train()
    for m in norms:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m, t in zip(norms, tracked):
            m.track_running_stats = t
        model.train(was_training)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode (running statistics) for the standard protocol, back to training mode after."""
    model.eval()
    try:
        yield
    finally:
        model.train()
