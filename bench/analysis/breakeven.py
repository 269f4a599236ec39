"""The break-even between two families, said only as far as the data carry it.

``kind`` of the answer:

- ``inside``: the fitted envelopes cross inside the measured range of n (with a bootstrap CI);
- ``extrapolated``: they cross at most one decade beyond the measured range (labelled so);
- ``lower_bound``: no crossing within a decade; the family ahead at the largest n is still
  ahead, and the gap's measured trend (a line in log n) puts the crossing beyond ``beyond`` with
  95% confidence (the 5th percentile of the resampled trends' crossings);
- ``no_trend``: no crossing within a decade, and the gap's trend does not close it (or closes it
  in fewer than 5% of resamples).

No crossing is searched for farther than a decade from the data. One seeded bootstrap gives the
crossing's CI, the gap's slope CI and the lead's CI together.
"""

from __future__ import annotations

import math

import numpy as np

from bench.analysis import gap, resample, scaling


def measured_range(envs: dict, pair) -> tuple[float, float, list[str]]:
    """The range of n both families were measured on (or everything, when disjoint)."""
    notes = []
    lo = max(min(x for x, _, _ in envs[f]) for f in pair)
    hi = min(max(x for x, _, _ in envs[f]) for f in pair)
    if lo > hi:
        lo = min(min(x for x, _, _ in envs[f]) for f in pair)
        hi = max(max(x for x, _, _ in envs[f]) for f in pair)
        notes.append("the two families were measured on disjoint ranges of n")
    return lo, hi, notes


def _means(env) -> dict:
    return {x: float(np.mean(ys)) for x, _, ys in env}


def _resample(envs, fits, pair, n_test, n_boot, seed, x_lo, x_hi, bracket) -> dict:
    """Per resample: the picked crossing (nan: none within a decade), the gap's slope and
    value at the largest shared n, and family b's minus family a's error there."""
    rng = np.random.default_rng(seed)
    draws = [resample.resampler(envs[f], n_test.get(f), fits[f]) for f in pair]
    out = {"x": [], "slope": [], "gap_hi": [], "lead": [], "gaps": []}
    for _ in range(n_boot):
        drawn = [d(rng) for d in draws]
        refits = []
        for f, dr in zip(pair, drawn, strict=True):
            bx, by = resample.points(envs[f], dr)
            refits.append(scaling.fit_form(fits[f].form, bx, by, warm=fits[f]))
        x = None
        if all(r is not None for r in refits):
            x = scaling.pick_break_even(scaling.crossings(*refits, bracket), x_lo, x_hi)
        out["x"].append(math.nan if x is None else x)
        ma, mb = (resample.means(envs[f], dr) for f, dr in zip(pair, drawn, strict=True))
        gx, gy = gap.gap_points(ma, mb)
        t = gap.trend(gx, gy)
        out["gaps"].append(gy)
        out["slope"].append(math.nan if t is None else t[0])
        out["gap_hi"].append(math.nan if t is None else t[1])
        out["lead"].append(mb.get(x_hi, math.nan) - ma.get(x_hi, math.nan))
    return {k: np.array(v, dtype=float) for k, v in out.items()}


def _ci(values) -> list | None:
    v = values[np.isfinite(values)]
    if not len(v):
        return None
    lo, hi = np.percentile(v, [2.5, 97.5])
    return [scaling.round6(lo), scaling.round6(hi)]


def _crossing_ci(xs: np.ndarray) -> list | None:
    """2.5/97.5 percentiles in log n; a resample with no crossing within a decade counts as
    beyond the search, so an upper end past it is None (open)."""
    if not np.isfinite(xs).any():
        return None
    lo, hi = resample.log_percentiles(xs, [2.5, 97.5])
    if not np.isfinite(lo):
        return None
    return [scaling.round6(lo), None if not np.isfinite(hi) else scaling.round6(hi)]


