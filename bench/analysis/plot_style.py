"""What every figure shares: colours, markers, log axes in percent, deterministic saving.

Agg backend and PNG metadata without the software version, so the same records always give
byte-identical files.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless and deterministic; analyze never shows a window

import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.ticker import (  # noqa: E402
    FixedLocator,
    FuncFormatter,
    Locator,
    LogLocator,
    NullFormatter,
)

from bench.results.records import atomic_write_figure  # noqa: E402

# Colour-blind-safe, and the same family keeps its colour in every figure.
FAMILY_COLORS = {"resnet": "#0072B2", "vit": "#D55E00"}
OTHER_COLORS = ("#009E73", "#CC79A7", "#E69F00", "#56B4E9")
FAMILY_MARKERS = {"resnet": "s", "vit": "o"}
DPI = 130
# Fitted curves are drawn past the data only this far (a factor in x), so an extrapolated
# break-even far away does not squash the measured range into a corner.
MAX_EXTEND = 100.0

# Text sizes of every figure, and a fixed SVG hash salt (deterministic output)
STYLE = {
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "legend.fontsize": 9,
    "svg.hashsalt": "bench",
}

# A convergence-control budget keeps one look in every figure: the first (shortest) control
# dotted and hollow, a longer one that checks it dash-dotted and half-filled.
ARM_LINESTYLES = (":", (0, (6, 2, 1, 2)))
ARM_FILLS = ({"mfc": "none"}, {"fillstyle": "bottom", "mfcalt": "white"})


@contextmanager
def figure_style():
    """The look every figure is drawn in: seaborn's white grid at notebook scale, :data:`STYLE`."""
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook"), plt.rc_context(STYLE):
        yield


def arm_look(doc: dict, scale: float) -> tuple:
    """(line style, marker fill keywords) of the control budget ``scale``, ranked among every
    control budget of the study (the cells compared and the arms fitted)."""
    cells = (doc.get("control") or {}).get("cells", [])
    arms = doc.get("scaled_arms") or []
    scales = sorted({r["budget_scale"] for r in cells} | {a["budget_scale"] for a in arms})
    i = min(scales.index(scale), len(ARM_LINESTYLES) - 1)
    return ARM_LINESTYLES[i], ARM_FILLS[i]


def family_color(fam, families):
    if fam in FAMILY_COLORS:
        return FAMILY_COLORS[fam]
    others = [f for f in families if f not in FAMILY_COLORS]
    return OTHER_COLORS[others.index(fam) % len(OTHER_COLORS)]


def shades(color, n):
    """Light (small model) to full (large model) shades of the family colour."""
    return [color] if n <= 1 else list(sns.light_palette(color, n + 2))[2:]


def pct_axis(ax):
    """Log-scaled error axis labelled in percent, with as many labelled ticks as the span needs."""
    lo, hi = ax.get_ylim()
    span = math.log10(hi / lo) if lo > 0 else 3.0
    if span < 0.4:  # a band under a factor of ~2.5 (e.g. 30-65%): a tick every 5 points
        subs = tuple(v / 2 for v in range(2, 20))
    elif span < 0.6:
        subs = tuple(range(1, 10))
    elif span < 1.2:
        subs = (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.0)
    else:
        subs = (1.0, 2.0, 3.0, 5.0) if span < 2.5 else (1.0,)
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{100 * v:.3g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def count_axis(axis, ticks) -> None:
    """A log axis of counts labelled 1k, 30k, 1M at ``ticks`` (values, or a Locator), with no
    minor labels: matplotlib's own (3x10^3 4x10^3) crowd each other on a span of a decade or two."""
    axis.set_major_locator(ticks if isinstance(ticks, Locator) else FixedLocator(list(ticks)))
    axis.set_major_formatter(FuncFormatter(compact_count))
    axis.set_minor_formatter(NullFormatter())


def compact_count(v, _=None) -> str:
    """300k, 1M, 2.5M: parameter and image counts a reader takes in at a glance."""
    if v <= 0:
        return ""
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if v >= scale:
            return f"{v / scale:.3g}{unit}"
    return f"{v:.3g}"


def legend_entries(axes, key=None) -> tuple[list, list[str]]:
    """Each label of several panels once (the first handle drawn for it), sorted by ``key``: one
    legend for a figure whose panels each hold only their own entries."""
    by_label = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            by_label.setdefault(label, handle)
    labels = sorted(by_label, key=key)
    return [by_label[label] for label in labels], labels


def save(fig, path: Path):
    """Written atomically: a crash never leaves half a figure beside the report."""
    try:
        atomic_write_figure(fig, path, dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    finally:
        plt.close(fig)
