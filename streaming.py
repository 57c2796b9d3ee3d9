"""A real streaming data path: a dataset written as litdata shards, read by each worker through
its own local cache folder, with the bytes each worker downloads measured on disk.

Write once (one process, before training), then train from it:

    python streaming.py write --dataset fashionmnist --subset 2000 --out results/shards/fmnist-100 --shard-size 100
    python dpt.py --dataset fashionmnist --data-source streaming --stream-remote results/shards/fmnist-100 \
        --emulate-workers 4 ...

or read one worker's examples by index by hand:

    python -c "import data, streaming; s = data.load('fashionmnist', 'data', train=True, subset=2000); \
streaming.write(s, '/tmp/fmnist-shards', shard_size=100); \
r = streaming.WorkerReader('/tmp/fmnist-shards', '/tmp/fmnist-cache-w0', cache_bytes=10**6); \
r.set_epoch(0); image, label = r[5]; print(image.shape, label, r.stats())"

Format: litdata's chunk files and index.json (litdata.streaming.Cache writes them): shard k holds
examples k*S .. (k+1)*S - 1. The remote is a local folder, or any URL litdata downloads from
(s3://bucket/prefix with storage_options={"endpoint_url": ...} for an S3-compatible server).

Caching is ours, not litdata's: litdata evicts from a background thread that deletes the chunk
its reader just left once a size budget is crossed, timed by that thread, and its random access
(`StreamingDataset[i]`) fetches byte ranges or whole chunks without ever evicting them. Neither
can be predicted exactly. So each WorkerReader downloads whole chunk files with litdata's
downloader into its own cache folder, evicts them itself under iosim's cache model (iosim.ShardCache:
policies "lru" and "partition", the one implementation the simulator uses too), and decodes each
example from its local file with litdata's item decoder. A fetch counts the size of the file that
landed (os.stat), so iosim.simulate with `reader.storage` predicts the bytes exactly, and
tests/test_streaming.py checks that.

A reader is used in the process that trains (not from DataLoader worker processes, whose copies
of its cache state would diverge), with one cache folder per worker.
"""
import hashlib
import json
import math
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import catalog as C
import flags


