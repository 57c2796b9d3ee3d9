import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import report
import results
from runs import REPO

PAPER = REPO / "PaperCSVs" / "paper-reported.csv"


def rows_with(mean: float, std: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """n values whose mean and sample standard deviation are exactly `mean` and `std`."""
    z = rng.normal(size=n)
    z = (z - z.mean()) / z.std(ddof=1)
    return mean + std * z


def write_paper_style(folder: Path, table: int, rng: np.random.Generator, n: int = 10) -> None:
    """Per-seed CSVs in the paper's PaperCSVs layout and schema, reproducing one reported table."""
    paper = pd.read_csv(PAPER)
    mine = paper[paper.table == table]
    for cell in mine.itertuples():
        best = rows_with(cell.mean, cell.std, n, rng)
        if cell.heuristic == "none":
            path = folder / "Baselines" / f"{results.DATASET_SHORT[cell.dataset]}-vanilla-{cell.model}-batch256.csv"
            w, i, measure, heuristic = 100, 98, "variance", "none"  # what the paper's baseline rows carry
        else:
            path = results.csv_path(folder, cell.dataset, cell.model, cell.heuristic, cell.measure,
                                    int(cell.warmup_epochs), int(cell.interval_epochs), 100)
            w, i, measure, heuristic = int(cell.warmup_epochs), int(cell.interval_epochs), cell.measure, {"stripes": "roundrobin", "blocks": "steps"}[cell.heuristic]
        for k, b in enumerate(best):
            epochs = list(rng.uniform(10, b, size=100))
            epochs[int(rng.integers(100))] = b
            row = {"id": f"run{k}", **{f"epoch_{e + 1}": a for e, a in enumerate(epochs)}, "best_accuracy": b,
                   "best_epoch": epochs.index(b) + 1, "warmup_epochs": w, "interval_epochs": i, "measure": measure,
                   "heuristic": heuristic, "model": cell.model, "dataset": cell.dataset}
            results.append_row(path, row)


def test_the_paper_reported_numbers_are_transcribed():
    paper = pd.read_csv(PAPER)
    assert list(paper.columns) == ["table", "dataset", "model", "heuristic", "measure", "warmup_epochs", "interval_epochs", "mean", "std"]
    assert len(paper) == 5 * (36 + 1) and paper.groupby("table").size().tolist() == [37] * 5
    cell = paper.set_index(["table", "warmup_epochs", "interval_epochs"])
    assert tuple(cell.loc[(1, 20, 30), ["mean", "std"]]) == (83.044, 0.311)
    assert tuple(cell.loc[(3, 15, 30), ["mean", "std"]]) == (82.109, 0.338)
    assert tuple(cell.loc[(4, 15, 30), ["mean", "std"]]) == (82.433, 1.020)
    assert tuple(cell.loc[(5, 10, 15), ["mean", "std"]]) == (49.04, 0.503)
    base = paper[paper.heuristic == "none"].set_index("table")
    assert tuple(base.loc[4, ["mean", "std"]]) == (82.661, 0.478) and tuple(base.loc[5, ["mean", "std"]]) == (49.042, 0.698)
    six = pd.read_csv(REPO / "PaperCSVs" / "paper-table6.csv").set_index("quantity")
    assert six.loc["total_training_s"].tolist() == [715, 721.556, 758]
    assert six.loc["tracking_s_per_epoch", "average"] == 1.052


def test_report_reproduces_table_1_from_rows_in_the_papers_schema(tmp_path):
    write_paper_style(tmp_path, 1, np.random.default_rng(0))
    runs = report.load_runs(tmp_path)
    assert len(runs) == 370
    cells = report.cells(runs)
    workload = ("cifar10", "resnet18", "stripes", "variance")
    grid = report.grid(cells, workload)
    paper = pd.read_csv(PAPER)
    for cell in paper[(paper.table == 1) & (paper.heuristic != "none")].itertuples():
        assert grid.loc[cell.warmup_epochs, cell.interval_epochs] == f"{cell.mean:.3f} ± {cell.std:.3f}"
    base = report.baselines(runs).iloc[0]
    assert (base.n, round(base["mean"], 3), round(base["std"], 3)) == (10, 82.983, 0.327)
    versus = report.with_paper(cells, PAPER)
    assert versus.z_vs_paper.abs().max() < 1e-6 and (versus.table == 1).all()
    top = report.top(cells, workload)
    assert list(zip(top.warmup_epochs, top.interval_epochs)) == [(20, 30), (10, 30), (40, 8), (15, 15), (30, 10)]
    text = report.render(tmp_path, PAPER, "markdown")
    assert "### Table 1: CIFAR10, ResNet18, Stripes, Variance" in text and "baseline (vanilla DPT) 82.983 ± 0.327, n=10" in text
    assert "| 10 | 82.766 ± 0.185 | 82.848 ± 0.278 |" in text
    assert r"82.766 $\pm$ 0.185" in report.render(tmp_path, PAPER, "latex")


def test_welch_test_and_interval_against_the_textbook_formulas():
    rng = np.random.default_rng(1)
    a, b = pd.Series(rng.normal(83.1, 0.3, 10)), pd.Series(rng.normal(82.9, 0.5, 7))
    p, lo, hi = report.welch(a, b)
    va, vb = a.var() / 10, b.var() / 7
    t = (a.mean() - b.mean()) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / 9 + vb ** 2 / 6)
    assert p == pytest.approx(2 * stats.t.sf(abs(t), df), rel=1e-9)
    half = stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    assert (lo, hi) == pytest.approx((a.mean() - b.mean() - half, a.mean() - b.mean() + half), rel=1e-12)
    assert all(math.isnan(x) for x in report.welch(a[:1], b))


