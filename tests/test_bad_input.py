"""Every bad input dpt.py refuses: one row per case, (flags, a fragment of the expected one-line
message). Each runs main() in-process as torchrun's rank 0 would, with traps that fail the test if a
process group starts or a model is built: validation reads files and probes folders, nothing more.
A new flag comes with its row here."""
import gzip
import os
import subprocess
import sys

import pytest
import torch

import dpt
import fakedata
import models
import results
import tasks
import topology
from runs import ENV, REPO, TINY, run_expecting_error


def tiny(data, out, *extra):
    return [*TINY, "--data-dir", str(data), "--results-dir", str(out), *extra]


def unwritable(tmp):
    """A folder this process cannot create (root ignores permission bits, so root gets a read-only /sys)."""
    if os.geteuid() == 0:
        return "/sys/dpt-results"
    folder = tmp / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    return str(folder / "results")


def corrupt_deflate(data, out):
    """A Fashion-MNIST whose training images' deflate stream is damaged midway (the gzip header is fine)."""
    folder = out.parent / "fmnist"
    fakedata.write_fashion_mnist(folder, 40, 10)
    path = folder / "train-images-idx3-ubyte.gz"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2: len(raw) // 2 + 16] = b"\xff" * 16
    path.write_bytes(bytes(raw))
    return ["--dataset", "fashionmnist", "--data-dir", str(folder), "--results-dir", str(out), "--batch-size", "8"]


def schema_clash(data, out):
    path = results.csv_path(out, dpt.flags.workload(dpt.flags.parse_args(TINY), 1))
    other = dpt.flags.workload(dpt.flags.parse_args([*TINY, "--total-epochs", "5"]), 1)
    results.append_row(path, results.row(1, [1.0] * 5, other))
    return tiny(data, out)


