"""Partitioning heuristics: (examples sorted by importance, number of workers) -> one index list per worker.

Used by dpt.py at the start of every interval; try them by hand with

    python -c "import torch, heuristics as H; print(H.HEURISTICS['stripes'](torch.arange(8), 4)); \
print(H.partition(torch.arange(8), 4, 'random', H.Context(None, None, None, interval=1, seed=0)))"

The sorted order comes first, most important first, as the paper's code sorts. A new heuristic is a
function (sorted_indices, num_workers) -> Partition, or (sorted_indices, num_workers, context) ->
Partition when it needs more (scores, labels, the previous assignment, the interval, the seed: one
Context value), registered with `@HEURISTICS.register(name)`, plus its record in catalog.HEURISTICS
(whose `needs` names the Context fields it reads).
`partition` checks that every example is placed exactly once and that sizes differ by at most one.
"""
import heapq
import math
from dataclasses import dataclass

import torch

if __package__:  # in the package importance_dpt (pip install): its siblings; from a clone: top-level modules
    from . import catalog as C
else:
    import catalog as C

Partition = list[torch.Tensor]  # worker w trains on the example indices in partition[w]
# What each heuristic reads beyond the order is its record's `needs` in catalog.HEURISTICS.
HEURISTICS = C.Registry(C.HEURISTICS, "heuristic", exempt=("none",), make=lambda function, check=None: checked(function,
                                                                                                      check))


def checked(function, check=None):
    """A heuristic with its up-front check against the data and the workers, (N, n, shard size) -> why
    not, or None (dpt.py refuses the run before it starts)."""
    function.check = check
    return function


@dataclass(frozen=True)
class Context:
    """What a heuristic may need beyond the sorted order. Tensors are indexed by example, not by
    sorted position, and live on the CPU, like the sorted order."""
    scores: torch.Tensor | None  # (N,) importance of each example
    labels: torch.Tensor | None  # (N,) int64 class of each example; None for text
    previous: torch.Tensor | None  # (N,) int64 worker that trained each example last, before this partition (-1: none)
    interval: int  # 1-based index of the interval this partition is for
    seed: int  # the run's seed
    shard_size: int | None = None  # examples per storage shard (shard-stripes)


