"""report.py: the paper's tables from rows in its schema, the statistics (Welch, Holm,
Benjamini-Hochberg) against their textbook formulas, and every way a folder can be wrong."""
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import catalog
import report
import results
import workload
from runs import REPO
from workload import Workload

PAPER = REPO / "PaperCSVs" / "paper-reported.csv"
TABLE1 = ("cifar10", "resnet18", "stripes", "variance", 100, 5, "none", 4, "")


def rows_with(mean: float, std: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """n values whose mean and sample standard deviation are exactly `mean` and `std`."""
    z = rng.normal(size=n)
    z = (z - z.mean()) / z.std(ddof=1)
    return mean + std * z


def write_paper_style(folder: Path, table: int, rng: np.random.Generator, n: int = 10) -> None:
    """Per-seed CSVs in the paper's PaperCSVs layout and schema (its file names, run ids and baseline
    columns included), reproducing one reported table."""
    paper = pd.read_csv(PAPER)
    mine = paper[paper.table == table]
    for cell in mine.itertuples():
        best = rows_with(cell.mean, cell.std, n, rng)
        if cell.heuristic == "none":
            path = folder / "Baselines" / f"{catalog.DATASETS[cell.dataset].paper}-vanilla-{cell.model}-batch256.csv"
            w, i, measure, heuristic = 100, 98, "variance", "none"  # what the paper's baseline rows carry
        else:
            path = results.csv_path(folder, Workload(cell.dataset, cell.model, cell.heuristic, cell.measure).at(
                int(cell.warmup_epochs), int(cell.interval_epochs)))
            w, i, measure, heuristic = (
                int(cell.warmup_epochs),
                int(cell.interval_epochs),
                cell.measure,
                {"stripes": "roundrobin", "blocks": "steps"}[cell.heuristic],
            )
        for k, b in enumerate(best):
            epochs = list(rng.uniform(10, b, size=100))
            epochs[int(rng.integers(100))] = b
            row = {"id": f"run{k}", **{f"epoch_{e + 1}": a for e, a in enumerate(epochs)}, "best_accuracy": b,
                   "best_epoch": epochs.index(b) + 1, "warmup_epochs": w, "interval_epochs": i, "measure": measure,
                   "heuristic": heuristic, "model": cell.model, "dataset": cell.dataset}
            if not results.has_row(path, f"run{k}"):  # Tables 1-3 share one baseline file
                results.append_row(path, row)


def test_the_paper_reported_numbers_are_transcribed():
    paper = pd.read_csv(PAPER)
    assert list(paper.columns) == [
        "table",
        "dataset",
        "model",
        "heuristic",
        "measure",
        "warmup_epochs",
        "interval_epochs",
        "mean",
        "std",
    ]
    assert len(paper) == 5 * (36 + 1) and paper.groupby("table").size().tolist() == [37] * 5
    cell = paper.set_index(["table", "warmup_epochs", "interval_epochs"])
    assert tuple(cell.loc[(1, 20, 30), ["mean", "std"]]) == (83.044, 0.311)
    assert tuple(cell.loc[(3, 15, 30), ["mean", "std"]]) == (82.109, 0.338)
    assert tuple(cell.loc[(4, 15, 30), ["mean", "std"]]) == (82.433, 1.020)
    assert tuple(cell.loc[(5, 10, 15), ["mean", "std"]]) == (49.04, 0.503)
    base = paper[paper.heuristic == "none"].set_index("table")
    assert tuple(base.loc[4, ["mean", "std"]]) == (82.661, 0.478) and tuple(base.loc[5, ["mean", "std"]]) == (
        49.042,
        0.698,
    )
    six = pd.read_csv(REPO / "PaperCSVs" / "paper-table6.csv").set_index("quantity")
    assert six.loc["total_training_s"].tolist() == [715, 721.556, 758]
    assert six.loc["tracking_s_per_epoch", "average"] == 1.052


def test_report_reproduces_table_1_from_rows_in_the_papers_schema(tmp_path):
    write_paper_style(tmp_path, 1, np.random.default_rng(0))
    runs, problems = report.load_runs(tmp_path)
    assert len(runs) == 370 and problems == []
    cells = report.cells(runs)
    grid = report.grid(cells, TABLE1)
    paper = pd.read_csv(PAPER)
    for cell in paper[(paper.table == 1) & (paper.heuristic != "none")].itertuples():
        assert grid.loc[cell.warmup_epochs, cell.interval_epochs] == f"{cell.mean:.3f} ± {cell.std:.3f}"
    base = report.baselines(runs).iloc[0]
    assert (base.n, round(base["mean"], 3), round(base["std"], 3)) == (10, 82.983, 0.327)
    versus = report.with_paper(cells, PAPER)
    assert versus.z_vs_paper.abs().max() < 1e-6 and (versus.table == 1).all()
    top = report.top(cells, TABLE1)
    # W30-INT10 and W40-INT1 both average 82.946: the tie at the fifth place is kept and named
    assert list(zip(top.warmup_epochs, top.interval_epochs)) == [(20, 30), (10, 30), (40, 8), (15, 15), (30, 10),
                                                                 (40, 1)]
    text, _ = report.render(tmp_path, PAPER, "markdown")
    assert "W30-INT10 = W40-INT1 82.946 ± " in text and "(tied)" in text
    assert "### Table 1: CIFAR-10, ResNet-18, Stripes, variance. Mean ± std of the best test accuracy per (W, I); " \
           "baseline (vanilla DPT) 82.983 ± 0.327, n=10" in text
    assert "| 10 | 82.766 ± 0.185 | 82.848 ± 0.278 |" in text
    assert (
        "Against the paper's reported cells: 36 cells compared; means: 36 equal to its 3 decimals, "
        "largest distance 0.00 of the paper's std, 0 beyond 2 std; stds: 36 equal, ours / the paper's from 1.00 to "
        "1.00." in text
    )
    assert "36 cells tested against the baseline" in text
    assert "Table 6 left out: no finished run's JSON log" in text
    latex, _ = report.render(tmp_path, PAPER, "latex")
    assert (
        r"\caption{Table 1: CIFAR-10, ResNet-18, Stripes, variance. Mean $\pm$ std" in latex
        and "Table 1: Table" not in latex
    )
    assert r"82.766 $\pm$ 0.185" in latex and "±" not in latex


def test_tables_come_in_the_papers_order_with_fixed_decimals(tmp_path):
    for table in (3, 5, 1):
        write_paper_style(tmp_path, table, np.random.default_rng(table), n=3)
    text, _ = report.render(tmp_path, None, "markdown")
    order = [text.index(f"### Table {t}:") for t in (1, 3, 5)]
    assert order == sorted(order)
    diffs = [line.split("|")[4].strip() for line in text.splitlines() if line.startswith("| 10 | 1 | 3 |")]
    assert diffs and all(len(d.split(".")[1]) == 3 for d in diffs)  # +0.240, never +0.24


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
    p, lo, hi = report.welch(pd.Series([80.0, 80.0]), pd.Series([75.0, 75.0]))  # both constant: no test
    assert math.isnan(p) and lo == hi == 5.0


def holm_reference(p):
    """Holm's procedure as its definition reads: reject in order while p_(k) <= alpha / (m - k + 1)."""
    order = sorted(range(len(p)), key=lambda k: p[k])
    rejected, m = set(), len(p)
    for rank, k in enumerate(order):
        if p[k] > 0.05 / (m - rank):
            break
        rejected.add(k)
    return rejected


def bh_reference(p):
    """Benjamini-Hochberg as its definition reads: the largest k with p_(k) <= k alpha / m, and all below it."""
    order = sorted(range(len(p)), key=lambda k: p[k])
    m = len(p)
    last = max([rank + 1 for rank, k in enumerate(order) if p[k] <= (rank + 1) * 0.05 / m], default=0)
    return set(order[:last])


@pytest.mark.parametrize("seed", range(20))
def test_holm_and_benjamini_hochberg_against_their_definitions(seed):
    rng = np.random.default_rng(seed)
    p = np.concatenate([rng.uniform(0, 0.01, rng.integers(0, 8)), rng.uniform(0, 1, 30)])
    rng.shuffle(p)
    assert set(np.flatnonzero(report.holm(p) < 0.05)) == holm_reference(list(p))
    assert set(np.flatnonzero(report.benjamini_hochberg(p) < 0.05)) == bh_reference(list(p))
    assert (report.holm(p) >= p - 1e-12).all() and (
        report.benjamini_hochberg(p) >= p - 1e-12
    ).all()  # adjusting never lowers a p-value
    with_nan = np.append(p, np.nan)
    assert np.isnan(report.holm(with_nan)[-1]) and np.allclose(report.holm(with_nan)[:-1], report.holm(p))


def add(folder, heuristic, w, i, values, model="resnet18", total=3, dataset="cifar10"):
    wl = Workload(dataset, model, heuristic, "variance", total, w, i, 0 if heuristic == "none" else 5)
    for k, v in enumerate(values):
        results.append_row(results.csv_path(folder, wl), results.row(k, [v - 1, v] + [v - 2] * (total - 2), wl))


def test_cells_compare_with_the_baseline_of_their_dataset_model_and_t(tmp_path):
    add(tmp_path, "none", 3, 0, [80.0, 81.0, 82.0])
    add(tmp_path, "none", 3, 0, [50.0, 50.5], model="resnet34")  # another model's baseline must not be used
    add(tmp_path, "none", 4, 0, [10.0, 11.0], total=4)  # nor another T's
    add(tmp_path, "stripes", 1, 1, [82.0, 83.0, 84.0])
    cells = report.cells(report.load_runs(tmp_path)[0])
    row = cells.iloc[0]
    assert (row.n, row["mean"], row["std"], row.baseline_mean, row["diff"]) == (3, 83.0, 1.0, 81.0, 2.0)
    assert 0 < row.p_value < 0.2 and row.ci_low < 2 < row.ci_high


def test_runs_of_different_schedules_never_share_a_cell(tmp_path):
    add(tmp_path / "a", "stripes", 1, 1, [82.0, 83.0], total=3)
    add(tmp_path / "b", "stripes", 1, 1, [70.0, 71.0], total=4)  # same W, I and workload, another T
    wl = Workload("cifar10", "resnet18", "stripes", "variance", 3, 1, 1, ignore_epochs=0)  # another E_ignore
    results.append_row(results.csv_path(tmp_path / "c", wl), results.row(0, [60.0, 61.0, 59.0], wl))
    cells = report.cells(report.load_runs(tmp_path)[0])
    assert sorted(zip(cells.total_epochs, cells.ignore_epochs, cells.n)) == [(3, 0, 1), (3, 5, 2), (4, 5, 2)]


def test_text_rows_are_lower_is_better(tmp_path):
    for heuristic, values in (("none", [2.0, 2.1]), ("stripes", [1.5, 1.6])):
        wl = Workload(
            "kjv",
            "gpt",
            heuristic,
            "variance",
            2,
            1 if heuristic != "none" else 2,
            1 if heuristic != "none" else 0,
            0 if heuristic == "none" else 5,
        )
        for k, v in enumerate(values):
            results.append_row(results.csv_path(tmp_path, wl), results.row(k, [v + 1, v], wl))
    runs, _ = report.load_runs(tmp_path)
    cells = report.cells(runs)
    assert cells.iloc[0]["diff"] == pytest.approx(-0.5) and not cells.iloc[0].higher_is_better
    text, _ = report.render(tmp_path, None, "markdown")
    assert "best held-out bits per byte (lower is better)" in text


def test_table6_from_json_logs_and_a_damaged_log(tmp_path):
    logs = tmp_path / "CIFAR10-ResNet18-Stripes-Variance" / "logs"
    for k, (tracking, heuristic_s, total) in enumerate([(0.01, [0.02, 0.04], 100.0), (0.03, [0.06], 120.0)]):
        results.write_json(logs / f"run{k}.json", {"tracking_s_per_epoch": tracking, "total_training_s": total,
                                                    "intervals": [{"heuristic_s": h} for h in heuristic_s]})
    results.write_json(logs / "running.json", {"intervals": []})  # a run still going: left out
    (logs / "broken.json").write_text('{"tracking_s_per')
    six, problems = report.table6(tmp_path)
    six = six.set_index("quantity")
    assert six.loc["tracking_s_per_epoch", ["runs", "min", "max"]].tolist() == [2, 0.01, 0.03]
    assert six.loc["heuristic_s_per_interval", "average"] == pytest.approx(0.045)
    assert six.loc["total_training_s", "average"] == 110.0
    assert len(problems) == 1 and "broken.json: not a JSON log" in problems[0]


def cli(*argv):
    return subprocess.run([sys.executable, "report.py", *argv], cwd=REPO, capture_output=True, text=True)


def test_cli_writes_markdown_and_latex(tmp_path):
    write_paper_style(tmp_path / "res", 5, np.random.default_rng(2), n=3)
    out = tmp_path / "tables.tex"
    assert cli(str(tmp_path / "res"), "--format", "latex", "--out", str(out)).returncode == 0
    assert r"\caption{Table 5: CIFAR-100, ResNet-34, Stripes, variance." in out.read_text()
    shown = cli(str(tmp_path / "res"))
    assert (
        shown.returncode == 0
        and "49.169 ± 0.335" in shown.stdout
        and "Against the paper's reported cells" in shown.stdout
    )


def damaged_folder(tmp_path):
    add(tmp_path, "none", 3, 0, [80.0, 81.0])
    add(tmp_path, "stripes", 1, 1, [82.0, 83.0, 84.0])
    good = results.csv_path(tmp_path, Workload("cifar10", "resnet18", "stripes", "variance", 3, 1, 1))
    with open(good, "a") as f:
        f.write("9,1,2\n")  # ragged
        f.write("10,x,y,z,garbage,1,1,1,variance,roundrobin,resnet18,cifar10\n")  # not numbers
    folder = good.parent
    (folder / "W2-INT1.csv").write_bytes(b"")  # zero bytes
    (folder / "W3-INT1.csv").write_bytes(bytes(range(256)))  # binary
    (folder / "W4-INT1.csv").write_text("a,b\n1,2\n")  # another header
    return good


def test_damaged_files_are_reported_and_skipped_not_dropped(tmp_path):
    damaged_folder(tmp_path)
    runs, problems = report.load_runs(tmp_path)
    assert len(runs) == 5  # the good rows of both files
    said = "\n".join(problems)
    assert "W1-INT1.csv: 3 rows read, 2 skipped (line 5: 3 fields, expected 12; line 6:" in said
    assert "W2-INT1.csv: empty (zero bytes); skipped" in said and "W3-INT1.csv: not a text file" in said
    assert "W4-INT1.csv: header is not the paper's schema" in said
    proc = cli(str(tmp_path), "--paper", "")
    assert proc.returncode == 0 and proc.stderr.count("report.py: warning:") == 4


@pytest.mark.parametrize(
    "make,expected",
    [
        (lambda tmp: [str(tmp / "missing")], "is not a folder of result CSVs"),
        (lambda tmp: [str(tmp)], "no result CSVs in the paper's schema under"),
        (
            lambda tmp: [str(REPO / "PaperCSVs"), "--out", str(tmp / "no" / "such" / "tables.md")],
            "does not exist; create it",
        ),
        (lambda tmp: [str(REPO / "PaperCSVs"), "--paper", str(tmp / "nope.csv")], "--paper"),
    ],
    ids=["missing folder", "empty folder", "output in a missing folder", "missing paper file"],
)
def test_nothing_to_report_is_one_line_and_a_failure(tmp_path, make, expected):
    proc = cli(*make(tmp_path))
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("report.py: error: ") and expected in lines[0], proc.stderr


def test_runs_of_other_worker_counts_are_other_tables(tmp_path):
    """1 and 4 workers are two experiments: two files, two tables, never one cell of n=2."""
    for workers, seeds in ((4, (1, 2)), (1, (1, 2))):
        wl = Workload("cifar10", "resnet18", "stripes", "variance", 3, 1, 1, 0, workers=workers)
        for seed in seeds:
            results.append_row(results.csv_path(tmp_path, wl), results.row(seed, [50.0, 51.0 + workers, 50.0], wl))
    cells = report.cells(report.load_runs(tmp_path)[0])
    assert sorted(zip(cells.workers, cells.n, cells["mean"])) == [(1, 2, 52.0), (4, 2, 55.0)]
    text, _ = report.render(tmp_path, None, "markdown")
    assert "T=3, E_ignore=0, 1 worker. Mean" in text and "T=3, E_ignore=0. Mean" in text


def test_missing_cells_and_baselines_are_named(tmp_path):
    """A paper table with one file missing, and no Baselines folder: both said, not a blank and silence."""
    folder = tmp_path / "CIFAR10-ResNet18-Stripes-Variance"
    for w in workload.PAPER_WARMUPS:
        for i in workload.PAPER_INTERVALS:
            if (w, i) == (20, 5):
                continue
            wl = workload.PAPER_TABLES[1].at(w, i)
            for seed in (1, 2):
                results.append_row(folder / wl.csv_name, results.row(seed, [80.0 + seed] * 100, wl))
    _, problems = report.render(tmp_path, None, "markdown")
    assert any("Table 1 lacks 1 of its 36 cells (W20-INT5)" in p for p in problems), problems
    assert any("no vanilla baseline runs (Baselines/c10-vanilla-resnet18-total100.csv)" in p for p in problems)


def test_result_names_that_are_folders_pipes_or_headers_only_are_skipped_with_a_word(tmp_path):
    wl = Workload("cifar10", "resnet18", "stripes", "variance", 3, 1, 1, 0)
    good = results.csv_path(tmp_path, wl)
    results.append_row(good, results.row(1, [50.0, 51.0, 52.0], wl))
    (good.parent / "W1-INT2-IGN0.csv").mkdir()
    os.mkfifo(good.parent / "W2-INT1-IGN0.csv")  # opening it to read would block for ever
    (good.parent / "W1-INT3-IGN0.csv").write_text(",".join(results.columns(3)) + "\n")
    runs, problems = report.load_runs(tmp_path)
    assert list(runs.id) == ["1"]
    assert sum("not a regular file" in p for p in problems) == 2
    assert any("W1-INT3-IGN0.csv: a header and no whole row" in p for p in problems)


def test_all_five_paper_tables_agree_in_means_and_stds(tmp_path):
    rng = np.random.default_rng(5)
    for number in range(1, 6):
        write_paper_style(tmp_path, number, rng, n=3)
    text, _ = report.render(tmp_path, PAPER, "markdown")
    checks = [line for line in text.splitlines() if line.startswith("Against the paper's reported cells")]
    assert len(checks) == 5 and all("36 cells compared; means: 36 equal" in c and "stds: 36 equal" in c
                                    for c in checks)  # 180 of 180 cells, means and stds


def exchange_study(folder):
    """Stripes-variance and vanilla under DDP's all-reduce and under exdyna@0.01, 3 seeds each."""
    for reducer, density, shift in (("none", None, 0.0), ("exdyna", 0.01, -5.0)):
        for heuristic, w, i, gain in (("none", 3, 0, 0.0), ("stripes", 1, 1, 3.0)):
            wl = Workload("cifar10", "resnet18", heuristic, "variance", 3, w, i, 0 if heuristic == "none" else 1,
                          reducer=reducer, density=density)
            for k, v in enumerate([80.0 + shift + gain + d for d in (-0.1, 0.0, 0.1)]):
                results.append_row(results.csv_path(folder, wl), results.row(k, [v - 1, v, v - 2], wl))


def test_a_study_report_answers_first_with_n_and_marks_in_every_cell(tmp_path):
    exchange_study(tmp_path)
    text, _ = report.render(tmp_path, None, "markdown")
    first = text.split("### ")[1]
    assert first.startswith("Across exchanges: CIFAR-10, ResNet-18, measure variance, heuristic Stripes, T=3")
    # each reducer's arm against its own vanilla: +3 pp at n=3, std 0.1, significant after Holm
    assert "| exdyna@0.01 | 78.000 ± 0.100 (3)* |" in first and "| all-reduce | 83.000 ± 0.100 (3)* |" in first
    assert "2 of 2 tested cells (2 exchanges x 1 settings) differ from vanilla after Holm's correction: 2 better " \
           "and 0 worse" in first
    assert "Best: all-reduce at W1-INT1, 83.000 ± 0.100 (n=3), +3.000 pp against its vanilla 80.000*" in first
    # a workload table of one cell is one line, its test inline
    assert "W1-INT1: 78.000 ± 0.100 (n=3); +3.000 against vanilla, 95% CI [" in text
    assert "| W | n | diff vs baseline" not in text


def test_a_study_without_seeds_enough_says_no_test_was_possible(tmp_path):
    for measure in ("variance", "average"):
        for heuristic, w, i in (("none", 3, 0), ("stripes", 1, 1)):
            wl = Workload("cifar10", "resnet18", heuristic, measure, 3, w, i, 0 if heuristic == "none" else 1)
            if not results.has_row(results.csv_path(tmp_path, wl), 0):  # one vanilla file serves both measures
                results.append_row(results.csv_path(tmp_path, wl), results.row(0, [70.0, 71.0, 69.0], wl))
    text, _ = report.render(tmp_path, None, "markdown")
    warned, answer = text.split("### ")[:2]
    assert "with fewer than 3 runs" in warned and "wrote the same row for every seed (1)" in warned
    assert answer.startswith("Across measures") and "No test was possible" in answer
    assert "+nan" not in text and "no test possible (a cell or the baseline has fewer than 2 runs)" in text


def test_latex_carries_every_table_the_markdown_does(tmp_path):
    exchange_study(tmp_path)
    logs = tmp_path / "CIFAR10-ResNet18-Stripes-Variance" / "logs"
    results.write_json(logs / "run0.json", {"tracking_s_per_epoch": 0.01, "total_training_s": 9.0,
                                            "intervals": [{"heuristic_s": 0.02}]})
    markdown, _ = report.render(tmp_path, None, "markdown")
    latex, _ = report.render(tmp_path, None, "latex")
    headings = [line[4:].split(".")[0] for line in markdown.splitlines() if line.startswith("### ")]
    captions = [line[9:].split(".")[0] for line in latex.splitlines() if line.startswith(r"\caption{")]
    assert len(headings) == len(captions) == latex.count(r"\begin{table}") and len(headings) >= 5
    assert any(c.startswith("Table 6") for c in captions) and any(c.startswith("Baselines") for c in captions)


def test_table6_is_one_row_per_workload(tmp_path):
    for folder, tracking in (("CIFAR10-ResNet18-Stripes-Variance", (0.01, 0.03)), ("Baselines", (0.02,))):
        for k, t in enumerate(tracking):
            results.write_json(tmp_path / folder / "logs" / f"run{k}.json",
                               {"tracking_s_per_epoch": t, "total_training_s": 100.0 + k, "intervals": []})
    six = report.table6_grid(report.table6(tmp_path)[0])
    assert list(six.index) == ["Baselines", "CIFAR10-ResNet18-Stripes-Variance"]
    assert list(six.columns) == ["runs", "tracking s/epoch", "training s"]
    assert six.loc["CIFAR10-ResNet18-Stripes-Variance", "tracking s/epoch"] == "0.020 [0.010, 0.030]"
    assert six.loc["Baselines", "runs"] == 1


def small_study(folder: Path, arms: dict, seeds: int = 3, warmup: int = 4, total: int = 8) -> None:
    """Rows of a small image study: `arms` maps (heuristic, measure) to a function (seed) -> the epochs'
    accuracies; vanilla's key is ("none", "variance")."""
    for (heuristic, measure), curve in arms.items():
        w = Workload("fashionmnist", "lenet5", heuristic, measure, total, ignore_epochs=1)
        w = w.at(total, 0) if heuristic == "none" else w.at(warmup, 2)
        for seed in range(seeds):
            epochs = curve(seed)
            best = max(epochs)
            results.append_row(results.csv_path(folder, w), {
                "id": seed, **{f"epoch_{e + 1}": a for e, a in enumerate(epochs)}, "best_accuracy": best,
                "best_epoch": epochs.index(best) + 1, "warmup_epochs": w.warmup_epochs,
                "interval_epochs": w.interval_epochs, "measure": measure,
                "heuristic": catalog.HEURISTICS[heuristic].paper, "model": w.model, "dataset": w.dataset})


def test_a_study_that_learned_nothing_is_said_first(tmp_path):
    """Runs that peaked in warmup, two arms with the same rows, a cell near chance and a cell of two
    runs: each named, with its fix, before any table."""
    peaked = lambda seed: [50.0 + seed, 60.0, 70.0, 80.0 + seed, 75.0, 74.0, 73.0, 72.0]  # best at epoch 4 = W
    small_study(tmp_path, {("none", "variance"): lambda seed: [50.0 + seed + e for e in range(8)],
                           ("stripes", "variance"): peaked, ("blocks", "variance"): peaked,
                           ("random", "variance"): lambda seed: [10.0 + 0.1 * seed] * 7 + [11.0]})
    small_study(tmp_path / "more", {("stripes", "average"): lambda seed: [60.0 + seed + e for e in range(8)]}, seeds=2)
    text, _ = report.render(tmp_path, None, "markdown")
    head = text.split("\n###")[0]
    assert head.startswith("## Warnings")
    assert "6 of 11 importance-aware runs peaked inside their warmup" in head
    assert "Stripes-variance W4-INT2 (3 of 3)" in head and "Blocks-variance W4-INT2 (3 of 3)" in head
    assert "Blocks-variance and Stripes-variance at W4-INT2 (fashionmnist, lenet5) wrote the same row for every " \
           "seed (3)" in head
    assert "1 cell near chance level" in head and "random-variance W4-INT2 (11.00 against chance 10.00)" in head
    assert "1 cell with fewer than 3 runs: Stripes-average W4-INT2 (n = 2)" in head
    assert all("--total-epochs" in line or "--seeds" in line for line in head.splitlines() if line.startswith("- "))


def test_a_study_that_learned_says_no_warning(tmp_path):
    small_study(tmp_path, {("none", "variance"): lambda seed: [50.0 + seed + e for e in range(8)],
                           ("stripes", "variance"): lambda seed: [50.0 + seed + e + 0.5 * (e > 4) for e in range(8)]})
    text, _ = report.render(tmp_path, None, "markdown")
    assert "Warnings" not in text and text.startswith("###")
    assert report.warning_section(["x"], "latex") == ["% warning: x", ""]


def test_runs_that_differ_in_a_recorded_setting_are_never_pooled(tmp_path):
    """Two folders differing only in --lr, reported from their parent: two tables, each titled with its
    learning rate, each against its own vanilla runs, and a warning naming the setting."""
    import flags

    for lr, shift in (("0.1", 0.0), ("0.05", 5.0)):
        for argv in (["--heuristic", "none"], ["--warmup-epochs", "1", "--interval-epochs", "1"]):
            args = flags.parse_args(["--dataset", "cifar10", "--total-epochs", "3", "--ignore-epochs", "0",
                                     "--lr", lr, *argv])
            w = flags.workload(args, 4)
            csv = results.csv_path(tmp_path / f"lr{lr}", w)
            assert results.claim(csv, flags.settings(args, 4)) is None
            for seed in range(3):
                results.append_row(csv, results.row(seed, [50.0 + shift + seed, 60.0 + shift, 55.0], w))
    runs, problems = report.load_runs(tmp_path)
    assert set(runs.variant) == {"lr=0.1", "lr=0.05"}
    assert any("differ in recorded settings (lr)" in p for p in problems)
    cells = report.cells(runs)
    assert len(cells) == 2 and sorted(cells["n"]) == [3, 3]
    assert sorted(cells["baseline_mean"]) == [60.0, 65.0]  # each against its own vanilla (pooled: 62.5)
    text, _ = report.render(tmp_path, None, "markdown")
    assert "[lr=0.05]" in text and "[lr=0.1]" in text and "n=6" not in text


def test_a_setting_splits_only_the_files_it_differs_in(tmp_path):
    """Settings are compared within one dataset, model, T and worker count (a table and its vanilla
    runs): another workload's learning rate, in the same folder, never relabels these."""
    import flags

    for dataset, lr in (("cifar10", "0.1"), ("cifar10", "0.05"), ("fashionmnist", "0.01")):
        args = flags.parse_args(["--dataset", dataset, "--total-epochs", "3", "--heuristic", "none", "--lr", lr])
        w = flags.workload(args, 4)
        csv = results.csv_path(tmp_path / f"{dataset}-lr{lr}", w)
        assert results.claim(csv, flags.settings(args, 4)) is None
        for seed in range(2):
            results.append_row(csv, results.row(seed, [50.0 + seed, 60.0, 55.0], w))
    runs, problems = report.load_runs(tmp_path)
    labels = runs.groupby("dataset").variant.unique().map(set).to_dict()
    assert labels == {"cifar10": {"lr=0.1", "lr=0.05"}, "fashionmnist": {""}}
    assert sum("differ in recorded settings (lr)" in p for p in problems) == 1


def test_each_arm_is_tested_against_the_random_control_of_its_setting(tmp_path):
    """Welch's test of an arm's cell against the control's cell of the same (W, I), against scipy,
    with Holm's correction over these tests; vanilla is not the control."""
    values = {("none", "variance"): [80.0, 81.0, 82.0], ("random", "variance"): [70.0, 71.0, 72.5],
              ("stripes", "variance"): [75.0, 76.5, 77.0]}
    small_study(tmp_path, {arm: (lambda seed, v=v: [50.0] * 7 + [v[seed]]) for arm, v in values.items()})
    runs, _ = report.load_runs(tmp_path)
    tests = report.against_control(runs)
    assert len(tests) == 1
    (row,) = tests.itertuples()
    expected = stats.ttest_ind(values[("stripes", "variance")], values[("random", "variance")], equal_var=False)
    assert row.diff == pytest.approx(np.mean(values[("stripes", "variance")]) - np.mean(values[("random", "variance")]))
    assert row.p_value == pytest.approx(expected.pvalue) and row.p_holm == pytest.approx(expected.pvalue)
    text, _ = report.render(tmp_path, None, "markdown")
    assert "Against the random control: 1 of 1 tested cells differ after Holm's correction (1 better)" in text
