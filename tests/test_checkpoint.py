"""Runs survive interruption: a run killed at any moment (during an epoch, at a repartition, while
writing a checkpoint) and resumed gives the row it would have given uninterrupted; a checkpoint of
another run, or a damaged one, is refused; a moved results folder resumes."""
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import torch

import dpt
import fakedata
from runs import ENV, REPO, checkpoint, launch, only, only_log, partitions, run_expecting_error

pytestmark = pytest.mark.slow


def flags(root, out):
    # interval mode: warmup epochs 1-2, one interval of epochs 3-5
    return ["--dataset", "cifar10", "--data-dir", str(root), "--results-dir", str(out), "--batch-size", "10",
            "--total-epochs", "5", "--warmup-epochs", "2", "--interval-epochs", "3", "--ignore-epochs", "1",
            "--emulate-workers", "2", "--deterministic", "--seed", "33432"]


def die_at(function: str, call: int, argv: list[str], half: bool = False) -> None:
    """Run dpt.py and have it SIGKILLed at the call-th call of `function` (tests/die_at.py)."""
    proc = subprocess.run(
        [sys.executable, "tests/die_at.py", function, str(call), *(["--half"] if half else []), "--", *argv],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == -9, proc.stderr[-2000:]


def losses(log: dict) -> list[float]:
    return [e["train_loss"] for e in log["epochs"]]


def uninterrupted_losses(root) -> list[float]:
    return losses(only_log(root.parent / "res"))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("whole")
    fakedata.write_cifar10(folder / "data", n_train=67, n_test=20)
    launch(flags(folder / "data", folder / "res"))
    return folder / "data", pd.read_csv(only(folder / "res", "W2-INT3-IGN1.csv"))


@pytest.mark.parametrize(
    "function,call,half",
    [
        (
            "importance.Recorder.record",
            15,
            False,
        ),  # mid-epoch 4 (4 steps an epoch): mid-interval, after epoch 3's checkpoint
        ("dpt.repartition", 1, False),  # at the repartition after warmup
        ("results.save_torch", 3, True),  # halfway through writing epoch 3's checkpoint
    ],
    ids=["during an epoch", "at a repartition", "during a checkpoint write"],
)
def test_killed_at_any_moment_and_resumed_gives_the_same_row(uninterrupted, tmp_path, function, call, half):
    root, whole = uninterrupted
    argv = flags(root, tmp_path) + ["--checkpoint-every", "1"]
    die_at(function, call, argv, half)
    assert not list(tmp_path.rglob("*.csv"))  # no row from the killed run
    if half:
        assert list(tmp_path.rglob("checkpoints/.*.killed"))  # the half-written temporary is there...
        assert checkpoint(tmp_path)["epoch"] == 2  # ...and the previous checkpoint whole
    proc = launch(argv + ["--resume"])
    assert "resuming after epoch" in proc.stdout
    assert not list(tmp_path.rglob("checkpoints/.*"))  # stale temporaries removed
    pd.testing.assert_frame_equal(whole, pd.read_csv(only(tmp_path, "W2-INT3-IGN1.csv")))
    log = only_log(tmp_path)
    assert [e["epoch"] for e in log["epochs"]] == [1, 2, 3, 4, 5] and len(log["intervals"]) == 1
    assert losses(log) == uninterrupted_losses(root)  # every epoch's training loss, not only 20 test images' accuracy


def test_killed_mid_interval_keeps_the_window_state(uninterrupted, tmp_path):
    root, whole = uninterrupted
    argv = flags(root, tmp_path) + ["--checkpoint-every", "1"]
    die_at("train.train_epoch", 5, argv)  # as epoch 5 starts: the checkpoint holds epochs 3-4 of the interval
    state = checkpoint(tmp_path)
    assert state["epoch"] == 4 and state["window"] == 1 and state["partition"] is not None
    assert state["recorded"]["loss"].shape == (67, 2)
    proc = launch(argv + ["--resume"])
    assert "resuming after epoch 4" in proc.stdout
    log = only_log(tmp_path)
    assert log["resumed_at_epoch"] == [5] and len(log["resume_provenance"]) == 1
    pd.testing.assert_frame_equal(whole, pd.read_csv(only(tmp_path, "W2-INT3-IGN1.csv")))
    assert losses(log) == uninterrupted_losses(root)


def one_rank_per_worker(argv: list[str]) -> list[str]:
    i = argv.index("--emulate-workers")
    return argv[:i] + argv[i + 2:]


def test_a_run_resumes_on_another_number_of_processes(uninterrupted, tmp_path):
    """Killed under 2-rank torchrun at the end of warmup and resumed as one process emulating both
    workers, or killed emulated mid-interval and resumed under torchrun: each writes its row, and what
    --save-partitions lists as trained is each process's share of the window, the part before the
    kill included (the warmup: every example; after: each process's partitions)."""
    root, _ = uninterrupted
    extra = ["--checkpoint-every", "1", "--save-partitions"]
    to_one = flags(root, tmp_path / "to-one") + extra
    launch(["train.train_epoch", "3", "--", *one_rank_per_worker(to_one)], 2, script="tests/die_at.py", check=False)
    assert checkpoint(tmp_path / "to-one")["epoch"] == 2
    to_two = flags(root, tmp_path / "to-two") + extra
    die_at("train.train_epoch", 4, to_two)
    assert checkpoint(tmp_path / "to-two")["epoch"] == 3
    launch(to_one + ["--resume"])
    launch(one_rank_per_worker(to_two) + ["--resume"], 2)
    for name, processes in (("to-one", 1), ("to-two", 2)):
        assert len(pd.read_csv(only(tmp_path / name, "W2-INT3-IGN1.csv"))) == 1
        warmup, interval = partitions(tmp_path / name)["windows"]
        assert sorted(torch.cat(warmup["trained"]).unique().tolist()) == list(range(67))
        part = interval["partition"]
        mine = [torch.cat(part[r * 2 // processes:(r + 1) * 2 // processes]) for r in range(processes)]
        assert [t.tolist() for t in interval["trained"]] == [sorted(m.tolist()) for m in mine]


def test_a_moved_results_folder_resumes_there(uninterrupted, tmp_path):
    root, whole = uninterrupted
    die_at("train.train_epoch", 4, flags(root, tmp_path / "before") + ["--checkpoint-every", "1"])
    shutil.move(tmp_path / "before", tmp_path / "after")
    launch(flags(root, tmp_path / "after") + ["--checkpoint-every", "1", "--resume"])
    assert only(tmp_path / "after", "logs/*.json")  # the log went beside the results given, not to the old place
    assert not (tmp_path / "before").exists()
    pd.testing.assert_frame_equal(whole, pd.read_csv(only(tmp_path / "after", "W2-INT3-IGN1.csv")))


def test_resume_without_a_checkpoint_starts_afresh(cifar10_dir, tmp_path):
    root, _ = cifar10_dir
    proc = launch(flags(root, tmp_path) + ["--total-epochs", "3", "--interval-epochs", "1", "--resume"])
    assert "resuming" not in proc.stdout and len(pd.read_csv(only(tmp_path, "W2-INT1-IGN1.csv"))) == 1


@pytest.fixture
def a_checkpoint(cifar10_dir, tmp_path):
    root, _ = cifar10_dir
    argv = flags(root, tmp_path) + ["--total-epochs", "3", "--interval-epochs", "1", "--checkpoint-every", "1"]
    launch(argv)
    return argv, only(tmp_path, "checkpoints/*.pt")


def test_resuming_a_finished_run_appends_nothing(a_checkpoint, capsys):
    argv, path = a_checkpoint
    csv = only(path.parent.parent, "W2-INT1-IGN1.csv")
    dpt.main(argv + ["--resume"])
    assert "finished already" in capsys.readouterr().out
    assert len(pd.read_csv(csv)) == 1


def test_the_checkpoint_records_what_the_run_is(a_checkpoint):
    _, path = a_checkpoint
    state = torch.load(path, weights_only=True)
    group = state["optimizer"]["param_groups"][0]
    assert (group["lr"], group["momentum"], group["weight_decay"], group["nesterov"]) == (0.1, 0.9, 5e-4, True)
    assert state["args"]["seed"] == 33432 and state["provenance"]["packages"]["torch"]
    assert (
        state["provenance"]["git_commit"]
        == subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    )


def test_a_checkpoint_of_another_run_is_refused(a_checkpoint, capsys):
    argv, path = a_checkpoint
    before = path.read_bytes()
    line = run_expecting_error(argv + ["--resume", "--lr", "0.05"], capsys)
    assert "belongs to another run" in line and "--lr 0.1 -> 0.05" in line
    line = run_expecting_error(argv + ["--resume", "--amp", "bf16"], capsys)
    assert "--amp none -> bf16" in line
    line = run_expecting_error(argv + ["--resume", "--emulate-workers", "4"], capsys)
    assert "workers 2 -> 4" in line
    assert path.read_bytes() == before


def test_a_damaged_checkpoint_is_refused(a_checkpoint, capsys):
    argv, path = a_checkpoint
    path.write_bytes(path.read_bytes()[:1000])
    line = run_expecting_error(argv + ["--resume"], capsys)
    assert "corrupt checkpoint" in line and "delete it" in line
