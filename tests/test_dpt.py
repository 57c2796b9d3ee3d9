"""The trainer: its schedule, its handling of bad input, and real runs (torchrun with gloo, and
plain python) on a tiny CIFAR-10 written in the real on-disk format."""
import subprocess
import sys

import pandas as pd
import pytest
import torch

import dpt
import heuristics
import importance
import results
from runs import REPO, launch, only_log, partitions


# ---- the interval schedule ------------------------------------------------------------------

@pytest.mark.parametrize("T,W,I,expected", [
    (100, 20, 5, [(0, 20)] + [(20 + 5 * k, 5) for k in range(16)]),
    (100, 20, 30, [(0, 20), (20, 30), (50, 50)]),  # 2 intervals; the leftover 20 epochs go to the last
    (100, 10, 8, [(0, 10)] + [(10 + 8 * k, 8) for k in range(10)] + [(90, 10)]),
    (100, 60, 1, [(0, 60)] + [(60 + k, 1) for k in range(40)]),
    (10, 3, 7, [(0, 3), (3, 7)]),
    (5, 5, 0, [(0, 5)]),  # vanilla: warmup is the whole run
])
def test_windows_follow_the_papers_code(T, W, I, expected):
    plan = dpt.windows(T, W, I)
    assert plan == expected
    repartition_epochs = [start + 1 for start, _ in plan[1:]]  # 1-based epochs that start with a new partition
    assert repartition_epochs == list(range(W + 1, W + 1 + I * ((T - W) // I), I)) if W < T else repartition_epochs == []


def test_once_mode_is_one_interval_after_warmup():
    args = dpt.parse_args(["--warmup-epochs", "30", "--repartition", "once"])
    assert args.interval_epochs == 70
    assert dpt.windows(args.total_epochs, args.warmup_epochs, args.interval_epochs) == [(0, 30), (30, 70)]


def test_defaults_are_the_papers_settings():
    args = dpt.parse_args([])
    assert (args.batch_size, args.lr, args.momentum, args.weight_decay) == (256, 0.1, 0.9, 5e-4)
    assert (args.total_epochs, args.ignore_epochs, args.sampler_seed, args.eval_protocol) == (100, 5, 0, "paper")
    assert args.repartition == "interval" and args.seed in dpt.PAPER_SEEDS


def test_paper_heuristic_names_are_accepted():
    assert dpt.parse_args(["--heuristic", "roundrobin"]).heuristic == "stripes"
    assert dpt.parse_args(["--heuristic", "steps"]).heuristic == "blocks"


def test_vanilla_runs_all_epochs_as_warmup():
    args = dpt.parse_args(["--heuristic", "none", "--total-epochs", "50"])
    assert (args.warmup_epochs, args.interval_epochs, args.repartition) == (50, 0, "once")


# ---- bad input: one line, exit 2, before any process group ----------------------------------

BAD = [
    (["--dataset", "imagenet"], "invalid choice: 'imagenet'", "cifar10", "cifar100", "fashionmnist"),
    (["--model", "vgg"], "invalid choice: 'vgg'", "resnet18", "resnet34"),
    (["--heuristic", "random"], "invalid choice: 'random'", "none", "stripes", "blocks", "roundrobin", "steps"),
    (["--measure", "median"], "invalid choice: 'median'", "average", "variance"),
    (["--warmup-epochs", "120"], "--warmup-epochs 120 exceeds --total-epochs 100"),
    (["--interval-epochs", "0"], "--interval-epochs must be at least 1 in interval mode"),
    (["--ignore-epochs", "20"], "--ignore-epochs 20 leaves no warmup loss column to score"),
    (["--heuristic", "none", "--repartition", "interval"], "--heuristic none trains vanilla DPT"),
    (["--batch-size", "0"], "--batch-size is per worker and must be at least 1"),
    (["--interval-epochs", "90"], "--interval-epochs 90 exceeds the 80 epochs after warmup"),
    (["--warmup-epochs", "100"], "needs 1 <= --warmup-epochs < --total-epochs"),
    (["--total-epochs", "x"], "argument --total-epochs: invalid int value: 'x'"),
]


@pytest.fixture
def no_process_group(monkeypatch):
    """Run main() in-process as torchrun's rank 0 would, failing if a process group starts."""
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_RANK", "0")

    def trap(*a, **k):
        raise AssertionError("a process group was started before the input was checked")
    monkeypatch.setattr(dpt.dist, "init_process_group", trap)


def run_main_expecting_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        dpt.main(argv)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dpt.py: error: "), captured.err
    return lines[0]


@pytest.mark.parametrize("argv,fragments", [(a, f) for a, *f in BAD], ids=[" ".join(a) for a, *_ in BAD])
def test_bad_flags(argv, fragments, capsys, no_process_group):
    line = run_main_expecting_error(argv, capsys)
    assert all(f in line for f in fragments), line


def test_missing_data_offline(tmp_path, capsys, no_process_group, monkeypatch):
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")  # offline, whatever the network
    line = run_main_expecting_error(["--data-dir", str(tmp_path / "empty")], capsys)
    assert "--data-dir" in line and "cifar-10-batches-py/data_batch_1" in line


def test_corrupt_data_file(cifar10_dir, capsys, no_process_group):
    root, _ = cifar10_dir
    (root / "cifar-10-batches-py" / "test_batch").write_bytes(b"\x80\x02garbage")
    line = run_main_expecting_error(["--data-dir", str(root)], capsys)
    assert "corrupt cifar10 file" in line and "test_batch" in line


def test_results_file_of_another_schema_is_not_touched(cifar10_dir, tmp_path, capsys, no_process_group):
    root, _ = cifar10_dir
    path = results.csv_path(tmp_path / "res", "cifar10", "resnet18", "stripes", "variance", 20, 5, 100)
    results.append_row(path, results.row(1, [1.0] * 50, 20, 5, "variance", "roundrobin", "resnet18", "cifar10"))
    before = path.read_bytes()
    line = run_main_expecting_error(["--data-dir", str(root), "--results-dir", str(tmp_path / "res")], capsys)
    assert "another schema" in line and "--results-dir" in line
    assert path.read_bytes() == before


def test_a_last_batch_of_one_is_refused(cifar10_dir, capsys, no_process_group):
    root, _ = cifar10_dir
    line = run_main_expecting_error(["--data-dir", str(root), "--batch-size", "11"], capsys)  # 67 = 6 x 11 + 1
    assert "last batch of one" in line and "--batch-size" in line
    line = run_main_expecting_error(["--data-dir", str(root), "--batch-size", "16", "--test-subset", "17"], capsys)
    assert "17 test examples" in line and "--test-subset" in line


def test_the_cli_prints_one_line_and_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "dpt.py", "--warmup-epochs", "30", "--ignore-epochs", "30"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "dpt.py: error: --ignore-epochs 30 leaves no warmup loss column to score (W=30); pass 0 <= --ignore-epochs < --warmup-epochs"]


# ---- real runs --------------------------------------------------------------------------------

TINY = ["--dataset", "cifar10", "--total-epochs", "4", "--warmup-epochs", "2", "--interval-epochs", "1",
        "--ignore-epochs", "1", "--batch-size", "10"]


def test_torchrun_two_ranks_gloo(cifar10_dir, tmp_path):
    root, _ = cifar10_dir
    out = tmp_path / "res"
    launch([*TINY, "--data-dir", str(root), "--results-dir", str(out), "--save-partitions", "--seed", "8271"], 2)
    folder = out / "CIFAR10-ResNet18-Stripes-Variance"
    frame = pd.read_csv(folder / "W2-INT1.csv")
    assert list(frame.columns) == results.columns(4) and len(frame) == 1
    row = frame.iloc[0]
    assert (row.id, row.warmup_epochs, row.interval_epochs) == (8271, 2, 1)
    assert (row.measure, row.heuristic, row.model, row.dataset) == ("variance", "roundrobin", "resnet18", "cifar10")
    accuracies = [row[f"epoch_{e}"] for e in range(1, 5)]
    assert all(a % 5 == 0 for a in accuracies)  # 20 test examples
    assert row.best_accuracy == max(accuracies) and row.best_epoch == accuracies.index(max(accuracies)) + 1

    log = only_log(folder)
    assert log["world_size"] == 2 and log["workers"] == 2 and log["args"]["seed"] == 8271
    assert [e["test_accuracy"] for e in log["epochs"]] == accuracies
    assert [i["start_epoch"] for i in log["intervals"]] == [3, 4]
    assert all(i["partition_sizes"] == [34, 33] and i["heuristic_s"] >= 0 for i in log["intervals"])
    assert all(e["tracking_s"] > 0 for e in log["epochs"]) and log["total_training_s"] > 0

    saved = partitions(folder)
    warmup, *intervals = saved["windows"]
    assert sorted(torch.cat(warmup["trained"]).unique().tolist()) == list(range(67))
    for window in intervals:
        part = window["partition"]
        # the partition is Stripes over the examples sorted by their importance, most important first
        assert [p.tolist() for p in part] == [p.tolist() for p in heuristics.stripes(importance.order(window["importance"]), 2)]
        # after warmup each rank trained exactly its partition: every example of it, nothing else
        for rank in range(2):
            assert window["trained"][rank].tolist() == sorted(part[rank].tolist())


def test_torchrun_one_rank_blocks(cifar10_dir, tmp_path):
    root, _ = cifar10_dir
    out = tmp_path / "res"
    launch([*TINY, "--heuristic", "steps", "--measure", "average", "--repartition", "once", "--data-dir", str(root),
            "--results-dir", str(out)], 1)
    frame = pd.read_csv(out / "CIFAR10-ResNet18-Blocks-Average" / "W2-INT2.csv")
    assert list(frame.columns) == results.columns(4)
    assert frame.iloc[0][["heuristic", "measure", "warmup_epochs", "interval_epochs"]].tolist() == ["steps", "average", 2, 2]
    log = only_log(out / "CIFAR10-ResNet18-Blocks-Average")
    assert log["world_size"] == 1 and [i["start_epoch"] for i in log["intervals"]] == [3]


def test_plain_python_baseline_with_wandb_offline(cifar10_dir, tmp_path):
    root, _ = cifar10_dir
    out = tmp_path / "res"
    proc = launch(["--dataset", "cifar10", "--heuristic", "none", "--total-epochs", "2", "--batch-size", "16",
                   "--eval-protocol", "standard", "--data-dir", str(root), "--results-dir", str(out),
                   "--wandb", "--wandb-name", "tiny-baseline"], None,
                  {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true"})
    path = out / "Baselines" / "c10-vanilla-resnet18-total2.csv"
    assert f"row appended to {path}" in proc.stdout
    row = pd.read_csv(path).iloc[0]
    assert (row.heuristic, row.warmup_epochs, row.interval_epochs) == ("none", 2, 0)
    assert only_log(out / "Baselines")["intervals"] == []
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
