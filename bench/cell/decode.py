"""Images to uint8 arrays at one size, decoded by a thread pool in chunks straight into an
on-disk array, so decoding a dataset never needs it all in memory."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

CHUNK = 2048  # images decoded (and held as arrays) at a time


def to_array(im, img_size: int) -> np.ndarray:
    """A PIL image (or an HWC / HW array) -> uint8 [img_size, img_size, 3], bicubic resize."""
    if not isinstance(im, Image.Image):
        im = Image.fromarray(np.asarray(im, dtype=np.uint8))
    im = im.convert("RGB")
    if im.size != (img_size, img_size):
        im = im.resize((img_size, img_size), Image.BICUBIC)
    return np.asarray(im, dtype=np.uint8)


def fill(
    out: np.ndarray,
    fetch: Callable[[int, int], Sequence],
    convert: Callable[[object], np.ndarray],
    chunk: int = CHUNK,
) -> None:
    """``out[i] = convert(item i)`` (HWC -> CHW) for every i: ``fetch(start, stop)`` gives a
    chunk of items in order, a thread pool converts them (PIL releases the GIL while decoding)."""
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(out), chunk):
            stop = min(len(out), start + chunk)
            arrays = list(pool.map(convert, fetch(start, stop)))
            out[start:stop] = np.stack(arrays).transpose(0, 3, 1, 2)
