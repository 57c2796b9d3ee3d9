"""The speed options against the plain path, on the CPU: each optimizer implementation makes the same
update, a compiled run the same losses, recorded signals and partitions to float tolerance, and the
training step never waits for the device (no host synchronisation per step). bench.py measures them."""
import json

from argparse import Namespace

import pytest
import torch

import data
import fakedata
import importance
import models
import tasks
import train
from runs import inprocess, only_log, run_expecting_error
from samplers import WorkerBatches, for_window


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_every_optimizer_implementation_makes_the_same_update(name):
    torch.manual_seed(0)
    reference = models.build("resnet18", 10, 1)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    after = {}
    for impl in ("for-loop", "foreach", "fused", "default"):
        model = models.build("resnet18", 10, 1)
        model.load_state_dict(reference.state_dict())
        lr = 1e-3 if name == "adamw" else 0.1  # each's usual rate (AdamW at 0.1 amplifies the rounding of ~0 gradients)
        opt = models.optimizer(model, lr, None if name == "adamw" else 0.9, 5e-4, name, impl)
        for _ in range(3):  # momentum and Adam's moments take part from the second step
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        after[impl] = torch.cat([p.detach().flatten() for p in model.parameters()])
    for impl in ("foreach", "fused", "default"):
        torch.testing.assert_close(after[impl], after["for-loop"], rtol=1e-5, atol=2e-5, msg=impl)


def test_a_training_epoch_never_waits_for_the_device_per_step(monkeypatch):
    """Every call that copies a value to the host (.item, .tolist, .cpu, bool(), .numpy) counted over an
    epoch of 2 steps and one of 6, every channel recorded: the same count, so none is per step."""
    task = tasks.of("cifar10")
    counts = {}
    calls = []
    for name in ("item", "tolist", "cpu", "__bool__", "numpy"):
        original = getattr(torch.Tensor, name)

        def counted(self, *a, _original=original, _name=name, **k):
            calls.append(_name)
            return _original(self, *a, **k)
        monkeypatch.setattr(torch.Tensor, name, counted)
    for steps in (2, 6):
        torch.manual_seed(0)
        n = 2 * 4 * steps
        split = data.Split(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8), torch.randint(0, 10, (n,)))
        model = task.to_device(models.build("resnet18", 10, 3, workers=2, fused=True), Namespace(model="resnet18"),
                               torch.device("cpu"))
        step = train.Step.build(workers=2, batch_size=4, device=torch.device("cpu"), task=task, on_device=True,
                                channels=("loss", "correct", "el2n", "grad_norm"))
        batches = WorkerBatches(for_window(split, None, range(2), 2, shuffle=True, sampler_seed=0, seed=0), 4)
        recorder = importance.Recorder(len(split), 1, step.channels, torch.device("cpu"))
        optimizer = models.optimizer(model, 0.1, 0.9, 5e-4)
        calls.clear()
        train.train_epoch(model, optimizer, batches, split, step, 0, recorder, 0)
        assert len(batches) == steps
        counts[steps] = sorted(calls)
    assert counts[2] == counts[6], counts


FMNIST = "/usr/share/datasets/fashion-mnist"


