"""Scaling-curve fits and the break-even between two families (pure numpy/scipy).

Forms, with x the training-set size n unless a table says otherwise:

- ``power``: err = e_inf + a * x^-b (saturating power law)
- ``m4``:    (err - e_inf) / (e_0 - err)^alpha = beta * x^-c (Alabdulmohsin et al. 2022), solved
  for err per x; alpha = 0 gives the power law back
- ``joint``: err = E + A / N^alpha + B / n^beta over parameter count N and data size n

Every fit minimises a Huber loss on log residuals (log pred - log obs) with L-BFGS-B from a grid
of starting points, bounded so that 0 <= e_inf < the lowest observed error and exponents > 0
(Besiroglu et al. 2024). Inside the optimiser x is divided by its geometric mean so amplitude and
exponent are not strongly correlated; reported parameters are in the original units.

Measurements come as ``{(group, x): array of y over seeds}`` (:data:`Seeds`). ``group`` is the
model size in a study (the envelope picks the best group at each x) and a single dummy group for a
plain table; one (group, x) key is what a study calls a cell.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq, minimize
from threadpoolctl import threadpool_limits

# Seeds of one cell scatter by a few percent of the error; log residuals beyond 5% are treated as
# outliers (linear loss) so one diverged-looking seed cannot drag a whole curve.
HUBER_DELTA = 0.05
TINY = 1e-300
ENVELOPE_FORMS = ("power", "m4")  # simplest first: ties go to the earlier one
PARAM_NAMES = {
    "power": ("e_inf", "a", "b"),
    "m4": ("e_inf", "e_0", "alpha", "beta", "c"),
    "joint": ("E", "A", "alpha", "B", "beta"),
}
# Distinct x values a form needs before it is fitted at all (one per free parameter).
MIN_X = {"power": 3, "m4": 5}
# Exponents strictly positive, and no steeper than anything seen in practice.
EXP_BOUNDS = (1e-3, 4.0)
LOG_AMP_BOUNDS = (-50.0, 50.0)
# A more complex form must predict the held-out point better by this much |log error| to be chosen.
SELECT_MARGIN = 1e-3
DEFAULT_BRACKET = (1e1, 1e9)
# How far beyond the measured range a crossing may be extrapolated (a factor in x): one decade.
EXTRAPOLATE = 10.0
GRID_PER_DECADE = 100

Seeds = dict  # {(group, x): np.ndarray of y over seeds}
_BLAS_DEPTH = 0


@contextlib.contextmanager
def single_threaded_blas():
    """One BLAS thread while fitting: L-BFGS-B works on 3-5 parameters, and OpenBLAS threads
    spinning on such tiny problems made fits 10-40x slower on a busy 2-core machine.
    Re-entrant and cheap when nested (the bootstrap calls fit_form hundreds of times)."""
    global _BLAS_DEPTH
    if _BLAS_DEPTH:
        yield
        return
    try:
        limiter = threadpool_limits(limits=1, user_api="blas")
    except Exception:  # threadpoolctl unable to see the library: fits still work
        limiter = contextlib.nullcontext()
    _BLAS_DEPTH += 1
    try:
        with limiter:
            yield
    finally:
        _BLAS_DEPTH -= 1


def one_blas_thread(func):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with single_threaded_blas():
            return func(*args, **kwargs)

    return wrapper


@dataclass(frozen=True)
class Fit:
    form: str
    params: dict  # original units, see PARAM_NAMES
    rmse_log: float
    n_points: int
    theta: tuple  # optimiser coordinates; warm start for bootstrap refits
    scale: tuple  # geometric-mean scale(s) of x used by theta
    at_bound: tuple = ()  # names of parameters the optimiser left on a bound (not identified)

    @classmethod
    def from_dict(cls, d: dict) -> Fit:
        """Rebuild enough of a fit from its JSON form to predict with it (plots, other tools)."""
        return cls(
            d["form"], dict(d["params"]), d.get("rmse_log") or 0.0, d.get("n_points", 0), (), ()
        )

    def to_dict(self) -> dict:
        return {
            "form": self.form,
            "params": {k: round6(v) for k, v in self.params.items()},
            "rmse_log": round6(self.rmse_log),
            "n_points": self.n_points,
            "at_bound": list(self.at_bound),
        }


def at_bounds(theta, bounds, names) -> tuple:
    """Parameters within a relative 1e-4 of the bound's span from a bound: the data did not pin
    them; the optimiser stopped at the wall (a pinned parameter, lo == hi, is not flagged)."""
    out = []
    for name, t, (lo, hi) in zip(names, theta, bounds, strict=True):
        if hi <= lo:
            continue
        tol = 1e-4 * (hi - lo)
        if t <= lo + tol or t >= hi - tol:
            out.append(name)
    return tuple(out)


def round6(v):
    """Six significant digits: enough for any figure, and stable text for byte-identical output."""
    if v is None or not np.isfinite(v):
        return None
    return float(f"{float(v):.6g}")


# ---------------------------------------------------------------------------------------------
# Models: each returns (pred, jacobian wrt theta) so L-BFGS-B gets exact gradients (the bootstrap
# refits thousands of times; finite differences would be ~5x slower).


def _power(theta, u):
    e_inf, log_a, b = theta
    t = np.exp(log_a - b * u)
    return e_inf + t, np.column_stack([np.ones_like(u), t, -u * t])


def _m4_solve(e_inf, e_0, alpha, g):
    """Root err in (e_inf, e_0) of err - e_inf - g (e_0 - err)^alpha, vectorised over g.

    The left side increases strictly in err, is negative at e_inf and positive at e_0, so the root
    is unique; Newton steps that leave the bracket fall back to bisection.
    """
    g = np.asarray(g, dtype=float)
    lo = np.full_like(g, e_inf)
    hi = np.full_like(g, e_0)
    x = 0.5 * (lo + hi)
    for _ in range(200):
        d = e_0 - x
        p = g * d**alpha
        h = x - e_inf - p
        below = h < 0
        lo = np.where(below, x, lo)
        hi = np.where(below, hi, x)
        with np.errstate(divide="ignore", invalid="ignore"):
            xn = x - h / (1.0 + alpha * p / d)
        ok = np.isfinite(xn) & (xn >= lo) & (xn <= hi)
        xn = np.where(ok, xn, 0.5 * (lo + hi))
        done = np.abs(xn - x) <= 1e-14 * np.abs(xn) + 1e-300
        x = xn
        if done.all():
            break
    return x


def _m4(theta, u):
    e_inf, e_0, alpha, log_beta, c = theta
    g = np.exp(log_beta - c * u)
    err = _m4_solve(e_inf, e_0, alpha, g)
    # Implicit function theorem on F(err, theta) = err - e_inf - g (e_0 - err)^alpha = 0.
    d = np.maximum(e_0 - err, TINY)
    p = g * d**alpha
    dfe = 1.0 + alpha * p / d
    dtheta = np.column_stack([-np.ones_like(u), -alpha * p / d, -p * np.log(d), -p, u * p])
    return err, -dtheta / dfe[:, None]


def _joint_model(theta, uv):
    big_e, log_a, alpha, log_b, beta = theta
    v, u = uv  # log(N/N0), log(n/n0)
    ta = np.exp(log_a - alpha * v)
    tb = np.exp(log_b - beta * u)
    jac = np.column_stack([np.ones_like(u), ta, -v * ta, tb, -u * tb])
    return big_e + ta + tb, jac


def _huber(r, delta=HUBER_DELTA):
    a = np.abs(r)
    loss = np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))
    return float(loss.sum()), np.clip(r, -delta, delta)


def _minimize(model: Callable, arg, y, starts, bounds):
    logy = np.log(y)

    def objective(theta):
        pred, jac = model(theta, arg)
        if not np.all(np.isfinite(pred)):
            return 1e12, np.zeros_like(theta)
        pred = np.maximum(pred, TINY)
        loss, dl = _huber(np.log(pred) - logy)
        grad = (dl / pred) @ jac
        return loss, np.nan_to_num(grad)

    lo = np.array([b[0] for b in bounds])
    hi = np.array([b[1] for b in bounds])
    best = None
    for start in starts:
        x0 = np.clip(np.asarray(start, dtype=float), lo, hi)
        res = minimize(
            objective,
            x0,
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options={"maxiter": 1000, "ftol": 1e-13, "gtol": 1e-10},
        )
        if best is None or res.fun < best.fun - 1e-14:
            best = res
    pred, _ = model(best.x, arg)
    rmse = float(np.sqrt(np.mean((np.log(np.maximum(pred, TINY)) - logy) ** 2)))
    return best.x, rmse


# ---------------------------------------------------------------------------------------------
# Envelope forms: power and m4


def _prepare(x, y):
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError("x and y must be 1-D arrays of the same length")
    if np.any(x <= 0) or np.any(y <= 0):
        raise ValueError("x and y must be positive to fit in log space")
    scale = float(np.exp(np.mean(np.log(x))))
    return x, y, np.log(x / scale), scale


def _bounds(form, y):
    y_min, y_max = float(y.min()), float(y.max())
    e_inf = (0.0, 0.999 * y_min)  # the floor must lie below every observed error
    if form == "power":
        return [e_inf, LOG_AMP_BOUNDS, EXP_BOUNDS]
    # e_0 is the error with no data: above every observation; an error rate cannot exceed 1.
    e_0 = (1.001 * y_max, max(1.0, 2.0 * y_max))
    return [e_inf, e_0, (0.0, 5.0), LOG_AMP_BOUNDS, EXP_BOUNDS]


def _power_starts(u, y):
    y_min = float(y.min())
    starts = []
    for f_inf in (0.0, 0.5, 0.9):
        e_inf = f_inf * y_min
        for b in (0.1, 0.3, 0.6, 1.0):
            # Given the floor and exponent, the amplitude that puts the curve through the data.
            log_a = float(np.median(np.log(y - e_inf) + b * u))
            starts.append((e_inf, log_a, b))
    return starts


def _m4_starts(u, y, power_theta):
    """M4 contains the power law (alpha = 0), so start from the power fit and bend it.

    Starting at the power solution means M4 never fits worse than the power law it contains;
    the bent starts (alpha > 0, two values of e_0 and c) look for the sigmoid-like shape.
    """
    e_inf, log_a, b = (float(t) for t in power_theta)
    y_max = float(y.max())
    starts = [(e_inf, max(1.01 * y_max, min(1.0, 1.2 * y_max)), 0.0, log_a, b)]
    for e_0 in (max(1.01 * y_max, min(1.0, 1.2 * y_max)), max(1.0, 2.0 * y_max)):
        for alpha in (0.5, 1.0):
            for c in (b, 1.5 * b):
                ratio = (y - e_inf) / (e_0 - y) ** alpha
                starts.append((e_inf, e_0, alpha, float(np.median(np.log(ratio) + c * u)), c))
    return starts


def _theta_to_params(form, theta, scale):
    t = [float(v) for v in theta]
    if form == "power":
        return {"e_inf": t[0], "a": math.exp(t[1] + t[2] * math.log(scale)), "b": t[2]}
    return {
        "e_inf": t[0],
        "e_0": t[1],
        "alpha": t[2],
        "beta": math.exp(t[3] + t[4] * math.log(scale)),
        "c": t[4],
    }


def _params_to_theta(form, params, scale):
    if form == "power":
        return (params["e_inf"], math.log(params["a"]) - params["b"] * math.log(scale), params["b"])
    return (
        params["e_inf"],
        params["e_0"],
        params["alpha"],
        math.log(params["beta"]) - params["c"] * math.log(scale),
        params["c"],
    )


@one_blas_thread
def fit_form(form: str, x, y, warm: Fit | None = None, e_inf: float | None = None) -> Fit | None:
    """Fit one envelope form; None when there are fewer distinct x than the form needs.

    ``e_inf`` pins the floor at that value (the profile of the floor refits the rest).
    """
    x, y, u, scale = _prepare(x, y)
    if len(np.unique(x)) < MIN_X[form]:
        return None
    bounds = _bounds(form, y)
    if e_inf is not None:
        bounds[0] = (float(e_inf), float(e_inf))
    if warm is not None:
        # Bootstrap refits: the resample is close to the data, so the full fit is a good start.
        starts = [_params_to_theta(form, warm.params, scale)]
    elif form == "power":
        starts = _power_starts(u, y)
    else:
        power_theta, _ = _minimize(_power, u, y, _power_starts(u, y), _bounds("power", y))
        starts = _m4_starts(u, y, power_theta)
    model = _power if form == "power" else _m4
    theta, rmse = _minimize(model, u, y, starts, bounds)
    flags = at_bounds(theta, bounds, PARAM_NAMES[form])
    params = _theta_to_params(form, theta, scale)
    return Fit(form, params, rmse, len(x), tuple(theta), (scale,), flags)


def predict(fit: Fit, x) -> np.ndarray:
    """Envelope prediction at x (original units)."""
    x = np.asarray(x, dtype=float)
    p = fit.params
    lx = np.log(x)
    if fit.form == "power":
        return p["e_inf"] + np.exp(math.log(p["a"]) - p["b"] * lx)
    if fit.form == "m4":
        g = np.exp(math.log(p["beta"]) - p["c"] * lx)
        return _m4_solve(p["e_inf"], p["e_0"], p["alpha"], np.atleast_1d(g)).reshape(x.shape)
    raise ValueError(f"predict() takes an envelope fit, got {fit.form!r}")


# ---------------------------------------------------------------------------------------------
# Joint form over parameter count N and data size n


@one_blas_thread
def fit_joint(params_n, x, y, warm: Fit | None = None) -> Fit | None:
    """err(N, n) = E + A/N^alpha + B/n^beta; None unless >= 2 sizes, >= 2 n and >= 5 cells."""
    big_n = np.asarray(params_n, dtype=float)
    x, y, u, n_scale = _prepare(x, y)
    if np.any(big_n <= 0) or big_n.shape != x.shape:
        raise ValueError("parameter counts must be positive, one per point")
    pairs = {(a, b) for a, b in zip(big_n.tolist(), x.tolist(), strict=True)}
    if len(set(big_n.tolist())) < 2 or len(set(x.tolist())) < 2 or len(pairs) < 5:
        return None
    big_scale = float(np.exp(np.mean(np.log(big_n))))
    v = np.log(big_n / big_scale)
    y_min = float(y.min())
    bounds = [(0.0, 0.999 * y_min), LOG_AMP_BOUNDS, EXP_BOUNDS, LOG_AMP_BOUNDS, EXP_BOUNDS]
    starts = []
    for f_inf in (0.0, 0.5):
        half = math.log(max(float(np.median(y)) - f_inf * y_min, 1e-12) / 2)
        for alpha in (0.2, 0.6):
            for beta in (0.2, 0.6):
                starts.append((f_inf * y_min, half, alpha, half, beta))
    if warm is not None and warm.scale == (big_scale, n_scale):
        starts = [warm.theta]  # bootstrap refits: the same points, redrawn; start at the full fit
    theta, rmse = _minimize(_joint_model, (v, u), y, starts, bounds)
    flags = at_bounds(theta, bounds, PARAM_NAMES["joint"])
    e, la, alpha, lb, beta = (float(t) for t in theta)
    params = {
        "E": e,
        "A": math.exp(la + alpha * math.log(big_scale)),
        "alpha": alpha,
        "B": math.exp(lb + beta * math.log(n_scale)),
        "beta": beta,
    }
    return Fit("joint", params, rmse, len(x), tuple(theta), (big_scale, n_scale), flags)


def predict_joint(fit: Fit, params_n, x) -> np.ndarray:
    p = fit.params
    big_n = np.asarray(params_n, dtype=float)
    x = np.asarray(x, dtype=float)
    return (
        p["E"]
        + np.exp(math.log(p["A"]) - p["alpha"] * np.log(big_n))
        + np.exp(math.log(p["B"]) - p["beta"] * np.log(x))
    )


# ---------------------------------------------------------------------------------------------
# Seeds and envelopes


def group_seeds(groups, x, y) -> Seeds:
    """Group repeated measurements: rows with the same (group, x) are seeds of one cell."""
    seeds: dict = {}
    for g, xi, yi in zip(groups, x, y, strict=True):
        seeds.setdefault((g, float(xi)), []).append(float(yi))
    return {
        k: np.asarray(v) for k, v in sorted(seeds.items(), key=lambda kv: (kv[0][1], str(kv[0][0])))
    }


def envelope(seeds: Seeds, group_order: Sequence | None = None, score: dict | None = None):
    """[(x, best group, seed values)] sorted by x: at each x the group with the lowest score.

    ``score`` ({(group, x): number}) is what picks the group, the mean validation error in a study
    (picking on test error would let the test set choose the model it then grades); without it
    the mean of the values themselves. Ties go to the earlier group in ``group_order`` (the
    smaller model in a study).
    """
    rank = {g: i for i, g in enumerate(group_order or [])}
    best: dict = {}
    for (g, x), ys in seeds.items():
        s = (score or {}).get((g, x))
        s = float(np.mean(ys)) if s is None or not np.isfinite(s) else float(s)
        key = (s, rank.get(g, len(rank)), str(g))
        if x not in best or key < best[x][0]:
            best[x] = (key, g, ys)
    return [(x, best[x][1], best[x][2]) for x in sorted(best)]


def envelope_points(env) -> tuple[np.ndarray, np.ndarray]:
    x = np.concatenate([np.full(len(ys), x) for x, _, ys in env]) if env else np.array([])
    y = np.concatenate([ys for _, _, ys in env]) if env else np.array([])
    return x, y


# ---------------------------------------------------------------------------------------------
# Form choice by held-out prediction


@one_blas_thread
def holdout(form: str, x, y) -> dict | None:
    """Fit without the largest x and predict it (judges extrapolation, not fit quality)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    x_max = float(x.max())
    keep = x < x_max
    fit = fit_form(form, x[keep], y[keep])
    if fit is None:
        return None
    observed = float(np.mean(y[~keep]))
    predicted = float(predict(fit, np.array([x_max]))[0])
    return {
        "x": round6(x_max),
        "observed": round6(observed),
        "predicted": round6(predicted),
        "log_error": round6(math.log(predicted / observed)),
        "rel_error": round6((predicted - observed) / observed),
        "fit_without": fit.to_dict(),
    }


