"""gpu-check.sh within its budget, without running its steps: its bad input (one line, exit 2, nothing
written), the stop when the preflight cannot run, how gpucheck.py reads a check cut short (a step
stopped at its limit, steps skipped), the study's seeds planned from the concurrent figures, and
bench.py's parts written as they finish (tests/test_gpucheck.py runs the whole smoke check)."""
import json
import multiprocessing as mp
import subprocess
import sys

import pytest

import bench
import gpucheck
import workload
from runs import ENV, REPO

FMNIST = "/usr/share/datasets/fashion-mnist"


def check(*args, env=None):
    return subprocess.run(["bash", "gpu-check.sh", *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          env={**ENV, **(env or {})}, timeout=120)


@pytest.mark.parametrize("args, env, says", [
    (["--smoke"], None, "usage: bash gpu-check.sh [--smoke] OUT_DIR"),
    (["--smoke", "OUT", "--fast"], None, "unknown option --fast"),
    (["--smoke", "OUT", "OTHER"], None, "one OUT_DIR, not '"),
    (["--smoke", "OUT", "--export"], None, "--export needs a folder"),
    (["--smoke", "OUT", "--export", "OUT/back"], None, "is inside OUT_DIR, whose archive would hold itself"),
    (["--smoke", "OUT"], {"GPU_CHECK_BUDGET_S": "8m"}, "GPU_CHECK_BUDGET_S and GPU_CHECK_STUDY_SEEDS take whole"),
    (["--smoke", "OUT"], {"GPU_CHECK_STUDY_SEEDS": "0"}, "GPU_CHECK_STUDY_SEEDS must be at least 1"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, args, env, says):
    args = [str(tmp_path / a) if a.startswith(("OUT", "OTHER")) else a for a in args]
    proc = check(*args, "--data-dir", FMNIST, env=env)
    assert proc.returncode == 2 and proc.stderr.startswith("gpu-check.sh: error: ") and says in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and list(tmp_path.iterdir()) == []


def test_an_earlier_check_is_never_overwritten(tmp_path):
    (tmp_path / "steps.txt").write_text("bench 0 70 150\n")
    proc = check("--smoke", tmp_path, "--data-dir", FMNIST)
    assert proc.returncode == 2 and "holds an earlier check (steps.txt); name a new OUT_DIR" in proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["steps.txt"] and (tmp_path / "steps.txt").read_text() == \
        "bench 0 70 150\n"


@pytest.mark.slow
def test_no_time_for_the_preflight_stops_the_check_at_once(tmp_path):
    out = tmp_path / "out"
    proc = check("--smoke", out, "--data-dir", FMNIST, "--export", tmp_path / "back", env={"GPU_CHECK_BUDGET_S": "0"})
    assert proc.returncode == 1 and "no time for the preflight in a 0 s budget" in proc.stderr
    assert (out / "steps.txt").read_text() == "preflight skipped 0 0\n"  # and no other step ran
    assert "| preflight | skipped: not enough of the budget left for it | 0 |" in (tmp_path / "back" /
                                                                                  "summary.md").read_text()


@pytest.mark.slow
def test_relative_folders_are_the_callers(tmp_path):
    proc = subprocess.run(["bash", str(REPO / "gpu-check.sh"), "--smoke", "out", "--export", "back", "--data-dir",
                           FMNIST], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**ENV, "GPU_CHECK_BUDGET_S": "0"})
    assert proc.returncode == 1 and (tmp_path / "out" / "steps.txt").is_file()
    assert (tmp_path / "back" / "summary.md").is_file() and not (REPO / "out").exists()


def write_check(folder, steps: str, concurrent=None):
    folder.mkdir(exist_ok=True)
    (folder / "steps.txt").write_text(steps)
    if concurrent:
        (folder / "concurrent.json").write_text(json.dumps({"concurrent": [
            {"runs_at_once": k, "aggregate_images_per_s": rate, "study_hours": 1.0} for k, rate in concurrent]}))


def test_a_step_stopped_at_its_limit_fails_the_check_and_skips_only_warn(tmp_path, capsys):
    write_check(tmp_path / "a", "preflight 0 12 90\nbench 124 150 150\nconcurrent skipped 0 0\nruns 137 40 240\n")
    with pytest.raises(SystemExit, match="steps failed or were stopped: bench, runs"):
        gpucheck.main([str(tmp_path / "a")])
    md = (tmp_path / "a" / "summary.md").read_text()
    assert "| bench | stopped at its 150 s limit | 150 |" in md and "| concurrent | skipped: not enough" in md
    assert "| runs | failed (137: its log says why) | 40 |" in md  # killed long before its limit: not the limit
    write_check(tmp_path / "b", "preflight 0 12 90\nbench 0 100 150\nconcurrent skipped 0 0\n")
    gpucheck.main([str(tmp_path / "b")])  # only skipped: exit 0, and said
    assert "warning: skipped, the budget being spent: concurrent" in capsys.readouterr().err
    s = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert [x["exit"] for x in s["steps"]] == [0, 0, "skipped"] and s["figures"]["images_per_s"] is None


def test_the_study_takes_the_seeds_that_fit_by_the_concurrent_figures(tmp_path):
    write_check(tmp_path, "", concurrent=[(1, 40_000), (4, 80_000), (8, 120_000), (16, 160_000)])
    images, start = gpucheck.RUN_IMAGES[False], gpucheck.START_S

    def needed(k):  # the named runs and 3 per extra seed, torchrun's beside them, at the interpolated rate
        runs = gpucheck.NAMED + 3 * k
        rate = {6: 100_000, 9: 125_000, 12: 140_000, 15: 155_000}[runs + 1]
        return start + gpucheck.MARGIN * runs * images / rate

    for k in range(4):
        seconds = needed(k) + 1
        expected = list(workload.PAPER_SEEDS[1:1 + k])
        assert gpucheck.seeds_for(tmp_path, seconds, 3, False) == expected
        assert gpucheck.seeds_for(tmp_path, seconds - 2, 3, False) == expected[:-1]
    assert gpucheck.seeds_for(tmp_path, 1e9, 2, False) == list(workload.PAPER_SEEDS[1:3])  # --most binds
    assert gpucheck.seeds_for(tmp_path, 1e9, 50, True) == list(workload.PAPER_SEEDS[1:])  # never past the seeds
    write_check(tmp_path, "", concurrent=[(1, 40_000), (4, 80_000)])  # 9 at once never measured: not tried
    assert gpucheck.seeds_for(tmp_path, 1e9, 3, False) == [] and len(gpucheck.seeds_for(tmp_path, 1e9, 3, True)) == 3


def test_a_concurrent_step_cut_short_plans_by_the_gpus_memory(tmp_path):
    write_check(tmp_path, "", concurrent=[(1, 40_000), (4, 80_000)])
    (tmp_path / "bench.json").write_text(json.dumps({"rows": [
        {"path": "device, fused (4 workers)", "tracking": True, "channels": "loss", "images_per_s": 45_000,
         "memory_mb": 3000.0}]}))
    (tmp_path / "plan.json").write_text(json.dumps({"gpu_memory_mb": 20_000}))
    assert gpucheck.aggregate(tmp_path, 9) == (80_000, 4)  # 80% of 20 GB holds 3 of 4 GB: the measured 4 stand
    (tmp_path / "plan.json").write_text(json.dumps({"gpu_memory_mb": 143_000}))  # an H200: 28 fit, 16 at most
    assert gpucheck.aggregate(tmp_path, 9) == (80_000, gpucheck.MOST_AT_ONCE)
    assert gpucheck.seeds_for(tmp_path, 1e9, 3, False) == list(workload.PAPER_SEEDS[1:4])


def test_no_concurrent_figures_plan_from_one_runs_speed(tmp_path):
    write_check(tmp_path, "")
    assert gpucheck.seeds_for(tmp_path, 1e9, 3, False) == []  # nothing measured: no extra seed
    (tmp_path / "bench.json").write_text(json.dumps({"rows": [
        {"path": "device, fused (4 workers)", "tracking": True, "channels": "loss", "images_per_s": 50_000}]}))
    rate, fits = gpucheck.aggregate(tmp_path, 9)
    assert rate == 50_000 and fits == gpucheck.NAMED + 1
    assert gpucheck.seeds_for(tmp_path, 1e9, 3, False) == []  # 9 at once was never shown to fit


def _exits(code: int) -> None:
    raise SystemExit(code)


@pytest.mark.slow
def test_a_concurrent_copy_that_dies_stops_the_others(tmp_path):
    context = mp.get_context("spawn")
    queue = context.Queue()
    copies = [context.Process(target=_exits, args=(3,)), context.Process(target=_exits, args=(0,))]
    for c in copies:
        c.start()
    with pytest.raises(SystemExit, match="a copy of 2 at once exited with 3"):
        bench.gather(copies, queue, 2)


@pytest.mark.slow
def test_bench_writes_the_parts_asked_for_and_nothing_else(tmp_path):
    out = tmp_path / "b.json"
    proc = subprocess.run([sys.executable, "bench.py", "--parts", "iosim", "partition", "--partition-examples",
                           "500", "--sim-examples", "500", "--sim-epochs", "25", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert set(result) == {"date", "device", "device_name", "torch", "provenance", "args", "partition_overheads",
                           "iosim"}
    assert result["iosim"]["requests"] == 500 * 25 and not (tmp_path / "b.json.part").exists()
    # in PARTS' order whatever the order asked: the partition overhead printed before the simulator
    assert proc.stdout.index("importance + partition") < proc.stdout.index("iosim:")


def test_the_summary_says_what_the_machine_could_not_do(tmp_path):
    write_check(tmp_path, "preflight 0 12 60\n")
    (tmp_path / "plan.json").write_text(json.dumps({"budget_s": 480, "can_compile": False,
                                                    "compute_mode": "Exclusive_Process"}))
    gpucheck.main([str(tmp_path)])
    md = (tmp_path / "summary.md").read_text()
    assert "torch.compile not timed: no C compiler or Python.h here" in md
    assert "compute mode Exclusive_Process: runs sharing the GPU may have been refused" in md
    (tmp_path / "plan.json").write_text(json.dumps({"budget_s": 480, "can_compile": True, "compute_mode": "Default"}))
    gpucheck.main([str(tmp_path)])
    md = (tmp_path / "summary.md").read_text()
    assert "torch.compile not timed" not in md and "compute mode" not in md and "budget 480 s" in md


def test_summary_json_is_strict_json_without_a_test(tmp_path):
    """One run an arm: no p-value, and summary.json says null, not NaN (which jq and JSON.parse refuse)."""
    write_check(tmp_path, "study 0 1 60\n")
    for heuristic, folder in (("none", "Baselines"), ("roundrobin", "FashionMNIST-ResNet18-Stripes-Variance"),
                              ("random", "FashionMNIST-ResNet18-Random-Variance")):
        (tmp_path / "runs-study" / folder).mkdir(parents=True)
        name = "fmnist-vanilla-resnet18-total3.csv" if heuristic == "none" else "W1-INT1-IGN0.csv"
        (tmp_path / "runs-study" / folder / name).write_text(
            "id,epoch_1,epoch_2,epoch_3,best_accuracy,best_epoch,warmup_epochs,interval_epochs,measure,heuristic,model,"
            f"dataset\n17611,50.0,60.0,70.0,70.0,3,1,1,variance,{heuristic},resnet18,fashionmnist\n")
    gpucheck.main([str(tmp_path)])
    text = (tmp_path / "summary.json").read_text()
    assert "NaN" not in text and json.loads(text)["study"]["stripes_vs_random"]["p_value"] is None
    assert "no test (fewer than 2 runs an arm)" in (tmp_path / "summary.md").read_text()
    for csv in (tmp_path / "runs-study").rglob("*.csv"):  # a second seed each, the same accuracy: no spread
        csv.write_text(csv.read_text() + csv.read_text().splitlines()[1].replace("17611", "74606", 1) + "\n")
    gpucheck.main([str(tmp_path)])
    assert "against the random control: no test (no spread between the runs)" in (tmp_path / "summary.md").read_text()


def test_a_named_run_stopped_by_the_limit_reports_its_best_so_far(tmp_path):
    write_check(tmp_path, "runs 124 240 240\n")
    (tmp_path / "run-stripes-standard.log").write_text(
        "W10-INT5-seed17611: 4 workers ...\n"
        "epoch   1/30      warmup  loss 0.6113  test  84.10%     41234 img/s  tracking 0.010s  1.6 s/epoch, 46s left\n"
        "epoch   2/30      warmup  loss 0.3712  test  87.95%     44017 img/s  tracking 0.010s  1.5 s/epoch, 42s left\n"
        "epoch   3/30      warmup  loss 0.3101  test  87.20%     43950 img/s  tracking 0.010s  1.5 s/epoch, 40s left\n")
    with pytest.raises(SystemExit):
        gpucheck.main([str(tmp_path)])
    [run] = json.loads((tmp_path / "summary.json").read_text())["fashion_mnist"]
    assert run == {"protocol": "standard", "heuristic": "stripes", "best_accuracy": 87.95, "best_epoch": 2,
                   "images_per_s": 44017.0, "training_s": None, "stopped_at": "3/30"}
    assert "| standard | stripes | 87.95 | 2 | 44017 | stopped by the limit after epoch 3/30: best so far |" in \
        (tmp_path / "summary.md").read_text()


def test_the_planners_run_size_is_the_scripts():
    """gpucheck.RUN_IMAGES restates the runs' size that gpu-check.sh sets: the two must move together."""
    import re

    script = (REPO / "gpu-check.sh").read_text()
    for smoke, pattern, train, test in ((True, r"fmnist=\(--subset (\d+) --test-subset (\d+) .*?--total-epochs (\d+)",
                                         None, None),
                                        (False, r"fmnist=\(--batch-size \d+ --total-epochs (\d+)", 60_000, 10_000)):
        m = re.search(pattern, script)
        assert m, pattern
        if smoke:
            train, test, epochs = map(int, m.groups())
        else:
            epochs = int(m[1])
        assert gpucheck.RUN_IMAGES[smoke] == pytest.approx(epochs * (train + test / 3))


@pytest.mark.parametrize("argv, says", [
    (["--parts", "speedy"], "argument --parts: invalid choice: 'speedy'"),
    (["--parts"], "argument --parts: expected at least one argument"),
])
def test_bench_bad_parts_are_one_line_before_anything_runs(tmp_path, argv, says):
    proc = subprocess.run([sys.executable, "bench.py", *argv, "--out", str(tmp_path / "b.json")], cwd=REPO,
                          capture_output=True, text=True, env=ENV, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and says in lines[0] and not list(tmp_path.iterdir())
