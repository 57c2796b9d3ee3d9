"""The paper's tables from result CSVs in its schema: ours (dpt.py, run-experiments.sh) or the
paper's own PaperCSVs. plots.ipynb draws its figures from the same functions.

    python report.py PaperCSVs              # the paper's Tables 1-5 (from its per-run CSVs if there, else as printed)
    python report.py results/paper          # ours: Tables 1-5 (and any other), baselines, tests, Table 6
    python report.py results/paper --format latex --out tables.tex

A table is one workload (dataset, model, heuristic, measure, T, E_ignore): per (W, I) cell, mean ±
sample standard deviation of the best metric over the runs (seeds), 3 decimals, as the paper's
Tables 1-5 (best test accuracy; for text, best held-out bits per byte, lower is better). Beside it,
per cell: the difference from the vanilla baseline of the same dataset, model and T with Welch's
t-test p-value and 95% confidence interval, and whether the difference survives Holm's and
Benjamini-Hochberg's corrections for the table's many tests (at 5%). Table 6 comes from the runs'
JSON logs (per run: mean tracking seconds per epoch, mean heuristic seconds per interval, total
training time; then min, average and max over the runs of a workload).
"""
import functools
import json
import math
import sys
from pathlib import Path

import flags


def build_parser() -> flags.Parser:
    p = flags.Parser(prog="report.py", description=__doc__.split("\n\n")[0], formatter_class=flags.HelpFormatter)
    p.add_argument("folder", help="a folder of result CSVs in the paper's schema (searched recursively)")
    p.add_argument("--paper", default=str(Path(__file__).parent / "PaperCSVs" / "paper-reported.csv"),
                   help="the paper's reported cells, for the comparison ('' to leave it out)")
    p.add_argument("--format", choices=["markdown", "latex"], metavar="FORMAT", default="markdown",
                   help="markdown (tables for a terminal or a README) or latex (tables for a paper)")
    p.add_argument("--out", help="write here instead of printing")
    p.add_argument("--io", action="store_true",
                   help="also simulate each run's I/O from its saved partitions (the I/O study; takes seconds per run)")
    return p


if __name__ == "__main__":
    build_parser().parse_args()  # --help and a typo answered at once, before pandas' and scipy's imports

import numpy as np
import pandas as pd
from scipy import stats

import catalog as C
import console
import results
import workload as names
from workload import Workload

# one W x I table: runs pooled into its cells share all of these (and a file's manifest, results.py)
# `variant`: the recorded settings in which a result file's runs differ from the others' (its manifest;
# '' when none do), so that runs set otherwise are never pooled into one cell
TABLE = ["dataset", "model", "heuristic", "measure", "total_epochs", "ignore_epochs", "exchange", "workers", "variant"]
CELL = TABLE + ["warmup_epochs", "interval_epochs"]
BASELINE = ["dataset", "model", "total_epochs", "exchange", "workers", "variant"]  # what a table is compared with
ALPHA = 0.05
NO_TEST = "a cell or the baseline has fewer than 2 runs"


class ReportError(Exception):
    """Nothing to report, or a file that cannot be written: one line, non-zero exit."""


def load_runs(folder: str | Path) -> tuple[pd.DataFrame, list[str]]:
    """One row per run, heuristics under our names, the metric in `value` (and its direction in
    `higher_is_better`); and the problems met reading the folder. Raises ReportError when the folder
    is missing or holds no result file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ReportError(
            f"{folder} is not a folder of result CSVs; pass the --results-dir of your runs (or PaperCSVs)"
        )
    runs, problems = results.read_csvs(folder)
    if runs.empty:
        raise ReportError(
            f"no result CSVs in the paper's schema under {folder}"
            + (f" ({len(problems)} unreadable)" if problems else "")
            + "; run dpt.py or run-experiments.sh with --results-dir there, or copy the paper's PaperCSVs"
        )
    runs = runs.copy()
    runs["heuristic"] = runs["heuristic"].map(lambda h: C.ALIASES.get(h, h))
    runs["variant"], said = variants(runs)
    problems += said
    twice = runs.duplicated(CELL + ["id"], keep="first")  # one run in two folders (e.g. two sweeps) counts once
    if twice.any():
        first = runs[twice].iloc[0]
        problems.append(f"{int(twice.sum())} runs appear more than once under {folder} (same workload, schedule and "
                        f"seed, e.g. {first.workload}/{first.file} id {first.id}); each is counted once")
        runs = runs[~twice].reset_index(drop=True)
    task = runs["dataset"].map(lambda d: C.task_of(d).name if d in C.DATASETS else None)
    unknown = runs[task.isna()]
    if len(unknown):
        problems.append(f"{len(unknown)} rows name a dataset this code does not know "
                        f"({', '.join(sorted(set(unknown.dataset)))}); skipped")
        runs, task = runs[task.notna()].reset_index(drop=True), task[task.notna()].reset_index(drop=True)
    runs["value"] = np.nan
    for name, record in C.TASKS.items():
        if record.column in runs:
            runs.loc[task == name, "value"] = runs.loc[task == name, record.column]
    runs["higher_is_better"] = task.map(lambda t: C.TASKS[t].higher_is_better).astype(bool)
    return runs, problems


# What a manifest records that the tables already key on (or that vanilla rows never depend on)
KEYED = {"dataset", "model", "heuristic", "measure", "total_epochs", "warmup_epochs", "interval_epochs",
         "ignore_epochs", "reducer", "density", "workers", "repartition", "shuffle", "sampler_seed", "shard_size"}


def variants(runs: pd.DataFrame) -> tuple[pd.Series, list[str]]:
    """Per run, the recorded settings (its file's manifest, results.claim) in which its file differs
    from the folder's other result files: '' where they all agree (and for files without a manifest,
    the paper's); and a warning naming the settings that split cells."""
    settings = {}
    for path in runs["path"].unique():
        manifest = results.manifest_path(Path(path))
        try:
            recorded = json.loads(manifest.read_text())["settings"] if manifest.is_file() else {}
        except (OSError, ValueError, KeyError, TypeError):
            recorded = {}
        settings[path] = {k: v for k, v in recorded.items() if k not in KEYED}
    # files compared with each other: those of one dataset, model, T and number of workers (a table and
    # its vanilla runs); a setting splits them only where two of their manifests record it differently
    first = runs.drop_duplicates("path").set_index("path")
    group = {path: tuple(first.loc[path, ["dataset", "model", "total_epochs", "workers"]]) for path in settings}
    differ: dict[tuple, list[str]] = {}
    for key in set(group.values()):
        mine = [settings[p] for p in settings if group[p] == key]
        differ[key] = sorted({k for s in mine for k in s
                              if len({json.dumps(t[k], sort_keys=True) for t in mine if k in t}) > 1})
    label = {path: ", ".join(f"{k}={short(s[k])}" for k in differ[group[path]] if k in s)
             for path, s in settings.items()}
    split = sorted({k for keys in differ.values() for k in keys})
    said = [f"runs here differ in recorded settings ({', '.join(split)}): they are never pooled into one cell; "
            "each set's tables are titled with its values"] if split else []
    return runs["path"].map(label).astype(str), said


def short(value) -> str:
    """A setting's value in a label: a data identity by the start of its hash."""
    if isinstance(value, dict) and "train" in value:
        return value["train"][:8]
    return str(value)


def table_workload(table: tuple) -> Workload:
    """The Workload (W and I open) of a table key."""
    dataset, model, heuristic, measure, total, ignore, exchange, workers, variant = table
    reducer, density = exchange.split("@") if exchange != "none" else ("none", None)
    return Workload(dataset, model, heuristic, measure, int(total), ignore_epochs=int(ignore), reducer=reducer,
                    density=None if density is None else float(density), workers=int(workers))


def select(frame: pd.DataFrame, table: tuple, warmup: int | None = None, interval: int | None = None) -> pd.DataFrame:
    """The rows (runs or cells) of one table, and of one (W, I) setting if given."""
    keep = (frame[TABLE] == pd.Series(table, index=TABLE)).all(axis=1)
    if warmup is not None:
        keep &= (frame.warmup_epochs == warmup) & (frame.interval_epochs == interval)
    return frame[keep]


def baselines(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, model, T): the vanilla runs' n, mean, std."""
    vanilla = runs[runs.heuristic == "none"]
    return vanilla.groupby(BASELINE).value.agg(n="count", mean="mean", std="std").reset_index()


def welch(a: pd.Series, b: pd.Series) -> tuple[float, float, float]:
    """Welch's t-test of mean(a) - mean(b): p-value and the 95% confidence interval."""
    if len(a) < 2 or len(b) < 2:
        return math.nan, math.nan, math.nan
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    diff = a.mean() - b.mean()
    if va + vb == 0:  # both constant: the t statistic is undefined (0/0 or x/0); no test
        return math.nan, diff, diff
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    return stats.ttest_ind(a, b, equal_var=False).pvalue, diff - half, diff + half


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error), NaN left out of the family."""
    out = np.full(len(p), np.nan)
    ok = ~np.isnan(p)
    order = np.argsort(p[ok], kind="stable")
    m = len(order)
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[ok][order]).clip(max=1)
    values = np.empty(m)
    values[order] = adjusted
    out[ok] = values
    return out


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg step-up adjusted p-values (false discovery rate), NaN left out."""
    out = np.full(len(p), np.nan)
    ok = ~np.isnan(p)
    order = np.argsort(p[ok], kind="stable")
    m = len(order)
    ranked = p[ok][order] * m / np.arange(1, m + 1)
    adjusted = np.minimum.accumulate(ranked[::-1])[::-1].clip(max=1)
    values = np.empty(m)
    values[order] = adjusted
    out[ok] = values
    return out


