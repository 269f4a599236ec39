"""Scaling fits and break-even on data drawn from known curves (pure numpy/scipy, no records)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import brentq

from bench.analysis import breakeven, scaling

N_GRID = np.geomspace(500, 2e5, 8)


def power(n, e_inf, a, b):
    return e_inf + a * np.asarray(n, float) ** -b


def draw(curve, ns=N_GRID, seeds=4, noise=0.02, rng=None):
    """Several seeds per n with multiplicative (log-normal) noise: x, y arrays."""
    rng = rng or np.random.default_rng(0)
    x = np.repeat(np.asarray(ns, float), seeds)
    return x, curve(x) * np.exp(rng.normal(0.0, noise, x.size))


def true_crossing(f, g, lo=1.0, hi=9.0):
    return 10 ** brentq(lambda t: math.log(f(10**t)) - math.log(g(10**t)), lo, hi)


def family_fit(x, y):
    result = scaling.fit_family(x, y)
    return result["fits"][result["chosen"]], result


def run_break_even(curves, ns, seed=0, n_boot=200):
    """Both families measured on ``ns``; returns the break-even (point estimate and bootstrap)."""
    rng = np.random.default_rng(seed)
    envs, fits = {}, {}
    for name, curve in curves.items():
        x, y = draw(curve, ns, rng=rng)
        envs[name] = scaling.envelope(scaling.group_seeds([""] * len(x), x, y))
        fits[name], _ = family_fit(x, y)
    out = breakeven.analyse_pair(envs, fits, list(curves), {}, n_boot, seed=0)
    return out, out


# ViT: lower floor and steeper; ResNet: better with little data. They cross near n = 71k.
def vit(n):
    return power(n, 0.04, 30.0, 0.5)


def resnet(n):
    return power(n, 0.10, 1.5, 0.3)


def test_power_fit_recovers_the_exponent_and_floor():
    x, y = draw(lambda n: power(n, 0.05, 8.0, 0.5))
    fit = scaling.fit_form("power", x, y)
    assert fit.params["b"] == pytest.approx(0.5, abs=0.06)
    assert fit.params["e_inf"] == pytest.approx(0.05, abs=0.01)
    assert fit.rmse_log < 0.03  # about the 2% noise
    x, y = draw(lambda n: power(n, 0.10, 1.2, 0.3), rng=np.random.default_rng(1))
    assert scaling.fit_form("power", x, y).params["b"] == pytest.approx(0.3, abs=0.06)


def test_floor_stays_below_the_lowest_observation():
    # Data with no visible floor: e_inf must still respect 0 <= e_inf < min(y).
    x, y = draw(lambda n: 5.0 * n**-0.4, noise=0.01)
    fit = scaling.fit_form("power", x, y)
    assert 0.0 <= fit.params["e_inf"] < y.min()
    assert fit.params["b"] > 0


def test_m4_solver_matches_brentq():
    e_inf, e_0, alpha = 0.05, 0.9, 0.7
    g = 40.0 * N_GRID**-0.5
    got = scaling._m4_solve(e_inf, e_0, alpha, g)
    for gi, err in zip(g, got, strict=True):
        want = brentq(lambda e, gi=gi: e - e_inf - gi * (e_0 - e) ** alpha, e_inf, e_0, xtol=1e-15)
        assert err == pytest.approx(want, rel=1e-10)


def test_m4_fit_reproduces_a_noise_free_m4_curve():
    ns = np.geomspace(100, 1e6, 9)
    truth = scaling._m4_solve(0.05, 0.9, 1.0, 30.0 * ns**-0.5)
    fit = scaling.fit_form("m4", ns, truth)
    assert fit.rmse_log < 1e-3
    assert scaling.predict(fit, ns) == pytest.approx(truth, rel=5e-3)
    assert fit.params["c"] == pytest.approx(0.5, abs=0.1)


def test_joint_fit_recovers_both_exponents():
    rng = np.random.default_rng(3)
    sizes = np.array([1e6, 4e6, 16e6, 64e6])
    big_n, n = (a.ravel() for a in np.meshgrid(sizes, N_GRID))
    big_n, n = np.repeat(big_n, 3), np.repeat(n, 3)
    y = (0.05 + 2.0 / big_n**0.25 + 8.0 / n**0.5) * np.exp(rng.normal(0, 0.02, n.size))
    fit = scaling.fit_joint(big_n, n, y)
    assert fit.params["alpha"] == pytest.approx(0.25, abs=0.08)
    assert fit.params["beta"] == pytest.approx(0.5, abs=0.06)
    assert scaling.fit_joint(big_n[:4], n[:4], y[:4]) is None  # too few cells: skipped, not garbage


def test_form_choice_falls_back_to_power_law_with_few_points():
    x, y = draw(vit, ns=N_GRID[:4])
    result = scaling.fit_family(x, y)
    assert result["chosen"] == "power"
    assert "m4" not in result["fits"]
    assert "power" in result["holdout"]  # 4 distinct n: 3 left to fit, the 4th predicted
    few = scaling.fit_family(*draw(vit, ns=N_GRID[:2]))
    assert few["chosen"] is None and "needs at least 3" in few["reason"]


def test_holdout_predicts_the_largest_n():
    x, y = draw(vit)
    check = scaling.holdout("power", x, y)
    assert check["x"] == pytest.approx(N_GRID[-1], rel=1e-5)
    assert abs(check["rel_error"]) < 0.1  # a clean power law extrapolates one step well


def test_break_even_inside_the_measured_range():
    true = true_crossing(resnet, vit)
    assert N_GRID[0] < true < N_GRID[-1]
    point, boot = run_break_even({"resnet": resnet, "vit": vit}, N_GRID)
    assert point["inside_range"] is True
    assert point["x"] == pytest.approx(true, rel=0.25)
    assert (point["below"], point["above"]) == ("resnet", "vit")
    lo, hi = boot["ci"]
    assert lo <= true <= hi
    assert boot["p_no_crossing"] < 0.05


def test_break_even_beyond_the_measured_range():
    ns = N_GRID[N_GRID < 2e4]  # the data stop at ~15k, well before the curves cross
    true = true_crossing(resnet, vit)
    assert true > ns.max()
    point, boot = run_break_even({"resnet": resnet, "vit": vit}, ns)
    assert point["inside_range"] is False
    assert point["kind"] == "extrapolated"  # the crossing lies within a decade of the data
    assert ns.max() < point["x"] <= 10 * ns.max()
    lo, hi = boot["ci"]
    assert lo <= true and (hi is None or true <= hi)  # None: open beyond the search
    assert lo > ns.max() / 3  # the interval sits beyond the data, not around it


def test_curves_that_never_cross():
    def worse(n):
        return power(n, 0.10, 4.0, 0.3)

    def better(n):
        return power(n, 0.05, 2.0, 0.3)

    point, boot = run_break_even({"a": worse, "b": better}, N_GRID, n_boot=100)
    far = point["x"] is None or not (N_GRID[0] / 100 < point["x"] < N_GRID[-1] * 100)
    assert far
    assert point["inside_range"] is False
    assert point["below"] == point["above"] == "b"
    assert point["kind"] in ("lower_bound", "no_trend") and point["leader"] == "b"
    assert boot["p_no_crossing"] > 0.5


def test_every_crossing_is_reported_and_the_inside_one_chosen():
    # Two power laws can cross twice: b wins at small n, a in the middle, b again at huge n.
    a = scaling.Fit("power", {"e_inf": 0.2, "a": 10.0, "b": 0.5}, 0.0, 0, (), ())
    b = scaling.Fit("power", {"e_inf": 0.1, "a": 2.0, "b": 0.2}, 0.0, 0, (), ())
    roots = scaling.crossings(a, b, (1e1, 1e9))
    assert len(roots) == 2
    for r in roots:
        assert scaling.predict(a, [r])[0] == pytest.approx(scaling.predict(b, [r])[0], rel=1e-6)
    assert scaling.pick_break_even(roots, 1e2, 1e5) == roots[0]
    assert scaling.pick_break_even(roots, 1e6, 1e7) == roots[1]  # nearest beyond
    assert scaling.pick_break_even([], 1e2, 1e5) is None
