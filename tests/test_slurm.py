"""run-experiments.sh --slurm against a real single-node Slurm (tests/slurm_cluster.py): a CPU-sized
selection gives exactly the local sweep's rows, concurrent array tasks append to one CSV without
loss or duplicates, a task asked to stop before its time limit (SIGUSR1) and a task killed and
requeued both finish to the uninterrupted run's row; --status; and every bad input in one line
before anything is submitted."""
import shutil
import subprocess
import time

import pandas as pd
import pytest

import fakedata
import results
import slurm_cluster
import sweep as sweep_module
from runs import ENV, REPO

pytestmark = pytest.mark.slow
SELECTION = ["--table", "1", "--epochs", "3", "--warmups", "1", "--intervals", "1", "2", "--ignore", "0", "--seeds",
             "1", "2"]


def sweep(*argv: str, env=None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["bash", "run-experiments.sh", *argv], cwd=REPO, capture_output=True, text=True,
                          timeout=900, env=env or ENV)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def rows(folder) -> dict:
    """Every row under `folder`, by (result file, seed)."""
    out = {}
    for path in sorted(folder.rglob("*.csv")):
        for row in pd.read_csv(path).to_dict("records"):
            key = (str(path.relative_to(folder)), row["id"])
            assert key not in out, f"{key} twice"
            out[key] = row
    return out


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    slurm_cluster.require()
    c = slurm_cluster.Cluster(tmp_path_factory.mktemp("slurm")).start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    fakedata.write_cifar10(root, n_train=67, n_test=20)
    return root


def test_a_selection_through_slurm_gives_the_local_rows(cluster, data, tmp_path):
    tail = ["--", "--data-dir", str(data), "--batch-size", "10"]
    sweep(*SELECTION, "--gpus", "0", "--per-gpu", "2", "--results-dir", str(tmp_path / "local"), *tail)
    out = tmp_path / "slurm"
    submitted = sweep(*SELECTION, "--slurm", "--gpus-per-run", "0", "--per-gpu", "2", "--results-dir", str(out),
                      *tail, env=cluster.env)
    assert "6 runs (0 already have their row, 6 to go)" in submitted.stdout
    assert "3 array tasks for 6 runs" in submitted.stdout and "--status" in submitted.stdout
    cluster.wait(600)
    mine, theirs = rows(out), rows(tmp_path / "local")
    assert len(mine) == 6 and mine.keys() == theirs.keys()
    assert mine == theirs  # the same rows: none lost, none twice, same numbers
    status = sweep(*SELECTION, "--status", "--results-dir", str(out), *tail, env=cluster.env)
    assert status.stdout.strip().endswith("6 runs: 6 finished, 0 running, 0 failed, 0 pending")
    shown = submitted.stdout.split("` and `")[1].split("`")[0]  # the command the submission printed runs
    again = subprocess.run(["bash", "-c", shown], cwd=REPO, capture_output=True, text=True, env=cluster.env)
    assert again.returncode == 0 and "6 finished" in again.stdout, again.stderr
    again = sweep(*SELECTION, "--slurm", "--gpus-per-run", "0", "--results-dir", str(out), *tail, env=cluster.env)
    assert "nothing to submit: every run has its row" in again.stdout


