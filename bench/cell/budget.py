"""How long a cell trains: its budget resolved to optimizer steps for its training-set size.

A budget is one of ``steps``, ``examples`` (images seen) or ``epochs`` (passes over n_train;
30 when none is given). An epochs budget may be bounded in images seen by ``min_examples`` and
``max_examples``: ``epochs=200 min_examples=1.5M max_examples=9M`` gives small subsets 1.5M
images (thousands of epochs, to convergence), mid-sized ones 200 epochs, and caps the largest.
The rule depends on n alone, so both families see the same images at the same n.
``budget_scale`` multiplies whatever the rule gives: a study's convergence control trains its
largest-n cells at ``budget_scale=2`` and checks that they do not get better by more than noise.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from bench.cell.config import Cell


@dataclass(frozen=True)
class Budget:
    steps: int
    batch_size: int
    n_train: int
    rule: str

    @property
    def examples(self) -> int:
        """Images seen: every step takes a full batch (the last partial batch of an epoch is dropped)."""
        return self.steps * self.batch_size

    @property
    def epochs(self) -> float:
        return self.examples / self.n_train

    def to_dict(self) -> dict:
        return {**asdict(self), "examples": self.examples, "epochs": round(self.epochs, 4)}


def val_size_for(cell: Cell, n_available: int) -> int:
    """Validation images held out of a training split of ``n_available`` images."""
    if cell.val_size is not None:
        return cell.val_size
    return min(5000, n_available // 10)


def train_size_for(cell: Cell, n_available: int) -> int:
    """Training images of the cell once validation is held out (``n_train='all'``: the rest)."""
    if cell.n_train == "all":
        return n_available - val_size_for(cell, n_available)
    return int(cell.n_train)


def resolve_budget(cell: Cell, n_train: int) -> Budget:
    """The cell's budget in steps for ``n_train`` training images."""
    batch = min(cell.batch_size, n_train)
    kind, value = cell.budget_kind()
    scale = f" x{cell.budget_scale:g}" if cell.budget_scale != 1 else ""
    if kind == "steps":
        steps = max(1, math.ceil(value * cell.budget_scale))
        return Budget(steps, batch, n_train, f"steps={value:g}{scale}")
    if kind == "examples":
        images = value
        rule = f"examples={value:g}"
    else:
        images = value * n_train
        images = max(images, cell.min_examples or 0)
        images = min(images, cell.max_examples or math.inf)
        rule = f"epochs={value:g}" + _bounds_text(cell)
    steps = max(1, math.ceil(images * cell.budget_scale / batch))
    return Budget(steps, batch, n_train, rule + scale)


def _bounds_text(cell: Cell) -> str:
    lo, hi = cell.min_examples, cell.max_examples
    if lo is None and hi is None:
        return ""
    return f" within [{lo or 0:g}, {hi if hi is not None else math.inf:g}] images"