def cells(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (table, W, I): n, mean, std, the comparison with the baseline, and the corrected p-values
    (Holm, Benjamini-Hochberg) over the cells of its table."""
    aware = runs[runs.heuristic != "none"]
    vanilla = runs[runs.heuristic == "none"]
    out = []
    for key, group in aware.groupby(CELL, sort=True):
        row = dict(zip(CELL, key), n=len(group), mean=group.value.mean(), std=group.value.std(ddof=1),
                   higher_is_better=bool(group.higher_is_better.iloc[0]))
        base = select_baseline(vanilla, row).value
        row["baseline_mean"] = base.mean() if len(base) else math.nan
        row["diff"] = row["mean"] - row["baseline_mean"]
        row["p_value"], row["ci_low"], row["ci_high"] = welch(group.value, base)
        out.append(row)
    columns = CELL + ["n", "mean", "std", "higher_is_better", "baseline_mean", "diff", "p_value", "ci_low", "ci_high"]
    table = pd.DataFrame(out, columns=columns)
    table["p_holm"], table["p_bh"] = math.nan, math.nan
    for _, group in table.groupby(TABLE):
        p = group.p_value.to_numpy(dtype=float)
        table.loc[group.index, "p_holm"] = holm(p)
        table.loc[group.index, "p_bh"] = benjamini_hochberg(p)
    return table


def select_baseline(frame: pd.DataFrame, row: dict) -> pd.DataFrame:
    """The rows of `frame` with `row`'s dataset, model, T and gradient exchange."""
    return frame[(frame[BASELINE] == pd.Series([row[k] for k in BASELINE], index=BASELINE)).all(axis=1)]


def tables(cell_table: pd.DataFrame) -> list[tuple]:
    """The tables present, the paper's Tables 1-5 first in its order, then the others sorted."""
    present = [tuple(t) for t in cell_table[TABLE].drop_duplicates().itertuples(index=False)]
    paper = [paper_key(w) for w in names.PAPER_TABLES.values()]
    return sorted(present, key=lambda t: (paper.index(t) if t in paper else len(paper), t))


def paper_key(w: Workload) -> tuple:
    return (w.dataset, w.model, w.heuristic, w.measure, w.total_epochs, w.ignore_epochs, w.exchange, w.workers, "")


def paper_number(table: tuple) -> int | None:
    for number, w in names.PAPER_TABLES.items():
        if paper_key(w) == table:
            return number
    return None


def top(cell_table: pd.DataFrame, table: tuple, k: int = 5) -> pd.DataFrame:
    """The k settings of a table with the best mean (Figure 5's order), and any tied with the k-th."""
    mine = select(cell_table, table)
    better = bool(mine.higher_is_better.iloc[0]) if len(mine) else True
    ranked = mine.sort_values(["mean", "warmup_epochs", "interval_epochs"], ascending=[not better, True, True])
    if len(ranked) <= k:
        return ranked
    last = round(ranked["mean"].iloc[k - 1], 3)
    return ranked[(ranked.index.isin(ranked.index[:k])) | (ranked["mean"].round(3) == last)]


def top_line(best: pd.DataFrame, k: int = 5) -> str:
    """'Top 5: W30-INT10 = W40-INT1 82.946 ± ..., ...': settings whose means agree to the printed 3
    decimals are named together as a tie."""
    groups: list[list] = []
    for r in best.itertuples():
        if groups and round(groups[-1][0].mean, 3) == round(r.mean, 3):
            groups[-1].append(r)
        else:
            groups.append([r])
    shown = []
    for g in groups:
        names_ = " = ".join(f"W{r.warmup_epochs}-INT{r.interval_epochs}" for r in g)
        stds = " / ".join(f"{r.std:.3f}" for r in g if not math.isnan(r.std))
        shown.append(f"{names_} {g[0].mean:.3f}" + (f" ± {stds}" if stds else "") + (" (tied)" if len(g) > 1 else ""))
    return f"Top {k}: " + ", ".join(shown)


@functools.cache
def paper_cells(paper_csv: str | Path) -> pd.DataFrame:
    """PaperCSVs/paper-reported.csv, read once per process."""
    frame = pd.read_csv(paper_csv)
    frame["heuristic"] = frame["heuristic"].map(lambda h: C.ALIASES.get(h, h))
    frame["total_epochs"], frame["ignore_epochs"], frame["exchange"] = names.PAPER_EPOCHS, names.PAPER_IGNORE, "none"
    frame["workers"], frame["variant"] = names.PAPER_WORKERS, ""
    return frame


def with_paper(cell_table: pd.DataFrame, paper_csv: str | Path) -> pd.DataFrame:
    """Add the paper's reported mean and std per cell, and how far ours is in the paper's stds."""
    paper = paper_cells(paper_csv)
    paper = paper[paper.heuristic != "none"].rename(columns={"mean": "paper_mean", "std": "paper_std"})
    paper = paper.astype({"warmup_epochs": int, "interval_epochs": int})
    merged = cell_table.merge(paper[CELL + ["table", "paper_mean", "paper_std"]], on=CELL, how="left")
    merged["z_vs_paper"] = (merged["mean"] - merged["paper_mean"]) / merged["paper_std"]
    return merged


def title(table: tuple) -> str:
    number = paper_number(table)
    variant = f" [{table[TABLE.index('variant')]}]" if table[TABLE.index("variant")] else ""
    return (f"Table {number}: " if number else "") + table_workload(table).title + variant


def fmt(mean: float, std: float, decimals: int = 3) -> str:
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}" if not math.isnan(std) else f"{mean:.{decimals}f}"


