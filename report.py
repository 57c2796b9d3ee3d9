"""The paper's tables from result CSVs in its schema: ours (dpt.py, run-experiments.sh) or the
paper's own PaperCSVs. plots.ipynb draws its figures from the same functions.

    python report.py results/paper                          # Markdown: Tables 1-5, baselines, top 5, tests, Table 6
    python report.py results/paper --format latex --out tables.tex
    python report.py results/paper --paper PaperCSVs/paper-reported.csv   # distance to the paper's cells, in its stds

A table: per (W, I) cell, mean +- sample standard deviation of best_accuracy over the runs
(seeds), 3 decimals, as the paper's Tables 1-5. Beside it, for each cell, the difference from the
workload's vanilla baseline with Welch's t-test p-value and 95% confidence interval. Table 6 comes
from the runs' JSON logs (per run: mean tracking seconds per epoch, mean heuristic seconds per
interval, total training time; then min, average and max over the runs of a workload).
"""
import argparse
import functools
import json
import math
from pathlib import Path

import pandas as pd
from scipy import stats

import heuristics
import results

WORKLOAD = ["dataset", "model", "heuristic", "measure"]
CELL = WORKLOAD + ["warmup_epochs", "interval_epochs"]


def load_runs(folder: str | Path) -> pd.DataFrame:
    """One row per run, heuristics under our names (stripes, blocks, none)."""
    runs = results.read_csvs(folder)
    if runs.empty:
        return runs
    runs = runs.copy()
    runs["heuristic"] = runs["heuristic"].map(lambda h: heuristics.ALIASES.get(h, h))
    return runs


def select(frame: pd.DataFrame, workload: tuple, warmup: int | None = None, interval: int | None = None) -> pd.DataFrame:
    """The rows (runs or cells) of one workload, and of one (W, I) setting if given."""
    keep = (frame[WORKLOAD] == pd.Series(workload, index=WORKLOAD)).all(axis=1)
    if warmup is not None:
        keep &= (frame.warmup_epochs == warmup) & (frame.interval_epochs == interval)
    return frame[keep]


def baselines(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, model): the vanilla runs' n, mean, std."""
    vanilla = runs[runs.heuristic == "none"]
    return vanilla.groupby(["dataset", "model"]).best_accuracy.agg(n="count", mean="mean", std="std").reset_index()


def welch(a: pd.Series, b: pd.Series) -> tuple[float, float, float]:
    """Welch's t-test of mean(a) - mean(b): p-value and the 95% confidence interval."""
    if len(a) < 2 or len(b) < 2:
        return math.nan, math.nan, math.nan
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    diff = a.mean() - b.mean()
    if va + vb == 0:
        return (1.0 if diff == 0 else 0.0), diff, diff
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    return stats.ttest_ind(a, b, equal_var=False).pvalue, diff - half, diff + half