def started(log, epoch: int, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if log.is_file() and f"epoch {epoch:3d}/" in log.read_text():
            return
        time.sleep(0.5)
    raise TimeoutError(f"{log} never reached epoch {epoch}")


def test_a_task_stopped_before_its_limit_or_killed_requeues_and_finishes_to_the_same_row(cluster, tmp_path):
    fakedata.write_cifar10(tmp_path / "data", n_train=400, n_test=40)
    selection = ["--table", "1", "--epochs", "6", "--warmups", "2", "--intervals", "2", "--ignore", "0", "--seeds",
                 "1", "2", "--no-baselines", "--checkpoint-every", "1"]
    tail = ["--", "--data-dir", str(tmp_path / "data"), "--batch-size", "25"]
    sweep(*selection, "--gpus", "0", "--per-gpu", "2", "--results-dir", str(tmp_path / "local"), *tail)
    out = tmp_path / "slurm"
    submitted = sweep(*selection, "--slurm", "--gpus-per-run", "0", "--results-dir", str(out), *tail, env=cluster.env)
    job = submitted.stdout.split("submitted job ")[1].split(":")[0]
    (logs,) = (out / "slurm-logs").iterdir()  # the submission's own folder
    started(logs / "line1.log", 2)
    started(logs / "line2.log", 2)
    # task 1: what Slurm sends before a time limit (--signal=B:USR1): a checkpoint, then a requeue
    cluster.run("scancel", "--batch", "--signal=USR1", f"{job}_1")
    # task 2: killed and requeued mid-run, as a preemption: it resumes from its last checkpoint
    cluster.run("scontrol", "requeue", f"{job}_2")
    cluster.wait(900)
    assert rows(out) == rows(tmp_path / "local")
    task1 = (logs / "line1.log").read_text()
    assert "stopped by SIGUSR1 after epoch" in task1 and "resuming after epoch" in task1
    assert "resuming after epoch" in (logs / "line2.log").read_text()
    assert "requeueing to resume" in "".join(p.read_text() for p in logs.glob(f"{job}_1.out"))
    assert [line.split()[1] for line in (logs / "exits.txt").read_text().splitlines() if line.startswith("1 ")] \
        == ["75", "0"]


def test_a_failed_run_is_named_with_its_reason(cluster, data, tmp_path):
    out = tmp_path / "slurm"
    tail = ["--", "--data-dir", str(data), "--batch-size", "10"]
    selection = ["--table", "1", "--epochs", "3", "--warmups", "1", "--intervals", "1", "--ignore", "0", "--seeds",
                 "1", "--baselines-only"]
    sweep(*selection, "--slurm", "--gpus-per-run", "0", "--results-dir", str(out), *tail, env=cluster.env)
    cluster.wait(300)
    (out / "Baselines" / "c10-vanilla-resnet18-total3.csv").unlink()  # the row gone: the run is pending again
    (data / "cifar-10-batches-py" / "data_batch_1").rename(data / "moved")  # and its data with it
    try:
        sweep(*selection, "--slurm", "--gpus-per-run", "0", "--results-dir", str(out), *tail, env=cluster.env,
              check=False)
        status = sweep(*selection, "--status", "--results-dir", str(out), *tail, env=cluster.env).stdout
        assert "1 runs: 0 finished, 0 running, 0 failed, 1 pending" in status  # refused up front: nothing ran
    finally:
        (data / "moved").rename(data / "cifar-10-batches-py" / "data_batch_1")
    last = sorted((out / "slurm-logs").iterdir())[-1]  # the latest submission's folder
    (last / "exits.txt").write_text("1 1\n")
    (last / "line1.log").write_text("dpt.py: error: training diverged in epoch 2; lower --lr\n")
    status = sweep(*selection, "--status", "--results-dir", str(out), *tail, env=cluster.env).stdout
    assert "0 finished, 0 running, 1 failed, 0 pending" in status
    assert "failed Baselines/c10-vanilla-resnet18-total3-seed1: training diverged in epoch 2; lower --lr" in status


def test_bad_slurm_input_is_one_line_before_anything_is_submitted(cluster, tmp_path):
    base = ["--table", "1", "--seeds", "1", "--results-dir", str(tmp_path / "res")]
    bad = sweep(*base, "--slurm", "--partition", "nosuch", env=cluster.env, check=False)
    assert bad.returncode == 2 and bad.stderr.strip() == (
        "run-experiments.sh: error: --partition nosuch does not exist on this cluster; sinfo lists debug")
    bare = tmp_path / "bin"  # a PATH with what the sweep needs, and no Slurm
    bare.mkdir()
    for program in ("bash", "dirname", "stat"):
        (bare / program).symlink_to(shutil.which(program))
    no_slurm = {**ENV, "PATH": str(bare)}
    missing = sweep(*base, "--slurm", env=no_slurm, check=False)
    assert missing.returncode == 2 and "--slurm needs Slurm's sbatch on PATH" in missing.stderr
    log = tmp_path / "res" / "CIFAR10-ResNet18-Stripes-Variance" / "logs" / "trial.json"
    results.write_json(log, {"epochs": [{"epoch_s": 900.0}, {"epoch_s": 1100.0}]})
    short = sweep(*base, "--slurm", "--time", "20:00", env=cluster.env, check=False)
    assert short.returncode == 2 and "--time 20:00 (1200 s) is shorter than one epoch (1000 s" in short.stderr
    nodes = sweep(*base, "--slurm", "--launch", "torchrun", "--workers", "4", "--nodes", "2", "--dry-run",
                  env=cluster.env)
    assert "not a shared filesystem" in nodes.stderr and "#SBATCH --nodes=2" in nodes.stdout
    assert "srun --nodes=\"$SLURM_JOB_NUM_NODES\"" in nodes.stdout and "PET_RDZV_BACKEND=c10d" in nodes.stdout
    assert cluster.jobs() == [] and not (tmp_path / "res" / "slurm.sbatch").exists()  # nothing submitted


@pytest.mark.parametrize("argv,message", [
    (["--partition", "gpu"], "--partition, --account, --time, --nodes, --gpus-per-run, --cpus-per-task and "
                             "--sbatch-line are for --slurm"),
    (["--slurm", "--nodes", "3"], "--nodes 3 must be at least 1 and divide --workers 4"),
    (["--slurm", "--nodes", "2"], "--nodes 2 spreads one run's ranks over nodes, which needs --launch torchrun"),
    (["--slurm", "--time", "soon"], "--time soon is not a Slurm time"),
    (["--slurm", "--time", "4"], "--time 4 leaves no time to train"),
    (["--slurm", "--launch", "torchrun", "--nodes", "2", "--per-gpu", "2"], "runs spread over nodes go one per task"),
    (["--slurm", "--time", "99999999"], "--time 99999999 is over a year; pass UNLIMITED"),
    (["--slurm", "--time", "1-30:00:00"], "a field is out of its range"),
    (["--slurm", "--cpus-per-task", "-5"], "--cpus-per-task must be at least 1 (got -5)"),
    (["--slurm", "--partition", "gpu long"], "--partition 'gpu long' is not a Slurm name"),
    (["--slurm", "--account", "a;touch x"], "--account 'a;touch x' is not a Slurm name"),
    (["--slurm", "--sbatch-line=--wrap=rm -rf /"], "give one option as --name=value"),
    (["--slurm", "--sbatch-line=--wrap=true"], "--wrap is run-experiments.sh's own (and runs a command of its own)"),
    (["--slurm", "--sbatch-line=--time=1:00:00"], "pass it as run-experiments.sh --time"),
    (["--slurm", "--sbatch-line", "#SBATCH -C h100"], "give one option as --name=value"),
    (["--slurm", "--sbatch-line=--qos=long\nrm -rf ~"], "holds a control character"),
])
def test_slurm_flags_are_checked(argv, message, tmp_path):
    proc = sweep("--table", "1", "--seeds", "1", "--dry-run", "--results-dir", str(tmp_path), *argv, check=False)
    assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not list(tmp_path.iterdir())  # nothing written


def test_a_results_folder_that_would_break_the_script_is_refused_and_runs_nothing(tmp_path):
    """A newline in --results-dir was a command in the generated script (it wrote the folder unquoted);
    quotes and spaces would break its #SBATCH --output line."""
    marker = tmp_path / "marker"
    for folder, says in ((f"{tmp_path}/res\ntouch {marker}", "holds a control character"),
                         (f"{tmp_path}/my results", "Slurm reads it from an #SBATCH line")):
        proc = sweep("--table", "1", "--seeds", "1", "--slurm", "--dry-run", "--results-dir", folder, check=False)
        assert proc.returncode == 2 and says in proc.stderr and not marker.exists(), proc.stderr
    ok = sweep("--table", "1", "--seeds", "1", "--slurm", "--dry-run", "--time", "UNLIMITED",
               "--results-dir", str(tmp_path / "res"))
    assert "#SBATCH --time=UNLIMITED" in ok.stdout


def test_a_later_submission_never_changes_a_queued_arrays_lines(tmp_path):
    """Each submission runs its own copy of the commands, and logs under its own folder: a second
    selection into the same folder (commands.txt rewritten) leaves the first array's lines as they were."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "sbatch").write_text("#!/bin/sh\necho 42\n")
    (fake / "sbatch").chmod(0o755)
    env = {**ENV, "PATH": f"{fake}:{ENV['PATH']}"}
    out = tmp_path / "res"
    fakedata.write_cifar10(tmp_path / "data", n_train=67, n_test=20)
    tail = ["--", "--data-dir", str(tmp_path / "data"), "--batch-size", "10"]
    first = sweep("--table", "1", "--seeds", "1", "--slurm", "--results-dir", str(out), *tail, env=env)
    (snapshot,) = out.glob("slurm-*.commands.txt")
    before = snapshot.read_text()
    sweep("--table", "2", "--seeds", "1", "2", "--slurm", "--results-dir", str(out), *tail, env=env)
    assert snapshot.read_text() == before and (out / "commands.txt").read_text() != before
    (script,) = [p for p in out.glob("slurm-*.sbatch") if p.name == snapshot.name.replace(".commands.txt", ".sbatch")]
    assert snapshot.name in script.read_text() and "submitted job 42" in first.stdout
    assert len(list((out / "slurm-logs").iterdir())) == 2


def test_two_submissions_in_one_second_get_their_own_files(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep_module.time, "strftime", lambda _: "20261207-120000")
    stamps = [sweep_module.claim_stamp(tmp_path) for _ in range(3)]
    assert stamps == ["20261207-120000", "20261207-120000-2", "20261207-120000-3"]
    assert sorted(p.name for p in (tmp_path / "slurm-logs").iterdir()) == stamps
    assert len({sweep_module.submission_files(tmp_path, s) for s in stamps}) == 3


def test_the_dry_run_prints_the_script_with_every_option(tmp_path):
    proc = sweep("--study", "measures", "--seeds", "1", "--slurm", "--dry-run", "--partition", "gpu", "--account",
                 "proj42", "--time", "1-02:00:00", "--per-gpu", "4", "--cpus-per-task", "8",
                 "--sbatch-line=--qos=long", "--sbatch-line", "#SBATCH --constraint=h100", "--results-dir",
                 str(tmp_path))
    script = proc.stdout[proc.stdout.index("#!/bin/bash"):]
    for line in ("#SBATCH --array=1-12", "#SBATCH --partition=gpu", "#SBATCH --account=proj42",
                 "#SBATCH --time=1-02:00:00", "#SBATCH --gres=gpu:1", "#SBATCH --cpus-per-task=8",
                 "#SBATCH --qos=long", "#SBATCH --constraint=h100", "#SBATCH --requeue", "#SBATCH --signal=B:USR1@300"):
        assert line in script.splitlines(), line
    listed = (tmp_path / "commands.txt").read_text().splitlines()
    assert len(listed) == 45 and script.count("sed -n") == 2  # 45 runs, 4 per task: 12 tasks
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0  # valid bash


def test_status_counts_a_local_sweeps_failures_too(tmp_path):
    run = "W10-INT1-seed1"
    (tmp_path / "sweep-failures.txt").write_text(f"2026-12-04 10:00:00 exit 1 {run} log /x/y.log\n"
                                                 "    out of memory on cpu\n    python dpt.py ...\n")
    status = sweep("--table", "1", "--seeds", "1", "--status", "--results-dir", str(tmp_path)).stdout
    assert "37 runs: 0 finished, 0 running, 1 failed, 36 pending" in status
    assert f"failed CIFAR10-ResNet18-Stripes-Variance/{run}: out of memory on cpu (log /x/y.log)" in status
    held = tmp_path / "Baselines" / "checkpoints" / "c10-vanilla-resnet18-total100-seed1.lock"
    held.parent.mkdir(parents=True)
    holder = subprocess.Popen(["python3", "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a'); "
                               "fcntl.lockf(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)", str(held)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        status = sweep("--table", "1", "--seeds", "1", "--status", "--results-dir", str(tmp_path)).stdout
        assert "0 finished, 1 running, 1 failed, 35 pending" in status
    finally:
        holder.kill()
