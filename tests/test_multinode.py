"""Multi-node torchrun on this machine as two "nodes": two torchrun launchers with --nnodes 2 and a
c10d rendezvous on 127.0.0.1, one gloo rank each. The row equals a one-node run of the same world
size; a node killed mid-run ends the other in bounded time; both resume from the checkpoint to the
uninterrupted row. The README's two-node command, by hand."""
import os
import signal
import socket
import subprocess
import sys
import time

import pandas as pd
import pytest

import fakedata
from runs import ENV, REPO, launch

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node(argv: list[str], port: int, run_id: str, log) -> subprocess.Popen:
    """One node's torchrun: 1 rank, rendezvous with the other at 127.0.0.1:port."""
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
                             "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}", f"--rdzv_id={run_id}",
                             "dpt.py", *argv], cwd=REPO, env=ENV, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def two_nodes(argv: list[str], tmp_path, name: str, timeout: float = 600) -> list[int]:
    port = free_port()
    logs = [open(tmp_path / f"{name}-node{k}.log", "w") for k in range(2)]
    nodes = [node(argv, port, name, log) for log in logs]
    return [n.wait(timeout=timeout) for n in nodes]


def row(folder) -> dict:
    csv = next(folder.rglob("W*.csv"))
    frame = pd.read_csv(csv)
    assert len(frame) == 1
    return frame.iloc[0].to_dict()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    fakedata.write_cifar10(root, n_train=200, n_test=40)
    return root


def argv(data, results, epochs: int = 4) -> list[str]:
    return ["--dataset", "cifar10", "--data-dir", str(data), "--total-epochs", str(epochs), "--warmup-epochs", "2",
            "--interval-epochs", "1", "--ignore-epochs", "0", "--batch-size", "20", "--checkpoint-every", "1",
            "--results-dir", str(results), "--timeout", "60"]


def test_two_nodes_write_the_row_of_one_node_with_as_many_ranks(data, tmp_path):
    launch(argv(data, tmp_path / "one"), nproc=2)
    assert two_nodes(argv(data, tmp_path / "two"), tmp_path, "two") == [0, 0]
    assert row(tmp_path / "two") == row(tmp_path / "one")
    printed = (tmp_path / "two-node0.log").read_text() + (tmp_path / "two-node1.log").read_text()
    assert "2 workers (2 processes x 1)" in printed  # rank 0 of the two nodes speaks, once
    assert printed.count("row appended to") == 1


def test_a_killed_node_ends_the_other_and_both_resume_to_the_same_row(data, tmp_path):
    launch(argv(data, tmp_path / "whole", epochs=5), nproc=2)
    port = free_port()
    logs = [tmp_path / f"node{k}.log" for k in range(2)]
    nodes = [node(argv(data, tmp_path / "cut", epochs=5), port, "cut", open(log, "w")) for log in logs]
    deadline = time.time() + 300
    while "epoch   2/" not in logs[0].read_text() and "epoch   2/" not in logs[1].read_text():
        assert time.time() < deadline and all(n.poll() is None for n in nodes)
        time.sleep(0.2)
    killed = 1 if "epoch   2/" in logs[0].read_text() else 0  # the node without rank 0's prints
    os.killpg(nodes[killed].pid, signal.SIGKILL)  # the whole node: its torchrun and its rank
    start = time.time()
    survivor = nodes[1 - killed].wait(timeout=180)
    assert survivor != 0 and time.time() - start < 180  # bounded: the lost peer is noticed, not waited for
    assert not list((tmp_path / "cut").rglob("W*.csv"))  # no row from a broken run
    assert list((tmp_path / "cut").rglob("checkpoints/*.pt"))
    resumed = two_nodes(argv(data, tmp_path / "cut", epochs=5) + ["--resume"], tmp_path, "resumed")
    assert resumed == [0, 0]
    printed = "".join((tmp_path / f"resumed-node{k}.log").read_text() for k in range(2))
    assert "resuming after epoch" in printed
    assert row(tmp_path / "cut") == row(tmp_path / "whole")
