"""Figures for ``bench analyze`` (figures only: the numbers come from analyze/scaling).

Agg backend and PNG metadata without the software version, so the same records always give
byte-identical files.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from matplotlib.patches import Rectangle

from bench.analysis import scaled_arm, scaling
from bench.analysis.capacity import pareto_frontier
from bench.analysis.plot_style import (
    FAMILY_MARKERS,
    MAX_EXTEND,
    arm_look,
    count_axis,
    family_color,
    figure_style,
    pct_axis,
    save,
    shades,
)
from bench.analysis.plots_budget import error_vs_budget
from bench.analysis.plots_extra import break_even_vs_params, gap_vs_n
from bench.analysis.plots_params import error_vs_params


def make_figures(frame, summary, doc, orders, fig_dir) -> tuple[list[str], list[str]]:
    """Draw every figure the data allows; returns (file names written, notes on skipped ones)."""
    fig_dir = Path(fig_dir)
    made, notes = [], []
    if not len(summary):
        return made, ["figures skipped: no cells to plot"]
    with figure_style():
        for name, draw in FIGURES.items():
            skipped = draw(summary, doc, orders, fig_dir / name)
            if skipped:
                notes.append(f"figure {name} skipped: {skipped}")
            else:
                made.append(name)
    return made, notes


def _cells(summary, fam, size=None):
    rows = summary[summary["family"] == fam]
    if size is not None:
        rows = rows[rows["size"] == size]
    return rows.sort_values("n_train")


def _x_limits(summary, be):
    """The measured n (with a margin), widened to show a crossing within MAX_EXTEND of it."""
    n_lo, n_hi = float(summary["n_train"].min()), float(summary["n_train"].max())
    x_lo, x_hi = n_lo / 1.5, n_hi * 1.5
    marks = []
    if be and be.get("x"):  # a lower bound far out is said in words, not drawn to
        marks = [be["x"]] + [v for v in be.get("ci") or [] if v]
    for v in marks:
        if n_lo / MAX_EXTEND <= v <= n_hi * MAX_EXTEND:
            x_lo, x_hi = min(x_lo, v / 1.5), max(x_hi, v * 1.5)
    return x_lo, x_hi


def _plot_sizes(ax, summary, fam, sizes, color):
    """Thin lines: each size of the family across n."""
    for size, shade in zip(sizes, shades(color, len(sizes)), strict=True):
        rows = _cells(summary, fam, size)
        ax.plot(
            rows["n_train"], rows["test_error_mean"], "-", marker=".", ms=5, lw=1.0,
            color=shade, alpha=0.85, label=f"{fam} {size}",
        )  # fmt: skip


def _plot_envelope(ax, summary, fam, f, color):
    """Bold: the family's best size at each n (picked on validation error), seed std as bars."""
    env = f.get("envelope") or []
    if not env:
        return
    ax.errorbar(
        [e["x"] for e in env], [e["mean"] for e in env], yerr=_env_std(summary, fam, env),
        fmt="-", marker=FAMILY_MARKERS.get(fam, "D"), ms=7, lw=2.8, color=color, capsize=3,
        label=f"{fam} envelope (best size)", zorder=4,
    )  # fmt: skip


def _plot_fit(ax, grid, fam, f, color, bracket=None, ls="--", label=None):
    """The fitted curve, drawn no farther than the break-even search (a decade past the data)."""
    if not f.get("params"):
        return
    if bracket:
        grid = grid[(grid >= bracket[0]) & (grid <= bracket[1])]
    fit = scaling.Fit.from_dict({"form": f["form"], "params": f["params"]})
    ax.plot(
        grid, scaling.predict(fit, grid), ls=ls, lw=1.8, color=color, zorder=3,
        label=label or f"{fam} fit ({f['form']})",
    )  # fmt: skip


def _plot_arms(ax, grid, doc, fam, color):
    """The fit of each convergence control that spans enough n to be its own grid."""
    for arm in doc.get("scaled_arms") or []:
        f = arm["fits"].get(fam) or {}
        be = arm.get("break_even") or {}
        label = f"{fam} fit at {arm['budget_scale']:g}x budget ({f.get('form')})"
        ls, _ = arm_look(doc, arm["budget_scale"])
        _plot_fit(ax, grid, fam, f, color, be.get("bracket"), ls=ls, label=label)


def _mark_arm_crossing(ax, doc, x_lo, x_hi):
    cross = scaled_arm.crossing_of(doc.get("scaled_arms") or [])
    if cross and x_lo <= cross["x"] <= x_hi:
        label = f"break-even at {cross['budget_scale']:g}x budget n* = {cross['x']:,.0f}"
        ls, _ = arm_look(doc, cross["budget_scale"])
        ax.axvline(cross["x"], color="0.35", lw=1.5, ls=ls, label=label)


