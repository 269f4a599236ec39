"""The error-vs-parameters figure: one panel per training-set size, each family's rungs and,
where ``bench analyze`` fitted one, its joint fit err(N, n) at that n."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import FixedLocator, LogLocator

from bench.analysis import scaling
from bench.analysis.plot_style import (
    FAMILY_MARKERS,
    count_axis,
    family_color,
    legend_entries,
    pct_axis,
    save,
)


def error_vs_params(summary, doc, orders, path):
    if summary["params"].isna().all():
        return "no parameter counts in the records"
    ns = sorted(int(n) for n in summary["n_train"].unique())
    fig, axes = _panel_grid(len(ns))
    p_all = summary["params"].dropna().astype(float)
    grid = np.geomspace(p_all.min() / 1.3, p_all.max() * 1.3, 100)
    for ax, n in zip(axes.flat, ns, strict=False):
        for fam in doc["families"]:
            color = family_color(fam, doc["families"])
            _rungs(ax, summary, fam, n, color)
            _joint_fit(ax, summary, doc, fam, n, grid, color)
        ax.set_title(f"n = {n:,} training images", fontsize=11)
        _log_axes(ax, p_all)
    _label_panels(axes, len(ns))
    _shared_legend(fig, axes.flat[: len(ns)])
    fig.suptitle(f"Test error vs parameter count, per training-set size — {doc['study']}", y=1.04)
    fig.tight_layout()
    save(fig, path)
    return None


def _panel_grid(count: int):
    """Up to 4 panels a row, one y axis shared by all; the unused slots hidden."""
    ncols = min(4, count)
    nrows = math.ceil(count / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(3.4 * ncols + 0.8, 3.0 * nrows + 0.8), sharey=True, squeeze=False
    )
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    return fig, axes


def _rungs(ax, summary, fam, n, color):
    rows = summary[
        (summary["family"] == fam) & (summary["n_train"] == n) & summary["params"].notna()
    ].sort_values("params")
    if not len(rows):
        return
    ax.errorbar(
        rows["params"].astype(float),
        rows["test_error_mean"],
        yerr=rows["test_error_std"].fillna(0.0),
        fmt="-",
        marker=FAMILY_MARKERS.get(fam, "D"),
        ms=6,
        lw=1.8,
        capsize=3,
        color=color,
        label=fam,
    )


def _joint_fit(ax, summary, doc, fam, n, grid, color):
    """The family's joint fit at this n, drawn only over its own rungs (x1.3 either side)."""
    joint = (doc["fits"].get(fam) or {}).get("joint") or {}
    if "params" not in joint:
        return
    fit = scaling.Fit.from_dict(joint)
    fam_p = summary.loc[summary["family"] == fam, "params"].dropna().astype(float)
    g = grid[(grid >= fam_p.min() / 1.3) & (grid <= fam_p.max() * 1.3)]
    ax.plot(
        g,
        scaling.predict_joint(fit, g, np.full(len(g), float(n))),
        "--",
        lw=1.2,
        color=color,
        alpha=0.8,
        label=f"{fam} joint fit",
    )


def _log_axes(ax, params):
    ax.set_xscale("log")
    ax.set_yscale("log")
    count_axis(ax.xaxis, _params_locator(params))


def _params_locator(params):
    """Ticks at 1 and 3 per decade; where the rungs span less than a factor of 3 (too few of
    those ticks fall inside, and matplotlib crowds its own), a tick at each rung's count."""
    if params.max() / params.min() < 3:
        return FixedLocator(sorted(params.unique()))
    return LogLocator(base=10, subs=(1.0, 3.0), numticks=8)


def _label_panels(axes, count: int):
    nrows, ncols = axes.shape
    for ax in axes[:, 0]:
        ax.set_ylabel("test error (%, log scale)")
        pct_axis(ax)
    for col in range(ncols):  # x label under the lowest panel actually drawn in each column
        last = max(r for r in range(nrows) if r * ncols + col < count)
        axes[last, col].set_xlabel("parameters (log scale)")
        axes[last, col].tick_params(axis="x", labelbottom=True)


def _shared_legend(fig, axes):
    """One legend above the panels: each label once, the data before the fits."""
    handles, labels = legend_entries(axes, key=lambda lab: ("joint fit" in lab, lab))
    fig.legend(
        handles,
        labels,
        loc="upper center",
        ncol=min(len(labels), 4),
        frameon=False,
        bbox_to_anchor=(0.5, 1.0),
    )
