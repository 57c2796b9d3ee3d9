"""One process as N workers must be N-rank DDP: the same batches, BatchNorm statistics per worker,
averaged gradients, rank 0's running buffers, the same loss matrix and partitions.

Training from random init is chaotic at float32 resolution (a ReLU or max-pool decision flipped
by one ulp changes a gradient by O(1)), so two computations that differ only in rounding drift
apart within a few steps. Hence: the sequential emulation, which repeats 2-rank DDP's arithmetic,
is compared with real 2-rank runs over whole epochs; the fused fast path is compared with the
sequential reference from identical parameters, and with DDP after one step."""
import copy

import pytest
import torch
import torch.nn.functional as F

import models
import tasks
import train
from runs import checkpoint, inprocess, launch, only, only_log, partitions, relative_difference


def tiny(root, out, *extra):
    return ["--dataset", "cifar10", "--data-dir", str(root), "--results-dir", str(out), "--batch-size", "10",
            "--deterministic", *extra]


@pytest.mark.slow
def test_sequential_emulation_reproduces_two_rank_ddp(cifar10_dir, tmp_path):
    """8 warmup steps (2 epochs x 4 steps of 2 x 10 examples), a repartition and an interval: the
    parameters, BatchNorm buffers, optimizer state, recorded losses, partitions and row of a real
    2-rank torchrun, and of one process (on one thread, as torchrun's ranks) emulating both."""
    root, _ = cifar10_dir
    flags = ["--total-epochs", "3", "--warmup-epochs", "2", "--interval-epochs", "1", "--ignore-epochs", "0",
             "--checkpoint-every", "1", "--keep-checkpoint", "--save-partitions"]
    launch(tiny(root, tmp_path / "ddp", *flags), 2)
    inprocess(tiny(root, tmp_path / "emulated", *flags, "--emulate-workers", "2", "--emulation", "sequential"))
    (a, saved_a, row_a), (b, saved_b, row_b) = (
        (checkpoint(tmp_path / name), partitions(tmp_path / name), only(tmp_path / name, "*.csv").read_text())
        for name in ("ddp", "emulated"))
    assert a["epoch"] == 3
    assert relative_difference(a["model"], b["model"]) < 1e-5  # parameters and BatchNorm buffers
    assert relative_difference(a["optimizer"]["state"][0], b["optimizer"]["state"][0]) < 1e-5
    assert torch.allclose(a["recorded"]["loss"], b["recorded"]["loss"], rtol=1e-5, atol=1e-6)
    for wa, wb in zip(saved_a["windows"][1:], saved_b["windows"][1:]):
        assert all(torch.equal(x, y) for x, y in zip(wa["partition"], wb["partition"]))
        assert torch.allclose(wa["importance"], wb["importance"], rtol=1e-5, atol=1e-7)
    assert row_a == row_b


@pytest.mark.parametrize("workers,batch", [(2, 10), (4, 6), (3, 8)])
def test_fused_gradients_match_the_sequential_reference(workers, batch):
    """From identical parameters: per-example losses, gradients and running buffers agree."""
    torch.manual_seed(workers)
    reference = models.build("resnet18", 10, 3).to(memory_format=torch.channels_last)
    initial = copy.deepcopy(reference)
    fused = models.emulate_workers(copy.deepcopy(reference), workers)
    x = torch.randn(workers * batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (workers * batch,))
    step = train.Step.build(workers=workers, batch_size=batch, device=torch.device("cpu"), task=tasks.of("cifar10"),
                            sequential=True)
    reference_losses = train.sequential_backward(reference, x, y, step)["loss"]
    fused_losses = F.cross_entropy(fused(x), y, reduction="none")
    fused_losses.mean().backward()
    assert torch.allclose(fused_losses.detach(), reference_losses, rtol=1e-5, atol=1e-6)
    for (name, p), q in zip(reference.named_parameters(), fused.parameters()):
        assert ((p.grad - q.grad).norm() / p.grad.norm()).item() < 1e-4, name
    assert relative_difference({n: p.grad for n, p in reference.named_parameters()},
                               {n: p.grad for n, p in fused.named_parameters()}) < 1e-5
    for (name, a), b in zip(reference.named_buffers(), fused.buffers()):
        assert torch.allclose(a.float(), b.float(), rtol=1e-5, atol=1e-7), name  # worker 0's statistics only
    # independently: the running buffers are what worker 0's chunk alone leaves, not the whole batch's
    worker0, everyone = copy.deepcopy(initial), copy.deepcopy(initial)
    worker0(x[:batch])
    everyone(x)
    for name in ("bn1", "layer1.0.bn1", "layer3.1.bn2"):
        got = fused.get_submodule(name).running_mean  # starts at 0: holds momentum x the batch mean
        off_by = (worker0.get_submodule(name).running_mean - got).abs().max()
        ghost_off_by = (everyone.get_submodule(name).running_mean - got).abs().max()
        assert off_by < 1e-6 * got.abs().max() + 1e-9 and ghost_off_by > 1e-3 * got.abs().max(), name


