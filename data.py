"""Datasets as uint8 image tensors plus labels, each example addressed by its index.

dpt.py loads the train and test splits through `load` before any process group starts, so a
missing or corrupt file stops the run with one line; by hand:

    python -c "import data; s = data.load('fashionmnist', 'data', train=True); print(s.images.shape, s.labels[:10])"

A dataset's record (catalog.DATASETS) says everything its loader needs: its `format` picks the
loader here ("cifar": torchvision's pickled batches; "idx": the MNIST format), and the rest (shape,
classes, files, torchvision's class for the download, a Debian folder) is data. CIFAR-10/100 come
through torchvision (downloaded into --data-dir when missing and the network is reachable). An IDX
dataset (MNIST, Fashion-MNIST) is read from its four IDX files, gzipped or not, in torchvision's
layout (<data-dir>/<torchvision class>/raw), flat in <data-dir>, or its Debian package's folder
(Fashion-MNIST: /usr/share/datasets/fashion-mnist). Their files share names, so the training images'
mean pixel is checked against the record's: another IDX dataset's copy is refused, not trained on.
"""
import fcntl
import functools
import gzip
import os
import socket
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import catalog as C
import results


class DataError(Exception):
    """A problem with the user's data that they can fix; dpt.py prints it as a one-line error."""


@dataclass
class Split:
    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor  # (N,) int64
    source: str = ""  # the files it was read from, for the run's log

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device | str) -> "Split":
        return Split(self.images.to(device), self.labels.to(device), self.source)


def _cifar_class(base: type) -> type:
    class LocalCopy(base):
        """torchvision's reader with its md5 check replaced by a parse check: a copy that is not
        byte-identical to the release (a subset, or a test's tiny files) still loads, and a
        damaged file fails while parsing. Download still verifies md5 (torchvision's download)."""

        def _check_integrity(self) -> bool:
            folder = Path(self.root, self.base_folder)
            return all((folder / name).is_file() for name, _ in self.train_list + self.test_list)

        def _load_meta(self) -> None:
            self.classes = []  # class names are not needed; labels are indices

    return LocalCopy


@functools.cache
def _cifar(name: str) -> type:
    """torchvision's reader for `name` (imported on first use: torchvision takes seconds to import)."""
    import torchvision

    return _cifar_class(getattr(torchvision.datasets, C.DATASETS[name].torchvision))


def _download_lock(root: Path):
    """Serialize downloads into one folder: all torchrun ranks of a node call load at once."""
    root.mkdir(parents=True, exist_ok=True)
    lock = os.fdopen(results.open_file(root / ".download.lock", os.O_WRONLY | os.O_CREAT), "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    return lock


def _missing_message(name: str, root: Path, files: tuple[str, ...], err: Exception) -> str:
    spec = C.DATASETS[name]
    where = f"{root}/" if spec.format != "idx" else " or ".join(f"{f}/" for f in _idx_folders(spec, root))
    hint = f" (or: apt-get install {spec.debian_package})" if spec.debian_package else ""
    why = " ".join(str(err).split())  # one line: torchvision's download errors span several
    return (f"{name} not found and could not be downloaded ({type(err).__name__}: {why}); "
            f"put {', '.join(files)} under {where} and pass --data-dir{hint}")


def _fetch(name: str, root: Path, fetch) -> None:
    """Download into root (one process at a time), or explain what a local copy must hold."""
    spec = C.DATASETS[name]
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(60)  # torchvision's urllib calls wait forever by default
    try:
        with _download_lock(root):
            fetch()
    except Exception as err:
        raise DataError(_missing_message(name, root, spec.train_files + spec.test_files, err)) from None
    finally:
        socket.setdefaulttimeout(old_timeout)


def _load_cifar(name: str, root: Path, train: bool) -> Split:
    cls, spec = _cifar(name), C.DATASETS[name]
    if not all((root / f).is_file() for f in spec.train_files + spec.test_files):
        _fetch(name, root, lambda: cls(str(root), train=train, download=True))  # md5-checked by torchvision
    files = spec.train_files if train else spec.test_files
    try:
        ds = cls(str(root), train=train)
    except Exception as err:  # unpickling, reshaping: a damaged file
        raise DataError(f"corrupt {name} file among {', '.join(str(root / f) for f in files)} "
                        f"({type(err).__name__}: {err}); delete it so that it is downloaded again, "
                        f"or point --data-dir at a good copy") from None
    images = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))
    labels = torch.tensor(ds.targets, dtype=torch.int64)
    return _checked(name, images, labels, ", ".join(str(root / f) for f in files))


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format), gzipped or not: magic 0x0000 0x08 (uint8) ndim, big-endian sizes."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as err:  # zlib.error: a damaged deflate stream
        raise DataError(f"corrupt data file {path} ({err}); delete it or point --data-dir at a good copy") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or not 1 <= raw[3] <= 3:
        raise DataError(f"corrupt data file {path}: not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise DataError(f"corrupt data file {path}: header says {shape} but holds {body.size} bytes (truncated?)")
    return body.reshape(shape)


IDX_STEMS = {True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _idx(folder: Path, stem: str) -> Path | None:
    return next((c for c in (folder / f"{stem}.gz", folder / stem) if c.is_file()), None)


def _idx_folders(spec: C.Dataset, root: Path) -> list[Path]:
    """Where an IDX dataset's files may be, in order: torchvision's layout, flat, its Debian folder."""
    return [root / spec.torchvision / "raw", root] + ([Path(spec.debian_folder)] if spec.debian_folder else [])


def _idx_files(spec: C.Dataset, folders: list[Path], train: bool) -> list[Path] | None:
    """The split's two IDX files from the first folder holding any of the dataset's four: all four
    come from one folder, so images are never paired with another copy's labels. None: no folder
    holds any; DataError: the first that does lacks one of them."""
    for folder in folders:
        found = {stem: _idx(folder, stem) for stems in IDX_STEMS.values() for stem in stems}
        if not any(found.values()):
            continue
        missing = [stem for stem, path in found.items() if path is None]
        if missing:
            raise DataError(f"{folder} holds some of {spec.title}'s files but not {', '.join(missing)} (.gz or "
                            "not); put all four files in one folder (images beside their labels)")
        return [found[stem] for stem in IDX_STEMS[train]]
    return None


def _load_idx(name: str, root: Path, train: bool) -> Split:
    """An IDX dataset: the record's folders, or torchvision's download of its class into --data-dir."""
    spec = C.DATASETS[name]
    folders = _idx_folders(spec, root)
    paths = _idx_files(spec, folders, train)
    if paths is None:
        def download():
            import torchvision

            getattr(torchvision.datasets, spec.torchvision)(str(root), train=train, download=True)
        _fetch(name, root, download)
        paths = _idx_files(spec, folders, train)
    images, labels = (read_idx(p) for p in paths)
    if images.ndim != 3 or labels.ndim != 1:
        raise DataError(f"corrupt data files {paths[0]}, {paths[1]}: expected N x H x W images and N labels")
    split = _checked(name, torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)),
                     f"{paths[0]}, {paths[1]}")
    _same_dataset(name, split.images, paths[0])
    return split


