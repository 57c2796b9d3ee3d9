"""Runs survive interruption: a run killed at any moment (during an epoch, at a repartition, while
writing a checkpoint) and resumed gives the row it would have given uninterrupted; a checkpoint of
another run, or a damaged one, is refused; a moved results folder resumes. The kills are real
(SIGKILL of a dpt.py process, tests/die_at.py); the uninterrupted runs and the resumes run in this
process (tests/runs.py: inprocess)."""
import shutil
import signal
import subprocess
import sys

import pandas as pd
import pytest
import torch

import checkpoint as saved
import dpt
import fakedata
from runs import ENV, REPO, checkpoint, inprocess, launch, only, only_log, partitions, run_expecting_error

CSV = "W2-INT3-IGN1-N2.csv"

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
    inprocess(flags(folder / "data", folder / "res"))
    return folder / "data", pd.read_csv(only(folder / "res", CSV))


@pytest.mark.parametrize(
    "function,call,half",
    [
        (
            "importance.Recorder.record",
            15,
            False,
        ),  # mid-epoch 4 (4 steps an epoch): mid-interval, after epoch 3's checkpoint
        ("schedule.repartition", 1, False),  # at the repartition after warmup
        ("results.write_bytes", 3, True),  # halfway through writing epoch 3's checkpoint
    ],
    ids=["during an epoch", "at a repartition", "during a checkpoint write"],
)
def test_killed_at_any_moment_and_resumed_gives_the_same_row(uninterrupted, tmp_path, function, call, half):
    """...and resumed elsewhere: the first case moves its results folder before resuming (the log goes
    beside the results given, not to the old place)."""
    root, whole = uninterrupted
    die_at(function, call, flags(root, tmp_path / "before") + ["--checkpoint-every", "1"], half)
    out = tmp_path / "before"
    if function == "importance.Recorder.record":
        shutil.move(out, tmp_path / "after")
        out = tmp_path / "after"
    argv = flags(root, out) + ["--checkpoint-every", "1"]
    assert not list(out.rglob("*.csv"))  # no row from the killed run
    if half:
        assert list(out.rglob("checkpoints/.*.killed"))  # the half-written temporary is there...
        assert checkpoint(out)["epoch"] == 2  # ...and the previous checkpoint whole
    stdout = inprocess(argv + ["--resume"])
    assert "resuming after epoch" in stdout
    assert not list(out.rglob("checkpoints/*"))  # stale temporaries removed, and the checkpoint once finished
    pd.testing.assert_frame_equal(whole, pd.read_csv(only(out, CSV)))
    log = only_log(out)
    assert [e["epoch"] for e in log["epochs"]] == [1, 2, 3, 4, 5] and len(log["intervals"]) == 1
    assert losses(log) == uninterrupted_losses(root)  # every epoch's training loss, not only 20 test images' accuracy