def grid(cell_table: pd.DataFrame, table: tuple) -> pd.DataFrame:
    """W x I table of 'mean ± std' strings for one workload (the paper's layout)."""
    mine = select(cell_table, table)
    out = pd.DataFrame("", index=pd.Index(sorted(set(mine.warmup_epochs)), name="W"),
                       columns=pd.Index(sorted(set(mine.interval_epochs)), name="I"))
    for row in mine.itertuples():
        out.loc[row.warmup_epochs, row.interval_epochs] = fmt(row.mean, row.std)
    return out


def markdown_table(frame: pd.DataFrame, index_name: str) -> str:
    header = f"| {index_name} | " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "---|" * (len(frame.columns) + 1)
    body = [f"| {i} | " + " | ".join(str(v) for v in row) + " |" for i, row in zip(frame.index, frame.values)]
    return "\n".join([header, rule, *body])


def latex_escape(text: str) -> str:
    return text.replace("±", r"$\pm$").replace("_", r"\_").replace("%", r"\%")


def latex_table(frame: pd.DataFrame, index_name: str, caption: str) -> str:
    cols = "l" + "c" * len(frame.columns)
    lines = [r"\begin{table}", rf"\caption{{{latex_escape(caption)}}}", rf"\begin{{tabular}}{{{cols}}}", r"\hline",
             f"{index_name} & " + " & ".join(str(c) for c in frame.columns) + r" \\", r"\hline"]
    lines += [
        f"{i} & " + " & ".join(latex_escape(str(v)) for v in row) + r" \\" for i, row in zip(frame.index, frame.values)
    ]
    lines += [r"\hline", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines)


def significance(mine: pd.DataFrame) -> str:
    """How many cells differ from the baseline at 5%, before and after the corrections."""
    tested = int(mine.p_value.notna().sum())
    if not tested:
        return f"no Welch tests ({NO_TEST})"
    raw, h, bh = ((mine[c] < ALPHA).sum() for c in ("p_value", "p_holm", "p_bh"))
    return (f"{tested} cells tested against the baseline: {raw} differ at p < {ALPHA} uncorrected, "
            f"{h} after Holm's correction, {bh} after Benjamini-Hochberg's")


def paper_summary(versus: pd.DataFrame) -> str:
    """How far our cells are from the paper's printed ones, in means and in stds (both to its 3 decimals)."""
    z = versus.z_vs_paper.abs()
    same_mean = int((versus["mean"].round(3) == versus.paper_mean.round(3)).sum())
    same_std = int((versus["std"].round(3) == versus.paper_std.round(3)).sum())
    ratio = versus["std"] / versus.paper_std
    return (f"against the paper's reported cells: {len(versus)} cells compared; means: {same_mean} equal to its 3 "
            f"decimals, largest distance {z.max():.2f} of the paper's std, {int((z > 2).sum())} beyond 2 std; stds: "
            f"{same_std} equal, ours / the paper's from {ratio.min():.2f} to {ratio.max():.2f}")


# A comparison: tables that differ in one name only (the follow-up studies: measures, heuristics, and the
# exchange study's reducers, each variant against the vanilla runs with its own reducer).
COMPARED = {"measure": ["dataset", "model", "total_epochs", "ignore_epochs", "exchange", "workers", "variant",
                        "heuristic"],
            "heuristic": ["dataset", "model", "total_epochs", "ignore_epochs", "exchange", "workers", "variant",
                          "measure"],
            "exchange": ["dataset", "model", "total_epochs", "ignore_epochs", "workers", "variant", "heuristic",
                         "measure"]}


def comparisons(cell_table: pd.DataFrame) -> list[tuple[str, tuple]]:
    """(the name that varies, the values of the others) for every group of two or more tables that
    differ only in their measure, only in their heuristic, or only in their gradient exchange."""
    out = []
    for vary, fixed in COMPARED.items():
        for key, group in cell_table.groupby(fixed, sort=True):
            if group[vary].nunique() > 1:
                out.append((vary, key))
    return out


def comparison(cell_table: pd.DataFrame, vary: str, key: tuple) -> pd.DataFrame:
    """The cells of one comparison, with Holm's and Benjamini-Hochberg's corrections recomputed over
    all of them (one family: every value at every setting against the baseline)."""
    mine = cell_table[(cell_table[COMPARED[vary]] == pd.Series(key, index=COMPARED[vary])).all(axis=1)].copy()
    mine["p_holm"] = holm(mine.p_value.to_numpy(dtype=float))
    mine["p_bh"] = benjamini_hochberg(mine.p_value.to_numpy(dtype=float))
    mine["setting"] = [f"W{w}-INT{i}" for w, i in zip(mine.warmup_epochs, mine.interval_epochs)]
    return mine


def mark(p_holm: float, p_bh: float) -> str:
    """* survives Holm's correction, + Benjamini-Hochberg's only (a nan p-value: no test, no mark)."""
    return "*" if p_holm < ALPHA else "+" if p_bh < ALPHA else ""


def label(vary: str, value: str) -> str:
    """A compared value as a reader names it: the exchange 'none' is DDP's dense all-reduce."""
    return "all-reduce" if vary == "exchange" and value == "none" else value


