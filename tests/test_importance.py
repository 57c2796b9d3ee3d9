
import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data.distributed import DistributedSampler

import catalog
import importance
import workload
from samplers import WorkerBatches


NEW = [m for m in catalog.MEASURES if m not in ("average", "variance")]  # beyond the paper's two


def random_window(rng: np.random.Generator, n: int, epochs: int) -> dict[str, np.ndarray]:
    """float64 channels as a run records them: losses, 0/1 correctness, EL2N in [0, sqrt 2], gradient norms."""
    return {
        "loss": rng.gamma(2.0, 0.7, size=(n, epochs)),
        "correct": rng.integers(0, 2, size=(n, epochs)).astype(float),
        "el2n": rng.uniform(0, 2**0.5, size=(n, epochs)),
        "grad_norm": rng.gamma(2.0, 3.0, size=(n, epochs)),
        "eval_el2n": rng.uniform(0, 2**0.5, size=(n, 1)),  # a scoring pass: one column
        "eval_grand": rng.gamma(2.0, 3.0, size=(n, 1)),
    }


def as_torch(channels: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v).float() for k, v in channels.items()}


def toneva_counts(presentations: np.ndarray) -> np.ndarray:
    """mtoneva/example_forgetting's compute_forgetting_statistics and sort_examples_by_forgetting,
    restated for one run: per example, the 1 -> 0 transitions of its accuracy over its presentations
    (all epochs so far); an example never learned gets the number of presentations."""
    out = np.empty(len(presentations))
    for i, acc in enumerate(presentations):
        transitions = acc[1:] - acc[:-1]
        first_learned = np.where(acc == 1)[0]
        out[i] = len(presentations[i]) if len(first_learned) == 0 else len(np.where(transitions == -1)[0])
    return out


def ab_variance(p: np.ndarray) -> np.ndarray:
    if p.shape[1] == 1:
        return np.zeros(len(p))
    var = p.var(axis=1, ddof=1)
    return np.sqrt(var + var**2 / (p.shape[1] - 1))


# Each measure's formula from its paper, in float64, over a window of float64 channels (and p = exp(-loss)).
REFERENCES = {
    "average": lambda w, p: w["loss"].mean(axis=1),
    "variance": lambda w, p: w["loss"].var(axis=1, ddof=1) if w["loss"].shape[1] > 1 else w["loss"].mean(axis=1),
    "forgetting": lambda w, p: toneva_counts(w["correct"]),  # the run began with this window (history None)
    "confidence": lambda w, p: 1 - p.mean(axis=1),
    "variability": lambda w, p: p.std(axis=1, ddof=0),
    "ab-variance": lambda w, p: ab_variance(p),
    "ab-closeness": lambda w, p: p.mean(axis=1) * (1 - p.mean(axis=1)),
    "el2n": lambda w, p: w["el2n"].mean(axis=1),
    "grad-norm": lambda w, p: w["grad_norm"].mean(axis=1),
    "dd-el2n": lambda w, p: w["eval_el2n"][:, 0],
    "dd-grand": lambda w, p: w["eval_grand"][:, 0],
}


def numpy_scores(name: str, w: dict[str, np.ndarray], previous: dict[str, np.ndarray] | None) -> np.ndarray:
    """Measure `name`'s reference scores; a measure without one fails, naming where it goes."""
    if name not in REFERENCES:
        pytest.fail(f"add a numpy float64 reference for measure {name!r} to REFERENCES in tests/test_importance.py "
                    "(its paper's formula: every measure is tested against one)")
    return REFERENCES[name](w, np.exp(-w["loss"]))


@pytest.mark.parametrize("epochs", [1, 2, 5, 15])
def test_measures_match_numpy_float64(epochs):
    rng = np.random.default_rng(epochs)
    window = random_window(rng, 5000, epochs)
    for name, measure in importance.MEASURES.items():
        got = measure(as_torch(window), None)
        assert got.dtype == torch.float32 and got.shape == (5000,)
        np.testing.assert_allclose(
            got.double().numpy(), numpy_scores(name, window, None), rtol=1e-4, atol=1e-6, err_msg=name
        )


