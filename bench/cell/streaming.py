"""Batches from images that stay on the host: the memory-mapped cache, for data beyond RAM.

When a cell's images do not fit its memory budget (``data_in_memory``, ``data_budget_mb``), each
batch is gathered from the mapped cache by a background thread, a few batches ahead, into pinned
memory (with CUDA), and copied to the device without blocking the training loop. The order and
the augmentation are :class:`DeviceBatches`' own, drawn from the same generator on the same
device, so a seed gives the same batches whichever path runs. Data that fits still goes to the
device whole (the fast path).
"""

from __future__ import annotations

import os
import queue
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from bench.cell.batches import DeviceBatches
from bench.cell.config import Cell
from bench.cell.datasets import Splits
from bench.cell.store import RowFile
from bench.cell.subsets import Subsets

PREFETCH = 4  # batches gathered ahead of the training loop
RELEASE_BYTES = 64 << 20  # unmap the pages read after this much, so RSS stays bounded
DATA_SHARE = 0.5  # auto: data on the device whole when it needs at most this share of free memory


class StreamedBatches(DeviceBatches):
    """DeviceBatches over ``x[rows]`` (``rows`` None: all of ``x``) where ``x`` stays on the host."""

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        *,
        device: torch.device,
        rows: torch.Tensor | None = None,
        release: Callable[[], None] | None = None,
        source: RowFile | None = None,
        prefetch: int = PREFETCH,
        **kwargs,
    ):
        self.rows = rows.cpu() if rows is not None else None
        self.source = source  # read rows from the file, not the map (see RowFile)
        labels = y[self.rows] if self.rows is not None else y
        super().__init__(x, labels.to(device), batch_size, device=device, **kwargs)
        self.release, self.prefetch = release, prefetch
        self.pin = self.device.type == "cuda"

    def gather(self, order: torch.Tensor | None):
        host = Prefetcher(self._host_batches(order.cpu() if order is not None else None))
        try:
            for idx, xb in zip(self.slices(order), host, strict=True):
                yield xb.to(self.device, non_blocking=True), self.y[idx]
        finally:
            host.close()

    def _host_batches(self, order: torch.Tensor | None) -> Iterator[torch.Tensor]:
        """Runs in the prefetch thread: each batch's images, read from the map into new memory."""
        read = 0
        for pos in self.slices(order):
            if isinstance(pos, slice):
                pos = torch.arange(pos.start, pos.stop)
            rows = self.rows[pos] if self.rows is not None else pos
            out = torch.empty(
                (len(rows), *self.x.shape[1:]), dtype=self.x.dtype, pin_memory=self.pin
            )
            if self.source is not None:  # nothing mapped: nothing to release
                self.source.read_into(rows.numpy(), out.numpy())
            else:
                # numpy, not torch.index_select: a torch op in this thread starts a second OpenMP
                # team that competes with the training step's threads (CPU: 0.75x, not ~0.95x)
                np.take(self.x.numpy(), rows.numpy(), axis=0, out=out.numpy())
                read += out.nbytes
                if self.release is not None and read >= RELEASE_BYTES:
                    self.release()
                    read = 0
            yield out


class Prefetcher:
    """Runs an iterator in a daemon thread, up to ``depth`` items ahead of its reader."""

    _END = object()

    def __init__(self, it: Iterator, depth: int = PREFETCH):
        self.q: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(it,), daemon=True)
        self.thread.start()

    def _run(self, it: Iterator) -> None:
        try:
            for item in it:
                if not self._put(item):
                    return
            self._put(self._END)
        except BaseException as e:  # handed to the reader, raised there
            self._put(_Failed(e))

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self):
        while True:
            item = self.q.get()
            if item is self._END:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item

    def close(self) -> None:
        """Stop the thread (the reader may leave early: Lightning stops mid-epoch at max_steps)."""
        self.stop.set()
        self.thread.join()


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


# ---------------------------------------------------------------------- which path
def streams(cell: Cell, splits: Splits, subsets: Subsets, device: torch.device) -> bool:
    """True when the cell's images (train subset, validation, test) stay on the host."""
    per_image = splits.train_x[0].numel() * splits.train_x.element_size()
    n = len(subsets.train_idx) + len(subsets.val_idx) + len(splits.test_y)
    need = n * per_image
    if cell.data_in_memory != "auto":
        stream = cell.data_in_memory == "never"
    else:
        stream = need > memory_budget(cell, device)
    if stream:
        print(
            f"{cell.run_id}: streaming {need / 2**20:,.0f} MB of images from the memory-mapped "
            f"cache (data_in_memory={cell.data_in_memory}, budget "
            f"{memory_budget(cell, device) / 2**20:,.0f} MB)",
            file=sys.stderr,
            flush=True,
        )
    return stream


def memory_budget(cell: Cell, device: torch.device) -> int:
    """Bytes the data may take whole: ``data_budget_mb``, else a share of what is free."""
    if cell.data_budget_mb is not None:
        return int(cell.data_budget_mb * 2**20)
    free = available_ram()
    if device.type == "cuda":
        free = min(free, torch.cuda.mem_get_info(device)[0])
    return int(DATA_SHARE * free)


def available_ram() -> int:
    """MemAvailable, or less when a cgroup (a container, a SLURM job) allows less."""
    free = _meminfo_available()
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),  # cgroup v2
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ):
        try:
            limit = Path(limit_file).read_text().strip()
            if limit != "max":
                free = min(free, int(limit) - int(Path(usage_file).read_text()))
        except (OSError, ValueError):
            continue
    return max(free, 0)


def _meminfo_available() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def batches(
    x: torch.Tensor,
    y: torch.Tensor,
    rows: torch.Tensor | None,
    batch_size: int,
    *,
    device: torch.device,
    stream: bool,
    release: Callable[[], None] | None = None,
    maps: list | None = None,
    **kwargs,
) -> DeviceBatches:
    """``x[rows]``, ``y[rows]`` as batches: streamed from the host, or copied to the device whole.

    Streamed from a map among ``maps``, rows are read from its file (:class:`RowFile`)."""
    if stream:
        source = RowFile.behind(x, maps or [])
        return StreamedBatches(
            x, y, batch_size, device=device, rows=rows, release=release, source=source, **kwargs
        )
    if rows is not None:
        x, y = x[rows], y[rows]
    # copy=True: on the CPU, a copy in memory rather than a view of the map
    return DeviceBatches(x.to(device, copy=True), y.to(device), batch_size, **kwargs)
