"""The per-example training signals (tasks.per_example) against plain references: cross-entropy,
correctness, EL2N in float64, and the last-layer gradient norm against autograd, per example, for
images (one target) and text (a chunk of targets); and the fused and sequential emulations record the
same signals."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

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
    layer = nn.Linear(features, classes, bias=bias)
    with torch.no_grad():
        layer.weight.mul_(3)  # a sharper softmax: some examples right, some confidently wrong
    captured = train.HeadInput(layer)
    with torch.no_grad():
        logits = layer(h)  # the pre-hook keeps h
    assert torch.equal(captured.value, h)
    targets = torch.randint(0, classes, (n, *steps), generator=g)
    got = tasks.per_example(logits, targets, ALL, captured)
    expected = reference(logits, targets, h, layer)
    for c in ALL:
        np.testing.assert_allclose(got[c].double().numpy(), expected[c], rtol=1e-5, atol=1e-6, err_msg=c)
    assert 0 < got["correct"].mean() < 1
    assert set(tasks.per_example(logits, targets, ("loss",))) == {"loss"}  # only what is asked for


def test_the_image_loss_is_exactly_the_training_loss():
    """Recording changes no number: the loss channel is F.cross_entropy itself, bit for bit."""
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(64, 10, generator=g), torch.randint(0, 10, (64,), generator=g)
    assert torch.equal(
        tasks.per_example(logits, labels, ("loss",))["loss"], F.cross_entropy(logits, labels, reduction="none")
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
