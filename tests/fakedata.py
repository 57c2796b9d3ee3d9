"""Tiny datasets written in the real on-disk formats (CIFAR's pickled batches, MNIST's IDX files),
so the real loading code runs in tests without downloads. Used by the tests' fixtures:

    python -c "import sys; sys.path.insert(0, 'tests'); import fakedata; \
print(fakedata.write_cifar10('/tmp/c10', 50, 20))"
"""
import gzip
import pickle
from pathlib import Path

import numpy as np

import catalog

# Debian's dataset-fashion-mnist: the real Fashion-MNIST, where the machine has it
REAL_FASHION_MNIST = Path(catalog.DATASETS["fashionmnist"].debian_folder)


def _images(rng: np.random.Generator, n: int, channels: int, size: int, labels: np.ndarray, classes: int) -> np.ndarray:
    """Random images whose mean brightness depends on the label, so a model can learn something."""
    base = rng.integers(0, 256, size=(n, channels, size, size))
    shift = (labels.reshape(-1, 1, 1, 1) * (160 // classes)).astype(np.int64)
    return np.clip(base // 3 + shift, 0, 255).astype(np.uint8)


def _pickle(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar10(root: str | Path, n_train: int, n_test: int, seed: int = 0) -> dict:
    """cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}: dicts with 'data'
    (N x 3072 uint8, R then G then B planes) and 'labels'. Returns the arrays written (N, C, H, W)."""
    rng = np.random.default_rng(seed)
    folder = Path(root, "cifar-10-batches-py")
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = rng.integers(0, 10, size=n)
        images = _images(rng, n, 3, 32, labels, 10)
        out[split] = (images, labels)
        names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        for name, part in zip(names, np.array_split(np.arange(n), len(names))):
            _pickle(folder / name, {"batch_label": name, "labels": labels[part].tolist(),
                                    "data": images[part].reshape(len(part), -1),
                                    "filenames": [f"{i}.png" for i in part]})
    _pickle(folder / "batches.meta", {"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": 10000})
    return out


def write_cifar100(root: str | Path, n_train: int, n_test: int, seed: int = 0) -> dict:
    """cifar-100-python/{train, test, meta}: dicts with 'data', 'fine_labels', 'coarse_labels'."""
    rng = np.random.default_rng(seed)
    folder = Path(root, "cifar-100-python")
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = rng.integers(0, 100, size=n)
        images = _images(rng, n, 3, 32, labels, 100)
        out[split] = (images, labels)
        _pickle(
            folder / split,
            {
                "batch_label": split,
                "fine_labels": labels.tolist(),
                "coarse_labels": (labels // 5).tolist(),
                "data": images.reshape(n, -1),
                "filenames": [f"{i}.png" for i in range(n)],
            },
        )
    _pickle(
        folder / "meta",
        {"fine_label_names": [f"c{i}" for i in range(100)], "coarse_label_names": [f"s{i}" for i in range(20)]},
    )
    return out


def idx_bytes(array: np.ndarray) -> bytes:
    """An unsigned-byte IDX file: 0x00 0x00 0x08 ndim, then big-endian int32 sizes, then the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_fashion_mnist(folder: str | Path, n_train: int, n_test: int, seed: int = 0, gz: bool = True,
                        mean: float | None = None) -> dict:
    """{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] flat in `folder` (Debian's layout): the IDX
    format every IDX dataset shares. `mean`: images scaled to that mean pixel (/255)."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, size=n)
        images = _images(rng, n, 1, 28, labels, 10)
        if mean is not None:
            images = np.clip(images * (mean * 255 / images.mean()), 0, 255).astype(np.uint8)
        out["train" if prefix == "train" else "test"] = (images, labels)
        for kind, array in (("images-idx3", images[:, 0]), ("labels-idx1", labels)):
            name = f"{prefix}-{kind}-ubyte"
            if gz:
                with gzip.open(folder / f"{name}.gz", "wb") as f:
                    f.write(idx_bytes(array))
            else:
                (folder / name).write_bytes(idx_bytes(array))
    return out


def write_text(path: str | Path, lines: int = 2000, seed: int = 0) -> str:
    """A UTF-8 corpus of `lines` short sentences over a small vocabulary (with a few multi-byte
    characters), enough lines for text.py's held-out units (every 10th block of 100 lines)."""
    rng = np.random.default_rng(seed)
    words = ["the", "king", "said", "unto", "them", "and", "it", "came", "to", "pass", "über", "naïve", "café", "of"]
    text = "".join(" ".join(rng.choice(words, size=rng.integers(3, 9))).capitalize() + ".\n" for _ in range(lines))
    Path(path).write_text(text, encoding="utf-8")
    return text
