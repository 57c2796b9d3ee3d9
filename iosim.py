"""I/O trace simulator: what each worker would fetch from shard storage through its local cache.

Replays the samplers training uses (samplers.for_window, epoch by epoch) through a storage model,
without training. CIFAR-sized examples in shards of 100, 4 workers, the paper's schedule (20 warmup
epochs, then intervals of 5) with shard-aware partitions of random scores, by hand:

    python -c "import iosim, heuristics; \
st = iosim.storage(50000, 100, 3072, cache_bytes=40_000_000, policy='partition'); \
w = iosim.scored_windows([(0, 20)] + [(20 + 5 * k, 5) for k in range(16)], 50000, \
lambda order, scores: heuristics.shard_stripes(order, 4, scores, 100)); \
e, m = iosim.simulate(w, 4, st); print(e.groupby('worker')[['requests', 'hits', 'misses', 'bytes']].sum())"

A run's own partitions: `windows, settings = iosim.windows_from_file('<log>.partitions.pt')` (a run
with --save-partitions), then `iosim.simulate(windows, num_workers, st, **settings)`. At any scale,
without training (random scores drawn anew each interval, partitioned as dpt.py would), every
heuristic against vanilla DPT, per epoch after warmup:

    python iosim.py --examples 1281167 --example-bytes 110000 --shard-size 600 --cache 1 \
        --epochs 10 --warmup 2 --interval 2 --heuristics none stripes blocks random sticky-stripes shard-stripes

The storage model (streaming.py's real data path implements the same, and is tested against it):
- Shard k holds examples k*S .. (k+1)*S - 1 (S = shard_size; the last shard may be shorter) and
  is `shard_bytes[k]` bytes as written. A worker fetches and caches whole shards.
- Each worker has its own cache of `cache_bytes`. A request for an example is a hit when its shard
  is cached, else a miss that fetches the shard (so misses = shards fetched).
- policy "lru": shards are evicted least recently used first until the cache holds at most
  cache_bytes (the shard just fetched is never evicted: cache_bytes must hold the largest shard).
- policy "partition": in a window with a fixed partition the worker pins its partition's shards,
  those holding more of its examples first (ties: lower shard index), as many as fit whole in
  cache_bytes minus the largest shard's bytes (`pinned_shards`). Pinned shards are fetched on first
  request and kept for the window. The remaining bytes (at least one shard) are an LRU cache for
  any other shard. At a repartition, shards already cached that the new partition pins stay
  (nothing is fetched again); the other cached shards join the LRU part in the order they were last
  requested, and the oldest are evicted until it fits. In warmup (no partition) this is "lru".

LRU over whole shards needs one step per request in general; the simulator does that as a tight
Python loop over each epoch's runs of requests to shards outside the pinned set, and skips the loop
for an epoch whose shards are all cached at its start (all hits, common with fixed partitions).
50,000 examples x 100 epochs x 4 workers take 2-5 s on one CPU core with shards of 100 (about half
of it the samplers' own shuffles), 3-7 s with one-example shards, where most requests miss.
"""
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import argparse
from pathlib import Path

import catalog as C
import flags

POLICIES = ("lru", "partition")


