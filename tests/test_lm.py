import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import catalog as C
import lm
import text

TINY = {"lstm": dict(hidden=48, layers=2, dropout=0.1),
        "gpt": dict(layers=2, heads=2, hidden=32, dropout=0.1)}
SEQ = 24


def tiny(name: str, **overrides) -> nn.Module:
    torch.manual_seed(0)
    return lm.build(name, text.VOCAB, SEQ, **{**TINY[name], **overrides})


def random_tokens(b: int, length: int = SEQ) -> torch.Tensor:
    return torch.randint(0, 256, (b, length), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", C.names_of(C.MODELS, "text"))
def test_logits_shape_and_head_is_the_last_layer(name):
    model = tiny(name).eval()
    seen = []
    model.head.register_forward_hook(lambda mod, inputs, out: seen.append((inputs[0], out)))
    logits = model(random_tokens(3))
    assert logits.shape == (3, SEQ, 256)
    assert isinstance(model.head, nn.Linear) and torch.equal(seen[0][1], logits)  # head's output is the output
    assert seen[0][0].shape[:2] == (3, SEQ)  # its input: one vector per position per chunk
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@pytest.mark.parametrize("name", C.names_of(C.MODELS, "text"))
def test_causal_changing_token_t_leaves_earlier_logits(name):
    model = tiny(name).eval()
    tokens = random_tokens(2)
    t = 10
    changed = tokens.clone()
    changed[:, t] = (changed[:, t] + 1) % 256
    a, b = model(tokens), model(changed)
    assert torch.allclose(a[:, :t], b[:, :t], atol=1e-6)
    assert not torch.allclose(a[:, t:], b[:, t:], atol=1e-4)


@pytest.mark.parametrize("name", C.names_of(C.MODELS, "text"))
def test_chunks_are_independent_and_no_state_is_carried(name):
    model = tiny(name).eval()
    tokens = random_tokens(4)
    together = model(tokens)
    alone = torch.cat([model(tokens[i: i + 1]) for i in range(4)])
    assert torch.allclose(together, alone, atol=1e-5)
    model(random_tokens(4).flip(0))  # a call in between changes nothing
    assert torch.allclose(model(tokens), together, atol=1e-6)


def test_gpt_ties_embedding_and_head():
    model = tiny("gpt")
    assert model.head is model.lm_head and model.head.bias is None
    assert model.head.weight is model.wte.weight
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in set(model.parameters()))
    model(random_tokens(2)).sum().backward()
    assert model.wte.weight.grad is not None and model.wte.weight.grad.abs().sum() > 0


def test_lstm_ties_only_when_asked_and_sizes_match():
    tied = lm.LSTMLanguageModel(text.VOCAB, embed=48, hidden=48, layers=2, dropout=0.1, tie_weights=True)
    assert tied.head.weight is tied.encoder.weight
    untied = tiny("lstm")
    assert untied.head.weight is not untied.encoder.weight
    with pytest.raises(ValueError, match="embed == hidden"):
        lm.LSTMLanguageModel(text.VOCAB, embed=32, hidden=48, layers=2, dropout=0.1, tie_weights=True)


def test_gpt_attention_matches_plain_masked_softmax():
    attn = lm.CausalSelfAttention(n_embd=16, n_head=4, dropout=0.0)
    x = torch.randn(2, 7, 16, dtype=torch.float64)
    attn.double()
    q, k, v = (t.view(2, 7, 4, 4).transpose(1, 2) for t in attn.c_attn(x).split(16, dim=2))
    scores = q @ k.transpose(-1, -2) / math.sqrt(4)
    scores = scores.masked_fill(torch.ones(7, 7, dtype=torch.bool).triu(1), float("-inf"))
    expected = attn.c_proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(2, 7, 16))
    assert torch.allclose(attn(x), expected, atol=1e-12)


