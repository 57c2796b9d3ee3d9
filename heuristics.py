"""Partitioning heuristics: (examples sorted by importance, number of workers) -> one index list per worker.

Used by dpt.py at the start of every interval; try one by hand with

    python -c "import torch, heuristics; print(heuristics.HEURISTICS['stripes'](torch.arange(8), 4))"

Each heuristic is a pure function of the sorted order (most important first, as the
paper's code sorts), so a new one is a function plus a line in HEURISTICS.
"""
import torch

Partition = list[torch.Tensor]  # worker w trains on the example indices in partition[w]


def stripes(sorted_indices: torch.Tensor, num_workers: int) -> Partition:
    """The paper's Stripes ("roundrobin" in its code): sorted position p goes to worker p mod n,
    so every worker sees the same spread of importance."""
    return [sorted_indices[w::num_workers].clone() for w in range(num_workers)]


def blocks(sorted_indices: torch.Tensor, num_workers: int) -> Partition:
    """The paper's Blocks ("steps" in its code): contiguous runs of the sorted list.

    The paper's code gave each worker floor(N/n) positions and dropped the N mod n least
    important examples; here the first N mod n workers get one example more, so nothing is
    dropped (ConstantSampler pads the shorter ones to equal step counts)."""
    sizes = [len(sorted_indices) // num_workers + (w < len(sorted_indices) % num_workers) for w in range(num_workers)]
    return [chunk.clone() for chunk in torch.split(sorted_indices, sizes)]


HEURISTICS = {"stripes": stripes, "blocks": blocks}
# The names the paper's code and CSVs use; dpt.py accepts both and writes these into result rows.
PAPER_NAMES = {"none": "none", "stripes": "roundrobin", "blocks": "steps"}
ALIASES = {paper: ours for ours, paper in PAPER_NAMES.items()}


def partition(sorted_indices: torch.Tensor, num_workers: int, heuristic: str) -> Partition:
    """Apply a registered heuristic and check that no example is lost or duplicated."""
    parts = HEURISTICS[heuristic](sorted_indices, num_workers)
    assert len(parts) == num_workers
    placed = torch.sort(torch.cat(parts)).values
    assert torch.equal(placed, torch.sort(sorted_indices).values), "a heuristic must place every example once"
    return parts
