"""What a run prints on rank 0: one line per epoch with each feature's own figures (the gradient
exchange's density and bytes, the streaming caches' bytes and hits, seconds per epoch and the time
left), and a progress bar inside an epoch when attached to a terminal (tqdm; never in a log or CI).

    python dpt.py --dataset fashionmnist --subset 2000 --total-epochs 3 --warmup-epochs 1 \
        --interval-epochs 1 --ignore-epochs 0 --reducer exdyna --density 0.01
"""
import os
import sys
from collections.abc import Iterable


def plural(n: int, word: str) -> str:
    """'1 worker', '4 workers'."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def duration(seconds: float) -> str:
    """'42.0s', '3m05s', '2h04m'."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, s = divmod(int(round(seconds)), 60)
    return f"{minutes}m{s:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def exchange_figures(exchange: dict) -> str:
    """A reducer run's density (entries sent / entries) and what one worker sent per step."""
    return (f"density {exchange['density']:.2e}  {exchange['bytes_per_worker'] / 2**20:.3g} MiB/step sent "
            f"({exchange['bytes_per_worker'] / exchange['dense_bytes']:.1%} of dense)")


def io_figures(rows: list[dict]) -> str:
    """A streaming run's epoch: bytes every worker's cache fetched, and its hit rate."""
    requests = sum(r["requests"] for r in rows)
    hits = sum(r["hits"] for r in rows)
    return f"fetched {sum(r['bytes'] for r in rows) / 2**20:.3g} MiB  hits {hits / max(requests, 1):.1%}"


def first_line(name: str, top, args, job, resuming_after: int | None) -> str:
    """The run's first line: its workers and batches, its data, its device, its checkpoints and results."""
    saving = (f"a checkpoint every {args.checkpoint_every} epochs to {job.checkpoint_path}" if args.checkpoint_every
              else "no checkpoints (--checkpoint-every 0)")
    processes = f"{top.world} process{'' if top.world == 1 else 'es'}"
    return (f"{name}: {plural(top.workers, 'worker')} ({processes} x {args.emulate_workers}) x batch "
            f"{args.batch_size}, {len(job.train)} train / {len(job.test)} test examples (train: {job.train.source}; "
            f"test: {job.test.source}), {top.device}, {saving}; results -> {job.csv}"
            + (f"; resuming after epoch {resuming_after}" if resuming_after is not None else ""))


def epoch_line(epoch: int, total: int, phase: str, stats: dict, held_out: str, seconds: list[float]) -> str:
    """The epoch's line: loss, the task's held-out figures and speed, each feature's figures, then
    this epoch's seconds and the time left at the mean pace so far (`seconds`: every epoch's)."""
    parts = [f"epoch {epoch + 1:3d}/{total} {phase:>11s}", f"loss {stats['train_loss']:.4f}", held_out,
             f"tracking {stats['tracking_s']:.3f}s"]
    if "exchange" in stats:
        parts.append(exchange_figures(stats["exchange"]))
    if "io" in stats:
        parts.append(io_figures(stats["io"]))
    left = (total - epoch - 1) * sum(seconds) / len(seconds)
    parts.append(f"{seconds[-1]:.1f} s/epoch, {duration(left)} left")
    return "  ".join(parts)


def progress_wanted(master: bool) -> bool:
    """A bar only on a terminal: a log file or CI gets the epoch lines alone."""
    return master and sys.stderr.isatty() and not os.environ.get("CI")


def steps(iterable: Iterable, total: int, wanted: bool, what: str) -> Iterable:
    """`iterable` with a tqdm bar of `total` steps when `wanted` (it clears itself at the end)."""
    if not wanted:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=what, unit="step", leave=False, dynamic_ncols=True, file=sys.stderr)