@pytest.mark.parametrize("seed", range(5))
def test_forgetting_counts_over_the_whole_run_as_tonevas_code(seed):
    """Windows of 1 to 5 epochs one after another: after each, the score is Toneva et al.'s whole-run
    count over every presentation so far, not the window's."""
    rng = np.random.default_rng(seed)
    learning = rng.uniform(0.2, 0.9, size=(400, 1))  # each example's chance to be right in an epoch
    history, seen = None, np.zeros((400, 0))
    for epochs in rng.integers(1, 6, size=6):
        correct = (rng.uniform(size=(400, epochs)) < learning).astype(float)
        correct[:40] = 0  # never learned
        seen = np.concatenate([seen, correct], axis=1)
        window = {"correct": torch.from_numpy(correct).float(), "loss": torch.rand(400, epochs)}
        history = importance.advance(history, window)
        scores, _ = importance.rank("forgetting", window, history)
        np.testing.assert_array_equal(scores.numpy(), toneva_counts(seen))
        assert (scores[:40] == seen.shape[1]).all()


def test_paper_measures_are_bit_for_bit_var_mean():
    window = torch.rand(3000, 7)
    scores, order = importance.rank("average", {"loss": window}, None)
    assert torch.equal(scores, torch.var_mean(window, dim=1)[1])
    assert torch.equal(order, torch.sort(scores, descending=True, stable=True).indices)
    scores, order = importance.rank("variance", {"loss": window}, None)
    assert torch.equal(scores, torch.var_mean(window, dim=1, correction=1)[0])
    assert torch.equal(order, torch.sort(scores, descending=True, stable=True).indices)
    assert torch.equal(importance.average(window), importance.MEASURES["average"]({"loss": window}, None))
    assert torch.equal(importance.variance(window), importance.MEASURES["variance"]({"loss": window}, None))


def test_variance_of_one_column_falls_back_to_average():
    window = torch.rand(100, 1)
    assert torch.equal(importance.variance(window), window[:, 0])


@pytest.mark.parametrize("name", ["ab-variance", "variability"])
def test_one_column_spreads_order_by_average_loss(name):
    loss = torch.rand(200, 1)
    scores, order = importance.rank(name, {"loss": loss, "correct": torch.zeros(200, 1)}, None)
    assert torch.equal(scores, torch.zeros(200))
    assert torch.equal(order, importance.rank("average", {"loss": loss}, None)[1])


@pytest.mark.parametrize("measure", list(importance.MEASURES))
def test_order_is_descending_and_ties_go_by_average_loss_then_index(measure):
    rng = np.random.default_rng(7)
    distinct = random_window(rng, 50, 3)
    rows = rng.integers(0, 50, size=2000)
    window = {k: v[rows] for k, v in distinct.items()}  # exact duplicate rows: many exact ties
    _, order = importance.rank(measure, as_torch(window), None)
    scores = numpy_scores(measure, window, None)
    index = np.arange(len(scores))
    # numpy float64 reference: descending score, ties by average loss (new measures) then index
    keys = (
        (index, -scores) if catalog.MEASURES[measure].tiebreak is None else (index, -window["loss"].mean(1), -scores)
    )
    np.testing.assert_array_equal(order.numpy(), np.lexsort(keys))


def test_order_with_a_secondary_key_matches_lexsort():
    rng = np.random.default_rng(8)
    scores, secondary = rng.integers(0, 5, size=3000), rng.integers(0, 5, size=3000)
    got = importance.order(torch.from_numpy(scores).float(), torch.from_numpy(secondary).float())
    np.testing.assert_array_equal(got.numpy(), np.lexsort((np.arange(3000), -secondary, -scores)))


def forgetting_of(*windows: list[list[float]]) -> list[float]:
    """The forgetting scores after windows of correctness (one list of rows each), one after another."""
    history = None
    for correct in windows:
        window = {"correct": torch.tensor(correct), "loss": torch.zeros(len(correct), len(correct[0]))}
        history = importance.advance(history, window)
    return importance.rank("forgetting", window, history)[0].tolist()


def test_forgetting_counts_correct_to_wrong_transitions():
    rows = [[0, 0, 0, 0], [1, 1, 1, 1], [1, 0, 1, 0], [0, 1, 1, 0], [0, 1, 1, 1]]
    assert forgetting_of(rows) == [4, 0, 2, 1, 0]  # never learned: the 4 presentations, above any count


def test_forgetting_counts_across_windows_and_remembers_what_was_learned():
    """The case that motivated whole-run counts: learned at epochs 0-1, wrong through a 4-epoch window:
    one event over the run (a window-only count would say "never learned" and rank it above every
    forgotten example)."""
    assert forgetting_of([[1, 1], [0, 0]], [[0, 0, 0, 0], [0, 0, 0, 0]]) == [1, 6]
    # a transition at the boundary between two windows counts once
    assert forgetting_of([[1, 1], [0, 1]], [[0, 1, 1], [1, 1, 1]]) == [1, 0]


