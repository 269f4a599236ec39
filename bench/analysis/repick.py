"""Re-picking the envelope's size in every resample: the selection's own luck in every interval.

At each x the envelope takes the group (model size) with the lowest mean validation error on the
full data and fits its test errors. A size picked that way looks best partly by luck (the
winner's curse); a bootstrap that keeps the pick fixed leaves that luck out of its intervals. Here
each resample redraws every group measured at an x, picks the one with the lowest resampled mean
validation error (ties broken as :func:`bench.analysis.scaling.envelope` breaks them) and takes
that group's resampled test errors. One group's values at one x (a cell) are drawn so:

- several seeds: one draw of seed indices, shared by its validation and test values (they come
  from the same runs); test values widened about their log mean as the fixed pick widens them
  (:func:`bench.analysis.resample.widened`), validation values by the same factor about their
  plain mean (the pick compares plain means, and a 0% validation error has no log);
- one seed, where the envelope pools seed deviations (from its several-seed cells, as the fixed
  pick pools them): one pooled run drawn for both, its log deviation for the test error and its
  relative validation deviation for the validation error;
- one seed otherwise: the test error as the fixed pick draws it (the test set's binomial noise,
  or fit residuals); the validation error as Binomial(n_val, err) / n_val when the validation-set
  size is known, else as measured.

A group without validation values is ranked by its resampled test errors, as the full-data pick
ranks it. The fitted curves stay on the full-data pick; only the intervals change. Where only one
group was measured at an x the draw is the fixed pick's, call for call: a study with one size per
x gets the same numbers for the same bootstrap seed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from bench.analysis import resample, scaling

# {x: [(group, test values, validation values)]}, each x's groups in tie-break order
Rivals = dict


def rivals(seeds: scaling.Seeds, vals: scaling.Seeds | None, order: Sequence | None) -> Rivals:
    """Every group measured at each x with its seed values; ``vals`` aligned with ``seeds`` (the
    same rows), missing validation values as nan."""
    rank = {g: i for i, g in enumerate(order or [])}
    out: dict = {}
    for (g, x), ys in seeds.items():
        vs = vals.get((g, x)) if vals is not None else None
        vs = np.full(len(ys), np.nan) if vs is None else np.asarray(vs, dtype=float)
        out.setdefault(x, []).append((g, ys, vs))
    for cells in out.values():
        cells.sort(key=lambda c: (rank.get(c[0], len(rank)), str(c[0])))
    return out


def several(riv: Rivals | None) -> bool:
    """Whether any x has more than one group to pick from."""
    return bool(riv) and any(len(cells) > 1 for cells in riv.values())


def _val_pool(env, riv: Rivals) -> np.ndarray | None:
    """Widened relative validation deviations, run for run beside
    :func:`bench.analysis.resample.pooled_deviations` (a missing value: no deviation)."""
    pool = []
    for x, g, ys in env:
        if len(ys) > 1:
            vs = next(c[2] for c in riv[x] if c[0] == g)
            centre = np.nanmean(vs) if np.isfinite(vs).any() else np.nan
            with np.errstate(invalid="ignore", divide="ignore"):
                dev = (vs / centre - 1) * resample.widening(len(vs))
            pool.append(np.nan_to_num(dev, nan=0.0, posinf=0.0, neginf=0.0))
    return np.concatenate(pool) if pool else None


def _ticket(rng, ys, vs, pool, val_pool, n_val):
    """One cell's shared randomness: (validation values, test values or None if still to draw)."""
    m = len(ys)
    if m > 1:
        idx = rng.integers(0, m, m)
        centre = np.nanmean(vs) if np.isfinite(vs).any() else np.nan
        return centre + (vs[idx] - centre) * resample.widening(m), resample.widened(ys, idx)
    if pool is not None:
        k = rng.integers(0, len(pool), 1)
        return vs * (1 + val_pool[k]), ys * np.exp(pool[k])
    if n_val and np.isfinite(vs).all():
        return rng.binomial(n_val, np.clip(vs, 0, 1)) / n_val, None
    return vs, None


def repicker(env, riv: Rivals | None, n_test, fit, n_val: int | None = None) -> Callable:
    """A function rng -> (seed arrays, picked groups), one per envelope cell, for one resample;
    the fixed pick where no x has more than one group."""
    draw_cell = resample.cell_drawer(env, n_test, fit)
    if not several(riv):
        return lambda rng: ([draw_cell(rng, ys) for _, _, ys in env], [g for _, g, _ in env])
    pools = (resample.pooled_deviations(env), _val_pool(env, riv))

    def draw(rng):
        out, picked = [], []
        for x, g, ys in env:
            if len(riv[x]) == 1:
                out.append(draw_cell(rng, ys))
                picked.append(g)
                continue
            values, group = _pick(rng, riv[x], pools, n_val, draw_cell)
            out.append(values)
            picked.append(group)
        return out, picked

    return draw


def _pick(rng, cells, pools, n_val, draw_cell) -> tuple[np.ndarray, object]:
    """The resampled test values of the group with the lowest resampled validation mean."""
    drawn = []
    for rank, (g, ys, vs) in enumerate(cells):
        val, test = _ticket(rng, ys, vs, *pools, n_val)
        score = np.nanmean(val) if np.isfinite(val).any() else np.nan
        if not np.isfinite(score):  # no validation value: ranked by test error, as on full data
            test = draw_cell(rng, ys) if test is None else test
            score = float(np.mean(test))
        drawn.append(((float(score), rank), g, ys, test))
    _, g, ys, test = min(drawn, key=lambda d: d[0])
    return (draw_cell(rng, ys) if test is None else test), g
