import pytest

import fakedata


@pytest.fixture
def cifar10_dir(tmp_path):
    """A --data-dir holding a tiny CIFAR-10 (67 train, 20 test) in the real format. 67 is odd, so
    DistributedSampler pads and Stripes/Blocks partitions differ in size."""
    root = tmp_path / "data"
    arrays = fakedata.write_cifar10(root, n_train=67, n_test=20)
    return root, arrays
