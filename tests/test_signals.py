"""The per-example training signals (importance.signals) against plain references: cross-entropy,
correctness, EL2N in float64, and the last-layer gradient norm against autograd, per example, for
images (one target) and text (a chunk of targets); and the fused and sequential emulations record the
same signals."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import augment
import data
import importance
import models
import tasks
import train
from samplers import WorkerBatches, for_window

ALL = ("loss", "correct", "el2n", "grad_norm")


def reference(logits: torch.Tensor, targets: torch.Tensor, h: torch.Tensor, layer: nn.Linear) -> dict:
    """Per example, straightforwardly: numpy float64 for loss, correct and EL2N; autograd (float64)
    for the gradient of the example's mean loss w.r.t. the last layer's weight and bias."""
    z = logits.double().reshape(len(targets), -1, logits.shape[-1]).numpy()
    t = targets.reshape(len(targets), -1).numpy()
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    onehot = np.eye(z.shape[-1])[t]
    out = {"loss": -np.log((p * onehot).sum(-1)).mean(1), "correct": (z.argmax(-1) == t).mean(1),
           "el2n": np.linalg.norm(p - onehot, axis=-1).mean(1)}
    weight = layer.weight.detach().double().requires_grad_()
    bias = layer.bias.detach().double().requires_grad_() if layer.bias is not None else None
    norms = []
    for i in range(len(targets)):
        hi = h[i].double().reshape(-1, h.shape[-1])
        zi = hi @ weight.T + (bias if bias is not None else 0)
        loss = F.cross_entropy(zi, targets[i].reshape(-1))
        grads = torch.autograd.grad(loss, [weight] + ([bias] if bias is not None else []))
        norms.append(torch.sqrt(sum(g.square().sum() for g in grads)).item())
    out["grad_norm"] = np.array(norms)
    return out


@pytest.mark.parametrize(
    "shape", [(16, 12, 5), (6, 9, 7, 4)], ids=["images: one target each", "text: chunks of 7 targets"]
)
@pytest.mark.parametrize("bias", [True, False])
def test_signals_match_the_references(shape, bias):
    g = torch.Generator().manual_seed(len(shape) + bias)
    n, features, classes = shape[0], shape[1], shape[-1]
    steps = shape[2:-1]
    h = torch.randn(n, *steps, features, generator=g)
    torch.manual_seed(len(shape) + bias)  # the layer's init: the same whatever ran before in this process
    layer = nn.Linear(features, classes, bias=bias)
    with torch.no_grad():
        layer.weight.mul_(3)  # a sharper softmax: some examples right, some confidently wrong
    captured = train.HeadInput(layer)
    with torch.no_grad():
        logits = layer(h)  # the pre-hook keeps h
    assert torch.equal(captured.value, h)
    targets = torch.randint(0, classes, (n, *steps), generator=g)
    got = importance.signals(logits, targets, ALL, captured)
    expected = reference(logits, targets, h, layer)
    for c in ALL:
        np.testing.assert_allclose(got[c].double().numpy(), expected[c], rtol=1e-5, atol=1e-6, err_msg=c)
    assert 0 < got["correct"].mean() < 1
    assert set(importance.signals(logits, targets, ("loss",))) == {"loss"}  # only what is asked for


def test_the_image_loss_is_exactly_the_training_loss():
    """Recording changes no number: the loss channel is F.cross_entropy itself, bit for bit."""
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(64, 10, generator=g), torch.randint(0, 10, (64,), generator=g)
    assert torch.equal(
        importance.signals(logits, labels, ("loss",))["loss"], F.cross_entropy(logits, labels, reduction="none")
    )


def test_the_hook_keeps_the_last_layers_input():
    model = models.build("resnet18", 10, 3)
    captured = train.HeadInput(model.fc)
    x = torch.randn(4, 3, 32, 32)
    model(x)
    assert captured.value.shape == (4, 512) and captured.bias
    assert torch.allclose(model.fc(captured.value), model(x), atol=1e-5)


@pytest.mark.parametrize("workers,batch", [(2, 6), (3, 4)])
def test_fused_and_sequential_emulations_record_the_same_signals(workers, batch):
    """One step from identical parameters: every channel recorded alike (to float32 rounding)."""
    g = torch.Generator().manual_seed(workers)
    n = workers * batch
    split = data.Split(
        torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g), torch.randint(0, 10, (n,), generator=g)
    )
    torch.manual_seed(1)
    base = models.build("resnet18", 10, 3).to(memory_format=torch.channels_last)
    recorded = {}
    for mode in ("fused", "sequential"):
        model = copy.deepcopy(base)
        if mode == "fused":
            models.emulate_workers(model, workers)
        step = train.Step.build(
            workers=workers,
            batch_size=batch,
            device=torch.device("cpu"),
            task=tasks.of("cifar10"),
            sequential=mode == "sequential",
            on_device=True,
            channels=ALL,
        )
        batches = WorkerBatches(
            for_window(split, None, range(workers), workers, shuffle=True, sampler_seed=0, seed=0), batch
        )
        recorder = importance.Recorder(n, 1, ALL, "cpu")
        train.train_epoch(model, models.optimizer(model, 0.1, 0.9, 5e-4), batches, split, step, 0, recorder, 0)
        recorded[mode] = recorder.merged()
    for c in ALL:
        assert torch.allclose(recorded["fused"][c], recorded["sequential"][c], rtol=1e-4, atol=1e-5), c
    assert (recorded["fused"]["loss"] > 0).all() and (recorded["fused"]["grad_norm"] > 0).all()


class TinyCNN(nn.Module):
    """A conv, a BatchNorm (eval mode reads its running statistics) and the last layer `fc`."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 10)

    def forward(self, x):
        return self.fc(F.relu(self.bn(self.conv(x))).mean(dim=(2, 3)))


