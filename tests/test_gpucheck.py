"""gpu-check.sh --smoke: the one command a GPU machine runs, end to end on the CPU, so that it cannot rot
(its full run is for a GPU: docs/performance.md); and bench.py's rows as that run wrote them (CPU-sized:
timings are printed, never asserted; what is asserted is that each row measured what it names)."""
import json
import subprocess
import tarfile

import pytest
import torch

import workload
from runs import ENV, REPO

pytestmark = pytest.mark.slow
FMNIST = "/usr/share/datasets/fashion-mnist"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu-check")
    out, export = root / "out", root / "export"
    proc = subprocess.run(["bash", "gpu-check.sh", "--smoke", str(out), "--data-dir", FMNIST, "--export", str(export)],
                          cwd=REPO, capture_output=True, text=True, env=ENV, timeout=1000)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


STEPS = ["preflight", "bench", "concurrent", "runs", "study", "bench-float32", "bench-speed"]


def test_the_smoke_run_writes_every_figure(smoke):
    s = json.loads((smoke / "summary.json").read_text())
    assert s["smoke"] and [x["step"] for x in s["steps"]] == STEPS and all(x["exit"] == 0 for x in s["steps"])
    assert all(x["seconds"] <= x["limit_s"] + 10 for x in s["steps"])  # each within the limit it ran under
    assert all(v is not None and v > 0 for v in s["figures"].values()), s["figures"]
    assert [c["runs_at_once"] for c in s["concurrent"]] == [1, 2] and len(s["text"]) == 4
    assert s["float32_images_per_s"] > 0 and s["cuda"] == torch.version.cuda and s["budget_s"] == 900
    runs = {(r["protocol"], r["heuristic"]) for r in s["fashion_mnist"]}
    assert runs == {(p, h) for p in ("standard", "paper") for h in ("none", "stripes")}
    assert all(0 < r["best_accuracy"] <= 100 for r in s["fashion_mnist"])
    # each read from its row and JSON log, not from its console lines (as a run stopped by the limit is)
    assert all(r["stopped_at"] is None and r["training_s"] > 0 for r in s["fashion_mnist"])
    # the study: the named runs' seed and one more (GPU_CHECK_STUDY_SEEDS 2), every run at once
    plan = json.loads((smoke / "plan.json").read_text())
    assert isinstance(plan["can_compile"], bool) and plan["nccl"] == torch.distributed.is_nccl_available()
    assert plan["extra_seeds"] == [workload.PAPER_SEEDS[1]] and plan["runs_at_once"] == s["runs_at_once"] == 9
    study = s["study"]  # Stripes against the random control and vanilla
    assert {h: len(v) for h, v in study["runs"].items()} == {"none": 2, "stripes": 2, "random": 2}
    assert study["stripes_vs_random"]["diff"] == pytest.approx(
        sum(study["runs"]["stripes"]) / 2 - sum(study["runs"]["random"]) / 2)
    assert "### Across heuristics" in (smoke / "study.log").read_text()  # report.py's answer on those runs
    md = (smoke / "summary.md").read_text()
    assert "Stripes-variance" in md and "the random control" in md and "| bench-speed | ok |" in md
    assert "SMOKE" in md and "| images_per_s |" in md and s["provenance"]["git_commit"] in md
    assert "| speed option | img/s | x plain |" in md and "9 runs shared the device" in md


def test_export_holds_the_summary_and_the_whole_folder_as_one_archive(smoke):
    export = smoke.parent / "export"
    assert sorted(p.name for p in export.iterdir()) == ["gpu-check.tgz", "summary.json", "summary.md"]
    assert (export / "summary.md").read_text() == (smoke / "summary.md").read_text()
    with tarfile.open(export / "gpu-check.tgz") as tar:
        names = set(tar.getnames())
    assert {f"out/{n}" for n in ("steps.txt", "summary.md", "bench.json", "bench-speed.json", "runs.log")} <= names
    assert any(n.startswith("out/runs-study/") and n.endswith(".csv") for n in names)


def test_each_bench_step_measured_only_its_parts(smoke):
    bf16, float32, speed = (json.loads((smoke / f"{n}.json").read_text())
                            for n in ("bench", "bench-float32", "bench-speed"))
    header = {"date", "device", "device_name", "torch", "provenance", "args"}
    assert set(bf16) - header == {"rows", "text", "partition_overheads", "reducers", "iosim", "scoring"}
    assert set(float32) - header == {"rows", "text"} and float32["args"]["amp"] == "none"
    assert set(speed) - header == {"layout", "speed_options"}
    assert {r["model"] for r in speed["layout"]} == {"resnet18", "resnet34", "lenet5"}


def test_bench_runs_every_row_and_writes_json(smoke):
    result = json.loads((smoke / "bench.json").read_text())
    printed = (smoke / "bench.log").read_text()
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
    speed = {r["option"]: r for r in json.loads((smoke / "bench-speed.json").read_text())["speed_options"]}
    # no compile modes asked: none timed on a CPU
    assert list(speed) == ["plain", "fused optimizer", "foreach optimizer"]
    assert speed["plain"]["vs_plain"] == 1 and all(r["images_per_s"] > 0 and r["first_epoch_s"] > 0
                                                   for r in speed.values())
    assert "--steps 2 times fewer than 10 steps per epoch" in printed  # the figures are noise: said
    assert result["provenance"]["git_commit"] and "importance + partition" in printed and "iosim:" in printed



def test_bench_concurrent_copies_report_aggregate_throughput(smoke):
    rows = json.loads((smoke / "concurrent.json").read_text())["concurrent"]
    printed = (smoke / "concurrent.log").read_text()
    assert [r["runs_at_once"] for r in rows] == [1, 2]
    for r in rows:
        assert r["aggregate_images_per_s"] > 0
        # the estimate is the study's images over the measured rate
        expected = 1830 * 100 * (50_000 + 10_000 / 3)
        assert r["study_hours"] * 3600 * r["aggregate_images_per_s"] == pytest.approx(expected)
    assert "2 runs at once" in printed and "are noise, not a measurement" in printed



def test_missing_data_is_one_line_before_any_step(tmp_path):
    proc = subprocess.run(["bash", "gpu-check.sh", "--smoke", str(tmp_path / "out"), "--data-dir", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, env=ENV)
    assert proc.returncode == 2 and proc.stderr.strip().startswith(
        f"gpu-check.sh: error: {tmp_path}/train-images-idx3-ubyte.gz is missing")
    assert not (tmp_path / "out").exists()


def test_the_simulators_row_runs_the_epochs_asked_for(tmp_path):
    import argparse

    import bench

    for epochs in (7, 23, 100):
        row = bench.iosim_row(argparse.Namespace(sim_epochs=epochs, sim_examples=400))
        assert row["epochs"] == epochs and row["requests"] == 400 * epochs
