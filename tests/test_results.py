import json
import multiprocessing as mp

import pandas as pd
import pytest

import results


def make_row(seed: int, total: int = 5) -> dict:
    accuracies = [10.0 + seed + e + 0.004 for e in range(total)]
    accuracies[2] = 99.996  # the best, after rounding to 2 decimals: 100.0
    return results.row(seed, accuracies, 20, 5, "variance", "roundrobin", "resnet18", "cifar10")


def test_row_rounds_and_picks_the_first_best_epoch():
    row = results.row(7, [50.123, 60.556, 60.554, 40.0], 2, 1, "average", "steps", "resnet34", "cifar100")
    assert list(row) == results.columns(4)
    assert row["epoch_1"] == 50.12 and row["epoch_2"] == 60.56 and row["epoch_3"] == 60.55
    assert row["best_accuracy"] == 60.56 and row["best_epoch"] == 2
    tie = results.row(7, [1.0, 3.0, 3.0], 1, 1, "variance", "roundrobin", "resnet18", "cifar10")
    assert tie["best_epoch"] == 2


def test_paths_follow_the_papers_layout(tmp_path):
    assert results.csv_path(tmp_path, "cifar10", "resnet18", "stripes", "variance", 20, 5, 100) == \
        tmp_path / "CIFAR10-ResNet18-Stripes-Variance" / "W20-INT5.csv"
    assert results.csv_path(tmp_path, "cifar100", "resnet34", "blocks", "average", 60, 30, 100) == \
        tmp_path / "CIFAR100-ResNet34-Blocks-Average" / "W60-INT30.csv"
    assert results.csv_path(tmp_path, "cifar10", "resnet34", "none", "variance", 100, 0, 100) == \
        tmp_path / "Baselines" / "c10-vanilla-resnet34-total100.csv"


def test_csv_round_trip_in_the_papers_schema(tmp_path):
    path = tmp_path / "W" / "W20-INT5.csv"
    for seed in (1, 2):
        results.append_row(path, make_row(seed))
    frame = pd.read_csv(path)
    assert list(frame.columns) == ["id", "epoch_1", "epoch_2", "epoch_3", "epoch_4", "epoch_5", "best_accuracy",
                                   "best_epoch", "warmup_epochs", "interval_epochs", "measure", "heuristic", "model", "dataset"]
    assert frame.id.tolist() == [1, 2]  # appended, the first row kept
    assert frame.best_accuracy.tolist() == [100.0, 100.0] and frame.best_epoch.tolist() == [3, 3]
    assert frame.epoch_1.tolist() == [11.0, 12.0]
    back = results.read_csvs(tmp_path)
    assert len(back) == 2 and set(back.workload) == {"W"} and set(back.file) == {"W20-INT5"}


def test_a_file_of_another_schema_is_refused_not_extended(tmp_path):
    path = tmp_path / "W20-INT5.csv"
    results.append_row(path, make_row(1, total=5))
    before = path.read_text()
    with pytest.raises(ValueError, match="5 epoch columns, this run has 6"):
        results.check_appendable(path, 6)
    with pytest.raises(ValueError):
        results.append_row(path, make_row(2, total=6))
    assert path.read_text() == before


def _append_many(args):
    path, worker = args
    for k in range(25):
        results.append_row(path, make_row(worker * 100 + k, total=40))


def test_concurrent_appends_lose_and_interleave_nothing(tmp_path):
    path = tmp_path / "shared.csv"
    with mp.get_context("spawn").Pool(6) as pool:
        pool.map(_append_many, [(path, w) for w in range(6)])
    frame = pd.read_csv(path)
    assert sorted(frame.id) == sorted(w * 100 + k for w in range(6) for k in range(25))
    assert frame.notna().all().all() and len(path.read_text().splitlines()) == 1 + 150


def test_json_is_written_whole(tmp_path):
    path = tmp_path / "logs" / "run.json"
    results.write_json(path, {"a": [1, 2]})
    results.write_json(path, {"a": [3]})
    assert json.loads(path.read_text()) == {"a": [3]}
    assert [p.name for p in path.parent.iterdir()] == ["run.json"]  # no temporary left behind