def test_cells_compare_with_the_baseline_of_their_dataset_and_model(tmp_path):
    def add(heuristic, w, i, values, model="resnet18"):
        path = results.csv_path(tmp_path, "cifar10", model, heuristic, "variance", w, i, 3)
        for k, v in enumerate(values):
            results.append_row(path, results.row(k, [v - 1, v, v - 2], w, i, "variance", heuristic, model, "cifar10"))
    add("none", 3, 0, [80.0, 81.0, 82.0])
    add("none", 3, 0, [50.0, 50.5], model="resnet34")  # another model's baseline must not be used
    add("stripes", 1, 1, [82.0, 83.0, 84.0])
    cells = report.cells(report.load_runs(tmp_path))
    row = cells.iloc[0]
    assert (row.n, row["mean"], row["std"], row.baseline_mean, row["diff"]) == (3, 83.0, 1.0, 81.0, 2.0)
    assert 0 < row.p_value < 0.2 and row.ci_low < 2 < row.ci_high


def test_table6_from_json_logs(tmp_path):
    logs = tmp_path / "CIFAR10-ResNet18-Stripes-Variance" / "logs"
    for k, (tracking, heuristic_s, total) in enumerate([(0.01, [0.02, 0.04], 100.0), (0.03, [0.06], 120.0)]):
        results.write_json(logs / f"run{k}.json", {"tracking_s_per_epoch": tracking, "total_training_s": total,
                                                    "intervals": [{"heuristic_s": h} for h in heuristic_s]})
    results.write_json(logs / "running.json", {"intervals": []})  # a run still going: left out
    six = report.table6(tmp_path).set_index("quantity")
    assert six.loc["tracking_s_per_epoch", ["runs", "min", "max"]].tolist() == [2, 0.01, 0.03]
    assert six.loc["heuristic_s_per_interval", "average"] == pytest.approx(0.045)
    assert six.loc["total_training_s", "average"] == 110.0


def test_cli_writes_markdown_and_latex(tmp_path):
    write_paper_style(tmp_path / "res", 5, np.random.default_rng(2), n=3)
    out = tmp_path / "tables.tex"
    subprocess.run([sys.executable, "report.py", str(tmp_path / "res"), "--format", "latex", "--out", str(out)],
                   cwd=REPO, check=True)
    assert r"\caption{Table 5: CIFAR100, ResNet34, Stripes, Variance" in out.read_text()
    shown = subprocess.run([sys.executable, "report.py", str(tmp_path / "res")], cwd=REPO, check=True,
                           capture_output=True, text=True).stdout
    assert "49.169 ± 0.335" in shown and "Against the paper's reported cells" in shown
