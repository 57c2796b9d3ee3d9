"""The paper's schedule and its repartition: the windows (warmup, then intervals of E_interval epochs),
each worker's sampler in a window, and the partition at each interval's start from the window before
(merge across processes, drop the ignored epochs, score, sort, partition). dpt.py runs on these:

    python -c "import schedule; print(schedule.windows(total=10, warmup=4, interval=2))"

Every process derives the same partition: all hold the same merged signals and every sort is stable.
"""
import time
from argparse import Namespace
from dataclasses import dataclass

import torch

if __package__:  # in the package importance_dpt (pip install): its siblings; from a clone: top-level modules
    from . import heuristics, importance, runlog, samplers
else:
    import heuristics
    import importance
    import runlog
    import samplers


@dataclass(frozen=True)
class Window:
    """The warmup (index 0) or an interval: `epochs` epochs from 0-based epoch `first_epoch`."""
    index: int
    first_epoch: int
    epochs: int

    @property
    def end(self) -> int:
        return self.first_epoch + self.epochs

    def phase(self, heuristic: str) -> str:
        return "vanilla" if heuristic == "none" else "warmup" if self.index == 0 else f"interval {self.index}"


def windows(total: int, warmup: int, interval: int) -> list[Window]:
    """The warmup and each interval, as the paper's code: floor((T - W) / I) intervals after warmup, the
    last running I + (T - W) mod I epochs."""
    plan = [(0, warmup)]
    if warmup < total:
        count = (total - warmup) // interval
        plan += [(warmup + k * interval, interval) for k in range(count)]
        plan[-1] = (plan[-1][0], plan[-1][1] + (total - warmup) % interval)
    assert sum(n for _, n in plan) == total and all(n >= 1 for _, n in plan)
    return [Window(i, first, n) for i, (first, n) in enumerate(plan)]


@dataclass(frozen=True)
class Policy:
    """What the repartitions and the samplers read of a run's settings."""
    measure: str
    heuristic: str
    ignore_epochs: int  # E_ignore: left out when the warmup is scored
    seed: int  # shuffles the fixed partitions; seeds the random control
    sampler_seed: int = 0  # warmup's DistributedSampler (the paper's code left it at 0)
    shuffle: bool = True  # reshuffle each fixed partition every epoch
    batch_size: int | None = None  # per worker (ConstantSampler's padding to whole batches)

    @staticmethod
    def of(args: Namespace) -> "Policy":
        return Policy(args.measure, args.heuristic, args.ignore_epochs, args.seed, args.sampler_seed,
                      args.shuffle == "yes", args.batch_size)


def worker_samplers(dataset, partition: heuristics.Partition | None, workers: range, num_workers: int,
                    policy: Policy) -> list:
    """The samplers of `workers`: random slices every epoch in warmup (vanilla DPT), then their fixed
    partitions, shuffled from the run's seed as the paper's code did."""
    return samplers.for_window(dataset, partition, workers, num_workers, shuffle=policy.shuffle,
                               sampler_seed=policy.sampler_seed, seed=policy.seed, batch_size=policy.batch_size)


@dataclass(frozen=True)
class Repartition:
    scores: torch.Tensor  # (N,) importance, on the recorder's device
    partition: heuristics.Partition
    history: importance.History | None  # the run's per-example statistics after the window (forgetting's counts)
    seconds: float


def repartition(recorder: importance.Recorder, window: Window, history: importance.History | None, policy: Policy,
                num_workers: int, labels: torch.Tensor | None = None, before: torch.Tensor | None = None,
                shard_size: int | None = None, scored: dict | None = None) -> Repartition:
    """The partition for `window` from the window before, as recorded in `recorder`: merged across
    processes, scored, sorted and partitioned. The first E_ignore columns are dropped only when scoring
    the warmup (for window 1), as the paper's code did; later intervals are scored whole. `history`:
    the run's statistics before the window, advanced by all of it; `scored`: what a scoring pass found,
    one column per signal; `labels` and `before` (who trained each example last) for the heuristics
    that read them."""
    assert window.index >= 1, "the warmup trains on random slices, not a partition"
    start = time.perf_counter()
    ignore = policy.ignore_epochs if window.index == 1 else 0
    merged = recorder.merged()
    history = importance.advance(history, merged)
    scoring = {c: m[:, ignore:] for c, m in merged.items()} | {c: v[:, None] for c, v in (scored or {}).items()}
    scores, order = importance.rank(policy.measure, scoring, history)
    context = heuristics.Context(scores.cpu(), labels, before, window.index, policy.seed, shard_size)
    parts = heuristics.partition(order.cpu(), num_workers, policy.heuristic, context)
    return Repartition(scores, parts, history, time.perf_counter() - start)


def movement(before: torch.Tensor, after: heuristics.Partition) -> runlog.Movement:
    """Per worker, how many examples left its partition and how many joined, against `before` (the
    worker that trained each example in the last epoch)."""
    now = torch.empty_like(before)
    for w, part in enumerate(after):
        now[part] = w
    left, joined = samplers.movement(before, now, len(after))
    return runlog.Movement(left.sum(dim=1).tolist(), joined.sum(dim=1).tolist(), int(joined.sum()))


def trained(dataset, window: Window, partition: heuristics.Partition | None, top, policy: Policy) -> torch.Tensor:
    """What this process's workers (of `top`, a topology.Topology) trained on in `window`: replayed from
    their samplers, which alone decide it."""
    mine = worker_samplers(dataset, partition, top.mine, top.workers, policy)
    return samplers.trained(mine, range(window.first_epoch, window.end))


def assignment(dataset, partition: heuristics.Partition | None, num_workers: int, policy: Policy,
               epoch: int) -> torch.Tensor:
    """(N,) the worker that trained each example in `epoch` (under `partition`, None in warmup)."""
    return samplers.assignment(worker_samplers(dataset, partition, range(num_workers), num_workers, policy), epoch)
