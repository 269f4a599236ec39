"""The convergence control: are the largest-n cells limited by their training budget?

A study may train some cells again at ``budget_scale`` 2 (twice the images seen). Each such
cell is compared with its twin at the next lower budget the study holds for it (same family,
size, n_train): the study's own cell (at 1x, or at the study's own budget where every sweep of
it trains longer), or, for a 4x cell beside a 2x arm, the 2x cell, so a longer control checks
the shorter one. The lower cell is compute-bound when the longer one's mean error is lower by
more than the seed spread: the lower cell's seed standard deviation when it has several seeds,
else the pooled seed-to-seed deviation of the study, else (one seed everywhere) the binomial
standard deviation of the difference of two test-set errors, sqrt(2 err (1 - err) / n_test).

That rule gives the verdict; beside it each comparison carries the gain's 95% interval (normal, from
the variance of each mean: seeds where a cell has several, else the study's pooled seed variance,
else the test set's binomial one), so a gain that beats one cell's spread but not the noise of a
difference of means (a one-seed arm, say) reads as unresolved, not as a measured gain.
"""

from __future__ import annotations

import math

import pandas as pd

from bench.analysis.scaling import round6

KEY = ["family", "size", "n_train"]
Z95 = 1.96  # two-sided 95% normal quantile: two leads within Z95 standard errors are a tie


def _pooled_std(main: pd.DataFrame) -> float | None:
    g = main.groupby(KEY)["test_error"]
    var = g.var(ddof=1).dropna()
    return float(math.sqrt(var.mean())) if len(var) else None


def _spread(twin: pd.DataFrame, pooled: float | None, scale: float) -> tuple[float, str]:
    if len(twin) > 1:
        std = float(twin["test_error"].std(ddof=1))
        return std, f"seed std of the {scale:g}x cell ({len(twin)} seeds)"
    if pooled is not None:
        return pooled, "pooled seed std of the study"
    var = _binomial_var(twin)
    if var is None:
        return 0.0, "no noise estimate (one seed, no test-set size)"
    sd = math.sqrt(2 * var)  # the difference of two such test-set errors
    return sd, "binomial test-set noise (one seed; the seed spread is unknown)"


def _binomial_var(cell: pd.DataFrame) -> float | None:
    """A one-seed cell's test-set binomial variance, err (1 - err) / n_test; None without n_test."""
    err = float(cell["test_error"].mean())
    n_test = cell["n_test"].dropna()
    return err * (1 - err) / float(n_test.iloc[0]) if len(n_test) else None


def _mean_variance(cell: pd.DataFrame, pooled: float | None) -> float:
    """The variance of a cell's mean error over its seeds: from its seeds where it has several,
    else one seed's (the study's pooled seed variance, else the test set's binomial variance)."""
    if len(cell) > 1:
        return float(cell["test_error"].var(ddof=1)) / len(cell)
    if pooled is not None:
        return pooled**2
    return _binomial_var(cell) or 0.0


def compare(main: pd.DataFrame, control: pd.DataFrame, own: float = 1.0) -> dict | None:
    """Per control cell: its mean error and its twin's (at the study's own budget_scale ``own``,
    or in the next lower arm), the difference, the spread, the verdict."""
    if not len(control):
        return None
    pooled = _pooled_std(main)
    rows = []
    for (fam, size, n, scale), cell in control.groupby([*KEY, "budget_scale"], sort=True):
        key = (fam, size, n)
        base_scale, twin = _below(main, control, scale, lambda f, key=key: _at(f, key), own)
        row = {
            "family": fam,
            "size": size,
            "n_train": int(n),
            "budget_scale": float(scale),
            "scaled_error": round6(cell["test_error"].mean()),
            "scaled_std": round6(cell["test_error"].std(ddof=1)) if len(cell) > 1 else None,
            "scaled_seeds": int(len(cell)),
        }
        if not len(twin):
            rows.append({**row, "verdict": f"no {own:g}x twin"})
            continue
        spread, source = _spread(twin, pooled, base_scale)
        base = float(twin["test_error"].mean())
        gain = base - float(cell["test_error"].mean())
        half = Z95 * math.sqrt(_mean_variance(twin, pooled) + _mean_variance(cell, pooled))
        row.update(
            base_scale=base_scale,
            base_error=round6(base),
            base_seeds=int(len(twin)),
            gain=round6(gain),
            spread=round6(spread),
            spread_from=source,
            compute_bound=bool(gain > spread),
            gain_ci=[round6(gain - half), round6(gain + half)],
            gain_resolved=bool(gain - half > 0),
        )
        rows.append(row)
    judged = [r for r in rows if "compute_bound" in r]
    first = [r for r in judged if r["base_scale"] == own]
    return {
        "base_scale": own,
        "cells": rows,
        "compute_bound": _verdict(first),
        "gain_resolved": any(r["compute_bound"] and r["gain_resolved"] for r in first),
        "arms": _arm_verdicts(judged, own),
        "largest_n": _at_largest(main, rows),
        "leaders": leaders(main, control, own),
    }


def _below(main, control, scale, pick, own: float) -> tuple[float, pd.DataFrame]:
    """The cells ``pick`` (a frame -> mask) selects at the largest budget below ``scale``: a
    lower control arm when the study holds one, else the study's own cells (at ``own``)."""
    lower = control[(control["budget_scale"] < scale) & pick(control)]
    if len(lower):
        below = float(lower["budget_scale"].max())
        return below, lower[lower["budget_scale"] == below]
    return own, main[pick(main)]


