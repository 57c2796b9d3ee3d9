"""torchvision ResNets as the paper's code adapted them, and BatchNorm per emulated worker.

dpt.py builds its model here:

    python -c "import models; print(models.build('resnet18', num_classes=10, channels=1))"

Random init, the ImageNet stem (7x7 stride-2 conv + max-pool) kept, fc replaced by
Linear(512, classes), and for 1-channel data conv1 replaced by Conv2d(1, 64, 7, 2, 3).
"""
import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

import catalog as C

MODELS = {"resnet18": "resnet18", "resnet34": "resnet34"}  # the torchvision constructors' names


def build(name: str, num_classes: int, channels: int, workers: int = 1, fused: bool = True) -> nn.Module:
    """The model as the paper's code built it: random init of the whole 1000-way torchvision model
    first, then (for 1-channel data) conv1 replaced, then fc; the order of these draws fixes the
    initial weights of a seed. With `workers` > 1 and `fused`, BatchNorm per emulated worker."""
    import torchvision  # here, not at the top: it takes seconds to import, and text runs never need it

    model = getattr(torchvision.models, MODELS[name])(weights=None)
    if channels != 3:
        model.conv1 = nn.Conv2d(channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    model.fc = nn.Linear(512, num_classes)
    if workers > 1 and fused:
        emulate_workers(model, workers)
    return model


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