def build_parser():
    p = flags.Parser(prog="streaming.py", description="Write a dataset's training split as litdata shards.",
                     formatter_class=flags.HelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write", help="write the training split as shards")
    w.add_argument("--dataset", required=True, choices=C.names_of(C.DATASETS, "image"), help="an image dataset")
    w.add_argument("--data-dir", default="data", help="where the dataset is (as dpt.py's --data-dir)")
    w.add_argument("--subset", type=int, default=0, help="the first N training examples only (0: all)")
    w.add_argument("--out", required=True, help="a new or empty folder")
    w.add_argument("--shard-size", type=int, required=True, help="examples per shard")
    return p


if __name__ == "__main__":
    build_parser().parse_args()  # --help and a typo answered at once, before litdata's and torch's imports

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from litdata.streaming import Cache
from litdata.streaming.downloader import get_downloader
from litdata.streaming.item_loader import PyTreeLoader
from litdata.streaming.reader import BinaryReader

import data
import iosim

INDEX = "index.json"


def write(examples: data.Split | torch.Tensor, out_dir: str | os.PathLike, shard_size: int) -> None:
    """Write a data.Split (uint8 images and int64 labels) or text chunks (an (N, L) uint8 tensor)
    as shards of `shard_size` consecutive examples into out_dir, a new or empty folder."""
    labelled = isinstance(examples, data.Split)
    count = len(examples)
    iosim.check_shard_size(shard_size, count)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"out_dir {out} is not empty; write the shards into a new folder (nothing is overwritten)")
    if dist.is_initialized() and dist.get_world_size() > 1:
        # litdata's writer then waits for an index from every rank
        raise RuntimeError("streaming.write runs in one process: write the shards before torchrun starts")
    cache = Cache(input_dir=str(out), chunk_size=shard_size)
    for i in range(count):
        cache[i] = {"image": examples.images[i].contiguous(), "label": int(examples.labels[i])} if labelled \
            else {"chunk": examples[i].contiguous()}
    cache.done()
    cache.merge()
    sizes = [c["chunk_size"] for c in json.loads((out / INDEX).read_text())["chunks"]]
    assert sizes == [shard_size] * (count // shard_size) + [count % shard_size] * (count % shard_size > 0), \
        "shard k holds examples k*S .. (k+1)*S - 1"


class WorkerReader:
    """One worker's examples by index, through its own cache folder of `cache_bytes` (policy "lru"
    or "partition", as in iosim). Call set_window at each window's start (with the worker's
    partition, or None in warmup) and set_epoch at each epoch's start; stats() then has one row of
    requests, hits, misses and downloaded bytes per epoch. `storage` is the iosim.Storage to
    simulate it with. The index file (`index_bytes`) is fetched once and not counted against the cache."""

    def __init__(self, remote: str, cache_dir: str | os.PathLike, cache_bytes: int, policy: str = "lru",
                 storage_options: dict | None = None):
        self.remote = remote if "://" in remote else os.path.abspath(remote)
        self.cache_dir = Path(cache_dir)
        if self.cache_dir.exists() and any(self.cache_dir.iterdir()):
            raise ValueError(f"cache_dir {self.cache_dir} is not empty; give each worker its own new or empty folder")
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.options = dict(storage_options or {})
        index = self._fetch_index()
        self.chunks = index["chunks"]
        self.shard_size = self.chunks[0]["chunk_size"]
        counts = np.array([c["chunk_size"] for c in self.chunks])
        if (counts[:-1] != self.shard_size).any() or counts[-1] > self.shard_size or index["config"].get("compression"):
            raise data.DataError(f"remote {remote} was not written by streaming.write (uneven or compressed "
                                 f"shards); write it again with streaming.write")
        shard_bytes = np.array([c["chunk_bytes"] for c in self.chunks], dtype=np.int64)
        self.storage = iosim.storage(int(counts.sum()), self.shard_size, np.repeat(shard_bytes // counts, counts),
                                     cache_bytes, policy, shard_bytes=shard_bytes)
        self.downloader = get_downloader(self.remote, str(self.cache_dir), self.chunks, self.options)
        self.loader = PyTreeLoader()
        BinaryReader(str(self.cache_dir), item_loader=self.loader).get_length()  # sets the loader up from the index
        self.cache = iosim.ShardCache(self.storage)  # which shards are on disk: the simulator's own model
        self.rows: list[dict] = []

    def _fetch_index(self) -> dict:
        options = dict(self.options)
        if self.remote.startswith("s3://") and "config" not in options:
            import botocore.config  # litdata retries up to 1000 times by default: fail fast on a wrong endpoint

            options["config"] = botocore.config.Config(
                retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5
            )
        local = self.cache_dir / INDEX
        try:
            get_downloader(self.remote, str(self.cache_dir), [], options).download_file(
                f"{self.remote}/{INDEX}", str(local)
            )
            index = json.loads(local.read_text())
        except Exception as err:  # FileNotFoundError, botocore's errors, a damaged index: all say the same
            raise data.DataError(f"remote {self.remote} is unreachable or holds no streaming dataset ({_brief(err)}); "
                                 f"pass the folder or URL that streaming.write filled") from None
        self.index_bytes = local.stat().st_size
        self.index_sha256 = hashlib.sha256(local.read_bytes()).hexdigest()
        return index

    def __len__(self) -> int:
        return self.storage.num_examples

    def set_window(self, partition: torch.Tensor | None) -> None:
        """Pin the worker's partition's shards (policy "partition"); the other cached shards join the
        LRU part, least recently requested first, and the oldest are deleted until they fit."""
        for shard in self.cache.set_window(partition).tolist():
            self._delete(shard)

    def set_epoch(self, epoch: int) -> None:
        self.rows.append({"epoch": epoch, "requests": 0, "hits": 0, "misses": 0, "bytes": 0})

    def stats(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=["epoch", "requests", "hits", "misses", "bytes"])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor] | torch.Tensor:
        """Example `index`: (uint8 image, int64 label) as data.Split holds them, or a text chunk."""
        assert self.rows, "call set_epoch before reading"
        assert 0 <= index < len(self), f"example {index} is not in 0..{len(self) - 1} (padding keys: take key % N)"
        shard = index // self.shard_size
        row = self.rows[-1]
        row["requests"] += 1
        hit, evicted = self.cache.request(shard)
        for old in evicted:
            self._delete(old)
        if hit:
            row["hits"] += 1
        else:
            row["misses"] += 1
            row["bytes"] += self._download(shard)
        item = self._read(index, shard)
        return (item["image"], torch.tensor(item["label"], dtype=torch.int64)) if "label" in item else item["chunk"]

    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor] | torch.Tensor:
        """Examples stacked: (images, labels), or (B, L) text chunks."""
        items = [self[i] for i in indices]
        if isinstance(items[0], tuple):
            return torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])
        return torch.stack(items)

    def _read(self, index: int, shard: int) -> dict:
        """Decode one example from its cached shard file. The file starts with the example count and
        the offsets of the examples (uint32), as litdata's reader reads it for one example's bytes;
        reading just those bytes is 5x faster than litdata's reader, which maps a file per switch."""
        name = self.chunks[shard]["filename"]
        fd = os.open(self.cache_dir / name, os.O_RDONLY)
        try:
            offsets = os.pread(fd, 8, 4 * (1 + index - shard * self.shard_size))
            begin, end = np.frombuffer(offsets, np.uint32).tolist() if len(offsets) == 8 else (0, -1)
            raw = bytearray(max(end - begin, 0))  # writable and the example's own: its tensors may be written to
            complete = end >= begin and os.preadv(fd, [raw], begin) == len(raw)
        finally:
            os.close(fd)
        if not complete:
            raise data.DataError(f"shard {name} of remote {self.remote} is truncated (example {index} lies beyond its "
                                 f"{os.path.getsize(self.cache_dir / name)} bytes); write the shards again with "
                                 "streaming.py write")
        return self.loader.load_item_from_bytes(raw, shard)

    def _download(self, shard: int) -> int:
        """Fetch one shard file into the cache folder with litdata's downloader; its size on disk."""
        name = self.chunks[shard]["filename"]
        local = self.cache_dir / name
        try:
            if self.remote.startswith("s3://") and str(self.options.get("endpoint_url", "")).startswith("http://"):
                # litdata fetches S3 chunks with obstore, which refuses plain-http endpoints; its
                # boto3 path (download_fileobj) serves them
                part = local.with_name(name + ".part")
                with open(part, "wb") as f:
                    self.downloader.download_fileobj(f"{self.remote}/{name}", f)
                os.replace(part, local)
            else:
                self.downloader.download_chunk_from_index(shard)
        except Exception as err:
            raise data.DataError(f"could not fetch shard {name} from remote {self.remote} ({_brief(err)}); "
                                 f"check that the remote is reachable") from None
        return local.stat().st_size

    def _delete(self, shard: int) -> None:
        (self.cache_dir / self.chunks[shard]["filename"]).unlink()


