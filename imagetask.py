"""Image classification: CIFAR-10/100 and the IDX datasets (data.py) with the paper's ResNets or LeNet-5
(models.py), its augmentation on whole batches (augment.py) and its two evaluation protocols:

    python -c "import flags, tasks; a = flags.parse_args(['--dataset', 'cifar10']); t = tasks.of(a.dataset); \
print(t.build_model(a, train=None))"

The example's signals are its cross-entropy against its label (importance.signals); the metric is
test accuracy in percent (higher is better).
"""
import math
from argparse import Namespace

import torch
from torch import nn

import augment
import catalog as C
import data
import models
import tasks


class ImageTask(tasks.Task):
    def load(self, args: Namespace, train: bool, num_workers: int = 1) -> data.Split:
        subset = args.subset if train else args.test_subset
        return data.load(self.dataset.name, args.data_dir, train=train, subset=subset)

    def check(self, args: Namespace, train, test: data.Split, num_workers: int) -> str | None:
        """Training-mode BatchNorm cannot normalize a batch of one: refused now rather than a crash mid-run."""
        if not C.MODELS[args.model].batchnorm:
            return None
        per_worker = math.ceil(len(train) / num_workers)
        if per_worker % args.batch_size == 1:
            return (f"{len(train)} examples on {num_workers} workers give {per_worker} per worker, leaving a batch of "
                    f"one with --batch-size {args.batch_size}, which BatchNorm cannot train on; change --batch-size or "
                    "--subset")
        if args.eval_protocol == "paper" and len(test) % args.batch_size == 1:
            return (f"{len(test)} test examples leave a last batch of one with --batch-size {args.batch_size}, which "
                    "the paper's protocol (BatchNorm in training mode) cannot evaluate; change --batch-size or "
                    "--test-subset")
        return None

    def labels(self, split) -> torch.Tensor | None:
        # on the host, where the heuristics read them (--data-on-device put the split on the GPU); a
        # streamed split keeps them in its shards
        return split.labels.cpu() if isinstance(split, data.Split) else None

    def take(self, split: data.Split, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return split.images[index], split.labels[index]

    def inputs(self, raw: torch.Tensor, index: torch.Tensor, seed: int, epoch: int, stream: int) -> torch.Tensor:
        d = self.dataset
        return augment.augment(raw, index, seed, epoch, stream, d.mean, d.std, d.crop_padding).contiguous(
            memory_format=self.layout)

    def plain_inputs(self, raw: torch.Tensor) -> torch.Tensor:
        """ToTensor and Normalize only, in the model's layout (the standard protocol's test images)."""
        return augment.normalize(raw, self.dataset.mean, self.dataset.std).contiguous(memory_format=self.layout)

    def throughput(self, examples: float, seconds: float, split) -> dict:
        return {"images_per_s": examples / seconds}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: data.Split, step, epoch: int) -> dict:
        """Test accuracy in percent. paper protocol: the training augmentation and BatchNorm batch
        statistics, as the paper's code (which never switched to eval mode); standard: eval mode,
        plain images. Batches of --batch-size, as one worker's (BatchNorm statistics depend on the batch)."""
        paper = step.eval_protocol == "paper"
        correct = torch.zeros((), device=step.device)
        with models.batch_statistics(model) if paper else models.eval_mode(model):
            for start in range(0, len(split), step.batch_size):
                index = torch.arange(start, min(start + step.batch_size, len(split)))
                raw, targets = self.take(split, index.to(split.images.device))
                raw, targets = raw.to(step.device, non_blocking=True), targets.to(step.device, non_blocking=True)
                if paper:
                    inputs = self.inputs(raw, index.to(step.device), step.seed, epoch, augment.TEST)
                else:
                    inputs = self.plain_inputs(raw)
                with step.ctx:
                    logits = model(inputs)
                correct += (logits.argmax(dim=1) == targets).sum()
        return {"test_accuracy": 100.0 * correct.item() / len(split)}

    def describe(self, stats: dict) -> str:
        return f"test {stats['test_accuracy']:6.2f}%  {stats['images_per_s']:8.0f} img/s"


TASK = ImageTask
