import json
import os

import pandas as pd
import pytest
import torch

pytest.importorskip("litdata")

import data  # noqa: E402
import heuristics  # noqa: E402
import iosim  # noqa: E402
import samplers  # noqa: E402
import streaming  # noqa: E402

N, SHARD = 200, 10


def images(count: int = N) -> data.Split:
    g = torch.Generator().manual_seed(count)
    return data.Split(torch.randint(0, 256, (count, 1, 5, 5), dtype=torch.uint8, generator=g),
                      torch.randint(0, 10, (count,), generator=g))


@pytest.fixture
def remote(tmp_path):
    folder = tmp_path / "remote"
    streaming.write(images(), folder, SHARD)
    return folder


def shard_files(folder) -> dict[str, int]:
    return {name: os.path.getsize(os.path.join(folder, name)) for name in os.listdir(folder) if name.endswith(".bin")}


def test_write_and_read_every_example(remote, tmp_path):
    split = images()
    index = json.loads((remote / "index.json").read_text())
    assert [c["chunk_size"] for c in index["chunks"]] == [SHARD] * (N // SHARD)
    reader = streaming.WorkerReader(str(remote), tmp_path / "cache", cache_bytes=10**9)
    written = shard_files(remote)
    assert reader.storage.shard_bytes.tolist() == [written[c["filename"]] for c in index["chunks"]]
    reader.set_window(None)
    reader.set_epoch(0)
    for i in reversed(range(N)):
        image, label = reader[i]
        assert image.dtype == torch.uint8 and label.dtype == torch.int64
        assert torch.equal(image, split.images[i]) and label == split.labels[i]
    image.add_(1)  # the reader's tensors are the caller's own
    assert torch.equal(reader[0][0], split.images[0])
    images_batch, labels_batch = reader.batch([3, 150, 3])
    assert torch.equal(images_batch, split.images[[3, 150, 3]]) and torch.equal(labels_batch, split.labels[[3, 150, 3]])
    stats = reader.stats()
    assert stats.requests.tolist() == [N + 4] and stats.misses.tolist() == [N // SHARD]
    assert stats.bytes.tolist() == [sum(written.values())] and shard_files(tmp_path / "cache") == written
    assert reader.index_bytes == (remote / "index.json").stat().st_size


def test_text_chunks(tmp_path):
    tokens = torch.randint(0, 256, (50, 9), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    streaming.write(tokens, tmp_path / "text", 7)  # 7 full shards and one of 1
    reader = streaming.WorkerReader(str(tmp_path / "text"), tmp_path / "cache", cache_bytes=10**6)
    reader.set_epoch(0)
    assert all(torch.equal(reader[i], tokens[i]) for i in range(50))
    assert torch.equal(reader.batch([49, 0]), tokens[[49, 0]])
    assert len(reader) == 50 and reader.storage.shard_bytes.shape == (8,)


def read_run(remote: str, folder, windows, cache_bytes: int, policy: str, storage_options=None) -> list:
    """Train-free replay: every worker reads its sampler's examples through its own reader,
    checking each example and that the cache folder never holds more than cache_bytes of shards."""
    split, n = images(), len(windows[-1][2])
    readers = [
        streaming.WorkerReader(remote, folder / f"worker{w}", cache_bytes, policy, storage_options) for w in range(n)
    ]
    for first, length, partition in windows:
        ss = samplers.for_window(range(N), partition, range(n), n, shuffle=True, sampler_seed=0, seed=0)
        for w, reader in enumerate(readers):
            reader.set_window(None if partition is None else partition[w])
        for epoch in range(first, first + length):
            for sampler, reader in zip(ss, readers):
                sampler.set_epoch(epoch)
                reader.set_epoch(epoch)
                for i in sampler:
                    image, label = reader[i]
                    assert torch.equal(image, split.images[i]) and label == split.labels[i]
                assert sum(shard_files(reader.cache_dir).values()) <= cache_bytes
    return readers


def measured(readers) -> pd.DataFrame:
    return pd.concat([r.stats().assign(worker=w) for w, r in enumerate(readers)]).sort_values(["epoch", "worker"])


def tiny_windows(name: str) -> list:
    scores = torch.rand(N, generator=torch.Generator().manual_seed(7))
    order = torch.sort(scores, descending=True).indices
    partition = heuristics.shard_stripes(order, 2, scores, SHARD) if name == "shards" else heuristics.stripes(order, 2)
    return [(0, 1, None), (1, 2, partition)]  # 3 epochs: vanilla, then a fixed partition


@pytest.mark.parametrize("policy", iosim.POLICIES)
@pytest.mark.parametrize("name", ["stripes", "shards"])
def test_measured_bytes_equal_simulated(remote, tmp_path, policy, name):
    windows = tiny_windows(name)
    shard_bytes = max(shard_files(remote).values())
    readers = read_run(str(remote), tmp_path, windows, 6 * shard_bytes, policy)
    got = measured(readers)
    want, _ = iosim.simulate(windows, 2, readers[0].storage)
    columns = ["epoch", "worker", "requests", "hits", "misses", "bytes"]
    pd.testing.assert_frame_equal(got[columns].reset_index(drop=True), want[columns], check_dtype=False)
    assert abs(got.bytes.sum() - want.bytes.sum()) <= 0.01 * want.bytes.sum()
    assert got.hits.sum() > 0 and got.misses.sum() > 2 * N // SHARD  # some shards were evicted and fetched again


def test_s3_compatible_endpoint(remote, tmp_path):
    moto_server = pytest.importorskip("moto.server")
    import boto3

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        options = {"endpoint_url": f"http://{host}:{port}", "aws_access_key_id": "test",
                   "aws_secret_access_key": "test", "region_name": "us-east-1"}
        s3 = boto3.client("s3", **options)
        s3.create_bucket(Bucket="dpt-shards")
        for name in os.listdir(remote):
            s3.upload_file(str(remote / name), "dpt-shards", f"fmnist/{name}")
        windows = tiny_windows("shards")
        readers = read_run("s3://dpt-shards/fmnist", tmp_path, windows, 6 * max(shard_files(remote).values()),
                           "partition", options)
        want, _ = iosim.simulate(windows, 2, readers[0].storage)
        assert measured(readers).bytes.tolist() == want.bytes.tolist()
        assert readers[0].storage.shard_bytes.tolist() == streaming.WorkerReader(
            str(remote), tmp_path / "local", 10**6).storage.shard_bytes.tolist()
    finally:
        server.stop()


def one_line(err) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_unreachable_remote(tmp_path):
    with pytest.raises(data.DataError) as err:
        streaming.WorkerReader(str(tmp_path / "nowhere"), tmp_path / "cache", cache_bytes=10**6)
    assert one_line(err).startswith(
        f"remote {tmp_path / 'nowhere'} is unreachable or holds no streaming dataset (FileNotFoundError"
    )
    assert one_line(err).endswith("; pass the folder or URL that streaming.write filled")
    closed = {"endpoint_url": "http://127.0.0.1:9", "aws_access_key_id": "test", "aws_secret_access_key": "test",
              "region_name": "us-east-1"}
    with pytest.raises(data.DataError) as err:
        streaming.WorkerReader("s3://dpt-shards/fmnist", tmp_path / "cache2", cache_bytes=10**6, storage_options=closed)
    assert one_line(err).startswith(
        "remote s3://dpt-shards/fmnist is unreachable or holds no streaming dataset (EndpointConnectionError"
    )


def test_bad_storage_parameters(remote, tmp_path):
    largest = max(shard_files(remote).values())
    with pytest.raises(ValueError, match=rf"^cache_bytes=0 cannot hold one shard \(the largest is {largest} bytes\); "
                                         rf"give each worker's cache at least {largest} bytes$"):
        streaming.WorkerReader(str(remote), tmp_path / "cache", cache_bytes=0)
    with pytest.raises(ValueError, match=r"^policy='fifo' is unknown"):
        streaming.WorkerReader(str(remote), tmp_path / "cache3", cache_bytes=10**6, policy="fifo")
    with pytest.raises(
        ValueError,
        match=r"^shard_size=201 is larger than the dataset \(200 examples\); pass a shard size of at most 200$",
    ):
        streaming.write(images(), tmp_path / "other", 201)
    with pytest.raises(ValueError, match=r"^out_dir .* is not empty; write the shards into a new folder"):
        streaming.write(images(), remote, 10)
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "chunk-0-0.bin").write_bytes(b"x")
    with pytest.raises(
        ValueError, match=r"^cache_dir .*used is not empty; give each worker its own new or empty folder$"
    ):
        streaming.WorkerReader(str(remote), tmp_path / "used", cache_bytes=10**6)


def test_the_caches_of_killed_runs_are_removed_by_the_next(tmp_path):
    import subprocess
    import sys


    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = os.uname().nodename
    dead, live = tmp_path / f"worker-0-{host}-{gone.stdout.strip()}", tmp_path / f"worker-1-{host}-{os.getpid()}"
    elsewhere = tmp_path / f"worker-0-another-host-{gone.stdout.strip()}"  # another node's: not ours to judge
    for folder in (dead, live, elsewhere):
        (folder / "shard-0.bin").parent.mkdir()
        (folder / "shard-0.bin").write_bytes(b"x")
    streaming.remove_stale_caches(tmp_path)
    assert not dead.exists() and live.exists() and elsewhere.exists()
