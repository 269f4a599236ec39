"""The gap between two families as its own quantity: log(err_b / err_a) against log10 n.

At each n both families measured, the gap is the log ratio of their envelope errors (0: equal,
+0.1: family b has ~10% more error). Its trend is a straight line in log10 n, fitted by least
squares; the slope (per decade of n) says whether the gap closes, and how fast, without
assuming a floor for either curve.
"""

from __future__ import annotations

import math

import numpy as np


def gap_points(means_a: dict, means_b: dict) -> tuple[np.ndarray, np.ndarray]:
    """Shared n and log(err_b / err_a) there, from {n: mean error} per family."""
    shared = sorted(set(means_a) & set(means_b))
    xs = np.array(shared, dtype=float)
    gaps = np.array([math.log(means_b[n] / means_a[n]) for n in shared])
    return xs, gaps


def trend(xs: np.ndarray, gaps: np.ndarray) -> tuple[float, float] | None:
    """(slope per decade, gap at the largest n on the line); None with fewer than 2 shared n."""
    if len(xs) < 2:
        return None
    t = np.log10(xs)
    slope, icpt = np.polyfit(t, gaps, 1)
    return float(slope), float(icpt + slope * t.max())


def trend_crossing(slope: float, gap_at_max: float, x_max: float) -> float:
    """Where the straight-line gap reaches 0 beyond x_max; inf when the line does not close it."""
    if gap_at_max == 0:
        return x_max
    if slope == 0 or math.copysign(1, slope) == math.copysign(1, gap_at_max):
        return math.inf
    decades = -gap_at_max / slope
    return x_max * 10 ** min(decades, 300.0)


def trend_passed(slope: float, gap_at_max: float, measured_at_max: float, x_max: float):
    """Where the straight-line gap reached 0 inside the data when the line has the other sign
    than the gap measured at x_max (the trend says the families crossed, the largest n says
    they did not yet); None when they agree."""
    if slope == 0 or gap_at_max == 0 or (gap_at_max > 0) == (measured_at_max > 0):
        return None
    return x_max * 10 ** (-gap_at_max / slope)
