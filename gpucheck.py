"""gpu-check.sh's summary and its plan: every figure its steps wrote (bench.py's JSONs, the
concurrent runs' estimate, the runs' rows and logs) against the targets, as summary.json and
summary.md in its folder (rewritten after every step); before the steps, what the check runs on
(plan.json); and how many more seeds of the study fit in the seconds left.

    python gpucheck.py --help                      # what it reads
    bash gpu-check.sh --smoke /tmp/gpu-check       # which calls: python gpucheck.py /tmp/gpu-check --smoke 1
    python gpucheck.py /tmp/gpu-check --seeds-for 200 --most 3  # the extra seeds that fit in 200 s
"""
import argparse
import json
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pandas as pd

import results
import workload

# The targets on one H100 (bf16, tracking on), and the paper's figures they replace.
TARGETS = {"images_per_s": 45_000, "tracking_percent": 2.0, "partition_s": 0.1, "topk_over_select": 10.0}
REFERENCE = (90.7, 91.3)  # Fashion-MNIST, torchvision's ResNet-18 on an H100, 30 epochs: best test accuracy (%)
FIRST_SEED = workload.PAPER_SEEDS[0]  # dpt.py's default: the named runs' seed, and the study's first
ARMS = ("none", "stripes", "random")  # the study: vanilla, Stripes-variance, the random-partition control
NAMED = 5  # runs gpu-check.sh starts whatever the time: Stripes and vanilla under both evaluations, the control
# One run of gpu-check.sh's Fashion-MNIST size, in training images (a test image's forward pass: about a
# third of one), and what a process spends before its first step (torch, CUDA, the data onto the device).
RUN_IMAGES = {False: 30 * (60_000 + 10_000 / 3), True: 3 * (512 + 256 / 3)}
START_S = 30
MARGIN = 1.25  # the runs' speed under contention is the concurrent bench's, give or take


def steps(folder: Path) -> list[dict]:
    out = []
    for line in (folder / "steps.txt").read_text().splitlines():
        name, status, seconds, limit = line.split()
        out.append({"step": name, "exit": status if status == "skipped" else int(status), "seconds": int(seconds),
                    "limit_s": int(limit)})
    return out


def read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def runs(folder: Path) -> list[dict]:
    """The named Fashion-MNIST runs' best accuracy, per evaluation protocol and heuristic (the
    standard ones are the study's first seed), with their speed while they shared the device."""
    import report

    out = []
    for protocol, sub in (("standard", "runs-study"), ("paper", "runs-paper")):
        try:
            table, _ = report.load_runs(folder / sub)
        except report.ReportError:  # no row yet
            continue
        named = table[(table.id.astype(str) == str(FIRST_SEED)) & (table.heuristic != "random")]  # the control: study
        for row in named.itertuples():
            logs = sorted((folder / sub / row.workload / "logs").glob(f"{row.file}-seed{row.id}-*.json"))
            log = read(logs[-1]) if logs else {}
            speed = [e.get("images_per_s") for e in log.get("epochs", []) if e.get("images_per_s")]
            out.append({"protocol": protocol, "heuristic": row.heuristic, "best_accuracy": float(row.value),
                        "best_epoch": int(row.best_epoch), "images_per_s": max(speed) if speed else None,
                        "training_s": log.get("total_training_s"), "stopped_at": None})
    done = {(r["protocol"], r["heuristic"]) for r in out}
    for protocol in ("standard", "paper"):
        for name, heuristic in (("stripes", "stripes"), ("vanilla", "none")):
            if (protocol, heuristic) not in done:
                out += stopped(folder / f"run-{name}-{protocol}.log", protocol, heuristic)
    return out


EPOCH_LINE = re.compile(r"^epoch\s+(\d+)/(\d+)\s.*?\btest\s+([\d.]+)%.*?([\d.]+) img/s")


def stopped(log: Path, protocol: str, heuristic: str) -> list[dict]:
    """A named run the time limit stopped writes no row: its best so far from the epoch lines it printed."""
    try:
        epochs = [m.groups() for m in map(EPOCH_LINE.match, log.read_text().splitlines()) if m]
    except OSError:
        return []
    if not epochs:
        return []
    best = max(epochs, key=lambda e: float(e[2]))
    return [{"protocol": protocol, "heuristic": heuristic, "best_accuracy": float(best[2]), "best_epoch": int(best[0]),
             "images_per_s": max(float(e[3]) for e in epochs), "training_s": None,
             "stopped_at": f"{epochs[-1][0]}/{epochs[-1][1]}"}]


