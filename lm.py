"""The language models of the text task: a byte-level LSTM and a small GPT, both over text.py's chunks.

dpt.py builds its model here:

    python -c "import lm, text; m = lm.build('gpt', text.VOCAB, seq_len=128); \
x = text.load('kjv', 'data', 128, train=True).tokens[:4]; print(lm.per_chunk_loss(m, x))"

Both map tokens (B, L) int64 to logits (B, L, vocab), start every chunk from zero state (nothing
is carried between calls, so chunks are independent examples), contain no BatchNorm, and expose
their last linear layer as `head`: its input is what per-example last-layer gradient norms need.

Default sizes (catalog.MODELS) are small enough to train on 2 CPU cores for a quick start; the published ones:
- LSTMLanguageModel follows PyTorch's word_language_model example (Embedding -> dropout -> LSTM ->
  dropout -> Linear decoder, uniform(-0.1, 0.1) init). The example's defaults are embed = hidden
  = 200, 2 layers, dropout 0.2, untied; its README's larger runs 650/650 dropout 0.5 and 1500/1500
  dropout 0.65. The WikiText-2 LSTM of the PowerSGD code that ExDyna's cnn-lstm benchmark builds
  on is 3 layers x 650, tied, dropout 0.4 (word-level there; here the vocabulary is the 256 bytes).
- GPT follows nanoGPT: its CPU "baby GPT" is 4 layers, 4 heads, 128 wide, dropout 0 (the
  defaults here); its shakespeare_char config is 6 layers, 6 heads, 384 wide, dropout 0.2.
"""
import math
from argparse import Namespace

import torch
import torch.nn.functional as F
from torch import nn

import catalog as C
import models


class LSTMLanguageModel(nn.Module):
    def __init__(self, vocab: int, embed: int, hidden: int, layers: int, dropout: float, tie_weights: bool = False):
        super().__init__()
        if tie_weights and embed != hidden:
            raise ValueError(f"tie_weights needs embed == hidden (got {embed} and {hidden})")
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(vocab, embed)
        self.rnn = nn.LSTM(embed, hidden, layers, dropout=dropout if layers > 1 else 0.0, batch_first=True)
        self.decoder = nn.Linear(hidden, vocab)
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        if tie_weights:
            self.decoder.weight = self.encoder.weight

    @property
    def head(self) -> nn.Linear:
        return self.decoder

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.encoder(tokens))
        # autocast runs cuDNN's LSTM in float16 whatever dtype it was given (bf16 asked, no GradScaler to
        # keep float16 gradients from underflowing): the recurrence in float32 instead
        with torch.autocast(x.device.type, enabled=False):
            out, _ = self.rnn(x.float())  # no initial state given: zeros
        return self.decoder(self.drop(out))


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float):
        super().__init__()
        assert n_embd % n_head == 0, "n_embd must split evenly into heads"
        self.n_head, self.dropout = n_head, dropout
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, C = x.shape
        q, k, v = (t.view(B, L, self.n_head, C // self.n_head).transpose(1, 2) for t in self.c_attn(x).split(C, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).reshape(B, L, C)))


class MLP(nn.Module):
    def __init__(self, n_embd: int, dropout: float):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * n_embd, n_embd)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, n_embd: int, n_head: int, dropout: float):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.mlp = MLP(n_embd, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, vocab: int, block_size: int, n_layer: int, n_head: int, n_embd: int, dropout: float):
        super().__init__()
        self.block_size = block_size
        self.wte = nn.Embedding(vocab, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(n_embd, n_head, dropout) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        self.lm_head = nn.Linear(n_embd, vocab, bias=False)
        self.wte.weight = self.lm_head.weight  # tied: one matrix embeds and unembeds the bytes
        # nanoGPT's init: N(0, 0.02) weights, zero biases, and the projections that write into the
        # residual stream scaled by 1/sqrt(2 * n_layer) so its variance does not grow with depth.
        for name, m in self.named_modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, 0.0, 0.02 / math.sqrt(2 * n_layer) if name.endswith("c_proj") else 0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    @property
    def head(self) -> nn.Linear:
        return self.lm_head

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        L = tokens.shape[1]
        assert L <= self.block_size, f"a chunk of {L} tokens exceeds block_size {self.block_size}"
        x = self.drop(self.wte(tokens) + self.wpe(torch.arange(L, device=tokens.device)))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))


def gpt_activations(args: Namespace, shape: models.DataShape, batch: int) -> int:
    """Per block and token about 20 activations of the width kept for backward, plus the attention
    scores and probabilities (heads x L x L per chunk), and the logits."""
    L, width = args.seq_len, args.hidden
    return batch * args.layers * (20 * L * width + 2 * args.heads * L * L) + batch * L * shape.vocab


def lstm_activations(args: Namespace, shape: models.DataShape, batch: int) -> int:
    """About 10 values of the state per layer and token (the gates, the cell, the output), and the logits."""
    return batch * args.seq_len * (10 * args.layers * args.hidden + shape.vocab)


# dpt.py's size flags (the model's record's `defaults` names those it reads) are its constructor's arguments;
# the LSTM's embedding is as wide as its state.
@models.MODELS.register("lstm", activations=lstm_activations)
def lstm(args: Namespace, shape: models.DataShape) -> nn.Module:
    return LSTMLanguageModel(shape.vocab, embed=args.hidden, hidden=args.hidden, layers=args.layers,
                             dropout=args.dropout)


@models.MODELS.register("gpt", activations=gpt_activations)
def gpt(args: Namespace, shape: models.DataShape) -> nn.Module:
    return GPT(shape.vocab, block_size=args.seq_len, n_layer=args.layers, n_head=args.heads, n_embd=args.hidden,
               dropout=args.dropout)


def build(name: str, vocab: int, seq_len: int, **sizes) -> nn.Module:
    """The model `name` for chunks of seq_len inputs, sized as dpt.py's flags would (layers, hidden, heads,
    dropout; those not given: the model's defaults in catalog.MODELS)."""
    unknown = sizes.keys() - C.MODELS[name].defaults.keys()
    assert not unknown, f"{name} has no size {sorted(unknown)}"
    args = Namespace(seq_len=seq_len, **{**C.MODELS[name].defaults, **sizes})
    return models.MODELS[name].build(args, models.DataShape(vocab=vocab))


def per_chunk_loss(model: nn.Module, chunks: torch.Tensor) -> torch.Tensor:
    """Each chunk's mean next-byte cross-entropy in nats, (B,): inputs chunk[:-1], targets chunk[1:]."""
    tokens = chunks.long()
    logits = model(tokens[:, :-1])
    losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1), reduction="none")
    return losses.view(len(chunks), -1).mean(dim=1)
