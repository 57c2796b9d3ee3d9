"""gpu-check.sh's summary: every figure its steps wrote (bench.py's JSON, the concurrent runs' estimate,
the runs' rows and logs), against the targets, as summary.json and summary.md in its folder.

    python gpucheck.py --help                     # what it reads
    bash gpu-check.sh --smoke /tmp/gpu-check      # which ends with: python gpucheck.py /tmp/gpu-check --smoke 1
"""
import argparse
import json
import sys
from pathlib import Path

import pandas as pd

import results

# What issue 21 asks of one H100 (bf16, tracking on), and the paper's figures they replace.
TARGETS = {"images_per_s": 45_000, "tracking_percent": 2.0, "partition_s": 0.1, "topk_over_select": 10.0}
REFERENCE = (90.7, 91.3)  # Fashion-MNIST, torchvision's ResNet-18 on an H100, 30 epochs: best test accuracy (%)


def steps(folder: Path) -> list[dict]:
    out = []
    for line in (folder / "steps.txt").read_text().splitlines():
        name, rc, seconds = line.split()
        out.append({"step": name, "exit": int(rc), "seconds": int(seconds)})
    return out


def read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def runs(folder: Path) -> list[dict]:
    """The Fashion-MNIST runs' best accuracy, per evaluation protocol and heuristic, with their speed."""
    out = []
    for protocol in ("standard", "paper"):
        for csv in sorted((folder / f"runs-{protocol}").rglob("*.csv")):
            if csv.parent.name in ("logs", "checkpoints"):
                continue
            for row in pd.read_csv(csv).to_dict("records"):
                logs = sorted((csv.parent / "logs").glob(f"{results.run_name(csv, int(row['id']))}-*.json"))
                log = read(logs[-1]) if logs else {}
                speed = [e.get("images_per_s") for e in log.get("epochs", []) if e.get("images_per_s")]
                out.append({"protocol": protocol, "heuristic": row["heuristic"], "best_accuracy": row["best_accuracy"],
                            "best_epoch": int(row["best_epoch"]), "images_per_s": max(speed) if speed else None,
                            "training_s": log.get("total_training_s")})
    return out


def study(folder: Path) -> dict:
    """The concurrent study's arms (best accuracy per seed) and whether Stripes-variance beats the random
    control and vanilla (Welch's test, report.welch)."""
    import report

    try:
        runs, _ = report.load_runs(folder / "runs-study")
    except report.ReportError:
        return {}
    arms = {h: runs[runs.heuristic == h].value for h in ("none", "stripes", "random")}
    out = {"runs": {h: [float(v) for v in values] for h, values in arms.items()}}
    for other in ("random", "none"):
        diff = arms["stripes"].mean() - arms[other].mean()
        p, lo, hi = report.welch(arms["stripes"], arms[other])
        out[f"stripes_vs_{other}"] = {"diff": float(diff), "p_value": p, "ci": [lo, hi]}
    return out


def summary(folder: Path, smoke: bool) -> dict:
    bench, concurrent = read(folder / "bench.json"), read(folder / "concurrent.json")
    rows = bench.get("rows", [])
    device = [r for r in rows if r["path"].startswith("device, fused") and r["tracking"]]
    every = [r for r in device if "," in r["channels"]]
    figures = {
        "images_per_s": max((r["images_per_s"] for r in device), default=None),
        "tracking_percent": max((r["tracking_percent"] for r in every), default=None),
        "partition_s": bench.get("partition_overheads", {}).get("ours_s"),
        "topk_over_select": min((r["topk_over_select"] for r in bench.get("reducers", [])
                                 if r["reducer"] == "exdyna" and r["density"] == 0.001), default=None),
    }
    return {"smoke": smoke, "device": bench.get("device_name"), "torch": bench.get("torch"),
            "provenance": bench.get("provenance"), "date": bench.get("date"), "steps": steps(folder),
            "figures": figures, "targets": TARGETS, "concurrent": concurrent.get("concurrent", []),
            "text": bench.get("text", []), "fashion_mnist": runs(folder), "reference_accuracy": REFERENCE,
            "study": study(folder)}


