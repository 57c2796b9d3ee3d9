"""plots.ipynb on every kind of results folder a user has: the paper's CSV layout, a study, text
only, vanilla only, and a reducer study with its JSON logs; every figure it announces is written,
non-empty, and named safely for LaTeX (the real runs' folders: test_studies, test_exchange_runs,
test_io_runs, test_text_runs, test_sweep)."""
import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

import results
from runs import REPO
from test_report import add, exchange_study, write_paper_style
from workload import Workload

pytestmark = pytest.mark.slow  # a Jupyter kernel per folder


def draw(folder, figures, monkeypatch, **env) -> tuple[set[str], str]:
    monkeypatch.setenv("DPT_RESULTS", str(folder))
    monkeypatch.setenv("DPT_FIGURES", str(figures))
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    notebook = nbformat.read(REPO / "plots.ipynb", as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    printed = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs)
    drawn = {p.name for p in figures.iterdir()}
    announced = printed.split("figures (PNG and PDF) in ")[1].split(": ", 1)[1].split("\n")[0].split(", ")
    assert announced and {f for f in announced} <= drawn
    for name in drawn:
        assert (figures / name).stat().st_size > 1000, name  # a real image, not an empty file
        stem = name.rsplit(".", 1)[0]
        assert "@" not in stem and "." not in stem, name
    return drawn, printed


def test_the_papers_layout_draws_figure_5_heatmaps_and_curves(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    for number in (1, 3):
        write_paper_style(tmp_path / "res", number, rng, n=3)
    drawn, _ = draw(tmp_path / "res", tmp_path / "fig", monkeypatch, DPT_COMMON_Y="1")
    for slug in ("cifar10-resnet18-stripes-variance", "cifar10-resnet18-blocks-variance"):
        assert {f"figure5-{slug}.png", f"heatmap-{slug}.png", f"curves-{slug}.png"} <= drawn, drawn
    assert {"figure5-common-y.png", "study-heuristics-cifar10-resnet18-100-5-variance.png"} <= drawn
    assert {f"paper-heatmap-table{t}.png" for t in range(1, 6)} <= drawn


def test_a_study_and_a_text_only_folder(tmp_path, monkeypatch):
    for measure, shift in (("variance", 0.0), ("average", 1.0), ("el2n", -1.0)):
        for heuristic, w, i in (("none", 3, 0), ("stripes", 1, 1), ("stripes", 2, 1)):
            if heuristic == "none" and measure != "variance":
                continue  # the vanilla runs are one file, whatever the measure: written once
            wl = Workload("kjv", "gpt", heuristic, measure, 3, w, i, 0 if heuristic == "none" else 1)
            for k in range(2):
                v = 2.0 + (0.0 if heuristic == "none" else shift * 0.1) + 0.01 * k
                results.append_row(results.csv_path(tmp_path / "res", wl), results.row(k, [v + 1, v, v + 0.5], wl))
    drawn, printed = draw(tmp_path / "res", tmp_path / "fig", monkeypatch)
    assert "study-measures-kjv-gpt-3-1-stripes.png" in drawn and "curves-kjv-gpt-stripes-el2n-T3-E1.png" in drawn
    assert "14 runs, 3 importance-aware tables" in printed  # 2 vanilla, 3 measures x 2 settings x 2 seeds


def test_a_vanilla_only_folder_draws_the_papers_panels_only(tmp_path, monkeypatch):
    add(tmp_path / "res", "none", 3, 0, [80.0, 81.0])
    drawn, printed = draw(tmp_path / "res", tmp_path / "fig", monkeypatch)
    assert "2 runs, 0 importance-aware tables" in printed
    assert {p.rsplit(".", 1)[0] for p in drawn} == {f"paper-heatmap-table{t}" for t in range(1, 6)}


def test_a_reducer_study_draws_its_exchange_figure(tmp_path, monkeypatch):
    exchange_study(tmp_path / "res")
    for folder in ("CIFAR10-ResNet18-Stripes-Variance", "Baselines"):
        for k in range(2):
            epochs = [{"epoch": e + 1, "exchange": {"density": 0.012 - 0.001 * e, "density_error": 0.2 - 0.1 * e,
                                                    "bytes_per_worker": 9e4, "dense_bytes": 4.5e7, "imbalance": 0.1,
                                                    "selection_s": 0.001, "communication_s": 0.002, "steps": 10}}
                      for e in range(3)]
            results.write_json(tmp_path / "res" / folder / "logs" / f"run{k}.json", {
                "workload": {"reducer": "exdyna", "density": 0.01}, "best_epoch": 2, "best_accuracy": 70.0 + k,
                "epochs": epochs, "tracking_s_per_epoch": 0.01, "total_training_s": 5.0, "intervals": []})
    drawn, _ = draw(tmp_path / "res", tmp_path / "fig", monkeypatch)
    assert {"exchange-CIFAR10-ResNet18-Stripes-Variance.png", "exchange-Baselines.png"} <= drawn
    assert "study-exchanges-cifar10-resnet18-3-1-4-stripes-variance.png" not in drawn  # 4 workers: not named
    assert any(n.startswith("study-exchanges-cifar10-resnet18-3-1-stripes-variance") for n in drawn), drawn

