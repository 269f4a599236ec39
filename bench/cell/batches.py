"""Batches that live on the training device: slices of uint8 tensors, augmented there.

The training loop does no per-image Python work: a batch is an index into tensors already on the
device, augmented for the whole batch at once (random crop with padding, horizontal flip), and
normalised inside the model wrapper.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from bench.cell.config import Cell


def channel_stats(
    x: torch.Tensor,
    idx: torch.Tensor | None = None,
    chunk: int = 1000,
    release: Callable[[], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of (at most 10,000 of) the images ``x[idx]``, in [0, 1] units.

    Read ``chunk`` images at a time into float64 sums: no float copy of 10,000 images (2 GB at
    224 px), and no copy of a whole training subset, which may be a memory map larger than RAM.
    """
    idx = idx[:10000] if idx is not None else torch.arange(min(len(x), 10000))
    s = torch.zeros(3, dtype=torch.float64)
    sq = torch.zeros(3, dtype=torch.float64)
    for part in idx.split(chunk):
        xb = x[part.to(x.device)].to(torch.float64) / 255.0
        s += xb.sum(dim=(0, 2, 3)).cpu()
        sq += (xb * xb).sum(dim=(0, 2, 3)).cpu()
        if release is not None:  # a map's touched pages, dropped chunk by chunk: RSS stays small
            release()
    n = len(idx) * x.shape[2] * x.shape[3]
    mean = s / n
    var = (sq - n * mean * mean) / max(n - 1, 1)  # unbiased, as torch.std
    std = var.clamp_min(0).sqrt().float().clamp_min(1e-3)
    return mean.float().to(x.device), std.to(x.device)


def augment(x: torch.Tensor, pad: int, g: torch.Generator) -> torch.Tensor:
    """Random crop with zero padding and horizontal flip, for a whole uint8 batch at once."""
    b, c, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), device=x.device, generator=g)
    dx = torch.randint(0, 2 * pad + 1, (b,), device=x.device, generator=g)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    out = xp[batch, chan, rows, cols]
    flip = torch.rand(b, device=x.device, generator=g) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(3), out)


# One call of the per-image policy launches ~200 kernels whatever its size (bench.cell.augment),
# and a small model's GPU step is host-bound, so training batches go through the transform about
# this many pixels at a time: 4 batches of 512 at 32 px, one batch from 64 px at batch 512.
TRANSFORM_PIXELS = 2048 * 32 * 32


