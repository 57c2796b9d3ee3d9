"""Result files: the paper's schema and layout, appends that never glue or lose rows, atomic writes
that leave no temporaries for good, and where a result came from."""
import json
import os
import multiprocessing as mp
import subprocess
from dataclasses import replace

import pandas as pd
import pytest
import torch

import results
import workload
from runs import REPO
from workload import Workload

W20 = Workload("cifar10", "resnet18", "stripes", "variance", 5, 20, 5)


def make_row(seed: int, total: int = 5) -> dict:
    accuracies = [10.0 + seed + e + 0.004 for e in range(total)]
    accuracies[2] = 99.996  # the best, after rounding to 2 decimals: 100.0
    return results.row(seed, accuracies, Workload("cifar10", "resnet18", "stripes", "variance", total, 20, 5))


def test_row_rounds_and_picks_the_first_best_epoch():
    w = Workload("cifar100", "resnet34", "blocks", "average", 4, 2, 1)
    row = results.row(7, [50.123, 60.556, 60.554, 40.0], w)
    assert list(row) == results.columns(4)
    assert row["epoch_1"] == 50.12 and row["epoch_2"] == 60.56 and row["epoch_3"] == 60.55
    assert row["best_accuracy"] == 60.56 and row["best_epoch"] == 2
    assert (row["heuristic"], row["measure"], row["warmup_epochs"], row["interval_epochs"]) == (
        "steps",
        "average",
        2,
        1,
    )
    tie = results.row(7, [1.0, 3.0, 3.0], Workload("cifar10", "resnet18", "stripes", "variance", 3, 1, 1))
    assert tie["best_epoch"] == 2


def test_text_rows_hold_bits_per_byte_lower_is_better():
    row = results.row(3, [2.34567, 1.98766, 2.1], Workload("kjv", "gpt", "stripes", "variance", 3, 1, 1))
    assert list(row) == results.columns(3, "text") and "best_accuracy" not in row
    assert row["best_bits_per_byte"] == 1.9877 and row["best_epoch"] == 2 and row["epoch_1"] == 2.3457


def test_paths_follow_the_papers_layout(tmp_path):
    assert results.csv_path(tmp_path, Workload("cifar10", "resnet18", "stripes", "variance", 100, 20, 5)) == \
        tmp_path / "CIFAR10-ResNet18-Stripes-Variance" / "W20-INT5.csv"
    assert results.csv_path(tmp_path, Workload("cifar100", "resnet34", "blocks", "average", 100, 60, 30)) == \
        tmp_path / "CIFAR100-ResNet34-Blocks-Average" / "W60-INT30.csv"
    assert results.csv_path(tmp_path, Workload("cifar10", "resnet34", "none", "variance", 100, 100, 0, 0)) == \
        tmp_path / "Baselines" / "c10-vanilla-resnet34-total100.csv"
    # another E_ignore than the paper's 5 is part of the name: such runs never share a file with the paper's
    assert (
        results.csv_path(tmp_path, Workload("cifar10", "resnet18", "stripes", "variance", 100, 20, 5, 2)).name
        == "W20-INT5-IGN2.csv"
    )


def test_csv_round_trip_in_the_papers_schema(tmp_path):
    path = tmp_path / "W" / "W20-INT5.csv"
    for seed in (1, 2):
        results.append_row(path, make_row(seed))
    frame = pd.read_csv(path)
    assert list(frame.columns) == [
        "id",
        "epoch_1",
        "epoch_2",
        "epoch_3",
        "epoch_4",
        "epoch_5",
        "best_accuracy",
        "best_epoch",
        "warmup_epochs",
        "interval_epochs",
        "measure",
        "heuristic",
        "model",
        "dataset",
    ]
    assert frame.id.tolist() == [1, 2]  # appended, the first row kept
    assert frame.best_accuracy.tolist() == [100.0, 100.0] and frame.best_epoch.tolist() == [3, 3]
    assert frame.epoch_1.tolist() == [11.0, 12.0]
    assert b"\r" not in path.read_bytes()
    back, problems = results.read_csvs(tmp_path)
    assert len(back) == 2 and set(back.workload) == {"W"} and set(back.file) == {"W20-INT5"} and problems == []
    assert set(back.total_epochs) == {5} and set(back.ignore_epochs) == {5}


