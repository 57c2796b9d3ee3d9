import numpy as np
import pytest
import torch

import heuristics

CASES = [(8, 4), (10, 4), (50000, 4), (1001, 3), (7, 7), (13, 5)]


def random_order(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", list(heuristics.HEURISTICS))
@pytest.mark.parametrize("n,workers", CASES)
def test_disjoint_and_covering(name, n, workers):
    order = random_order(n)
    parts = heuristics.partition(order, workers, name)
    assert len(parts) == workers
    everything = torch.cat(parts)
    assert len(everything) == n and len(set(everything.tolist())) == n
    assert set(everything.tolist()) == set(range(n))


@pytest.mark.parametrize("name", list(heuristics.HEURISTICS))
@pytest.mark.parametrize("n,workers", CASES)
def test_sizes_differ_by_at_most_one(name, n, workers):
    sizes = [len(p) for p in heuristics.partition(random_order(n), workers, name)]
    assert max(sizes) - min(sizes) <= 1
    assert max(sizes) == -(-n // workers)  # ceil: what ConstantSampler pads to


def test_stripes_is_round_robin_over_the_sorted_list():
    order = random_order(103, seed=1)
    parts = heuristics.stripes(order, 4)
    for w, part in enumerate(parts):
        assert part.tolist() == [order[p].item() for p in range(103) if p % 4 == w]


def test_paper_figure_4():
    """Eight examples indexed in order of importance, four workers (the paper's Figure 4)."""
    order = torch.arange(8)
    assert [p.tolist() for p in heuristics.stripes(order, 4)] == [[0, 4], [1, 5], [2, 6], [3, 7]]
    assert [p.tolist() for p in heuristics.blocks(order, 4)] == [[0, 1], [2, 3], [4, 5], [6, 7]]


def test_blocks_are_contiguous_runs_and_keep_the_remainder():
    order = random_order(10, seed=2)
    parts = heuristics.blocks(order, 4)  # 10 = 3 + 3 + 2 + 2: the paper's code dropped 2 examples
    assert [len(p) for p in parts] == [3, 3, 2, 2]
    assert torch.equal(torch.cat(parts), order)  # worker order follows importance order


def test_stripes_keeps_each_workers_importance_distribution_close_to_the_whole():
    rng = np.random.default_rng(3)
    scores = torch.from_numpy(rng.lognormal(size=20000))
    order = torch.sort(scores, descending=True, stable=True).indices
    quantiles = torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9], dtype=torch.float64)
    whole = torch.quantile(scores, quantiles)
    spread = (whole[-1] - whole[0]).item()

    def worst_gap(parts):
        return max((torch.quantile(scores[p], quantiles) - whole).abs().max().item() for p in parts)

    assert worst_gap(heuristics.stripes(order, 4)) < 0.01 * spread
    assert worst_gap(heuristics.blocks(order, 4)) > 0.3 * spread  # Blocks is meant to differ
    means = [scores[p].mean().item() for p in heuristics.stripes(order, 4)]
    assert max(means) - min(means) < 0.01 * scores.std().item()


def test_partition_rejects_a_heuristic_that_duplicates(monkeypatch):
    # Right sizes, but example order[0..3] twice and order[4..7] never.
    monkeypatch.setitem(heuristics.HEURISTICS, "bad", lambda order, n: [order[:4], order[:4].clone()])
    with pytest.raises(AssertionError):
        heuristics.partition(torch.arange(8), 2, "bad")


def test_paper_names_round_trip():
    assert heuristics.PAPER_NAMES == {"none": "none", "stripes": "roundrobin", "blocks": "steps"}
    assert all(heuristics.ALIASES[paper] == ours for ours, paper in heuristics.PAPER_NAMES.items())
