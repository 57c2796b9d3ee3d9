"""Gradient sparsification reducers: ExDyna (Yoon & Oh, CCGrid 2024) and its baselines.

One code path serves two uses. Emulation, n workers in one process, one bucket's gradients as
an (n, d) tensor:

    state = reducers.make_state("exdyna", density=0.001, num_workers=4)
    update = reducers.reduce(state, grads)          # (d,): what every worker applies
    stats = state.take_stats()                      # once per epoch: means over its steps

DDP, one worker per rank (dpt.py: --reducer NAME --density RHO):

    state = reducers.make_state("exdyna", 0.001, dist.get_world_size(), workers=[dist.get_rank()])
    ddp_model.register_comm_hook(state, reducers.hook)

and on its own, one worker's selection from a flat vector (bench.py times it against topk):

    python -c "import torch, reducers; s = reducers.make_state('exdyna', 0.001, 4); \
print(reducers.select(s, torch.randn(2**20)))"

ExDyna on one bucket's flat gradient g, every step: a = g + e (error feedback); the vector is
cut into NUM_BLOCKS blocks grouped into n contiguous partitions; partitions rotate over the
workers (worker w takes partition (step + w) mod n); each worker selects, inside its own
partition only, the entries with |a| >= lambda (one fixed entry when none passes, so no worker
sends nothing); the workers exchange their indices (disjoint by construction) and the sum of a
over the workers on their union; the update is that sum / n on the union, zero elsewhere; the
residual e is a with the union zeroed. After the step, lambda is scaled by the ratio of the
selected count to k = rho * d (online threshold scaling), and a block moves from a partition
whose worker selected too much to a neighbour whose worker selected too little (dynamic partition
allocation), never leaving a partition with less than 1/MIN_BLOCKS_DIVISOR of an equal share.
Under a DDP hook the first start_step steps (default MIN_START_STEP = 2) are averaged densely, as
PyTorch's PowerSGD hook does, because DDP rebuilds its buckets after the first step; the
emulation has no buckets to rebuild and is sparse from the first step, as the authors' code.

The baselines share the exchange, each one record in catalog.REDUCERS (docs/measures.md's reducer
table, generated from them, says what each sends and where it comes from); all use error feedback.

Constants (the authors' code is kljp/exdyna, ncf/gradient_reducers.py, and cnn-lstm/run.py):

| here                 | value      | authors' code                                                     |
|----------------------|------------|-------------------------------------------------------------------|
| C.DEFAULT_DENSITY    | 0.01       | run.py --comp_ratio default (their run.sh passes 0.001)           |
| error feedback       | on         | run.py: memory on unless --no_memory                              |
| k                    | int(rho*d) | int(compression * sz_grad); here at least 1 (at k = 0 theirs divides |
|                      |            | by 0 in ExDyna, MiCRO and threshold, whose 1/(2 sqrt k) needs k > 0)|
| initial threshold    | 1/(2 sqrt k) | ExDyna, MiCRO, Thresh: 1.0 / (2.0 * math.sqrt(k))               |
| NUM_BLOCKS           | 1024       | ExDynaReducer.num_blk                                             |
| BLOCK_ALIGN          | 32         | sz_blk = a - a % 32, a = d // num_blk; the tail to the last part  |
| MIN_BLOCKS_DIVISOR   | 4          | min_blk = num_blk / (n * 4)                                       |
| BLOCKS_MOVED         | 1          | blk_move                                                          |
| REBALANCE_HIGH / LOW | 1.05 / 0.95238 | det > 1.05 and det2 < 0.95238 (and the mirror case)           |
| SCALE_HIGH / LOW     | 1.1 / 0.909 | exam = k_prev / k compared with 1.1 and 0.909                    |
| SCALE_UP / IN_BAND / DOWN | 1.005 / 1.00125 / 0.995 | sf for exam > 1.1 / in (0.909, 1.1] / <= 0.909 |
| (never runs)         | 0.9987     | sf when exam <= 0, nested under exam > 0.909: dead, left out      |
| GAUSSIANK_ROUNDS     | 3          | not in their code: Shi et al. 2019 (arXiv 1911.08772), gaussiank  |
| GAUSSIANK_BAND       | 2/3, 4/3   | |a| > mean + z std, z = Phi^-1(1 - rho/2); z halved below 2k/3,   |
|                      |            | x1.5 above 4k/3 selected; at most 3 evaluations; every passing   |
|                      |            | entry kept, as the reference (its `[:k]` cut is commented out)    |

Where this differs from the authors' code, and why: state is per DDP bucket (theirs flattens the
whole model once), so k, the initial thresholds (also `threshold`'s fixed one; pass `threshold`
for a whole-model value such as their run.sh table's) and the blocks are per bucket; a bucket smaller
than NUM_BLOCKS * BLOCK_ALIGN uses unaligned blocks, and one smaller than NUM_BLOCKS uses one
entry per block (theirs gets blocks of size 0 and fails); with one worker their ExDyna never sets
k_prev and cannot run, here it does; indices travel as int32 (half their int64 payload); in
`cltk` only the leader computes its top-k (theirs computes it everywhere and discards it); the
scaling and rebalancing run at the end of a step rather than the start of the next (the same
numbers, shown against a transcription of theirs in the tests). Their top-k and "gtopk" both select
over the whole model; their gtopk differs by its exchange (each worker's own top-k, all-gathered
and merged), while `global-topk` here takes the k largest of the summed a after a dense all-reduce
(an oracle of what a global selection would send).

Cost: no device sync per step beyond the algorithm's own. Every reducer that selects by a
threshold (exdyna, micro, threshold, gaussiank) learns its count from nonzero, and the union of
several workers' top-k has a data-dependent size: each such size is one sync. The threshold
reducers exchange their counts (one small all_gather, read on the host to pad the indices and, in
exdyna and micro, to scale lambda); gaussiank also reads its mean and std. cltk, global-topk and
exact need no sync at all. Statistics stay on the
device until take_stats(); on CUDA the time split is measured with events read then.
The hooks wait for their collectives (ExDyna needs the counts on the host anyway), so their
communication does not overlap the rest of the backward pass; `exact` does the same, for a fair
comparison, and matches DDP's own averaging to rounding (it divides after summing, as the sparse
reducers do, so that rho = 1 reproduces it bit for bit on 2 ranks).
"""
import contextlib
import math
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.distributed as dist