@one_blas_thread
def fit_family(x, y, x_name: str = "x") -> dict:
    """Fit every envelope form there are points for and choose one by held-out prediction."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    n_x = len(np.unique(x))
    # A form with more free parameters than the data has distinct x is not identified: not fitted.
    not_fitted = {
        f: f"not fitted: {MIN_X[f]} parameters need at least {MIN_X[f]} distinct {x_name}, "
        f"the envelope has {n_x}"
        for f in ENVELOPE_FORMS
        if n_x < MIN_X[f]
    }
    fits = {f: fit_form(f, x, y) for f in ENVELOPE_FORMS if f not in not_fitted}
    fits = {f: v for f, v in fits.items() if v is not None}
    if not fits:
        return {
            "chosen": None,
            "fits": {},
            "holdout": {},
            "not_fitted": not_fitted,
            "reason": f"only {n_x} distinct {x_name}; a power law needs at least {MIN_X['power']}",
        }
    checks = {f: holdout(f, x, y) for f in fits}
    checks = {f: v for f, v in checks.items() if v is not None}
    chosen, reason = _choose(fits, checks, n_x, x_name)
    return {
        "chosen": chosen,
        "fits": fits,
        "holdout": checks,
        "not_fitted": not_fitted,
        "reason": reason,
    }


def _choose(fits: dict, checks: dict, n_x: int, x_name: str) -> tuple[str, str]:
    """The form that best predicts the held-out largest x, simplest first (a more complex form
    must win by SELECT_MARGIN), and why; the simplest fitted form where none could be checked."""
    if not checks:
        chosen = next(iter(fits))
        return chosen, (
            f"only {n_x} distinct {x_name}: too few to hold the largest out; "
            f"using the simplest form that fits ({chosen})"
        )
    chosen = None
    for f in ENVELOPE_FORMS:
        if f not in checks:
            continue
        error = abs(checks[f]["log_error"])
        if chosen is None or error < abs(checks[chosen]["log_error"]) - SELECT_MARGIN:
            chosen = f
    reason = f"best prediction of the held-out largest {x_name}: " + ", ".join(
        f"{f} abs log error {abs(checks[f]['log_error']):.3g}" for f in checks
    )
    skipped = [f for f in fits if f not in checks]
    if skipped:
        reason += f"; not checked (too few {x_name} to hold one out): " + ", ".join(skipped)
    return chosen, reason


# ---------------------------------------------------------------------------------------------
# Break-even


def bracket_for(x_lo: float, x_hi: float) -> tuple[float, float]:
    """Where a crossing is searched: the measured range and one decade beyond each end. Farther
    out a fitted curve says nothing the data can back (the issue of a break-even "at 1e9")."""
    return x_lo / EXTRAPOLATE, x_hi * EXTRAPOLATE


@one_blas_thread
def crossings(fit_a: Fit, fit_b: Fit, bracket=DEFAULT_BRACKET) -> list[float]:
    """Every x in the bracket where log err_a - log err_b changes sign (dense grid + brentq)."""
    lo, hi = math.log10(bracket[0]), math.log10(bracket[1])
    grid = np.linspace(lo, hi, max(int(round((hi - lo) * GRID_PER_DECADE)), 2) + 1)

    def gap(t):
        xs = np.power(10.0, np.atleast_1d(t))
        return np.log(np.maximum(predict(fit_a, xs), TINY)) - np.log(
            np.maximum(predict(fit_b, xs), TINY)
        )

    f = gap(grid)
    roots = []
    for i in range(len(grid) - 1):
        if f[i] == 0.0:
            roots.append(grid[i])
        elif f[i] * f[i + 1] < 0:
            roots.append(brentq(lambda t: float(gap(t)[0]), grid[i], grid[i + 1], xtol=1e-10))
    if f[-1] == 0.0:
        roots.append(grid[-1])
    return [float(10.0**r) for r in roots]


def pick_break_even(roots: Sequence[float], x_lo: float, x_hi: float) -> float | None:
    """The crossing inside [x_lo, x_hi] (the largest if several: the ordering from there on holds
    to the end of the data), else the nearest beyond x_hi, else the nearest below x_lo."""
    inside = [r for r in roots if x_lo <= r <= x_hi]
    if inside:
        return max(inside)
    above = [r for r in roots if r > x_hi]
    if above:
        return min(above)
    below = [r for r in roots if r < x_lo]
    return max(below) if below else None


def _winner(fit_a, fit_b, names, x):
    ea, eb = (float(predict(f, np.array([x]))[0]) for f in (fit_a, fit_b))
    return (names[0], ea, eb) if ea < eb else (names[1], ea, eb)


def break_even(fit_a: Fit, fit_b: Fit, names, x_lo, x_hi, bracket) -> dict:
    """Crossing of two fitted envelopes without an interval (see bootstrap_break_even)."""
    roots = crossings(fit_a, fit_b, bracket)
    x = pick_break_even(roots, x_lo, x_hi)
    out = {"x": round6(x) if x is not None else None, "crossings": [round6(r) for r in roots]}
    if x is not None:
        out["below"] = _winner(fit_a, fit_b, names, x / 10**0.05)[0]
        out["above"] = _winner(fit_a, fit_b, names, x * 10**0.05)[0]
        out["inside_range"] = bool(x_lo <= x <= x_hi)
        out["side"] = "inside" if out["inside_range"] else "above" if x > x_hi else "below"
    else:
        # No crossing anywhere in the bracket: one family wins everywhere.
        win, ea, eb = _winner(fit_a, fit_b, names, x_hi)
        out.update(below=win, above=win, inside_range=False, side=None)
        out["margin_at_max_x"] = {
            "x": round6(x_hi),
            names[0]: round6(ea),
            names[1]: round6(eb),
            "difference": round6(abs(ea - eb)),
        }
    return out