def sizes(num_examples: int, num_workers: int) -> list[int]:
    """Equal sizes up to one: the first N mod n workers get one example more."""
    return [num_examples // num_workers + (w < num_examples % num_workers) for w in range(num_workers)]


@HEURISTICS.register("stripes")
def stripes(sorted_indices: torch.Tensor, num_workers: int) -> Partition:
    """The paper's Stripes ("roundrobin" in its code): sorted position p goes to worker p mod n,
    so every worker sees the same spread of importance."""
    return [sorted_indices[w::num_workers].clone() for w in range(num_workers)]


@HEURISTICS.register("blocks")
def blocks(sorted_indices: torch.Tensor, num_workers: int) -> Partition:
    """The paper's Blocks ("steps" in its code): contiguous runs of the sorted list.

    The paper's code gave each worker floor(N/n) positions and dropped the N mod n least
    important examples; here the first N mod n workers get one example more, so nothing is
    dropped (ConstantSampler pads the shorter ones to equal step counts)."""
    return [chunk.clone() for chunk in torch.split(sorted_indices, sizes(len(sorted_indices), num_workers))]


def by_worker(sorted_indices: torch.Tensor, worker: torch.Tensor, num_workers: int) -> Partition:
    """The partition that gives sorted position p to worker[p], each list in sorted order."""
    return [sorted_indices[worker == w] for w in range(num_workers)]


@HEURISTICS.register("random")
def random_partition(sorted_indices: torch.Tensor, num_workers: int, context: Context) -> Partition:
    """A random partition that ignores importance (the control for "fixed partitions" against
    "importance"): the examples in a random order drawn from a torch.Generator seeded with
    (seed, interval), cut into blocks. A new one every interval, the same on every process and in
    every run with the same seed, whatever the measure. Source: this project (a control)."""
    examples = torch.sort(sorted_indices).values  # forget the order: only the set of examples counts
    # distinct (seed, interval) pairs seed distinct generators (for intervals below 1,000,003)
    generator = torch.Generator().manual_seed(context.seed * 1_000_003 + context.interval)
    return blocks(examples[torch.randperm(len(examples), generator=generator)], num_workers)


@HEURISTICS.register("snake")
def snake(sorted_indices: torch.Tensor, num_workers: int) -> Partition:
    """Stripes in boustrophedon order: round r = p // n of sorted positions goes to workers 0..n-1
    when r is even and n-1..0 when r is odd, so no worker always gets its round's largest score.

    For nonnegative scores sorted descending, the spread (max - min) of per-worker score sums is
    never larger than Stripes': Stripes' spread is the sum over rounds of each round's range (worker
    0 takes every round's largest, worker n-1 its smallest, or nothing in a partial last round,
    i.e. 0 <= any score), and any two workers' sums under any per-round assignment differ by at
    most that sum (triangle inequality). Source: the serpentine draft order, applied to Stripes here."""
    position = torch.arange(len(sorted_indices))
    slot, odd_round = position % num_workers, (position // num_workers) % 2 == 1
    return by_worker(sorted_indices, torch.where(odd_round, num_workers - 1 - slot, slot), num_workers)


@HEURISTICS.register("balance")
def balance(sorted_indices: torch.Tensor, num_workers: int, context: Context) -> Partition:
    """Greedy longest-processing-time assignment with equal sizes: in sorted (descending score)
    order, each example goes to the non-full worker with the smallest score sum so far (ties: the
    lowest worker id); worker w holds at most N // n + (w < N mod n) examples. Per-worker score sums
    end up close. Source: Graham's longest-processing-time rule (SIAM J. Appl. Math., 1969), with
    the capacities that keep sizes equal.

    Sequential by nature: a heap over the workers, O(N log n) (50,000 examples: tens of ms)."""
    scores = context.scores[sorted_indices].double()
    assert bool((scores[1:] <= scores[:-1]).all()), "balance needs sorted_indices in descending score order"
    capacity = sizes(len(sorted_indices), num_workers)
    heap = [(0.0, w) for w in range(num_workers)]  # (score sum, worker): the smallest sum, then the lowest id
    worker = [0] * len(sorted_indices)
    count = [0] * num_workers
    for position, score in enumerate(scores.tolist()):
        total, w = heapq.heappop(heap)
        worker[position] = w
        count[w] += 1
        if count[w] < capacity[w]:
            heapq.heappush(heap, (total + score, w))
    return by_worker(sorted_indices, torch.tensor(worker), num_workers)


@HEURISTICS.register("class-stripes")
def class_stripes(sorted_indices: torch.Tensor, num_workers: int, context: Context) -> Partition:
    """Stripes within each class: the sorted order stably re-sorted by label (classes in label order,
    importance order within each), then dealt round robin, continuing across classes. Each class is
    a contiguous run, so every worker gets floor or ceil of each class's count / n (the same class
    mix), a Stripes spread of importance within the class, and total sizes differing by at most one.
    Source: this project (stratified Stripes)."""
    by_label = torch.sort(context.labels[sorted_indices], stable=True).indices
    return stripes(sorted_indices[by_label], num_workers)


@HEURISTICS.register("blocks-rotate")
def blocks_rotate(sorted_indices: torch.Tensor, num_workers: int, context: Context) -> Partition:
    """Blocks whose block-to-worker map rotates each interval: worker w gets block
    (w + interval) mod n. DDP keeps rank 0's BatchNorm buffers (running statistics), so under plain
    Blocks rank 0 would always hold the same block of importance; rotating shares that role out.
    Source: this project."""
    parts = blocks(sorted_indices, num_workers)
    return [parts[(w + context.interval) % num_workers] for w in range(num_workers)]


@HEURISTICS.register("sticky-stripes")
def sticky_stripes(sorted_indices: torch.Tensor, num_workers: int, context: Context) -> Partition:
    """Stripes' guarantee, moving as few examples as it can. Sorted positions form groups of n
    (positions gn .. gn+n-1); every worker gets exactly one example of each full group, and the last
    partial group's examples go to distinct workers, so sizes differ by at most one and every worker
    gets the same spread of importance, as with Stripes. Within a group, the assignment keeps the
    most examples on their previous worker (a maximum matching: each example wants one worker, so it
    keeps the first, most important, example of the group for each previous worker); the others go,
    in sorted order, to the group's free workers in increasing id. With no previous worker (all -1)
    this is Stripes exactly. Source: this project (fewer examples to move or re-cache per interval).

    Vectorized over all groups at once: the positions as a (groups x n) matrix."""
    n, total = num_workers, len(sorted_indices)
    groups = -(-total // n)
    pad = groups * n - total
    previous = torch.cat([context.previous[sorted_indices], torch.full((pad,), -1, dtype=torch.int64)]).view(groups, n)
    present = (torch.arange(groups * n) < total).view(groups, n)
    wanted = previous >= 0
    # the first position of each (group, previous worker): amin of the slot over group * n + worker
    slot = torch.arange(n).expand(groups, n)
    key = torch.arange(groups)[:, None] * n + previous.clamp(min=0)
    first = torch.full((groups * n,), n, dtype=torch.int64)
    first.scatter_reduce_(0, key[wanted], slot[wanted], reduce="amin")
    kept = wanted & (first[key] == slot)
    taken = torch.zeros(groups, n, dtype=torch.bool)
    taken[torch.arange(groups)[:, None].expand(groups, n)[kept], previous[kept]] = True
    free_workers = torch.sort(taken.to(torch.uint8), dim=1, stable=True).indices  # free ids first, ascending
    moved = present & ~kept
    worker = torch.where(kept, previous, free_workers.gather(1, (moved.cumsum(dim=1) - 1).clamp(min=0)))
    return by_worker(sorted_indices, worker.view(-1)[:total], n)


def shard_stripes(sorted_indices: torch.Tensor, num_workers: int, scores: torch.Tensor, shard_size: int) -> Partition:
    """Stripes over whole shards: shards (S consecutive example indices) ranked by the mean score of
    their examples, most important first (stable: ties keep shard order), and dealt round robin, so
    each worker gets whole shards and a similar importance mix, and caches or fetches a shard only
    if it is its own. A short last shard (N mod S examples) is dealt last, after the full ones, so
    partition sizes differ by at most S examples (one shard). Each worker's examples are listed in
    `sorted_indices` order (most important first). Source: this project (the I/O study): with a
    worker's cache pinned to its partition, each shard is fetched by one worker, once per interval."""
    total = len(sorted_indices)
    assert scores.shape == (total,), "one score per example"
    num_shards = math.ceil(total / shard_size)
    if num_shards < num_workers:
        raise ValueError(f"shard_size={shard_size} leaves {num_shards} shards for {num_workers} workers; "
                         f"pass a shard size of at most {total // num_workers}")
    shard = torch.arange(total) // shard_size
    means = torch.zeros(num_shards, dtype=torch.float64).index_add_(0, shard, scores.double()) / torch.bincount(shard)
    full = total // shard_size
    ranked = torch.cat([torch.sort(means[:full], descending=True, stable=True).indices, torch.arange(full, num_shards)])
    owner = torch.empty(num_shards, dtype=torch.int64)
    owner[ranked] = torch.arange(num_shards) % num_workers
    example_owner = owner[shard][sorted_indices]
    return [sorted_indices[example_owner == w] for w in range(num_workers)]


def too_few_shards(num_examples: int, num_workers: int, shard_size: int) -> str | None:
    """Why shard-stripes cannot deal these examples (fewer whole shards than workers), or None."""
    shards = math.ceil(num_examples / shard_size)
    if shards >= num_workers:
        return None
    return (f"--heuristic shard-stripes deals whole shards, and {num_examples} examples make {shards} shards for "
            f"{num_workers} workers; pass a --shard-size of at most {num_examples // num_workers}")


@HEURISTICS.register("shard-stripes", check=too_few_shards)
def shard_aware(sorted_indices: torch.Tensor, num_workers: int, context: Context) -> Partition:
    return shard_stripes(sorted_indices, num_workers, context.scores, context.shard_size)


HEURISTICS.complete()


def refusal(heuristic: str, num_examples: int, num_workers: int, shard_size: int) -> str | None:
    check = HEURISTICS[heuristic].check if heuristic in HEURISTICS else None
    return check(num_examples, num_workers, shard_size) if check else None


def partition(
    sorted_indices: torch.Tensor, num_workers: int, heuristic: str, context: Context | None = None
) -> Partition:
    """Apply a registered heuristic (with `context` when its catalog record says it reads one) and check
    that every example is placed exactly once and that partition sizes differ by at most one."""
    needs = C.HEURISTICS[heuristic].needs
    if needs:
        missing = sorted(f for f in needs if context is None or getattr(context, f) is None)
        if missing:
            raise ValueError(f"--heuristic {heuristic} needs {', '.join(missing)}, which this run does not have; "
                             f"pick a heuristic that does not (e.g. stripes)")
        for field in needs & {"scores", "labels", "previous"}:
            value = getattr(context, field)
            assert value.shape == (len(sorted_indices),) and value.device.type == "cpu", (
                f"context.{field}: one value per example, on the CPU"
            )
        if "previous" in needs:
            assert bool((context.previous >= -1).all() and (context.previous < num_workers).all())
        parts = HEURISTICS[heuristic](sorted_indices, num_workers, context)
    else:
        parts = HEURISTICS[heuristic](sorted_indices, num_workers)
    assert len(parts) == num_workers
    placed = torch.sort(torch.cat(parts)).values
    assert torch.equal(placed, torch.sort(sorted_indices).values), "a heuristic must place every example once"
    lengths = [len(p) for p in parts]
    slack = context.shard_size if "shard_size" in needs else 1  # whole shards: up to one shard apart
    assert max(lengths) - min(lengths) <= slack, f"partition sizes must differ by at most {slack}"
    return parts