import catalog as C

NUM_BLOCKS = 1024
BLOCK_ALIGN = 32
MIN_BLOCKS_DIVISOR = 4
BLOCKS_MOVED = 1
REBALANCE_HIGH, REBALANCE_LOW = 1.05, 0.95238
SCALE_HIGH, SCALE_LOW = 1.1, 0.909
SCALE_UP, SCALE_IN_BAND, SCALE_DOWN = 1.005, 1.00125, 0.995
GAUSSIANK_ROUNDS = 3
GAUSSIANK_BAND = (2 / 3, 4 / 3)
# DDP rebuilds its buckets after the first step, so a residual kept per bucket index before then
# would be added to other parameters: PyTorch's PowerSGD refuses the same (start_powerSGD_iter > 1).
MIN_START_STEP = 2
INDEX_BYTES = 4  # indices travel as int32


@dataclass
class Bucket:
    """One gradient bucket's state: the same on every worker except the residual rows."""
    size: int
    k: int                          # target selected count per step, summed over workers
    threshold: float                # exdyna, micro, threshold: lambda for the next step
    residual: torch.Tensor | None   # (this process's workers, size); None without error feedback
    blocks: list[int] = field(default_factory=list)  # exdyna, micro: blocks per partition, in order
    block_size: int = 1
    tail: int = 0                   # entries after the last block, in the last partition
    min_blocks: float = 0.0         # exdyna: a partition never shrinks below this
    step: int = 0                   # sparse steps taken: rotation, leader, fallback entry
    selected: list[torch.Tensor] = field(default_factory=list)  # last step's selection per worker (all n)

    def bounds(self) -> list[tuple[int, int]]:
        """[start, end) of each partition; together they cover the bucket once, in order."""
        out, start = [], 0
        for p, count in enumerate(self.blocks):
            end = start + count * self.block_size + (self.tail if p == len(self.blocks) - 1 else 0)
            out.append((start, end))
            start = end
        assert start == self.size, "partitions cover the bucket exactly"
        return out

    def partition(self, worker: int) -> int:
        """The partition `worker` selects from this step: they rotate over the workers every step."""
        return (self.step + worker) % len(self.blocks)


