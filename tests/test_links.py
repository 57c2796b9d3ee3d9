"""Nothing is written where it does not belong: on a shared results folder anyone who can write there
may plant a symbolic link where a run, a sweep or the report writes its own file (a lock, a row, a
manifest, a log, commands.txt, a figure), to aim the write at another user's file. Every such write is
refused in one line naming the link, and the file the link points to is left as it was; files and
folders are created with the user's umask and never writable by others."""
import os
import stat
import subprocess
import sys

import numpy as np
import pytest

import flags
import results
import test_report
from runs import REPO, TINY, run_expecting_error

VICTIM = "someone else's file\n"


def plant(link, tmp_path):
    """A link at `link` to a victim file; the victim's path."""
    victim = tmp_path / "victim.txt"
    victim.write_text(VICTIM)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(victim)
    return victim


def run_paths(tmp_path, root) -> tuple[list[str], dict]:
    argv = [*TINY, "--data-dir", str(root), "--results-dir", str(tmp_path / "res")]
    csv = results.csv_path(tmp_path / "res", flags.workload(flags.parse_args(argv), 1))
    lock = results.checkpoint_path(csv, flags.parse_args(argv).seed).with_suffix(".lock")
    return argv, {"the run's lock": lock, "the result file": csv, "its manifest": results.manifest_path(csv),
                  "its checkpoint": lock.with_suffix(".pt"), "a cut row's file": csv.with_name(csv.name + ".partial"),
                  "the logs folder": csv.parent / "logs", "the checkpoints folder": lock.parent}


@pytest.mark.parametrize("what", ["the run's lock", "the result file", "its manifest", "its checkpoint",
                                  "a cut row's file", "the logs folder", "the checkpoints folder"])
def test_a_run_refuses_a_link_where_it_writes(cifar10_dir, tmp_path, capsys, what):
    root, _ = cifar10_dir
    argv, paths = run_paths(tmp_path, root)
    victim = plant(paths[what], tmp_path)
    line = run_expecting_error(argv, capsys)
    assert f"{paths[what]} is a symbolic link" in line and "remove the link" in line
    assert victim.read_text() == VICTIM and paths[what].is_symlink()


WRITERS = {  # the file each writes, and how
    "append_row": ("W.csv", lambda d: results.append_row(d / "W.csv", {"id": 1, "best_accuracy": 2.0})),
    "write_bytes": ("log.json", lambda d: results.write_bytes(d / "log.json", b"{}")),
    "append_text": ("sweep.log", lambda d: results.append_text(d / "sweep.log", "x")),
    "claim": ("W.manifest.json", lambda d: results.claim(d / "W.csv", {"lr": 0.1})),
}


@pytest.mark.parametrize("writer", WRITERS)
def test_results_writers_never_follow_a_link(tmp_path, writer):
    """The primitives themselves, for a link planted after the up-front checks (O_NOFOLLOW)."""
    name, write = WRITERS[writer]
    victim = plant(tmp_path / "res" / name, tmp_path)
    with pytest.raises(results.LinkRefused, match=f"{name} is a symbolic link"):
        write(tmp_path / "res")
    assert victim.read_text() == VICTIM


def sweep(*argv):
    return subprocess.run(["bash", "run-experiments.sh", *argv], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("dangling", [False, True])
def test_a_sweep_never_writes_commands_through_a_link(tmp_path, dangling):
    link = tmp_path / "res" / "commands.txt"
    victim = plant(link, tmp_path)
    if dangling:
        victim.unlink()
    proc = sweep("--dry-run", "--table", "1", "--results-dir", str(tmp_path / "res"))
    assert proc.returncode == 2 and "commands.txt is a symbolic link" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert (not victim.exists()) if dangling else victim.read_text() == VICTIM


@pytest.mark.parametrize("command", [["report.py", "RUNS", "--paper", ""],
                                     ["iosim.py", "--examples", "400", "--heuristics", "stripes"]],
                         ids=["report", "simulator"])
def test_the_report_and_the_simulator_refuse_a_link_as_their_output(tmp_path, command):
    test_report.write_paper_style(tmp_path / "runs", 1, np.random.default_rng(0), n=3)
    command = [str(tmp_path / "runs") if c == "RUNS" else c for c in command]
    out = tmp_path / "out.txt"
    victim = plant(out, tmp_path)
    proc = subprocess.run([sys.executable, *command, "--out", str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    said = [line for line in proc.stderr.splitlines() if "warning:" not in line]
    assert proc.returncode == 2 and victim.read_text() == VICTIM
    assert len(said) == 1 and f"error: cannot write --out {out}" in said[0] and "is a symbolic link" in said[0], said


def test_what_the_project_creates_is_never_writable_by_others(tmp_path, cifar10_dir):
    old = os.umask(0)
    try:
        results.append_row(tmp_path / "a" / "W.csv", {"id": 1, "best_accuracy": 2.0})
        results.write_bytes(tmp_path / "a" / "b.json", b"{}")
        results.claim(tmp_path / "a" / "W.csv", {"lr": 0.1})
        results.append_text(tmp_path / "a" / "log.txt", "x")
        made = [p for p in tmp_path.joinpath("a").rglob("*")] + [tmp_path / "a"]
    finally:
        os.umask(old)
    assert made and all(not stat.S_IMODE(p.stat().st_mode) & 0o002 for p in made), \
        {str(p): oct(p.stat().st_mode) for p in made}