def checkpoint_file(content):
    def setup(data, out):
        path = results.checkpoint_path(results.csv_path(out, dpt.flags.workload(dpt.flags.parse_args(TINY), 1)), 17611)
        path.parent.mkdir(parents=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            torch.save(content, path)
        return tiny(data, out, "--resume")
    return setup


def row_already_there(data, out):
    wl = dpt.flags.workload(dpt.flags.parse_args(TINY), 1)
    results.append_row(results.csv_path(out, wl), results.row(17611, [1.0] * 4, wl))
    return tiny(data, out)


def a_text(name, make, *extra):
    def setup(data, out):
        path = out.parent / name
        make(path)
        return ["--dataset", "text", "--text-file", str(path), "--results-dir", str(out), "--batch-size", "4", *extra]
    return setup


def other_settings(data, out):
    """The file already holds a run (its row, and its log saying so) with another learning rate."""
    args = dpt.flags.parse_args([*TINY, "--lr", "0.05", "--seed", "5"])
    csv = results.csv_path(out, dpt.flags.workload(args, 1))
    results.append_row(csv, results.row(5, [50.0] * args.total_epochs, dpt.flags.workload(args, 1)))
    results.write_json(csv.parent / "logs" / f"{csv.stem}-seed5-20261124-000000.json", {"args": vars(args)})
    return tiny(data, out)


def little_memory(data, out, monkeypatch):
    """A machine with 16 MiB free: 67 examples x 100,000 epochs of losses (27 MB) do not fit in its half."""
    import preflight

    monkeypatch.setattr(preflight, "free_memory", lambda top: 16 * 2**20)
    return tiny(data, out, "--heuristic", "none", "--total-epochs", "100000")


def claimed_on_other_data(data, out):
    """The file's first run trained on other images (its manifest holds their hash)."""
    args = dpt.flags.parse_args(tiny(data, out))
    csv = results.csv_path(out, dpt.flags.workload(args, 1))
    other = {"train": "f" * 64, "test": "e" * 64}
    assert results.claim(csv, dpt.flags.settings(args, 1) | {"data": other}) is None
    return tiny(data, out, "--seed", "5")


def lock_is_a_link(data, out):
    """Someone planted a link where the run keeps its lock, to another user's file."""
    args = dpt.flags.parse_args(tiny(data, out))
    lock = results.checkpoint_path(results.csv_path(out, dpt.flags.workload(args, 1)), args.seed).with_suffix(".lock")
    lock.parent.mkdir(parents=True)
    (out.parent / "theirs.txt").write_text("someone else's file")
    lock.symlink_to(out.parent / "theirs.txt")
    return tiny(data, out)


def ratings_with(value):
    def setup(data, out):
        path = out.parent / "ml" / "ml-1m" / "ratings.dat"
        path.parent.mkdir(parents=True)
        path.write_text("".join(f"{u}::{i}::4::{100 + i}\n" for u in range(1, 4) for i in range(1, 9))
                        + f"{value}::3::4::500\n")
        return ["--dataset", "movielens-1m", "--data-dir", str(path.parent.parent), "--results-dir", str(out)]
    return setup


def claimed_by_another_length(data, out):
    """A run of the file with --total-epochs 5 started (its manifest is there, no row yet)."""
    args = dpt.flags.parse_args([*TINY, "--total-epochs", "5"])
    assert results.claim(results.csv_path(out, dpt.flags.workload(args, 1)), dpt.flags.settings(args, 1)) is None
    return tiny(data, out)


def results_dir_is_a_file(data, out):
    out.write_text("not a folder")
    return tiny(data, out)


def csv_is_a_folder(data, out):
    results.csv_path(out, dpt.flags.workload(dpt.flags.parse_args(TINY), 1)).mkdir(parents=True)
    return tiny(data, out)


def checkpoints_folder_is_a_file(data, out):
    folder = results.csv_path(out, dpt.flags.workload(dpt.flags.parse_args(TINY), 1)).parent
    folder.mkdir(parents=True)
    (folder / "checkpoints").write_text("a file where the checkpoint folder goes")
    return tiny(data, out, "--checkpoint-every", "1")


def data_dir_is_a_file(data, out):
    path = out.parent / "a-file"
    path.write_text("x")
    return [*TINY, "--data-dir", str(path), "--results-dir", str(out)]


def corrupt_test_batch(data, out):
    (data / "cifar-10-batches-py" / "test_batch").write_bytes(b"\x80\x02garbage")
    return tiny(data, out)


def streaming_from(make_remote, *extra):
    """A streaming run on the tiny CIFAR-10, its remote made by `make_remote(folder) -> str`."""
    def setup(data, out):
        remote = make_remote(data, out.parent)
        return tiny(data, out, "--emulate-workers", "2", "--data-source", "streaming", "--stream-remote", remote,
                    *extra)
    return setup


def written_shards(data, folder, shard_size=10):
    import data as datasets
    import streaming
    streaming.write(datasets.load("cifar10", data, train=True), folder / "shards", shard_size)
    return str(folder / "shards")


def reducer_on_emulating_ranks(data, out, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")  # as rank 0 of 2 torchrun ranks, each emulating 2 workers
    return tiny(data, out, "--reducer", "exdyna", "--emulate-workers", "2", "--emulation", "sequential")


def launched_by_hand(variables):
    """The torchrun variables `variables` in the environment, as a shell would leave them: no torchrun."""
    def setup(data, out, monkeypatch):
        for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "TORCHELASTIC_RUN_ID"):
            monkeypatch.delenv(var, raising=False)
        for var, value in variables.items():
            monkeypatch.setenv(var, value)
        return tiny(data, out)
    return setup


def fashion_mnist(data, out, *, drop=(), test_size=28):
    """Fashion-MNIST files in --data-dir (so Debian's copy is not used), some missing or misshapen."""
    import gzip

    folder = out.parent / "fmnist"
    fakedata.write_fashion_mnist(folder, 40, 10)
    if test_size != 28:
        images = torch.randint(0, 256, (10, test_size, test_size), dtype=torch.uint8).numpy()
        with gzip.open(folder / "t10k-images-idx3-ubyte.gz", "wb") as f:
            f.write(fakedata.idx_bytes(images))
    for name in drop:
        (folder / name).unlink()
    return ["--dataset", "fashionmnist", "--data-dir", str(folder), "--results-dir", str(out), "--batch-size", "8"]


def symlink_loop(data, out):
    loop = out.parent / "loop"
    loop.symlink_to(loop)
    return tiny(data, out)[:-4] + ["--data-dir", str(loop), "--results-dir", str(out)]


def disk_full(data, out, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**12, 10**12 - 4096, 4096))
    return tiny(data, out)


