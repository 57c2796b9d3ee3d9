"""Result files: one CSV row per run in the paper's schema, and a JSON log per run.

dpt.py appends its row with `append_row` and writes its log with `write_json`; any folder of
CSVs in this schema (ours, or the paper's own PaperCSVs) reads back with `read_csvs`:

    python -c "import results; print(results.read_csvs('results').groupby(['workload', 'file']).best_accuracy.agg(['mean', 'std']))"

Layout, as the paper's PaperCSVs:
    <results-dir>/<Dataset>-<Model>-<Heuristic>-<Measure>/W<W>-INT<I>.csv     importance-aware runs
    <results-dir>/Baselines/<c10|c100|fmnist>-vanilla-<model>-total<T>.csv     vanilla runs
    <results-dir>/<workload folder>/logs/<run>.json                           one per run
Rows are appended under an exclusive lock, never rewritten, so concurrent runs may share a file.
"""
import csv
import fcntl
import json
import os
import tempfile
from pathlib import Path

import pandas as pd
import torch

DATASET_NAMES = {"cifar10": "CIFAR10", "cifar100": "CIFAR100", "fashionmnist": "FashionMNIST"}
DATASET_SHORT = {"cifar10": "c10", "cifar100": "c100", "fashionmnist": "fmnist"}
MODEL_NAMES = {"resnet18": "ResNet18", "resnet34": "ResNet34"}
HEURISTIC_NAMES = {"stripes": "Stripes", "blocks": "Blocks"}
TAIL_COLUMNS = ["best_accuracy", "best_epoch", "warmup_epochs", "interval_epochs", "measure", "heuristic", "model", "dataset"]


def columns(total_epochs: int) -> list[str]:
    return ["id"] + [f"epoch_{e}" for e in range(1, total_epochs + 1)] + TAIL_COLUMNS


def workload_dir(results_dir: str | os.PathLike, dataset: str, model: str, heuristic: str, measure: str) -> Path:
    if heuristic == "none":
        return Path(results_dir, "Baselines")
    return Path(results_dir, f"{DATASET_NAMES[dataset]}-{MODEL_NAMES[model]}-{HEURISTIC_NAMES[heuristic]}-{measure.capitalize()}")


def csv_path(results_dir: str | os.PathLike, dataset: str, model: str, heuristic: str, measure: str,
             warmup_epochs: int, interval_epochs: int, total_epochs: int) -> Path:
    folder = workload_dir(results_dir, dataset, model, heuristic, measure)
    if heuristic == "none":
        return folder / f"{DATASET_SHORT[dataset]}-vanilla-{model}-total{total_epochs}.csv"
    return folder / f"W{warmup_epochs}-INT{interval_epochs}.csv"


def run_name(path: Path, seed: int) -> str:
    """A run is its result file and its seed."""
    return f"{path.stem}-seed{seed}"


def checkpoint_path(path: Path, seed: int) -> Path:
    """Where a run keeps its checkpoint (dpt.py --checkpoint-every), beside its CSV."""
    return path.parent / "checkpoints" / f"{run_name(path, seed)}.pt"


def has_row(path: Path, seed: int) -> bool:
    """Whether the CSV already holds the row of this seed's run (rows are identified by seed)."""
    if not path.is_file():
        return False
    with open(path, newline="") as f:
        return any(row.get("id") == str(seed) for row in csv.DictReader(f))


def check_appendable(path: Path, total_epochs: int) -> None:
    """Raise ValueError if `path` exists with a header other than this run's columns (a row of
    another length would corrupt it)."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, newline="") as f:
        header = next(csv.reader(f), [])
    if header != columns(total_epochs):
        epochs = sum(c.startswith("epoch_") for c in header)
        raise ValueError(f"{path} holds rows with another schema ({epochs} epoch columns, this run has "
                         f"{total_epochs}); pass another --results-dir")


def row(run_id: str | int, accuracies: list[float], warmup_epochs: int, interval_epochs: int,
        measure: str, heuristic: str, model: str, dataset: str) -> dict:
    """A result row. Accuracies in percent, rounded to 2 decimals as the paper's CSVs; best_epoch
    is the first 1-based epoch that reaches the best."""
    rounded = [round(a, 2) for a in accuracies]
    best = max(rounded)
    out = {"id": run_id}
    out.update({f"epoch_{e}": a for e, a in enumerate(rounded, start=1)})
    out.update(best_accuracy=best, best_epoch=rounded.index(best) + 1, warmup_epochs=warmup_epochs,
               interval_epochs=interval_epochs, measure=measure, heuristic=heuristic, model=model, dataset=dataset)
    return out


def append_row(path: Path, values: dict) -> None:
    """Append one row under an exclusive lock, writing the header first if the file is new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", newline="") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            f.seek(0, os.SEEK_END)
            writer = csv.DictWriter(f, fieldnames=list(values))
            if f.tell() == 0:
                writer.writeheader()
            else:
                check_appendable(path, sum(k.startswith("epoch_") for k in values))
            writer.writerow(values)
            f.flush()
            os.fsync(f.fileno())
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def write_json(path: Path, obj: dict) -> None:
    """Write through a temporary file and rename, so a reader never sees half a log."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def save_torch(path: Path, obj) -> None:
    """torch.save through a temporary file and rename: a run killed while saving leaves the
    previous checkpoint whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    torch.save(obj, tmp)
    os.replace(tmp, path)


def read_csvs(folder: str | os.PathLike) -> pd.DataFrame:
    """Every result CSV under `folder`, one row per run, with the workload folder and file name added."""
    frames = []
    for path in sorted(Path(folder).rglob("*.csv")):
        if path.parent.name == "logs":
            continue
        frame = pd.read_csv(path)
        if "best_accuracy" not in frame.columns:
            continue  # not a result file (e.g. the paper's reported tables)
        where = pd.DataFrame({"workload": path.parent.name, "file": path.stem}, index=frame.index)
        frames.append(pd.concat([frame, where], axis=1))
    if not frames:
        return pd.DataFrame(columns=["id", "best_accuracy", "workload", "file"])
    return pd.concat(frames, ignore_index=True)