def test_never_learned_ranks_first_and_ties_go_by_average_loss_not_index():
    correct = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 1.0], [1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    loss = torch.tensor([[0.1, 0.2, 0.1], [0.5, 0.5, 0.5], [0.9, 2.0, 0.3], [1.0, 1.0, 1.0], [0.1, 0.1, 0.1]])
    scores, order = importance.rank("forgetting", {"correct": correct, "loss": loss}, None)
    assert scores.tolist() == [1, 0, 1, 3, 1]
    assert torch.isfinite(scores).all()
    # never learned first; among the three with one event, higher average loss first (2 before 0 and 4)
    assert order.tolist() == [3, 2, 0, 4, 1]


def test_each_measure_reads_only_its_declared_channels():
    rng = np.random.default_rng(9)
    full = as_torch(random_window(rng, 100, 4))
    for name, score in importance.MEASURES.items():
        window = {c: full[c] for c in importance.channels(name) + importance.scored(name)}  # a run has only these
        scores, order = importance.rank(name, window, importance.advance(None, window))
        assert torch.equal(scores, score(full, importance.advance(None, full)))
        assert sorted(order.tolist()) == list(range(100))


def test_rank_names_the_missing_channel():
    with pytest.raises(AssertionError, match="el2n"):
        importance.rank("el2n", {"loss": torch.rand(10, 2)}, None)


def test_new_measures_document_their_tiebreak_text_and_source():
    for name in NEW:
        m = catalog.MEASURES[name]
        assert m.tiebreak == "average" and "loss" in importance.channels(name)
        assert m.source and ("text" not in m.meaning) == (name in ("forgetting", "ab-closeness"))
    assert catalog.MEASURES["average"].tiebreak is None and catalog.MEASURES["variance"].tiebreak is None


def test_record_scatters_every_channel_by_key_and_sends_padding_to_the_sink():
    m = importance.Recorder(num_examples=6, num_epochs=2, channels=("loss", "correct"), device="cpu")
    m.record(
        torch.tensor([4, 0, 2, 6 + 4]),
        0,
        {
            "loss": torch.tensor([1.0, 2.0, 3.0, 99.0]),  # key 10: padding copy of 4
            "correct": torch.tensor([1.0, 0.0, 1.0, 7.0]),
        },
    )
    m.record(
        torch.tensor([1, 3, 5]),
        1,
        {
            "loss": torch.tensor([4.0, 5.0, 6.0]),
            "correct": torch.tensor([0.0, 1.0, 1.0]),
            "el2n": torch.tensor([9.0, 9.0, 9.0]),
        },
    )  # a channel not recorded is ignored
    merged = m.merged()
    assert list(merged) == ["loss", "correct"]
    expected = torch.zeros(6, 2)
    expected[4, 0], expected[0, 0], expected[2, 0] = 1, 2, 3
    expected[1, 1], expected[3, 1], expected[5, 1] = 4, 5, 6
    assert torch.equal(merged["loss"], expected)
    assert merged["correct"][:, 0].tolist() == [0, 0, 1, 0, 1, 0] and merged["correct"][:, 1].tolist() == [
        0,
        0,
        0,
        1,
        0,
        1,
    ]
    assert (
        m.values[0, 6, 0] == 99.0 and m.values[1, 6, 0] == 7.0
    )  # the sink row took the padding, and merged() drops it
    assert torch.equal(m.merged(1)["loss"], expected[:, :1])


def test_restore_puts_back_the_first_columns():
    m = importance.Recorder(5, 3, ("loss", "el2n"), "cpu")
    saved = {"loss": torch.rand(5, 2), "el2n": torch.rand(5, 2)}
    m.restore(saved)
    assert torch.equal(m.merged(2)["loss"], saved["loss"]) and torch.equal(m.merged(2)["el2n"], saved["el2n"])
    assert torch.isnan(m.values[:, :5, 2]).all()


CHANNELS = ("loss", "correct", "el2n", "grad_norm")


def signal(keys: torch.Tensor, n: int, epoch: int, k: int) -> torch.Tensor:
    # a value that identifies (channel, example, epoch) and would double if padding counted twice
    return (keys % n).float() + 1000 * epoch + 0.5 + 100_000 * k


def _merge_worker(rank: int, world: int, init_file: str, n: int, batch: int, out: dict) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    recorder = importance.Recorder(n, 2, CHANNELS, "cpu")
    for epoch in range(2):
        sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True, seed=0)
        batches = WorkerBatches([sampler], batch)
        batches.set_epoch(epoch)
        for keys in batches:
            keys = torch.tensor(keys)
            recorder.record(keys, epoch, {c: signal(keys, n, epoch, k) for k, c in enumerate(CHANNELS)})
    out[rank] = recorder.merged()
    dist.destroy_process_group()