Selection = tuple[torch.Tensor, float | torch.Tensor | None]  # int64 indices, the threshold they imply


@dataclass(frozen=True)
class Reducer:
    """A registry entry (its name, title and source are its record in catalog.REDUCERS).
    `select(state, bucket, a, worker)` picks from one worker's flat a (for global-topk, from the summed
    a); `counts(state, bucket)` gives every worker's count when it is known without an exchange;
    `init(state, bucket)` sets up a new bucket's own state (raising ValueError when the bucket cannot
    take it); `advance` updates the shared state from the step's counts; `check(state)` refuses a
    configuration up front (ValueError)."""
    select: Callable[["ReducerState", Bucket, torch.Tensor, int], Selection] | None
    disjoint: bool = False        # the workers' selections never overlap: the union is their concatenation
    select_on_sum: bool = False   # global-topk: dense all-reduce first
    counts: Callable[["ReducerState", Bucket], list[int]] | None = None
    init: Callable[["ReducerState", Bucket, int], None] | None = None
    advance: Callable[["ReducerState", Bucket, list[int]], None] | None = None
    check: Callable[["ReducerState"], None] | None = None


# A reducer's title and source are its record in catalog.REDUCERS; "none" is DDP's own all-reduce.
REDUCERS = C.Registry(C.REDUCERS, "reducer", make=Reducer, exempt=("none",))
REDUCERS.add("exact", Reducer(select=None))


class ReducerState:
    """Configuration, per-bucket state (keyed by bucket index, rebuilt when a bucket's size
    changes) and statistics. Build it with make_state."""

    def __init__(self, name: str, density: float, num_workers: int, workers: list[int], start_step: int,
                 error_feedback: bool, threshold: float | None, num_blocks: int):
        self.name, self.density, self.num_workers, self.workers = name, density, num_workers, workers
        self.start_step, self.error_feedback, self.threshold, self.num_blocks = (
            start_step,
            error_feedback,
            threshold,
            num_blocks,
        )
        self.buckets: dict[int, Bucket] = {}
        self.step = -1  # the current training step; a step begins when bucket 0 is reduced
        self.stats = _Stats(density, num_workers)

    def take_stats(self) -> dict[str, float]:
        """Means over the steps since the last call (warm-up steps only counted), then reset."""
        return self.stats.take()

    def state_dict(self) -> dict:
        """What a checkpoint must keep for a resumed run to continue exactly: the step and every bucket
        (residuals on the CPU, thresholds, blocks, last selections). Statistics are not kept: dpt.py
        takes them every epoch, and checkpoints fall between epochs."""
        return {"step": self.step, "buckets": {i: {k: _to(v, "cpu") for k, v in asdict(b).items()}
                                               for i, b in self.buckets.items()}}

    def load_state_dict(self, saved: dict, device: torch.device | str, rebuilding: bool = False) -> None:
        """Continue from `saved`. `rebuilding`: a fresh DDP model reduces its first steps in its initial
        bucket layout and then rebuilds its buckets, so the next MIN_START_STEP steps are averaged
        densely again (the residuals wait, untouched, for the rebuilt buckets, which match the saved ones)."""
        self.step = saved["step"]
        self.buckets = {i: Bucket(**{k: _to(v, device) for k, v in b.items()}) for i, b in saved["buckets"].items()}
        if rebuilding:
            self.start_step = self.step + 1 + MIN_START_STEP


