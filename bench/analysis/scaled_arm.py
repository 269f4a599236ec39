"""The convergence control as its own grid: where a study trains both families at a larger
``budget_scale`` over enough training-set sizes, fit those cells too and place their break-even.

The control usually covers only the largest n, and is then a yes/no check (:mod:`control`). When
it covers at least ``MIN_N`` sizes for both families, its cells are a second, longer-trained
grid: if the 1x cells were starved, the crossing they could not place may show there. The arm is
fitted with the same envelopes, bootstrap and break-even rules as the study's own cells; nothing
checks its own convergence, and the report says so.
"""

from __future__ import annotations

import pandas as pd

from bench.analysis import fits

MIN_N = 3


def fit_arms(ctrl: pd.DataFrame, pair, orders, bootstrap, seed, n_test, n_val) -> list[dict]:
    """One entry per budget scale whose cells span MIN_N sizes in both families of ``pair``."""
    if pair is None or not len(ctrl):
        return []
    arms = []
    for scale, rows in ctrl.groupby("budget_scale", sort=True):
        spans = [rows.loc[rows["family"] == f, "n_train"].nunique() for f in pair]
        if min(spans) < MIN_N:
            continue
        result, _ = fits.fit_families(
            rows, list(pair), "size", "n_train", "fit_error", "family", bootstrap, seed,
            group_orders=orders, score_col="val_error", n_test=n_test, n_val=n_val,
        )  # fmt: skip
        arms.append(
            {
                "budget_scale": float(scale),
                "n_train": sorted(int(v) for v in rows["n_train"].unique()),
                "cells": int(len(rows)),
                "fits": {f: _fit_summary(result["fits"][f]) for f in pair},
                "break_even": result["break_even"],
                "notes": result["notes"],
            }
        )
    return arms


def _fit_summary(entry: dict) -> dict:
    """The parts of a family's fit the report and the figure use."""
    keys = ("form", "params", "at_bound", "rmse_log", "envelope")
    return {k: entry.get(k) for k in keys}


PLACED = ("inside", "extrapolated")


def crossings(arms: list[dict]) -> list[dict]:
    """Every arm's break-even that places one (inside the data or just beyond), shortest-trained
    first, each with its ``budget_scale``."""
    placed = []
    for arm in sorted(arms, key=lambda a: a["budget_scale"]):
        be = arm.get("break_even") or {}
        if be.get("kind") in PLACED:
            placed.append({"budget_scale": arm["budget_scale"], **be})
    return placed


def crossing_of(arms: list[dict]) -> dict | None:
    """The longest-trained arm's break-even when it places one."""
    placed = crossings(arms)
    return placed[-1] if placed else None


def versus_shorter(arms: list[dict]) -> dict | None:
    """Where two arms place a crossing: the next shorter arm's crossing, the longest arm's
    (``longest``), and ``verdict``: ``held`` when the shorter arm's 95% interval holds the longest
    arm's point (more training moved it no farther than the bootstrap's own uncertainty),
    ``apart`` when the two intervals do not meet (it moved), else ``overlap`` (the point lies
    outside, the intervals meet: not resolved). None with fewer than two placed crossings, or
    without an interval for both (no bootstrap): then nothing can be said either way."""
    placed = crossings(arms)
    if len(placed) < 2 or not (placed[-2].get("ci") and placed[-1].get("ci")):
        return None
    shorter, longest = placed[-2], placed[-1]
    a, b = _interval(shorter["ci"])
    c, d = _interval(longest["ci"])
    if a <= longest["x"] <= b:
        verdict = "held"
    elif c <= b and a <= d:
        verdict = "overlap"
    else:
        verdict = "apart"
    return {**shorter, "verdict": verdict, "longest": longest}


def _interval(ci: list) -> tuple[float, float]:
    """A 95% interval as numbers, its open upper end (None) as infinity."""
    return ci[0], ci[1] if ci[1] is not None else float("inf")
