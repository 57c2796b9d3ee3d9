"""bench.py as a smoke command (CPU-sized): it runs every row and writes its figures. Timings are
printed, never asserted; what is asserted is that each row measured what it names."""
import json
import subprocess
import sys

import pytest

from runs import ENV, REPO

pytestmark = pytest.mark.slow


def test_bench_runs_every_row_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "bench.py", "--workers", "2", "--batch-size", "4", "--text-batch", "4",
                           "--steps", "2", "--partition-examples", "2000", "--sim-examples", "2000",
                           "--sim-epochs", "30", "--score-examples", "16", "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True,
                          timeout=900, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    paths = [(r["path"], r["tracking"], r["channels"]) for r in result["rows"]]
    every = "loss,correct,el2n,grad_norm"
    assert paths == [("paper-style (1 worker)", True, "loss"), ("paper-style (1 worker)", False, "loss"),
                     ("dataloader, fused (2 workers)", True, "loss"),
                     ("dataloader, fused (2 workers)", False, "loss"),
                     ("device, fused (2 workers)", True, "loss"), ("device, fused (2 workers)", False, "loss"),
                     ("device, fused (2 workers)", True, every),
                     ("device, sequential (2 workers)", True, "loss"),
                     ("device, sequential (2 workers)", False, "loss")]
    assert all(r["images_per_s"] > 0 and r["step_ms"] > 0 for r in result["rows"])
    scoring = result["scoring"]  # the Data Diet scoring pass against an epoch of the same examples
    assert scoring["examples"] == 16 and 0 < scoring["eval_el2n_s"] < scoring["eval_grand_s"]
    assert scoring["eval_grand_share"] == pytest.approx(scoring["eval_grand_s"] / scoring["train_epoch_s"])
    assert all(0 <= r["tracking_percent"] < 100 for r in result["rows"] if r["tracking"])
    assert [(r["model"], r["emulation"]) for r in result["text"]] == \
        [("gpt", "fused"), ("gpt", "sequential"), ("lstm", "fused"), ("lstm", "sequential")]
    assert all(r["tokens_per_s"] > 0 and 0 < r["tracking_percent"] < 100 for r in result["text"])
    reducers = {(r["model"], r["density"], r["reducer"]): r for r in result["reducers"]}
    for model in ("resnet18", "gpt"):
        for density in (0.001, 0.01):
            exdyna = reducers[(model, density, "exdyna")]
            # at its settled threshold, ExDyna sends about rho of the entries (indices and values)
            assert abs(exdyna["measured_density"] - density) < 0.2 * density
            assert exdyna["bytes_per_worker"] < 0.05 * exdyna["dense_bytes"] and exdyna["select_ms"] > 0
    assert result["iosim"]["requests"] == 2000 * 30 and result["partition_overheads"]["ours_s"] > 0
    speed = {r["option"]: r for r in result["speed_options"]}  # no compile modes asked: none timed on a CPU
    assert list(speed) == ["plain", "fused optimizer", "foreach optimizer", "contiguous, not channels_last"]
    assert speed["plain"]["vs_plain"] == 1 and all(r["images_per_s"] > 0 and r["first_epoch_s"] > 0
                                                   for r in speed.values())
    assert "--steps 2 times fewer than 10 steps per epoch" in proc.stderr  # the figures are noise: said
    assert result["provenance"]["git_commit"] and "importance + partition" in proc.stdout and "iosim:" in proc.stdout


def test_bench_concurrent_copies_report_aggregate_throughput(tmp_path):
    out = tmp_path / "concurrent.json"
    proc = subprocess.run([sys.executable, "bench.py", "--workers", "2", "--batch-size", "4", "--steps", "2",
                           "--concurrent", "1", "2", "--out", str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["concurrent"]
    assert [r["runs_at_once"] for r in rows] == [1, 2]
    for r in rows:
        assert r["aggregate_images_per_s"] > 0
        # the estimate is the study's images over the measured rate
        expected = 1830 * 100 * (50_000 + 10_000 / 3)
        assert r["study_hours"] * 3600 * r["aggregate_images_per_s"] == pytest.approx(expected)
    assert "2 runs at once" in proc.stdout and "are noise, not a measurement" in proc.stderr


def test_the_simulators_row_runs_the_epochs_asked_for(tmp_path):
    import argparse

    import bench

    for epochs in (7, 23, 100):
        row = bench.iosim_row(argparse.Namespace(sim_epochs=epochs, sim_examples=400))
        assert row["epochs"] == epochs and row["requests"] == 400 * epochs
