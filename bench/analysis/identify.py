"""Is a fitted floor identified? The profile of ``e_inf`` over fits that are within the noise.

A saturating power law's floor is often not pinned by the data: a lower floor with a shallower
slope fits as well. The profile pins ``e_inf`` at each value of a grid from 0 to just below the
lowest observed error, refits the other parameters, and keeps the values whose fit is worse than
the best by less than the noise allows (sum of squared log residuals up by at most
3.84 x one point's noise variance: a 95% profile-likelihood interval for one parameter).
"""

from __future__ import annotations

import numpy as np

from bench.analysis import scaling

CHI2_95_1DOF = 3.841
GRID = 25
# A floor whose plausible range spans more than half the lowest observed error is not identified.
WIDE = 0.5


def floor_profile(fit: scaling.Fit, x, y, noise_var: float) -> dict | None:
    """{range: [lo, hi], identified: bool, ...} for the envelope fit's floor; None without one."""
    if fit is None or "e_inf" not in fit.params:
        return None
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    top = 0.999 * float(y.min())
    grid = np.unique(np.append(np.linspace(0.0, top, GRID), fit.params["e_inf"]))
    ssr = []
    for v in grid:
        refit = scaling.fit_form(fit.form, x, y, warm=fit, e_inf=float(v))
        ssr.append(np.inf if refit is None else len(x) * refit.rmse_log**2)
    ssr = np.array(ssr)
    # Floor the allowance at a tiny value so noise-free data still gives a (narrow) range.
    allowed = CHI2_95_1DOF * max(noise_var, 1e-10)
    ok = grid[ssr - ssr.min() <= allowed]
    lo, hi = float(ok.min()), float(ok.max())
    return {
        "range": [scaling.round6(lo), scaling.round6(hi)],
        "estimate": scaling.round6(fit.params["e_inf"]),
        "identified": bool(hi - lo <= WIDE * float(y.min())),
        "upper_limit": scaling.round6(top),
        # A range that reaches 0 or the lowest observation is cut by the bound, not by the data.
        "reaches": [
            name
            for name, hit in (("0", lo <= 0.0), ("the lowest observed error", hi >= top))
            if hit
        ],
    }
