"""The break-even between two families, said only as far as the data carry it.

``kind`` of the answer:

- ``inside``: the fitted envelopes cross inside the measured range of n (with a bootstrap CI);
- ``extrapolated``: they cross at most one decade beyond the largest n (labelled so), and at
  least half the resamples cross on that side too; a crossing out there that fewer do is kept
  as ``unsupported`` and the answer is one of the two below. So is a crossing below the smallest
  n, whatever the resamples say: there every error curve bends towards chance, which the fitted
  forms do not follow, so two fits that meet there say nothing of the families;
- ``lower_bound``: no crossing within a decade; the family ahead at the largest n is still
  ahead, and the gap's measured trend (a line in log n) puts the crossing beyond ``beyond`` with
  95% confidence (the 5th percentile of the resampled trends' crossings);
- ``no_trend``: no crossing within a decade, and the gap's trend does not close it (or closes it
  in fewer than 5% of resamples); or the trend line reaches zero inside the data while the
  family ahead at the largest n is still ahead there (``trend_passed``: where the line reaches
  zero), the trend and the largest n disagreeing, so no bound is placed.

No crossing is searched for farther than a decade from the data. One seeded bootstrap gives the
crossing's CI, the gap's slope CI and the lead's CI together; where a family measured several
sizes at an n, each resample re-picks its size there (:mod:`bench.analysis.repick`).
"""

from __future__ import annotations

import math

import numpy as np

from bench.analysis import gap, repick, resample, scaling

SUPPORT = 0.5  # the share of resamples that must cross on an extrapolated crossing's side


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


def _resample(envs, fits, pair, draws, n_boot, seed, x_lo, x_hi, bracket) -> dict:
    """Per resample: the picked crossing (nan: none within a decade), the gap's slope and
    value at the largest shared n, family b's minus family a's error there, and the sizes
    picked per family."""
    rng = np.random.default_rng(seed)
    out = {"x": [], "slope": [], "gap_hi": [], "lead": [], "gaps": []}
    picks = []
    for _ in range(n_boot):
        drawn, picked = zip(*(d(rng) for d in draws), strict=True)
        picks.append(picked)
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
    return {k: np.array(v, dtype=float) for k, v in out.items()} | {"picks": picks}


def size_picks(envs, pair, rivals: dict, picks: list) -> dict:
    """Per family and n with several sizes: how many resamples picked each size."""
    out = {}
    for i, f in enumerate(pair):
        riv = rivals.get(f) or {}
        rows = []
        for j, (x, g, _) in enumerate(envs[f]):
            if len(riv.get(x, ())) < 2:
                continue
            counts = {str(c[0]): 0 for c in riv[x]}
            for p in picks:
                counts[str(p[i][j])] += 1
            rows.append({"n": _num(x), "full_data": str(g), "resamples": counts})
        if rows:
            out[f] = rows
    return out


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


def _unsupported(out: dict) -> bool:
    """An extrapolated crossing below the data, or beyond it where fewer than ``SUPPORT`` of the
    resamples place one: the fit's, not the data's (near-parallel curves touch somewhere)."""
    if out["side"] == "below":
        return True
    counts = out.get("resamples_crossing")
    return bool(counts) and counts[out["side"]] < SUPPORT * out["n_resamples"]


def _lower_bound(pair, envs, boot, x_hi, out) -> None:
    """No crossing within a decade: the leader at x_hi, and how far the gap's trend allows."""
    ma, mb = _means(envs[pair[0]]), _means(envs[pair[1]])
    lead = mb[x_hi] - ma[x_hi]
    out["leader"] = pair[0] if lead > 0 else pair[1]
    xs, gaps = gap.gap_points(ma, mb)
    t = gap.trend(xs, gaps)
    point = math.inf if t is None else gap.trend_crossing(t[0], t[1], x_hi)
    out["trend_crossing"] = None if not np.isfinite(point) else scaling.round6(point)
    passed = None if t is None else gap.trend_passed(t[0], t[1], gaps[-1], x_hi)
    out["trend_passed"] = None if passed is None else scaling.round6(passed)
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


def analyse_pair(
    envs, fits, pair, n_test: dict, n_boot: int, seed: int, rivals=None, n_val=None
) -> dict:
    """Everything fits.json says about the two families' crossing (see the module's kinds).

    ``rivals`` ({family: :data:`bench.analysis.repick.Rivals`}) re-picks each envelope's size per
    resample where a family measured several sizes at an n (without it: the full-data pick, the
    fixed-pick bootstrap); ``n_val`` ({family: validation-set size}) gives one-seed cells'
    validation errors binomial noise.
    """
    rivals, n_val = rivals or {}, n_val or {}
    x_lo, x_hi, notes = measured_range(envs, pair)
    bracket = scaling.bracket_for(x_lo, x_hi)
    a, b = fits[pair[0]], fits[pair[1]]
    out = scaling.break_even(a, b, pair, x_lo, x_hi, bracket)
    draws = [
        repick.repicker(envs[f], rivals.get(f), n_test.get(f), fits[f], n_val.get(f)) for f in pair
    ]
    boot = _resample(envs, fits, pair, draws, n_boot, seed, x_lo, x_hi, bracket) if n_boot else None
    out.update(
        families=list(pair),
        measured_range=[_num(x_lo), _num(x_hi)],
        bracket=[_num(v) for v in bracket],
        n_resamples=n_boot,
        method=_method(envs, pair, n_test, rivals),
        notes=notes,
        ci=None,
        beyond=None,
    )
    if boot is not None:
        picks = size_picks(envs, pair, rivals, boot.pop("picks"))
        if picks:  # absent where every n has one size: such a study's fits.json is as it was
            out["size_picks"] = picks
        out.update(_resample_counts(boot, x_lo, x_hi))
    if out["x"] is not None:
        _place(out, boot)
    if out["x"] is None:
        _lower_bound(pair, envs, boot, x_hi, out)
    out["gap"] = gap_summary(envs, pair, boot)
    return dict(sorted(out.items()))


def _resample_counts(boot: dict, x_lo: float, x_hi: float) -> dict:
    """How many resamples cross, and where against the measured range; the lead's interval."""
    x = boot["x"]
    crossed = np.isfinite(x)
    return {
        "n_crossing": int(crossed.sum()),
        "resamples_crossing": {
            "below": int((x < x_lo).sum()),
            "inside": int(((x >= x_lo) & (x <= x_hi)).sum()),
            "above": int((x > x_hi).sum()),
        },
        "p_no_crossing": scaling.round6(1 - crossed.mean()),
        "lead_ci": _ci(boot["lead"]),
    }


def _place(out: dict, boot: dict | None) -> None:
    """A crossing of the full-data fits: inside the data or extrapolated, with its interval; an
    extrapolated one the resamples do not back is kept as ``unsupported`` and withdrawn."""
    out["kind"] = "inside" if out["inside_range"] else "extrapolated"
    if boot is not None:
        out["ci"] = _crossing_ci(boot["x"])
    if out["kind"] == "extrapolated" and _unsupported(out):
        side = out["side"]
        counts = out.get("resamples_crossing") or {}
        out["unsupported"] = {"x": out["x"], "side": side, "resamples": counts.get(side)}
        out.update(x=None, ci=None)


def _method(envs, pair, n_test, rivals) -> str:
    return "; ".join(
        f"{f}: {resample.method(envs[f], n_test.get(f), repick.several(rivals.get(f)))}"
        for f in pair
    )


def _num(v):
    v = float(v)
    return int(v) if v.is_integer() and abs(v) < 2**53 else scaling.round6(v)
