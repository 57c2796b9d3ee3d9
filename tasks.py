"""The task a run learns, as one value the loop asks everything task-specific: load the splits, build
the model, turn a batch into model inputs, the training forward's per-example signals, evaluation and
its metric. dpt.py, train.py and the checks never ask which task they run:

    python -c "import tasks; t = tasks.of('fashionmnist'); print(type(t).__name__, t.record.metric, t.record.column)"

A task is a subclass of Task in its own module (imagetask.py, texttask.py), named by its record in
catalog.TASKS (`module`); `of` finds it from the dataset. The per-example signals of a classifier
(the logits' softmax against a class per example, or per token of a chunk) are shared here.
"""
import importlib
from argparse import Namespace

import torch
import torch.nn.functional as F
from torch import nn

import catalog as C


class Task:
    """What the loop needs of a task. `dataset` is the run's catalog.Dataset, `record` its catalog.Task."""

    def __init__(self, dataset: C.Dataset):
        self.dataset, self.record = dataset, C.TASKS[dataset.task]

    # ---- data (before any process group: errors are data.DataError) ----
    def load(self, args: Namespace, train: bool, num_workers: int = 1):
        """The training or held-out split of --dataset (a Split with len and .to(device))."""
        raise NotImplementedError

    def check(self, args: Namespace, train, test, num_workers: int) -> str | None:
        """Why these splits cannot be trained or evaluated as asked (the fix included), or None."""
        return None

    def parameters(self, args: Namespace) -> int:
        """How many parameters the model of `args` has (without building it)."""
        raise NotImplementedError

    def step_bytes(self, args: Namespace, batch: int) -> int:
        """An estimate of the memory one training step of `batch` examples takes (parameters, optimizer
        state, gradients and the activations autograd keeps), for the up-front memory check; 0 when
        it is small whatever the flags (the image models at any batch the data allows)."""
        return 0

    def on_device(self, args: Namespace) -> bool:
        """Whether the splits live on the training device (batches gathered there, no DataLoader)."""
        return args.data_on_device

    def labels(self, split) -> torch.Tensor | None:
        """(N,) int64 class of each training example, for heuristics that read them; None without classes."""
        return None

    def take(self, split, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch's raw inputs and targets."""
        raise NotImplementedError

    # ---- model and training ----
    def build_model(self, args: Namespace, workers: int, fused: bool) -> nn.Module:
        raise NotImplementedError

    def to_device(self, model: nn.Module, device: torch.device) -> nn.Module:
        return model.to(device)

    def head(self, model: nn.Module) -> nn.Linear:
        """The last linear layer, whose input the gradient-norm channel needs."""
        return model.head

    def inputs(self, raw: torch.Tensor, index: torch.Tensor, seed: int, epoch: int, stream: int) -> torch.Tensor:
        """The model's input for a batch of examples `index` (augmentation keyed by seed, epoch, stream)."""
        return raw

    def example_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return example_loss(logits, targets)

    def signals(self, logits: torch.Tensor, targets: torch.Tensor, channels: tuple[str, ...], features=None,
                loss: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return per_example(logits, targets, channels, features, loss)

    def throughput(self, examples: float, seconds: float, split) -> dict:
        raise NotImplementedError

    # ---- evaluation ----
    def evaluate(self, model: nn.Module, split, step, epoch: int) -> dict:
        """The held-out figures of one epoch, the metric under record.epoch_key among them."""
        raise NotImplementedError

    def describe(self, stats: dict) -> str:
        """The epoch's held-out figures and speed, for its console line."""
        raise NotImplementedError


def of(dataset: str) -> Task:
    """The task of `dataset`, from the module its catalog record names."""
    record = C.DATASETS[dataset]
    return importlib.import_module(C.TASKS[record.task].module).TASK(record)


def example_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Each example's cross-entropy, (B,): images (B, C) with labels (B,), or text (B, L, V) with next
    bytes (B, L), where an example's loss is the mean over its L tokens. Training minimizes its mean."""
    z = logits.float().reshape(-1, logits.shape[-1])
    return F.cross_entropy(z, targets.reshape(-1), reduction="none").view(targets.shape[0], -1).mean(dim=1)


def per_example(logits: torch.Tensor, targets: torch.Tensor, channels: tuple[str, ...], features=None,
                loss: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Each example's training signals, (B,) each (on text: each example's mean over its tokens):
    "loss" cross-entropy (`loss` if given: the training loss itself); "correct" argmax == target;
    "el2n" ||softmax - onehot||; "grad_norm" the exact norm of the example's gradient w.r.t. the last
    linear layer (weights and bias): with e_t = p_t - y_t and g_t = [h_t, 1] (h: the layer's input,
    `features.value`), it is ||(1/L) sum_t e_t g_t^T||_F, which is ||e|| sqrt(||h||^2 + 1) for one token."""
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