@pytest.mark.slow
def test_fused_run_matches_two_rank_ddp_after_one_step(cifar10_dir, tmp_path):
    root, _ = cifar10_dir
    flags = ["--heuristic", "none", "--total-epochs", "1", "--subset", "20", "--checkpoint-every", "1",
             "--keep-checkpoint"]
    launch(tiny(root, tmp_path / "ddp", *flags), 2)
    inprocess(tiny(root, tmp_path / "fused", *flags, "--emulate-workers", "2"))
    a, b = checkpoint(tmp_path / "ddp"), checkpoint(tmp_path / "fused")
    assert relative_difference(a["model"], b["model"]) < 1e-6
    assert torch.equal(a["recorded"]["loss"], b["recorded"]["loss"])  # the step's forward pass is bit for bit the same


@pytest.mark.slow
def test_torchrun_ranks_each_emulating_workers(cifar10_dir, tmp_path):
    """2 ranks x 2 emulated workers = 4 workers: each rank trains exactly its two workers' partitions."""
    root, _ = cifar10_dir
    out = tmp_path / "res"
    launch(tiny(root, out, "--total-epochs", "3", "--warmup-epochs", "2", "--interval-epochs", "1", "--ignore-epochs",
                "0", "--emulate-workers", "2", "--save-partitions"), 2)
    log = only_log(out)
    assert log["workers"] == 4 and log["world_size"] == 2
    assert log["intervals"][0]["partition_sizes"] == [17, 17, 17, 16]
    window = partitions(out)["windows"][1]
    for rank in range(2):
        mine = torch.cat(window["partition"][2 * rank: 2 * rank + 2])
        assert window["trained"][rank].tolist() == sorted(mine.tolist())


@pytest.mark.slow
def test_device_resident_data_path_gives_the_same_run(cifar10_dir, tmp_path):
    root, _ = cifar10_dir
    flags = ["--total-epochs", "3", "--warmup-epochs", "2", "--interval-epochs", "1", "--ignore-epochs", "0",
             "--emulate-workers", "2", "--checkpoint-every", "3", "--keep-checkpoint"]
    inprocess(tiny(root, tmp_path / "loader", *flags))
    inprocess(tiny(root, tmp_path / "device", *flags, "--data-on-device"))
    a, b = checkpoint(tmp_path / "loader"), checkpoint(tmp_path / "device")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert torch.equal(a["recorded"]["loss"], b["recorded"]["loss"]) and a["metrics"] == b["metrics"]


@pytest.mark.slow
def test_bf16_autocast_trains(cifar10_dir, tmp_path):
    root, _ = cifar10_dir
    out = tmp_path / "res"
    inprocess(tiny(root, out, "--heuristic", "none", "--total-epochs", "2", "--subset", "40", "--lr", "0.01",
                   "--amp", "bf16", "--data-on-device", "--emulate-workers", "2", "--checkpoint-every", "2",
                   "--keep-checkpoint"))
    state = checkpoint(out)
    assert state["model"]["conv1.weight"].dtype == torch.float32  # master weights stay float32
    assert torch.isfinite(state["recorded"]["loss"]).all() and (state["recorded"]["loss"] > 0).all()
    assert all(torch.isfinite(torch.tensor(e["train_loss"])) for e in only_log(out)["epochs"])