def a_folder_at(path_of):
    """A folder where the run keeps a file (its checkpoint, or its lock)."""
    def setup(data, out):
        path_of(results.checkpoint_path(results.csv_path(out, dpt.flags.workload(dpt.flags.parse_args(TINY), 1)),
                                        17611)).mkdir(parents=True)
        return tiny(data, out)
    return setup


def damaged_checkpoint(data, out):
    """A checkpoint whose bytes no longer match the checksum of its first line."""
    import checkpoint

    path = results.checkpoint_path(results.csv_path(out, dpt.flags.workload(dpt.flags.parse_args(TINY), 1)), 17611)
    path.parent.mkdir(parents=True)
    checkpoint.write(path, {"epoch": 1})
    raw = bytearray(path.read_bytes())
    raw[-10:] = bytes(10)
    path.write_bytes(bytes(raw))
    return tiny(data, out, "--resume")


def wandb_without_login(data, out, monkeypatch):
    for var in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    empty = out.parent / "netrc"
    empty.write_text("")
    monkeypatch.setenv("NETRC", str(empty))
    return tiny(data, out, "--wandb")


def run_already_running(data, out):
    lock = results.checkpoint_path(
        results.csv_path(out, dpt.flags.workload(dpt.flags.parse_args(TINY), 1)), 17611
    ).with_suffix(".lock")
    lock.parent.mkdir(parents=True)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import fcntl, sys, time; f = open({str(lock)!r}, 'a'); "
            "fcntl.lockf(f, fcntl.LOCK_EX); f.write('pid 4242 on elsewhere'); f.flush(); "
            "print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    return tiny(data, out), holder


