"""A study's cells: the scaling grid apart from its convergence control, and what is missing.

A cell is (family, size, n_train, seed). Cells trained at a ``budget_scale`` other than the
study's own (1, unless every sweep of the study trains longer: :func:`base_scale`) are the
convergence control: compared with their twins at the study's budget
(:mod:`bench.analysis.control`), never fitted as extra points of a scaling curve. The grid a
study should hold is the union of the sweep YAMLs in the study folder (``sweeps/*.yaml``, which
``bench grid`` keeps there, and any ``*.yaml`` beside the records), else the distinct values the
records show.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pandas as pd
import yaml

from bench.errors import BenchError

KEYS = ("family", "size", "n_train", "seed")
# A control cell is also keyed by its budget: a 4x check of a 2x arm trains the same seeds again.
CONTROL_KEYS = (*KEYS, "budget_scale")


def base_scale(study_dir: Path, frame: pd.DataFrame) -> float:
    """The study's own budget: the smallest budget_scale its sweeps name (else its records
    show). It is 1 unless every cell trains longer, as in a study that pairs a control arm's
    cells with those of a retuned family: they are then its grid, not a control of a missing one."""
    scales = {
        float(s)
        for p in sweep_files(study_dir)
        for s in _sweep_values(p).get("budget_scale", [1.0])
    }
    if not scales and len(frame):
        scales = set(frame["budget_scale"].astype(float))
    return min(scales, default=1.0)


def split_control(frame: pd.DataFrame, base: float = 1.0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(cells at the study's budget ``base``, cells at another budget_scale)."""
    scaled = frame["budget_scale"].astype(float) != base
    return frame[~scaled].reset_index(drop=True), frame[scaled].reset_index(drop=True)


def sweep_files(study_dir: Path) -> list[Path]:
    """The sweep YAMLs kept in the study folder: several sweeps may feed one study."""
    return sorted(study_dir.glob("*.yaml")) + sorted((study_dir / "sweeps").glob("*.yaml"))


def _sweep_values(path: Path) -> dict[str, list]:
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise BenchError(f"cannot read the sweep {path}: {str(e).splitlines()[0]}") from e
    params = config.get("parameters") if isinstance(config, dict) else None
    if not isinstance(params, dict):
        raise BenchError(f"{path}: no 'parameters' block, so no grid to compare the records with")
    out = {}
    for key in (*KEYS, "budget_scale"):
        spec = params.get(key)
        if isinstance(spec, dict) and "values" in spec:
            out[key] = list(spec["values"])
        elif isinstance(spec, dict) and "value" in spec:
            out[key] = [spec["value"]]
    return out


def _resolve_all(values: list, present: list[int]) -> list:
    """``n_train: all`` stands for the full training set: the largest n the records show, when it
    exceeds every number the sweep names (else that cell is missing)."""
    numbers = [int(v) for v in values if str(v) != "all"]
    top = max(present) if present else None
    out = []
    for v in values:
        if str(v) == "all":
            out.append(top if top is not None and top > max(numbers, default=0) else "all")
        else:
            out.append(int(v))
    return out


def expected_grid(
    study_dir: Path, frame: pd.DataFrame, control: bool = False, base: float = 1.0
) -> tuple[list[tuple], str]:
    """Every (family, size, n_train, seed) the study should hold, and where that list came from;
    ``control``: the cells at another budget_scale than ``base`` (with it) its sweeps should
    hold. A sweep may feed both: one that adds a seed at 1x and 2x puts half its cells in each."""
    keys = CONTROL_KEYS if control else KEYS
    present = {k: sorted(frame[k].unique().tolist()) if len(frame) else [] for k in KEYS}
    grids = {}
    for path in sweep_files(study_dir):
        cells = {c for c in _sweep_grid(path, present) if (float(c[-1]) != base) is control}
        if cells:
            grids[path.name] = {c[: len(keys)] for c in cells}
    if control and not grids:
        return [], "no convergence-control sweep"
    if not grids:
        grid = set(itertools.product(*(present[k] for k in KEYS)))
        source = "the distinct values in the records"
    else:
        grid = set().union(*grids.values())
        source = "the sweep" + ("s " if len(grids) > 1 else " ") + ", ".join(grids)
    return sorted({tuple(map(plain, c)) for c in grid}, key=_order), source