def gap_summary(envs, pair, boot: dict | None) -> dict | None:
    """The gap's points, its fitted slope per decade and that slope's CI."""
    xs, gaps = gap.gap_points(_means(envs[pair[0]]), _means(envs[pair[1]]))
    t = gap.trend(xs, gaps)
    out = {
        "families": [pair[1], pair[0]],
        "points": [
            {"n": int(x) if float(x).is_integer() else x, "log_ratio": scaling.round6(g)}
            for x, g in zip(xs, gaps, strict=True)
        ],
        "slope_per_decade": None if t is None else scaling.round6(t[0]),
        "slope_ci": None,
    }
    if boot is not None and len(xs):
        for p, col in zip(out["points"], np.asarray(boot["gaps"]).T, strict=True):
            p["ci"] = _ci(col)  # the gap at this n over resamples
    if t is not None and boot is not None:
        out["slope_ci"] = _ci(boot["slope"])
    return out


def _lower_bound(pair, envs, boot, x_hi, out) -> None:
    """No crossing within a decade: the leader at x_hi, and how far the gap's trend allows."""
    ma, mb = _means(envs[pair[0]]), _means(envs[pair[1]])
    lead = mb[x_hi] - ma[x_hi]
    out["leader"] = pair[0] if lead > 0 else pair[1]
    xs, gaps = gap.gap_points(ma, mb)
    t = gap.trend(xs, gaps)
    point = math.inf if t is None else gap.trend_crossing(t[0], t[1], x_hi)
    out["trend_crossing"] = None if not np.isfinite(point) else scaling.round6(point)
    beyond = math.inf
    if boot is not None and np.isfinite(point):
        ends = [
            gap.trend_crossing(s, g, x_hi) if np.isfinite(s) else math.inf
            for s, g in zip(boot["slope"], boot["gap_hi"], strict=True)
        ]
        beyond = resample.log_percentiles(ends, [5])[0]
    if np.isfinite(beyond):
        out["kind"] = "lower_bound"
        out["beyond"] = scaling.round6(max(beyond, x_hi))
    else:
        out["kind"] = "no_trend"
        out["beyond"] = None


def analyse_pair(envs, fits, pair, n_test: dict, n_boot: int, seed: int) -> dict:
    """Everything fits.json says about the two families' crossing (see the module's kinds)."""
    x_lo, x_hi, notes = measured_range(envs, pair)
    bracket = scaling.bracket_for(x_lo, x_hi)
    a, b = fits[pair[0]], fits[pair[1]]
    out = scaling.break_even(a, b, pair, x_lo, x_hi, bracket)
    boot = (
        _resample(envs, fits, pair, n_test, n_boot, seed, x_lo, x_hi, bracket) if n_boot else None
    )
    out.update(
        families=list(pair),
        measured_range=[_num(x_lo), _num(x_hi)],
        bracket=[_num(v) for v in bracket],
        n_resamples=n_boot,
        method="; ".join(f"{f}: {resample.method(envs[f], n_test.get(f))}" for f in pair),
        notes=notes,
        ci=None,
        beyond=None,
    )
    if boot is not None:
        crossed = np.isfinite(boot["x"])
        out["n_crossing"] = int(crossed.sum())
        out["resamples_crossing"] = {
            "below": int((boot["x"] < x_lo).sum()),
            "inside": int(((boot["x"] >= x_lo) & (boot["x"] <= x_hi)).sum()),
            "above": int((boot["x"] > x_hi).sum()),
        }
        out["p_no_crossing"] = scaling.round6(1 - crossed.mean())
        out["lead_ci"] = _ci(boot["lead"])
    if out["x"] is not None:
        out["kind"] = "inside" if out["inside_range"] else "extrapolated"
        if boot is not None:
            out["ci"] = _crossing_ci(boot["x"])
    else:
        _lower_bound(pair, envs, boot, x_hi, out)
    out["gap"] = gap_summary(envs, pair, boot)
    return dict(sorted(out.items()))


def _num(v):
    v = float(v)
    return int(v) if v.is_integer() and abs(v) < 2**53 else scaling.round6(v)