CASES = [
    # flags alone
    ("unknown dataset", ["--dataset", "imagenet"], "invalid choice: 'imagenet'"),
    ("unknown model", ["--model", "vgg"], "invalid choice: 'vgg'"),
    ("unknown heuristic", ["--heuristic", "no-such-heuristic"], "invalid choice: 'no-such-heuristic'"),
    ("unknown measure", ["--measure", "no-such-measure"], "invalid choice: 'no-such-measure'"),
    ("typo in a flag", ["--warmup-epoch", "3"], "unrecognized arguments: --warmup-epoch"),
    ("not a number", ["--total-epochs", "x"], "argument --total-epochs: invalid int value: 'x'"),
    ("unknown compile mode", ["--compile", "fast"], "invalid choice: 'fast'"),
    ("compile with sequential emulation", ["--compile", "default", "--emulate-workers", "2", "--emulation",
                                          "sequential"], "--compile compiles the fused step"),
    ("unknown optimizer kernels", ["--optimizer-impl", "cuda"], "invalid choice: 'cuda'"),
    ("no sampled negatives", ["--dataset", "movielens-1m", "--negatives", "0"], "--negatives"),
    ("no held-out candidates", ["--dataset", "movielens-1m", "--test-negatives", "0"], "--test-negatives"),
    ("NeuMF width not halving to its factors", ["--dataset", "movielens-1m", "--mlp-width", "48"],
     "--mlp-width 48 must be even"),
    ("warmup beyond T", ["--warmup-epochs", "120"], "--warmup-epochs 120 exceeds --total-epochs 100"),
    ("warmup equal to T", ["--warmup-epochs", "100"], "needs 1 <= --warmup-epochs < --total-epochs"),
    ("zero interval", ["--interval-epochs", "0"], "--interval-epochs must be at least 1 in interval mode"),
    ("interval beyond T - W", ["--interval-epochs", "90"], "--interval-epochs 90 exceeds the 80 epochs after warmup"),
    ("ignore all of warmup", ["--ignore-epochs", "20"], "--ignore-epochs 20 leaves no warmup loss column to score"),
    (
        "vanilla with intervals",
        ["--heuristic", "none", "--repartition", "interval"],
        "--heuristic none trains vanilla DPT",
    ),
    ("zero total", ["--total-epochs", "0"], "--total-epochs must be at least 1"),
    ("absurd total", ["--total-epochs", "100000000"], "--total-epochs 100000000 is beyond 100,000 epochs"),
    ("batch size 0", ["--batch-size", "0"], "--batch-size is per worker and must be at least 1"),
    ("batch size 1", ["--batch-size", "1"], "--batch-size 1 gives every worker batches of one example"),
    ("lr nan", ["--lr", "nan"], "--lr must be a positive finite number (got nan)"),
    ("lr negative", ["--lr", "-0.1"], "--lr must be a positive finite number"),
    ("weight decay nan", ["--weight-decay", "nan"], "--weight-decay must be a finite number >= 0"),
    ("momentum inf", ["--momentum", "inf"], "--momentum must be in (0, 1)"),
    ("momentum 0", ["--momentum", "0"], "Nesterov SGD needs momentum"),
    ("negative seed", ["--seed", "-1"], "--seed must be in 0..4294967295"),
    ("seed too large", ["--seed", str(2**64)], "--seed must be in 0..4294967295"),
    ("sampler seed too large", ["--sampler-seed", str(2**40)], "--sampler-seed must be in"),
    ("negative subset", ["--subset", "-5"], "--subset and --test-subset take a number of examples"),
    ("zero workers", ["--emulate-workers", "0"], "--emulate-workers is the number of workers each process hosts"),
    ("negative checkpoint period", ["--checkpoint-every", "-1"], "--checkpoint-every takes a number of epochs"),
    ("zero timeout", ["--timeout", "0"], "--timeout takes seconds from 1"),
    ("a timeout no clock takes", ["--timeout", "1e30"], "--timeout takes seconds from 1"),
    ("a timeout shorter than a collective's set-up", ["--timeout", "0.001"], "--timeout takes seconds from 1"),
    ("lr beyond float32", ["--lr", "1e308"], "--lr 1e+308 is beyond float32's range"),
    ("weight decay beyond float32", ["--weight-decay", "1e308"], "--weight-decay 1e+308 is beyond float32's range"),
    ("zero processes to plan for", ["--preflight", "0"], "--preflight takes the number of processes"),
    ("nccl on a CPU", ["--backend", "nccl"], "--backend nccl needs CUDA GPUs"),
    # language modelling
    ("image model on text", ["--dataset", "kjv", "--model", "resnet18"], "--model resnet18 does not fit --dataset kjv"),
    ("text model on images", ["--model", "lstm"], "--model lstm does not fit --dataset cifar10 (image)"),
    ("text without its file", ["--dataset", "text"], "--dataset text reads the file given by --text-file"),
    ("text flags on images", ["--text-file", "x.txt", "--layers", "2"],
     "--text-file, --layers are for language modelling"),
    ("forgetting on text", ["--dataset", "kjv", "--measure", "forgetting"],
     "--measure forgetting has no meaning on language modelling"),
    ("ab-closeness on text", ["--dataset", "kjv", "--measure", "ab-closeness"],
     "it would rank the easiest chunks first"),
    ("a scoring pass over a streamed split", ["--measure", "dd-grand", "--data-source", "streaming",
                                              "--stream-remote", "x"], "scores every example in a pass of its own"),
    ("class-stripes on text", ["--dataset", "kjv", "--heuristic", "class-stripes"],
     "language modelling examples have none"),
    ("paper protocol on text", ["--dataset", "kjv", "--eval-protocol", "paper"],
     "--eval-protocol paper is not a protocol of language modelling"),
    ("zero sequence length", ["--dataset", "kjv", "--seq-len", "0"], "--seq-len must be at least 1"),
    ("dropout of one", ["--dataset", "kjv", "--dropout", "1"], "--dropout must be in [0, 1)"),
    ("heads on an LSTM", ["--dataset", "kjv", "--model", "lstm", "--heads", "2"],
     "--heads is not read by --model lstm"),
    ("width not divisible by heads", ["--dataset", "kjv", "--hidden", "130"],
     "--hidden 130 must be a multiple of --heads 4"),
    ("momentum with adamw", ["--optimizer", "adamw", "--momentum", "0.8"], "--momentum is SGD's"),
    ("missing text file", a_text("nope.txt", lambda p: None), "nope.txt: no such file"),
    ("empty text file", a_text("empty.txt", lambda p: p.write_bytes(b"")), "empty.txt is empty"),
    ("text file not UTF-8", a_text("latin1.txt", lambda p: p.write_bytes("café\n".encode("latin-1") * 2000)),
     "is not UTF-8 text"),
    ("corpus shorter than a chunk per worker",
     a_text("short.txt", lambda p: p.write_text("w\n" * 950), "--emulate-workers", "16"),
     "holds 13 chunks of 129 bytes, fewer than one per worker (16)"),
    # gradient exchange
    ("density without a sparsifying reducer", ["--density", "0.01"], "--density is for a sparsifying --reducer"),
    ("density with exact", ["--reducer", "exact", "--density", "0.5"], "--reducer exact sends every entry"),
    ("zero density", ["--reducer", "exdyna", "--density", "0"], "--density must be in (0, 1]"),
    ("density nan", ["--reducer", "topk", "--density", "nan"], "--density must be in (0, 1]"),
    ("reducer on the fused emulation", ["--reducer", "exdyna", "--emulate-workers", "2"],
     "pass --emulation sequential"),
    ("reducer on ranks that emulate", reducer_on_emulating_ranks, "hosts one worker per rank"),
    ("unknown reducer", ["--reducer", "powersgd"], "invalid choice: 'powersgd'"),
    # data source and storage
    ("streaming without a remote", ["--data-source", "streaming"], "reads shards from --stream-remote"),
    ("storage flags without streaming", ["--cache-bytes", "1000"], "--cache-bytes are for --data-source streaming"),
    ("shard size without shard-stripes", ["--shard-size", "10"], "--shard-size is read by --heuristic shard-stripes"),
    ("class-stripes streamed", ["--heuristic", "class-stripes", "--data-source", "streaming", "--stream-remote", "x"],
     "--heuristic class-stripes reads every example's label"),
    ("streaming text", ["--dataset", "kjv", "--data-source", "streaming", "--stream-remote", "x"],
     "--data-source streaming serves images"),
    ("streaming and data on device", ["--data-source", "streaming", "--stream-remote", "x", "--data-on-device"],
     "pick one"),
    ("zero cache", ["--data-source", "streaming", "--stream-remote", "x", "--cache-bytes", "0"],
     "--cache-bytes must be at least 1"),
    ("a missing remote", streaming_from(lambda data, folder: str(folder / "nowhere")),
     "is unreachable or holds no streaming dataset"),
    ("an unreachable S3 remote", streaming_from(lambda data, folder: "s3://bucket/shards", "--stream-endpoint",
                                                "http://127.0.0.1:9"), "is unreachable or holds no streaming dataset"),
    ("a cache smaller than a shard", streaming_from(written_shards, "--cache-bytes", "1000"),
     "cannot hold one shard"),
    ("fewer shards than workers", lambda data, out: tiny(data, out, "--heuristic", "shard-stripes",
                                                          "--shard-size", "60", "--emulate-workers", "3"),
     "67 examples make 2 shards for 3 workers; pass a --shard-size of at most 22"),
    # the launch
    ("a stale RANK in the shell", launched_by_hand({"RANK": "1"}), "RANK=1 is set but WORLD_SIZE, LOCAL_RANK"),
    ("WORLD_SIZE without RANK", launched_by_hand({"WORLD_SIZE": "2"}), "WORLD_SIZE=2 is set but RANK"),
    ("torchrun's variables without torchrun", launched_by_hand({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}),
     "this process was not started by torchrun"),
    # the data
    (
        "missing data offline",
        lambda data, out: ["--data-dir", str(out.parent / "empty"), "--results-dir", str(out)],
        "cifar-10-batches-py/data_batch_1",
    ),
    ("data dir is a file", data_dir_is_a_file, "is a file, not a folder; pass the folder that holds the dataset"),
    ("corrupt data file", corrupt_test_batch, "corrupt cifar10 file"),
    ("damaged deflate stream", corrupt_deflate, "corrupt data file"),
    ("images without their labels", lambda data, out: fashion_mnist(data, out, drop=["train-labels-idx1-ubyte.gz"]),
     "holds some of Fashion-MNIST's files but not train-labels-idx1-ubyte"),
    ("test images of another size", lambda data, out: fashion_mnist(data, out, test_size=32),
     "holds 1x32x32 images (channels x height x width), expected 1x28x28"),
    ("a data dir that is a symlink loop", symlink_loop, "is a broken symlink or a symlink loop"),
    ("a text file of NUL bytes", a_text("nul.txt", lambda p: p.write_bytes(bytes(5000))), "holds NUL bytes"),
    ("a GPT wider than memory", a_text("wide.txt", lambda p: fakedata.write_text(p, 2000), "--hidden", "40000"),
     "a training step of --model gpt at this size"),
    ("a sequence of 100,000 bytes", a_text("long.txt", lambda p: fakedata.write_text(p, 60000), "--seq-len", "100000"),
     "needs about"),
    ("subset beyond the data", lambda data, out: tiny(data, out, "--subset", "100"), "--subset 100 exceeds the 67"),
    ("subset of one", lambda data, out: tiny(data, out, "--subset", "1"), "a batch of one"),
    (
        "fewer examples than workers",
        lambda data, out: tiny(data, out, "--subset", "1", "--emulate-workers", "2"),
        "1 training examples cannot be split across 2 workers",
    ),
    ("a last training batch of one", lambda data, out: tiny(data, out, "--batch-size", "11"), "a batch of one"),
    (
        "a last test batch of one",
        lambda data, out: tiny(data, out, "--batch-size", "16", "--test-subset", "17"),
        "17 test examples",
    ),
    (
        "loss matrix too large",
        little_memory,
        "GiB are free",
    ),
    # where results go
    ("results dir is a file", results_dir_is_a_file, "pass a writable --results-dir"),
    ("results of other settings in the file", other_settings, "holds runs set otherwise (--lr 0.05 there, 0.1 here"),
    ("a new seed on other data into the file", claimed_on_other_data,
     "holds runs set otherwise (the data (training examples' sha256 ffffffffffff there"),
    ("a link where the run's lock goes", lock_is_a_link, "is a symbolic link"),
    ("another IDX dataset's files", lambda data, out: [
        "--dataset", "fashionmnist", "--data-dir", str(fakedata.write_fashion_mnist(
            out.parent / "mnist", 40, 10, mean=0.1307) and out.parent / "mnist"), "--results-dir", str(out)],
     "holds MNIST's images"),
    ("a rating id that is not an integer", ratings_with("3.5"), "line 25: user '3.5' is not a non-negative integer"),
    ("a rating id beyond int64", ratings_with(str(2**64 - 1)), "is not a non-negative integer within int64"),
    ("a file claimed by a run of another length", claimed_by_another_length,
     "holds runs set otherwise (--total-epochs 5 there, 4 here (its manifest"),
    ("results dir not writable", lambda data, out: tiny(data, unwritable(out.parent)), "pass a writable --results-dir"),
    ("result file is a folder", csv_is_a_folder, "is a folder; move it away or pass another --results-dir"),
    ("checkpoint folder not writable", checkpoints_folder_is_a_file, "pass a writable --results-dir"),
    ("a disk already full", disk_full, "MiB free and the run needs about"),
    ("the checkpoint path is a folder", a_folder_at(lambda path: path), "is a folder where this run keeps a file"),
    ("the lock path is a folder", a_folder_at(lambda path: path.with_suffix(".lock")),
     "is a folder where this run keeps a file"),
    ("result file of another schema", schema_clash, "another schema"),
    ("the run's row is there already", row_already_there, "already holds the row of --seed 17611: this run is done"),
    # resuming
    ("a file that is no checkpoint", checkpoint_file(b"\x80\x02not a checkpoint"), "is not a checkpoint of dpt.py"),
    ("torch.save's file, not ours", checkpoint_file({"weights": torch.zeros(2)}), "is not a checkpoint of dpt.py"),
    ("damaged checkpoint", damaged_checkpoint, "corrupt checkpoint"),
    ("run already running", run_already_running, "another process is running this run (pid 4242 on elsewhere"),
    # logging
    ("wandb without a login", wandb_without_login, "run `wandb login`, or set WANDB_MODE=offline"),
]


