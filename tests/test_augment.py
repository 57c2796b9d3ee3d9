import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import functional as TF

import augment
import catalog


def lowbias32(x: int) -> int:
    """Plain-Python reference of the hash (32-bit unsigned arithmetic)."""
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


def test_hash_matches_the_plain_python_reference():
    rng = np.random.default_rng(0)
    xs = [0, 1, 0xFFFFFFFF, 0x80000000] + rng.integers(0, 2**32, size=2000).tolist()
    got = augment.hash32(torch.tensor(xs, dtype=torch.int64)).tolist()
    assert got == [lowbias32(x) for x in xs]


@pytest.mark.parametrize("name", ["cifar10", "fashionmnist"])
def test_output_equals_the_torchvision_pipeline_given_the_same_draws(name):
    spec = catalog.DATASETS[name]
    n, (channels, size, _) = 96, spec.shape
    images = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8)
    indices = torch.randperm(10_000)[:n]
    got = augment.augment(images, indices, seed=11, epoch=4, stream=augment.TRAIN, mean=spec.mean, std=spec.std,
                          padding=spec.crop_padding)
    top, left, flip = augment.draws(indices, 11, 4, augment.TRAIN, spec.crop_padding)
    expected = []
    for i in range(n):  # the paper's pipeline on PIL images, with RandomCrop's parameters fixed
        array = images[i].permute(1, 2, 0).numpy()
        img = Image.fromarray(array if channels == 3 else array[:, :, 0])
        if spec.crop_padding:
            img = TF.crop(TF.pad(img, spec.crop_padding), int(top[i]), int(left[i]), size, size)
        if flip[i]:
            img = TF.hflip(img)
        expected.append(T.Normalize(spec.mean, spec.std)(T.ToTensor()(img)))
    assert torch.equal(got, torch.stack(expected))
    assert got.is_contiguous(memory_format=torch.channels_last)


def test_draws_follow_randomcrop_and_flip_distributions():
    top, left, flip = augment.draws(torch.arange(90_000), seed=3, epoch=1, stream=augment.TRAIN, padding=4)
    for offsets in (top, left):
        counts = torch.bincount(offsets, minlength=9).double()
        assert offsets.min() == 0 and offsets.max() == 8  # RandomCrop(32, 4): 0..8 inclusive
        chi2 = ((counts - 10_000) ** 2 / 10_000).sum().item()
        assert chi2 < 30  # 8 degrees of freedom: p ~ 2e-4 under uniformity
    assert abs(flip.double().mean().item() - 0.5) < 0.01
    # top, left and flip are not tied to each other
    assert abs(torch.corrcoef(torch.stack([top.double(), left.double(), flip.double()]))[0, 1:]).max() < 0.02


def test_draws_depend_on_the_example_not_its_place():
    indices = torch.tensor([5, 900, 31, 7])
    a = augment.draws(indices, 1, 2, augment.TRAIN, 4)
    b = augment.draws(indices.flip(0), 1, 2, augment.TRAIN, 4)
    c = augment.draws(torch.tensor([900]), 1, 2, augment.TRAIN, 4)
    for x, y, z in zip(a, b, c):
        assert torch.equal(x, y.flip(0)) and x[1] == z[0]


def test_draws_change_with_seed_epoch_and_stream():
    idx = torch.arange(1000)
    base = torch.stack(augment.draws(idx, 1, 2, augment.TRAIN, 4)[:2])
    for other in (augment.draws(idx, 2, 2, augment.TRAIN, 4), augment.draws(idx, 1, 3, augment.TRAIN, 4),
                  augment.draws(idx, 1, 2, augment.TEST, 4)):
        assert (torch.stack(other[:2]) != base).float().mean() > 0.8