def test_the_scoring_pass_is_eval_mode_unaugmented_el2n_and_grand_over_every_weight():
    """Data Diet's protocol against a plain per-example loop: eval mode (BatchNorm's running
    statistics), the un-augmented image, autograd over every parameter for GraNd."""
    task = tasks.of("fashionmnist")
    torch.manual_seed(3)
    model = TinyCNN()
    model.bn.running_mean.uniform_(-1, 1)
    model.bn.running_var.uniform_(0.5, 2)
    split = data.Split(torch.randint(0, 256, (21, 1, 28, 28), dtype=torch.uint8), torch.randint(0, 10, (21,)))
    step = train.Step.build(workers=1, batch_size=8, device=torch.device("cpu"), task=task)
    got = task.score(model, split, ("eval_el2n", "eval_grand"), step)
    assert model.training  # the pass leaves the model as it found it
    model.eval()
    el2n, grand = [], []
    for i in range(21):
        x = augment.normalize(split.images[i:i + 1], (0.1307,), (0.3081,))
        logits = model(x)
        onehot = F.one_hot(split.labels[i:i + 1], 10).float()
        el2n.append((logits.softmax(dim=1) - onehot).norm().item())
        grads = torch.autograd.grad(F.cross_entropy(logits, split.labels[i:i + 1]), list(model.parameters()))
        grand.append(sum(g.double().square().sum() for g in grads).sqrt().item())
    assert torch.allclose(got["eval_el2n"], torch.tensor(el2n), atol=1e-6)
    assert torch.allclose(got["eval_grand"], torch.tensor(grand, dtype=torch.float32), rtol=1e-5)


@pytest.mark.parametrize("name", ["gpt", "lstm"])
def test_grand_of_a_language_model_counts_a_tied_matrix_once_with_both_paths(name):
    """The GPT's head is its byte embedding: GraNd's gradient is that matrix's whole gradient (vmap's
    fast path against the plain loop; the LSTM's fused kernel takes the loop)."""
    import lm
    import text

    torch.manual_seed(0)
    model = lm.build(name, text.VOCAB, 16, layers=1, hidden=16, dropout=0.0) if name == "lstm" else \
        lm.build(name, text.VOCAB, 16, layers=1, hidden=16, heads=2)
    chunks = torch.randint(0, 256, (5, 17))
    task = tasks.of("text")
    model.eval()
    fast = task.grand(model, chunks[:, :-1], chunks[:, 1:])
    plain = tasks.grand_reference(model, task.example_loss, chunks[:, :-1], chunks[:, 1:])
    assert torch.allclose(fast, plain, rtol=1e-5)


def test_the_gpts_gradient_norm_channel_is_its_head_paths_gradient():
    """What the docs say of grad-norm on the GPT: the exact gradient of the head's use of the tied
    matrix (the embedding's use of the same matrix is left out, as the measure's name says)."""
    import lm
    import text

    torch.manual_seed(1)
    model = lm.build("gpt", text.VOCAB, 12, layers=1, hidden=16, heads=2).eval()
    chunks = torch.randint(0, 256, (3, 13))
    features = train.HeadInput(model.head)
    logits = model(chunks[:, :-1])
    got = importance.signals(logits, chunks[:, 1:], ("loss", "grad_norm"), features)["grad_norm"]
    for i in range(3):  # the head's matrix as its own leaf: the head path only
        h = features.value[i:i + 1]
        head = model.head.weight.detach().clone().requires_grad_()
        loss = F.cross_entropy((h @ head.T).reshape(-1, text.VOCAB), chunks[i:i + 1, 1:].reshape(-1))
        (g,) = torch.autograd.grad(loss, head)
        assert torch.allclose(got[i], g.norm(), rtol=1e-4)


def _score_on_ranks(rank: int, world: int, init_file: str, out) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    model, split, task, step = scoring_case()
    out[rank] = task.score(model, split, ("eval_el2n", "eval_grand"), step)
    torch.distributed.destroy_process_group()


def scoring_case():
    torch.manual_seed(3)
    model = TinyCNN()
    split = data.Split(torch.randint(0, 256, (21, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator()
                                     .manual_seed(4)), torch.randint(0, 10, (21,), generator=torch.Generator()
                                                                      .manual_seed(5)))
    task = tasks.of("fashionmnist")
    return model, split, task, train.Step.build(workers=1, batch_size=8, device=torch.device("cpu"), task=task)


@pytest.mark.slow
def test_ranks_share_the_scoring_pass_and_all_get_every_score(tmp_path):
    """Each of 2 gloo ranks scores every other example; one all_reduce: the same scores, on both, as one
    process scoring all."""
    import torch.multiprocessing as mp

    model, split, task, step = scoring_case()
    alone = task.score(model, split, ("eval_el2n", "eval_grand"), step)
    with mp.get_context("spawn").Manager() as manager:
        out = manager.dict()
        mp.spawn(_score_on_ranks, args=(2, str(tmp_path / "init"), out), nprocs=2)
        ranks = [dict(out[r]) for r in range(2)]
    for got in ranks:
        for signal in alone:
            assert torch.allclose(got[signal], alone[signal], rtol=1e-6)
