"""Which training settings a study's records differ in, beyond what its scaling grid varies.

A scaling study pools the seeds of a cell (family, size, n_train, budget_scale): their spread is
the noise of its intervals. Records of one cell that differ in anything else the cell's identity
holds (a learning rate, a recipe, an image size) are not seeds of one experiment, and pooling them
would pass a tuning grid off as seed noise. ``bench analyze`` refuses them, naming the fields;
``bench tune`` (:mod:`bench.analysis.tuning`) reads such a grid.

Runs made by ``bench finetune`` (records whose cell names a ``parent``) start from another
cell's weights: they are left out of a scaling study and compared by ``bench finetune --report``.
"""

from __future__ import annotations

import math
from dataclasses import fields

import pandas as pd

from bench.analysis.frame import RESOLVED
from bench.cell.config import Cell
from bench.errors import BenchError

CELL_KEYS = ("family", "size", "n_train", "budget_scale")
# Identity fields that are not settings: the cell's keys, its seed, and the parent of a derived run.
NOT_SETTINGS = (*CELL_KEYS, "seed", "parent")
DEFAULTS = {
    f.name: f.default
    for f in fields(Cell)
    if not f.metadata["runtime"] and f.name not in NOT_SETTINGS
}


def split_derived(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """(the records trained from scratch, how many were started from a parent's weights)."""
    if "parent" not in frame.columns:
        return frame, 0
    derived = frame["parent"].notna() & (frame["parent"].astype(str) != "")
    return frame[~derived].reset_index(drop=True), int(derived.sum())


def settings_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Every setting as a column, a record that predates a field holding its default, values
    made comparable (floats to 12 significant digits, so 1e-3 * 1.0 equals 1e-3)."""
    out = pd.DataFrame(index=frame.index)
    for name, default in DEFAULTS.items():
        column = _given_or_resolved(frame, name)
        out[name] = [_comparable(default if _missing(v) else v) for v in column]
    return out


def _given_or_resolved(frame: pd.DataFrame, name: str) -> pd.Series:
    """A field as the records gave it; where some record set a recipe field explicitly, the
    others are read by the value their recipe gave it, so ``optimizer=adamw`` stated in one
    record and left to the basic recipe's AdamW in another is one setting, not two."""
    given = frame[name] if name in frame.columns else pd.Series(None, index=frame.index)
    resolved, missing = RESOLVED + name, given.map(_missing)
    if resolved not in frame.columns or missing.all():
        return given
    return given.where(~missing, frame[resolved])


def varying(frame: pd.DataFrame, within=CELL_KEYS) -> list[str]:
    """The settings that take more than one value among records of one group of ``within``."""
    if not len(frame):
        return []
    table = settings_frame(frame)
    groups = [frame[k] for k in within]
    counts = table.groupby(groups, dropna=False).nunique(dropna=False)
    return [name for name in DEFAULTS if (counts[name] > 1).any()]


def check_pooled(frame: pd.DataFrame, where: str) -> None:
    """Refuse a study whose cells mix settings: its seed spread would not be seed noise."""
    mixed = varying(frame)
    if not mixed:
        return
    raise BenchError(
        f"{where}: records of one cell (family, size, n_train, budget) differ in "
        f"{', '.join(mixed)}, so they are not seeds of one experiment: read a tuning grid "
        f"with `bench tune {where}`, or train each setting into its own study"
    )


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _comparable(value):
    if isinstance(value, float) and not isinstance(value, bool):
        return float(f"{value:.12g}")
    return value