def test_killed_mid_interval_keeps_the_window_state(uninterrupted, tmp_path):
    root, whole = uninterrupted
    argv = flags(root, tmp_path) + ["--checkpoint-every", "1"]
    die_at("train.train_epoch", 5, argv)  # as epoch 5 starts: the checkpoint holds epochs 3-4 of the interval
    state = checkpoint(tmp_path)
    assert state["epoch"] == 4 and state["window"] == 1 and state["partition"] is not None
    assert state["recorded"]["loss"].shape == (67, 2)
    assert "resuming after epoch 4" in inprocess(argv + ["--resume"])
    log = only_log(tmp_path)
    assert log["resumed_at_epoch"] == [5] and len(log["resume_provenance"]) == 1
    pd.testing.assert_frame_equal(whole, pd.read_csv(only(tmp_path, CSV)))
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
    inprocess(to_one + ["--resume"])
    launch(one_rank_per_worker(to_two) + ["--resume"], 2)
    for name, processes in (("to-one", 1), ("to-two", 2)):
        assert len(pd.read_csv(only(tmp_path / name, CSV))) == 1
        warmup, interval = partitions(tmp_path / name)["windows"]
        assert sorted(torch.cat(warmup["trained"]).unique().tolist()) == list(range(67))
        part = interval["partition"]
        mine = [torch.cat(part[r * 2 // processes:(r + 1) * 2 // processes]) for r in range(processes)]
        assert [t.tolist() for t in interval["trained"]] == [sorted(m.tolist()) for m in mine]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 3-epoch run that kept its checkpoint (started with --resume and none there: afresh)."""
    folder = tmp_path_factory.mktemp("finished")
    fakedata.write_cifar10(folder / "data", n_train=67, n_test=20)
    argv = flags(folder / "data", folder / "res") + ["--total-epochs", "3", "--interval-epochs", "1",
                                                      "--checkpoint-every", "1", "--keep-checkpoint"]
    stdout = inprocess(argv + ["--resume"])
    assert "resuming" not in stdout and len(pd.read_csv(only(folder / "res", "W2-INT1-IGN1-N2.csv"))) == 1
    return folder, argv


@pytest.fixture
def a_checkpoint(finished, tmp_path):
    """A copy of the finished run's folder, to damage or to resume."""
    folder, argv = finished
    shutil.copytree(folder / "res", tmp_path / "res")
    argv = [str(tmp_path / "res") if a == str(folder / "res") else a for a in argv]
    return argv, only(tmp_path / "res", "checkpoints/*.pt")


def test_resuming_a_finished_run_appends_nothing(a_checkpoint, capsys):
    argv, path = a_checkpoint
    csv = only(path.parent.parent, "W2-INT1-IGN1-N2.csv")
    dpt.main(argv + ["--resume"])
    assert "finished already" in capsys.readouterr().out
    assert len(pd.read_csv(csv)) == 1


def test_the_checkpoint_records_what_the_run_is(a_checkpoint):
    _, path = a_checkpoint
    state = saved.read(path)
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
    assert path.read_bytes() == before


@pytest.mark.parametrize("damage", ["cut", "4 KiB overwritten"])
def test_a_damaged_checkpoint_is_refused(a_checkpoint, capsys, damage):
    """torch.load takes 4 KiB of damaged bytes inside a tensor without a word; the checksum does not."""
    argv, path = a_checkpoint
    raw = bytearray(path.read_bytes())
    if damage == "cut":
        raw = raw[:1000]
    else:
        raw[len(raw) // 2: len(raw) // 2 + 4096] = bytes(4096)
    path.write_bytes(bytes(raw))
    line = run_expecting_error(argv + ["--resume"], capsys)
    assert "corrupt checkpoint" in line and "delete it" in line


def test_resuming_on_other_data_is_refused(a_checkpoint, finished, tmp_path, capsys):
    """Other images under another --data-dir: the checkpoint's hash of the examples differs."""
    argv, path = a_checkpoint
    folder, _ = finished
    fakedata.write_cifar10(tmp_path / "other", n_train=67, n_test=20, seed=1)
    other = [str(tmp_path / "other") if a == str(folder / "data") else a for a in argv]
    line = run_expecting_error(other + ["--resume"], capsys)
    assert "was trained on other data (the train and test split" in line and "drop --resume" in line
    shutil.copytree(folder / "data", tmp_path / "moved")  # the same files elsewhere: the same data
    moved = [str(tmp_path / "moved") if a == str(folder / "data") else a for a in argv]
    assert "finished already" in inprocess(moved + ["--resume"])


@pytest.mark.parametrize("sig,status", [(signal.SIGINT, 75), (signal.SIGUSR1, 75), (signal.SIGTERM, 143)])
def test_a_signalled_run_says_what_it_kept_in_one_line_and_resumes_to_the_same_row(uninterrupted, tmp_path, sig,
                                                                                   status):
    """Ctrl-C or SIGUSR1 (Slurm's warning before a time limit): the epoch ends, a checkpoint is saved
    (none was asked for), one line, exit 75; SIGTERM: stop now, one line naming the last checkpoint."""
    root, whole = uninterrupted
    argv = flags(root, tmp_path) + (["--checkpoint-every", "1"] if sig == signal.SIGTERM else
                                    ["--checkpoint-every", "0"])
    proc = subprocess.Popen([sys.executable, "dpt.py", *argv], cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("epoch   2/5"):
            break
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == status, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"dpt.py: error: stopped by {signal.Signals(sig).name}"), err
    assert "its checkpoint after epoch" in lines[0] and "rerun with --resume to go on" in lines[0]
    assert "Traceback" not in out + err and not list(tmp_path.rglob("*.csv"))
    assert "resuming after epoch" in inprocess(argv + ["--resume"])
    pd.testing.assert_frame_equal(whole, pd.read_csv(only(tmp_path, CSV)))
    assert not list(tmp_path.rglob("checkpoints/*"))  # the finished run took its checkpoint and lock with it


MOMENTS = {  # where a signal comes: (function, call)
    "start-up": ("preflight.check", 1),
    "training": ("importance.Recorder.record", 15),
    "repartition": ("schedule.repartition", 1),
    "checkpoint write": ("checkpoint.write", 1),
    "log written, no row yet": ("results.append_row", 1),
}


@pytest.mark.parametrize("moment,sig", [(m, s) for m in MOMENTS for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP,
                                                                            signal.SIGUSR1)],
                         ids=lambda v: v if isinstance(v, str) else signal.Signals(v).name)
def test_every_signal_at_every_moment_ends_in_one_line_and_resumes_to_the_same_row(uninterrupted, tmp_path, moment,
                                                                                    sig):
    """The exit status stops.py gives, one line (no traceback), never a log without its row, and
    --resume gives the row of the uninterrupted run."""
    root, whole = uninterrupted
    argv = flags(root, tmp_path) + ["--checkpoint-every", "1"]
    function, call = MOMENTS[moment]
    proc = subprocess.run([sys.executable, "tests/die_at.py", function, str(call), "--signal", sig.name, "--", *argv],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr[-2000:]
    logs, rows = list(tmp_path.rglob("logs/*.json")), list(tmp_path.rglob(CSV))
    if moment == "log written, no row yet":  # held until both are whole: the run finished
        assert proc.returncode == 0 and f"{sig.name} came while the results were written" in proc.stdout
        assert len(logs) == 1 and len(rows) == 1
    else:
        later = sig in (signal.SIGINT, signal.SIGUSR1) and moment in ("training", "repartition", "checkpoint write")
        expected = 75 if sig == signal.SIGUSR1 else 75 if later else 128 + sig
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == expected and len(lines) == 1, proc.stderr[-2000:]
        assert lines[0].startswith(f"dpt.py: error: stopped by {sig.name}"), lines
        assert logs == [] and rows == []
    inprocess(argv + ["--resume"])
    pd.testing.assert_frame_equal(whole, pd.read_csv(only(tmp_path, CSV)))
    assert len(list(tmp_path.rglob("logs/*.json"))) == 1
