"""Gradient sparsification in real runs (dpt.py --reducer): a DDP communication hook under torchrun
and the same reducer over emulated workers, each killed and resumed (the emulation continues its
error feedback exactly), a Fashion-MNIST run that learns at density 0.01 with its density logged,
and the CPU-sized exchange study through report.py and the notebook. That the hook and the
emulation select alike on the same buckets is tests/test_reducers.py's."""
import subprocess
import sys

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient
import torch

import fakedata
import report
import workload
from runs import REPO, TINY, checkpoint, inprocess, launch, only, only_log, study
from test_checkpoint import die_at

pytestmark = pytest.mark.slow
STATS = {"density", "density_error", "threshold", "imbalance", "bytes_per_worker", "dense_bytes", "residual_ratio",
         "selection_s", "communication_s"}


def tiny(root, out, *extra):
    return [*TINY, "--data-dir", str(root), "--results-dir", str(out), "--reducer", "exdyna", "--density", "0.05",
            *extra]


def logged_the_exchange(folder) -> None:
    """A reducer run logged its exchange every epoch and wrote its row."""
    log = only_log(folder)
    assert log["workload"]["reducer"] == "exdyna" and log["workload"]["density"] == 0.05
    for epoch in log["epochs"]:
        assert STATS <= set(epoch["exchange"]) and epoch["exchange"]["steps"] > 0
        assert 0 < epoch["exchange"]["bytes_per_worker"] < epoch["exchange"]["dense_bytes"]
    assert len(pd.read_csv(only(folder, "W2-INT*-IGN1-Rexdyna-D0.05-N2.csv"))) == 1


def test_a_fashion_mnist_run_learns_at_density_one_percent(tmp_path):
    """Accuracy far above chance within 3 epochs (93 steps), with the density logged every epoch and
    closing in on its target. ExDyna's online threshold scaling moves lambda by at most 0.5% a step
    (the authors' constants), so from 1/(2 sqrt k) it takes a few hundred steps to reach rho: here the
    density falls from ~13x to ~5x the target (tests/test_reducers.py holds it to within 10% of the
    target on stationary gradients)."""
    data_dir = tmp_path / "data"
    if not (fakedata.REAL_FASHION_MNIST / "train-images-idx3-ubyte.gz").exists():
        fakedata.write_fashion_mnist(data_dir, 1000, 300)
    inprocess(["--dataset", "fashionmnist", "--data-dir", str(data_dir), "--subset", "1000", "--test-subset", "300",
               "--heuristic", "stripes", "--total-epochs", "3", "--warmup-epochs", "2", "--interval-epochs", "1",
               "--ignore-epochs", "1", "--batch-size", "16", "--lr", "0.05", "--emulate-workers", "2",
               "--emulation", "sequential", "--reducer", "exdyna", "--density", "0.01", "--eval-protocol", "standard",
               "--results-dir", str(tmp_path / "res")])
    log = only_log(tmp_path / "res")
    # 10 classes: chance is 10%; sparse from the first step (as the authors), 93 steps reach ~35-40%
    assert max(e["test_accuracy"] for e in log["epochs"]) > 30
    density = [e["exchange"]["density"] for e in log["epochs"]]
    error = [e["exchange"]["density_error"] for e in log["epochs"]]
    assert all(later < earlier for earlier, later in zip(density, density[1:])), density  # closing in, every epoch
    assert error[-1] < error[0] and all(e >= 0 for e in error)  # the mean relative error per step, logged
    late = log["epochs"][-1]["exchange"]
    assert late["bytes_per_worker"] < 0.15 * late["dense_bytes"], late


def test_a_killed_run_resumes_its_error_feedback_exactly(cifar10_dir, tmp_path):
    root, _ = cifar10_dir
    flags = tiny(root, tmp_path / "whole", "--emulate-workers", "2", "--emulation", "sequential", "--deterministic",
                 "--total-epochs", "5", "--interval-epochs", "3")
    inprocess(flags)
    killed = tiny(root, tmp_path / "killed", "--emulate-workers", "2", "--emulation", "sequential", "--deterministic",
                  "--total-epochs", "5", "--interval-epochs", "3", "--checkpoint-every", "1")
    die_at("train.train_epoch", 4, killed)
    state = checkpoint(tmp_path / "killed")["exchange"][0]
    assert state["step"] > 0 and state["buckets"][0]["residual"].abs().sum() > 0  # the residual is in the checkpoint
    inprocess(killed + ["--resume"])
    whole, resumed = (pd.read_csv(only(tmp_path / name, "*.csv")) for name in ("whole", "killed"))
    pd.testing.assert_frame_equal(whole, resumed)
    logged_the_exchange(tmp_path / "whole")
    # the training loss of every epoch, and the exchange's figures after the resume, as uninterrupted
    logs = [only_log(tmp_path / name) for name in ("whole", "killed")]
    assert [e["train_loss"] for e in logs[0]["epochs"]] == [e["train_loss"] for e in logs[1]["epochs"]]
    assert logs[0]["epochs"][-1]["exchange"]["density"] == logs[1]["epochs"][-1]["exchange"]["density"]