def markdown(s: dict) -> str:
    smoke = " (SMOKE: CPU-sized, not figures to quote)" if s["smoke"] else ""
    lines = [f"# gpu-check: {s['device']} (torch {s['torch']}), {s['date']}{smoke}", "",
             f"commit {(s['provenance'] or {}).get('git_commit', '?')}", "",
             "| step | exit | seconds |", "|---|---|---|"]
    lines += [f"| {x['step']} | {x['exit']} | {x['seconds']} |" for x in s["steps"]]
    lines += ["", "| figure | measured | target (one H100, bf16) |", "|---|---|---|"]
    for name, target in s["targets"].items():
        value = s["figures"].get(name)
        lines.append(f"| {name} | {'' if value is None else f'{value:.4g}'} | {target:g} |")
    if s["concurrent"]:
        lines += ["", "| runs at once | images/s in all | the paper's 1830 runs (h) |", "|---|---|---|"]
        lines += [f"| {c['runs_at_once']} | {c['aggregate_images_per_s']:.0f} | {c['study_hours']:,.0f} |"
                  for c in s["concurrent"]]
    if s["text"]:
        lines += ["", "| language model | emulation | tokens/s |", "|---|---|---|"]
        lines += [f"| {t['model']} | {t['emulation']} | {t['tokens_per_s']:.0f} |" for t in s["text"]]
    lo, hi = s["reference_accuracy"]
    lines += ["", f"Fashion-MNIST best test accuracy (reference {lo}-{hi}% with torchvision's ResNet-18 on an "
              "H100, 30 epochs):", "", "| protocol | heuristic | best % | epoch | img/s | s |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {r['protocol']} | {r['heuristic']} | {r['best_accuracy']:.2f} | {r['best_epoch']} | "
              f"{r['images_per_s'] or 0:.0f} | {r['training_s'] or 0:.0f} |" for r in s["fashion_mnist"]]
    if s["study"]:
        lines += ["", "Concurrent study (standard evaluation): best test accuracy per seed; Stripes-variance "
                  "against the random control and vanilla (Welch):", ""]
        lines += [f"- {h}: {', '.join(f'{v:.2f}' for v in values)}" for h, values in s["study"]["runs"].items()]
        for other, name in (("random", "the random control"), ("none", "vanilla")):
            c = s["study"][f"stripes_vs_{other}"]
            verdict = ("no test (fewer than 2 runs an arm)" if c["p_value"] != c["p_value"] else
                       f"{'beats' if c['diff'] > 0 and c['p_value'] < 0.05 else 'does not beat'} {name} "
                       f"({c['diff']:+.2f} pp, p {c['p_value']:.3g})")
            lines.append(f"- Stripes-variance {verdict}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="gpucheck.py", description=__doc__.split("\n\n")[0])
    p.add_argument("folder", type=Path, help="gpu-check.sh's OUT_DIR")
    p.add_argument("--smoke", type=int, choices=[0, 1], default=0,
                   help="1: the steps ran CPU-sized (gpu-check.sh --smoke)")
    args = p.parse_args(argv)
    if not (args.folder / "steps.txt").is_file():
        sys.exit(f"gpucheck.py: error: {args.folder} holds no steps.txt; run bash gpu-check.sh {args.folder} first")
    s = summary(args.folder, bool(args.smoke))
    (args.folder / "summary.json").write_text(json.dumps(s, indent=1, default=str))
    text = markdown(s)
    (args.folder / "summary.md").write_text(text)
    print(text, end="")
    failed = [x["step"] for x in s["steps"] if x["exit"]]
    if failed:
        sys.exit(f"gpucheck.py: error: steps failed: {', '.join(failed)} (their logs are in {args.folder})")


if __name__ == "__main__":
    main()
