"""The decoded-image cache on disk: one folder of ``.npy`` arrays per dataset and image size.

A folder is filled under a temporary name and renamed into place, so a reader never sees half of
one. Images are read back memory-mapped: nothing is loaded until a batch touches it, and a
dataset larger than RAM is paged in (and out) by the kernel.
"""

from __future__ import annotations

import errno
import json
import mmap
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ARRAYS = ("train_x", "train_y", "test_x", "test_y")


class CacheWriter:
    """Fills ``.<name>.<pid>.tmp/`` next to ``path``; ``commit`` renames it to ``path``."""

    def __init__(self, path: Path):
        self.path = path
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        self.open: list[np.memmap] = []

    def put(self, name: str, array) -> None:
        """A whole array (a tensor or numpy array that fits in memory)."""
        if isinstance(array, torch.Tensor):
            array = array.numpy()
        try:
            np.save(self.tmp / f"{name}.npy", np.ascontiguousarray(array))
        except OSError as e:
            if e.errno is None:  # numpy's short write ("N requested and M written"): a full disk
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)) from e
            raise

    def images(self, name: str, n: int, img_size: int) -> np.memmap:
        """An uint8 [n, 3, img_size, img_size] array on disk for a decoder to fill in chunks."""
        shape = (n, 3, img_size, img_size)
        file = self.tmp / f"{name}.npy"
        arr = np.lib.format.open_memmap(file, mode="w+", dtype=np.uint8, shape=shape)
        # reserve the blocks now: a full disk is an ENOSPC here, not a SIGBUS mid-decode
        with open(file, "r+b") as f:
            os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
        self.open.append(arr)
        return arr

    def commit(self, classes: list[str]) -> None:
        for arr in self.open:
            arr.flush()
        self.open.clear()
        missing = [a for a in ARRAYS if not (self.tmp / f"{a}.npy").exists()]
        if missing:
            raise RuntimeError(f"cache {self.path.name}: {missing[0]} was never written")
        (self.tmp / "classes.json").write_text(json.dumps(list(classes)))
        try:
            os.rename(self.tmp, self.path)
        except OSError:  # another process committed the same cache first: theirs is as good
            self.discard()

    def discard(self) -> None:
        self.open.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)


def read(path: Path) -> tuple[dict, list[np.memmap]]:
    """The cached arrays as tensors (images memory-mapped, labels in memory), and the maps.

    Images are mapped copy-on-write: writable for torch, while the file itself never changes.
    """
    out, maps = {}, []
    for name in ARRAYS:
        file = path / f"{name}.npy"
        if name.endswith("_x"):
            arr = np.load(file, mmap_mode="c")
            maps.append(arr)
        else:
            arr = np.load(file)
        out[name] = torch.from_numpy(arr)
    out["classes"] = json.loads((path / "classes.json").read_text())
    return out, maps


def release(maps: list[np.memmap]) -> None:
    """Drop the mapped pages from this process's resident set; they stay in the kernel's page
    cache (a later touch maps them back without reading the disk), so RSS stays bounded."""
    for arr in maps:
        m = getattr(arr, "_mmap", None)
        if m is not None and hasattr(m, "madvise"):
            m.madvise(mmap.MADV_DONTNEED)


@dataclass(frozen=True)
class RowFile:
    """An image array's rows read from its ``.npy`` file with plain reads, not through the map.

    A mapped read faults in the pages around every row it touches (the kernel's fault-around,
    ~64 KB, against a 12 KB image at 64 px) and keeps them in the process until unmapped; a
    read into a batch's own buffer maps nothing, so a set larger than RAM costs the process only
    its batches, while the kernel's page cache still holds what fits.
    """

    path: str
    offset: int
    row_bytes: int

    @classmethod
    def behind(cls, x: torch.Tensor, maps: list[np.memmap]) -> RowFile | None:
        """The file of the map whose memory ``x`` is (the whole array), or None."""
        for arr in maps:
            if arr.ctypes.data == x.data_ptr() and arr.flags.c_contiguous and len(arr):
                return cls(str(arr.filename), int(arr.offset), int(arr[0].nbytes))
        return None

    def read_into(self, rows: np.ndarray, out: np.ndarray) -> None:
        """``out[i] = array[rows[i]]``; ``out`` is C-contiguous, one row per entry of ``rows``."""
        flat = out.reshape(len(rows), -1)
        with open(self.path, "rb", buffering=0) as f:
            for i, row in enumerate(rows.tolist()):
                f.seek(self.offset + row * self.row_bytes)
                if f.readinto(flat[i]) != self.row_bytes:
                    raise OSError(errno.EIO, f"{self.path}: short read at row {row}")