def study(folder: Path) -> dict:
    """The concurrent study's arms (best accuracy per seed) and whether Stripes-variance beats the random
    control and vanilla (Welch's test, report.welch)."""
    import report

    try:
        table, _ = report.load_runs(folder / "runs-study")
    except report.ReportError:
        return {}
    arms = {h: table[table.heuristic == h].value for h in ARMS}
    out = {"runs": {h: [float(v) for v in values] for h, values in arms.items()}}
    for other in ("random", "none"):
        diff = arms["stripes"].mean() - arms[other].mean()
        p, lo, hi = report.welch(arms["stripes"], arms[other])
        out[f"stripes_vs_{other}"] = {"diff": float(diff), "p_value": p, "ci": [lo, hi]}
    return out


def strict(value):
    """NaN and infinities as None, all the way down: summary.json is JSON that any parser reads (a
    test with fewer than 2 runs an arm has no p-value)."""
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def device_rows(bench: dict) -> list[dict]:
    return [r for r in bench.get("rows", []) if r["path"].startswith("device, fused") and r["tracking"]]


MOST_AT_ONCE = 16  # the most runs the concurrent bench times at once (and an H100 machine's cores)
CONTEXT_MB = 1024  # what a process holds on the GPU beyond its tensors (its CUDA context)