@pytest.fixture
def traps(monkeypatch):
    """main() as torchrun's rank 0 would run it; starting a process group or building a model fails the test."""
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "bad-input-table")
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # offline, whatever the network

    def trap(*a, **k):
        raise AssertionError("validation went past the checks: a process group or a model was started")
    monkeypatch.setattr(topology.dist, "init_process_group", trap)
    monkeypatch.setattr(models, "build", trap)
    monkeypatch.setattr(tasks.Task, "build_model", trap)


@pytest.mark.parametrize("case,fragment", [(c, f) for _, c, f in CASES], ids=[name for name, *_ in CASES])
def test_refused_in_one_line(case, fragment, cifar10_dir, tmp_path, capsys, traps, monkeypatch):
    root, _ = cifar10_dir
    out, holder = tmp_path / "results", None
    if callable(case):
        takes_env = case in (wandb_without_login, reducer_on_emulating_ranks, disk_full, little_memory) or \
            getattr(case, "__qualname__", "").startswith("launched_by_hand")
        argv = case(root, out, monkeypatch) if takes_env else case(root, out)
        if isinstance(argv, tuple):
            argv, holder = argv
    else:
        argv = case
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} if out.is_dir() else {}
    try:
        line = run_expecting_error(argv, capsys)
    finally:
        if holder:
            holder.kill()
    assert fragment in line, line
    assert {p: p.read_bytes() for p in before} == before  # nothing already written was touched