def _plot_control(ax, doc, fam, color):
    """Markers of the convergence control's cells (mean over seeds), beside the 1x curve, so a
    gap between them shows in the figure what the report says in words."""
    for scale in sorted({r["budget_scale"] for r in _control_cells(doc, fam)}):
        rows = sorted(
            (r for r in _control_cells(doc, fam) if r["budget_scale"] == scale),
            key=lambda r: r["n_train"],
        )
        _, fill = arm_look(doc, scale)
        ax.plot(
            [r["n_train"] for r in rows], [r["scaled_error"] for r in rows], ls="none",
            marker=FAMILY_MARKERS.get(fam, "D"), ms=9, mew=2, color=color, zorder=5,
            label=f"{fam} at {scale:g}x budget (convergence control)", **fill,
        )  # fmt: skip


def _control_cells(doc, fam) -> list[dict]:
    return [r for r in (doc.get("control") or {}).get("cells", []) if r["family"] == fam]


def _corner(ax, text):
    ax.text(0.99, 0.98, text, transform=ax.transAxes, ha="right", va="top", fontsize=9)


def _mark_break_even(ax, be, x_lo, x_hi, budget=""):
    """The crossing and its CI, or the lower bound / the statement that none is in sight
    (``budget``: which budget's, where a control arm has its own)."""
    if not be:
        return
    if be.get("x"):
        x = be["x"]
        where = "inside range" if be["kind"] == "inside" else "extrapolated, < 1 decade"
        label = f"break-even n* = {x:,.0f} ({where})"
        ci = be.get("ci")
        if ci:
            hi = ci[1] if ci[1] else x_hi
            text = f"{ci[1]:,.0f}" if ci[1] else "open"
            ax.axvspan(max(ci[0], x_lo), min(hi, x_hi), color="0.5", alpha=0.15, lw=0,
                       label=f"95% CI {ci[0]:,.0f}–{text}")  # fmt: skip
        if x_lo <= x <= x_hi:
            ax.axvline(x, color="0.2", lw=1.5, ls=":", label=label)
        else:
            _corner(ax, label + " (off the plot)")
        return
    hi = be["measured_range"][1]
    if be.get("kind") == "lower_bound":
        _corner(ax, f"{budget}{be['leader']} still ahead at n = {hi:,.0f};\n"
                f"crossing beyond n = {be['beyond']:,.0f} (95%)")  # fmt: skip
        if x_lo <= be["beyond"] <= x_hi:
            ax.axvline(be["beyond"], color="0.2", lw=1.2, ls=":", label="break-even lower bound")
    else:
        _corner(
            ax, f"{budget}{be['leader']} ahead at n = {hi:,.0f};\nthe trend does not close the gap"
        )


def _error_vs_n(summary, doc, orders, path):
    fams = doc["families"]
    be = doc.get("break_even")
    fig, ax = plt.subplots(figsize=(9.5, 5.6))
    x_lo, x_hi = _x_limits(summary, be)
    grid = np.geomspace(x_lo, x_hi, 300)
    for fam in fams:
        color = family_color(fam, fams)
        f = doc["fits"].get(fam) or {}
        _plot_sizes(ax, summary, fam, orders.get(fam, []), color)
        _plot_envelope(ax, summary, fam, f, color)
        _plot_fit(ax, grid, fam, f, color, (be or {}).get("bracket"))
        _plot_control(ax, doc, fam, color)
        _plot_arms(ax, grid, doc, fam, color)
    budget = "at the study's budget, " if doc.get("scaled_arms") else ""
    _mark_break_even(ax, be, x_lo, x_hi, budget)
    _mark_arm_crossing(ax, doc, x_lo, x_hi)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(x_lo, x_hi)
    count_axis(ax.xaxis, sorted(int(n) for n in summary["n_train"].unique()))
    ax.set_xlabel("training images n (log scale)")
    ax.set_ylabel("test error (%, log scale)")
    pct_axis(ax)
    ax.set_title(f"Test error vs training-set size — {doc['study']}")
    _legend_in_order(ax)
    save(fig, path)
    return None


def _legend_in_order(ax):
    """Legend grouped per family (sizes, envelope, fit), then the break-even entries.

    Matplotlib lists error-bar containers after lines; sorting by label keeps a family together.
    """
    handles, labels = ax.get_legend_handles_labels()

    def key(item):
        label = item[1]
        if label.startswith(("95% CI", "break-even")):
            return (1, "", 0, label)
        fam = label.split(" ")[0]
        rank = 1 if " envelope" in label else 2 if " fit (" in label else 0
        rank = 3 if "x budget" in label else rank
        return (0, fam, rank, "")

    items = sorted(zip(handles, labels, strict=True), key=key)
    ax.legend(
        [h for h, _ in items],
        [lab for _, lab in items],
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        frameon=False,
    )


