"""Resampling one family's envelope cells: the noise every interval of the analysis carries.

An envelope is ``[(x, group, seed values)]`` (see :func:`bench.analysis.scaling.envelope`). One
resample redraws each cell's values:

- a cell with several seeds: its seeds resampled with replacement, widened by sqrt(m/(m-1)) about
  the cell's log mean (with 3-5 seeds a plain resample understates the spread);
- a cell with one seed, when other cells have several: a log deviation drawn from the pooled
  seed-to-seed deviations (the seed spread seen elsewhere in the family);
- a cell with one seed and no repeated cell anywhere: the test set's binomial noise, a fresh
  error count drawn as Binomial(n_test, err) / n_test. This is all a single seed can tell and it is
  several times smaller than the seed-to-seed spread of real training, so such an interval is a
  lower bound on the uncertainty (the report says so);
- with neither seeds nor a test-set size: log residuals of the fitted curve resampled.

This draws the cells of one fixed pick: the sizes chosen on the full data (by validation error).
Where several sizes were measured at an x, :mod:`bench.analysis.repick` re-picks the size in every
resample and uses these per-cell draws where only one size was measured.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from bench.analysis import scaling

SEEDS = "seeds resampled within each cell"
POOLED = "one-seed cells given the family's pooled seed-to-seed spread"
BINOMIAL = "one seed per cell: the test set's binomial noise only (seed spread unknown)"
RESIDUALS = "one seed per cell, no test-set size: log residuals of the fit resampled"
REPICKED = "size re-picked per resample by validation error"


def floor_error(y, n_test: int | None):
    """Errors floored at half a test example's error: a 0% cell stays, and log fits can take it."""
    y = np.asarray(y, dtype=float)
    return np.maximum(y, 0.5 / n_test) if n_test else y


def widening(m: int) -> float:
    """sqrt(m/(m-1)): a plain resample of m seeds has (m-1)/m of their variance."""
    return math.sqrt(m / (m - 1))


def pooled_deviations(env) -> np.ndarray | None:
    """Widened log deviations of every seed of every several-seed cell, cell by cell in order."""
    pool = []
    for _, _, ys in env:
        if len(ys) > 1:
            logs = np.log(ys)
            pool.append((logs - logs.mean()) * widening(len(logs)))
    return np.concatenate(pool) if pool else None


def method(env, n_test: int | None, repicked: bool = False) -> str:
    """How :func:`resampler` treats this envelope, in words (and whether its size is re-picked)."""
    multi = any(len(ys) > 1 for _, _, ys in env)
    single = any(len(ys) == 1 for _, _, ys in env)
    if multi:
        text = SEEDS + (f"; {POOLED}" if single else "")
    else:
        text = BINOMIAL if n_test else RESIDUALS
    return text + (f"; {REPICKED}" if repicked else "")


def widened(ys: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """The seeds at ``idx``, their spread about the cell's log mean widened (see the module)."""
    logs = np.log(ys)
    centre = logs.mean()
    return np.exp(centre + (logs[idx] - centre) * widening(len(ys)))


def cell_drawer(env, n_test: int | None, fit: scaling.Fit | None) -> Callable:
    """A function (rng, one cell's seed values) -> that cell's values in one resample."""
    pool = pooled_deviations(env)
    resid = None
    if pool is None and not n_test and fit is not None:
        x, y = scaling.envelope_points(env)
        resid = np.log(y) - np.log(scaling.predict(fit, x))

    def draw(rng, ys) -> np.ndarray:
        m = len(ys)
        if m > 1:
            return widened(ys, rng.integers(0, m, m))
        if pool is not None:
            return ys * np.exp(pool[rng.integers(0, len(pool), 1)])
        if n_test:
            return floor_error(rng.binomial(n_test, np.clip(ys, 0, 1)) / n_test, n_test)
        if resid is not None:
            return ys * np.exp(resid[rng.integers(0, len(resid), 1)])
        return ys

    return draw


def resampler(env, n_test: int | None, fit: scaling.Fit | None) -> Callable:
    """A function rng -> list of seed arrays, one per envelope cell, for one resample."""
    draw = cell_drawer(env, n_test, fit)
    return lambda rng: [draw(rng, ys) for _, _, ys in env]


def points(env, drawn: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Resampled values as the (x, y) points a fit takes."""
    x = np.concatenate([np.full(len(ys), x) for (x, _, _), ys in zip(env, drawn, strict=True)])
    return x, np.concatenate(drawn)


def means(env, drawn: list[np.ndarray]) -> dict[float, float]:
    """Resampled cell means by x."""
    return {x: float(np.mean(ys)) for (x, _, _), ys in zip(env, drawn, strict=True)}


def log_noise_var(env, n_test: int | None, fit: scaling.Fit | None) -> tuple[float, str]:
    """Variance of one point's log error, and where the estimate comes from.

    Pooled seed-to-seed variance when cells have several seeds; else the binomial variance of the
    test set, (1 - err) / (err n_test) on the log scale. Either is raised to the fit's residual
    variance (per degree of freedom) when the points scatter more than it says: one seed's
    binomial noise alone would call a floor identified that the scatter does not pin.
    """
    pool = pooled_deviations(env)
    var, source = 0.0, "none"
    if pool is not None and len(pool) > 2:
        var, source = float(np.mean(pool**2)), "seed-to-seed spread"
    elif n_test:
        _, y = scaling.envelope_points(env)
        y = floor_error(y, n_test)
        var = float(np.mean((1 - y) / (y * n_test)))
        source = f"binomial noise of {n_test:,} test images"
    if fit is not None and fit.n_points > len(fit.params):
        resid = fit.rmse_log**2 * fit.n_points / (fit.n_points - len(fit.params))
        if resid > var:
            var, source = resid, "the fit's residual scatter (larger than " + source + ")"
    return var, source


# Stands in for "no crossing within the search" (log10 n) so percentiles stay finite.
BEYOND_LOG10 = 1e6


def log_percentiles(xs, qs) -> list[float]:
    """Percentiles of positive values in log10, nan/inf counted as beyond everything; a
    percentile that lands beyond is returned as inf."""
    v = np.asarray(xs, dtype=float)
    logs = np.where(np.isfinite(v) & (v > 0), np.log10(np.where(v > 0, v, 1.0)), BEYOND_LOG10)
    out = np.percentile(logs, qs)
    return [math.inf if q >= BEYOND_LOG10 / 2 else float(10**q) for q in out]