def transform_batches(batch_size: int, img_size: int) -> int:
    """How many training batches share one call of the transform (:data:`TRANSFORM_PIXELS`)."""
    return max(1, TRANSFORM_PIXELS // (batch_size * img_size * img_size))


PERMUTE_SEED = 7  # one permutation for every cell of a study: the task, not the seed, fixes it


class PatchPermutation:
    """Shuffle the ``block`` x ``block``-pixel tiles of uint8 images [B, C, H, W] by one fixed,
    seeded permutation of the tile grid (the same for every image and every call).

    ``pixels``: also shuffle the pixels inside every tile, by one fixed permutation shared by all
    tiles and channels. A ViT whose patches are the tiles stays blind to it (its shared patch
    embedding absorbs the inner shuffle, its position embeddings the outer one), while a CNN
    loses its locality inside the tiles as well as across them.
    """

    def __init__(self, img_size: int, block: int, seed: int = PERMUTE_SEED, pixels: bool = False):
        if img_size % block:
            raise ValueError(f"block {block} does not divide the image side {img_size}")
        self.grid = img_size // block
        self.block = block
        g = torch.Generator().manual_seed(seed)
        self.order = torch.randperm(self.grid * self.grid, generator=g)
        self.inner = torch.randperm(block * block, generator=g) if pixels else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        n, k = self.grid, self.block
        tiles = x.reshape(b, c, n, k, n, k).permute(0, 1, 2, 4, 3, 5).reshape(b, c, n * n, k * k)
        tiles = tiles[:, :, self.order.to(x.device)]
        if self.inner is not None:
            tiles = tiles[..., self.inner.to(x.device)]
        return tiles.reshape(b, c, n, n, k, k).permute(0, 1, 2, 4, 3, 5).reshape(b, c, h, w)


def tile_permutation(cell: Cell) -> PatchPermutation | None:
    """The positive control's fixed shuffle of the image's tiles, or None."""
    if cell.permute_patches is None:
        return None
    return PatchPermutation(cell.img_size, cell.permute_patches, pixels=cell.permute_pixels)


class DeviceBatches:
    """An epoch of shuffled (and optionally augmented) batches sliced from on-device tensors.

    Yields uint8 images; normalisation happens in the model wrapper, so the data moved and
    indexed is a quarter of the float size.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool,
        augment_pad: int = 0,
        seed: int = 0,
        drop_last: bool = False,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        transform_batches: int = 1,
        device: torch.device | None = None,
    ):
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.shuffle, self.pad, self.drop_last = shuffle, augment_pad, drop_last
        self.transform = transform  # after augmentation, on every batch (e.g. PatchPermutation)
        self.transform_batches = transform_batches  # batches per call of ``transform``
        self.device = torch.device(device) if device is not None else x.device
        self.g = torch.Generator(device=self.device).manual_seed(seed)

    def __len__(self) -> int:
        n = len(self.y)
        return (
            n // self.batch_size
            if self.drop_last and n >= self.batch_size
            else -(-n // self.batch_size)
        )

    def skip_epoch(self) -> None:
        """Draw what one pass draws from the generator without making its batches: a resumed
        cell's batches then continue exactly as the killed run's would have."""
        n = len(self.y)
        if self.shuffle:
            torch.randperm(n, device=self.device, generator=self.g)
        sizes = [min(n, (i + 1) * self.batch_size) - i * self.batch_size for i in range(len(self))]
        for b in sizes if self.pad else ():
            augment(torch.zeros(b, 1, 1, 1, device=self.device), self.pad, self.g)
        skip = getattr(self.transform, "skip", None)  # a random transform's own draws
        for i in range(0, len(sizes), self.transform_batches) if skip is not None else ():
            skip(sum(sizes[i : i + self.transform_batches]), self.device)

    def __iter__(self):
        n = len(self.y)
        order = torch.randperm(n, device=self.device, generator=self.g) if self.shuffle else None
        chunk = []
        for xb, yb in self.gather(order):
            if self.pad:
                xb = augment(xb, self.pad, self.g)
            if self.transform is None:
                yield xb, yb
                continue
            chunk.append((xb, yb))
            if len(chunk) == self.transform_batches:
                yield from self._transformed(chunk)
                chunk = []
        yield from self._transformed(chunk)

    def _transformed(self, chunk: list[tuple[torch.Tensor, torch.Tensor]]):
        """The batches of ``chunk`` through one call of the transform: its kernel launches, not
        its images, are what a small batch's augmentation costs on a GPU."""
        if not chunk:
            return
        ys = [yb for _, yb in chunk]
        xb = torch.cat([xb for xb, _ in chunk]) if len(chunk) > 1 else chunk[0][0]
        yield from zip(self.transform(xb).split([len(yb) for yb in ys]), ys, strict=True)

    def slices(self, order: torch.Tensor | None):
        """Each batch's positions: a slice of ``order`` (or of the stored order)."""
        n = len(self.y)
        for i in range(len(self)):
            sl = slice(i * self.batch_size, min(n, (i + 1) * self.batch_size))
            yield order[sl] if order is not None else sl

    def gather(self, order: torch.Tensor | None):
        """Un-augmented batches in ``order``; :class:`bench.cell.streaming.StreamedBatches`
        gathers them from the host instead."""
        for idx in self.slices(order):
            yield self.x[idx], self.y[idx]
