import gzip

import numpy as np
import pytest
import torch

import catalog
import data
import fakedata
import tasks
from train import IndexedDataset


def test_cifar10_real_format_loads_through_torchvision(cifar10_dir):
    root, arrays = cifar10_dir
    for train, split in ((True, "train"), (False, "test")):
        loaded = data.load("cifar10", root, train=train)
        images, labels = arrays[split]
        assert loaded.images.dtype == torch.uint8 and loaded.images.shape == (len(labels), 3, 32, 32)
        assert torch.equal(loaded.images, torch.from_numpy(images))  # batches concatenated in order, CHW kept
        assert loaded.labels.tolist() == labels.tolist()


def test_cifar100_uses_fine_labels(tmp_path):
    arrays = fakedata.write_cifar100(tmp_path, 30, 10)
    loaded = data.load("cifar100", tmp_path, train=True)
    assert loaded.labels.tolist() == arrays["train"][1].tolist()
    assert torch.equal(loaded.images, torch.from_numpy(arrays["train"][0]))


@pytest.mark.parametrize("name", [n for n, d in catalog.DATASETS.items() if d.format == "idx"])
@pytest.mark.parametrize("layout", ["flat-gz", "torchvision-raw"])
def test_every_idx_dataset_loads_from_its_record(tmp_path, layout, name):
    """One loader for the IDX format: a dataset's folders and download come from its record."""
    folder = tmp_path if layout == "flat-gz" else tmp_path / catalog.DATASETS[name].torchvision / "raw"
    arrays = fakedata.write_fashion_mnist(folder, 40, 12, gz=layout == "flat-gz")
    train = data.load(name, tmp_path, train=True)
    test = data.load(name, tmp_path, train=False)
    assert train.images.shape == (40, 1, 28, 28) and test.images.shape == (12, 1, 28, 28)
    assert torch.equal(train.images, torch.from_numpy(arrays["train"][0]))
    assert test.labels.tolist() == arrays["test"][1].tolist()


@pytest.mark.skipif(not (fakedata.REAL_FASHION_MNIST / "train-images-idx3-ubyte.gz").exists(),
                    reason="Debian's dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)")
def test_real_fashion_mnist_from_debian(tmp_path):
    train = data.load("fashionmnist", tmp_path, train=True)  # empty data dir: falls back to Debian's files
    test = data.load("fashionmnist", tmp_path, train=False)
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert torch.bincount(train.labels).tolist() == [6000] * 10  # the real set is balanced
    assert 60 < train.images.float().mean() < 90


@pytest.mark.parametrize("given,holds", [("fashionmnist", "mnist"), ("mnist", "fashionmnist")])
def test_another_idx_datasets_files_are_refused(tmp_path, given, holds):
    """MNIST and Fashion-MNIST share file names: the images' mean pixel tells them apart."""
    fakedata.write_fashion_mnist(tmp_path, 200, 20, mean=catalog.DATASETS[holds].pixel_mean)
    with pytest.raises(data.DataError, match=f"holds {catalog.DATASETS[holds].title}'s images .* --dataset {holds}"):
        data.load(given, tmp_path, train=True)
    assert len(data.load(holds, tmp_path, train=True)) == 200


@pytest.mark.skipif(not (fakedata.REAL_FASHION_MNIST / "train-images-idx3-ubyte.gz").exists(),
                    reason="Debian's dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)")
def test_the_real_fashion_mnist_is_not_taken_for_mnist(tmp_path):
    with pytest.raises(data.DataError, match="holds Fashion-MNIST's images"):
        data.load("mnist", fakedata.REAL_FASHION_MNIST, train=True)
    with pytest.raises(data.DataError, match="holds Fashion-MNIST's images"):
        data.load("mnist", fakedata.REAL_FASHION_MNIST, train=False, subset=100)


def test_subset_takes_the_first_examples(cifar10_dir):
    root, arrays = cifar10_dir
    loaded = data.load("cifar10", root, train=True, subset=10)
    assert loaded.labels.tolist() == arrays["train"][1][:10].tolist()
    with pytest.raises(data.DataError, match="--subset 100 exceeds the 67"):
        data.load("cifar10", root, train=True, subset=100)


def test_indexed_dataset_serves_padding_keys_as_their_example(cifar10_dir):
    root, _ = cifar10_dir
    ds = IndexedDataset(data.load("cifar10", root, train=True), tasks.of("cifar10"))
    image, label, key = ds[67 + 5]
    assert key == 72 and torch.equal(image, ds.split.images[5]) and label == ds.split.labels[5]


def test_truncated_cifar_batch_is_reported_as_corrupt(cifar10_dir):
    root, _ = cifar10_dir
    path = root / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(data.DataError, match="corrupt cifar10 file.*data_batch_3.*--data-dir"):
        data.load("cifar10", root, train=True)


def test_bad_idx_magic_and_truncation_are_reported(tmp_path):
    fakedata.write_fashion_mnist(tmp_path, 20, 5)
    images = tmp_path / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(images.read_bytes())
    images.write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(data.DataError, match="truncated"):
        data.load("fashionmnist", tmp_path, train=True)
    images.write_bytes(gzip.compress(b"\x12\x34" + raw[2:]))
    with pytest.raises(data.DataError, match="bad magic"):
        data.load("fashionmnist", tmp_path, train=True)
    images.write_bytes(b"not gzip at all")
    with pytest.raises(data.DataError, match="corrupt data file"):
        data.load("fashionmnist", tmp_path, train=True)


def test_labels_out_of_range_are_reported(tmp_path):
    fakedata.write_fashion_mnist(tmp_path, 20, 5)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(fakedata.idx_bytes(np.full(20, 12))))
    with pytest.raises(data.DataError, match="labels outside 0..9"):
        data.load("fashionmnist", tmp_path, train=True)


def test_missing_cifar_offline_names_the_files_and_the_flag(tmp_path, monkeypatch):
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # nothing listens there: offline, whatever the network
    with pytest.raises(data.DataError) as err:
        data.load("cifar10", tmp_path / "nowhere", train=True)
    message = str(err.value)
    assert "could not be downloaded" in message and "--data-dir" in message
    assert "cifar-10-batches-py/data_batch_1" in message and "cifar-10-batches-py/test_batch" in message