def build_parser() -> argparse.ArgumentParser:
    p = flags.Parser(prog="iosim.py", description="What each worker would fetch from shard storage, vanilla DPT "
                     "against fixed partitions, at any scale and without training.",
                     formatter_class=flags.HelpFormatter)
    p.add_argument("--examples", type=int, default=50_000, help="examples in the dataset (CIFAR-10: 50,000)")
    p.add_argument("--example-bytes", type=int, default=3072, help="bytes an example takes in its shard")
    p.add_argument("--shard-size", type=int, nargs="+", default=[100], help="examples per shard (several: each)")
    p.add_argument("--cache", type=float, nargs="+", default=[1.0],
                   help="each worker's cache, in n-ths of the dataset's bytes (plus one shard); several: each")
    p.add_argument("--policy", choices=POLICIES, default="partition", metavar="POLICY",
                   help="lru: whole shards, least recently used out; partition: the worker's partition's shards "
                        "pinned for the interval (dpt.py's --cache-policy)")
    p.add_argument("--workers", type=int, default=4, help="n")
    p.add_argument("--epochs", type=int, default=10, help="T")
    p.add_argument("--warmup", type=int, default=2, help="E_warmup: vanilla epochs before the first partition")
    p.add_argument("--interval", type=int, default=2, help="E_interval")
    p.add_argument("--heuristics", nargs="+", default=["none", "stripes", "blocks", "random", "sticky-stripes",
                                                       "shard-stripes"], metavar="NAME",
                   help="none (vanilla DPT) and the heuristics to compare, of: " + ", ".join(
                       h for h, r in C.HEURISTICS.items() if "labels" not in r.needs))
    p.add_argument("--seed", type=int, default=0, help="the scores' and the samplers' seed")
    p.add_argument("--out", help="also write every (setting, heuristic, epoch, worker) row here, as CSV")
    return p


if __name__ == "__main__":
    build_parser().parse_args()  # --help and a typo answered at once, before torch's import

import numpy as np
import pandas as pd
import torch

import heuristics
import results
import samplers
import schedule

Window = tuple[int, int, list[torch.Tensor] | None]  # (first epoch, 0-based; epochs; partition, None in warmup)


@dataclass(frozen=True)
class Storage:
    """The storage parameters, checked (build one with `storage`)."""
    shard_size: int
    example_bytes: np.ndarray  # (N,) int64: an example's bytes (what a move between workers carries)
    shard_bytes: np.ndarray  # (K,) int64: a shard's bytes as written (its examples plus any header)
    cache_bytes: int  # each worker's cache
    policy: str

    @property
    def num_examples(self) -> int:
        return len(self.example_bytes)


def check_shard_size(shard_size: int, num_examples: int) -> None:
    if shard_size < 1:
        raise ValueError(f"shard_size={shard_size}: a shard holds at least 1 example; pass a positive shard size")
    if shard_size > num_examples:
        raise ValueError(f"shard_size={shard_size} is larger than the dataset ({num_examples} examples); "
                         f"pass a shard size of at most {num_examples}")


