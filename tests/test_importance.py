import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data.distributed import DistributedSampler

import importance
from samplers import WorkerBatches


@pytest.mark.parametrize("epochs", [1, 2, 5, 15])
def test_measures_match_numpy_float64(epochs):
    rng = np.random.default_rng(epochs)
    window = rng.gamma(2.0, 0.7, size=(5000, epochs))
    got = {name: f(torch.from_numpy(window).float()).double().numpy() for name, f in importance.MEASURES.items()}
    np.testing.assert_allclose(got["average"], window.mean(axis=1), rtol=1e-5, atol=1e-6)
    expected_variance = window.var(axis=1, ddof=1) if epochs > 1 else window.mean(axis=1)
    np.testing.assert_allclose(got["variance"], expected_variance, rtol=1e-4, atol=1e-6)


def test_variance_of_one_column_falls_back_to_average():
    window = torch.rand(100, 1)
    assert torch.equal(importance.variance(window), window[:, 0])


@pytest.mark.parametrize("measure", list(importance.MEASURES))
def test_order_is_descending_and_stable(measure):
    rng = np.random.default_rng(7)
    distinct = rng.gamma(2.0, 0.7, size=(50, 3))
    window = distinct[rng.integers(0, 50, size=2000)]  # exact duplicate rows: many exact ties
    order = importance.order(importance.MEASURES[measure](torch.from_numpy(window).float())).numpy()
    scores = window.mean(1) if measure == "average" else window.var(1, ddof=1)
    # numpy float64 reference: descending score, ties in index order
    np.testing.assert_array_equal(order, np.lexsort((np.arange(len(scores)), -scores)))


def test_record_scatters_by_key_and_sends_padding_to_the_sink():
    m = importance.LossMatrix(num_examples=6, num_epochs=2, device="cpu")
    m.record(torch.tensor([4, 0, 2, 6 + 4]), 0, torch.tensor([1.0, 2.0, 3.0, 99.0]))  # key 10: padding copy of 4
    m.record(torch.tensor([1, 3, 5]), 1, torch.tensor([4.0, 5.0, 6.0]))
    merged = m.merged()
    expected = torch.zeros(6, 2)
    expected[4, 0], expected[0, 0], expected[2, 0] = 1, 2, 3
    expected[1, 1], expected[3, 1], expected[5, 1] = 4, 5, 6
    assert torch.equal(merged, expected)
    assert m.recorded_rows().tolist() == [0, 1, 2, 3, 4, 5]
    assert m.values[6, 0] == 99.0  # the sink row took the padding, and merged() drops it


def test_recorded_rows_are_what_this_process_trained():
    m = importance.LossMatrix(10, 3, "cpu")
    m.record(torch.tensor([7, 2, 13]), 1, torch.rand(3))  # 13 = padding copy of 3
    assert m.recorded_rows().tolist() == [2, 7]


def _merge_worker(rank: int, world: int, init_file: str, n: int, batch: int, out: dict) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    matrix = importance.LossMatrix(n, 2, "cpu")
    for epoch in range(2):
        sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True, seed=0)
        batches = WorkerBatches([sampler], batch)
        batches.set_epoch(epoch)
        for keys in batches:
            keys = torch.tensor(keys)
            # a loss that identifies (example, epoch) and would double if padding counted twice
            matrix.record(keys, epoch, (keys % n).float() + 1000 * epoch + 0.5)
    out[rank] = matrix.merged()
    dist.destroy_process_group()


def test_merge_across_two_ranks_counts_padding_once(tmp_path):
    n, world = 11, 2  # 11 examples on 2 ranks: DistributedSampler pads one duplicate per epoch
    out = mp.Manager().dict()
    mp.spawn(_merge_worker, args=(world, str(tmp_path / "init"), n, 4, out), nprocs=world, join=True)
    expected = torch.stack([torch.arange(n).float() + 0.5, torch.arange(n).float() + 1000.5], dim=1)
    assert torch.equal(out[0], expected)
    assert torch.equal(out[1], expected)  # every rank holds the same merged matrix