def cells(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (workload, W, I): n, mean, std, and the comparison with the workload's baseline."""
    aware = runs[runs.heuristic != "none"]
    vanilla = runs[runs.heuristic == "none"]
    out = []
    for key, group in aware.groupby(CELL):
        row = dict(zip(CELL, key), n=len(group), mean=group.best_accuracy.mean(), std=group.best_accuracy.std(ddof=1))
        base = vanilla[(vanilla.dataset == row["dataset"]) & (vanilla.model == row["model"])].best_accuracy
        row["baseline_mean"] = base.mean() if len(base) else math.nan
        row["diff"] = row["mean"] - row["baseline_mean"]
        row["p_value"], row["ci_low"], row["ci_high"] = welch(group.best_accuracy, base)
        out.append(row)
    columns = CELL + ["n", "mean", "std", "baseline_mean", "diff", "p_value", "ci_low", "ci_high"]
    return pd.DataFrame(out, columns=columns)


def top(cell_table: pd.DataFrame, workload: tuple, k: int = 5) -> pd.DataFrame:
    """The k settings of a workload with the highest mean best accuracy (Figure 5's order)."""
    return select(cell_table, workload).sort_values(["mean", "warmup_epochs", "interval_epochs"], ascending=[False, True, True]).head(k)


@functools.cache
def paper_cells(paper_csv: str | Path) -> pd.DataFrame:
    """PaperCSVs/paper-reported.csv, read once per process (titles and comparisons ask per workload)."""
    return pd.read_csv(paper_csv)


def with_paper(cell_table: pd.DataFrame, paper_csv: str | Path) -> pd.DataFrame:
    """Add the paper's reported mean and std per cell, and how far ours is in the paper's stds."""
    paper = paper_cells(paper_csv)
    paper = paper[paper.heuristic != "none"].rename(columns={"mean": "paper_mean", "std": "paper_std"})
    paper = paper.astype({"warmup_epochs": int, "interval_epochs": int})
    merged = cell_table.merge(paper[CELL + ["table", "paper_mean", "paper_std"]], on=CELL, how="left")
    merged["z_vs_paper"] = (merged["mean"] - merged["paper_mean"]) / merged["paper_std"]
    return merged


def title(workload: tuple, paper_csv: str | Path | None) -> str:
    dataset, model, heuristic, measure = workload
    name = f"{results.DATASET_NAMES.get(dataset, dataset)}, {results.MODEL_NAMES.get(model, model)}, " \
           f"{results.HEURISTIC_NAMES.get(heuristic, heuristic)}, {measure.capitalize()}"
    if paper_csv and Path(paper_csv).is_file():
        paper = paper_cells(paper_csv)
        match = paper[(paper.dataset == dataset) & (paper.model == model) & (paper.heuristic == heuristic) & (paper.measure == measure)]
        if len(match):
            return f"Table {int(match.table.iloc[0])}: {name}"
    return name


def fmt(mean: float, std: float) -> str:
    return f"{mean:.3f} ± {std:.3f}" if not math.isnan(std) else f"{mean:.3f}"


def grid(cell_table: pd.DataFrame, workload: tuple) -> pd.DataFrame:
    """W x I table of 'mean ± std' strings for one workload (the paper's layout)."""
    mine = select(cell_table, workload)
    table = pd.DataFrame("", index=pd.Index(sorted(set(mine.warmup_epochs)), name="W"),
                         columns=pd.Index(sorted(set(mine.interval_epochs)), name="I"))
    for row in mine.itertuples():
        table.loc[row.warmup_epochs, row.interval_epochs] = fmt(row.mean, row.std)
    return table


def markdown_table(frame: pd.DataFrame, index_name: str) -> str:
    header = f"| {index_name} | " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "---|" * (len(frame.columns) + 1)
    body = [f"| {i} | " + " | ".join(str(v) for v in row) + " |" for i, row in zip(frame.index, frame.values)]
    return "\n".join([header, rule, *body])


def latex_table(frame: pd.DataFrame, index_name: str, caption: str) -> str:
    cols = "l" + "c" * len(frame.columns)
    lines = [r"\begin{table}", rf"\caption{{{caption}}}", rf"\begin{{tabular}}{{{cols}}}", r"\hline",
             f"{index_name} & " + " & ".join(str(c) for c in frame.columns) + r" \\", r"\hline"]
    lines += [f"{i} & " + " & ".join(str(v).replace("±", r"$\pm$") for v in row) + r" \\" for i, row in zip(frame.index, frame.values)]
    lines += [r"\hline", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines)


def table6(folder: str | Path) -> pd.DataFrame:
    """Min, average and max over runs, per workload, of the paper's Table 6 quantities."""
    per_run = []
    for path in sorted(Path(folder).rglob("logs/*.json")):
        log = json.loads(path.read_text())
        if "total_training_s" not in log:
            continue  # a run still going
        intervals = [i["heuristic_s"] for i in log["intervals"]]
        per_run.append({"workload": path.parent.parent.name, "tracking_s_per_epoch": log["tracking_s_per_epoch"],
                        "heuristic_s_per_interval": sum(intervals) / len(intervals) if intervals else math.nan,
                        "total_training_s": log["total_training_s"]})
    if not per_run:
        return pd.DataFrame(columns=["workload", "quantity", "runs", "min", "average", "max"])
    frame = pd.DataFrame(per_run).melt(id_vars="workload", var_name="quantity").dropna()
    out = frame.groupby(["workload", "quantity"], sort=False).value.agg(runs="count", min="min", average="mean", max="max")
    return out.reset_index()


def render(folder: str | Path, paper_csv: str | Path | None, form: str) -> str:
    runs = load_runs(folder)
    if runs.empty:
        return f"no result CSVs in the paper's schema under {folder}"
    cell_table = cells(runs)
    base = baselines(runs)
    parts = []
    for workload in cell_table[WORKLOAD].drop_duplicates().itertuples(index=False):
        workload = tuple(workload)
        b = base[(base.dataset == workload[0]) & (base.model == workload[1])]
        baseline = f"baseline (vanilla DPT) {fmt(b['mean'].iloc[0], b['std'].iloc[0])}, n={b['n'].iloc[0]}" if len(b) else "no baseline runs"
        caption = f"{title(workload, paper_csv)}; mean ± std of best test accuracy per (W, I); {baseline}"
        g = grid(cell_table, workload)
        best = top(cell_table, workload)
        mine = select(cell_table, workload)
        tests = pd.DataFrame({"W": mine.warmup_epochs, "I": mine.interval_epochs, "n": mine.n,
                              "diff vs baseline": mine["diff"].round(3), "95% CI": [f"[{lo:.3f}, {hi:.3f}]" for lo, hi in zip(mine.ci_low, mine.ci_high)],
                              "Welch p": mine.p_value.map(lambda p: f"{p:.3g}")}).set_index("W")
        if form == "latex":
            parts.append(latex_table(g, "W", caption))
            continue
        parts += [f"### {caption}", "", markdown_table(g, "W \\ I"), "",
                  "Top 5: " + ", ".join(f"W{r.warmup_epochs}-INT{r.interval_epochs} {fmt(r.mean, r.std)}" for r in best.itertuples()), "",
                  markdown_table(tests, "W"), ""]
        if paper_csv and Path(paper_csv).is_file():
            versus = with_paper(mine, paper_csv).dropna(subset=["paper_mean"])
            if len(versus):
                frame = pd.DataFrame({"W": versus.warmup_epochs, "I": versus.interval_epochs, "ours": [fmt(m, s) for m, s in zip(versus["mean"], versus["std"])],
                                      "paper": [fmt(m, s) for m, s in zip(versus.paper_mean, versus.paper_std)],
                                      "(ours - paper) / paper std": versus.z_vs_paper.round(2)}).set_index("W")
                parts += ["Against the paper's reported cells:", "", markdown_table(frame, "W"), ""]
    six = table6(folder)
    if len(six) and form == "markdown":
        six = six.assign(average=six["average"].round(3), min=six["min"].round(3), max=six["max"].round(3)).set_index("workload")
        parts += ["### Table 6: overheads (seconds) from the runs' JSON logs", "", markdown_table(six, "workload"), ""]
    if form == "markdown":
        parts += ["### Baselines", "", markdown_table(base.assign(mean=base["mean"].round(3), std=base["std"].round(3)).set_index("dataset"), "dataset")]
    return "\n".join(parts) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", help="a folder of result CSVs in the paper's schema (searched recursively)")
    p.add_argument("--paper", default=str(Path(__file__).parent / "PaperCSVs" / "paper-reported.csv"),
                   help="the paper's reported cells, for the comparison ('' to leave it out)")
    p.add_argument("--format", choices=["markdown", "latex"], default="markdown")
    p.add_argument("--out", help="write here instead of printing")
    args = p.parse_args()
    text = render(args.folder, args.paper or None, args.format)
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text, end="")


if __name__ == "__main__":
    main()
