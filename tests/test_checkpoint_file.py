"""The checkpoint file and its checks, without training (the runs that write, kill and resume are
tests/test_checkpoint.py's): what is written reads back only whole, a damaged, foreign or other
version's file is refused naming the fix, a checkpoint of another run or other data is refused on
--resume, and a stopped run's last line says what it kept."""
import pytest
import torch

import checkpoint
import flags
import runlog
from checkpoint import CheckpointError
from test_runlog import LOG
from topology import Topology

TOP = Topology(rank=0, world=1, local_rank=0, launched=False, emulated=2, device=torch.device("cpu"), backend="gloo")
ARGV = ["--dataset", "cifar10", "--emulate-workers", "2", "--seed", "5"]
DATA = {"train": {"sha256": "a" * 64, "examples": 67, "source": "here"},
        "test": {"sha256": "b" * 64, "examples": 20, "source": "here"}}


def state(**change) -> dict:
    run = checkpoint.Run(window=1, epoch=3, log=runlog.RunLog.from_json(LOG), log_name="x.json")
    out = run.state({"loss": torch.zeros(67, 1)}) | {"args": vars(flags.parse_args(ARGV)), "num_workers": 2,
                                                      "launch": "emulated", "model": {}, "optimizer": {}, "rng": [],
                                                      "exchange": None, "provenance": {}, "data": DATA}
    return out | change


def test_what_is_written_reads_back(tmp_path):
    path = tmp_path / "run.pt"
    checkpoint.write(path, state())
    back = checkpoint.read(path)
    assert back["epoch"] == 3 and torch.equal(back["recorded"]["loss"], torch.zeros(67, 1))
    assert checkpoint.Run.from_state(back, None, torch.device("cpu")).log == runlog.RunLog.from_json(LOG)
    assert checkpoint.kept(path) == f"its checkpoint after epoch 3 is {path}; rerun with --resume to go on"


@pytest.mark.parametrize("damage,says", [
    (lambda raw: raw[:-1] + bytes([raw[-1] ^ 1]), "corrupt checkpoint"),
    (lambda raw: raw.split(b"\n", 1)[1], "is not a checkpoint of dpt.py"),
    (lambda raw: raw[: len(raw) // 2], "corrupt checkpoint"),
], ids=["a flipped bit", "no checksum line", "cut in half"])
def test_a_damaged_or_foreign_file_is_refused(tmp_path, damage, says):
    path = tmp_path / "run.pt"
    checkpoint.write(path, state())
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CheckpointError, match=says):
        checkpoint.read(path)
    assert checkpoint.kept(path).startswith("its checkpoint after epoch ? is")


def test_a_checkpoint_missing_what_this_version_keeps_is_refused(tmp_path):
    path = tmp_path / "run.pt"
    bare = state()
    del bare["history"]
    checkpoint.write(path, bare)
    with pytest.raises(CheckpointError, match=r"not a checkpoint of this dpt.py \(missing \['history'\]\)"):
        checkpoint.read(path)
    other = state()
    other["log"].pop("layout")
    checkpoint.write(path, other)
    with pytest.raises(CheckpointError, match="written by another version of dpt.py .*missing \\['layout'\\]"):
        checkpoint.read(path)


def test_another_runs_or_other_datas_checkpoint_is_refused_on_resume(tmp_path):
    path = tmp_path / "run.pt"
    checkpoint.write(path, state())
    args = flags.parse_args(ARGV)
    assert checkpoint.load(path, args, TOP, DATA)["epoch"] == 3
    with pytest.raises(CheckpointError, match="belongs to another run .*--lr 0.1 -> 0.05"):
        checkpoint.load(path, flags.parse_args([*ARGV, "--lr", "0.05"]), TOP, DATA)
    with pytest.raises(CheckpointError, match="workers 2 -> 4"):
        checkpoint.load(path, args, Topology(0, 1, 0, False, 4, torch.device("cpu"), "gloo"), DATA)
    other = {**DATA, "train": {**DATA["train"], "sha256": "c" * 64, "source": "there"}}
    with pytest.raises(CheckpointError, match="trained on other data .*here there, there here"):
        checkpoint.load(path, args, TOP, other)
    assert checkpoint.load(tmp_path / "none.pt", args, TOP, DATA) is None
    assert checkpoint.kept(tmp_path / "none.pt").startswith("no checkpoint was saved")