def comparison_grid(mine: pd.DataFrame, vary: str) -> pd.DataFrame:
    """Values of `vary` x settings: 'mean ± std (n)', marked as `mark` says. Rows in order of the best cell."""
    better = bool(mine.higher_is_better.iloc[0])
    order = mine.groupby(vary)["mean"].agg("max" if better else "min").sort_values(ascending=not better).index
    settings = sorted(set(mine.setting), key=lambda t: tuple(int(x) for x in t[1:].split("-INT")))
    out = pd.DataFrame("", index=pd.Index(order, name=vary), columns=settings)
    for row in mine.itertuples():
        out.loc[getattr(row, vary), row.setting] = f"{fmt(row.mean, row.std)} ({row.n}){mark(row.p_holm, row.p_bh)}"
    return out.rename(index=lambda v: label(vary, v))


def comparison_title(vary: str, key: tuple) -> str:
    fixed = dict(zip(COMPARED[vary], key))
    typical = {"measure": "variance", "heuristic": "stripes", "exchange": fixed.get("exchange", "none")}
    w = table_workload(tuple({**fixed, vary: typical[vary]}[k] for k in TABLE))
    parts = [C.DATASETS[w.dataset].title, C.MODELS[w.model].title]
    if vary != "measure":
        parts.append(f"measure {C.MEASURES[fixed['measure']].title}")
    if vary != "heuristic":
        parts.append(f"heuristic {C.HEURISTICS[fixed['heuristic']].title}")
    parts += [p for p in w.title.split(", ")[4:] if vary != "exchange" or "at density" not in p]  # T, E_ignore, reducer
    return f"Across {vary}s: " + ", ".join(parts)


def answer(mine: pd.DataFrame, vary: str) -> str:
    """The comparison's answer in one paragraph: how many cells differ from vanilla after Holm, in which
    direction, and the best value with its difference."""
    tested = mine[mine.p_value.notna()]
    if not len(tested):
        return (f"No test was possible: each {vary}'s cells or its vanilla baseline have fewer than 2 runs "
                f"(n per cell in brackets); run more seeds (--seeds).")
    better = bool(mine.higher_is_better.iloc[0])
    sign = 1 if better else -1
    holm_ = tested[tested.p_holm < ALPHA]
    up, down = int((sign * holm_["diff"] > 0).sum()), int((sign * holm_["diff"] < 0).sum())
    best = mine.sort_values("mean", ascending=not better).iloc[0]
    unit = "pp" if better else "bits per byte"
    verdict = (f"{up} better and {down} worse" if up else f"none better ({down} worse)")
    return (f"{len(holm_)} of {len(tested)} tested cells ({mine[vary].nunique()} {vary}s x "
            f"{mine.setting.nunique()} settings) differ from vanilla after Holm's correction: {verdict}; "
            f"{int((tested.p_bh < ALPHA).sum())} after Benjamini-Hochberg's. Best: {label(vary, best[vary])} at "
            f"{best.setting}, "
            f"{fmt(best['mean'], best['std'])} (n={best.n}), {best['diff']:+.3f} {unit} against its vanilla "
            f"{best.baseline_mean:.3f}{mark(best.p_holm, best.p_bh)}.")


def table6(folder: str | Path) -> tuple[pd.DataFrame, list[str]]:
    """Min, average and max over runs, per workload, of the paper's Table 6 quantities; and the
    logs that could not be read."""
    per_run, problems = [], []
    for path in sorted(Path(folder).rglob("logs/*.json")):
        try:
            log = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            problems.append(f"{path}: not a JSON log ({type(err).__name__}); skipped")
            continue
        if not isinstance(log, dict) or "total_training_s" not in log:
            continue  # a run still going
        intervals = [i["heuristic_s"] for i in log.get("intervals", [])]
        per_run.append({"workload": path.parent.parent.name, "tracking_s_per_epoch": log["tracking_s_per_epoch"],
                        "heuristic_s_per_interval": sum(intervals) / len(intervals) if intervals else math.nan,
                        "total_training_s": log["total_training_s"]})
    if not per_run:
        return pd.DataFrame(columns=["workload", "quantity", "runs", "min", "average", "max"]), problems
    frame = pd.DataFrame(per_run).melt(id_vars="workload", var_name="quantity").dropna()
    out = frame.groupby(["workload", "quantity"], sort=False).value.agg(
        runs="count", min="min", average="mean", max="max"
    )
    return out.reset_index(), problems


def metric_title(dataset: str) -> str:
    """'best test accuracy', 'best held-out bits per byte (lower is better)', 'best HR@10': the task's."""
    record = C.task_of(dataset)
    title = record.metric_title.replace(" (%)", "")
    return title if record.higher_is_better else f"{title} (lower is better)"


def best_of(log: dict) -> tuple[float | None, bool]:
    """A finished run's best metric from its JSON log, and whether higher is better (its task's)."""
    for record in C.TASKS.values():
        if record.column in log:
            return log[record.column], record.higher_is_better
    return None, True


def exchange_logs(folder: str | Path) -> tuple[pd.DataFrame, list[str]]:
    """One row per finished run's epoch with a gradient reducer (the JSON logs' "exchange"): the run's
    workload and reducer, its best metric, and the epoch's density, relative density error, bytes
    sent per worker per step against dense, imbalance, residual ratio and the hook's time split."""
    rows, problems = [], []
    for path in sorted(Path(folder).rglob("logs/*.json")):
        try:
            log = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            problems.append(f"{path}: not a JSON log ({type(err).__name__}); skipped")
            continue
        w = log.get("workload", {}) if isinstance(log, dict) else {}
        if w.get("reducer", "none") == "none" or "best_epoch" not in log:
            continue
        best, higher = best_of(log)
        for epoch in log["epochs"]:
            rows.append({"run": path.stem, "workload": path.parent.parent.name, "reducer": w["reducer"],
                         "exchange": f"{w['reducer']}@{w['density']:g}", "density_target": w["density"], "best": best,
                         "higher_is_better": higher, "epoch": epoch["epoch"], **epoch["exchange"]})
    return pd.DataFrame(rows), problems


def exchange_summary(epochs: pd.DataFrame) -> pd.DataFrame:
    """Per workload and reducer: runs, best metric (mean), and over their epochs the mean density, its
    relative error, the traffic per worker per step and its share of a dense all-reduce."""
    means = {c: (c, "mean") for c in ("density", "density_error", "bytes_per_worker", "dense_bytes", "imbalance",
                                      "selection_s", "communication_s")}
    per_run = epochs.groupby(["workload", "exchange", "run"]).agg(best=("best", "first"), **means).reset_index()
    out = per_run.groupby(["workload", "exchange"]).agg(runs=("run", "count"), best=("best", "mean"), **means)
    out = out.reset_index()
    out = out.rename(columns={"selection_s": "selection_ms", "communication_s": "communication_ms"})
    out["traffic_vs_dense"] = out.bytes_per_worker / out.dense_bytes
    out[["selection_ms", "communication_ms"]] *= 1000
    return out


