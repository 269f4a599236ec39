"""The convergence control: are the largest-n cells limited by their training budget?

A study may train some cells again at ``budget_scale`` 2 (twice the images seen). Each such
cell is compared with its twin at the study's budget (same family, size, n_train). The cell is
compute-bound when the 2x cell's mean error is lower than the 1x cell's by more than the seed
spread: the 1x cell's seed standard deviation when it has several seeds, else the pooled
seed-to-seed deviation of the study, else (one seed everywhere) the binomial standard deviation
of the difference of two test-set errors, sqrt(2 err (1 - err) / n_test).
"""

from __future__ import annotations

import math

import pandas as pd

from bench.analysis.scaling import round6

KEY = ["family", "size", "n_train"]


def _pooled_std(main: pd.DataFrame) -> float | None:
    g = main.groupby(KEY)["test_error"]
    var = g.var(ddof=1).dropna()
    return float(math.sqrt(var.mean())) if len(var) else None


def _spread(twin: pd.DataFrame, pooled: float | None) -> tuple[float, str]:
    if len(twin) > 1:
        return float(twin["test_error"].std(ddof=1)), f"seed std of the 1x cell ({len(twin)} seeds)"
    if pooled is not None:
        return pooled, "pooled seed std of the study"
    err = float(twin["test_error"].mean())
    n_test = twin["n_test"].dropna()
    if not len(n_test):
        return 0.0, "no noise estimate (one seed, no test-set size)"
    sd = math.sqrt(2 * err * (1 - err) / float(n_test.iloc[0]))
    return sd, "binomial test-set noise (one seed; the seed spread is unknown)"


def compare(main: pd.DataFrame, control: pd.DataFrame) -> dict | None:
    """Per control cell: 1x and scaled mean error, the difference, the spread, the verdict."""
    if not len(control):
        return None
    pooled = _pooled_std(main)
    rows = []
    for (fam, size, n, scale), cell in control.groupby([*KEY, "budget_scale"], sort=True):
        twin = main[(main["family"] == fam) & (main["size"] == size) & (main["n_train"] == n)]
        row = {
            "family": fam,
            "size": size,
            "n_train": int(n),
            "budget_scale": float(scale),
            "scaled_error": round6(cell["test_error"].mean()),
            "scaled_seeds": int(len(cell)),
        }
        if not len(twin):
            rows.append({**row, "verdict": "no 1x twin"})
            continue
        spread, source = _spread(twin, pooled)
        base = float(twin["test_error"].mean())
        gain = base - float(cell["test_error"].mean())
        row.update(
            base_error=round6(base),
            base_seeds=int(len(twin)),
            gain=round6(gain),
            spread=round6(spread),
            spread_from=source,
            compute_bound=bool(gain > spread),
        )
        rows.append(row)
    judged = [r for r in rows if "compute_bound" in r]
    return {
        "cells": rows,
        "compute_bound": _verdict(judged),
        "largest_n": _at_largest(main, rows),
        "leaders": leaders(main, control),
    }


def leaders(main: pd.DataFrame, control: pd.DataFrame) -> list[dict]:
    """Who leads at each control n, at the study's budget and at the scaled one, over the sizes
    the control trained: a leader that changes with the budget means the 1x cells are too starved
    to say which family is ahead there, let alone where they cross."""
    rows = []
    for (n, scale), cells in control.groupby(["n_train", "budget_scale"], sort=True):
        twins = main[(main["n_train"] == n) & main["size"].isin(cells["size"].unique())]
        base, scaled = _best_per_family(twins), _best_per_family(cells)
        if len(scaled) < 2 or set(base) != set(scaled):
            continue
        rows.append(
            {
                "n_train": int(n),
                "budget_scale": float(scale),
                "base": base,
                "scaled": scaled,
                "leader_base": min(base, key=base.get),
                "leader_scaled": min(scaled, key=scaled.get),
            }
        )
    return [{**r, "changes": r["leader_base"] != r["leader_scaled"]} for r in rows]


def _best_per_family(cells: pd.DataFrame) -> dict[str, float]:
    """Each family's lowest mean test error over its sizes (the envelope at one n)."""
    means = cells.groupby(["family", "size"])["test_error"].mean()
    return {f: round6(float(v)) for f, v in means.groupby(level="family").min().items()}


def _verdict(judged: list[dict]) -> bool | None:
    if not judged:
        return None
    return any(r["compute_bound"] for r in judged)


def _at_largest(main: pd.DataFrame, rows: list[dict]) -> bool:
    """Whether the control covers the study's largest n (where starvation would show first)."""
    return bool(len(main)) and any(r["n_train"] == int(main["n_train"].max()) for r in rows)
