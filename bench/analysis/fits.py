"""Fits of a study or a table, as JSON-ready dicts: envelopes, break-even, joint fits, winners.

``bench analyze`` and ``bench fit`` both call :func:`fit_families`; the numbers come from
:mod:`bench.analysis.scaling`, the words from :mod:`bench.analysis.report`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.analysis import breakeven, identify, repick, resample, scaling

DEFAULT_PAIR = ("resnet", "vit")


@scaling.one_blas_thread
def fit_families(
    table,
    families,
    group_col,
    x_col,
    y_col,
    fam_col,
    bootstrap,
    seed,
    group_orders=None,
    score_col=None,
    n_test=None,
    n_val=None,
    repick_sizes=True,
):
    """Envelope fits per family and the break-even between the first two of ``families``.

    ``table`` has one row per measurement; rows with the same family, group and x are seeds.
    ``score_col`` (validation error in a study) picks each family's best group per x; ``n_test``
    ({family: test-set size}) gives one-seed cells the test set's binomial noise, ``n_val`` their
    validation errors the validation set's. The bootstrap re-picks each family's size per resample
    where it measured several at an x; ``repick_sizes=False`` keeps the full-data pick instead.
    Returns ``{"fits": {...}, "break_even": {...} or None, "notes": [...]}`` (JSON-ready) and the
    per-family envelopes [(x, group, seed values)], which the figures reuse.
    """
    notes: list[str] = []
    fits: dict = {}
    chosen: dict = {}
    envs: dict = {}
    rivals: dict = {}
    n_test = n_test or {}
    for fam in families:
        rows = table[table[fam_col] == fam]
        order = (group_orders or {}).get(fam)
        seeds, vals, score = _seed_values(rows, group_col, x_col, y_col, score_col)
        env = envs[fam] = scaling.envelope(seeds, order, score)
        if repick_sizes:
            rivals[fam] = repick.rivals(seeds, vals, order)
        fits[fam], fit = _family_entry(env, x_col, fam, notes, n_test.get(fam))
        if fit is not None:
            chosen[fam] = fit
    crossing = _break_even(envs, chosen, families, n_test, bootstrap, seed, rivals, n_val, notes)
    return {"fits": fits, "break_even": crossing, "notes": notes}, envs


def _seed_values(rows, group_col, x_col, y_col, score_col) -> tuple[dict, dict | None, dict | None]:
    """One family's seed values of ``y_col`` per (group, x); with ``score_col``, its seed values
    too and their mean per (group, x): what picks the envelope's size."""
    groups = rows[group_col].tolist() if group_col else [""] * len(rows)
    xs = rows[x_col].to_numpy(float)
    seeds = scaling.group_seeds(groups, xs, rows[y_col].to_numpy(float))
    if not (score_col and score_col in rows):
        return seeds, None, None
    vals = scaling.group_seeds(groups, xs, rows[score_col].to_numpy(float))
    score = {k: float(np.nanmean(v)) if np.isfinite(v).any() else None for k, v in vals.items()}
    return seeds, vals, score


def _break_even(envs, chosen, families, n_test, bootstrap, seed, rivals, n_val, notes):
    """The break-even between the first two families, or None with a note saying why not."""
    pair = family_pair(families, notes)
    if pair is None:
        notes.append(
            "break-even skipped: it needs two families, found "
            + (", ".join(families) if families else "none")
        )
        return None
    missing = [f for f in pair if f not in chosen]
    if missing:
        notes.append(f"break-even skipped: no envelope fit for {', '.join(missing)}")
        return None
    if bootstrap == 0:
        notes.append("bootstrap skipped (--bootstrap 0): no interval for the break-even")
    crossing = breakeven.analyse_pair(
        envs, chosen, pair, n_test, bootstrap, seed, rivals=rivals, n_val=n_val
    )
    notes += crossing.pop("notes")
    return crossing


