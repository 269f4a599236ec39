"""What a grid costs before it runs: images seen per cell, and GPU time at measured rates.

The rates are one cell alone on an NVIDIA H200 (bf16, batch 256, 32 px), from
``benchmarks/results-h200-throughput-2.txt``. Cells packed several to a GPU run faster in
aggregate (see benchmarks/README.md), so the one-at-a-time hours are an upper bound.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

from bench.cell.budget import resolve_budget, train_size_for
from bench.cell.config import Cell

H200_IMAGES_PER_S = {
    ("resnet", "xxs"): 28_882,
    ("resnet", "xs"): 23_721,
    ("resnet", "s"): 26_095,
    ("resnet", "m"): 19_868,
    ("resnet", "l"): 21_878,
    ("vit", "xxs"): 25_228,
    ("vit", "xs"): 18_618,
    ("vit", "s"): 14_729,
    ("vit", "m"): 16_275,
    ("vit", "l"): 8_299,
}
RATE_IMG_SIZE = 32
# Training-split sizes for n_train='all' where the dataset is not on disk to count.
TRAIN_SPLIT = {"cifar10": 50_000, "cifar100": 50_000, "digits": 1_440, "synthetic": 4_000}


@dataclass(frozen=True)
class Cost:
    cells: int
    images: int
    gpu_s: float  # one cell at a time on an H200, at the measured single-cell rates

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.cells + other.cells, self.images + other.images, self.gpu_s + other.gpu_s)


def cell_cost(cell: Cell) -> Cost:
    n_train = train_size_for(cell, split_size(cell))
    images = resolve_budget(cell, n_train).examples
    # Throughput falls with the pixel count (more tokens, larger feature maps).
    rate = H200_IMAGES_PER_S[(cell.family, cell.size)] * (RATE_IMG_SIZE / cell.img_size) ** 2
    return Cost(1, images, images / rate)


def relative_cost(cell: Cell) -> float | None:
    """A cell's work in H200-seconds, for comparing cells on any machine (the grid's ETA);
    None for a model without a measured rate."""
    if (cell.family, cell.size) not in H200_IMAGES_PER_S:
        return None
    return cell_cost(cell).gpu_s


def grid_cost(cells: list[Cell]) -> Cost:
    return sum((cell_cost(c) for c in cells), Cost(0, 0, 0.0))


def split_size(cell: Cell) -> int:
    """Images in the cell's training split: counted on disk for a folder, else the known size."""
    if cell.dataset == "imagefolder" and cell.data_dir:
        counted = _files_under(str(Path(cell.data_dir) / "train"))
        if counted is not None:
            return counted
    return TRAIN_SPLIT.get(cell.dataset, 50_000)


@functools.cache  # every cell of a grid reads the same folder: walk it once
def _files_under(folder: str) -> int | None:
    if not Path(folder).is_dir():
        return None
    return sum(len(files) for _, _, files in os.walk(folder))