@pytest.mark.slow
@pytest.mark.parametrize("task", ["text", "image"])
def test_a_compiled_run_has_the_plain_runs_losses_signals_and_partitions(tmp_path, task):
    """The GPT over 3 epochs, and ResNet-18 as gpu-check.sh compiles it (BatchNorm per emulated worker,
    channels_last, the augmentation on whole batches, eval mode) over 2: with 16 images per worker its
    BatchNorm amplifies float32 rounding so fast that eager float32 itself is 1e-4 off float64 at the
    second step, and compiled and eager drift apart by percents within an epoch; so its comparison is
    the first epoch's losses, the importance and partition they give, and the next epoch on that
    partition (to 1%: rounding, not a different step)."""
    if task == "text":
        corpus = tmp_path / "corpus.txt"
        fakedata.write_text(corpus, lines=1500)
        argv = ["--dataset", "text", "--text-file", str(corpus), "--model", "gpt", "--layers", "1", "--hidden", "32",
                "--heads", "2", "--seq-len", "16", "--subset", "96", "--test-subset", "32", "--batch-size", "12",
                "--optimizer", "adamw", "--lr", "0.01", "--total-epochs", "3", "--warmup-epochs", "2"]
        metric, tolerances = "bits_per_byte", [1e-4] * 3
    else:
        argv = ["--dataset", "fashionmnist", "--data-dir", FMNIST, "--model", "resnet18", "--subset", "128",
                "--test-subset", "64", "--batch-size", "16", "--lr", "0.001", "--eval-protocol", "standard",
                "--measure", "average", "--total-epochs", "2", "--warmup-epochs", "1"]
        metric, tolerances = None, [1e-5, 1e-2]  # the second epoch: where rounding has grown to about 0.2%
    argv += ["--emulate-workers", "2", "--interval-epochs", "1", "--ignore-epochs", "0", "--save-partitions"]
    from torch._dynamo.utils import counters

    runs, graphs = {}, {}
    for mode in ("none", "default"):
        out = tmp_path / mode
        counters.clear()
        inprocess([*argv, "--compile", mode, "--results-dir", str(out)])
        graphs[mode] = counters["stats"]["unique_graphs"]
        log = only_log(out)
        saved = torch.load(next(out.rglob("*.partitions.pt")), weights_only=False)
        runs[mode] = (log, saved)
    (plain, plain_saved), (compiled, compiled_saved) = runs["none"], runs["default"]
    assert len(plain["epochs"]) == len(compiled["epochs"]) == len(tolerances)
    for a, b, rel in zip(plain["epochs"], compiled["epochs"], tolerances):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=rel)
        if metric:
            assert a[metric] == pytest.approx(b[metric], rel=rel)
    assert compiled["args"]["compile"] == "default" and json.dumps(plain["args"]["compile"]) == '"none"'
    assert graphs["none"] == 0 and graphs["default"] >= 1  # the model did go through dynamo
    assert sum(w.get("partition") is not None for w in plain_saved["windows"]) == 1  # one repartition each
    for a, b in zip(plain_saved["windows"], compiled_saved["windows"]):
        if a.get("importance") is not None:
            torch.testing.assert_close(b["importance"], a["importance"], rtol=1e-3, atol=1e-5)
        if a.get("partition") is not None:
            assert all(torch.equal(p, q) for p, q in zip(a["partition"], b["partition"]))


@pytest.mark.parametrize("extra,message", [
    (["--emulate-workers", "2", "--emulation", "sequential"], "--compile compiles the fused step"),
    (["--reducer", "exdyna", "--emulation", "sequential"], "--compile is not supported with a gradient reducer yet"),
    (["--measure", "grad-norm", "--heuristic", "stripes"], "recompiles the model every epoch"),
])
def test_what_compile_cannot_take_is_one_line(extra, message, capsys):
    assert message in run_expecting_error(["--dataset", "fashionmnist", "--compile", "default", *extra], capsys)


def test_the_augmentation_key_hashed_in_python_is_the_tensor_hash():
    import augment

    x = torch.randint(0, 2**32, (1000,), dtype=torch.int64)
    assert [augment.hash32_int(v) for v in x.tolist()] == augment.hash32(x).tolist()


def train_steps(model_name: str, dataset: str, layout, threads: int, steps: int = 2) -> list[float]:
    """A few fused training steps of 2 emulated workers from a fixed init, in `layout` on `threads` threads:
    each step's mean loss."""
    import argparse

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        task = tasks.of(dataset)
        spec = task.dataset
        split = data.Split(torch.randint(0, 256, (2 * 8 * steps, *spec.shape), dtype=torch.uint8),
                           torch.randint(0, spec.classes, (2 * 8 * steps,)))
        model = task.build_model(argparse.Namespace(model=model_name), split, 2, True)
        model, task.layout = model.to(memory_format=layout), layout
        batches = WorkerBatches(for_window(split, None, range(2), 2, shuffle=True, sampler_seed=0, seed=0), 8)
        optimizer = models.optimizer(model, 0.01, 0.9, 5e-4)
        losses = []
        batches.set_epoch(0)
        for keys in batches:
            index = torch.tensor(keys)
            inputs = task.inputs(*task.take(split, index)[:1], index, 0, 0, 0)
            loss = task.example_loss(model(inputs), split.labels[index]).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        return losses
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("model_name,dataset", [("resnet18", "cifar10"), ("lenet5", "fashionmnist")])
def test_the_layout_and_the_thread_count_change_no_result_beyond_rounding(model_name, dataset):
    """models.Spec chooses each model's memory layout per device, and a CPU run its thread count: both
    change the arithmetic's order only, so the losses agree with the plain path (contiguous, one thread)
    to float32 rounding after an update (BatchNorm on 8 images a worker amplifies it: 0.2% by the third step,
    as float32 itself drifts from float64)."""
    plain = train_steps(model_name, dataset, torch.contiguous_format, 1)
    for layout, threads in ((torch.channels_last, 1), (torch.contiguous_format, 2), (torch.channels_last, 2)):
        assert train_steps(model_name, dataset, layout, threads) == pytest.approx(plain, rel=1e-3), (layout, threads)
