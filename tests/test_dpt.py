"""The trainer: its schedule, its flags, and real runs (torchrun with gloo, and plain python) on a
tiny CIFAR-10 written in the real on-disk format. Bad input: tests/test_bad_input.py."""
import contextlib
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

import checkpoint
import dpt
import flags
import results
import schedule
import workload
from runs import ENV, REPO, TINY, inprocess, launch, only_log, partitions


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
    plan = [(w.first_epoch, w.epochs) for w in schedule.windows(T, W, I)]
    assert plan == expected
    repartition_epochs = [start + 1 for start, _ in plan[1:]]  # 1-based epochs that start with a new partition
    assert (
        repartition_epochs == list(range(W + 1, W + 1 + I * ((T - W) // I), I)) if W < T else repartition_epochs == []
    )


def test_once_mode_is_one_interval_after_warmup():
    args = flags.parse_args(["--warmup-epochs", "30", "--repartition", "once"])
    assert args.interval_epochs == 70
    assert schedule.windows(args.total_epochs, args.warmup_epochs, args.interval_epochs) == \
        [schedule.Window(0, 0, 30), schedule.Window(1, 30, 70)]


def test_defaults_are_the_papers_settings():
    args = flags.parse_args([])
    assert (args.batch_size, args.lr, args.momentum, args.weight_decay) == (256, 0.1, 0.9, 5e-4)
    assert (args.total_epochs, args.ignore_epochs, args.sampler_seed, args.eval_protocol) == (100, 5, 0, "paper")
    assert args.repartition == "interval" and args.seed in workload.PAPER_SEEDS


def test_paper_heuristic_names_are_accepted():
    assert flags.parse_args(["--heuristic", "roundrobin"]).heuristic == "stripes"
    assert flags.parse_args(["--heuristic", "steps"]).heuristic == "blocks"


def test_vanilla_runs_all_epochs_as_warmup():
    args = flags.parse_args(["--heuristic", "none", "--total-epochs", "50"])
    assert (args.warmup_epochs, args.interval_epochs, args.repartition) == (50, 0, "once")


# ---- real runs --------------------------------------------------------------------------------

def test_run_defining_flags_come_from_the_parser():
    """A new flag defines the run unless marked operational; --amp does (a float32 run must not resume in bf16)."""
    defining = flags.run_defining()
    assert {"amp", "lr", "seed", "measure", "heuristic", "eval_protocol", "subset"} <= set(defining)
    assert not {"results_dir", "data_dir", "resume", "emulate_workers", "data_on_device", "wandb"} & set(defining)
    assert set(defining) | flags.OPERATIONAL == set(vars(flags.parse_args([])))


@pytest.mark.slow
def test_torchrun_two_ranks_gloo(cifar10_dir, tmp_path):
    """Two ranks, with a measure that reads the "correct" channel and a heuristic that reads the labels."""
    root, arrays = cifar10_dir
    out = tmp_path / "res"
    launch([*TINY, "--measure", "forgetting", "--heuristic", "class-stripes", "--data-dir", str(root),
            "--results-dir", str(out), "--save-partitions", "--seed", "8271"], 2)
    folder = out / "CIFAR10-ResNet18-ClassStripes-Forgetting"
    frame = pd.read_csv(folder / "W2-INT1-IGN1-N2.csv")
    assert list(frame.columns) == results.columns(4) and len(frame) == 1
    row = frame.iloc[0]
    assert (row.id, row.warmup_epochs, row.interval_epochs) == (8271, 2, 1)
    assert (row.measure, row.heuristic, row.model, row.dataset) == ("forgetting", "class-stripes", "resnet18",
                                                                    "cifar10")
    accuracies = [row[f"epoch_{e}"] for e in range(1, 5)]
    assert all(a % 5 == 0 for a in accuracies)  # 20 test examples
    assert row.best_accuracy == max(accuracies) and row.best_epoch == accuracies.index(max(accuracies)) + 1

    log = only_log(folder)
    assert log["world_size"] == 2 and log["workers"] == 2 and log["args"]["seed"] == 8271
    assert [e["test_accuracy"] for e in log["epochs"]] == accuracies
    assert [i["start_epoch"] for i in log["intervals"]] == [3, 4]
    assert all(i["partition_sizes"] == [34, 33] and i["heuristic_s"] >= 0 for i in log["intervals"])
    assert all(e["tracking_s"] > 0 for e in log["epochs"]) and log["total_training_s"] > 0
    assert log["provenance"]["packages"]["torch"] == torch.__version__.split("+")[0] and log["provenance"]["git_commit"]

    saved = partitions(folder)
    warmup, *intervals = saved["windows"]
    assert sorted(torch.cat(warmup["trained"]).unique().tolist()) == list(range(67))
    labels = torch.from_numpy(arrays["train"][1])
    for window in intervals:
        part = window["partition"]
        # class Stripes over the examples sorted by importance: within a class, each worker's examples
        # come most important first, and the workers get the same class mix
        for p in part:
            for c in range(10):
                scores = window["importance"][p[labels[p] == c]]
                assert bool((scores[1:] <= scores[:-1]).all())
        counts = torch.stack([torch.bincount(labels[p], minlength=10) for p in part])
        assert (counts.max(dim=0).values - counts.min(dim=0).values).max() <= 1  # the same class mix on both workers
        # after warmup each rank trained exactly its partition: every example of it, nothing else
        for rank in range(2):
            assert window["trained"][rank].tolist() == sorted(part[rank].tolist())
    # movement: from interval 1 to interval 2, what left each worker's partition and what joined it
    before, after = ([set(p.tolist()) for p in w["partition"]] for w in intervals)
    moved = log["intervals"][1]["movement"]
    assert moved["left"] == [len(before[w] - after[w]) for w in range(2)]
    assert moved["joined"] == [len(after[w] - before[w]) for w in range(2)] and moved["moved"] == sum(moved["joined"])
    assert intervals[1]["movement"] == moved


@pytest.mark.slow
def test_torchrun_one_rank_blocks(cifar10_dir, tmp_path):
    root, _ = cifar10_dir
    out = tmp_path / "res"
    launch([*TINY, "--heuristic", "steps", "--measure", "average", "--repartition", "once", "--data-dir", str(root),
            "--results-dir", str(out)], 1)
    frame = pd.read_csv(out / "CIFAR10-ResNet18-Blocks-Average" / "W2-INT2-IGN1-N1.csv")
    assert list(frame.columns) == results.columns(4)
    assert frame.iloc[0][["heuristic", "measure", "warmup_epochs", "interval_epochs"]].tolist() == [
        "steps",
        "average",
        2,
        2,
    ]
    log = only_log(out / "CIFAR10-ResNet18-Blocks-Average")
    assert log["world_size"] == 1 and [i["start_epoch"] for i in log["intervals"]] == [3]


@pytest.mark.slow
def test_plain_python_baseline_with_wandb_offline(cifar10_dir, tmp_path):
    root, _ = cifar10_dir
    out = tmp_path / "res"
    proc = launch(["--dataset", "cifar10", "--heuristic", "none", "--total-epochs", "2", "--batch-size", "16",
                   "--eval-protocol", "standard", "--data-dir", str(root), "--results-dir", str(out),
                   "--wandb", "--wandb-name", "tiny-baseline"], None,
                  {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true"})
    path = out / "Baselines" / "c10-vanilla-resnet18-total2-N1.csv"
    assert f"row appended to {path}" in proc.stdout
    row = pd.read_csv(path).iloc[0]
    assert (row.heuristic, row.warmup_epochs, row.interval_epochs) == ("none", 2, 0)
    assert only_log(out / "Baselines")["intervals"] == []
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


def ranks_of(marker: str, deadline: float) -> dict[int, int]:
    """pid of each dpt.py rank that torchrun started (read from their environments)."""
    while time.time() < deadline:
        found = {}
        for pid in subprocess.run(["pgrep", "-f", "dpt.py"], capture_output=True, text=True).stdout.split():
            try:
                env = dict(kv.split("=", 1) for kv in open(f"/proc/{pid}/environ").read().split("\0") if "=" in kv)
            except OSError:
                continue
            if "RANK" in env and env.get("DPT_TEST") == marker:
                found[int(env["RANK"])] = int(pid)
        if len(found) == 2:
            return found
        time.sleep(0.2)
    raise AssertionError("torchrun's ranks did not start")


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["killed", "hung"])
def test_a_rank_that_dies_or_hangs_does_not_block_the_other(cifar10_dir, tmp_path, fault):
    """SIGKILL one rank, or SIGSTOP it (a hung rank): the run fails within a bounded time (torchrun stops
    the survivors when a rank dies; a collective waits at most --timeout seconds for a hung one)."""
    root, _ = cifar10_dir
    argv = [*TINY, "--total-epochs", "200", "--warmup-epochs", "199", "--data-dir", str(root),
            "--results-dir", str(tmp_path), "--timeout", "10"]
    marker = str(time.time_ns())  # the ranks inherit it through torchrun's environment: how we find them
    torchrun = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "dpt.py", *argv],
        cwd=REPO, env={**ENV, "DPT_TEST": marker}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    try:
        ranks = ranks_of(marker, time.time() + 120)
        # training: rank 0's first line comes once the process group is up (before it, a stopped rank is
        # a rendezvous that never completes, which is not what this tests)
        while "results ->" not in torchrun.stdout.readline():
            assert torchrun.poll() is None, "torchrun ended before training"
        time.sleep(1)
        os.kill(ranks[1], signal.SIGKILL if fault == "killed" else signal.SIGSTOP)
        started = time.time()
        printed = torchrun.communicate(timeout=240)[1]
        waited = time.time() - started
    finally:
        if torchrun.poll() is None:
            os.killpg(torchrun.pid, signal.SIGKILL)
    # a dead rank: torchrun notices within seconds; a hung one: --timeout (10 s), then torchrun's own grace
    # period to stop a process that ignores SIGTERM (30 s), plus its polling
    assert torchrun.returncode != 0 and waited < (30 if fault == "killed" else 10 + 30 + 60), (waited, printed[-2000:])
    assert not list(tmp_path.rglob("*.csv"))


@pytest.mark.slow
def test_a_diverged_run_stops_in_one_line_and_writes_no_row(cifar10_dir, tmp_path, capsys):
    root, _ = cifar10_dir
    argv = [*TINY, "--data-dir", str(root), "--results-dir", str(tmp_path), "--heuristic", "none", "--lr", "1e30"]
    with pytest.raises(SystemExit) as stopped:
        dpt.main(argv)
    assert stopped.value.code == 1
    assert "error: training diverged in epoch 1" in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.csv"))


@pytest.mark.slow
@pytest.mark.parametrize("failing", ["write_json", "append_row"])
def test_a_row_and_its_log_are_written_together_or_not_at_all(cifar10_dir, tmp_path, monkeypatch, capsys, failing):
    """A full disk at the end: no row without its log (the sweep would count a failed run done), no log
    without its row, exit 1 and one line."""
    root, _ = cifar10_dir

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(results, failing, full)
    with pytest.raises(SystemExit) as stopped:
        dpt.main([*TINY, "--total-epochs", "3", "--data-dir", str(root), "--results-dir", str(tmp_path)])
    assert stopped.value.code == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "the run finished but its results could not be written" in line and "No space left" in line
    assert not [p for p in tmp_path.rglob("*.csv") if p.stat().st_size] and not list(tmp_path.rglob("logs/*.json"))


@pytest.mark.slow
def test_a_checkpoint_that_cannot_be_written_ends_the_run_in_one_line(cifar10_dir, tmp_path, monkeypatch, capsys):
    """A full disk at a checkpoint mid-run: exit 1 and one line saying where, no row, no traceback."""
    root, _ = cifar10_dir

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(checkpoint, "write", full)
    with pytest.raises(SystemExit) as stopped:
        dpt.main([*TINY, "--total-epochs", "3", "--checkpoint-every", "1", "--data-dir", str(root),
                  "--results-dir", str(tmp_path)])
    assert stopped.value.code == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("dpt.py: error: the checkpoint after epoch 1 could not be written (")
    assert "No space left on device" in line and "no row was written; no checkpoint was saved" in line
    assert not [p for p in tmp_path.rglob("*.csv") if p.stat().st_size]


@pytest.mark.slow
def test_ranks_die_with_a_torchrun_killed_by_sigkill(cifar10_dir, tmp_path):
    """torchrun's agent cannot stop its ranks when it is SIGKILLed; each rank asked the kernel for a
    SIGTERM when its parent dies (PR_SET_PDEATHSIG), so none trains on unsupervised."""
    root, _ = cifar10_dir
    argv = [*TINY, "--total-epochs", "200", "--warmup-epochs", "199", "--data-dir", str(root),
            "--results-dir", str(tmp_path)]
    marker = str(time.time_ns())
    torchrun = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "dpt.py", *argv],
        cwd=REPO, env={**ENV, "DPT_TEST": marker}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    try:
        ranks = ranks_of(marker, time.time() + 120)
        time.sleep(2)
        torchrun.kill()
        torchrun.wait()
        deadline = time.time() + 30
        while any(alive(pid) for pid in ranks.values()) and time.time() < deadline:
            time.sleep(0.2)
        assert not any(alive(pid) for pid in ranks.values()), ranks
    finally:
        for pid in ranks.values() if "ranks" in locals() else ():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert not list(tmp_path.rglob("*.csv"))


def alive(pid: int) -> bool:
    """Whether `pid` is a process that has not exited (a zombie has)."""
    try:
        return open(f"/proc/{pid}/stat").read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
def test_a_scoring_pass_measure_scores_at_each_repartition_and_logs_its_cost(cifar10_dir, tmp_path):
    """The Data Diet protocol in a run: one pass over the training set in eval mode at each interval's
    start (its seconds logged beside the heuristic's), whose scores order the partition."""
    root, _ = cifar10_dir
    inprocess([*TINY, "--measure", "dd-el2n", "--emulate-workers", "2", "--data-dir", str(root), "--results-dir",
               str(tmp_path), "--save-partitions"])
    folder = tmp_path / "CIFAR10-ResNet18-Stripes-DDEL2N"
    log = only_log(folder)
    assert [i["start_epoch"] for i in log["intervals"]] == [3, 4] and all(i["scoring_s"] > 0 for i in log["intervals"])
    for window in partitions(folder)["windows"][1:]:
        scores = window["importance"]
        assert (scores >= 0).all() and (scores <= 2**0.5).all() and scores.unique().numel() > 1  # EL2N values
    assert len(pd.read_csv(folder / "W2-INT1-IGN1-N2.csv")) == 1
