"""The I/O study end to end: runs that read their training examples through per-worker caches from
real litdata shards (--data-source streaming) fetch exactly the bytes the trace simulator predicts
from their saved partitions (under torchrun too), and the CPU-sized --study io goes through
report.py --io and the notebook."""
import json
import subprocess
import sys

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient

import data
import fakedata
import iosim
import report
import streaming
from runs import REPO, TINY, inprocess, launch, only, study

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("io")
    fakedata.write_cifar10(root / "data", n_train=67, n_test=20)
    streaming.write(data.load("cifar10", root / "data", train=True), root / "shards", shard_size=5)
    return root


def measured_and_simulated(root, out, cache_bytes, policy):
    """Per (epoch, worker): the bytes and misses the run logged (as the filesystem counted them), and the
    simulator's for the same partitions and storage."""
    log_path = only(out, "logs/*.json")
    log = json.loads(log_path.read_text())
    measured = pd.DataFrame([{"epoch": e["epoch"] - 1, "worker": w, "bytes": row["bytes"], "misses": row["misses"],
                              "requests": row["requests"]} for e in log["epochs"] for w, row in enumerate(e["io"])])
    windows, settings = iosim.windows_from_file(str(log_path.with_name(log_path.stem + ".partitions.pt")))
    probe = streaming.WorkerReader(str(root / "shards"), out / "probe", cache_bytes, policy)
    simulated, _ = iosim.simulate(windows, log["workers"], probe.storage, **settings)
    return measured, simulated[["epoch", "worker", "bytes", "misses", "requests"]]


@pytest.mark.parametrize("heuristic,policy,cache", [("none", "lru", 40_000), ("stripes", "lru", 40_000),
                                                     ("stripes", "partition", 70_000),
                                                     ("shard-stripes", "partition", 70_000)])
def test_measured_bytes_equal_the_simulators(shards, tmp_path, heuristic, policy, cache):
    out = tmp_path / "res"
    inprocess([*TINY, "--heuristic", heuristic, "--data-dir", str(shards / "data"), "--results-dir", str(out),
               "--emulate-workers", "2", "--data-source", "streaming", "--stream-remote", str(shards / "shards"),
               "--cache-bytes", str(cache), "--cache-policy", policy, "--save-partitions"])
    measured, simulated = measured_and_simulated(shards, out, cache, policy)
    assert measured["bytes"].sum() > 0
    pd.testing.assert_frame_equal(measured.reset_index(drop=True), simulated.reset_index(drop=True), check_dtype=False)
    # report.py --io from the log alone (its recorded storage): the same bytes; the raw-bytes simulation
    # that runs without a stream get is short by the shard files' own overhead
    (row,) = report.streaming_measured(out).itertuples()
    assert row.simulated_as_stored == row.measured_bytes == measured["bytes"].sum()


def test_measured_bytes_equal_the_simulators_under_torchrun(shards, tmp_path):
    out = tmp_path / "res"
    launch([*TINY, "--heuristic", "sticky-stripes", "--data-dir", str(shards / "data"), "--results-dir", str(out),
            "--data-source", "streaming", "--stream-remote", str(shards / "shards"), "--cache-bytes", "60000",
            "--save-partitions"], 2)
    measured, simulated = measured_and_simulated(shards, out, 60_000, "partition")
    pd.testing.assert_frame_equal(measured.reset_index(drop=True), simulated.reset_index(drop=True), check_dtype=False)


@pytest.fixture(scope="module")
def io_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("io-study")
    if not (fakedata.REAL_FASHION_MNIST / "train-images-idx3-ubyte.gz").exists():
        fakedata.write_fashion_mnist(root / "data", 400, 100)
    return study(["--study", "io", "--dataset", "fashionmnist", "--epochs", "3", "--warmups", "2", "--intervals", "1",
                  "--ignore", "1", "--seeds", "1", "2", "--gpus", "0", "--results-dir", str(root / "results"),
                  "--", "--subset", "400", "--test-subset", "50", "--batch-size", "25",
                  "--data-dir", str(root / "data")])


def test_the_io_study_goes_through_report_and_notebook(io_study, tmp_path, monkeypatch):
    epochs, problems = report.io_study(io_study, shard_sizes=(1, 20, 100))
    assert problems == []
    summary = report.io_summary(epochs)
    assert set(summary.heuristic) == {"none", "random", "stripes", "blocks", "sticky-stripes", "shard-stripes"}
    assert (summary.runs == 2).all()
    # whole shards of 100 with a fixed partition pinned: after warmup a worker fetches only what moved
    big = summary[(summary.shard_size == 100) & (summary["cache"] == "1/n")].set_index("heuristic")
    assert big.loc["shard-stripes", "after_warmup"] < big.loc["stripes", "after_warmup"]
    assert big.loc["shard-stripes", "after_warmup"] < big.loc["none", "after_warmup"]
    shown = subprocess.run([sys.executable, "report.py", str(io_study), "--paper", "", "--io"], cwd=REPO,
                           capture_output=True, text=True)
    assert shown.returncode == 0 and "### I/O: what each run fetched" in shown.stdout
    assert "shard-stripes" in shown.stdout
    monkeypatch.setenv("DPT_RESULTS", str(io_study))
    monkeypatch.setenv("DPT_FIGURES", str(tmp_path))
    notebook = nbformat.read(REPO / "plots.ipynb", as_version=4)
    NotebookClient(notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    assert "io.png" in {p.name for p in tmp_path.iterdir()}