@pytest.fixture(scope="module")
def exchange_study(tmp_path_factory):
    """--study exchange, CPU-sized: every reducer on a Fashion-MNIST subset, 2 epochs, 2 seeds (no baselines,
    to save time: they go through the same code as any run)."""
    root = tmp_path_factory.mktemp("exchange")
    if not (fakedata.REAL_FASHION_MNIST / "train-images-idx3-ubyte.gz").exists():
        fakedata.write_fashion_mnist(root / "data", 200, 100)
    return study(["--study", "exchange", "--dataset", "fashionmnist", "--epochs", "2", "--warmups", "1",
                  "--intervals", "1", "--ignore", "0", "--seeds", "1", "2", "--workers", "2", "--gpus", "0",
                  "--no-baselines", "--results-dir", str(root / "results"),
                  "--", "--subset", "100", "--test-subset", "100", "--batch-size", "25",
                  "--data-dir", str(root / "data")])


def test_the_exchange_study_goes_through_report_and_notebook(exchange_study, tmp_path, monkeypatch):
    epochs, problems = report.exchange_logs(exchange_study)
    variants = workload.STUDIES["exchange"].variants
    assert problems == [] and set(epochs.reducer) == {v["reducer"] for v in variants}
    summary = report.exchange_summary(epochs)
    assert (summary.runs == 2).all() and len(summary) == len(variants)  # every arm: a reducer, density, heuristic
    dense = summary.exchange.str.startswith(("exact", "global-topk"))  # global-topk selects after a dense all-reduce
    assert (summary[~dense].traffic_vs_dense < 1).all() and (summary[dense].traffic_vs_dense == 1).all()
    shown = subprocess.run([sys.executable, "report.py", str(exchange_study), "--paper", ""], cwd=REPO,
                           capture_output=True, text=True)
    assert shown.returncode == 0 and "### Gradient exchange" in shown.stdout and "exdyna@0.01" in shown.stdout
    monkeypatch.setenv("DPT_RESULTS", str(exchange_study))
    monkeypatch.setenv("DPT_FIGURES", str(tmp_path))
    notebook = nbformat.read(REPO / "plots.ipynb", as_version=4)
    NotebookClient(notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    drawn = {p.name for p in tmp_path.iterdir()}
    assert "exchange-FashionMNIST-ResNet18-Stripes-Variance.png" in drawn, drawn


def test_a_torchrun_run_resumes_its_residuals_after_ddps_bucket_rebuild(cifar10_dir, tmp_path):
    """Under DDP a resumed process reduces its first steps in the initial bucket layout, then rebuilds
    its buckets: the reducer averages those steps densely again and keeps the saved residuals for the
    rebuilt buckets (a resumed torchrun run is therefore not bit for bit an uninterrupted one)."""
    root, _ = cifar10_dir
    argv = tiny(root, tmp_path, "--total-epochs", "5", "--interval-epochs", "3", "--checkpoint-every", "1")
    killed = launch(["train.train_epoch", "4", "--", *argv], 2, script="tests/die_at.py", check=False)
    assert killed.returncode != 0
    saved = checkpoint(tmp_path)
    assert saved["epoch"] == 3 and [s["step"] for s in saved["exchange"]] == [saved["exchange"][0]["step"]] * 2
    residuals = [s["buckets"][0]["residual"] for s in saved["exchange"]]
    assert not torch.equal(residuals[0], residuals[1])  # one per rank: each keeps its own unsent gradient
    launch(argv + ["--resume"], 2)
    log = only_log(tmp_path)
    assert log["resumed_at_epoch"] == [4]
    logged_the_exchange(tmp_path)  # the hook under torchrun, as the emulation
    assert [e["exchange"]["warmup_steps"] for e in log["epochs"]] == [2, 0, 0, 2, 0]  # dense again after the resume
