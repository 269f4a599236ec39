"""Figures of the gap between families and of the break-even over model size."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from matplotlib.ticker import LogLocator

from bench.analysis.formats import signed_range
from bench.analysis.plot_style import arm_look, count_axis, family_color, save


def gap_vs_n(summary, doc, orders, path):
    """log(err_b / err_a) per shared n, its straight-line trend in log n, and zero (equal); a
    control arm fitted as its own grid (:mod:`bench.analysis.scaled_arm`) beside it, in its look."""
    be = doc.get("break_even") or {}
    g = be.get("gap")
    if not g or len(g["points"]) < 2:
        return "needs two families measured at two or more shared n"
    b, a = g["families"]
    color = family_color(b, doc["families"])
    fig, ax = plt.subplots(figsize=(8.0, 4.8))
    ax.axhline(0.0, color="0.3", lw=1.0, label="equal error (the break-even)")
    arms = [arm for arm in doc.get("scaled_arms") or [] if (arm["break_even"] or {}).get("gap")]
    at = " at the study's budget" if arms else ""
    _gap_series(ax, g, color, f"measured gap{at} (95% bootstrap interval)", "--", {}, "trend")
    for arm in arms:
        scale = f"{arm['budget_scale']:g}x"
        ls, fill = arm_look(doc, arm["budget_scale"])
        gap = arm["break_even"]["gap"]
        _gap_series(ax, gap, color, f"gap at {scale} budget", ls, fill, f"trend at {scale}")
    ax.set_xscale("log")
    ax.set_xlabel("training images n (log scale)")
    ax.set_ylabel(f"log(err_{b} / err_{a})\n(> 0: {a} ahead)")
    ax.set_title(f"The gap between {b} and {a} — {doc['study']}")
    ax.legend(loc="best", frameon=False)
    save(fig, path)
    return None


def gap_across_studies(series: list[dict], path):
    """log(err_b / err_a) against n for several studies (``bench compare``): one panel per budget,
    one colour per study, each panel with the zero line (equal error: the break-even)."""
    scales = sorted({s["budget_scale"] for s in series})
    labels = list(dict.fromkeys(s["label"] for s in series))
    colors = dict(zip(labels, sns.color_palette("colorblind", len(labels)), strict=True))
    # studies measured at the same n would hide each other's intervals: a small offset in log n
    dodge = {lab: 10 ** (0.025 * (i - (len(labels) - 1) / 2)) for i, lab in enumerate(labels)}
    b, a = series[0]["gap"]["families"]
    ticks = sorted({p["n"] for s in series for p in s["gap"]["points"]})
    fig, axes = plt.subplots(
        1, len(scales), figsize=(6.0 * len(scales) + 0.6, 4.4), sharex=True, sharey=True,
        squeeze=False,
    )  # fmt: skip
    for ax, scale in zip(axes[0], scales, strict=True):
        ax.axhline(0.0, color="0.3", lw=1.0, label="equal error (the break-even)")
        for s in (s for s in series if s["budget_scale"] == scale):
            color = colors[s["label"]]
            look = {"line_color": color, "dodge": dodge[s["label"]]}
            _gap_series(ax, s["gap"], color, s["label"], "--", {}, None, **look)
        ax.set_xscale("log")
        count_axis(ax.xaxis, ticks)
        ax.set_xlabel("training images n (log scale)")
        # a study may train every cell longer than its budget rule: the panel is the budget_scale
        ax.set_title("at the budget rule (1x)" if scale == 1 else f"at {scale:g}x the budget rule")
        # below the panel: the slopes make the entries too long to sit beside the points
        ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.16), frameon=False, fontsize=8)
    axes[0][0].set_ylabel(f"log(err_{b} / err_{a})\n(> 0: {a} ahead)")
    fig.suptitle(f"The gap between {b} and {a}, study by study (95% bootstrap intervals)", y=1.02)
    save(fig, path)


def _gap_series(ax, g, color, label, ls, fill, trend, line_color="0.2", dodge=1.0):
    """One budget's gap points with their intervals, and its trend line (``fill``: the
    markers' fill keywords, none for filled; ``trend``: the line's legend entry, or None to put
    its slope in the points' entry; ``dodge``: a factor on n, to set series apart)."""
    if len(g["points"]) < 2:
        return
    xs = np.array([p["n"] for p in g["points"]], dtype=float)
    ys = np.array([p["log_ratio"] for p in g["points"]])
    cis = [p.get("ci") or [y, y] for p, y in zip(g["points"], ys, strict=True)]
    yerr = np.array(
        [
            [y - c[0] for c, y in zip(cis, ys, strict=True)],
            [c[1] - y for c, y in zip(cis, ys, strict=True)],
        ]
    )
    t = np.log10(xs)
    slope, icpt = np.polyfit(t, ys, 1)
    slope_txt = f"{slope:+.3f} per decade{signed_range(g.get('slope_ci'), '95% CI ')}"
    short = f"{label}: {slope:+.3f} a decade{signed_range(g.get('slope_ci'))}"
    ax.errorbar(
        xs * dodge, ys, yerr=np.maximum(yerr, 0), fmt="o", ms=8, capsize=4, color=color,
        mew=2, label=label if trend else short, **fill,
    )  # fmt: skip
    line_t = np.linspace(t.min() - 0.15, t.max() + 0.15, 50)
    ax.plot(
        10**line_t, icpt + slope * line_t, ls=ls, color=line_color,
        label=f"{trend}: {slope_txt}" if trend else "_nolegend_",
    )  # fmt: skip


