"""Which images a cell trains and validates on: a fixed validation split held out of the training
split (the same for every cell), then the cell's nested, class-balanced training subset."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.cell.budget import val_size_for
from bench.cell.config import Cell
from bench.errors import BenchError

VAL_SEED = 20240  # the validation split is the same for every cell, whatever its seed


def balanced_order(y: torch.Tensor, seed: int) -> torch.Tensor:
    """All indices, interleaved class by class in a seeded order.

    Any prefix of this order is class-balanced (to within one image per class), and a shorter
    prefix lies inside a longer one: subsets of one seed are nested by construction.
    """
    g = torch.Generator().manual_seed(seed)
    classes = torch.unique(y)
    per_class = [(y == c).nonzero().flatten() for c in classes]
    per_class = [idx[torch.randperm(len(idx), generator=g)] for idx in per_class]
    class_order = torch.randperm(len(classes), generator=g).tolist()
    order = []
    for rank in range(max(len(idx) for idx in per_class)):
        order += [per_class[c][rank].item() for c in class_order if rank < len(per_class[c])]
    return torch.tensor(order, dtype=torch.int64)


@dataclass
class Subsets:
    train_idx: torch.Tensor
    val_idx: torch.Tensor


def make_subsets(cell: Cell, train_y: torch.Tensor, num_classes: int) -> Subsets:
    """Hold out a fixed validation split, then take the cell's nested, balanced training subset."""
    n_total = len(train_y)
    n_val = val_size_for(cell, n_total)
    if n_val >= n_total:
        raise BenchError(f"val_size={n_val} leaves no training images: the split has {n_total}")
    fixed = balanced_order(train_y, VAL_SEED)
    val_idx, pool = fixed[:n_val], fixed[n_val:]
    if cell.n_train == "all":
        n = len(pool)
    else:
        n = cell.n_train
        if n > len(pool):
            raise BenchError(
                f"n_train={n} is larger than the training split: {len(pool)} images "
                f"({n_total} less {n_val} held out for validation)"
            )
        if n < num_classes:
            raise BenchError(f"n_train={n} is below the number of classes ({num_classes})")
    order = balanced_order(train_y[pool], cell.seed)
    return Subsets(train_idx=pool[order[:n]], val_idx=val_idx)
