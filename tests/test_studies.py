"""The follow-up studies (run-experiments.sh --study measures, --study heuristics), CPU-sized: every
measure and every heuristic on a Fashion-MNIST subset (the real files when Debian's package is
installed), 3 epochs, 2 seeds, through the CSVs, report.py and plots.ipynb."""
import subprocess
import sys

import nbformat
import numpy as np
import pandas as pd
import pytest
from nbclient import NotebookClient

import catalog
import fakedata
import report
import test_report
import workload
from runs import REPO, study

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    root = tmp_path_factory.mktemp("studies")
    data_dir = root / "data"
    if not (fakedata.REAL_FASHION_MNIST / "train-images-idx3-ubyte.gz").exists():
        fakedata.write_fashion_mnist(data_dir, 200, 100)
    out = root / "results"
    for name in ("measures", "heuristics"):
        study(["--study", name, "--dataset", "fashionmnist", "--epochs", "3", "--warmups", "2", "--intervals", "1",
               "--ignore", "1", "--seeds", "1", "2", "--gpus", "0", "--results-dir", str(out / name),
               "--", "--subset", "100", "--test-subset", "50", "--batch-size", "25", "--data-dir", str(data_dir)])
    return out


def compared(name: str, vary: str) -> set[str]:
    """The values of `vary` a study compares: its tables that keep the base's other name (the measures
    study's Stripes arms; its random control is a heuristic, compared with the control's section)."""
    study_ = workload.STUDIES[name]
    other = "heuristic" if vary == "measure" else "measure"
    return {getattr(t, vary) for t in study_.tables() if getattr(t, other) == getattr(study_.base, other)}


def test_every_measure_and_heuristic_ran_both_seeds(studies):
    runs, problems = report.load_runs(studies)
    # Stripes with variance, the random control and the vanilla baseline are in both studies (each saved in
    # its own folder): the report counts each (run, seed) once, and says so
    shared = 3 * 2
    assert len(problems) == 1 and f"{shared} runs appear more than once" in problems[0], problems
    aware = runs[runs.heuristic != "none"]
    measures = aware[aware.workload.str.startswith("FashionMNIST-ResNet18-Stripes-")]
    assert set(measures.measure) == compared("measures", "measure") and len(compared("measures", "measure")) == 10
    assert "ab-variance" not in set(measures.measure)  # it orders as variability: one experiment, not two
    assert set(aware[aware.measure == "variance"].heuristic) == set(catalog.HEURISTICS) - {"none"}
    assert (aware.groupby(["heuristic", "measure"]).size() == 2).all()
    assert sorted(runs[runs.heuristic == "none"].id) == ["1", "2"]  # both studies' baseline: the same 2 runs


def test_the_report_compares_every_value_with_corrections(studies):
    proc = subprocess.run([sys.executable, "report.py", str(studies), "--paper", ""], cwd=REPO, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    measures = text[text.index("### Across measures: Fashion-MNIST, ResNet-18, heuristic Stripes, T=3, E_ignore=1"):]
    table = measures[:measures.index("\n\n", measures.index("| measure"))]
    assert sorted(line.split("|")[1].strip() for line in table.splitlines()[4:]) == sorted(compared("measures",
                                                                                                 "measure"))
    assert "### Across heuristics: Fashion-MNIST, ResNet-18, measure variance, T=3, E_ignore=1" in text
    # what the folder cannot tell (here: tiny runs that peaked in warmup) first, then the studies' answers,
    # before any workload's table
    assert text.startswith("## Warnings") and text.index("### Across ") < text.index("### Fashion-MNIST, ResNet-18, ")
    for name, vary in (("measures", "measure"), ("heuristics", "heuristic")):  # every arm tested against vanilla
        arms = len(compared(name, vary))
        assert f"of {arms} tested cells ({arms} {vary}s x 1 settings) differ from vanilla after Holm" in text, name
    cells = report.cells(report.load_runs(studies)[0])
    for vary, key in report.comparisons(cells):  # the corrections over each study's family, by their definitions
        mine = report.comparison(cells, vary, key)
        tested = mine[mine.p_value.notna()]
        p = list(tested.p_value)
        assert set(np.flatnonzero(tested.p_holm.to_numpy() < 0.05)) == test_report.holm_reference(p)
        assert set(np.flatnonzero(tested.p_bh.to_numpy() < 0.05)) == test_report.bh_reference(p)


def test_the_notebook_draws_a_figure_per_study(studies, tmp_path, monkeypatch):
    monkeypatch.setenv("DPT_RESULTS", str(studies))
    monkeypatch.setenv("DPT_FIGURES", str(tmp_path))
    notebook = nbformat.read(REPO / "plots.ipynb", as_version=4)
    NotebookClient(notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    drawn = {p.name for p in tmp_path.iterdir()}
    assert {"study-measures-fashionmnist-resnet18-3-1-stripes.png",
            "study-heuristics-fashionmnist-resnet18-3-1-variance.png", "figure5.png"} <= drawn, drawn


def test_a_study_row_names_its_measure_and_heuristic(studies):
    frame = pd.read_csv(studies / "measures" / "FashionMNIST-ResNet18-Stripes-Forgetting" / "W2-INT1-IGN1.csv")
    assert set(frame.measure) == {"forgetting"} and set(frame.heuristic) == {"roundrobin"}
    assert sorted(frame.id) == [1, 2]