def open_readers(remote: str, root: Path, workers: range, num_workers: int, cache_bytes: int | None, policy: str,
                 endpoint: str | None) -> list[WorkerReader]:
    """The readers of this process's `workers`, each in a cache folder of its own under `root` (named by
    host and process, so a second launch of the run cannot touch a live run's caches; the run removes
    them when it ends; a resumed run starts cold). The default cache: 1/n of the shards' bytes plus the
    largest shard. DataError or ValueError when the remote or the cache cannot serve."""
    remove_stale_caches(root)
    options = {"endpoint_url": endpoint} if endpoint else None
    readers = []
    for w in workers:
        folder = root / f"worker-{w}-{os.uname().nodename}-{os.getpid()}"
        reader = WorkerReader(remote, folder, cache_bytes or 2**62, policy, options)
        if cache_bytes is None:
            shards = reader.storage.shard_bytes
            shutil.rmtree(folder)  # only the index is there yet
            reader = WorkerReader(remote, folder, int(shards.sum()) // num_workers + int(shards.max()), policy, options)
        readers.append(reader)
    return readers


def remove_stale_caches(root: Path) -> None:
    """The cache folders of this host's processes that are gone: a killed run (SIGKILL, or torchrun's
    SIGTERM) never reaches its own clean-up."""
    for folder in root.glob(f"worker-*-{os.uname().nodename}-*"):
        try:
            os.kill(int(folder.name.rsplit("-", 1)[1]), 0)  # signal 0: only asks whether the process exists
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (ValueError, PermissionError):  # not one of our names, or another user's live process
            pass


def _brief(err: Exception) -> str:
    """An exception as one line: its type and the first line of its message."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"


def main(argv: list[str] | None = None) -> None:
    """python streaming.py write: a dataset's training split (image datasets: data.load) as shards."""
    args = build_parser().parse_args(argv)
    try:
        split = data.load(args.dataset, args.data_dir, train=True, subset=args.subset)
        write(split, args.out, args.shard_size)
    except (ValueError, data.DataError) as err:
        flags.die(str(err), "streaming.py")
    print(f"wrote {len(split)} {args.dataset} examples as {math.ceil(len(split) / args.shard_size)} shards of "
          f"{args.shard_size} to {args.out}")


if __name__ == "__main__":
    main()