def test_a_typo_is_refused_before_torch_is_imported():
    """dpt.py parses its flags before the heavy imports, so a typo costs a fraction of a second."""
    probe = ("import runpy, sys\nsys.argv = ['dpt.py', '--warmup-epoch', '3']\n"
             "try:\n    runpy.run_path('dpt.py', run_name='__main__')\nexcept SystemExit as e:\n"
             "    print(e.code, 'torch' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, env=ENV)
    assert proc.stdout.split() == ["2", "False"], proc.stdout + proc.stderr
    assert proc.stderr.strip() == "dpt.py: error: unrecognized arguments: --warmup-epoch 3"


@pytest.mark.slow
def test_under_torchrun_only_rank_0_prints_the_line(cifar10_dir, tmp_path):
    root, _ = cifar10_dir
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "dpt.py",
            *tiny(root, tmp_path, "--subset", "100"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert proc.returncode != 0
    ours = [line for line in (proc.stdout + proc.stderr).splitlines() if "dpt.py: error:" in line]
    assert len(ours) == 1 and "--subset 100 exceeds the 67" in ours[0], proc.stderr[-2000:]


def test_a_damaged_gzip_stream_is_reported_by_the_reader(tmp_path):
    """The reader itself (not only dpt.py) turns zlib's error into a DataError."""
    import data
    fakedata.write_fashion_mnist(tmp_path, 40, 10)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    raw = gzip.compress(gzip.decompress(path.read_bytes()))
    path.write_bytes(raw[:20] + bytes(b ^ 0x55 for b in raw[20:60]) + raw[60:])
    with pytest.raises(data.DataError, match="corrupt data file"):
        data.load("fashionmnist", tmp_path, train=False)


def test_preflight_checks_a_launch_and_writes_no_file(cifar10_dir, tmp_path, capsys):
    """--preflight N: every check as a launch of N processes would run them (67 examples on 2 workers
    are 34 each, a batch of one with --batch-size 33), and its plan or its one line."""
    root, _ = cifar10_dir
    dpt.main(tiny(root, tmp_path / "ok", "--preflight", "2"))
    assert "would train 2 workers on 67 examples" in capsys.readouterr().out
    assert not [p for p in (tmp_path / "ok").rglob("*") if p.is_file()]  # folders probed, no manifest or lock
    line = run_expecting_error(tiny(root, tmp_path / "bad", "--preflight", "2", "--batch-size", "33"), capsys)
    assert "67 examples on 2 workers give 34 per worker, leaving a batch of one" in line


@pytest.mark.slow
def test_the_quick_start_says_bad_input_in_one_line_before_torchrun(tmp_path):
    """run-small-experiment.sh runs dpt.py --preflight first: a refusal (a typo, a run already done) is
    one line and exit 2, not the same line inside torchrun's failure summary."""
    args = dpt.flags.parse_args(["--dataset", "fashionmnist", "--model", "lenet5", "--subset", "10000",
                                 "--total-epochs", "8", "--warmup-epochs", "3", "--ignore-epochs", "1",
                                 "--interval-epochs", "2", "--batch-size", "32", "--eval-protocol", "standard"])
    done = results.csv_path(tmp_path, dpt.flags.workload(args, 2))
    results.append_row(done, results.row(17611, [50.0] * 8, dpt.flags.workload(args, 2)))
    for extra, expected in (([], "this run is done"), (["--lr", "-1"], "--lr must be a positive finite number")):
        proc = subprocess.run(["bash", "run-small-experiment.sh", *extra], cwd=REPO, capture_output=True, text=True,
                              env={**ENV, "RESULTS_DIR": str(tmp_path)}, timeout=300)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and expected in lines[0], proc.stderr
        assert "torchrun" not in proc.stdout + proc.stderr and "Traceback" not in proc.stderr