def io_study(folder: str | Path, shard_sizes: tuple[int, ...] = (1, 100, 1000), caches: tuple[int, ...] = (1, 2),
             runs_per_workload: int = 3) -> tuple[pd.DataFrame, list[str]]:
    """The I/O each run would have cost (iosim, from its --save-partitions file), under every storage
    setting: shards of each size, each worker caching `c`/n of the dataset's bytes (plus one shard) with
    the partition policy (a shard-stripes run: only shards of the size it dealt). One row per run,
    setting and epoch (bytes summed over workers); at most `runs_per_workload` runs of a result file.
    And the problems met."""
    import iosim  # pandas and numpy only, but its simulations run only when asked for

    rows, problems, taken = [], [], {}
    for path in sorted(Path(folder).rglob("logs/*.partitions.pt")):
        log_path = path.with_name(path.name.removesuffix(".partitions.pt") + ".json")
        try:
            log = json.loads(log_path.read_text())
            windows, settings = iosim.windows_from_file(str(path))
        except (OSError, ValueError) as err:
            problems.append(f"{path}: {err}; skipped")
            continue
        w = log["workload"]
        key = (path.parent.parent.name, Path(log["csv"]).stem)
        taken[key] = taken.get(key, 0) + 1
        example_bytes = C.DATASETS[w["dataset"]].example_bytes if w["dataset"] in C.DATASETS else 0
        if taken[key] > runs_per_workload or not example_bytes or "examples" not in log:
            continue
        n, examples = log["workers"], log["examples"]
        best, _ = best_of(log)
        own = log.get("shard_size") or log["args"].get("shard_size") or min(100, examples // n)  # what it dealt
        for shard_size in (own,) if w["heuristic"] == "shard-stripes" else shard_sizes:
            if shard_size > examples // n:
                problems.append(f"shard size {shard_size} left out for {key[0]}/{key[1]}: larger than a worker's "
                                f"partition ({examples} // {n} = {examples // n} examples), so every epoch would "
                                "fetch whole shards for a few examples")
                continue
            for c in caches:
                total = examples * example_bytes
                st = iosim.storage(examples, shard_size, example_bytes, c * total // n + shard_size * example_bytes,
                                   "partition")
                epochs, _ = iosim.simulate(windows, n, st, **settings)
                per_epoch = epochs.groupby("epoch")[["requests", "misses", "bytes"]].sum().reset_index()
                for r in per_epoch.itertuples():
                    rows.append({"workload": key[0], "file": key[1], "heuristic": w["heuristic"], "run": log_path.stem,
                                 "best": best, "shard_size": shard_size, "cache": f"{c}/n", "epoch": r.epoch + 1,
                                 "warmup_epochs": w["warmup_epochs"], "requests": r.requests, "misses": r.misses,
                                 "bytes": r.bytes, "dataset_bytes": total})
    return pd.DataFrame(rows), problems


def _warm(run: pd.DataFrame) -> int:
    """The epochs before a run's partitions are fixed: its warmup (a vanilla run: its first, cold-cache epoch)."""
    warmup = int(run.warmup_epochs.iloc[0])
    return 1 if warmup >= run.epoch.max() else warmup


def io_summary(epochs: pd.DataFrame) -> pd.DataFrame:
    """Per result file (heuristic and schedule) and storage setting: runs, mean best metric, and the
    bytes all workers fetched over a run (in dataset sizes), and after warmup per epoch."""
    per_run = epochs.groupby(["workload", "file", "heuristic", "shard_size", "cache", "run"]).apply(
        lambda g: pd.Series({"best": g.best.iloc[0], "fetched": g.bytes.sum() / g.dataset_bytes.iloc[0],
                             "after_warmup": g[g.epoch > _warm(g)].bytes.mean() / g.dataset_bytes.iloc[0]}),
        include_groups=False).reset_index()
    return per_run.groupby(["workload", "file", "heuristic", "shard_size", "cache"]).agg(
        runs=("run", "count"), best=("best", "mean"), fetched=("fetched", "mean"),
        after_warmup=("after_warmup", "mean")).reset_index()


def tests_frame(mine: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"W": mine.warmup_epochs, "I": mine.interval_epochs, "n": mine.n,
                         "diff vs baseline": mine["diff"].map(lambda d: f"{d:+.3f}"),
                         "95% CI": [f"[{lo:+.3f}, {hi:+.3f}]" for lo, hi in zip(mine.ci_low, mine.ci_high)],
                         "Welch p": mine.p_value.map(lambda p: f"{p:.3g}"),
                         "Holm": mine.p_holm.map(lambda p: "yes" if p < ALPHA else "no"),
                         "BH": mine.p_bh.map(lambda p: "yes" if p < ALPHA else "no")}).set_index("W")


def streaming_measured(folder: str | Path) -> pd.DataFrame:
    """Per streaming run (--data-source streaming): what its workers' caches fetched, as the filesystem
    counted it (the JSON log's per-epoch "io"), in bytes and requests, summed over workers and epochs."""
    rows = []
    for path in sorted(Path(folder).rglob("logs/*.json")):
        try:
            log = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue  # exchange_logs and table6 name it
        epochs = log.get("epochs", []) if isinstance(log, dict) and "best_epoch" in log else []
        io_rows = [r for e in epochs for r in e.get("io", [])]
        if io_rows:
            rows.append({"workload": path.parent.parent.name, "run": path.stem, "shard_size": log.get("shard_size"),
                         "requests": sum(r["requests"] for r in io_rows), "hits": sum(r["hits"] for r in io_rows),
                         "measured_bytes": sum(r["bytes"] for r in io_rows),
                         "simulated_as_stored": stored_simulation(path, log)})
    return pd.DataFrame(rows, columns=["workload", "run", "shard_size", "requests", "hits", "measured_bytes",
                                       "simulated_as_stored"])


