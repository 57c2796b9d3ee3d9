"""bench.py as a smoke command (CPU-sized): it runs every row and writes its figures. Timings
are printed, never asserted."""
import json
import os
import subprocess
import sys

import pytest

from runs import REPO


def test_bench_runs_every_row_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "bench.py", "--workers", "2", "--batch-size", "4", "--steps", "2",
                           "--partition-examples", "2000", "--out", str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    paths = [(r["path"], r["tracking"]) for r in result["rows"]]
    assert paths == [
        (p, t)
        for p in (
            "paper-style (1 worker)",
            "dataloader, fused (2 workers)",
            "device, fused (2 workers)",
            "device, sequential (2 workers)",
        )
        for t in (True, False)
    ]
    assert all(r["images_per_s"] > 0 and r["step_ms"] > 0 for r in result["rows"])
    assert all(0 <= r["tracking_percent"] < 100 for r in result["rows"] if r["tracking"])
    assert result["partition_overheads"]["ours_s"] > 0 and result["args"]["workers"] == 2
    for row in result["rows"]:
        assert row["path"] in proc.stdout
    assert "importance + partition" in proc.stdout


def test_bench_concurrent_copies_report_aggregate_throughput(tmp_path):
    out = tmp_path / "concurrent.json"
    proc = subprocess.run([sys.executable, "bench.py", "--workers", "2", "--batch-size", "4", "--steps", "2",
                           "--concurrent", "1", "2", "--out", str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["concurrent"]
    assert [r["runs_at_once"] for r in rows] == [1, 2]
    for r in rows:
        assert r["aggregate_images_per_s"] > 0
        # the estimate is the study's images over the measured rate
        assert r["study_hours"] * 3600 * r["aggregate_images_per_s"] == pytest.approx(
            1830 * 100 * (50_000 + 10_000 / 3)
        )
    assert "2 runs at once" in proc.stdout