def test_gpt_init_is_nanogpt_style():
    torch.manual_seed(0)
    model = lm.build("gpt", text.VOCAB, 64, layers=8, heads=4, hidden=256)
    residual = torch.cat([m.weight.flatten() for n, m in model.named_modules() if n.endswith("c_proj")])
    others = torch.cat([m.weight.flatten() for n, m in model.named_modules()
                        if isinstance(m, nn.Linear) and not n.endswith("c_proj")])
    assert residual.std().item() == pytest.approx(0.02 / math.sqrt(16), rel=0.05)
    assert others.std().item() == pytest.approx(0.02, rel=0.05)
    assert all((m.bias == 0).all() for m in model.modules() if isinstance(m, nn.Linear) and m.bias is not None)


def test_gpt_refuses_chunks_longer_than_its_block():
    model = tiny("gpt")
    assert model.block_size == SEQ
    with pytest.raises(AssertionError, match="exceeds block_size"):
        model(random_tokens(1, SEQ + 1))


@pytest.mark.parametrize("name", C.names_of(C.MODELS, "text"))
def test_untrained_loss_is_near_uniform(name):
    torch.manual_seed(0)
    model = lm.build(name, text.VOCAB, 64).eval()  # the default sizes
    chunks = text.encode("In the beginning God created the heaven and the earth. " * 8)[: 4 * 65].view(4, 65)
    assert lm.per_chunk_loss(model, chunks).mean().item() == pytest.approx(math.log(256), abs=0.1)


@pytest.mark.parametrize("name", C.names_of(C.MODELS, "text"))
def test_per_chunk_loss_matches_one_chunk_at_a_time(name):
    model = tiny(name).eval()
    chunks = random_tokens(5, SEQ + 1).to(torch.uint8)
    expected = torch.stack([F.cross_entropy(model(c[None, :-1].long())[0], c[1:].long()) for c in chunks])
    assert torch.allclose(lm.per_chunk_loss(model, chunks), expected, atol=1e-5)


@pytest.mark.parametrize("name, sizes, lr", [("lstm", dict(hidden=64, layers=1, dropout=0.0), 2e-2), ("gpt", {}, 1e-2)])
def test_a_few_steps_on_repeated_text_drive_the_loss_down(name, sizes, lr):
    model = tiny(name, **sizes).train()
    split = text.chunk(("the quick brown fox jumps over the lazy dog. " * 60).encode(), SEQ)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for step in range(60):
        loss = lm.per_chunk_loss(model, split.tokens[(step * 8) % 64: (step * 8) % 64 + 8]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(math.log(256), abs=0.2)
    assert sum(losses[-5:]) / 5 < 0.5 * losses[0]


@pytest.mark.parametrize("argv", [["--dataset", "kjv"], ["--dataset", "kjv", "--model", "lstm", "--layers", "3"],
                                  ["--dataset", "kjv", "--hidden", "64", "--heads", "2", "--seq-len", "32"]])
def test_the_parameter_count_the_memory_check_uses_is_the_models(argv):
    import flags
    import models
    import tasks

    args = flags.parse_args(argv)
    task = tasks.of(args.dataset)
    assert models.parameters(args.model, args, task.shape(None)) == \
        sum(p.numel() for p in task.build_model(args, None).parameters())


def test_the_lstm_recurrence_stays_float32_under_autocast():
    """Autocast would run the recurrence in low precision (cuDNN's in float16 whatever dtype was asked);
    the LSTM runs it in float32 and autocasts only the embedding's dropout and the head, with the same
    logits as a float32 recurrence to bf16 tolerance."""
    model = tiny("lstm").eval()
    seen = []
    model.rnn.register_forward_hook(lambda mod, inputs, out: seen.append((inputs[0].dtype, out[0].dtype)))
    tokens = random_tokens(3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = model(tokens)
    assert seen == [(torch.float32, torch.float32)] and mixed.dtype == torch.bfloat16
    assert torch.allclose(mixed.float(), model(tokens), atol=0.05)