def _to(value, device):
    """Tensors (also inside lists) to `device`; anything else as it is."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, list):
        return [_to(v, device) for v in value]
    return value


def make_state(name: str, density: float, num_workers: int, workers: Sequence[int] | None = None, *,
               start_step: int | None = None, error_feedback: bool = True, threshold: float | None = None,
               num_blocks: int = NUM_BLOCKS) -> ReducerState:
    """State for reducer `name` keeping `density` of the entries over `num_workers` workers, of
    which this process hosts `workers` (default all: emulation; under DDP [rank], a hook's state).
    Steps before `start_step` are averaged densely: by default MIN_START_STEP for a DDP hook (DDP
    rebuilds its buckets after the first step), 0 for an emulation (sparse from the first step, as
    the authors' code). `threshold`: the fixed threshold of `threshold`, the initial lambda of
    exdyna and micro (default 1/(2 sqrt k) per bucket)."""
    hooked = workers is not None
    if name not in REDUCERS:
        raise ValueError(f"reducer: unknown name {name!r}; choose one of {', '.join(REDUCERS)}")
    if not 0 < density <= 1:
        raise ValueError(f"density must be in (0, 1] (got {density}); e.g. 0.01 keeps 1% of the gradient entries")
    if num_workers < 1:
        raise ValueError(f"num_workers must be at least 1 (got {num_workers})")
    workers = list(range(num_workers)) if workers is None else list(workers)
    start_step = (MIN_START_STEP if hooked else 0) if start_step is None else start_step
    if not workers or len(set(workers)) != len(workers) or not all(0 <= w < num_workers for w in workers):
        raise ValueError(f"workers must be distinct ids in [0, {num_workers}) (got {workers}); under DDP pass [rank]")
    if hooked and error_feedback and name != "exact" and start_step < MIN_START_STEP:
        raise ValueError(f"start_step must be at least {MIN_START_STEP} for a DDP hook with error feedback (got "
                         f"{start_step}): DDP rebuilds its gradient buckets after the first step; start later or turn "
                         "error feedback off")
    if threshold is not None and threshold < 0:
        raise ValueError(f"threshold must be non-negative (got {threshold}); leave it unset for 1/(2 sqrt k)")
    state = ReducerState(name, density, num_workers, workers, start_step, error_feedback, threshold, num_blocks)
    if REDUCERS[name].check:
        REDUCERS[name].check(state)
    return state


def refusal(name: str, launched: bool, emulated: int) -> str | None:
    """Why reducer `name` cannot run in this launch (torchrun, emulated workers per process), or None."""
    if name != "none" and launched and emulated > 1:
        return (f"--reducer {name} under torchrun hosts one worker per rank (its communication hook); drop "
                "--emulate-workers, or run one process emulating every worker")
    return None


def reduce(state: ReducerState, grads: torch.Tensor, bucket: int = 0) -> torch.Tensor:
    """Emulation: one bucket's gradients of all state.workers, (n, d) -> the (d,) update every
    worker applies; updates the residuals and the shared state. Call buckets in index order."""
    if grads.dim() != 2 or grads.shape[0] != len(state.workers):
        raise ValueError(f"grads must be (workers, entries) with {len(state.workers)} rows (got {tuple(grads.shape)})")
    return _reduce(state, grads, bucket, _InProcess())


def hook(state: ReducerState, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """DDP communication hook: this rank selects from its bucket, the ranks exchange, and the
    future holds the averaged sparse update. Register with ddp_model.register_comm_hook(state, hook)."""
    if len(state.workers) != 1 or state.workers[0] != dist.get_rank() or state.num_workers != dist.get_world_size():
        raise ValueError(f"hook: the state must host exactly this rank ({dist.get_rank()} of {dist.get_world_size()}); "
                         f"build it with make_state(..., num_workers=world_size, workers=[rank])")
    update = _reduce(state, bucket.buffer().unsqueeze(0), bucket.index(), _Collective(state.num_workers))
    future = torch.futures.Future(devices=[update.device] if update.is_cuda else None)
    future.set_result(update)
    return future


def select(state: ReducerState, a: torch.Tensor, worker: int = 0, bucket: int = 0) -> torch.Tensor:
    """Worker `worker`'s selection (int64 indices) from the flat accumulated gradient `a`, in bucket
    `bucket`'s current state (created for a's size when missing): no exchange, nothing advances."""
    spec = REDUCERS[state.name]
    if spec.select is None:
        raise ValueError(f"select: {state.name} selects nothing; use a sparse reducer")
    return spec.select(state, _bucket(state, bucket, a.unsqueeze(0)), a, worker)[0]


# --- the one code path ---------------------------------------------------------------------------

def _reduce(state: ReducerState, grads: torch.Tensor, index: int, comm: "_InProcess | _Collective") -> torch.Tensor:
    """grads: (this process's workers, d). Returns the (d,) update."""
    if index == 0:
        state.stats.close_step()
        state.step += 1
        if state.step < state.start_step:
            state.stats.warmup_steps += 1
    assert state.step >= 0, "every step reduces bucket 0 first"
    n, d, spec, stats = state.num_workers, grads.shape[1], REDUCERS[state.name], state.stats
    if state.step < state.start_step:  # warm-up: DDP's own averaging, left out of the statistics
        return comm.sum(grads) / n
    if spec.select is None:  # exact
        with stats.phase("communication", grads.device):
            update = comm.sum(grads) / n
        stats.bucket(d, d, None, d * grads.element_size(), d * grads.element_size(), None, None, None)
        return update
    bucket = _bucket(state, index, grads)
    # a = g + e accumulates in the residual's own memory; the union is zeroed there afterwards
    a = bucket.residual.add_(grads) if bucket.residual is not None else grads
    a_sq = a.square().sum()
    if spec.select_on_sum:
        with stats.phase("communication", grads.device):
            summed = comm.sum(a)
        with stats.phase("selection", grads.device):
            union, threshold = spec.select(state, bucket, summed, 0)
            values, counts, sent = summed[union], [bucket.k] * n, d * a.element_size()
            bucket.selected = [union] * n  # every worker computes the same selection
    else:
        with stats.phase("selection", grads.device):
            local = [spec.select(state, bucket, a[row], w) for row, w in enumerate(state.workers)]
            thresholds = [t for _, t in local if t is not None]  # cltk: only the leader has one
            threshold = sum(thresholds) / len(thresholds) if thresholds else None
        with stats.phase("communication", grads.device):
            counts = spec.counts(state, bucket) if spec.counts else comm.counts([len(i) for i, _ in local], a.device)
            bucket.selected = comm.gather([i for i, _ in local], counts)
            union = torch.cat(bucket.selected) if spec.disjoint else torch.unique(torch.cat(bucket.selected))
            values = comm.sum(a[:, union])
            sent = max(counts) * INDEX_BYTES + union.numel() * a.element_size()
    with stats.phase("selection", grads.device):
        update = torch.zeros_like(a[0])
        update[union] = values / n
        residual_sq = (a_sq - a[:, union].square().sum()).clamp_min(0)
        if bucket.residual is not None:
            a[:, union] = 0
        if spec.advance:
            spec.advance(state, bucket, counts)
        bucket.step += 1
    stats.bucket(d, union.numel(), counts, sent, d * a.element_size(), threshold, residual_sq, a_sq)
    return update


def _bucket(state: ReducerState, index: int, like: torch.Tensor) -> Bucket:
    """The bucket's state, (re)built when it is new or its size changed (DDP's rebuild)."""
    size = like.shape[1]
    bucket = state.buckets.get(index)
    if bucket is not None and bucket.size == size:
        return bucket
    k = max(1, int(state.density * size))
    threshold = state.threshold if state.threshold is not None else 1.0 / (2.0 * math.sqrt(k))
    residual = like.new_zeros(len(state.workers), size) if state.error_feedback else None
    bucket = Bucket(size, k, threshold, residual)
    if REDUCERS[state.name].init:
        REDUCERS[state.name].init(state, bucket, index)
    state.buckets[index] = bucket
    return bucket


def _split(total: int, parts: int) -> list[int]:
    """total into `parts` near-equal counts, the first total % parts one larger (as the authors')."""
    return [total // parts + (p < total % parts) for p in range(parts)]


# --- the selections' counts and state updates -------------------------------------------------

def _fixed_counts(state: ReducerState, bucket: Bucket) -> list[int]:
    return [bucket.k] * state.num_workers


def _leader_counts(state: ReducerState, bucket: Bucket) -> list[int]:
    return [bucket.k if w == bucket.step % state.num_workers else 0 for w in range(state.num_workers)]


def scaled_threshold(threshold: float, selected: int, k: int) -> float:
    """Online threshold scaling from the last step's selected count against the target k."""
    ratio = selected / k
    if ratio > SCALE_HIGH:
        return threshold * SCALE_UP
    if ratio > SCALE_LOW:  # the authors nest `ratio <= 0: x0.9987` here, which can never run
        return threshold * SCALE_IN_BAND
    return threshold * SCALE_DOWN


def rebalanced(blocks: list[int], loads: list[int], block_size: int, size: int, min_blocks: float) -> list[int]:
    """Dynamic partition allocation: `loads[p]` entries were selected in partition p; left to right,
    one block moves from a partition over REBALANCE_HIGH x the mean load to a right or left
    neighbour under REBALANCE_LOW x, unless that leaves it under min_blocks; the moved block's
    expected load moves with it, so the next pair sees it."""
    blocks, loads = list(blocks), list(loads)
    total = sum(loads)
    mean = int(total / len(blocks))
    assert mean > 0, "every worker selects at least one entry"
    moved_load = int(BLOCKS_MOVED * block_size * (total / size))
    for i in range(len(blocks) - 1):
        left, right = loads[i] / mean, loads[i + 1] / mean
        if left > REBALANCE_HIGH and right < REBALANCE_LOW and blocks[i] - BLOCKS_MOVED >= min_blocks:
            blocks[i], blocks[i + 1] = blocks[i] - BLOCKS_MOVED, blocks[i + 1] + BLOCKS_MOVED
            loads[i], loads[i + 1] = loads[i] - moved_load, loads[i + 1] + moved_load
        elif left < REBALANCE_LOW and right > REBALANCE_HIGH and blocks[i + 1] - BLOCKS_MOVED >= min_blocks:
            blocks[i], blocks[i + 1] = blocks[i] + BLOCKS_MOVED, blocks[i + 1] - BLOCKS_MOVED
            loads[i], loads[i + 1] = loads[i] + moved_load, loads[i + 1] - moved_load
    return blocks


def _partitionable(state: ReducerState, bucket: Bucket, index: int) -> None:
    if bucket.size < state.num_workers:
        raise ValueError(f"{state.name}: bucket {index} holds {bucket.size} entries, fewer than the "
                         f"{state.num_workers} workers it is partitioned over; use a bigger model or --reducer topk")


def _init_blocks(state: ReducerState, bucket: Bucket, index: int) -> None:
    """ExDyna: NUM_BLOCKS blocks of BLOCK_ALIGN-aligned size (the tail to the last partition), split over n."""
    _partitionable(state, bucket, index)
    n, size = state.num_workers, bucket.size
    total = min(state.num_blocks, size)
    per_block = size // total
    bucket.block_size = per_block - per_block % BLOCK_ALIGN if per_block >= BLOCK_ALIGN else per_block
    bucket.blocks = _split(total, n)
    bucket.tail = size - bucket.block_size * total
    bucket.min_blocks = total / (n * MIN_BLOCKS_DIVISOR)


def _init_partitions(state: ReducerState, bucket: Bucket, index: int) -> None:
    """MiCRO: n contiguous partitions of single entries."""
    _partitionable(state, bucket, index)
    bucket.blocks = _split(bucket.size, state.num_workers)


def _check_blocks(state: ReducerState) -> None:
    if state.num_blocks < state.num_workers:
        raise ValueError(f"num_blocks ({state.num_blocks}) must be at least num_workers ({state.num_workers}): every "
                         f"partition needs a block")


def _advance_exdyna(state: ReducerState, bucket: Bucket, counts: list[int]) -> None:
    loads = [0] * state.num_workers
    for worker, count in enumerate(counts):
        loads[bucket.partition(worker)] = count
    bucket.blocks = rebalanced(bucket.blocks, loads, bucket.block_size, bucket.size, bucket.min_blocks)
    _advance_threshold(state, bucket, counts)


def _advance_threshold(state: ReducerState, bucket: Bucket, counts: list[int]) -> None:
    bucket.threshold = scaled_threshold(bucket.threshold, sum(counts), bucket.k)


# --- selections -----------------------------------------------------------------------------------

@REDUCERS.register("micro", disjoint=True, init=_init_partitions, advance=_advance_threshold)
@REDUCERS.register("exdyna", disjoint=True, init=_init_blocks, advance=_advance_exdyna, check=_check_blocks)
def _select_partition(state: ReducerState, bucket: Bucket, a: torch.Tensor, worker: int) -> Selection:
    """ExDyna and MiCRO: |a| >= lambda inside the worker's partition only."""
    start, end = bucket.bounds()[bucket.partition(worker)]
    picked = torch.nonzero(a[start:end].abs() >= bucket.threshold).view(-1)
    if picked.numel() == 0:  # one entry, moving with the step, so every count stays positive
        picked = torch.tensor([bucket.step % (end - start)], device=a.device)
    return picked + start, bucket.threshold


@REDUCERS.register("global-topk", select_on_sum=True)
@REDUCERS.register("topk", counts=_fixed_counts)
def _select_topk(state: ReducerState, bucket: Bucket, a: torch.Tensor, worker: int) -> Selection:
    values, picked = torch.topk(a.abs(), bucket.k, sorted=False)
    return picked, values.min()


@REDUCERS.register("cltk", disjoint=True, counts=_leader_counts)  # a single sender
def _select_leader(state: ReducerState, bucket: Bucket, a: torch.Tensor, worker: int) -> Selection:
    """CLT-k: only this step's leader selects; everyone uses its top-k."""
    if worker == bucket.step % state.num_workers:
        return _select_topk(state, bucket, a, worker)
    return torch.zeros(0, dtype=torch.int64, device=a.device), None


@REDUCERS.register("threshold")
def _select_threshold(state: ReducerState, bucket: Bucket, a: torch.Tensor, worker: int) -> Selection:
    return torch.nonzero(a.abs() >= bucket.threshold).view(-1), bucket.threshold


@REDUCERS.register("gaussiank")
def _select_gaussian(state: ReducerState, bucket: Bucket, a: torch.Tensor, worker: int) -> Selection:
    """Gaussian-k (Shi et al.): |a| > mean + z std with z the two-sided (1 - rho) quantile of a
    normal, halved / raised by half while the count is outside [2k/3, 4k/3]; every passing entry is
    kept, as the reference code (which has its cut to the first k commented out: a cut in index
    order would select the end of the vector too rarely, and its residual there would grow)."""
    std, mean = (float(x) for x in torch.std_mean(a))
    threshold = mean + statistics.NormalDist().inv_cdf(1 - state.density / 2) * std
    low, high = (bucket.k * f for f in GAUSSIANK_BAND)
    for round_ in range(GAUSSIANK_ROUNDS):
        picked = torch.nonzero(a.abs() > threshold).view(-1)
        if low <= picked.numel() <= high or round_ == GAUSSIANK_ROUNDS - 1:
            break
        threshold *= 0.5 if picked.numel() < low else 1.5
    return picked, threshold


REDUCERS.complete()


# --- the exchange: in one process, or over torch.distributed --------------------------------------

class _InProcess:
    """Every worker lives here: gathering is the list itself, summing a sum over rows."""

    def counts(self, local: list[int], device: torch.device) -> list[int]:
        return local

    def gather(self, local: list[torch.Tensor], counts: list[int]) -> list[torch.Tensor]:
        return local

    def sum(self, rows: torch.Tensor) -> torch.Tensor:
        return rows.sum(0)


class _Collective:
    """This process is worker `rank` of the default process group."""

    def __init__(self, num_workers: int):
        self.n, self.rank = num_workers, dist.get_rank()

    def counts(self, local: list[int], device: torch.device) -> list[int]:
        mine = torch.tensor(local, dtype=torch.int64, device=device)
        every = [torch.empty_like(mine) for _ in range(self.n)]
        dist.all_gather(every, mine)
        return torch.cat(every).tolist()  # the host pads with them and scales lambda: one sync

    def gather(self, local: list[torch.Tensor], counts: list[int]) -> list[torch.Tensor]:
        (mine,) = local
        senders = [w for w, c in enumerate(counts) if c]
        empty = mine.new_zeros(0)
        if len(senders) <= 1:  # nobody, or a single sender (cltk's leader): a broadcast
            if not senders:
                return [empty] * self.n
            src = senders[0]
            sent = (
                mine.to(torch.int32)
                if self.rank == src
                else torch.empty(counts[src], dtype=torch.int32, device=mine.device)
            )
            dist.broadcast(sent, src)
            return [sent.long() if w == src else empty for w in range(self.n)]
        padded = torch.zeros(max(counts), dtype=torch.int32, device=mine.device)
        padded[:mine.numel()] = mine
        every = [torch.empty_like(padded) for _ in range(self.n)]
        dist.all_gather(every, padded)
        return [part[:count].long() for part, count in zip(every, counts)]

    def sum(self, rows: torch.Tensor) -> torch.Tensor:
        total = rows.sum(0)
        if total.numel():
            dist.all_reduce(total)
        return total


# --- statistics -----------------------------------------------------------------------------------

class _Stats:
    """Per-step figures summed over the step's buckets, then means over the steps of a period.
    Device values (thresholds of top-k, norms) stay on the device until take()."""

    def __init__(self, density: float, num_workers: int):
        self.density, self.n = density, num_workers
        self.warmup_steps = 0
        self._new_period()
        self._new_step()

    def _new_period(self) -> None:
        self.steps = self.threshold_steps = 0
        self.sums: dict[str, float | torch.Tensor] = dict.fromkeys(
            ("density", "density_error", "threshold", "imbalance", "bytes_per_worker", "dense_bytes", "residual_ratio"),
            0.0,
        )
        self.seconds = {"selection": 0.0, "communication": 0.0}
        self.events: list[tuple[str, torch.cuda.Event, torch.cuda.Event]] = []

    def _new_step(self) -> None:
        self.step = {"buckets": 0, "entries": 0, "selected": 0, "bytes": 0, "dense": 0, "threshold": 0.0,
                     "thresholds": 0, "residual_sq": 0.0, "a_sq": 0.0, "counts": [0] * self.n}

    @contextlib.contextmanager
    def phase(self, name: str, device: torch.device) -> Iterator[None]:
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            self.events.append((name, start, end))
        else:
            began = time.perf_counter()
            yield
            self.seconds[name] += time.perf_counter() - began

    def bucket(
        self,
        entries: int,
        selected: int,
        counts: list[int] | None,
        sent: int,
        dense: int,
        threshold: float | torch.Tensor | None,
        residual_sq: torch.Tensor | None,
        a_sq: torch.Tensor | None,
    ) -> None:
        s = self.step
        s["buckets"] += 1
        s["entries"] += entries
        s["selected"] += selected
        s["bytes"] += sent
        s["dense"] += dense
        if threshold is not None:
            s["threshold"], s["thresholds"] = s["threshold"] + threshold, s["thresholds"] + 1
        if residual_sq is not None:
            s["residual_sq"], s["a_sq"] = s["residual_sq"] + residual_sq, s["a_sq"] + a_sq
        if counts is not None:
            s["counts"] = [c + d for c, d in zip(s["counts"], counts)]

    def close_step(self) -> None:
        s = self.step
        if s["buckets"]:
            target = self.density * s["entries"]
            total = sum(s["counts"])
            a_sq = torch.as_tensor(s["a_sq"])
            add = {"density": s["selected"] / s["entries"], "density_error": abs(s["selected"] - target) / target,
                   "imbalance": max(s["counts"]) * self.n / total - 1 if total else 0.0,
                   "bytes_per_worker": s["bytes"], "dense_bytes": s["dense"],
                   "residual_ratio": torch.where(a_sq > 0, s["residual_sq"] / a_sq, 0.0).sqrt()}
            for key, value in add.items():
                self.sums[key] = self.sums[key] + value
            self.steps += 1
            if s["thresholds"]:  # a mean over the buckets and local workers that used one
                self.sums["threshold"] = self.sums["threshold"] + s["threshold"] / s["thresholds"]
                self.threshold_steps += 1
        self._new_step()

    def take(self) -> dict[str, float]:
        self.close_step()
        for name, start, end in self.events:
            end.synchronize()
            self.seconds[name] += start.elapsed_time(end) / 1000
        steps = max(self.steps, 1)
        out = {key: float(value) / steps for key, value in self.sums.items()}
        out["threshold"] = float(self.sums["threshold"]) / max(self.threshold_steps, 1)
        out |= {f"{name}_s": value / steps for name, value in self.seconds.items()}
        out |= {"steps": self.steps, "warmup_steps": self.warmup_steps}
        self.warmup_steps = 0
        self._new_period()
        return out
