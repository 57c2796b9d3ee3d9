"""Language modelling: a corpus as indexed byte chunks (text.py) with a byte-level LSTM or a small
GPT (lm.py), evaluated on the held-out chunks in eval mode:

    python -c "import tasks, flags; a = flags.parse_args(['--dataset', 'kjv']); t = tasks.of('kjv'); \
print(t.build_model(a, workers=1, fused=True).head)"

An example is a chunk; its signals are the means over its tokens of the per-token ones
(tasks.per_example); the metric is held-out bits per byte (lower is better). Text is small: it
always lives on the device.
"""
import math
from argparse import Namespace

import torch
from torch import nn

import catalog as C
import lm
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

    def step_bytes(self, args: Namespace, batch: int) -> int:
        """float32: weights, gradients and AdamW's two moments (4 copies of the parameters); per block
        and token about 20 activations of the width kept for backward, plus the attention scores and
        probabilities (heads x L x L per chunk) for the GPT. Rough, but the failures it prevents are
        orders of magnitude off (a --seq-len of 100,000, a model wider than memory)."""
        L, C, layers = args.seq_len, args.hidden, args.layers
        if args.model == "gpt":
            activations = batch * layers * (20 * L * C + 2 * args.heads * L * L) + batch * L * text.VOCAB
        else:
            activations = batch * L * (10 * layers * C + text.VOCAB)
        return 4 * (4 * self.parameters(args) + activations)

    def parameters(self, args: Namespace) -> int:
        """The GPT: 12 C^2 + 13 C per block (attention, MLP, two LayerNorms), the final LayerNorm and the
        tied byte and position embeddings; the LSTM: 4 gates of (input + hidden + 2 biases) per layer,
        the embedding and the decoder."""
        C, layers = args.hidden, args.layers
        if args.model == "gpt":
            return layers * (12 * C * C + 13 * C) + 2 * C + (text.VOCAB + args.seq_len) * C
        return 4 * layers * C * (2 * C + 2) + 2 * text.VOCAB * C + text.VOCAB

    def take(self, split: text.Split, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        chunks = split.tokens[index].long()
        return chunks[:, :-1], chunks[:, 1:]

    def build_model(self, args: Namespace, workers: int, fused: bool) -> nn.Module:
        sizes = {flag: getattr(args, flag) for flag in C.MODELS[args.model].defaults}
        return lm.build(args.model, text.VOCAB, args.seq_len, **sizes)

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
