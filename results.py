"""Result files: one CSV row per run in the paper's schema, a JSON log per run, checkpoints, and where
a result came from (provenance).

dpt.py appends its row with `append_row` and writes its log with `write_json`; any folder of CSVs in
this schema (ours, or the paper's own PaperCSVs) reads back with `read_csvs`:

    python -c "import results; runs, problems = results.read_csvs('results'); \
print(runs.groupby(['workload', 'file']).best_accuracy.agg(['mean', 'std']))"

Layout, as the paper's PaperCSVs (names from workload.Workload):
    <results-dir>/<Dataset>-<Model>-<Heuristic>-<Measure>/W<W>-INT<I>.csv     importance-aware runs
    <results-dir>/Baselines/<c10|c100|fmnist>-vanilla-<model>-total<T>.csv     vanilla runs
    <results-dir>/<workload folder>/logs/<run>-<time>.json                    one per run
    <results-dir>/<workload folder>/checkpoints/<run>.pt (and <run>.lock)     while a run goes
Each task's rows hold its metric (catalog.TASKS): image rows test accuracy (%, 2 decimals, best =
max), text rows held-out bits per byte (4 decimals, best = min) in the same columns, with
`best_bits_per_byte` for `best_accuracy`.
Rows are appended whole under a POSIX record lock, never rewritten, so concurrent runs (on one
node, or array tasks on shared storage) may share a file; its manifest (<file>.manifest.json)
holds the settings all its runs share.
"""
import csv
import errno
import fcntl
import hashlib
import importlib.metadata
import io
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

import catalog as C
from workload import Workload, from_csv_name

TAIL_COLUMNS = ["best_epoch", "warmup_epochs", "interval_epochs", "measure", "heuristic", "model", "dataset"]
RESULT_NAME = re.compile(r"^(W\d+-INT\d+(-IGN\d+)?(-R[a-z-]+-D[0-9.e+-]+)?(-N\d+)?|[a-z0-9]+-vanilla-.+)\.csv$")


def columns(total_epochs: int, task: str = "image") -> list[str]:
    return ["id"] + [f"epoch_{e}" for e in range(1, total_epochs + 1)] + [C.TASKS[task].column] + TAIL_COLUMNS


def csv_path(results_dir: str | os.PathLike, workload: Workload) -> Path:
    return Path(results_dir, workload.folder, workload.csv_name)


def run_name(path: Path, seed: int) -> str:
    """A run is its result file and its seed."""
    return f"{path.stem}-seed{seed}"


def checkpoint_path(path: Path, seed: int) -> Path:
    """Where a run keeps its checkpoint (dpt.py --checkpoint-every), beside its CSV."""
    return path.parent / "checkpoints" / f"{run_name(path, seed)}.pt"


def normal_id(value: str) -> str:
    """A row's id as the seed it names: '17611.0' (a spreadsheet's rewrite) is run 17611."""
    try:
        number = float(value)
    except ValueError:
        return value.strip()
    return str(int(number)) if number.is_integer() else value.strip()


def lines(raw: bytes) -> tuple[list[list[str]], bytes]:
    """A result file's records (its header first) and what follows its last newline: a partial last
    line, or b"" (a file that ends with its newline). A UTF-8 byte-order mark is dropped."""
    text = raw.decode("utf-8", errors="replace").removeprefix("\ufeff")
    body, _, tail = text.rpartition("\n") if "\n" in text else ("", "", text)
    return list(csv.reader(body.splitlines())), tail.encode()


def row_ids(path: Path) -> set[str]:
    """The ids (seeds) of the whole rows the CSV holds (a cut last line is not a row); none if it does
    not exist."""
    if not path.is_file():
        return set()
    records, tail = lines(path.read_bytes())
    if tail and records and len(next(csv.reader([tail.decode(errors="replace")]), [])) == len(records[0]):
        records.append(next(csv.reader([tail.decode(errors="replace")])))  # whole, only its newline missing
    width = len(records[0]) if records else 0
    return {normal_id(r[0]) for r in records[1:] if len(r) == width and r}


def has_row(path: Path, seed: int) -> bool:
    """Whether the CSV already holds the row of this seed's run (rows are identified by seed)."""
    return str(seed) in row_ids(path)


