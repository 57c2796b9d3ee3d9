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
            "fcntl.flock(f, fcntl.LOCK_EX); f.write('pid 4242 on elsewhere'); f.flush(); "
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
    ("unknown heuristic", ["--heuristic", "median-split"], "invalid choice: 'median-split'"),
    ("unknown measure", ["--measure", "median"], "invalid choice: 'median'"),
    ("typo in a flag", ["--warmup-epoch", "3"], "unrecognized arguments: --warmup-epoch"),
    ("not a number", ["--total-epochs", "x"], "argument --total-epochs: invalid int value: 'x'"),
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
    ("zero timeout", ["--timeout", "0"], "--timeout takes a positive number of seconds"),
    ("nccl on a CPU", ["--backend", "nccl"], "--backend nccl needs CUDA GPUs"),
    # language modelling
    ("image model on text", ["--dataset", "kjv", "--model", "resnet18"], "--model resnet18 does not fit --dataset kjv"),
    ("text model on images", ["--model", "lstm"], "--model lstm does not fit --dataset cifar10 (image)"),
    ("text without its file", ["--dataset", "text"], "--dataset text reads the file given by --text-file"),
    ("text flags on images", ["--text-file", "x.txt", "--layers", "2"],
     "--text-file, --layers are for language modelling"),
    ("forgetting on text", ["--dataset", "kjv", "--measure", "forgetting"],
     "--measure forgetting has no meaning on language modelling"),
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
    # the data
    (
        "missing data offline",
        lambda data, out: ["--data-dir", str(out.parent / "empty"), "--results-dir", str(out)],
        "cifar-10-batches-py/data_batch_1",
    ),
    ("data dir is a file", data_dir_is_a_file, "is a file, not a folder; pass the folder that holds the dataset"),
    ("corrupt data file", corrupt_test_batch, "corrupt cifar10 file"),
    ("damaged deflate stream", corrupt_deflate, "corrupt data file"),
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
        lambda data, out: tiny(data, out, "--heuristic", "none", "--total-epochs", str(10**10)),
        "GiB are free",
    ),
    # where results go
    ("results dir is a file", results_dir_is_a_file, "pass a writable --results-dir"),
    ("results of other settings in the file", other_settings, "holds runs set otherwise (--lr 0.05 there, 0.1 here"),
    ("results dir not writable", lambda data, out: tiny(data, unwritable(out.parent)), "pass a writable --results-dir"),
    ("result file is a folder", csv_is_a_folder, "is a folder; move it away or pass another --results-dir"),
    ("checkpoint folder not writable", checkpoints_folder_is_a_file, "pass a writable --results-dir"),
    ("result file of another schema", schema_clash, "another schema"),
    ("the run's row is there already", row_already_there, "already holds the row of --seed 17611: this run is done"),
    # resuming
    ("damaged checkpoint", checkpoint_file(b"\x80\x02not a checkpoint"), "corrupt checkpoint"),
    ("not our checkpoint", checkpoint_file({"weights": torch.zeros(2)}), "is not a checkpoint of dpt.py"),
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


@pytest.mark.parametrize("case,fragment", [(c, f) for _, c, f in CASES], ids=[name for name, *_ in CASES])
def test_refused_in_one_line(case, fragment, cifar10_dir, tmp_path, capsys, traps, monkeypatch):
    root, _ = cifar10_dir
    out, holder = tmp_path / "results", None
    if callable(case):
        takes_env = case in (wandb_without_login, reducer_on_emulating_ranks)
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
