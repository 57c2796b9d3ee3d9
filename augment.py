"""The paper's augmentation (RandomCrop with padding, RandomHorizontalFlip, ToTensor, Normalize)
on whole uint8 batches, on the device that holds them, with per-example randomness.

dpt.py calls `augment` on every training batch (and on test batches under --eval-protocol paper):

    python -c "import torch, augment; x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8); \
print(augment.augment(x, torch.arange(2), seed=1, epoch=0, stream=augment.TRAIN, mean=(0.5,)*3, std=(0.2,)*3, \
padding=4).shape)"

Each example's crop offsets and flip are a function of (seed, epoch, stream, example index): a
counter-based hash instead of a global generator, so an example gets the same draw whichever
process, worker or batch position it lands in. That is what makes a 2-rank run and a
2-worker emulation train on identical pixels. Given the same offsets and flip, the output equals
torchvision's pipeline bit for bit (tests/test_augment.py).
"""
import functools

import torch

TRAIN, TEST = 0, 1  # streams: training batches, and test batches under the paper's eval protocol
_M32 = 0xFFFFFFFF


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2**32 for x in [0, 2**32), in 16-bit halves so int64 never overflows."""
    return (((x & 0xFFFF) * c) + ((((x >> 16) * c) & 0xFFFF) << 16)) & _M32


def hash32(x: torch.Tensor) -> torch.Tensor:
    """A bijective 32-bit integer mix (Wellons' lowbias32) on int64 tensors holding values < 2**32."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def hash32_int(x: int) -> int:
    """hash32 on one Python int (the same bits): the per-step key, with no tensor to read back."""
    x ^= x >> 16
    x = (x * 0x7FEB352D) & _M32
    x ^= x >> 15
    x = (x * 0x846CA68B) & _M32
    return x ^ (x >> 16)


def draws(
    indices: torch.Tensor, seed: int, epoch: int, stream: int, padding: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-example (top, left, flip): top and left uniform on 0..2*padding, flip with probability 1/2."""
    key = seed & _M32  # hashed in Python: nothing copied to or from the device per step
    for word in (epoch, stream):
        key = hash32_int(key ^ (word & _M32))
    h = hash32((indices.to(torch.int64) & _M32) ^ key)
    span = 2 * padding + 1
    top = hash32(h ^ 0x68E31DA4) % span
    left = hash32(h ^ 0xB5297A4D) % span
    flip = (hash32(h ^ 0x1B56C4E9) & 1).bool()
    return top, left, flip


def crop_flip(
    images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, flip: torch.Tensor, padding: int
) -> torch.Tensor:
    """Zero-pad by `padding`, crop each image at (top, left) to its original size, mirror where flip.
    One gather for the whole batch; the result is channels_last in memory (NHWC), which the
    convolutions prefer, and is the layout torchvision's per-image crops would stack to."""
    n, c, h, w = images.shape
    if padding:
        images = torch.nn.functional.pad(images, (padding,) * 4)
    rows = top[:, None] + torch.arange(h, device=images.device)  # (n, h)
    cols = torch.arange(w, device=images.device).expand(n, w)
    cols = torch.where(flip[:, None], w - 1 - cols, cols) + left[:, None]  # (n, w)
    batch = torch.arange(n, device=images.device)[:, None, None]
    return images.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


@functools.cache
def _per_channel(values: tuple[float, ...], device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, device=device).view(1, -1, 1, 1)


def normalize(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """ToTensor then Normalize, in their order and precision (float32 /255, then -mean, /std)."""
    x = images.float().div(255)
    return x.sub(_per_channel(mean, x.device)).div(_per_channel(std, x.device))


def augment(images: torch.Tensor, indices: torch.Tensor, seed: int, epoch: int, stream: int,
            mean: tuple[float, ...], std: tuple[float, ...], padding: int) -> torch.Tensor:
    """uint8 (N, C, H, W) batch of examples `indices` -> augmented, normalized float32 batch."""
    top, left, flip = draws(indices, seed, epoch, stream, padding)
    return normalize(crop_flip(images, top, left, flip, padding), mean, std)
