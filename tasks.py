"""The task a run learns, as one value the loop asks everything task-specific: load the splits, build
the model, turn a batch into model inputs, the training forward's per-example signals, evaluation and
its metric. dpt.py, train.py and the checks never ask which task they run:

    python -c "import tasks; t = tasks.of('fashionmnist'); print(type(t).__name__, t.record.metric, t.record.column)"

A task is a subclass of Task in its own module (imagetask.py, texttask.py), named by its record in
catalog.TASKS (`module`); `of` finds it from the dataset. The per-example signals of a classifier
(the logits' softmax against a class per example, or per token of a chunk) are importance.signals.
"""
import importlib
from argparse import Namespace

import torch
import torch.distributed as dist
from torch import nn

import catalog as C
import importance
import models


class Task:
    """What the loop needs of a task. `dataset` is the run's catalog.Dataset, `record` its catalog.Task."""

    def __init__(self, dataset: C.Dataset):
        self.dataset, self.record = dataset, C.TASKS[dataset.task]
        self.layout = torch.channels_last  # the model's memory layout on its device (to_device)

    # ---- data (before any process group: errors are data.DataError) ----
    def load(self, args: Namespace, train: bool, num_workers: int = 1):
        """The training or held-out split of --dataset (a Split with len and .to(device))."""
        raise NotImplementedError

    def check(self, args: Namespace, train, test, num_workers: int) -> str | None:
        """Why these splits cannot be trained or evaluated as asked (the fix included), or None."""
        return None

    def on_device(self, args: Namespace) -> bool:
        """Whether the splits live on the training device (batches gathered there, no DataLoader)."""
        return args.data_on_device

    def labels(self, split) -> torch.Tensor | None:
        """(N,) int64 class of each training example, for heuristics that read them; None without classes."""
        return None

    def take(self, split, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch's raw inputs and targets."""
        raise NotImplementedError

    # ---- model and training (the model itself is its record: models.Spec) ----
    def shape(self, train) -> models.DataShape:
        """What the model's size depends on in the data: by default an image's classes and (C, H, W) shape."""
        return models.DataShape(self.dataset.classes, *self.dataset.shape)

    def build_model(self, args: Namespace, train, workers: int = 1, fused: bool = True) -> nn.Module:
        """--model for this data (seeded by the caller), with BatchNorm per emulated worker when `fused`."""
        model = models.MODELS[args.model].build(args, self.shape(train))
        return models.emulate_workers(model, workers) if workers > 1 and fused else model

    def to_device(self, model: nn.Module, args: Namespace, device: torch.device) -> nn.Module:
        """The model on `device` in its memory layout there (models.Spec.channels_last); the task's
        batches follow it."""
        self.layout = models.MODELS[args.model].layout(device)
        return model.to(device, memory_format=self.layout)

    def inputs(self, raw: torch.Tensor, index: torch.Tensor, seed: int, epoch: int, stream: int) -> torch.Tensor:
        """The model's input for a batch of examples `index` (augmentation keyed by seed, epoch, stream)."""
        return raw

    def plain_inputs(self, raw: torch.Tensor) -> torch.Tensor:
        """The model's input without augmentation (evaluation, the scoring pass)."""
        return raw

    @torch.no_grad()
    def score(self, model: nn.Module, split, signals: tuple[str, ...], step) -> dict[str, torch.Tensor]:
        """A scoring pass (the Data Diet protocol): each example's `signals` (importance.SCORED) under
        the current model in eval mode on un-augmented examples: "eval_el2n" ||softmax - onehot||,
        "eval_grand" the norm of the example's loss gradient w.r.t. every weight. Each process scores
        the examples i = rank (mod world) and one all_reduce gives every process all N."""
        module = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
        rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
        out = torch.zeros(len(signals), len(split), device=step.device)
        device_of_split = next(v.device for v in vars(split).values() if isinstance(v, torch.Tensor))
        chunk = step.batch_size if "eval_grand" not in signals else max(1, 2**28 // sum(p.numel() for p in
                                                                                         module.parameters()))
        with models.eval_mode(module):
            for index in torch.arange(rank, len(split), world).split(chunk):
                raw, targets = self.take(split, index.to(device_of_split))
                inputs, targets = self.plain_inputs(raw.to(step.device)), targets.to(step.device)
                for k, signal in enumerate(signals):
                    if signal == "eval_el2n":
                        with step.ctx:
                            logits = module(inputs)
                        values = importance.signals(logits, targets, ("el2n",))["el2n"]
                    else:
                        values = self.grand(module, inputs, targets)
                    out[k, index.to(step.device)] = values.float()
        if world > 1:
            dist.all_reduce(out)
        return dict(zip(signals, out))

    @torch.enable_grad()
    def grand(self, module: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Each example's ||d loss / d weights|| over every parameter (tied ones once), with per-example
        gradients from torch.func (vmap over grad); grand_reference is the plain loop it is tested
        against, and what runs where vmap has no batching rule (an LSTM's fused kernel)."""
        from torch.func import functional_call, grad, vmap

        params = {k: v.detach() for k, v in module.named_parameters()}
        buffers = {k: v.detach() for k, v in module.named_buffers()}

        def loss(p, x, y):
            return self.example_loss(functional_call(module, (p, buffers), (x[None],)), y[None])[0]
        try:
            grads = vmap(grad(loss), in_dims=(None, 0, 0), randomness="different")(params, inputs, targets)
        except (RuntimeError, NotImplementedError):
            return grand_reference(module, self.example_loss, inputs, targets)
        return torch.stack([g.flatten(1).double().square().sum(dim=1) for g in grads.values()]).sum(dim=0).sqrt()

    def example_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return importance.example_loss(logits, targets)

    def signals(self, logits: torch.Tensor, targets: torch.Tensor, channels: tuple[str, ...], features=None,
                loss: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return importance.signals(logits, targets, channels, features, loss)

    def throughput(self, examples: float, seconds: float, split) -> dict:
        raise NotImplementedError

    # ---- evaluation ----
    def evaluate(self, model: nn.Module, split, step, epoch: int) -> dict:
        """The held-out figures of one epoch, the metric under record.epoch_key among them."""
        raise NotImplementedError

    def describe(self, stats: dict) -> str:
        """The epoch's held-out figures and speed, for its console line."""
        raise NotImplementedError


def grand_reference(module: nn.Module, example_loss, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """GraNd the plain way: one backward per example, autograd over every parameter."""
    params = [p for p in module.parameters() if p.requires_grad]
    norms = []
    for x, y in zip(inputs, targets):
        grads = torch.autograd.grad(example_loss(module(x[None]), y[None])[0], params)
        norms.append(torch.stack([g.double().square().sum() for g in grads]).sum().sqrt())
    return torch.stack(norms)


def of(dataset: str) -> Task:
    """The task of `dataset`, from the module its catalog record names."""
    record = C.DATASETS[dataset]
    task = importlib.import_module(C.TASKS[record.task].module).TASK(record)
    models.MODELS.complete(C.names_of(C.MODELS, record.task))  # the task's module registered its models
    return task