def _sweep_grid(path: Path, present: dict[str, list]) -> set[tuple]:
    """The sweep's cells as (family, size, n_train, seed, budget_scale)."""
    values = _sweep_values(path)
    for k in KEYS:  # a key the sweep leaves to the default: whatever the records show
        values.setdefault(k, present[k] or [0])
    values.setdefault("budget_scale", [1.0])
    values["n_train"] = _resolve_all(values["n_train"], present["n_train"])
    return set(itertools.product(*(values[k] for k in CONTROL_KEYS)))


def plain(v):
    """A value as the sweep wrote it: 0, not 0.0 (a column with a missing value is float)."""
    return int(v) if isinstance(v, (int, float)) and float(v).is_integer() else str(v)


def _order(cell):
    return tuple((0, v, "") if isinstance(v, int) else (1, 0, str(v)) for v in cell)


def _held(frame: pd.DataFrame, expected: list[tuple]) -> set[tuple]:
    """The cells the records hold, keyed like ``expected`` (with budget_scale for a control)."""
    width = len(expected[0]) if expected else len(KEYS)
    cols = list(CONTROL_KEYS[:width])
    if not len(frame):
        return set()
    return {tuple(map(plain, r)) for r in frame[cols].itertuples(index=False)}


def _label(cell: tuple) -> str:
    fam, size, n, seed, *scale = cell
    n_txt = f"{n:,}" if isinstance(n, int) else str(n)
    at = f" at {float(scale[0]):g}x" if scale else ""
    return f"{fam} {size} n={n_txt} seed {seed}{at}"


def missing_cells(expected: list[tuple], frame: pd.DataFrame) -> list[str]:
    """The cells of ``expected`` with no completed record, as 'family size n=N seed S'
    (and 'at 4x' for a control cell)."""
    have = _held(frame, expected)
    return [_label(cell) for cell in expected if cell not in have]


def coverage(
    study_dir: Path, frame: pd.DataFrame, control: bool = False, base: float = 1.0
) -> dict:
    """{held, expected, missing: [...], by_model: [...], source}: how much of its grid a study
    holds (``control``: of its convergence-control sweeps' grid, ``frame`` their records);
    ``by_model`` says the same per family and size, one line each."""
    expected, source = expected_grid(Path(study_dir), frame, control, base)
    missing = missing_cells(expected, frame)
    return {
        "expected": len(expected),
        "held": len(expected) - len(missing),
        "missing": missing,
        "by_model": _by_model(expected, frame),
        "source": source,
    }


def _by_model(expected: list[tuple], frame: pd.DataFrame) -> list[str]:
    have = _held(frame, expected)
    groups: dict = {}
    for cell in expected:
        if cell not in have:
            fam, size, n, seed, *scale = cell
            model = (fam, size) + ((f"at {float(scale[0]):g}x",) if scale else ())
            groups.setdefault(model, {}).setdefault(n, []).append(seed)
    lines = []
    for model, by_n in groups.items():
        parts = [f"n={n:,}" if isinstance(n, int) else f"n={n}" for n in by_n]
        seeds = sorted({tuple(v) for v in by_n.values()})
        if len(seeds) == 1:
            text = ", ".join(parts) + f" (seeds {', '.join(map(str, seeds[0]))})"
        else:
            text = ", ".join(
                f"{p} (seeds {', '.join(map(str, by_n[n]))})"
                for p, n in zip(parts, by_n, strict=True)
            )
        lines.append(f"{' '.join(model)}: {text}")
    return lines


def seeds_per_cell(summary: pd.DataFrame) -> dict:
    """Fewest and most seeds any (family, size, n_train) cell has."""
    if not len(summary):
        return {"min": 0, "max": 0}
    counts = summary["test_error_count"].astype(int)
    return {"min": int(counts.min()), "max": int(counts.max())}