PIXEL_MEAN_TOLERANCE = 0.03  # a split's mean pixel from its dataset's (any 100 images are within 0.01)


def _same_dataset(name: str, images: torch.Tensor, path: Path) -> None:
    """The IDX datasets share file names: refuse images whose mean pixel is another IDX dataset's, not this
    one's (MNIST's files given as Fashion-MNIST, say). Data that is neither (a test's tiny files) passes."""
    mean = images[:10_000].float().mean().item() / 255
    known = {n: d.pixel_mean for n, d in C.DATASETS.items() if d.format == "idx"}
    nearest = min(known, key=lambda n: abs(known[n] - mean))
    if nearest != name and abs(known[nearest] - mean) < PIXEL_MEAN_TOLERANCE < abs(known[name] - mean):
        raise DataError(f"{path} holds {C.DATASETS[nearest].title}'s images (mean pixel {mean:.3f}), not "
                        f"{C.DATASETS[name].title}'s ({known[name]:.3f}); pass --dataset {nearest}, or point "
                        f"--data-dir at a copy of {C.DATASETS[name].title}")


def _checked(name: str, images: torch.Tensor, labels: torch.Tensor, where: str) -> Split:
    spec = C.DATASETS[name]
    if len(images) != len(labels) or len(labels) == 0:
        raise DataError(f"corrupt {name} data in {where}: {len(images)} images but {len(labels)} labels")
    if tuple(images.shape[1:]) != spec.shape:
        shape = "x".join(map(str, images.shape[1:]))
        raise DataError(f"{name} data in {where} holds {shape} images (channels x height x width), expected "
                        f"{'x'.join(map(str, spec.shape))}; point --data-dir at a copy of {spec.title}")
    if labels.min() < 0 or labels.max() >= spec.classes:
        raise DataError(f"corrupt {name} data in {where}: labels outside 0..{spec.classes - 1}")
    files = where.split(", ")
    return Split(
        images.contiguous(), labels, where if len(files) < 3 else f"{os.path.commonpath(files)}/ ({len(files)} files)"
    )


def checked_folder(data_dir: str | os.PathLike) -> Path:
    """--data-dir as a Path; DataError when it is a file, a broken symlink or a symlink loop (which
    would otherwise pass for a missing folder and fall back to another copy)."""
    root = Path(data_dir).expanduser()
    if root.is_symlink() and not root.exists():
        raise DataError(f"--data-dir {root} is a broken symlink or a symlink loop; pass the folder that holds the "
                        "dataset")
    if root.exists() and not root.is_dir():
        raise DataError(f"--data-dir {root} is a file, not a folder; pass the folder that holds the dataset")
    return root


# The loader of each image format; what a dataset holds (shape, classes, normalization, files) is its record.
LOADERS = {"cifar": _load_cifar, "idx": _load_idx}


def load(name: str, data_dir: str | os.PathLike, train: bool, subset: int = 0) -> Split:
    """The train or test split of `name`; with subset > 0, its first `subset` examples."""
    if name not in C.DATASETS or C.DATASETS[name].format not in LOADERS:
        raise DataError(f"unknown image dataset {name!r}; choose from {', '.join(C.names_of(C.DATASETS, 'image'))}")
    root = checked_folder(data_dir)
    split = LOADERS[C.DATASETS[name].format](name, root, train)
    if subset:
        if subset > len(split):
            which = "--subset" if train else "--test-subset"
            raise DataError(f"{which} {subset} exceeds the {len(split)} {'training' if train else 'test'} "
                            f"examples of {name}; pass at most {len(split)}")
        split = Split(
            split.images[:subset].clone(), split.labels[:subset].clone(), f"the first {subset} of {split.source}"
        )
    return split
