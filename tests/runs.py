"""Helpers for tests that run dpt.py for real (plain python or torchrun) and read what it wrote."""
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent


def launch(args: list[str], nproc: int | None = None, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    """python dpt.py ARGS, or torchrun --standalone --nproc_per_node NPROC dpt.py ARGS; must succeed."""
    prefix = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc else [sys.executable]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(extra_env or {})}
    proc = subprocess.run(prefix + ["dpt.py", *args], cwd=REPO, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def only(folder: Path, pattern: str) -> Path:
    found = list(folder.rglob(pattern))
    assert len(found) == 1, found
    return found[0]


def only_log(folder: Path) -> dict:
    return json.loads(only(folder, "logs/*.json").read_text())


def checkpoint(folder: Path) -> dict:
    return torch.load(only(folder, "checkpoints/*.pt"), weights_only=True)


def partitions(folder: Path) -> dict:
    return torch.load(only(folder, "logs/*.partitions.pt"), weights_only=True)


def relative_difference(a: dict, b: dict) -> float:
    """||a - b|| / ||a|| over all floating-point tensors of two state dicts (float64)."""
    keys = [k for k in a if a[k].is_floating_point()]
    num = sum((a[k].double() - b[k].double()).square().sum() for k in keys)
    den = sum(a[k].double().square().sum() for k in keys)
    return (num / den).sqrt().item()