def _at(frame: pd.DataFrame, key) -> pd.Series:
    mask = pd.Series(True, index=frame.index)
    for col, value in zip(KEY, key, strict=True):
        mask &= frame[col] == value
    return mask


def leaders(main: pd.DataFrame, control: pd.DataFrame, own: float = 1.0) -> list[dict]:
    """Who leads at each control n, at the next lower budget and at the scaled one, over the
    sizes the control trained: a leader that changes with the budget means the lower-budget cells
    are too starved to say which family is ahead there, let alone where they cross. A lead
    within the noise (``level_*``) is a tie, not a leader: a change of leader counts only
    between two leads beyond it."""
    rows, pooled = [], _pooled_std(main)
    for (n, scale), cells in control.groupby(["n_train", "budget_scale"], sort=True):
        sizes = cells["size"].unique()
        base_scale, twins = _below(
            main,
            control,
            scale,
            lambda f, n=n, s=sizes: (f["n_train"] == n) & f["size"].isin(s),
            own,
        )
        base, scaled = _best_per_family(twins, pooled), _best_per_family(cells, pooled)
        if len(scaled) < 2 or set(base) != set(scaled):
            continue
        rows.append(
            {
                "n_train": int(n),
                "base_scale": base_scale,
                "budget_scale": float(scale),
                "base": {f: m for f, (m, _) in base.items()},
                "scaled": {f: m for f, (m, _) in scaled.items()},
                "leader_base": min(base, key=lambda f: base[f][0]),
                "leader_scaled": min(scaled, key=lambda f: scaled[f][0]),
                "level_base": _level(base),
                "level_scaled": _level(scaled),
                "noise_base": round6(_half_width(base)),
                "noise_scaled": round6(_half_width(scaled)),
            }
        )
    return [{**r, "changes": move(r) == "changes"} for r in rows]


def move(row: dict) -> str:
    """What the longer budget did to the standing: ``changes`` (one leader beyond the noise, then
    the other), ``opens`` (a tie becomes a lead), ``closes`` (a lead becomes a tie), ``level``
    (a tie at both budgets) or ``same`` (the same leader beyond the noise at both)."""
    tied, tied_after = row["level_base"], row["level_scaled"]
    if tied:
        return "level" if tied_after else "opens"
    if tied_after:
        return "closes"
    return "changes" if row["leader_base"] != row["leader_scaled"] else "same"


def _best_per_family(cells: pd.DataFrame, pooled: float | None) -> dict[str, tuple[float, float]]:
    """Each family's best size at one n (the envelope): its mean test error and the variance of
    that mean (:func:`_mean_variance`)."""
    out: dict[str, tuple[float, float]] = {}
    for (fam, _), cell in cells.groupby(["family", "size"]):
        mean = float(cell["test_error"].mean())
        if fam not in out or mean < out[fam][0]:
            out[fam] = (round6(mean), _mean_variance(cell, pooled))
    return out


def _half_width(best: dict[str, tuple[float, float]]) -> float:
    """The half-width of the 95% normal interval of the two families' difference in error."""
    (_, va), (_, vb) = best.values()
    return Z95 * math.sqrt(va + vb)


def _level(best: dict[str, tuple[float, float]]) -> bool:
    """Whether two families' envelope errors differ by less than the 95% normal interval of
    their difference."""
    (a, _), (b, _) = best.values()
    return abs(a - b) < _half_width(best)


def _arm_verdicts(judged: list[dict], own: float) -> list[dict]:
    """A longer control's word on a shorter control arm: is the arm itself compute-bound?"""
    scales = sorted({r["base_scale"] for r in judged} - {own})
    out = []
    for scale in scales:
        rows = [r for r in judged if r["base_scale"] == scale]
        out.append(
            {
                "base_scale": scale,
                "budget_scale": max(r["budget_scale"] for r in rows),
                "n_train": sorted({r["n_train"] for r in rows}),
                "bound_n": sorted({r["n_train"] for r in rows if r["compute_bound"]}),
                "resolved_n": sorted(
                    {r["n_train"] for r in rows if r["compute_bound"] and r["gain_resolved"]}
                ),
                "compute_bound": _verdict(rows),
            }
        )
    return out


def within_noise(arm: dict) -> bool:
    """Whether an arm found compute-bound passed only the spread rule: no gain's 95% CI clears
    0, so a longer budget may help, but the seeds do not show it beyond the noise."""
    return bool(arm["compute_bound"]) and not arm.get("resolved_n", arm["bound_n"])


def _verdict(judged: list[dict]) -> bool | None:
    if not judged:
        return None
    return any(r["compute_bound"] for r in judged)


def _at_largest(main: pd.DataFrame, rows: list[dict]) -> bool:
    """Whether the control covers the study's largest n (where starvation would show first)."""
    return bool(len(main)) and any(r["n_train"] == int(main["n_train"].max()) for r in rows)


def first_leaders(ctrl: dict) -> list[dict]:
    """The leader rows that compare the study's own cells with a control arm."""
    base = ctrl.get("base_scale", 1.0)
    return [r for r in ctrl.get("leaders", []) if r.get("base_scale", 1.0) == base]


def times_longer(row: dict) -> float:
    """A control row's budget over its twins': how many times as many images its cells saw."""
    return row["budget_scale"] / row.get("base_scale", 1.0)
