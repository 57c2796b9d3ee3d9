"""run-experiments.sh: the paper's study as commands, a tiny sweep through CSVs, the report and the
notebook (the CI trial of the reproduction pipeline), and a sweep stopped and restarted."""
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient

import fakedata
import report
import results
import workload
from runs import ENV, REPO
from workload import Workload

def sweep(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        ["bash", "run-experiments.sh", *argv], cwd=REPO, capture_output=True, text=True, timeout=1200, env=ENV
    )
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def commands(proc) -> list[list[str]]:
    return [shlex.split(line) for line in proc.stdout.strip().splitlines()[1:]]


def dry(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    """`run-experiments.sh --dry-run ARGV` in this process (sweep.main, no interpreter to start): its exit
    status, standard output and standard error, as `sweep` returns them."""
    import contextlib
    import io

    import sweep as runner

    out, err, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runner.main(["--dry-run", *argv])
        except SystemExit as stop:
            code = stop.code or 0
    proc = subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())
    if check:
        assert code == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_dry_run_lists_the_papers_study(tmp_path):
    proc = dry("--results-dir", str(tmp_path))
    lines = proc.stdout.strip().splitlines()[1:]
    assert len(lines) == 1830  # 183 workloads x 10 seeds
    assert (tmp_path / "commands.txt").read_text().splitlines() == lines
    listed = commands(proc)
    assert all(c[0] == sys.executable and c[1] == str(REPO / "dpt.py") for c in listed)  # runnable from any directory
    for seed in workload.PAPER_SEEDS:
        assert sum(c[c.index("--seed") + 1] == str(seed) for c in listed) == 183
    aware = [c for c in lines if "--heuristic none" not in c]
    assert len(aware) == 5 * 36 * 10 and all("--ignore-epochs 5" in c and "--resume" in c for c in aware)
    assert (
        sum(
            "--dataset cifar100 --model resnet34 --heuristic stripes --measure variance "
            "--warmup-epochs 60 --interval-epochs 30 "
            in c
            for c in lines
        )
        == 10
    )
    assert len(commands(dry("--table", "1", "--results-dir", str(tmp_path)))) == 370
    assert len(commands(dry("--baselines-only", "--results-dir", str(tmp_path)))) == 30
    first = commands(dry("--table", "4", "--launch", "torchrun", "--gpus", "4", "--results-dir", str(tmp_path)))[0]
    assert first[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4", str(REPO / "dpt.py")]
    assert first[6:10] == ["--dataset", "cifar10", "--model", "resnet34"]


@pytest.mark.parametrize("argv,expected", [
    (["--table", "1", "--", "--batch-size", "0"], "--batch-size is per worker"),
    (["--launch", "torchrun", "--gpus", "2"], "use --launch emulate"),
    (["--table", "9"], "invalid choice: 9"),
    (["--", "--seed", "5"], "--seed after -- would override what the sweep sets"),
    (["--", "--results-dir=elsewhere"], "--results-dir after -- would override"),
    (["--seeds", "-3"], "--seeds takes distinct seeds"),
    (["--seeds", "1", "1"], "--seeds takes distinct seeds"),
    (["--baselines-only", "--no-baselines"], "leave nothing to run"),
    (["--no-baselines", "--epochs", "5", "--warmups", "10"], "the selection holds no run"),
    (["--per-gpu", "0"], "must be at least 1"),
], ids=["bad pass-through flag", "torchrun without GPUs", "unknown table", "seed after --", "results-dir after --",
        "negative seed", "repeated seed", "nothing selected", "impossible grid", "zero runs per GPU"])
def test_bad_selections_are_refused_in_one_line(tmp_path, argv, expected):
    if "--results-dir" not in " ".join(argv):
        argv = ["--results-dir", str(tmp_path), *argv] if "--" not in argv else ["--results-dir", str(tmp_path), *argv]
    proc = dry(*argv, check=False)
    lines = proc.stderr.strip().splitlines()
    assert (
        proc.returncode == 2
        and len(lines) == 1
        and lines[0].startswith("run-experiments.sh: error: ")
        and expected in lines[0]
    ), proc.stderr


def test_a_results_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    proc = dry("--results-dir", str(tmp_path / "file"), check=False)
    assert proc.returncode == 2 and "is a file; pass a folder" in proc.stderr


def test_impossible_settings_are_counted(tmp_path):
    out = dry("--table", "1", "--epochs", "30", "--results-dir", str(tmp_path)).stdout
    assert out.startswith("150 runs") and "22 (W, I) settings left out" in out


@pytest.mark.parametrize("study", ["partitions", "heuristics", "lm", "ncf", "exchange"])
def test_the_cpu_size_is_each_tasks_record_and_flags_after_the_dashes_override_it(tmp_path, study):
    size = workload.SIZES["cpu"][workload.STUDIES[study].base.task]
    listed = commands(dry("--study", study, "--size", "cpu", "--seeds", "1", "--results-dir", str(tmp_path)))
    assert listed and all(c[c.index("--dataset") + 1] == size.dataset and c[c.index("--model") + 1] == size.model
                          and c[c.index("--total-epochs") + 1] == str(size.total_epochs) for c in listed)
    aware = [c for c in listed if c[c.index("--heuristic") + 1] != "none"]
    assert {(c[c.index("--warmup-epochs") + 1], c[c.index("--interval-epochs") + 1]) for c in aware} == \
        {(str(w), str(i)) for w in size.warmups for i in size.intervals}
    assert all(" ".join(size.flags) in " ".join(c) for c in listed)
    mine = commands(dry("--study", study, "--size", "cpu", "--seeds", "1", "--results-dir", str(tmp_path), "--",
                        "--batch-size", "8"))
    assert all(c[len(c) - 1 - c[::-1].index("--batch-size") + 1] == "8" for c in mine)  # the last one given wins


def test_a_node_without_gpus_runs_one_run_per_core_on_one_thread_each(tmp_path):
    import os

    import sweep as runner

    opts = runner.parse(["--gpus", "0", "--results-dir", str(tmp_path)])
    assert runner.slots(opts) == [None] * os.cpu_count()
    assert runner.slots(runner.parse(["--gpus", "1", "--results-dir", str(tmp_path)])) == ["0"]


@pytest.mark.slow
def test_without_a_venv_it_says_to_run_setup(tmp_path):
    (tmp_path / "run-experiments.sh").write_text((REPO / "run-experiments.sh").read_text())
    proc = subprocess.run(["bash", str(tmp_path / "run-experiments.sh"), "--dry-run"], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip() == \
        "run-experiments.sh: error: no .venv here; run 'bash setup.sh' first (it installs what the runs need)"


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    """Table 1's workload on 2 settings x 2 seeds and its baseline, 4 epochs on a tiny CIFAR-10,
    2 runs at a time on the CPU."""
    root = tmp_path_factory.mktemp("sweep")
    fakedata.write_cifar10(root / "data", n_train=67, n_test=20)
    out = root / "results"
    argv = [
        "--table",
        "1",
        "--epochs",
        "4",
        "--warmups",
        "2",
        "--intervals",
        "1",
        "2",
        "--ignore",
        "1",
        "--seeds",
        "1",
        "2",
        "--gpus",
        "0",
        "--per-gpu",
        "2",
        "--results-dir",
        str(out),
        "--",
        "--data-dir",
        str(root / "data"),
        "--batch-size",
        "10",
    ]
    proc = sweep(*argv)
    return out, argv, proc


@pytest.mark.slow
def test_tiny_sweep_writes_every_row_and_resumes_by_skipping(tiny_sweep, tmp_path):
    out, argv, proc = tiny_sweep
    assert (
        proc.stdout.startswith("6 runs (0 already have their row, 6 to go)") and "6 runs done, 0 failed" in proc.stdout
    )
    for name in ("Baselines/c10-vanilla-resnet18-total4.csv", "CIFAR10-ResNet18-Stripes-Variance/W2-INT1-IGN1.csv",
                 "CIFAR10-ResNet18-Stripes-Variance/W2-INT2-IGN1.csv"):
        frame = pd.read_csv(out / name)
        assert sorted(frame.id) == [1, 2] and list(frame.columns) == results.columns(4)
    assert not list(out.rglob("checkpoints"))  # a finished run's checkpoint and lock go, and their folder
    assert not list(out.rglob("*.lock")) and not list(out.rglob("cache"))
    modes = {p.stat().st_mode & 0o777 for p in [*out.rglob("*.csv"), *out.rglob("logs/*.json")]}
    assert len(modes) == 1  # a log is as readable as its row (mkstemp's files are 0600)
    listed = (out / "commands.txt").read_text().splitlines()
    assert len(listed) == 6
    again = sweep(*argv)
    assert again.stdout.startswith("6 runs (6 already have their row, 0 to go)")
    assert all(len(pd.read_csv(p)) == 2 for p in out.rglob("W2-INT*.csv"))
    # a line of commands.txt runs from any directory; a finished run does nothing
    proc = subprocess.run(["bash", "-c", listed[-1]], cwd=tmp_path, capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0 and "finished already" in proc.stdout


@pytest.mark.slow
def test_tiny_sweep_tables_equal_the_csv_rows(tiny_sweep):
    out, _, _ = tiny_sweep
    cells = report.cells(report.load_runs(out)[0]).set_index(["warmup_epochs", "interval_epochs"])
    baseline = pd.read_csv(out / "Baselines" / "c10-vanilla-resnet18-total4.csv").best_accuracy
    text = subprocess.run(
        [sys.executable, "report.py", str(out)], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    assert f"baseline (vanilla DPT) {baseline.mean():.3f} ± {baseline.std(ddof=1):.3f}, n=2" in text
    for interval in (1, 2):
        direct = pd.read_csv(out / "CIFAR10-ResNet18-Stripes-Variance" / f"W2-INT{interval}-IGN1.csv").best_accuracy
        cell = cells.loc[(2, interval)]
        assert (cell.n, cell["mean"], cell["std"]) == (2, direct.mean(), direct.std(ddof=1))
        assert cell["diff"] == pytest.approx(direct.mean() - baseline.mean())
        assert f"{direct.mean():.3f} ± {direct.std(ddof=1):.3f}" in text


@pytest.mark.slow
def test_notebook_draws_the_figures_headless(tiny_sweep, tmp_path, monkeypatch):
    out, _, _ = tiny_sweep
    monkeypatch.setenv("DPT_RESULTS", str(out))
    monkeypatch.setenv("DPT_FIGURES", str(tmp_path / "figures"))
    notebook = nbformat.read(REPO / "plots.ipynb", as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    drawn = {p.name for p in (tmp_path / "figures").iterdir()}
    slug = "cifar10-resnet18-stripes-variance-T4-E1"
    for name in ("figure5", "heatmap", "curves"):
        assert {f"{name}-{slug}.png", f"{name}-{slug}.pdf"} <= drawn, drawn
    assert {"figure5.png", "figure5.pdf"} <= drawn  # all panels in one figure, as the paper's
    assert {f"paper-heatmap-table{t}.png" for t in range(1, 6)} <= drawn
    printed = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs)
    assert "6 runs, 1 importance-aware tables" in printed


@pytest.mark.slow
def test_a_mistyped_results_folder_stops_the_notebook(tmp_path, monkeypatch):
    monkeypatch.setenv("DPT_RESULTS", str(tmp_path / "typo"))
    monkeypatch.setenv("DPT_FIGURES", str(tmp_path / "figures"))
    notebook = nbformat.read(REPO / "plots.ipynb", as_version=4)
    with pytest.raises(Exception, match="is not a folder of result CSVs"):
        NotebookClient(
            notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}
        ).execute()


@pytest.mark.slow
def test_commands_run_from_any_directory_and_a_dry_run_keeps_another_selections(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = subprocess.run(["bash", str(REPO / "run-experiments.sh"), "--dry-run", "--table", "1", "--results-dir",
                           "rel-results", "--", "--data-dir", "rel-data"], cwd=elsewhere, capture_output=True,
                          text=True, env=ENV)
    assert proc.returncode == 0, proc.stderr
    listed = commands(proc)
    first = listed[0]
    for flag in ("--results-dir", "--data-dir"):
        assert Path(first[first.index(flag) + 1]).is_absolute()
    # run-experiments.sh works in the repository; the relative paths it was given are the caller's
    assert first[first.index("--data-dir") + 1] == str(elsewhere / "rel-data")
    assert Path(first[first.index("--results-dir") + 1]) == elsewhere / "rel-results"
    table1 = elsewhere / "rel-results" / "commands.txt"
    kept = table1.read_text()
    again = sweep("--dry-run", "--table", "2", "--results-dir", str(elsewhere / "rel-results"))
    assert table1.read_text() == kept and "holds another selection's commands" in again.stdout


@pytest.mark.slow
@pytest.mark.parametrize("passed,expected", [
    (["--study", "exchange", "--", "--emulation", "fused"], "exchanges each worker's own gradient"),
    (["--", "--data-source", "streaming"], "reads shards from --stream-remote"),
])
def test_flags_after_the_dashes_that_every_run_refuses_stop_the_sweep(tmp_path, passed, expected):
    proc = sweep("--dry-run", "--results-dir", str(tmp_path), *passed, check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and expected in lines[0], proc.stderr


@pytest.mark.slow
def test_data_that_cannot_be_read_stops_the_sweep_before_its_first_run(tmp_path):
    """Checked once (dpt.py --preflight), not 1830 times in 1830 logs."""
    (tmp_path / "empty").mkdir()
    proc = sweep("--baselines-only", "--table", "1", "--epochs", "1", "--seeds", "1", "2", "--gpus", "0",
                 "--results-dir", str(tmp_path / "out"), "--", "--data-dir", str(tmp_path / "empty"), check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "cifar10 not found" in lines[0] and "no run was started" in \
        lines[0], proc.stderr
    assert not (tmp_path / "out" / "sweep-logs").exists()


@pytest.mark.slow
def test_a_failing_run_is_logged_and_the_sweep_goes_on(tmp_path):
    fakedata.write_cifar10(tmp_path / "data", n_train=67, n_test=20)
    out = tmp_path / "results"
    csv = results.csv_path(out, Workload("cifar10", "resnet18", "none", "variance", 1, 1, 0, 0))
    broken = results.checkpoint_path(csv, 2)
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not a checkpoint")  # seed 2's run will refuse to resume from it
    proc = sweep(
        "--baselines-only",
        "--table",
        "1",
        "--epochs",
        "1",
        "--seeds",
        "1",
        "2",
        "3",
        "--gpus",
        "0",
        "--results-dir",
        str(out),
        "--",
        "--data-dir",
        str(tmp_path / "data"),
        "--batch-size",
        "10",
        check=False,
    )
    assert proc.returncode == 1 and "2 runs done, 1 failed" in proc.stdout
    assert sorted(pd.read_csv(csv).id) == [1, 3]
    failures = (out / "sweep-failures.txt").read_text()
    assert "exit 2 c10-vanilla-resnet18-total1-seed2" in failures and "--seed 2" in failures
    assert "is not a checkpoint of dpt.py" in failures  # the reason's line, beside the command
    (progress,) = [line for line in proc.stdout.splitlines() if "seed2 FAILED" in line]
    assert "is not a checkpoint of dpt.py" in progress  # the reason on the console, not only in the run's log
    log = next(out.rglob("sweep-logs/*/c10-vanilla-resnet18-total1-seed2.log")).read_text()
    assert "is not a checkpoint of dpt.py" in log


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_stopped_sweep_stops_its_runs_and_a_rerun_adds_one_row_per_seed(tmp_path, sig):
    """SIGTERM: the sweep stops its runs itself; SIGKILL: it cannot, and each run gets SIGTERM from
    the kernel as its parent dies (PR_SET_PDEATHSIG). Either way nothing trains on, and the rerun
    finds no run locked or failed."""
    fakedata.write_cifar10(tmp_path / "data", n_train=67, n_test=20)
    out = tmp_path / "results"
    argv = [
        "bash",
        "run-experiments.sh",
        "--baselines-only",
        "--table",
        "1",
        "--epochs",
        "30",
        "--seeds",
        "1",
        "2",
        "--gpus",
        "0",
        "--per-gpu",
        "2",
        "--results-dir",
        str(out),
        "--",
        "--data-dir",
        str(tmp_path / "data"),
        "--batch-size",
        "10",
    ]
    proc = subprocess.Popen(argv, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while not list(out.rglob("checkpoints/*.lock")) and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(2)  # the runs are training
    proc.send_signal(sig)
    printed = proc.communicate(timeout=120)[0]
    assert proc.returncode == (130 if sig == signal.SIGTERM else -9)
    assert ("stopped (SIGTERM); 0 runs finished, 2 stopped" in printed) == (sig == signal.SIGTERM), printed
    deadline = time.time() + 20
    while time.time() < deadline:
        leftover = subprocess.run(["pgrep", "-f", str(tmp_path / "data")], capture_output=True, text=True).stdout
        if not leftover.split():
            break
        time.sleep(0.2)
    assert leftover.split() == [], f"runs still going after the sweep stopped: {leftover}"
    again = subprocess.run(
        argv[: argv.index("--epochs") + 1] + ["3"] + argv[argv.index("--epochs") + 2 :],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert again.returncode == 0 and "2 runs done, 0 failed" in again.stdout, again.stdout[-2000:]
    frame = pd.read_csv(out / "Baselines" / "c10-vanilla-resnet18-total3.csv")
    assert sorted(frame.id) == [1, 2]  # one row per seed
    assert not (out / "sweep-failures.txt").exists()
