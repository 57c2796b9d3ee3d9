"""run-experiments.sh: the paper's study as commands, and a tiny sweep through CSVs, the report
and the notebook (the CI trial of the reproduction pipeline)."""
import os
import subprocess

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient

import dpt
import fakedata
import report
import results
from runs import REPO


def sweep(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["bash", "run-experiments.sh", *argv], cwd=REPO, capture_output=True, text=True, timeout=1200,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_dry_run_lists_the_papers_study(tmp_path):
    proc = sweep("--dry-run", "--results-dir", str(tmp_path))
    commands = proc.stdout.strip().splitlines()[1:]
    assert len(commands) == 1830  # 183 workloads x 10 seeds
    assert (tmp_path / "commands.txt").read_text().splitlines() == commands
    for seed in dpt.PAPER_SEEDS:
        assert sum(f"--seed {seed} " in c for c in commands) == 183
    aware = [c for c in commands if "--heuristic none" not in c]
    assert len(aware) == 5 * 36 * 10 and all("--ignore-epochs 5" in c and "--resume" in c for c in aware)
    assert sum("--dataset cifar100 --model resnet34 --heuristic stripes --measure variance --warmup-epochs 60 --interval-epochs 30 " in c
               for c in commands) == 10
    assert len(sweep("--dry-run", "--table", "1", "--results-dir", str(tmp_path)).stdout.strip().splitlines()[1:]) == 370
    assert len(sweep("--dry-run", "--baselines-only", "--results-dir", str(tmp_path)).stdout.strip().splitlines()[1:]) == 30
    first = sweep("--dry-run", "--table", "4", "--launch", "torchrun", "--gpus", "4", "--results-dir", str(tmp_path)).stdout.splitlines()[1]
    assert first.startswith("python -m torch.distributed.run --standalone --nproc_per_node=4 dpt.py --dataset cifar10 --model resnet34")


def test_impossible_settings_and_bad_flags_are_refused_up_front(tmp_path):
    out = sweep("--dry-run", "--table", "1", "--epochs", "30", "--results-dir", str(tmp_path)).stdout
    assert out.startswith("150 runs") and "22 (W, I) settings left out" in out
    proc = sweep("--table", "1", "--results-dir", str(tmp_path), "--", "--batch-size", "0", check=False)
    assert proc.returncode == 2 and "--batch-size is per worker" in proc.stderr
    proc = sweep("--launch", "torchrun", "--gpus", "2", "--dry-run", check=False)
    assert proc.returncode == 2 and "use --launch emulate" in proc.stderr


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    """Table 1's workload on 2 settings x 2 seeds and its baseline, 4 epochs on a tiny CIFAR-10,
    2 runs at a time on the CPU."""
    root = tmp_path_factory.mktemp("sweep")
    fakedata.write_cifar10(root / "data", n_train=67, n_test=20)
    out = root / "results"
    argv = ["--table", "1", "--epochs", "4", "--warmups", "2", "--intervals", "1", "2", "--ignore", "1", "--seeds", "1", "2",
            "--gpus", "0", "--per-gpu", "2", "--results-dir", str(out), "--", "--data-dir", str(root / "data"), "--batch-size", "10"]
    proc = sweep(*argv)
    return out, argv, proc


def test_tiny_sweep_writes_every_row_and_resumes_by_skipping(tiny_sweep):
    out, argv, proc = tiny_sweep
    assert proc.stdout.startswith("6 runs (0 already have their row, 6 to go)") and "6 runs done, 0 failed" in proc.stdout
    for name in ("Baselines/c10-vanilla-resnet18-total4.csv", "CIFAR10-ResNet18-Stripes-Variance/W2-INT1.csv",
                 "CIFAR10-ResNet18-Stripes-Variance/W2-INT2.csv"):
        frame = pd.read_csv(out / name)
        assert sorted(frame.id) == [1, 2] and list(frame.columns) == results.columns(4)
    assert not list(out.rglob("checkpoints/*.pt"))  # a finished run's checkpoint is removed
    assert len((out / "commands.txt").read_text().splitlines()) == 6
    again = sweep(*argv)
    assert again.stdout.startswith("6 runs (6 already have their row, 0 to go)")
    assert all(len(pd.read_csv(p)) == 2 for p in out.rglob("W2-INT*.csv"))


def test_tiny_sweep_tables_equal_the_csv_rows(tiny_sweep):
    out, _, _ = tiny_sweep
    cells = report.cells(report.load_runs(out)).set_index(["warmup_epochs", "interval_epochs"])
    baseline = pd.read_csv(out / "Baselines" / "c10-vanilla-resnet18-total4.csv").best_accuracy
    text = subprocess.run([".venv/bin/python" if (REPO / ".venv/bin/python").exists() else "python3", "report.py", str(out)],
                          cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert f"baseline (vanilla DPT) {baseline.mean():.3f} ± {baseline.std(ddof=1):.3f}, n=2" in text
    for interval in (1, 2):
        direct = pd.read_csv(out / "CIFAR10-ResNet18-Stripes-Variance" / f"W2-INT{interval}.csv").best_accuracy
        cell = cells.loc[(2, interval)]
        assert (cell.n, cell["mean"], cell["std"]) == (2, direct.mean(), direct.std(ddof=1))
        assert cell["diff"] == pytest.approx(direct.mean() - baseline.mean())
        assert f"{direct.mean():.3f} ± {direct.std(ddof=1):.3f}" in text


def test_notebook_draws_the_figures_headless(tiny_sweep, tmp_path, monkeypatch):
    out, _, _ = tiny_sweep
    monkeypatch.setenv("DPT_RESULTS", str(out))
    monkeypatch.setenv("DPT_FIGURES", str(tmp_path / "figures"))
    notebook = nbformat.read(REPO / "plots.ipynb", as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    drawn = {p.name for p in (tmp_path / "figures").iterdir()}
    for name in ("figure5", "heatmap", "curves"):
        assert {f"{name}-cifar10-resnet18-stripes-variance.png", f"{name}-cifar10-resnet18-stripes-variance.pdf"} <= drawn
    assert {f"paper-heatmap-table{t}.png" for t in range(1, 6)} <= drawn
    printed = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs)
    assert "6 runs, 1 importance-aware workloads" in printed


def test_a_failing_run_is_logged_and_the_sweep_goes_on(tmp_path):
    fakedata.write_cifar10(tmp_path / "data", n_train=67, n_test=20)
    out = tmp_path / "results"
    csv = results.csv_path(out, "cifar10", "resnet18", "none", "variance", 1, 0, 1)
    broken = results.checkpoint_path(csv, 2)
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not a checkpoint")  # seed 2's run will refuse to resume from it
    proc = sweep("--baselines-only", "--table", "1", "--epochs", "1", "--seeds", "1", "2", "3", "--gpus", "0",
                 "--results-dir", str(out), "--", "--data-dir", str(tmp_path / "data"), "--batch-size", "10", check=False)
    assert proc.returncode == 1 and "2 runs done, 1 failed" in proc.stdout
    assert sorted(pd.read_csv(csv).id) == [1, 3]
    failures = (out / "sweep-failures.txt").read_text()
    assert "exit 2 c10-vanilla-resnet18-total1-seed2" in failures and "--seed 2" in failures
    log = next(out.rglob("sweep-logs/*/c10-vanilla-resnet18-total1-seed2.log")).read_text()
    assert "corrupt checkpoint" in log
