"""Runs survive interruption: a run killed mid-interval and resumed gives the row it would have
given uninterrupted; a checkpoint of another run, or a damaged one, is refused."""
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

import dpt
from runs import REPO, checkpoint, launch, only, only_log


def flags(root, out):
    # interval mode: warmup epochs 1-2, one interval of epochs 3-5
    return ["--dataset", "cifar10", "--data-dir", str(root), "--results-dir", str(out), "--batch-size", "10",
            "--total-epochs", "5", "--warmup-epochs", "2", "--interval-epochs", "3", "--ignore-epochs", "1",
            "--emulate-workers", "2", "--deterministic", "--seed", "33432"]


def kill_after_checkpoint(argv: list[str], folder, epoch: int) -> int:
    """Start dpt.py, SIGKILL it as soon as its checkpoint reaches `epoch`; return the checkpoint's epoch."""
    proc = subprocess.Popen([sys.executable, "dpt.py", *argv], cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    path, seen = None, 0
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        found = list(folder.rglob("checkpoints/*.pt"))
        if found and found[0].stat().st_mtime != seen:
            seen = found[0].stat().st_mtime
            path = found[0]
            if torch.load(path, weights_only=True)["epoch"] >= epoch:
                break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return torch.load(path, weights_only=True)["epoch"]


def test_killed_mid_interval_and_resumed_gives_the_same_row(cifar10_dir, tmp_path):
    root, _ = cifar10_dir
    launch(flags(root, tmp_path / "whole"))
    killed = tmp_path / "killed"
    stopped_at = kill_after_checkpoint(flags(root, killed) + ["--checkpoint-every", "1"], killed, epoch=3)
    assert 3 <= stopped_at < 5  # inside the interval
    assert not list(killed.rglob("*.csv"))  # no row from the killed run
    state = checkpoint(killed)
    assert state["window"] == 1 and state["partition"] is not None and state["matrix"].shape[1] == stopped_at - 2

    proc = launch(flags(root, killed) + ["--checkpoint-every", "1", "--resume"])
    assert f"resuming after epoch {stopped_at}" in proc.stdout
    whole = pd.read_csv(only(tmp_path / "whole", "W2-INT3.csv"))
    resumed = pd.read_csv(only(killed, "W2-INT3.csv"))
    assert len(resumed) == 1
    pd.testing.assert_frame_equal(whole, resumed)
    log = only_log(killed)
    assert log["resumed_at_epoch"] == [stopped_at + 1] and [e["epoch"] for e in log["epochs"]] == [1, 2, 3, 4, 5]
    assert len(log["intervals"]) == 1  # the partition came from the checkpoint, not a second repartition


def test_resume_without_a_checkpoint_starts_afresh(cifar10_dir, tmp_path):
    root, _ = cifar10_dir
    proc = launch(flags(root, tmp_path) + ["--total-epochs", "3", "--interval-epochs", "1", "--resume"])
    assert "resuming" not in proc.stdout and len(pd.read_csv(only(tmp_path, "W2-INT1.csv"))) == 1


@pytest.fixture
def a_checkpoint(cifar10_dir, tmp_path):
    root, _ = cifar10_dir
    argv = flags(root, tmp_path) + ["--total-epochs", "3", "--interval-epochs", "1", "--checkpoint-every", "1"]
    launch(argv)
    return argv, only(tmp_path, "checkpoints/*.pt")


def run_expecting_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        dpt.main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err.strip()


def test_resuming_a_finished_run_appends_nothing(a_checkpoint, capsys):
    argv, path = a_checkpoint
    csv = only(path.parent.parent, "W2-INT1.csv")
    dpt.main(argv + ["--resume"])
    assert "finished already" in capsys.readouterr().out
    assert len(pd.read_csv(csv)) == 1


def test_a_checkpoint_of_another_run_is_refused(a_checkpoint, capsys):
    argv, path = a_checkpoint
    before = path.read_bytes()
    line = run_expecting_error(argv + ["--resume", "--lr", "0.05"], capsys)
    assert "belongs to another run" in line and "--lr 0.1 -> 0.05" in line
    line = run_expecting_error(argv + ["--resume", "--emulate-workers", "4"], capsys)
    assert "workers 2 -> 4" in line
    assert path.read_bytes() == before


def test_a_damaged_checkpoint_is_refused(a_checkpoint, capsys):
    argv, path = a_checkpoint
    path.write_bytes(path.read_bytes()[:1000])
    line = run_expecting_error(argv + ["--resume"], capsys)
    assert "corrupt checkpoint" in line and "delete it" in line