def _family_entry(env, x_col, fam, notes, n_test=None) -> tuple[dict, scaling.Fit | None]:
    """One family's fits.json entry from its envelope, and the chosen fit (None if none)."""
    x, y = scaling.envelope_points(env)
    result = scaling.fit_family(x, y, x_name=x_col)
    entry: dict = {
        "form": result["chosen"],
        "selection": result["reason"],
        "not_fitted": result.get("not_fitted", {}),
        "envelope": [
            {
                "x": json_number(xv),
                "group": g,
                "mean": scaling.round6(float(np.mean(ys))),
                "count": len(ys),
            }
            for xv, g, ys in env
        ],
        "x_range": [json_number(x.min()), json_number(x.max())] if len(x) else None,
        "forms": {f: fit.to_dict() for f, fit in sorted(result["fits"].items())},
        "holdout": {f: h for f, h in sorted(result["holdout"].items())},
    }
    if result["chosen"] is None:
        notes.append(f"{fam}: no envelope fit ({result['reason']})")
        entry.update(params=None, rmse_log=None, extrapolation=None, at_bound=[], floor=None)
        return entry, None
    fit = result["fits"][result["chosen"]]
    entry.update(params=fit.to_dict()["params"], rmse_log=scaling.round6(fit.rmse_log))
    entry["at_bound"] = list(fit.at_bound)
    noise_var, noise_from = resample.log_noise_var(env, n_test, fit)
    entry["floor"] = identify.floor_profile(fit, x, y, noise_var)
    if entry["floor"] is not None:
        entry["floor"]["noise_from"] = noise_from
    entry["extrapolation"] = result["holdout"].get(result["chosen"])
    if entry["extrapolation"] is None:
        notes.append(
            f"{fam}: extrapolation check skipped (too few distinct {x_col} to hold the largest out)"
        )
    return entry, fit


def family_pair(families, notes) -> tuple[str, str] | None:
    """The two families the break-even compares: resnet and vit when present, else the first two."""
    if len(families) < 2:
        return None
    if len(families) == 2:
        return tuple(families)
    pair = DEFAULT_PAIR if all(f in families for f in DEFAULT_PAIR) else tuple(families[:2])
    notes.append(f"more than two families: break-even between {pair[0]} and {pair[1]} only")
    return pair


def json_number(v):
    """Integers stay integers in JSON (n_train, params); everything else to six digits."""
    v = float(v)
    return int(v) if v.is_integer() and abs(v) < 2**53 else scaling.round6(v)


def _err(rows) -> str:
    """The column log fits take: ``fit_error`` (0% floored) in a study, else test_error."""
    return "fit_error" if "fit_error" in rows else "test_error"


def joint_fit(frame: pd.DataFrame, fam: str) -> dict:
    """err(N, n) for one family over all its cells, and how well it predicts the largest n."""
    rows = frame[(frame["family"] == fam) & frame["params"].notna() & (frame["params"] > 0)]
    fit = (
        scaling.fit_joint(rows["params"], rows["n_train"], rows[_err(rows)]) if len(rows) else None
    )
    if fit is None:
        return {
            "skipped": "needs at least 2 sizes with parameter counts, 2 values of n_train and 5 cells"
        }
    out = fit.to_dict()
    n_max = rows["n_train"].max()
    train = rows[rows["n_train"] < n_max]
    held = rows[rows["n_train"] == n_max]
    without = (
        scaling.fit_joint(train["params"], train["n_train"], train[_err(train)])
        if len(train)
        else None
    )
    if without is None:
        out["extrapolation"] = None
        return out
    cells = held.groupby("size", sort=True).agg(
        params=("params", "median"), observed=(_err(held), "mean")
    )
    pred = scaling.predict_joint(without, cells["params"], np.full(len(cells), float(n_max)))
    log_err = np.log(pred / cells["observed"].to_numpy())
    out["extrapolation"] = {
        "x": int(n_max),
        "mean_abs_log_error": scaling.round6(float(np.mean(np.abs(log_err)))),
        "cells": [
            {"size": s, "observed": scaling.round6(o), "predicted": scaling.round6(p)}
            for s, o, p in zip(cells.index, cells["observed"], pred, strict=True)
        ],
    }
    return out


def winners(fits, pair):
    """Which family has the lower envelope error at the smallest and largest shared n."""
    if pair is None or any(not fits.get(f, {}).get("envelope") for f in pair):
        return None
    env = {f: {e["x"]: e["mean"] for e in fits[f]["envelope"]} for f in pair}
    shared = sorted(set(env[pair[0]]) & set(env[pair[1]]))
    if not shared:
        return None
    out = {}
    for label, n in (("smallest", shared[0]), ("largest", shared[-1])):
        a, b = env[pair[0]][n], env[pair[1]][n]
        win, lose = (pair[0], pair[1]) if a <= b else (pair[1], pair[0])
        out[label] = {
            "n_train": n,
            "winner": win,
            "margin": scaling.round6(abs(a - b)),
            pair[0]: a,
            pair[1]: b,
            "loser": lose,
        }
    return out
