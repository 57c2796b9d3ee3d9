"""Language modelling: a corpus as indexed byte chunks (text.py) with a byte-level LSTM or a small
GPT (lm.py), evaluated on the held-out chunks in eval mode:

    python -c "import tasks, flags; a = flags.parse_args(['--dataset', 'kjv']); t = tasks.of('kjv'); \
print(t.build_model(a, train=None))"

An example is a chunk; its signals are the means over its tokens of the per-token ones
(importance.signals); the metric is held-out bits per byte (lower is better). Text is small: it
always lives on the device.
"""
import math
from argparse import Namespace

import torch
from torch import nn

import lm  # noqa: F401  (registers the text models: its Spec records)
import models
import tasks
import text

class TextTask(tasks.Task):
    def load(self, args: Namespace, train: bool, num_workers: int = 1) -> text.Split:
        corpus = "kjv" if self.dataset.name == "kjv" else args.text_file
        return text.load(corpus, args.data_dir, args.seq_len, train, subset=args.subset if train else args.test_subset,
                         min_examples=num_workers if train else 1)

    def on_device(self, args: Namespace) -> bool:
        return True

    def shape(self, train) -> models.DataShape:
        return models.DataShape(vocab=text.VOCAB)

    def take(self, split: text.Split, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        chunks = split.tokens[index].long()
        return chunks[:, :-1], chunks[:, 1:]

    def throughput(self, examples: float, seconds: float, split: text.Split) -> dict:
        return {"tokens_per_s": examples * (split.tokens.shape[1] - 1) / seconds}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: text.Split, step, epoch: int) -> dict:
        """Held-out loss (nats per byte), perplexity and bits per byte, in eval mode."""
        total = torch.zeros((), device=step.device, dtype=torch.float64)
        with models.eval_mode(model):
            for start in range(0, len(split), step.batch_size):
                index = torch.arange(start, min(start + step.batch_size, len(split)))
                inputs, targets = self.take(split, index.to(split.tokens.device))
                inputs, targets = inputs.to(step.device, non_blocking=True), targets.to(step.device, non_blocking=True)
                with step.ctx:
                    logits = model(inputs)
                total += self.example_loss(logits, targets).double().sum()
        loss = total.item() / len(split)
        return {"test_loss": loss, "perplexity": math.exp(loss), "bits_per_byte": text.bits_per_byte(loss)}

    def describe(self, stats: dict) -> str:
        return (f"held-out {stats['test_loss']:.4f} nats  ppl {stats['perplexity']:7.3f}  "
                f"{stats['bits_per_byte']:.4f} bpb  {stats['tokens_per_s']:8.0f} tok/s")


TASK = TextTask