def break_even_vs_params(summary, doc, orders, path):
    """n* against the other family's parameter count, one line (and 95% band) per rung."""
    cap = doc.get("break_even_vs_params")
    if not cap or "skipped" in cap:
        return "no joint fit for both families"
    a, b = cap["families"]
    ladder = np.array(cap["ladder"], dtype=float)
    if not any(v is not None for r in cap["rungs"] for v in r["n_star"]):
        return f"no {b} rung crosses any {a} within a decade of the measured n"
    fig, ax = plt.subplots(figsize=(8.5, 5.2))
    lo, hi = cap["measured_range"]
    ax.axhspan(lo, hi, color="0.85", alpha=0.6, lw=0, label="measured n")
    ax.axhline(cap["bracket"][1], color="0.4", lw=1.0, ls=":", label="search limit (10x the data)")
    shades = plt.get_cmap("Oranges")(np.linspace(0.45, 0.95, len(cap["rungs"])))
    for rung, color in zip(cap["rungs"], shades, strict=True):
        _rung_line(ax, ladder, rung, color, b, cap["bracket"][1])
    for size, p in cap["ladder_sizes"].items():
        ax.axvline(p, color=family_color(a, doc["families"]), lw=0.8, alpha=0.5)
        ax.text(p, 1.0, f" {a} {size}", transform=ax.get_xaxis_transform(), rotation=90,
                va="top", ha="right", fontsize=8, color="0.3")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        count_axis(axis, LogLocator(base=10, subs=(1.0, 3.0), numticks=10))
    ax.set_xlabel(f"{a} parameters N (log scale)")
    ax.set_ylabel("break-even training images n* (log scale)")
    ax.set_title(f"Where a {b} rung meets a {a} of N parameters — {doc['study']}")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    save(fig, path)
    return None


def _rung_line(ax, ladder, rung, color, fam, top):
    y = np.array([np.nan if v is None else v for v in rung["n_star"]], dtype=float)
    lo = np.array([np.nan if c is None else c[0] for c in rung["ci"]], dtype=float)
    hi = np.array([np.nan if c is None else (c[1] or top) for c in rung["ci"]], dtype=float)
    label = f"{fam} {rung['size']} ({rung['params'] / 1e6:.2g}M params)"
    ax.plot(ladder, y, "-", lw=2.0, color=color, label=label)
    ok = np.isfinite(lo) & np.isfinite(hi)
    if ok.any():
        ax.fill_between(ladder, lo, hi, where=ok, color=color, alpha=0.18, lw=0)
