"""The convergence control as a figure: test error against the training budget, one panel per n.

A family whose line still falls at its longest budget is compute-bound there; a flat line has
converged. The report states the same per cell in words (its "Convergence control" section).
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

from bench.analysis.plot_style import (
    FAMILY_MARKERS,
    compact_count,
    family_color,
    legend_entries,
    pct_axis,
    save,
)


def error_vs_budget(summary, doc, orders, path):
    """Draw the figure to ``path``; returns why it was skipped, or None."""
    fig = budget_figure(summary, doc, orders)
    if isinstance(fig, str):
        return fig
    save(fig, path)
    return None


def budget_figure(summary, doc, orders):
    """The figure (one panel per n the control trained at), or why there is none."""
    control = doc.get("control") or {}
    cells = control.get("cells") or []
    if not cells:
        return "no convergence-control cells (budget_scale above the study's)"
    own = float(control.get("base_scale", 1.0))
    ns = sorted({r["n_train"] for r in cells})
    scales = sorted({own} | {r["budget_scale"] for r in cells})
    fig, axes = plt.subplots(
        1, len(ns), figsize=(2.9 * len(ns) + 2.4, 4.6), squeeze=False, layout="constrained"
    )
    for ax, n in zip(axes[0], ns, strict=True):
        for fam in doc["families"]:
            for size in _sizes_at(cells, fam, n, orders.get(fam, [])):
                points = _points(summary, cells, (fam, size, n), own)
                _draw(ax, points, fam, size, family_color(fam, doc["families"]))
        _budget_axis(ax, scales)
        ax.set_yscale("log")
        ax.set_title(f"n = {compact_count(n)}")
    _same_span(axes[0])
    axes[0][0].set_ylabel("test error (%, log scale)")
    fig.supxlabel("training budget (multiple of the study's budget rule, log scale)", fontsize=11)
    fig.suptitle(
        f"Convergence control: test error vs training budget — {doc['study']}\n"
        "a line still falling at its longest budget is compute-bound there",
        fontsize=12,
    )
    _legend(axes[0])
    return fig


def _sizes_at(cells: list[dict], fam: str, n: int, order: list[str]) -> list[str]:
    """The sizes the control trained for ``fam`` at ``n``, small to large."""
    have = {r["size"] for r in cells if r["family"] == fam and r["n_train"] == n}
    return [s for s in order if s in have] + sorted(have - set(order))


def _points(summary, cells: list[dict], key: tuple, own: float) -> list[tuple]:
    """(budget, mean error, seed std or 0, seeds) of one cell at every budget the study holds:
    the study's own cell from the summary, the others from the control."""
    fam, size, n = key
    out = []
    own_rows = summary[
        (summary["family"] == fam) & (summary["size"] == size) & (summary["n_train"] == n)
    ]
    for r in own_rows.itertuples():
        out.append((own, r.test_error_mean, _std(r.test_error_std), int(r.test_error_count)))
    for r in cells:
        if (r["family"], r["size"], r["n_train"]) == key:
            std = _std(r.get("scaled_std"))
            out.append((r["budget_scale"], r["scaled_error"], std, r["scaled_seeds"]))
    return sorted(out)


def _std(value) -> float:
    return 0.0 if value is None or value != value else float(value)


def _draw(ax, points: list[tuple], fam: str, size: str, color: str) -> None:
    """Means joined by a line, seed std as bars; a one-seed mean hollow, so it reads as thinner
    evidence than a mean over seeds."""
    x, y, err, seeds = zip(*points, strict=True)
    marker = FAMILY_MARKERS.get(fam, "D")
    ax.errorbar(x, y, yerr=err, fmt="-", color=color, lw=2, capsize=3, label=f"{fam} {size}")
    several = [(a, b) for a, b, k in zip(x, y, seeds, strict=True) if k > 1]
    single = [(a, b) for a, b, k in zip(x, y, seeds, strict=True) if k <= 1]
    if several:
        ax.plot(*zip(*several, strict=True), ls="none", marker=marker, ms=7, color=color)
    if single:
        ax.plot(
            *zip(*single, strict=True), ls="none", marker=marker, ms=8, mew=2, mfc="white",
            color=color, label=f"{fam} {size}, one seed",
        )  # fmt: skip


def _same_span(axes) -> None:
    """Every panel spans the same factor in error, centred on its own data, so a slope in one
    panel reads like the same slope in another (a small change at n = 1k must not look steep)."""
    limits = [ax.get_ylim() for ax in axes]
    span = max(math.log(hi / lo) for lo, hi in limits)
    for ax, (lo, hi) in zip(axes, limits, strict=True):
        mid = math.sqrt(lo * hi)
        ax.set_ylim(mid * math.exp(-span / 2), mid * math.exp(span / 2))
        pct_axis(ax)


def _legend(axes) -> None:
    """One legend beside the last panel for every panel's entries: each panel has only its own."""
    # sorted by label: a family's line, then its one-seed marker, family after family
    handles, labels = legend_entries(axes)
    axes[-1].legend(
        handles,
        labels,
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        frameon=False,
    )


def _budget_axis(ax, scales: list[float]) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xlim(min(scales) / 1.4, max(scales) * 1.4)
    ax.xaxis.set_major_locator(FixedLocator(scales))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.xaxis.set_minor_formatter(NullFormatter())