def stored_simulation(log_path: Path, log: dict) -> float:
    """The bytes iosim predicts for a streaming run from its saved partitions and its storage as its log
    recorded it (each shard file's bytes, header and index included; the cache it really had); NaN
    without either."""
    import iosim

    partitions = log_path.with_suffix(".partitions.pt")
    storage = log.get("storage")
    if not storage or not partitions.is_file():
        return math.nan
    windows, settings = iosim.windows_from_file(str(partitions))
    shard_bytes = np.array(storage["shard_bytes"], dtype=np.int64)
    sizes = np.minimum(log["shard_size"], log["examples"] - log["shard_size"] * np.arange(len(shard_bytes)))
    st = iosim.storage(log["examples"], log["shard_size"], np.repeat(shard_bytes // sizes, sizes),
                       storage["cache_bytes"], storage["policy"], shard_bytes=shard_bytes)
    return float(iosim.simulate(windows, log["workers"], st, **settings)[0].bytes.sum())


def io_section(folder: str | Path, form: str = "markdown") -> tuple[list[str], list[str]]:
    """report.py --io: per heuristic and storage setting, the bytes a run fetched (simulated) and its metric;
    and, for streaming runs, the bytes their caches really fetched beside the simulated ones."""
    epochs, problems = io_study(folder)
    if not len(epochs):
        return ["I/O left out: no run under the folder saved its partitions (dpt.py --save-partitions, "
                "run-experiments.sh --study io).", ""], problems
    summary = io_summary(epochs)
    shown = summary.assign(best=summary.best.map(lambda v: f"{v:.3f}"),
                           fetched=summary.fetched.map(lambda v: f"{v:.2f}"),
                           after_warmup=summary.after_warmup.map(lambda v: f"{v:.3f}"))
    parts: list[str] = []
    emit(parts, form, shown.set_index("workload"), "workload",
         "I/O: what each run fetched from shard storage, simulated (iosim.py) from its saved partitions",
         ("fetched: bytes all workers fetched over the run, in dataset sizes; after_warmup: per epoch after warmup "
          "(vanilla: after its first epoch); cache: each worker's cache, c/n of the dataset plus one shard, partition "
          "policy (iosim.py). Shard sizes 1, 100 and 1000 (a shard-stripes run: the size it dealt); a size left out "
          "is named in the warnings.",))
    measured = streaming_measured(folder)
    if len(measured):
        simulated = epochs[epochs.cache == "1/n"].groupby(["run", "shard_size"]).bytes.sum()
        measured["simulated_bytes"] = [simulated.get((r.run, r.shard_size), math.nan) for r in measured.itertuples()]
        measured["hit_rate"] = (measured.hits / measured.requests).map(lambda v: f"{v:.3f}")
        emit(parts, form, measured.set_index("workload"), "workload",
             "I/O of the streaming runs: bytes their caches fetched (the filesystem's count) beside the simulation "
             "of the same partitions", ("simulated_as_stored: iosim with the shard files' own bytes (litdata's header "
                                        "and index included) and the cache the run had; simulated_bytes: with the "
                                        "examples' raw bytes and a 1/n cache, as for the runs that did not stream "
                                        "(their gap is the shards' per-file overhead). Empty for a run that did not "
                                        "save its partitions (--save-partitions).",))
    return parts, problems


def coverage(cell_table: pd.DataFrame, base: pd.DataFrame) -> list[str]:
    """What the tables present lack: a paper table's missing cells (a result file not there), and the
    vanilla baseline of a table that has none (no test against vanilla DPT is then possible)."""
    problems = []
    grid_cells = {(w, i) for w in names.PAPER_WARMUPS for i in names.PAPER_INTERVALS}
    for table in tables(cell_table):
        mine = select(cell_table, table)
        number = paper_number(table)
        if number:
            missing = sorted(grid_cells - set(zip(mine.warmup_epochs, mine.interval_epochs)))
            if missing:
                shown = ", ".join(f"W{w}-INT{i}" for w, i in missing[:6]) + (", ..." if len(missing) > 6 else "")
                problems.append(f"Table {number} lacks {len(missing)} of its {len(grid_cells)} cells ({shown}): their "
                                f"result files are not under the folder")
        if not len(select_baseline(base, dict(zip(TABLE, table)))):
            w = table_workload(table)
            vanilla = Workload(w.dataset, w.model, "none", "variance", w.total_epochs, w.total_epochs, 0, 0, w.reducer,
                               w.density, w.workers)
            problems.append(f"{title(table)}: no vanilla baseline runs (Baselines/{vanilla.csv_name}); its cells are "
                            "not tested against vanilla DPT")
    return problems


NEAR_CHANCE = 0.1  # a cell this share of the way from chance to a perfect metric or less learned nothing
FEW_SEEDS = 3  # fewer runs in a cell: no spread to speak of (the figures draw points, not a box)
FIX = "train longer (--total-epochs, --epochs in a study) or at a larger size (a larger --subset, --size cpu)"


def warnings(runs: pd.DataFrame) -> list[str]:
    """What makes a study say nothing, named cell by cell with the fix, for the report's top: runs whose
    best epoch falls inside their warmup (the importance-aware part never improved on it), arms whose
    rows are identical seed for seed, cells near chance level, cells of fewer than FEW_SEEDS runs."""
    out = []
    aware = runs[runs.heuristic != "none"]
    early = aware[aware.best_epoch <= aware.warmup_epochs]
    if len(early):
        counts = early.groupby(CELL, sort=False).size()
        totals = aware.groupby(CELL, sort=False).size()
        named = [f"{label_cell(k)} ({counts[k]} of {totals[k]})" for k in counts.index]
        out.append(f"{len(early)} of {len(aware)} importance-aware runs peaked inside their warmup, so the "
                   f"partitions never improved on it: {shortened(named)}; {FIX}")
    epochs = [c for c in runs.columns if c.startswith("epoch_")]
    setting = ["dataset", "model", "total_epochs", "ignore_epochs", "exchange", "workers", "warmup_epochs",
               "interval_epochs"]
    for key, group in aware.groupby(setting, sort=False):
        rows = {arm: frame.sort_values("id")[["id", *epochs]].astype(str).values.tolist()
                for arm, frame in group.groupby(["heuristic", "measure"], sort=False)}
        arms = list(rows)
        same = [(a, b) for i, a in enumerate(arms) for b in arms[i + 1:] if rows[a] == rows[b]]
        for a, b in same:
            out.append(f"{arm_label(*a)} and {arm_label(*b)} at W{key[6]}-INT{key[7]} ({key[0]}, {key[1]}) wrote the "
                       f"same row for every seed ({len(rows[a])}): one experiment twice, not a comparison; {FIX}")
    every = runs.groupby(CELL, sort=False).agg(n=("value", "size"), mean=("value", "mean"),
                                               higher_is_better=("higher_is_better", "first")).reset_index()
    near = []
    for r in every.itertuples():
        chance = C.task_of(r.dataset).chance(C.DATASETS[r.dataset])
        perfect = 100.0 if r.higher_is_better else 0.0
        if abs(r.mean - chance) <= NEAR_CHANCE * abs(perfect - chance):
            near.append(f"{label_cell(r)} ({r.mean:.2f} against chance {chance:.2f})")
    if near:
        out.append(f"{console.plural(len(near), 'cell')} near chance level (within {NEAR_CHANCE:.0%} of the way from "
                   f"chance to perfect): {shortened(near)}; the model learned next to nothing there; {FIX}")
    few = [f"{label_cell(r)} (n = {r.n})" for r in every.itertuples() if r.n < FEW_SEEDS]
    if few:
        out.append(f"{console.plural(len(few), 'cell')} with fewer than {FEW_SEEDS} runs: {shortened(few)}; their "
                   "spread and tests say little (the figures draw their points, not a box); add seeds (--seeds)")
    return out


def label_cell(cell) -> str:
    """'Stripes-variance W4-INT2' for a cell (a CELL key tuple, or a row with those fields)."""
    r = cell._asdict() if hasattr(cell, "_asdict") else dict(zip(CELL, cell))
    where = "" if r["heuristic"] == "none" else f" W{r['warmup_epochs']}-INT{r['interval_epochs']}"
    return f"{arm_label(r['heuristic'], r['measure'])}{where}"


def arm_label(heuristic: str, measure: str) -> str:
    """'Stripes-variance', 'vanilla'."""
    return "vanilla" if heuristic == "none" else f"{C.HEURISTICS[heuristic].title}-{measure}"


def shortened(items: list[str], most: int = 6) -> str:
    return ", ".join(items[:most]) + (f" and {len(items) - most} more" if len(items) > most else "")


def reported(reported_csv: Path, form: str) -> str:
    """The paper's Tables 1-5 as it reports them (PaperCSVs/paper-reported.csv): mean ± std per cell."""
    frame = paper_cells(reported_csv)
    parts = []
    for number, w in names.PAPER_TABLES.items():
        base = frame[(frame.table == number) & (frame.heuristic == "none")].iloc[0]
        caption = (f"Table {number}: {w.title}, as the paper reports it. Mean ± std of the best test accuracy per "
                   f"(W, I) over 10 seeds; baseline (vanilla DPT) {fmt(base['mean'], base['std'])}")
        g = grid(frame[frame.heuristic != "none"].astype({"warmup_epochs": int, "interval_epochs": int}), paper_key(w))
        if form == "latex":
            parts.append(latex_table(g, "W", caption))
        else:
            parts += [f"### {caption}", "", markdown_table(g, "W \\ I"), ""]
    return "\n".join(parts) + "\n"


def emit(parts: list[str], form: str, frame: pd.DataFrame, index_name: str, caption: str,
         notes: tuple[str, ...] = ()) -> None:
    """One table in either form: markdown (a heading, the table, then its notes) or LaTeX (the notes
    join the caption)."""
    if form == "latex":
        parts.append(latex_table(frame, index_name, " ".join((caption + ".", *notes))))
    else:
        parts += [f"### {caption}", "", markdown_table(frame, index_name), ""]
        for note in notes:
            parts += [note, ""]


def warning_section(found: list[str], form: str) -> list[str]:
    """The warnings, first: a markdown list, or LaTeX comments (they are not a table of the paper)."""
    if not found:
        return []
    if form == "latex":
        return [f"% warning: {w}" for w in found] + [""]
    return ["## Warnings: what this folder cannot tell", "", *[f"- {w}" for w in found], ""]


def table6_grid(six: pd.DataFrame) -> pd.DataFrame:
    """Table 6 as the paper prints it: one row per workload, one column per quantity, 'average [min, max]'."""
    shown = six.assign(cell=[f"{a:.3f} [{lo:.3f}, {hi:.3f}]" for a, lo, hi in zip(six.average, six["min"], six["max"])])
    out = shown.pivot(index="workload", columns="quantity", values="cell").reindex(
        columns=[q for q in TABLE6_QUANTITIES if q in set(six.quantity)]).fillna("")
    out.columns = [TABLE6_QUANTITIES[q] for q in out.columns]
    out.insert(0, "runs", six.groupby("workload").runs.max().reindex(out.index))
    return out


TABLE6_QUANTITIES = {"tracking_s_per_epoch": "tracking s/epoch", "heuristic_s_per_interval": "heuristic s/interval",
                     "total_training_s": "training s"}


def study_answers(cell_table: pd.DataFrame, form: str) -> list[str]:
    """Each comparison's grid (values x settings, n and the corrections' marks in every cell) and its answer
    in a paragraph: what a study asks, first."""
    parts: list[str] = []
    for vary, key in comparisons(cell_table):
        mine = comparison(cell_table, vary, key)
        against = "its own reducer's vanilla runs" if vary == "exchange" else "vanilla DPT"
        caption = (f"{comparison_title(vary, key)}. Mean ± std (n) per {vary} and (W, I), against {against}; * "
                   f"differs after Holm's correction over these {len(mine)} cells, + after Benjamini-Hochberg's only")
        emit(parts, form, comparison_grid(mine, vary), vary, caption, (answer(mine, vary),))
    return parts


CONTROL = "random"  # the heuristic of fixed partitions without importance


def against_control(runs: pd.DataFrame) -> pd.DataFrame:
    """Each importance-aware cell against the random control's cell of the same setting (workload but for
    its heuristic and measure, W, I): its difference, Welch's p and 95% CI, and Holm's and Benjamini-
    Hochberg's corrections over these tests. What separates importance from merely fixed partitions."""
    same = [c for c in CELL if c not in ("heuristic", "measure")]
    control = runs[runs.heuristic == CONTROL]
    rows = []
    for key, group in runs[~runs.heuristic.isin(["none", CONTROL])].groupby(CELL, sort=True):
        cell = dict(zip(CELL, key))
        theirs = control[(control[same] == pd.Series({c: cell[c] for c in same})).all(axis=1)].value
        if not len(theirs):
            continue
        p, low, high = welch(group.value, theirs)
        rows.append({**cell, "n": len(group), "mean": group.value.mean(), "control_mean": theirs.mean(),
                     "diff": group.value.mean() - theirs.mean(), "p_value": p, "ci_low": low, "ci_high": high,
                     "higher_is_better": bool(group.higher_is_better.iloc[0])})
    frame = pd.DataFrame(rows)
    if len(frame):
        frame["p_holm"], frame["p_bh"] = holm(frame.p_value.to_numpy(float)), benjamini_hochberg(
            frame.p_value.to_numpy(float))
    return frame


def control_section(runs: pd.DataFrame, form: str) -> list[str]:
    """The table of against_control, with its answer in a sentence."""
    tests = against_control(runs)
    if not len(tests):
        return []
    shown = pd.DataFrame({"arm": [f"{arm_label(r.heuristic, r.measure)}" + (f" {r.exchange}" if r.exchange != "none"
                                                                              else "") for r in tests.itertuples()],
                          "W": tests.warmup_epochs, "I": tests.interval_epochs, "n": tests.n,
                          "mean": tests["mean"].map(lambda v: f"{v:.3f}"),
                          "control": tests.control_mean.map(lambda v: f"{v:.3f}"),
                          "diff": tests["diff"].map(lambda v: f"{v:+.3f}"),
                          "Welch p": tests.p_value.map(lambda v: f"{v:.3g}"),
                          "Holm": tests.p_holm.map(lambda v: "yes" if v < ALPHA else "no"),
                          "BH": tests.p_bh.map(lambda v: "yes" if v < ALPHA else "no")})
    sign = np.where(tests.higher_is_better, 1, -1)
    holm_ = tests.p_holm < ALPHA
    said = (f"Against the random control: {int(holm_.sum())} of {len(tests)} tested cells differ after Holm's "
            f"correction ({int((holm_ & (sign * tests['diff'] > 0)).sum())} better), "
            f"{int((tests.p_bh < ALPHA).sum())} after Benjamini-Hochberg's.")
    parts: list[str] = []
    emit(parts, form, shown.set_index("arm"), "arm",
         "Against the random control: each importance-aware cell against fixed random partitions of the same "
         "setting", (said,))
    return parts


def answer_section(runs: pd.DataFrame, form: str = "markdown") -> str:
    """A selection of runs (one study's arms of a folder that several share) as the report opens: its
    warnings, then its comparisons' grids and answers, then each arm against the random control
    (docs/findings.md's tables, regenerated from the committed runs by gendocs.py)."""
    parts = warning_section(warnings(runs), form) + study_answers(cells(runs), form) + control_section(runs, form)
    return "\n".join(parts).rstrip("\n")


def workload_section(cell_table: pd.DataFrame, base: pd.DataFrame, table: tuple, paper_csv, form: str) -> list[str]:
    """One workload's W x I table, its top 5, its tests against vanilla, and how it compares with the paper.
    A table of one cell is one line."""
    mine = select(cell_table, table)
    b = select_baseline(base, dict(zip(TABLE, table)))
    metric = metric_title(table[0])
    baseline = (f"baseline (vanilla DPT) {fmt(b['mean'].iloc[0], b['std'].iloc[0])}, n={b['n'].iloc[0]}" if len(b)
                else "no baseline runs")
    caption = f"{title(table)}. Mean ± std of the {metric} per (W, I); {baseline}"
    tested = bool(mine.p_value.notna().any())
    if len(mine) == 1 and form == "markdown":
        r = mine.iloc[0]
        test = (f"{r['diff']:+.3f} against vanilla, 95% CI [{r.ci_low:+.3f}, {r.ci_high:+.3f}], Welch p {r.p_value:.3g}"
                if tested else f"no test possible ({NO_TEST})")
        return [f"### {caption}", "", f"W{r.warmup_epochs}-INT{r.interval_epochs}: {fmt(r['mean'], r['std'])} "
                f"(n={r.n}); {test}.", ""]
    notes = [top_line(top(cell_table, table))] if form == "markdown" else []
    parts: list[str] = []
    emit(parts, form, grid(cell_table, table), "W \\ I" if form == "markdown" else "W", caption, tuple(notes))
    if form == "latex":
        return parts
    if tested:
        parts += [markdown_table(tests_frame(mine), "W"), ""]
    parts += [significance(mine), ""]
    if paper_csv and Path(paper_csv).is_file():
        versus = with_paper(mine, paper_csv).dropna(subset=["paper_mean"])
        if len(versus):
            parts += [paper_summary(versus).capitalize() + ".", ""]
    return parts


def render(folder: str | Path, paper_csv: str | Path | None, form: str, io: bool = False) -> tuple[str, list[str]]:
    """The report, and the problems met (damaged files skipped): a study's answers first (the comparisons
    across measures, heuristics or reducers), then each workload's table, then the I/O (with `io`),
    exchange, Table 6 and baseline tables. A folder that holds only the paper's reported cells
    (PaperCSVs without the artifact's per-run CSVs) gives those tables, and says so."""
    try:
        runs, problems = load_runs(folder)
    except ReportError:
        if not (Path(folder) / "paper-reported.csv").is_file():
            raise
        return reported(Path(folder) / "paper-reported.csv", form), [
            f"{folder} holds the paper's reported cells only (paper-reported.csv): these are its printed tables; copy "
            "the artifact's per-run CSVs there for the tests and corrections (docs/reproduce.md)"]
    cell_table = cells(runs)
    base = baselines(runs)
    problems += coverage(cell_table, base)
    parts = warning_section(warnings(runs), form)
    parts += study_answers(cell_table, form)
    parts += control_section(runs, form)
    for table in tables(cell_table):
        parts += workload_section(cell_table, base, table, paper_csv, form)
    if io:
        lines, io_problems = io_section(folder, form)
        parts += lines
        problems += io_problems
    epochs, exchange_problems = exchange_logs(folder)
    problems += exchange_problems
    if len(epochs):
        summary = exchange_summary(epochs)
        shown = summary.assign(**{c: summary[c].map(lambda v: f"{v:.4g}") for c in summary.columns[3:]})
        emit(parts, form, shown.set_index("workload"), "workload",
             "Gradient exchange: per reducer, means over runs and epochs (from the JSON logs)",
             ("density: entries sent / entries, summed over workers; density_error: mean relative error to the "
              "target per step; bytes_per_worker: indices and values one worker sends per step; traffic_vs_dense: "
              "against a dense all-reduce of the same bucket; imbalance: max selected per worker x n / total - 1.",))
    six, log_problems = table6(folder)
    problems += log_problems
    if len(six):
        emit(parts, form, table6_grid(six), "workload",
             "Table 6: overheads in seconds from the runs' JSON logs, average [min, max] over runs")
    elif form == "markdown":
        parts += ["Table 6 left out: no finished run's JSON log under the folder (the paper's CSVs come without logs).",
                  ""]
    if len(base):
        shown = base.assign(mean=base["mean"].map(lambda v: f"{v:.3f}"), std=base["std"].map(lambda v: f"{v:.3f}"))
        emit(parts, form, shown.set_index("dataset"), "dataset", "Baselines (vanilla DPT)")
    return "\n".join(parts).rstrip("\n") + "\n", problems


def main(argv: list[str] | None = None) -> None:
    p = build_parser()
    args = p.parse_args(argv)
    if args.paper and not Path(args.paper).is_file():
        flags.die(
            f"--paper {args.paper} is not a file; pass PaperCSVs/paper-reported.csv or '' to leave the comparison out",
            "report.py",
        )
    if args.out and not Path(args.out).parent.is_dir():
        flags.die(
            f"--out {args.out}: the folder {Path(args.out).parent} does not exist; create it or write elsewhere",
            "report.py",
        )
    try:
        text, problems = render(args.folder, args.paper or None, args.format, args.io)
    except ReportError as err:
        flags.die(str(err), "report.py")
    for problem in problems:
        print(f"report.py: warning: {problem}", file=sys.stderr)
    if args.out:
        try:
            results.write_bytes(Path(args.out), text.encode())
        except OSError as err:  # a link where --out points (LinkRefused), a full disk
            flags.die(f"cannot write --out {args.out}: {err}", "report.py")
    else:
        print(text, end="")


if __name__ == "__main__":
    main()
