"""Break-even over model size and at matched compute.

- Over model size: from each family's joint fit err(N, n) = E + A/N^alpha + B/n^beta, for a fixed
  rung of family b (the ViT) the n at which it equals family a (the ResNet) of N parameters, for N
  across a's ladder. A seeded bootstrap (seeds resampled per cell, both joint fits refitted) gives
  a 95% band. Crossings are searched only within a decade of the measured n, as for the envelope.
  Every size enters the joint fit, so no size is picked here and none is re-picked per resample.
- At matched compute: each family's frontier (the lowest error reached at or below a training
  FLOP count) and the compute at which the leading frontier changes, if it does.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bench.analysis import resample, scaling

LADDER_POINTS = 24
# The joint bootstrap refits two 5-parameter fits per resample: fewer resamples than the
# envelope's keep `bench analyze` quick; 200 still gives a usable 95% band.
MAX_JOINT_BOOT = 200


def _cells(frame: pd.DataFrame, fam: str) -> list[tuple]:
    """[(n, size, error per seed)] and the matching parameter count per cell."""
    rows = frame[(frame["family"] == fam) & frame["params"].notna() & (frame["params"] > 0)]
    out, params = [], []
    for (size, n), g in rows.groupby(["size", "n_train"], sort=True):
        out.append((float(n), size, g["fit_error"].to_numpy(float)))
        params.append(float(g["params"].median()))
    return out, np.array(params)


def _fit(cells, params, drawn=None, warm=None):
    ys = drawn if drawn is not None else [c[2] for c in cells]
    big_n = np.concatenate([np.full(len(y), p) for y, p in zip(ys, params, strict=True)])
    x = np.concatenate([np.full(len(y), c[0]) for y, c in zip(ys, cells, strict=True)])
    return scaling.fit_joint(big_n, x, np.concatenate(ys), warm=warm)


def n_star(fit_b, n_b: float, fit_a, ladder, bracket, x_lo, x_hi) -> np.ndarray:
    """Per N in ``ladder``: where b's rung of n_b parameters meets a of N parameters (nan: none
    within the bracket)."""
    grid = np.geomspace(*bracket, int(math.log10(bracket[1] / bracket[0]) * 100) + 1)
    eb = np.log(scaling.predict_joint(fit_b, np.full(len(grid), n_b), grid))
    out = []
    for big_n in ladder:
        g = eb - np.log(scaling.predict_joint(fit_a, np.full(len(grid), big_n), grid))
        idx = np.nonzero(np.sign(g[:-1]) * np.sign(g[1:]) < 0)[0]
        roots = []
        for i in idx:  # linear in log n between grid points: 1% of a decade at worst
            t = math.log(grid[i]) + g[i] / (g[i] - g[i + 1]) * math.log(grid[i + 1] / grid[i])
            roots.append(math.exp(t))
        picked = scaling.pick_break_even(roots, x_lo, x_hi)
        out.append(math.nan if picked is None else picked)
    return np.array(out)


def _band(samples: np.ndarray) -> list:
    """Per ladder point, the 2.5/97.5 percentiles; a resample with no crossing counts as beyond
    the search, so an upper end past it is None."""
    out = []
    for col in samples.T:
        lo, hi = resample.log_percentiles(col, [2.5, 97.5])
        if not np.isfinite(lo):
            out.append(None)
            continue
        out.append([scaling.round6(lo), None if not np.isfinite(hi) else scaling.round6(hi)])
    return out


def break_even_vs_params(frame, pair, n_test: dict, n_boot: int, seed: int, x_range) -> dict:
    """For each rung of pair[1], the n* against pair[0] of N parameters across its ladder."""
    a, b = pair
    (ca, pa), (cb, pb) = _cells(frame, a), _cells(frame, b)
    fa, fb = (_fit(ca, pa) if ca else None), (_fit(cb, pb) if cb else None)
    if fa is None or fb is None:
        return {"skipped": f"needs a joint fit err(N, n) for both {a} and {b}"}
    x_lo, x_hi = x_range
    bracket = scaling.bracket_for(x_lo, x_hi)
    ladder = np.unique(np.append(np.geomspace(pa.min(), pa.max(), LADDER_POINTS), np.unique(pa)))
    rungs = sorted({(float(p), c[1]) for c, p in zip(cb, pb, strict=True)})
    points = {s: n_star(fb, p, fa, ladder, bracket, x_lo, x_hi) for p, s in rungs}
    boots = _bootstrap(ca, pa, fa, cb, pb, fb, n_test, pair, min(n_boot, MAX_JOINT_BOOT), seed)
    out_rungs = []
    for p, s in rungs:
        samples = np.array(
            [n_star(rb, p, ra, ladder, bracket, x_lo, x_hi) for ra, rb in boots]
        ).reshape(len(boots), len(ladder))
        band = _band(samples) if len(boots) else [None] * len(ladder)
        out_rungs.append(
            {
                "size": s,
                "params": int(p),
                "n_star": [None if not np.isfinite(v) else scaling.round6(v) for v in points[s]],
                "ci": band,
            }
        )
    return {
        "families": [a, b],
        "ladder": [int(round(v)) for v in ladder],
        "ladder_sizes": {c[1]: int(p) for c, p in zip(ca, pa, strict=True)},
        "rungs": out_rungs,
        "bracket": [scaling.round6(v) for v in bracket],
        "measured_range": [x_lo, x_hi],
        "n_resamples": len(boots),
    }


def _bootstrap(ca, pa, fa, cb, pb, fb, n_test, pair, n_boot, seed) -> list[tuple]:
    rng = np.random.default_rng(seed + 1)
    da = resample.resampler(ca, n_test.get(pair[0]), None)
    db = resample.resampler(cb, n_test.get(pair[1]), None)
    out = []
    for _ in range(n_boot):
        ra = _fit(ca, pa, da(rng), warm=fa)
        rb = _fit(cb, pb, db(rng), warm=fb)
        if ra is not None and rb is not None:
            out.append((ra, rb))
    return out


# ------------------------------------------------------------------------------ compute-matched
def pareto_frontier(x, y):
    """Points no cheaper point beats: sorted by x, each with a lower y than all before it."""
    order = np.lexsort((y, x))
    fx, fy, best = [], [], math.inf
    for i in order:
        if y[i] < best:
            best = y[i]
            fx.append(x[i])
            fy.append(y[i])
    return np.array(fx), np.array(fy)


def compute_frontiers(summary: pd.DataFrame, pair) -> dict | None:
    """Each family's frontier in (training FLOPs, error) and where the leading one changes."""
    have = summary[summary["train_flops"].notna() & (summary["train_flops"] > 0)]
    if pair is None or any(not (have["family"] == f).any() for f in pair):
        return None
    fronts = {}
    for f in pair:
        rows = have[have["family"] == f]
        fronts[f] = pareto_frontier(
            rows["train_flops"].to_numpy(float), rows["test_error_mean"].to_numpy(float)
        )
    start = max(fronts[f][0][0] for f in pair)  # from where both families have a point
    flops = sorted({float(c) for f in pair for c in fronts[f][0] if c >= start})
    leaders = []
    for c in flops:
        best = {f: float(fronts[f][1][fronts[f][0] <= c].min()) for f in pair}
        leaders.append((c, min(pair, key=lambda f: (best[f], pair.index(f))), best))
    changes = [
        {"flops": scaling.round6(c), "leader": lead}
        for (c, lead, _), (_, prev, _) in zip(leaders[1:], leaders[:-1], strict=True)
        if lead != prev
    ]
    c_max, lead_max, best_max = leaders[-1]
    return {
        "frontiers": {
            f: [[scaling.round6(c), scaling.round6(e)] for c, e in zip(*fronts[f], strict=True)]
            for f in pair
        },
        "leader_from": {"flops": scaling.round6(leaders[0][0]), "leader": leaders[0][1]},
        "changes": changes,
        "at_max": {"flops": scaling.round6(c_max), "leader": lead_max}
        | {f: scaling.round6(v) for f, v in best_max.items()},
    }