def test_a_file_of_another_schema_is_refused_not_extended(tmp_path):
    path = tmp_path / "W20-INT5.csv"
    results.append_row(path, make_row(1, total=5))
    before = path.read_text()
    with pytest.raises(ValueError, match="5 epoch columns"):
        results.check_appendable(path, results.columns(6))
    with pytest.raises(ValueError):
        results.append_row(path, make_row(2, total=6))
    assert path.read_text() == before


def test_a_last_line_without_newline_gets_one_before_the_row(tmp_path):
    path = tmp_path / "W20-INT5.csv"
    results.append_row(path, make_row(1))
    path.write_bytes(path.read_bytes().rstrip(b"\n"))  # e.g. saved by an editor that drops the final newline
    results.append_row(path, make_row(2))
    frame = pd.read_csv(path)
    assert frame.id.tolist() == [1, 2] and len(path.read_text().splitlines()) == 3


def _append_many(args):
    path, worker = args
    for k in range(10):
        results.append_row(path, make_row(worker * 100 + k, total=40))


def test_twenty_concurrent_writers_lose_and_garble_nothing(tmp_path):
    path = tmp_path / "shared.csv"
    with mp.get_context("fork").Pool(20) as pool:
        pool.map(_append_many, [(path, w) for w in range(20)])
    frame = pd.read_csv(path)
    assert sorted(frame.id) == sorted(w * 100 + k for w in range(20) for k in range(10))
    assert frame.notna().all().all() and len(path.read_text().splitlines()) == 1 + 200
    assert (frame.best_accuracy == frame[[f"epoch_{e}" for e in range(1, 41)]].max(axis=1)).all()
    assert (frame.epoch_40 == frame.id + 49.0).all()  # each row whole, its values its own


def test_json_is_written_whole(tmp_path):
    path = tmp_path / "logs" / "run.json"
    results.write_json(path, {"a": [1, 2]})
    results.write_json(path, {"a": [3]})
    assert json.loads(path.read_text()) == {"a": [3]}
    assert [p.name for p in path.parent.iterdir()] == ["run.json"]  # no temporary left behind


def test_a_stale_temporary_is_removed_by_the_next_save(tmp_path):
    path = tmp_path / "checkpoints" / "run.pt"
    path.parent.mkdir()
    (path.parent / f".{path.name}.abc123").write_bytes(b"half a checkpoint")  # a save killed midway
    (path.parent / ".other.pt.xyz").write_bytes(b"another run's")
    results.save_torch(path, {"x": torch.ones(2)})
    assert sorted(p.name for p in path.parent.iterdir()) == [".other.pt.xyz", "run.pt"]
    assert torch.equal(torch.load(path, weights_only=True)["x"], torch.ones(2))


def test_provenance_names_the_commit_and_packages():
    here = results.provenance()
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    assert here["git_commit"] == head and isinstance(here["git_dirty"], bool)
    assert here["packages"]["torch"] == torch.__version__.split("+")[0]


