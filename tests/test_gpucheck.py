"""gpu-check.sh --smoke: the one command a lent GPU runs, end to end on the CPU, so that it cannot rot
(its full run is for a GPU: docs/performance.md)."""
import json
import subprocess

import pytest

from runs import ENV, REPO

pytestmark = pytest.mark.slow
FMNIST = "/usr/share/datasets/fashion-mnist"


def test_the_smoke_run_writes_every_figure(tmp_path):
    proc = subprocess.run(["bash", "gpu-check.sh", "--smoke", str(tmp_path / "out"), "--data-dir", FMNIST], cwd=REPO,
                          capture_output=True, text=True, env=ENV, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["smoke"] and [x["step"] for x in s["steps"]] == [
        "bench", "concurrent", "torchrun", "fmnist-stripes-standard", "fmnist-vanilla-standard",
        "fmnist-stripes-paper", "fmnist-vanilla-paper"] and all(x["exit"] == 0 for x in s["steps"])
    assert all(v is not None and v > 0 for v in s["figures"].values()), s["figures"]
    assert [c["runs_at_once"] for c in s["concurrent"]] == [1, 2] and len(s["text"]) == 4
    runs = {(r["protocol"], r["heuristic"]) for r in s["fashion_mnist"]}
    assert runs == {(p, h) for p in ("standard", "paper") for h in ("none", "roundrobin")}
    assert all(0 < r["best_accuracy"] <= 100 for r in s["fashion_mnist"])
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "SMOKE" in md and "| images_per_s |" in md and s["provenance"]["git_commit"] in md


def test_missing_data_is_one_line_before_any_step(tmp_path):
    proc = subprocess.run(["bash", "gpu-check.sh", "--smoke", str(tmp_path / "out"), "--data-dir", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, env=ENV)
    assert proc.returncode == 2 and proc.stderr.strip().startswith(
        f"gpu-check.sh: error: {tmp_path}/train-images-idx3-ubyte.gz is missing")
    assert not (tmp_path / "out").exists()