def aggregate(folder: Path, n: int) -> tuple[float | None, int]:
    """Images/s of n runs at once on this device, from bench.py --concurrent's figures (interpolated,
    held beyond the largest K), else one run's (no gain from sharing); and the most runs at once known
    to fit: the largest K the concurrent bench ran, or as many as 80% of the GPU's memory holds at the
    bench's peak for one (up to MOST_AT_ONCE), where the concurrent step was cut short."""
    points = sorted((c["runs_at_once"], c["aggregate_images_per_s"])
                    for c in read(folder / "concurrent.json").get("concurrent", []))
    rows = device_rows(read(folder / "bench.json"))
    peak = max((r.get("memory_mb") or 0 for r in rows), default=0)
    total = read(folder / "plan.json").get("gpu_memory_mb") or 0
    by_memory = min(MOST_AT_ONCE, int(0.8 * total // (peak + CONTEXT_MB))) if peak and total else 0
    if points:
        ks, rates = zip(*points)
        return float(np.interp(n, ks, rates)), max(max(ks), by_memory)
    single = max((r["images_per_s"] for r in rows), default=None)
    return single, max(NAMED + 1, by_memory)


def seeds_for(folder: Path, seconds: float, most: int, smoke: bool) -> list[int]:
    """The study's extra seeds (each arm one more run) that let the NAMED runs and 3 per extra seed
    (with torchrun's small one beside them) end within `seconds`, all at once: the most that fit, at
    most `most` (and, on a GPU, no more processes at once than are known to fit)."""
    for k in range(min(most, len(workload.PAPER_SEEDS) - 1), 0, -1):
        runs = NAMED + len(ARMS) * k
        rate, fits = aggregate(folder, runs + 1)
        if rate and (smoke or runs + 1 <= fits) and START_S + MARGIN * runs * RUN_IMAGES[smoke] / rate <= seconds:
            return list(workload.PAPER_SEEDS[1:1 + k])
    return []


def compute_mode() -> str | None:
    """nvidia-smi's compute mode: Exclusive_Process would refuse every run but the first at once."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=compute_mode", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def start(folder: Path, budget: int, smoke: bool) -> dict:
    """The check's plan.json, before any step: what it runs on and with which budget. Imports what
    the steps import (a package missing on the GPU machine fails here, in seconds) and refuses a
    full run where torch sees no GPU."""
    import torch

    import bench  # noqa: F401  (bench imports every module the steps run)
    import report  # noqa: F401

    if not smoke and not torch.cuda.is_available():
        sys.exit("gpucheck.py: error: torch sees no CUDA device; the full check is for one GPU "
                 "(bash gpu-check.sh --smoke OUT_DIR runs it CPU-sized)")
    plan = {"budget_s": budget, "date": pd.Timestamp.now().strftime("%Y-%m-%d"), "torch": torch.__version__,
            "cuda": torch.version.cuda, "provenance": results.provenance(),
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
            "nccl": torch.distributed.is_available() and torch.distributed.is_nccl_available(),
            # Triton builds its launchers with a C compiler against Python.h: without them --compile fails
            "can_compile": bool(shutil.which("cc") or shutil.which("gcc"))
            and (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file(),
            "compute_mode": compute_mode(),
            "gpu_memory_mb": torch.cuda.mem_get_info()[1] / 2**20 if torch.cuda.is_available() else None}
    results.write_bytes(folder / "plan.json", json.dumps(plan, indent=1).encode())
    return plan


def summary(folder: Path, smoke: bool) -> dict:
    bench, concurrent = read(folder / "bench.json"), read(folder / "concurrent.json")
    device = device_rows(bench)
    every = [r for r in device if "," in r["channels"]]
    figures = {
        "images_per_s": max((r["images_per_s"] for r in device), default=None),
        "tracking_percent": max((r["tracking_percent"] for r in every), default=None),
        "partition_s": bench.get("partition_overheads", {}).get("ours_s"),
        "topk_over_select": min((r["topk_over_select"] for r in bench.get("reducers", [])
                                 if r["reducer"] == "exdyna" and r["density"] == 0.001), default=None),
    }
    float32 = device_rows(read(folder / "bench-float32.json"))
    started = read(folder / "plan.json")
    return {"smoke": smoke, "device": bench.get("device_name") or started.get("device"),
            "torch": bench.get("torch") or started.get("torch"),
            "cuda": started.get("cuda"), "provenance": bench.get("provenance") or started.get("provenance"),
            "can_compile": started.get("can_compile"), "compute_mode": started.get("compute_mode"),
            "date": bench.get("date") or started.get("date"), "budget_s": started.get("budget_s"),
            "steps": steps(folder), "figures": figures, "targets": TARGETS,
            "float32_images_per_s": max((r["images_per_s"] for r in float32), default=None),
            "speed_options": read(folder / "bench-speed.json").get("speed_options", []),
            "layout": read(folder / "bench-speed.json").get("layout", []),
            "concurrent": concurrent.get("concurrent", []), "text": bench.get("text", []),
            "runs_at_once": started.get("runs_at_once"), "fashion_mnist": runs(folder),
            "reference_accuracy": REFERENCE, "study": study(folder)}


def status(step: dict) -> str:
    if step["exit"] == "skipped":
        return "skipped: not enough of the budget left for it"
    if step["exit"] in (124, 137) and step["seconds"] >= step["limit_s"] - 1:  # 137 sooner: killed, not timed out
        return f"stopped at its {step['limit_s']} s limit"
    return "ok" if step["exit"] == 0 else f"failed ({step['exit']}: its log says why)"


def markdown(s: dict) -> str:
    smoke = " (SMOKE: CPU-sized, not figures to quote)" if s["smoke"] else ""
    lines = [f"# gpu-check: {s['device']} (torch {s['torch']}, CUDA {s['cuda']}), {s['date']}{smoke}", "",
             f"commit {(s['provenance'] or {}).get('git_commit', '?')}; budget {s['budget_s']} s", "",
             "| step | status | seconds |", "|---|---|---|"]
    lines += [f"| {x['step']} | {status(x)} | {x['seconds']} |" for x in s["steps"]]
    lines += ["", "| figure | measured | target (one H100, bf16) |", "|---|---|---|"]
    for name, target in s["targets"].items():
        value = s["figures"].get(name)
        lines.append(f"| {name} | {'' if value is None else f'{value:.4g}'} | {target:g} |")
    if s["float32_images_per_s"]:
        lines += ["", f"float32, the same device rows: {s['float32_images_per_s']:.0f} img/s at most"]
    if s["can_compile"] is False:
        lines += ["", "torch.compile not timed: no C compiler or Python.h here for Triton's launchers"]
    if s["compute_mode"] not in (None, "Default"):
        lines += ["", f"compute mode {s['compute_mode']}: runs sharing the GPU may have been refused"]
    if s["speed_options"]:
        lines += ["", "| speed option | img/s | x plain | first epoch (s) |", "|---|---|---|---|"]
        lines += [f"| {r['option']} | {r['images_per_s']:.0f} | {r['vs_plain']:.2f} | {r['first_epoch_s']:.1f} |"
                  for r in s["speed_options"]]
    if s["layout"]:
        lines += ["", "| model | NHWC ms/step | NCHW ms/step | NCHW / NHWC | dpt.py runs |", "|---|---|---|---|---|"]
        lines += [f"| {r['model']} | {r['nhwc_step_ms']:.1f} | {r['nchw_step_ms']:.1f} | {r['nchw_over_nhwc']:.2f} | "
                  f"{r['chosen']} |" for r in s["layout"]]
    if s["concurrent"]:
        lines += ["", "| runs at once | images/s in all | the paper's 1830 runs (h) |", "|---|---|---|"]
        lines += [f"| {c['runs_at_once']} | {c['aggregate_images_per_s']:.0f} | {c['study_hours']:,.0f} |"
                  for c in s["concurrent"]]
    if s["text"]:
        lines += ["", "| language model | emulation | tokens/s |", "|---|---|---|"]
        lines += [f"| {t['model']} | {t['emulation']} | {t['tokens_per_s']:.0f} |" for t in s["text"]]
    lo, hi = s["reference_accuracy"]
    lines += ["", f"Fashion-MNIST best test accuracy (reference {lo}-{hi}% with torchvision's ResNet-18 on an "
              f"H100, 30 epochs); {s['runs_at_once'] or '?'} runs shared the device, so img/s is each one's share:",
              "", "| protocol | heuristic | best % | epoch | img/s | s |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['protocol']} | {r['heuristic']} | {r['best_accuracy']:.2f} | {r['best_epoch']} | "
              f"{r['images_per_s'] or 0:.0f} | "
              + (f"stopped by the limit after epoch {r['stopped_at']}: best so far |" if r["stopped_at"] else
                 f"{r['training_s'] or 0:.0f} |") for r in s["fashion_mnist"]]
    if s["study"]:
        lines += ["", "Concurrent study (standard evaluation): best test accuracy per seed; Stripes-variance "
                  "against the random control and vanilla (Welch):", ""]
        lines += [f"- {h}: {', '.join(f'{v:.2f}' for v in values)}" for h, values in s["study"]["runs"].items()]
        for other, name in (("random", "the random control"), ("none", "vanilla")):
            c, runs = s["study"][f"stripes_vs_{other}"], s["study"]["runs"]
            why = ("fewer than 2 runs an arm" if min(len(runs["stripes"]), len(runs[other])) < 2 else
                   "no spread between the runs")  # Welch's test divides by it
            verdict = (f"against {name}: no test ({why})" if c["p_value"] is None else
                       f"{'beats' if c['diff'] > 0 and c['p_value'] < 0.05 else 'does not beat'} {name} "
                       f"({c['diff']:+.2f} pp, p {c['p_value']:.3g})")
            lines.append(f"- Stripes-variance {verdict}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="gpucheck.py", description=__doc__.split("\n\n")[0])
    p.add_argument("folder", type=Path, help="gpu-check.sh's OUT_DIR")
    p.add_argument("--smoke", type=int, choices=[0, 1], default=0,
                   help="1: the steps ran CPU-sized (gpu-check.sh --smoke)")
    p.add_argument("--start", type=int, metavar="SECONDS",
                   help="instead of the summary: check that the steps can run here, write plan.json with this "
                        "budget")
    p.add_argument("--seeds-for", type=float, metavar="SECONDS",
                   help="instead of the summary: print the study's extra seeds whose runs fit in SECONDS beside the "
                        "named ones, from the folder's concurrent figures")
    p.add_argument("--most", type=int, default=3, help="with --seeds-for: at most this many extra seeds")
    args = p.parse_args(argv)
    if args.start is not None:
        plan = start(args.folder, args.start, bool(args.smoke))
        print(f"gpu-check on {plan['device']}, torch {plan['torch']} (CUDA {plan['cuda']}, NCCL {plan['nccl']}), "
              f"budget {plan['budget_s']} s")
        return
    if args.seeds_for is not None:
        seeds = seeds_for(args.folder, args.seeds_for, args.most, bool(args.smoke))
        at_once = NAMED + 1 + len(ARMS) * len(seeds)  # with torchrun's run
        plan = read(args.folder / "plan.json") | {"extra_seeds": seeds, "runs_at_once": at_once}
        results.write_bytes(args.folder / "plan.json", json.dumps(plan, indent=1).encode())
        print(*seeds)
        return
    if not (args.folder / "steps.txt").is_file():
        sys.exit(f"gpucheck.py: error: {args.folder} holds no steps.txt; run bash gpu-check.sh {args.folder} first")
    s = strict(summary(args.folder, bool(args.smoke)))
    results.write_bytes(args.folder / "summary.json", json.dumps(s, indent=1, default=str, allow_nan=False).encode())
    text = markdown(s)
    results.write_bytes(args.folder / "summary.md", text.encode())
    print(text, end="")
    failed = [x["step"] for x in s["steps"] if x["exit"] not in (0, "skipped")]
    if failed:
        sys.exit(f"gpucheck.py: error: steps failed or were stopped: {', '.join(failed)} (their logs are in "
                 f"{args.folder})")
    skipped = [x["step"] for x in s["steps"] if x["exit"] == "skipped"]
    if skipped:
        print(f"gpucheck.py: warning: skipped, the budget being spent: {', '.join(skipped)} (GPU_CHECK_BUDGET_S "
              "gives more seconds)", file=sys.stderr)


if __name__ == "__main__":
    main()