def check_appendable(path: Path, header: list[str]) -> None:
    """Raise ValueError if `path` exists with a header other than this run's columns (a row of
    another length would corrupt it)."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    records, tail = lines(path.read_bytes())
    found = records[0] if records else next(csv.reader([tail.decode(errors="replace")]), [])
    if found != header:
        epochs = sum(c.startswith("epoch_") for c in found)
        raise ValueError(
            f"{path} holds rows with another schema ({epochs} epoch columns and {found[epochs + 1 : epochs + 2]}, "
            f"this run has {sum(c.startswith('epoch_') for c in header)} and {header[-8:-7]}); "
            "pass another --results-dir"
        )


def manifest_path(path: Path) -> Path:
    """Beside each result file, the settings its runs share (written when its first run starts)."""
    return path.with_name(f"{path.stem}.manifest.json")


def claim(path: Path, settings: dict, write: bool = True) -> str | None:
    """How the result file's manifest differs from this run's `settings` (its run-defining flags but
    the seed, and its workers), or None. The first run of a file writes the manifest (`write`), under
    a POSIX record lock on it (fcntl, which NFS clients forward to the server), so two runs started
    together with other settings cannot both pass. A file from before manifests is checked against
    its runs' logs instead (settings_clash)."""
    manifest = manifest_path(path)
    if not write and not manifest.is_file():
        return settings_clash(path, settings, list(settings))
    folder(manifest.parent)
    with os.fdopen(open_file(manifest, os.O_RDWR | os.O_CREAT | os.O_APPEND), "a+") as f:
        fcntl.lockf(f, fcntl.LOCK_EX)
        f.seek(0)
        text = f.read()
        if text:
            try:
                theirs = json.loads(text)["settings"]
            except (json.JSONDecodeError, KeyError, TypeError):
                return f"its manifest {manifest} is damaged; delete it if no run of that file is left"
            differ = [k for k in settings if k in theirs and theirs[k] != settings[k]]
            if differ:
                said = "; ".join(f"the data (training examples' sha256 {theirs[k]['train'][:12]} there, "
                                 f"{settings[k]['train'][:12]} here)" if k == "data" else
                                 f"{_flag(k)} {theirs[k]} there, {settings[k]} here" for k in differ[:3])
                return f"{said} (its manifest {manifest.name})"
            if write and settings.keys() - theirs.keys():  # a manifest from before a setting was recorded: add it
                f.seek(0)
                f.truncate()
                manifest_record = json.loads(text) | {"settings": theirs | settings}
                f.write(json.dumps(manifest_record, indent=1) + "\n")
                f.flush()
                os.fsync(f.fileno())
            return None
        clash = settings_clash(path, settings, list(settings))
        if clash or not write:
            return clash
        f.write(json.dumps({"settings": settings, "created": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=1) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return None


def _flag(dest: str) -> str:
    return dest if dest == "workers" else f"--{dest.replace('_', '-')}"


def settings_clash(path: Path, args: dict, defining: list[str]) -> str | None:
    """How the runs whose rows are in `path` were set otherwise than `args` in the flags `defining`
    (read from their JSON logs beside it), or None: rows of one file must differ in their seed only, or
    the report would pool different experiments into one cell. Logs whose row is gone do not count."""
    ids = row_ids(path)
    for log_path in sorted(path.parent.glob(f"logs/{path.stem}-seed*.json")) if ids else []:
        try:
            theirs = json.loads(log_path.read_text()).get("args", {})
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            continue
        if not isinstance(theirs.get("seed"), int) or str(theirs["seed"]) not in ids:
            continue
        differ = [k for k in defining if k != "seed" and k in theirs and theirs[k] != args.get(k)]
        if differ:
            said = "; ".join(f"{_flag(k)} {theirs[k]} there, {args.get(k)} here" for k in differ[:3])
            return f"{said} (log {log_path.name})"
    return None


def row(run_id: str | int, values: list[float], workload: Workload) -> dict:
    """A result row: the metric after every epoch, rounded as the paper's CSVs (accuracy: 2
    decimals), its best and the first 1-based epoch reaching it, the schedule and names."""
    task = C.TASKS[workload.task]
    rounded = [round(v, task.decimals) for v in values]
    best = max(rounded) if task.higher_is_better else min(rounded)
    out = {"id": run_id, **{f"epoch_{e}": v for e, v in enumerate(rounded, start=1)}, task.column: best}
    out.update(best_epoch=rounded.index(best) + 1, warmup_epochs=workload.warmup_epochs,
               interval_epochs=workload.interval_epochs, measure=workload.measure,
               heuristic=C.HEURISTICS[workload.heuristic].paper, model=workload.model, dataset=workload.dataset)
    assert list(out) == columns(len(values), workload.task)
    return out


class LinkRefused(OSError):
    """A path the project would write where a symbolic link stands: refused, never followed."""


FILE_MODE, FOLDER_MODE = 0o664, 0o775  # with the user's umask, and never writable by others (& ~0o002)


def refuse_link(path: Path) -> None:
    """On a shared results folder anyone may plant a link where a run writes (its lock, its row, its
    log) to aim the write at another user's file: the project writes through no link it did not make."""
    if Path(path).is_symlink():
        raise LinkRefused(f"{path} is a symbolic link (to {os.readlink(path)}), where this project writes a file "
                          "of its own; it never writes through one: remove the link (or pass another folder)")


def folder(path: Path, own: bool = False) -> Path:
    """`path` created as a folder (parents too; never writable by others). `own`: a folder the project
    names itself (a workload's, its logs/ and checkpoints/), refused when a link stands there (a
    results folder the user names may well be a link to scratch space)."""
    path = Path(path)
    if own:
        refuse_link(path)
    path.mkdir(parents=True, exist_ok=True, mode=FOLDER_MODE & ~0o002)
    return path


def open_file(path: Path, flags: int) -> int:
    """os.open of a file of the project's own, never through a link (O_NOFOLLOW: a link planted
    between a check and the open is refused too), created FILE_MODE & ~umask, never world-writable."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE & ~0o002)
    except OSError as err:
        if err.errno == errno.ELOOP:
            refuse_link(path)
        raise


def append_text(path: Path, text: str) -> None:
    """Append `text` to a file of the project's own (a sweep's log, its failures), never through a link."""
    fd = open_file(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    with os.fdopen(fd, "a") as f:
        f.write(text)


class RowExists(ValueError):
    """The file holds this run's row already (a second run of the seed finished first, a hand edit)."""


def append_row(path: Path, values: dict) -> None:
    """Append one row whole or not at all, under a POSIX record lock (fcntl; NFS clients forward it to
    the server), writing the header first if the file is new. Under the lock the file is read again:
    a row of this id that appeared while the run trained is RowExists (never two rows of one run). A
    last line without its newline is kept when it is a whole row (an editor's doing) and gets the
    newline first; a cut one (a disk that filled, a crash mid-write) is moved to <file>.partial with a
    warning, so it never passes for a finished run. The row is one write of its bytes on the file's
    descriptor (no buffer to flush later), and a write that fails or falls short (a full disk) is cut
    back by the descriptor to what the file held: OSError, no half row."""
    folder(path.parent)
    fd = open_file(path, os.O_RDWR | os.O_CREAT | os.O_APPEND)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX)
        raw = b"".join(iter(lambda: os.read(fd, 1 << 20), b""))
        records, tail = lines(raw)
        if raw:
            header = records[0] if records else next(csv.reader([tail.decode(errors="replace")]), [])
            if header != list(values):
                raise ValueError(f"{path} holds rows with another schema ({len(header)} columns, this row has "
                                 f"{len(values)}); pass another --results-dir")
            if normal_id(str(values["id"])) in {normal_id(r[0]) for r in records[1:] if r}:
                raise RowExists(f"{path} holds the row of id {values['id']} already (another run of it finished "
                                "first, or an edit); this run's row was not added")
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        whole = len(raw)
        if tail:
            whole = len(raw) - len(tail)
            if records and len(next(csv.reader([tail.decode(errors="replace")]), [])) == len(records[0]):
                buffer.write("\n")  # a whole last row: only its newline was missing
                whole = len(raw)
            else:
                aside = open_file(path.with_name(path.name + ".partial"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
                try:
                    os.write(aside, tail + b"\n")
                finally:
                    os.close(aside)
                print(f"results: warning: {path} ended in a cut line ({len(tail)} bytes); moved it to "
                      f"{path.name}.partial", file=sys.stderr)
                os.ftruncate(fd, whole)
        if whole == 0:
            writer.writerow(values)  # the header
        writer.writerow(values.values())
        data = buffer.getvalue().encode()
        try:
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(errno.ENOSPC, f"{path}: {written} of the row's {len(data)} bytes written")
            os.fsync(fd)
        except OSError:
            os.ftruncate(fd, whole)
            raise
    finally:
        os.close(fd)


def clean_temporaries(path: Path) -> None:
    """Remove what a write of `path` killed midway left behind (its own temporaries only)."""
    for stale in path.parent.glob(f".{path.name}.*"):
        stale.unlink(missing_ok=True)


def write_bytes(path: Path, data: bytes) -> None:
    """Write through a temporary file and rename, so a reader never sees half a file and a write killed
    midway leaves the previous one whole (its temporary is removed by the next write, or by
    `clean_temporaries`). The file gets the permissions the umask gives the CSVs (mkstemp's are 0600)."""
    folder(path.parent)
    refuse_link(path)  # a rename would not follow it, but a link where our file goes is someone's doing
    clean_temporaries(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE & ~UMASK & ~0o002)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


UMASK = os.umask(0o022)
os.umask(UMASK)  # read once: os.umask can only be read by setting it


def write_json(path: Path, obj: dict) -> None:
    write_bytes(path, json.dumps(obj, indent=1).encode())


def save_torch(path: Path, obj) -> None:
    """torch.save, written as write_bytes writes (atomically, the CSVs' permissions)."""
    import torch  # results.py is read by report.py and sweep.py, which need no torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes(path, buffer.getvalue())


def provenance() -> dict:
    """Where a result came from: the code's git commit (and whether the tree had uncommitted changes,
    with the SHA-256 of those changes, `git diff HEAD`, so that two results of one dirty commit say
    whether they ran the same code; outside git, DPT_GIT_COMMIT if set, for a copy of the tree that
    travelled without its .git, else "unknown"), Python and the packages that change numbers."""
    repo = Path(__file__).resolve().parent
    commit, dirty, diff = "unknown", "unknown", None
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        changes = subprocess.run(["git", "-C", str(repo), "diff", "HEAD", "--binary"], capture_output=True, timeout=30)
        if head.returncode == 0 and changes.returncode == 0:
            commit, dirty = head.stdout.strip(), bool(changes.stdout)
            diff = hashlib.sha256(changes.stdout).hexdigest() if dirty else None
    except (OSError, subprocess.SubprocessError):
        pass
    if commit == "unknown":
        commit = os.environ.get("DPT_GIT_COMMIT", commit)
    packages = {}
    for name in ("torch", "torchvision", "numpy", "pandas", "litdata", "wandb"):
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return {"git_commit": commit, "git_dirty": dirty, **({"git_diff_sha256": diff} if diff else {}),
            "python": platform.python_version(), "packages": packages}


def read_csvs(folder: str | os.PathLike) -> tuple[pd.DataFrame, list[str]]:
    """Every result CSV under `folder` (named as the layout names them), one row per run, with the
    workload folder, file name, T (its epoch columns) and E_ignore (its name) added; and one line per
    problem: a file that cannot be read is skipped whole, a row that does not parse is skipped alone,
    each said, never dropped silently. Other CSVs (e.g. the paper's reported tables) are not results."""
    frames, problems = [], []
    for path in sorted(Path(folder).rglob("*.csv")):
        if path.parent.name in ("logs", "checkpoints") or not RESULT_NAME.match(path.name):
            continue
        if not path.is_file():  # a folder, or a pipe (which would block the read for ever)
            problems.append(f"{path}: named like a result file but not a regular file; skipped")
            continue
        frame, skipped = _read_one(path)
        if isinstance(frame, str):
            problems.append(f"{path}: {frame}; skipped")
            continue
        if skipped:
            problems.append(f"{path}: {len(frame)} rows read, {len(skipped)} skipped ({'; '.join(skipped[:3])})")
        if frame.attrs.get("bom"):
            problems.append(f"{path}: starts with a UTF-8 byte-order mark (a spreadsheet's save); read without it")
        if frame.empty:
            problems.append(f"{path}: a header and no whole row (a run that has not finished, or a cut file); "
                            "skipped")
            continue
        frame["workload"], frame["file"], frame["path"] = path.parent.name, path.stem, str(path)
        named = from_csv_name(path.stem)
        frame["ignore_epochs"] = named["ignore_epochs"]
        frame["exchange"] = "none" if named["reducer"] == "none" else f"{named['reducer']}@{named['density']:g}"
        frame["workers"] = named["workers"]
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=["id", "best_accuracy", "workload", "file", "total_epochs"]), problems
    return pd.concat(frames, ignore_index=True), problems


def _read_one(path: Path) -> tuple[pd.DataFrame | str, list[str]]:
    """One result file: (rows, why rows were skipped), or (what is wrong with the file, []). A file whose
    every line is a well-formed row is parsed by pandas' C reader, the epochs as float32 (a 200 MB file in
    seconds); any other goes row by row (_parse_rows), which says what it skips and why."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        return "not a text file (binary?)", []
    if "\x00" in text:
        return "not a text file (NUL bytes)", []
    bom = text.startswith("\ufeff")
    text = text.removeprefix("\ufeff")
    header = next(csv.reader([text.partition("\n")[0].rstrip("\r")]), [])
    if not header:
        return "empty (zero bytes)", []
    metric = [c for c in header if c in (t.column for t in C.TASKS.values())]
    epochs = [c for c in header if c.startswith("epoch_")]
    if header[:1] != ["id"] or len(metric) != 1 or header != ["id", *epochs, metric[0], *TAIL_COLUMNS] \
            or epochs != [f"epoch_{e}" for e in range(1, len(epochs) + 1)]:
        return (
            "header is not the paper's schema (id, epoch_1..epoch_T, best_*, best_epoch, warmup_epochs, "
            "interval_epochs, measure, heuristic, model, dataset)",
            [],
        )
    frame = _parse_fast(text, header, epochs, metric[0])
    skipped = []
    if frame is None:
        frame, skipped = _parse_rows(text, header, epochs, metric[0])
    frame["total_epochs"] = len(epochs)
    frame.attrs["bom"] = bom
    return frame, skipped


def _parse_fast(text: str, header: list[str], epochs: list[str], metric: str) -> pd.DataFrame | None:
    """The rows of a file that holds nothing but whole, well-formed rows (None otherwise: _parse_rows
    reads it and says what is wrong)."""
    body = text.split("\n", 1)[1] if "\n" in text else ""
    fields = len(header) - 1
    if any(line.count(",") != fields for line in body.splitlines() if line) or '"' in body:
        return None
    numbers = {c: "float32" for c in epochs} | {metric: "float64", "best_epoch": "float64",
                                                 "warmup_epochs": "float64", "interval_epochs": "float64"}
    try:
        frame = pd.read_csv(io.StringIO(text), dtype={"id": str, **numbers, **{c: str for c in TAIL_COLUMNS[3:]}},
                            keep_default_na=False, na_values={c: [""] for c in epochs})
    except (ValueError, pd.errors.ParserError):
        return None
    integral = frame[["best_epoch", "warmup_epochs", "interval_epochs"]]
    if not np.isfinite(frame[metric]).all() or integral.isna().any().any() or (integral % 1 != 0).any().any():
        return None
    frame["id"] = frame["id"].map(normal_id)
    for column in ("best_epoch", "warmup_epochs", "interval_epochs"):
        frame[column] = frame[column].astype(int)
    return frame[["id", *epochs, metric, *TAIL_COLUMNS]].copy()  # one block: the columns added later stay cheap


def _parse_rows(text: str, header: list[str], epochs: list[str], metric: str) -> tuple[pd.DataFrame, list[str]]:
    """Row by row, each checked: the rows that parse, and a line per row skipped (why)."""
    records = list(csv.reader(text.splitlines()))
    metric = [metric]
    good, skipped = [], []
    for line, record in enumerate(records[1:], start=2):
        if not record:
            continue
        if len(record) != len(header):
            skipped.append(f"line {line}: {len(record)} fields, expected {len(header)}")
            continue
        try:
            values = dict(zip(header, record))
            parsed = {
                "id": normal_id(values["id"]),
                metric[0]: float(values[metric[0]]),
                "best_epoch": int(float(values["best_epoch"])),
                "warmup_epochs": int(float(values["warmup_epochs"])),
                "interval_epochs": int(float(values["interval_epochs"])),
            }
            parsed.update({c: (float(values[c]) if values[c] != "" else float("nan")) for c in epochs})
        except ValueError as err:
            skipped.append(f"line {line}: {err}")
            continue
        if not math.isfinite(parsed[metric[0]]):
            skipped.append(f"line {line}: {metric[0]} is {values[metric[0]]}")
            continue
        parsed.update({c: values[c] for c in ("measure", "heuristic", "model", "dataset")})
        good.append(parsed)
    frame = pd.DataFrame(good, columns=["id", *epochs, metric[0], *TAIL_COLUMNS])
    return frame.astype({c: "float32" for c in epochs}), skipped  # as _parse_fast reads them
