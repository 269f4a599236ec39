"""How numbers read in the report: training-set sizes, error percentages, intervals, leads."""

from __future__ import annotations

import pandas as pd


def fmt_x(v) -> str:
    """A training-set size (or any count): grouped digits, or 3 significant figures when huge."""
    if v is None:
        return "?"
    v = float(v)
    if 1 <= abs(v) < 1e7:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def pct(v) -> str:
    """An error rate as a percentage with two decimals; '-' when unknown."""
    return "-" if v is None or pd.isna(v) else f"{100 * float(v):.2f}"


def ci_words(ci, bracket) -> str:
    """'95% CI lo..hi' for a crossing; an open upper end reads 'beyond' the search bracket."""
    if not ci:
        return ""
    hi = fmt_x(ci[1]) if ci[1] is not None else f"beyond {fmt_x(bracket[1])}"
    return f"95% CI {fmt_x(ci[0])}..{hi}"


def ci_text(ci, bracket) -> str:
    """' (95% CI lo..hi)' after a crossing, '' without an interval."""
    words = ci_words(ci, bracket)
    return f" ({words})" if words else ""


def lead_range(lo: float, hi: float) -> str:
    """' (95% CI lo to hi)' of a lead in points, one decimal; a bound that one decimal would show
    as 0.0 (or -0.0) gets two, so an interval that just reaches past 0 reads as such."""
    near_zero = any(b != 0 and abs(b) < 0.05 for b in (lo, hi))
    digits = 2 if near_zero else 1
    return f" (95% CI {lo:.{digits}f} to {hi:.{digits}f})"


def leader(errors: dict[str, float]) -> tuple[str, float]:
    """The family with the lowest error and its lead over the next one, in points."""
    first, second = sorted(errors, key=errors.get)[:2]
    return first, 100 * (errors[second] - errors[first])


def fmt_params(params: dict | None) -> str:
    """A fit's parameters as 'name=value' pairs, 4 significant figures."""
    if not params:
        return "-"
    return ", ".join(f"{k}={v:.4g}" for k, v in params.items())


def signed_range(ci, prefix: str = "") -> str:
    """' (+lo to +hi)' of an interval of signed quantities (a gap, a slope), '' without one."""
    return f" ({prefix}{ci[0]:+.3f} to {ci[1]:+.3f})" if ci else ""


def unsupported_text(crossing: dict, x_name: str = "n") -> str:
    """The fitted curves' crossing outside the data that is not a finding, as a clause: below
    the data, or beyond it where the resamples do not back it."""
    u = crossing.get("unsupported")
    if not u:
        return ""
    at = f" (the fitted curves cross at {x_name} = {fmt_x(u['x'])}, {u['side']} the data"
    if u["side"] == "below":  # see bench.analysis.breakeven: never a finding, however backed
        return (
            at
            + ", where the curves bend towards chance and their fits are not tested: not a finding)"
        )
    return (
        f"{at}, but only {u['resamples']} of {crossing['n_resamples']} resamples do: not a finding)"
    )
