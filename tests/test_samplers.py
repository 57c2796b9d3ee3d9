import math
from collections import Counter

import pytest
import torch
from torch.utils.data.distributed import DistributedSampler

import heuristics
from samplers import ConstantSampler, WorkerBatches, num_real, trained


def constant_samplers(n: int, workers: int, heuristic: str = "blocks", shuffle: bool = True, seed: int = 0):
    order = torch.randperm(n, generator=torch.Generator().manual_seed(5))
    parts = heuristics.partition(order, workers, heuristic)
    return parts, [
        ConstantSampler(range(n), parts, num_replicas=workers, rank=w, shuffle=shuffle, seed=seed)
        for w in range(workers)
    ]


def test_is_a_distributed_sampler():
    assert issubclass(ConstantSampler, DistributedSampler)


@pytest.mark.parametrize("n,workers", [(10, 4), (12, 4), (1001, 3), (5, 5)])
def test_equal_lengths_and_padding_with_own_examples(n, workers):
    parts, samplers = constant_samplers(n, workers)
    assert {len(s) for s in samplers} == {math.ceil(n / workers)}
    for part, sampler in zip(parts, samplers):
        served = list(sampler)
        assert len(served) == len(sampler)
        assert set(served) == set(part.tolist())  # padding repeats the worker's own examples only
        assert Counter(served[:num_real(sampler)]) == Counter(part.tolist())  # each real example once, first


def test_reshuffles_per_epoch_and_is_deterministic():
    parts, samplers = constant_samplers(200, 4, "stripes")
    s = samplers[1]
    s.set_epoch(3)
    first = list(s)
    assert list(s) == first  # same epoch, same order
    again = ConstantSampler(range(200), parts, num_replicas=4, rank=1, seed=0)
    again.set_epoch(3)
    assert list(again) == first  # a fresh sampler with the same seed agrees
    s.set_epoch(4)
    assert list(s) != first and sorted(list(s)) == sorted(first)
    other_seed = ConstantSampler(range(200), parts, num_replicas=4, rank=1, seed=1)
    other_seed.set_epoch(3)
    assert list(other_seed) != first


def test_no_shuffle_serves_the_partition_in_order():
    parts, samplers = constant_samplers(10, 4, shuffle=False)
    for epoch in range(3):
        samplers[2].set_epoch(epoch)
        assert list(samplers[2])[: len(parts[2])] == parts[2].tolist()


def test_all_workers_permute_alike_as_the_papers_code():
    """Every rank seeds its shuffle with seed + epoch: equal-length partitions get the same permutation."""
    parts, samplers = constant_samplers(400, 4, "stripes")
    positions = []
    for part, s in zip(parts, samplers):
        s.set_epoch(7)
        where = {e: i for i, e in enumerate(part.tolist())}
        positions.append([where[e] for e in s])
    assert all(p == positions[0] for p in positions)


@pytest.mark.parametrize("n,workers", [(11, 2), (10, 4), (7, 3), (3, 4)])
def test_num_real_marks_distributed_sampler_padding(n, workers):
    """Reference: DistributedSampler pads the permutation to a multiple of n and deals positions."""
    for epoch in range(2):
        seen = Counter()
        for w in range(workers):
            s = DistributedSampler(range(n), num_replicas=workers, rank=w, shuffle=True, seed=0)
            s.set_epoch(epoch)
            served = list(s)
            g = torch.Generator()
            g.manual_seed(epoch)
            perm = torch.randperm(n, generator=g).tolist()
            padded = (perm * math.ceil(len(s) * workers / n))[: len(s) * workers]
            mine = list(range(w, len(padded), workers))
            assert served == [padded[p] for p in mine]
            assert num_real(s) == sum(p < n for p in mine)
            seen.update(served[: num_real(s)])
        assert seen == Counter(range(n))  # the real samples cover every example exactly once


def test_worker_batches_concatenate_each_workers_next_batch():
    n, workers, batch = 23, 3, 4
    samplers = [DistributedSampler(range(n), num_replicas=workers, rank=w, seed=0) for w in range(workers)]
    batches = WorkerBatches(samplers, batch)
    batches.set_epoch(2)
    steps = list(batches)
    assert len(steps) == len(batches) == math.ceil(math.ceil(n / workers) / batch)
    streams = [list(s) for s in samplers]
    for step, keys in enumerate(steps):
        expected = []
        for w, stream in enumerate(streams):
            for pos in range(step * batch, min((step + 1) * batch, len(stream))):
                expected.append(stream[pos] + (n if pos >= num_real(samplers[w]) else 0))
        assert keys == expected
    real = [k for keys in steps for k in keys if k < n]
    assert sorted(real) == list(range(n))  # one epoch: every example once, padding marked >= n


def test_worker_batches_refuse_unequal_step_counts():
    a = DistributedSampler(range(10), num_replicas=2, rank=0)
    b = DistributedSampler(range(12), num_replicas=2, rank=1)
    with pytest.raises(AssertionError, match="different step counts"):
        WorkerBatches([a, b], 4)


def test_padding_never_leaves_a_last_batch_of_one():
    """Unequal partitions (whole shards) pad to the longest; a length of k * batch + 1 gets one more copy."""
    parts = [torch.arange(0, 21), torch.arange(21, 30)]  # 21 = 2 x 10 + 1
    for batch_size, expected in ((10, 22), (8, 21), (None, 21)):
        samplers = [ConstantSampler(range(30), parts, num_replicas=2, rank=w, batch_size=batch_size) for w in range(2)]
        assert {len(s) for s in samplers} == {expected}
        for part, s in zip(parts, samplers):
            served = list(s)
            assert len(served) == expected and set(served) == set(part.tolist())
            assert sorted(served[:num_real(s)]) == part.tolist()  # each real example once, first


def test_trained_is_what_the_workers_served_without_padding():
    """10 examples over 3 workers: ranks 1 and 2 end each epoch with a padding copy of another
    rank's example, which they train on but which is not theirs."""
    everyone = [DistributedSampler(range(10), num_replicas=3, rank=w, shuffle=True, seed=5) for w in range(3)]
    for epoch in (0, 3):
        mine = []
        for s in everyone:
            s.set_epoch(epoch)
            served = list(s)
            mine.append(trained([s], [epoch]).tolist())
            assert mine[-1] == sorted(served[: len(range(s.rank, 10, 3))])  # real samples come first
            assert len(set(served) - set(mine[-1])) == (s.rank > 0)  # a padding copy served, not counted
        assert sorted(sum(mine, [])) == list(range(10))  # disjoint, every example once
    both = set(trained(everyone[:1], [0]).tolist()) | set(trained(everyone[:1], [3]).tolist())
    assert trained(everyone[:1], [0, 3]).tolist() == sorted(both)  # over epochs: the union
    parts = [torch.tensor([9, 0, 4]), torch.tensor([7, 1])]  # worker 1 pads with a copy of its own
    fixed = [ConstantSampler(range(10), parts, num_replicas=2, rank=w) for w in range(2)]
    assert [trained([s], range(3)).tolist() for s in fixed] == [[0, 4, 9], [1, 7]]
    assert trained(fixed, []).tolist() == []
