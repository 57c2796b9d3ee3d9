"""Which examples each worker trains on: DistributedSampler in warmup, ConstantSampler after.

dpt.py builds one sampler per worker that its process hosts (one under plain DDP, several with
--emulate-workers) and hands them to WorkerBatches; by hand:

    python -c "import torch, samplers as S; d = range(10); p = [torch.arange(0, 10, 2), torch.arange(1, 10, 2)]; \
print(list(S.ConstantSampler(d, p, num_replicas=2, rank=1, seed=0)))"

Which examples a worker sees is decided here, never in the training step, so the same samplers
serve DDP ranks and workers emulated in one process.
"""
import math
import random
from collections.abc import Iterable, Iterator, Sized

import torch
from torch.utils.data.distributed import DistributedSampler


class ConstantSampler(DistributedSampler):
    """Serves worker `rank` the same partition every epoch (importance-aware DPT after warmup).

    `partitions` holds every worker's index list, so all workers agree on the step count: each
    list is padded with its own examples up to the longest (ceil(N/n) for Stripes and Blocks),
    because DDP hangs when ranks run different numbers of steps. With shuffle, the order within
    the partition is redrawn each epoch exactly as the paper's code did: Python's `random` seeded
    with seed + epoch (dpt.py passes the run's --seed, and set_epoch the 0-based epoch), shuffling
    a copy of the list. Every rank is seeded alike, so all workers permute their (equal-length)
    lists the same way, as in the paper's code. With `batch_size`, a padded length that would leave a
    last batch of one example gets one more padding copy: training-mode BatchNorm cannot normalize a
    batch of one (only partitions of unequal sizes, e.g. whole shards, can come to that; the lengths of
    the paper's partitions are checked before training).
    """

    def __init__(self, dataset: Sized, partitions: list[torch.Tensor], num_replicas: int, rank: int,
                 shuffle: bool = True, seed: int = 0, batch_size: int | None = None):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        assert len(partitions) == num_replicas, "one partition per worker"
        assert all(len(p) > 0 for p in partitions), "every worker needs at least one example"
        self.partition = partitions[rank].tolist()
        self.num_samples = max(len(p) for p in partitions)
        if batch_size and self.num_samples > 1 and self.num_samples % batch_size == 1:
            self.num_samples += 1
        self.total_size = self.num_samples * num_replicas

    def __iter__(self) -> Iterator[int]:
        order = list(self.partition)
        if self.shuffle:
            random.Random(self.seed + self.epoch).shuffle(order)  # = random.seed(seed + epoch); random.shuffle
        padding = self.num_samples - len(order)
        order = order + (order * math.ceil(padding / len(order)))[:padding]
        assert len(order) == self.num_samples
        return iter(order)


def for_window(dataset: Sized, partition: list[torch.Tensor] | None, workers: Iterable[int], num_workers: int, *,
               shuffle: bool, sampler_seed: int, seed: int, batch_size: int | None = None) -> list[DistributedSampler]:
    """The samplers of `workers` (of `num_workers`) for one window, as training uses them and the I/O
    simulator replays them. Warmup (partition None): DistributedSampler, vanilla DPT's fresh random
    slice every epoch, seeded with `sampler_seed` (the paper's code left it at its default 0 for every
    run). After: a ConstantSampler per worker over its fixed partition, shuffled from the run's `seed`
    (`batch_size`: see ConstantSampler)."""
    if partition is None:
        return [DistributedSampler(dataset, num_replicas=num_workers, rank=w, shuffle=True, seed=sampler_seed)
                for w in workers]
    return [ConstantSampler(dataset, partition, num_replicas=num_workers, rank=w, shuffle=shuffle, seed=seed,
                            batch_size=batch_size) for w in workers]


def assignment(samplers: list[DistributedSampler], epoch: int) -> torch.Tensor:
    """Which worker trains each example in `epoch`, from all workers' samplers (padding left out):
    an (N,) int64 tensor of worker ids. For a ConstantSampler window it is the partition itself."""
    owner = torch.full((len(samplers[0].dataset),), -1, dtype=torch.int64)
    for w, s in enumerate(samplers):
        s.set_epoch(epoch)
        owner[torch.tensor(list(s)[:num_real(s)], dtype=torch.int64)] = w
    assert (owner >= 0).all(), "every example belongs to one worker"
    return owner


def trained(samplers: list[DistributedSampler], epochs: Iterable[int]) -> torch.Tensor:
    """The examples (padding left out) that `samplers`' workers trained on in `epochs`, sorted."""
    rows = [torch.empty(0, dtype=torch.int64)]
    for epoch in epochs:
        for s in samplers:
            s.set_epoch(epoch)
            rows.append(torch.tensor(list(s)[:num_real(s)], dtype=torch.int64))
    return torch.cat(rows).unique()


def movement(before: torch.Tensor, after: torch.Tensor, num_workers: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per worker, which examples left it and which joined it between two assignments (as
    `assignment` gives them): two (num_workers, N) boolean masks."""
    workers = torch.arange(num_workers)[:, None]
    mine_before, mine_after = before[None, :] == workers, after[None, :] == workers
    return mine_before & ~mine_after, mine_after & ~mine_before


def num_real(sampler: DistributedSampler) -> int:
    """How many of the sampler's samples per epoch are real; the rest, at the end, are padding.

    DistributedSampler pads its permutation with its first examples and deals position p to rank
    p mod n, so the padding positions (p >= N) come last in a rank's list; ConstantSampler pads
    after its partition."""
    if isinstance(sampler, ConstantSampler):
        return len(sampler.partition)
    assert not sampler.drop_last
    return len(range(sampler.rank, len(sampler.dataset), sampler.num_replicas))


def keys(sampler: DistributedSampler) -> torch.Tensor:
    """The sampler's epoch as int64 keys: an example's index, or index + N for a padding copy (trained
    on like any example, never recorded in the loss matrix a second time)."""
    row = torch.tensor(list(sampler), dtype=torch.int64)
    row[num_real(sampler):] += len(sampler.dataset)
    return row


class WorkerBatches:
    """One step's keys: the next `batch_size` samples of each local worker, concatenated worker by
    worker (what one DDP rank sees, or a group of emulated workers).

    A key is an example index, or index + N for a padding copy: padding is trained on like any
    example but must not be recorded in the loss matrix a second time. Usable as a DataLoader
    batch_sampler; `keys()` gives the whole epoch at once for the device-resident path.
    """

    def __init__(self, samplers: list[DistributedSampler], batch_size: int):
        assert samplers and batch_size >= 1
        lengths = {len(s) for s in samplers}
        assert len(lengths) == 1, f"workers would run different step counts: {sorted(lengths)}"
        self.samplers = samplers
        self.batch_size = batch_size
        self.samples_per_worker = lengths.pop()

    def set_epoch(self, epoch: int) -> None:
        for s in self.samplers:
            s.set_epoch(epoch)

    def keys(self) -> torch.Tensor:
        """(workers, samples per worker) int64 keys for the current epoch."""
        return torch.stack([keys(s) for s in self.samplers])

    def __len__(self) -> int:
        return math.ceil(self.samples_per_worker / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        keys = self.keys()
        for step in range(len(self)):
            yield keys[:, step * self.batch_size:(step + 1) * self.batch_size].reshape(-1).tolist()