def test_a_dirty_tree_is_named_by_the_hash_of_its_changes(tmp_path):
    """Two results of one commit with different uncommitted changes say so (airbench keeps the source
    with every result; here its diff's SHA-256): results.py in a repository of its own."""
    import hashlib
    import importlib.util

    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "results.py").write_text((REPO / "results.py").read_text())
    (tmp_path / "train.py").write_text("lr = 0.1\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    spec = importlib.util.spec_from_file_location("results_elsewhere", tmp_path / "results.py")
    elsewhere = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(elsewhere)
    clean = elsewhere.provenance()
    assert clean["git_dirty"] is False and "git_diff_sha256" not in clean
    hashes = []
    for lr in ("0.2", "0.3"):
        (tmp_path / "train.py").write_text(f"lr = {lr}\n")
        diff = subprocess.run([*git, "diff", "HEAD", "--binary"], capture_output=True, check=True).stdout
        here = elsewhere.provenance()
        assert here["git_dirty"] is True and here["git_diff_sha256"] == hashlib.sha256(diff).hexdigest()
        hashes.append(here["git_diff_sha256"])
    assert hashes[0] != hashes[1] and here["git_commit"] == clean["git_commit"]


def test_a_tree_without_git_takes_its_commit_from_the_environment(monkeypatch):
    """A machine given a copy of the working tree without .git: DPT_GIT_COMMIT names the commit,
    and only where git cannot."""
    monkeypatch.setenv("DPT_GIT_COMMIT", "0123abc")
    assert results.provenance()["git_commit"] != "0123abc"  # inside git, git's answer
    not_a_repo = subprocess.CompletedProcess([], 128, "", "fatal: not a git repository")
    monkeypatch.setattr(results.subprocess, "run", lambda *a, **k: not_a_repo)
    assert results.provenance()["git_commit"] == "0123abc" and results.provenance()["git_dirty"] == "unknown"
    monkeypatch.delenv("DPT_GIT_COMMIT")
    assert results.provenance()["git_commit"] == "unknown"


def test_a_file_refuses_runs_set_otherwise_than_its_rows(tmp_path):
    """Only runs whose row is in the file count, and a vanilla row does not depend on the partitioning
    flags (one baseline file serves every study)."""
    import flags

    def logged(argv: list[str], seed: int, with_row: bool = True):
        args = flags.parse_args([*argv, "--seed", str(seed)])
        csv = results.csv_path(tmp_path, flags.workload(args, 1))
        if with_row:
            results.append_row(csv, results.row(seed, [50.0] * args.total_epochs, flags.workload(args, 1)))
        results.write_json(csv.parent / "logs" / f"{csv.stem}-seed{seed}-20261203-000000.json", {"args": vars(args)})
        return csv

    def clash(csv, argv: list[str]) -> str | None:
        args = flags.parse_args(argv)
        return results.settings_clash(csv, vars(args), flags.row_defining(args.heuristic))

    stripes = ["--total-epochs", "4", "--warmup-epochs", "2", "--interval-epochs", "1", "--ignore-epochs", "1"]
    csv = logged([*stripes, "--lr", "0.05"], 1)
    assert "--lr 0.05 there, 0.1 here" in clash(csv, stripes)
    assert clash(csv, [*stripes, "--lr", "0.05", "--seed", "2"]) is None
    unfinished = logged([*stripes, "--lr", "0.05", "--shuffle", "no"], 3, with_row=False)  # same file, no row
    assert unfinished == csv and clash(csv, [*stripes, "--lr", "0.05"]) is None
    vanilla = logged(["--heuristic", "none", "--total-epochs", "4", "--measure", "average"], 1)
    assert clash(vanilla, ["--heuristic", "none", "--total-epochs", "4"]) is None  # the measure: what it recorded
    assert "--batch-size" in clash(vanilla, ["--heuristic", "none", "--total-epochs", "4", "--batch-size", "64"])


def test_workers_are_part_of_a_files_name_and_the_paper_s_four_are_not_named(tmp_path):
    w = Workload("cifar10", "resnet18", "stripes", "variance", 100, 20, 5)
    assert results.csv_path(tmp_path, w).name == "W20-INT5.csv"
    assert results.csv_path(tmp_path, replace(w, workers=1)).name == "W20-INT5-N1.csv"
    baseline = Workload("cifar10", "resnet18", "none", "variance", 100, 100, 0, 0, workers=2)
    assert results.csv_path(tmp_path, baseline).name == "c10-vanilla-resnet18-total100-N2.csv"
    for stem in ("W20-INT5-N1", "W20-INT5-IGN2-Rexdyna-D1e-05-N16", "c10-vanilla-resnet18-total100-N2", "W20-INT5"):
        assert results.RESULT_NAME.match(stem + ".csv")
    assert workload.from_csv_name("W20-INT5-IGN2-Rexdyna-D1e-05-N16") == {
        "ignore_epochs": 2, "reducer": "exdyna", "density": 1e-05, "workers": 16}
    assert workload.from_csv_name("W20-INT5")["workers"] == 4


def claim_in_another_process(args):
    path, lr, barrier = args
    barrier.wait()  # both at once
    return results.claim(path, {"lr": lr, "workers": 4})


def test_two_runs_started_together_with_other_settings_cannot_both_claim_a_file(tmp_path):
    """The manifest is written under a lock when a file's first run starts: of two runs that start at
    the same moment with another --lr, one claims the file and the other is told why not."""
    path = tmp_path / "W20-INT5.csv"
    with mp.get_context("fork").Manager() as manager:
        barrier = manager.Barrier(2)
        with mp.get_context("fork").Pool(2) as pool:
            outcomes = pool.map(claim_in_another_process, [(path, 0.1, barrier), (path, 0.05, barrier)])
    assert sorted(o is None for o in outcomes) == [False, True]
    (refusal,) = [o for o in outcomes if o]
    assert "--lr" in refusal and "W20-INT5.manifest.json" in refusal
    settings = json.loads(results.manifest_path(path).read_text())["settings"]
    assert results.claim(path, settings) is None  # the same settings: welcome, with or without rows
    assert "workers 4 there, 1 here" in results.claim(path, {**settings, "workers": 1})


def test_a_manifest_from_before_a_setting_was_recorded_gains_it_once(tmp_path):
    """An older manifest without the data's identity: the next run that records it adds it (keeping
    what was there), so a later run on other data is refused rather than pooled."""
    path = tmp_path / "W20-INT5.csv"
    old = {"settings": {"lr": 0.1, "workers": 4}, "created": "2026-01-01 00:00:00"}
    results.manifest_path(path).write_text(json.dumps(old))
    data = {"train": "a" * 64, "test": "b" * 64}
    assert results.claim(path, {"lr": 0.1, "workers": 4, "data": data}) is None
    now = json.loads(results.manifest_path(path).read_text())
    assert now == {**old, "settings": {"lr": 0.1, "workers": 4, "data": data}}
    other = {"train": "c" * 64, "test": "b" * 64}
    assert "the data (training examples' sha256 aaaaaaaaaaaa there, cccccccccccc here)" in \
        results.claim(path, {"lr": 0.1, "workers": 4, "data": other})
    assert results.claim(path, {"lr": 0.1, "workers": 4}, write=False) is None  # asked only: nothing written
    assert json.loads(results.manifest_path(path).read_text()) == now


@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB tmpfs of its own (CI runs as root, which may mount one): a disk that really fills."""
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if proc.returncode:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must mount a small tmpfs for the full-disk test (runs as root): {proc.stderr.strip()}")
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()}); CI runs this as root")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_row_on_a_disk_that_fills_is_whole_or_absent_and_the_run_can_append_again(small_disk):
    path = small_disk / "W20-INT5.csv"
    line = len(",".join(map(str, make_row(1).values()))) + 1
    seed = 1
    while seed == 1 or 4096 - path.stat().st_size % 4096 >= line:  # the file's last page too full for a row
        results.append_row(path, make_row(seed))
        seed += 1
    whole, ids = path.read_bytes(), results.row_ids(path)
    filler = small_disk / "filler"
    with open(filler, "wb", buffering=0) as f:  # the disk full, to its last byte
        try:
            while True:
                f.write(b"x" * 512)
        except OSError:
            pass
        for size in (256, 64, 16, 4, 1):
            try:
                while f.write(b"x" * size):
                    pass
            except OSError:
                pass
    with pytest.raises(OSError):
        results.append_row(path, make_row(seed))
    assert path.read_bytes() == whole and results.row_ids(path) == ids  # no cut line: the file as it was
    filler.unlink()
    results.append_row(path, make_row(seed))
    assert results.row_ids(path) == ids | {str(seed)} and path.read_bytes().startswith(whole)


def test_a_row_already_there_is_never_appended_twice(tmp_path):
    """Checked again under the lock: a second run of one seed that finishes last adds nothing."""
    path = tmp_path / "W20-INT5.csv"
    results.append_row(path, make_row(1))
    whole = path.read_bytes()
    with pytest.raises(results.RowExists, match="holds the row of id 1 already"):
        results.append_row(path, make_row(1))
    assert path.read_bytes() == whole


def test_a_cut_last_line_is_not_a_row_and_is_set_aside_when_the_next_row_comes(tmp_path, capsys):
    path = tmp_path / "W20-INT5.csv"
    results.append_row(path, make_row(1))
    line = ",".join(str(v) for v in make_row(2).values())
    with open(path, "a") as f:
        f.write(line[: len(line) // 2])  # what a crash mid-write leaves: 6 of its 12 fields
    assert results.row_ids(path) == {"1"} and not results.has_row(path, 2)  # seed 2 may run again
    results.append_row(path, make_row(2))
    assert "ended in a cut line" in capsys.readouterr().err
    assert results.row_ids(path) == {"1", "2"} and len(pd.read_csv(path)) == 2
    assert path.with_name(path.name + ".partial").read_text() == line[: len(line) // 2] + "\n"


def test_hand_edits_neither_let_a_seed_run_twice_nor_pass_in_silence(tmp_path):
    """A spreadsheet writes 17611.0 for 17611, a byte-order mark first, and nan where a value is missing."""
    path = tmp_path / "CIFAR10-ResNet18-Stripes-Variance" / "W20-INT5.csv"
    for seed in (17611, 74606, 8271):
        results.append_row(path, make_row(seed))
    lines = path.read_text().splitlines()
    lines[1] = lines[1].replace("17611", "17611.0", 1)
    lines[3] = ",".join(v if i != len(results.columns(5)) - 8 else "nan" for i, v in enumerate(lines[3].split(",")))
    path.write_text("\ufeff" + "\n".join(lines) + "\n")
    assert results.has_row(path, 17611)  # the same seed must not train and append again
    results.check_appendable(path, results.columns(5))  # the byte-order mark is no other schema
    runs, problems = results.read_csvs(tmp_path)
    assert sorted(runs.id) == ["17611", "74606"]
    assert any("best_accuracy is nan" in p for p in problems) and any("byte-order mark" in p for p in problems)


def test_the_fast_reader_and_the_row_by_row_reader_agree_on_random_files(tmp_path):
    """results._parse_fast (pandas' C reader) against _parse_rows (each row checked), on random rows
    of every kind of value the schema holds; and a damaged file goes row by row, saying why."""
    import numpy as np

    rng = np.random.default_rng(0)
    for trial in range(5):
        w = workload.Workload("cifar10", "resnet18", "stripes", "variance", int(rng.integers(1, 30)), 1, 1, 0)
        path = tmp_path / f"t{trial}" / "W1-INT1-IGN0.csv"
        for seed in rng.choice(10**9, size=int(rng.integers(1, 40)), replace=False):
            results.append_row(path, results.row(int(seed), list(rng.uniform(0, 100, w.total_epochs)), w))
        text = path.read_text()
        header = text.splitlines()[0].split(",")
        epochs = [c for c in header if c.startswith("epoch_")]
        fast = results._parse_fast(text, header, epochs, "best_accuracy")
        slow, skipped = results._parse_rows(text, header, epochs, "best_accuracy")
        assert fast is not None and skipped == []
        pd.testing.assert_frame_equal(fast, slow)
    damaged = text.replace(text.splitlines()[1], text.splitlines()[1].replace(",", ",x", 1), 1)
    assert results._parse_fast(damaged, header, epochs, "best_accuracy") is None
    path.write_text(damaged)
    frame, skipped = results._read_one(path)
    assert len(skipped) == 1 and skipped[0].startswith("line 2:") and len(frame) == len(text.splitlines()) - 2