def _env_std(summary, fam, env):
    out = []
    for e in env:
        rows = summary[
            (summary["family"] == fam)
            & (summary["size"] == e["group"])
            & (summary["n_train"] == e["x"])
        ]
        s = rows["test_error_std"].iloc[0] if len(rows) else float("nan")
        out.append(0.0 if s != s else float(s))
    return out


def _heatmap(summary, doc, orders, path):
    rows = []
    for fam in doc["families"]:
        for size in orders.get(fam, []):
            rows.append((fam, size))
    ns = sorted(int(n) for n in summary["n_train"].unique())
    data = np.full((len(rows), len(ns)), np.nan)
    index = {r: i for i, r in enumerate(rows)}
    for r in summary.itertuples():
        data[index[(r.family, r.size)], ns.index(int(r.n_train))] = 100 * r.test_error_mean
    fig, ax = plt.subplots(figsize=(1.1 * len(ns) + 3.0, 0.5 * len(rows) + 1.8))
    sns.heatmap(
        data,
        annot=True,
        fmt=".1f",
        cmap="rocket_r",
        ax=ax,
        linewidths=0.5,
        linecolor="white",
        cbar_kws={"label": "test error (%)"},
        xticklabels=[f"{n:,}" for n in ns],
        yticklabels=[f"{f} / {s}" for f, s in rows],
    )
    # A line between families so the two ladders read as blocks.
    fam_of = [f for f, _ in rows]
    for i in range(1, len(rows)):
        if fam_of[i] != fam_of[i - 1]:
            ax.axhline(i, color="0.15", lw=2)
    ax.grid(False)
    ax.set_facecolor("0.9")  # missing cells show as grey, not as a colour of the scale
    for i, j in zip(*np.where(np.isnan(data)), strict=True):
        ax.text(j + 0.5, i + 0.5, "missing", ha="center", va="center", color="0.45", fontsize=9)
    _box_envelopes(ax, doc, index, ns)
    ax.set_xlabel("training images")
    ax.set_ylabel("family / size")
    ax.tick_params(axis="y", rotation=0)
    ax.set_title(
        f"Test error (%) per cell, mean over seeds — {doc['study']}\n"
        "boxed: each family's best size at that n on validation error (its envelope)",
        fontsize=11,
    )
    save(fig, path)
    return None


def _box_envelopes(ax, doc, index: dict, ns: list[int]) -> None:
    """Box each family's envelope cell (its best size at that n): the points the fits use."""
    for fam in doc["families"]:
        for e in (doc["fits"].get(fam) or {}).get("envelope") or []:
            if (fam, e["group"]) in index and int(e["x"]) in ns:
                xy = (ns.index(int(e["x"])), index[(fam, e["group"])])
                ax.add_patch(Rectangle(xy, 1, 1, fill=False, edgecolor="0.1", lw=1.8))


def _error_vs_compute(summary, doc, orders, path):
    have = summary[summary["train_flops"].notna() & (summary["train_flops"] > 0)]
    if not len(have):
        return "no train_flops in the records"
    fams = doc["families"]
    fig, ax = plt.subplots(figsize=(9.5, 5.6))
    for fam in fams:
        color = family_color(fam, fams)
        sizes = orders.get(fam, [])
        for size, shade in zip(sizes, shades(color, len(sizes)), strict=True):
            rows = _cells(have, fam, size)
            if len(rows):
                ax.scatter(
                    rows["train_flops"],
                    rows["test_error_mean"],
                    s=36,
                    color=shade,
                    marker=FAMILY_MARKERS.get(fam, "D"),
                    edgecolor="white",
                    lw=0.5,
                    label=f"{fam} {size}",
                    zorder=3,
                )
        rows = have[have["family"] == fam]
        if len(rows):
            fx, fy = pareto_frontier(
                rows["train_flops"].to_numpy(float), rows["test_error_mean"].to_numpy(float)
            )
            ax.step(fx, fy, where="post", color=color, lw=2.4, label=f"{fam} frontier", zorder=4)
    for ch in (doc.get("compute") or {}).get("changes", []):
        ax.axvline(ch["flops"], color="0.3", lw=1.2, ls=":",
                   label=f"frontiers cross: {ch['leader']} lower from {ch['flops']:.2g} FLOP")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training compute (FLOP, log scale)")
    ax.set_ylabel("test error (%, log scale)")
    pct_axis(ax)
    ax.set_title(f"Test error vs training compute — {doc['study']}")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    save(fig, path)
    return None


# Every figure `bench analyze` draws, by file name, in the order the report lists them.
FIGURES = {
    "error_vs_n.png": _error_vs_n,
    "error_vs_params.png": error_vs_params,
    "grid_heatmap.png": _heatmap,
    "error_vs_compute.png": _error_vs_compute,
    "gap_vs_n.png": gap_vs_n,
    "break_even_vs_params.png": break_even_vs_params,
    "error_vs_budget.png": error_vs_budget,
}