@pytest.mark.slow
def test_merge_across_two_ranks_equals_one_process_and_counts_padding_once(tmp_path):
    n, world = 11, 2  # 11 examples on 2 ranks: DistributedSampler pads one duplicate per epoch
    out = mp.Manager().dict()
    mp.spawn(_merge_worker, args=(world, str(tmp_path / "init"), n, 4, out), nprocs=world, join=True)
    alone = importance.Recorder(n, 2, CHANNELS, "cpu")  # one process recording every example
    for epoch in range(2):
        keys = torch.randperm(n)
        alone.record(keys, epoch, {c: signal(keys, n, epoch, k) for k, c in enumerate(CHANNELS)})
    for rank in range(world):  # every rank holds the same merged signals, those of one process
        assert all(torch.equal(out[rank][c], alone.merged()[c]) for c in CHANNELS)
    assert torch.equal(
        out[0]["loss"], torch.stack([torch.arange(n).float() + 0.5, torch.arange(n).float() + 1000.5], dim=1)
    )


def study_measures() -> list[str]:
    return [v["measure"] for v in workload.STUDIES["measures"].variants if "measure" in v]


def orders(window: dict[str, torch.Tensor], measures: list[str]) -> dict[str, torch.Tensor]:
    return {m: importance.rank(m, window, importance.advance(None, window))[1] for m in measures}


@pytest.mark.parametrize("epochs", [2, 5, 15, 35])
def test_the_measures_study_runs_no_two_arms_that_are_one_experiment(epochs):
    """On the study's window lengths (E >= 2: E_ignore 5 leaves 15 or 35 warmup columns, intervals of 5
    or 30), no two of its measures order the examples alike, so no two arms are the same experiment."""
    got = orders(as_torch(random_window(np.random.default_rng(epochs), 3000, epochs)), study_measures())
    same = [(a, b) for i, a in enumerate(got) for b in list(got)[i + 1:] if torch.equal(got[a], got[b])]
    assert same == []


@pytest.mark.slow
def test_on_a_real_recording_no_two_arms_coincide_but_ab_variance_is_variability(cifar10_dir):
    """The same on signals recorded from a real training pass (and a scoring pass) of a tiny run."""
    import data
    import models
    import tasks
    import train
    from samplers import for_window

    root, _ = cifar10_dir
    split, task = data.load("cifar10", root, train=True, subset=48), tasks.of("cifar10")
    torch.manual_seed(0)
    model = models.build("resnet18", 10, 3)
    step = train.Step.build(workers=1, batch_size=16, device=torch.device("cpu"), task=task, on_device=True,
                            channels=importance.CHANNELS)
    batches = WorkerBatches(for_window(split, None, range(1), 1, shuffle=True, sampler_seed=0, seed=0), 16)
    recorder = importance.Recorder(len(split), 3, importance.CHANNELS, "cpu")
    optimizer = models.optimizer(model, 0.05, 0.9, 5e-4)
    for epoch in range(3):
        train.train_epoch(model, optimizer, batches, split, step, epoch, recorder, epoch)
    window = recorder.merged() | {c: v[:, None] for c, v in task.score(model, split, importance.SCORED, step).items()}
    got = orders(window, study_measures() + ["ab-variance"])
    assert torch.equal(got.pop("ab-variance"), got["variability"])  # as the docs say: one experiment
    same = [(a, b) for i, a in enumerate(got) for b in list(got)[i + 1:] if torch.equal(got[a], got[b])]
    assert same == []


@pytest.mark.parametrize("epochs", [2, 3, 7, 30])
def test_ab_variance_orders_as_variability_for_any_window_length(epochs):
    got = orders(as_torch(random_window(np.random.default_rng(epochs), 3000, epochs)), ["ab-variance", "variability"])
    assert torch.equal(got["ab-variance"], got["variability"])


def test_at_one_epoch_the_loss_probability_family_orders_as_average():
    got = orders(as_torch(random_window(np.random.default_rng(1), 3000, 1)),
                 ["average", "variance", "confidence", "variability", "ab-variance", "ab-closeness"])
    assert all(torch.equal(got[m], got["average"]) for m in ("variance", "confidence", "variability", "ab-variance"))
    assert not torch.equal(got["ab-closeness"], got["average"])  # p (1 - p) is not monotone in the loss
    for m in ("variance", "confidence", "variability", "ab-variance"):
        assert "at E = 1" in catalog.MEASURES[m].coincides or "variability" in catalog.MEASURES[m].coincides
