"""Refactors change no result: four fixed-seed runs (an image run, a text run, a reducer run and a
streaming run) write the same CSV row and the same per-epoch training losses as the runs recorded in
tests/recorded_rows.json (recorded as subprocesses under OMP_NUM_THREADS=1; the test runs them in
its own process on one thread, which computes the same bits). The bits depend on the machine too
(MKL and oneDNN pick kernels by CPU), so the recording is kept per machine: this machine's if it has
one, else the first recording's ("reference", made before the run's code was split into preflight,
checkpoint and tasks, on another machine). Record again only for a deliberate change of behaviour,
or to add a machine, and say which in the commit:

    .venv/bin/python tests/test_same_rows.py record
"""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import platform

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import data  # noqa: E402
import fakedata  # noqa: E402
import runlog  # noqa: E402
import streaming  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RECORDED = Path(__file__).with_name("recorded_rows.json")
SCHEDULE = ["--total-epochs", "4", "--warmup-epochs", "2", "--interval-epochs", "1", "--ignore-epochs", "1"]


def image(root: Path) -> list[str]:
    fakedata.write_cifar10(root / "data", n_train=67, n_test=20)
    return ["--dataset", "cifar10", "--data-dir", str(root / "data"), "--batch-size", "10", "--emulate-workers", "2",
            *SCHEDULE]


def text(root: Path) -> list[str]:
    fakedata.write_text(root / "corpus.txt", lines=2000)
    return ["--dataset", "text", "--text-file", str(root / "corpus.txt"), "--seq-len", "32", "--subset", "64",
            "--test-subset", "16", "--batch-size", "8", "--layers", "1", "--hidden", "32", "--heads", "2",
            "--optimizer", "adamw", "--lr", "0.01", "--weight-decay", "0.1", "--measure", "el2n",
            "--emulate-workers", "2", *SCHEDULE]


def reducer(root: Path) -> list[str]:
    fakedata.write_cifar10(root / "data", n_train=67, n_test=20)
    return ["--dataset", "cifar10", "--data-dir", str(root / "data"), "--batch-size", "10", "--emulate-workers", "2",
            "--emulation", "sequential", "--reducer", "exdyna", "--density", "0.05", "--measure", "average",
            *SCHEDULE]


def streamed(root: Path) -> list[str]:
    fakedata.write_fashion_mnist(root / "data", 60, 20)
    streaming.write(data.load("fashionmnist", root / "data", train=True), root / "shards", shard_size=10)
    return ["--dataset", "fashionmnist", "--data-dir", str(root / "data"), "--batch-size", "10",
            "--emulate-workers", "2", "--data-source", "streaming", "--stream-remote", str(root / "shards"),
            "--heuristic", "shard-stripes", *SCHEDULE]


RUNS = {"image": image, "text": text, "reducer": reducer, "streaming": streamed}


def machine() -> str:
    """What the recorded bits depend on beyond the code: the CPU model, the vector instructions torch
    uses on it, and torch's build."""
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    return f"{model}; {torch.backends.cpu.get_cpu_capability()}; torch {torch.__version__}"


def recorded_here() -> dict:
    recordings = json.loads(RECORDED.read_text())
    return recordings.get(machine(), recordings["reference"])


def run(name: str, root: Path, separate: bool = True) -> dict:
    """The run's CSV row (as text, the way the file holds it) and its per-epoch training losses, run as
    its own process under OMP_NUM_THREADS=1 (`separate`) or in this one on one thread."""
    out = root / "results"
    argv = [*RUNS[name](root), "--results-dir", str(out)]
    if separate:
        proc = subprocess.run([sys.executable, "dpt.py", *argv], cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"},
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    else:
        from runs import inprocess
        inprocess(argv)
    (path,) = [p for p in out.rglob("*.csv")]
    with open(path, newline="") as f:
        (row,) = list(csv.DictReader(f))
    (log,) = [p for p in out.rglob("logs/*.json")]
    written = json.loads(log.read_text())
    assert runlog.RunLog.read(log).to_json() == written  # the log is what runlog.RunLog declares, whole
    losses = [e["train_loss"] for e in written["epochs"]]
    return {"file": str(path.relative_to(out)), "row": row, "train_loss": losses}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RUNS))
def test_the_run_writes_the_recorded_row(name, tmp_path):
    assert run(name, tmp_path, separate=False) == recorded_here()[name]


if __name__ == "__main__" and sys.argv[1:] == ["record"]:
    import tempfile

    rows = {}
    for name in RUNS:
        with tempfile.TemporaryDirectory() as folder:
            rows[name] = run(name, Path(folder))
            print(name, rows[name]["row"].get("best_accuracy", rows[name]["row"].get("best_bits_per_byte")))
    recordings = json.loads(RECORDED.read_text()) if RECORDED.is_file() else {}
    recordings[machine() if "reference" in recordings else "reference"] = rows
    RECORDED.write_text(json.dumps(recordings, indent=1) + "\n")