def storage(num_examples: int, shard_size: int, example_bytes: int | np.ndarray, cache_bytes: int, policy: str,
            shard_bytes: np.ndarray | None = None) -> Storage:
    """Check the storage parameters and build a Storage. `example_bytes` is a constant or one value per
    example; `shard_bytes` defaults to the sum of its examples' bytes (streaming.py passes the sizes
    of the shard files as written instead)."""
    check_shard_size(shard_size, num_examples)
    per_example = np.broadcast_to(np.asarray(example_bytes, dtype=np.int64), (num_examples,)).copy() \
        if np.ndim(example_bytes) == 0 else np.asarray(example_bytes, dtype=np.int64)
    if per_example.shape != (num_examples,) or (per_example < 0).any():
        raise ValueError(f"example_bytes must be one nonnegative number or one per example ({num_examples}); "
                         f"got shape {per_example.shape}")
    num_shards = math.ceil(num_examples / shard_size)
    if shard_bytes is None:
        shard_bytes = np.bincount(np.arange(num_examples) // shard_size, weights=per_example, minlength=num_shards)
    shard_bytes = np.asarray(shard_bytes).astype(np.int64)
    if shard_bytes.shape != (num_shards,) or (shard_bytes < 0).any():
        raise ValueError(
            f"shard_bytes must hold one nonnegative size per shard ({num_shards}); got shape {shard_bytes.shape}"
        )
    if policy not in POLICIES:
        raise ValueError(f"policy={policy!r} is unknown; pass one of {', '.join(POLICIES)}")
    largest = int(shard_bytes.max())
    if cache_bytes < largest or cache_bytes <= 0:
        raise ValueError(f"cache_bytes={cache_bytes} cannot hold one shard (the largest is {largest} bytes); "
                         f"give each worker's cache at least {max(largest, 1)} bytes")
    return Storage(shard_size, per_example, shard_bytes, int(cache_bytes), policy)


def pinned_shards(examples: np.ndarray, st: Storage) -> np.ndarray:
    """The shards policy "partition" pins for a worker holding `examples`: those holding more of them
    first (ties: lower index), the longest such prefix that fits in cache_bytes minus the largest shard."""
    counts = np.bincount(np.asarray(examples) // st.shard_size, minlength=len(st.shard_bytes))
    held = np.flatnonzero(counts)
    ranked = held[np.lexsort((held, -counts[held]))]
    room = st.cache_bytes - int(st.shard_bytes.max())
    return ranked[np.cumsum(st.shard_bytes[ranked]) <= room]


class ShardCache:
    """One worker's cache of whole shards, the one model of both policies: the pinned shards it holds,
    an LRU map (shard -> bytes, least recent first) of the others, and when each shard was last
    requested (a count of requests), which orders the shards a repartition unpins. `request` serves
    one request (streaming.WorkerReader fetches and deletes real files by what it returns); `epoch`
    serves a whole epoch's requests at once (the simulator's fast path, tested equal to `request`)."""

    def __init__(self, st: Storage):
        self.st = st
        self.sizes = st.shard_bytes.tolist()
        self.pinned = np.zeros(len(st.shard_bytes), dtype=bool)
        self.pinned_cached = np.zeros(len(st.shard_bytes), dtype=bool)
        self.cached = np.zeros(len(st.shard_bytes), dtype=bool)  # pinned_cached or in lru
        self.lru: OrderedDict[int, int] = OrderedDict()  # in LRU order unless stale
        self.stale = False  # lru's order lags behind last_use (after all-hit epochs)
        self.used = 0  # bytes in lru
        self.capacity = st.cache_bytes  # what the pinned shards leave for lru
        self.last_use = np.full(len(st.shard_bytes), -1, dtype=np.int64)
        self.clock = 0

    def set_window(self, partition: torch.Tensor | None) -> np.ndarray:
        """Pin the new partition's shards (policy "partition"); the other cached shards go to the LRU
        part, least recently requested first, and the oldest are evicted until they fit. Returns the
        shards evicted."""
        self.pinned[:] = False
        if self.st.policy == "partition" and partition is not None:
            self.pinned[pinned_shards(partition.numpy(), self.st)] = True
        self.capacity = self.st.cache_bytes - int(self.st.shard_bytes[self.pinned].sum())
        self.pinned_cached = self.cached & self.pinned
        loose = np.flatnonzero(self.cached & ~self.pinned)
        loose = loose[np.argsort(-self.last_use[loose])]  # most recent first
        fits = np.cumsum(self.st.shard_bytes[loose]) <= self.capacity
        kept, evicted = loose[fits][::-1], loose[~fits]
        self._set_lru(kept)
        self.cached = self.pinned_cached.copy()
        self.cached[kept] = True
        return evicted

    def _set_lru(self, shards: np.ndarray) -> None:
        self.lru = OrderedDict((s, self.sizes[s]) for s in shards.tolist())
        self.used = int(self.st.shard_bytes[shards].sum())
        self.stale = False

    def _refresh(self) -> None:
        """Put lru back in the order of last use (all-hit epochs skip it)."""
        if self.stale:
            in_lru = np.fromiter(self.lru, dtype=np.int64, count=len(self.lru))
            self._set_lru(in_lru[np.argsort(self.last_use[in_lru])])

    def request(self, shard: int) -> tuple[bool, list[int]]:
        """One request: (whether it hit, the shards evicted to make room for it when it missed)."""
        self.last_use[shard] = self.clock
        self.clock += 1
        if self.pinned[shard]:  # fetched on its first request, then kept for the window
            hit = bool(self.pinned_cached[shard])
            self.pinned_cached[shard] = self.cached[shard] = True
            return hit, []
        self._refresh()
        if shard in self.lru:
            self.lru.move_to_end(shard)
            return True, []
        self.lru[shard] = self.sizes[shard]
        self.used += self.sizes[shard]
        self.cached[shard] = True
        evicted = []
        while self.used > self.capacity:
            old, size = self.lru.popitem(last=False)
            self.used -= size
            self.cached[old] = False
            evicted.append(old)
        return False, evicted

    def epoch(self, shards: np.ndarray) -> tuple[int, int]:
        """Serve one epoch's requests (the shard of each, in order): (hits, bytes fetched)."""
        requested, last_from_end = np.unique(shards[::-1], return_index=True)
        last = len(shards) - 1 - last_from_end  # each requested shard's last position
        pin = self.pinned[shards]
        wanted = requested[self.pinned[requested]]
        fetched = wanted[~self.pinned_cached[wanted]]  # a pinned shard is fetched on its first request, then kept
        self.pinned_cached[fetched] = True
        self.cached[fetched] = True
        hits, fetched_bytes = int(pin.sum()) - len(fetched), int(self.st.shard_bytes[fetched].sum())
        loose = shards[~pin]
        if self.cached[loose].all():  # nothing to fetch, so nothing is evicted: all hits, in a new order
            hits += len(loose)
            self.stale = self.stale or len(loose) > 0
        else:
            self._refresh()
            loose_hits, loose_bytes = self._lru(loose)
            hits += loose_hits
            fetched_bytes += loose_bytes
            self.cached = self.pinned_cached.copy()
            self.cached[np.fromiter(self.lru, dtype=np.int64, count=len(self.lru))] = True
        self.last_use[requested] = self.clock + last
        self.clock += len(shards)
        return hits, fetched_bytes

    def _lru(self, shards: np.ndarray) -> tuple[int, int]:
        """The LRU part over a request sequence: a run of requests to one shard costs at most its first."""
        run_starts = np.flatnonzero(np.r_[True, shards[1:] != shards[:-1]])
        hits, fetched = len(shards) - len(run_starts), 0
        lru, sizes, used, capacity = self.lru, self.sizes, self.used, self.capacity
        move_to_end, evict = lru.move_to_end, lru.popitem
        for s in shards[run_starts].tolist():
            if s in lru:
                move_to_end(s)
                hits += 1
                continue
            size = sizes[s]
            fetched += size
            lru[s] = size
            used += size
            while used > capacity:
                used -= evict(False)[1]
        self.used = used
        return hits, fetched


def simulate(windows: list[Window], num_workers: int, st: Storage, *, shuffle: bool = True, sampler_seed: int = 0,
             seed: int = 0, batch_size: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Replay a run's windows through the storage model.

    Returns (epochs, moves): `epochs` has one row per (epoch, worker) with the requests (padding
    included: it is read like any example), hits, misses (= shards fetched) and bytes fetched;
    `moves` one row per (repartition, worker) with the examples and bytes that left the worker and
    joined it, comparing the last epoch before the window with its first (samplers.assignment).
    `batch_size`: the run's, whose samplers pad a partition to avoid a last batch of one."""
    _check_windows(windows, num_workers, st.num_examples)
    dataset = range(st.num_examples)
    caches = [ShardCache(st) for _ in range(num_workers)]
    epoch_rows, move_rows, before = [], [], None
    for index, (first, length, partition) in enumerate(windows):
        window_samplers = samplers.for_window(dataset, partition, range(num_workers), num_workers, shuffle=shuffle,
                                              sampler_seed=sampler_seed, seed=seed, batch_size=batch_size)
        if before is not None:
            move_rows += _moves(before, samplers.assignment(window_samplers, first), index, first, st.example_bytes,
                                num_workers)
        for w, cache in enumerate(caches):
            cache.set_window(None if partition is None else partition[w])
        for epoch in range(first, first + length):
            for w, (sampler, cache) in enumerate(zip(window_samplers, caches)):
                sampler.set_epoch(epoch)
                shards = np.fromiter(iter(sampler), dtype=np.int64, count=len(sampler)) // st.shard_size
                hits, fetched = cache.epoch(shards)
                epoch_rows.append((epoch, index, w, len(shards), hits, len(shards) - hits, fetched))
        before = samplers.assignment(window_samplers, first + length - 1)
    epochs = pd.DataFrame(epoch_rows, columns=["epoch", "window", "worker", "requests", "hits", "misses", "bytes"])
    moves = pd.DataFrame(
        move_rows, columns=["window", "epoch", "worker", "left", "joined", "left_bytes", "joined_bytes"]
    )
    return epochs, moves


def _moves(before: torch.Tensor, after: torch.Tensor, window: int, epoch: int, example_bytes: np.ndarray,
           num_workers: int) -> list[tuple]:
    left, joined = (mask.numpy() for mask in samplers.movement(before, after, num_workers))
    return [(window, epoch, w, int(left[w].sum()), int(joined[w].sum()), int(example_bytes[left[w]].sum()),
             int(example_bytes[joined[w]].sum())) for w in range(num_workers)]


def _check_windows(windows: list[Window], num_workers: int, num_examples: int) -> None:
    assert windows and windows[0][0] == 0, "windows start at epoch 0"
    for (first, length, _), (following, _, _) in zip(windows, windows[1:]):
        assert following == first + length, "windows follow each other without gaps"
    for _, _, partition in windows:
        if partition is None:
            continue
        if len(partition) != num_workers:
            raise ValueError(f"num_workers={num_workers} but the partitions have {len(partition)} workers; "
                             f"pass num_workers={len(partition)}")
        covered = sum(len(p) for p in partition)
        if covered != num_examples:
            raise ValueError(f"the partitions cover {covered} examples but the storage holds {num_examples}; "
                             f"build the storage with num_examples={covered}")


def windows_from_file(path: str) -> tuple[list[Window], dict]:
    """A run's windows from its --save-partitions file (<log>.partitions.pt), and the sampler
    settings to replay them with (simulate's keyword arguments)."""
    try:
        saved = torch.load(path, weights_only=True)
        args = saved["args"]
        windows = [(w["start_epoch"] - 1, w["epochs"], w["partition"]) for w in saved["windows"]]
    except (OSError, RuntimeError, KeyError, TypeError, EOFError) as err:
        raise ValueError(f"cannot read partitions file {path} ({type(err).__name__}: {err}); pass the "
                         f"<log>.partitions.pt that a run with --save-partitions wrote") from None
    settings = {"shuffle": args["shuffle"] == "yes", "sampler_seed": args["sampler_seed"], "seed": args["seed"],
                "batch_size": args.get("batch_size")}
    return windows, settings


def scored_windows(plan: list[tuple[int, int]], num_examples: int,
                   heuristic: Callable[[torch.Tensor, torch.Tensor], list[torch.Tensor]],
                   scores: torch.Tensor | None = None, seed: int = 0) -> list[Window]:
    """Windows for a plan (dpt.windows: warmup first, then the intervals) whose partitions come from
    `heuristic(sorted_indices, scores) -> Partition` applied to each interval's scores: `scores` of
    shape (N,) for the same scores every interval, (intervals, N) for one row per interval, or None
    for uniform random scores drawn anew each interval from a torch.Generator seeded with `seed`."""
    intervals = len(plan) - 1
    if scores is None:
        scores = torch.rand(intervals, num_examples, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    elif scores.dim() == 1:
        scores = scores.expand(intervals, -1)
    if scores.shape != (intervals, num_examples):
        raise ValueError(f"scores must have shape ({num_examples},) or ({intervals}, {num_examples}) for this plan; "
                         f"got {tuple(scores.shape)}")
    windows = [(plan[0][0], plan[0][1], None)]
    for (first, length), row in zip(plan[1:], scores):
        order = torch.sort(row, descending=True, stable=True).indices
        windows.append((first, length, heuristic(order, row)))
    return windows


def scale_windows(num_examples: int, num_workers: int, plan: list, heuristic: str, shard_size: int,
                  seed: int) -> list[Window]:
    """A run's windows without training: vanilla DPT (heuristic "none": warmup all along), or after the
    plan's warmup a partition per interval by `heuristic` over uniform random scores drawn anew each
    interval (a trained model's scores change between intervals too), with the context dpt.py would
    give it (the previous assignment only where the heuristic reads it)."""
    if heuristic == "none":
        return [(0, sum(w.epochs for w in plan), None)]
    generator = torch.Generator().manual_seed(seed)
    policy = schedule.Policy("average", heuristic, 0, seed)
    windows, partition = [(0, plan[0].epochs, None)], None
    for window in plan[1:]:
        scores = torch.rand(num_examples, generator=generator, dtype=torch.float64)
        before = schedule.assignment(range(num_examples), partition, num_workers, policy, window.first_epoch - 1) \
            if "previous" in C.HEURISTICS[heuristic].needs else None
        order = torch.sort(scores, descending=True, stable=True).indices
        context = heuristics.Context(scores, None, before, window.index, seed, shard_size)
        partition = heuristics.partition(order, num_workers, heuristic, context)
        windows.append((window.first_epoch, window.epochs, partition))
    return windows


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    unknown = [h for h in args.heuristics if h not in C.HEURISTICS or "labels" in C.HEURISTICS[h].needs]
    if unknown:
        flags.die(f"--heuristics {' '.join(unknown)}: not a heuristic the simulator can deal (no labels here); pass "
                  "none or a heuristic of --help's list", "iosim.py")
    if not 0 < args.warmup < args.epochs or not 0 < args.interval <= args.epochs - args.warmup:
        flags.die("the schedule needs 0 < --warmup < --epochs and 0 < --interval <= --epochs - --warmup", "iosim.py")
    plan = schedule.windows(args.epochs, args.warmup, args.interval)
    rows = []
    for shard_size in args.shard_size:
        for cache in args.cache:
            total = args.examples * args.example_bytes
            cache_bytes = int(cache * total / args.workers) + shard_size * args.example_bytes
            try:
                st = storage(args.examples, shard_size, args.example_bytes, cache_bytes, args.policy)
            except ValueError as err:
                flags.die(str(err), "iosim.py")
            for heuristic in args.heuristics:
                why = heuristics.refusal(heuristic, args.examples, args.workers, shard_size)
                if why:
                    flags.die(why, "iosim.py")
                windows = scale_windows(args.examples, args.workers, plan, heuristic, shard_size, args.seed)
                epochs, _ = simulate(windows, args.workers, st, seed=args.seed)
                rows.append(epochs.assign(shard_size=shard_size, cache=cache, heuristic=heuristic))
    frame = pd.concat(rows)
    if args.out:
        try:
            results.write_bytes(Path(args.out), frame.to_csv(index=False).encode())
        except OSError as err:  # a link where --out points (LinkRefused), a full disk
            flags.die(f"cannot write --out {args.out}: {err}", "iosim.py")
    after = frame[frame.epoch >= args.warmup]  # the epochs on fixed partitions (vanilla: the same epochs)
    table = after.groupby(["shard_size", "cache", "heuristic", "epoch"], sort=False)[
        ["requests", "hits", "misses", "bytes"]].sum().groupby(level=[0, 1, 2], sort=False).mean()
    table = table.assign(MiB_per_epoch=table.bytes / 2**20, shard_reads_per_epoch=table.misses,
                         hit_rate=table.hits / table.requests)
    print(f"{args.examples} examples of {args.example_bytes} bytes, {args.workers} workers, {args.policy} caches; "
          f"per epoch after the {args.warmup} warmup epochs, summed over the workers:")
    print(table[["MiB_per_epoch", "shard_reads_per_epoch", "hit_rate"]].round(3).to_string())


if __name__ == "__main__":
    main()
