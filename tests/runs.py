"""Helpers shared by the tests: the tiny-run flags, running dpt.py for real (plain python or
torchrun) with one thread per process, or in this process (no interpreter and torch import to pay:
what most tests that only read a run's outputs use), running main() in-process expecting a one-line
error, running a study's commands, and reading what a run wrote."""
import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import dpt
import results

REPO = Path(__file__).resolve().parent.parent
# torchrun sets OMP_NUM_THREADS=1 for its ranks; plain-python runs get the same, so that a run and its
# emulation do the same arithmetic (bit-exact comparisons need equal thread counts).
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
# A tiny interval run on tests' 67-example CIFAR-10: warmup epochs 1-2, then two 1-epoch intervals.
TINY = ["--dataset", "cifar10", "--total-epochs", "4", "--warmup-epochs", "2", "--interval-epochs", "1",
        "--ignore-epochs", "1", "--batch-size", "10"]


def launch(args: list[str], nproc: int | None = None, extra_env: dict | None = None, script: str = "dpt.py",
           check: bool = True) -> subprocess.CompletedProcess:
    """python SCRIPT ARGS, or torchrun --standalone --nproc_per_node NPROC SCRIPT ARGS; must succeed."""
    prefix = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
        if nproc
        else [sys.executable]
    )
    proc = subprocess.run(
        prefix + [script, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**ENV, **(extra_env or {})},
        timeout=900,
    )
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def inprocess(argv: list[str]) -> str:
    """dpt.main(argv) in this process on one thread, which computes what a subprocess under
    OMP_NUM_THREADS=1 does, bit for bit (tests/test_same_rows.py holds both to the same rows); its
    standard output. A run that exits non-zero fails the test with its last lines."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            dpt.main(argv)
    except SystemExit as stop:
        if stop.code:
            raise AssertionError(f"dpt.py {' '.join(argv)} exited {stop.code}:\n{err.getvalue()[-3000:]}") from None
    finally:
        torch.set_num_threads(threads)
    return out.getvalue()


def study(argv: list[str]) -> Path:
    """The runs of `run-experiments.sh ARGV` (its --results-dir), each the exact dpt.py command the sweep
    would start, in two processes that import torch once each (2 cores: the sweep's --per-gpu 2);
    how the sweep itself starts, resumes and stops runs is test_sweep.py's."""
    import concurrent.futures
    import multiprocessing

    import sweep

    opts = sweep.parse(argv)
    runs, _ = sweep.study(opts)
    pending = [r.argv for r in runs if not results.has_row(r.csv, r.seed)]
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(inprocess, pending))
    return opts.results_dir


def run_expecting_error(argv: list[str], capsys) -> str:
    """dpt.main(argv) in-process must exit 2 with one line on stderr and nothing on stdout; returns the line."""
    with pytest.raises(SystemExit) as exit_info:
        dpt.main(argv)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dpt.py: error: "), captured.err
    return lines[0]


def only(folder: Path, pattern: str) -> Path:
    found = list(folder.rglob(pattern))
    assert len(found) == 1, found
    return found[0]


def only_log(folder: Path) -> dict:
    return json.loads(only(folder, "logs/*.json").read_text())


def checkpoint(folder: Path) -> dict:
    import checkpoint as saved

    return saved.read(only(folder, "checkpoints/*.pt"))


def partitions(folder: Path) -> dict:
    return torch.load(only(folder, "logs/*.partitions.pt"), weights_only=True)


def relative_difference(a: dict, b: dict) -> float:
    """||a - b|| / ||a|| over all floating-point tensors of two state dicts (float64)."""
    keys = [k for k in a if a[k].is_floating_point()]
    num = sum((a[k].double() - b[k].double()).square().sum() for k in keys)
    den = sum(a[k].double().square().sum() for k in keys)
    return (num / den).sqrt().item()
