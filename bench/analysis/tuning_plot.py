"""The figure of a tuning grid: validation error against the setting, one panel per cell.

One numeric setting: a line per cell against it (a log axis where the values span a factor of 3
or more, as learning rates and weight decays do). Two: a heatmap per cell, the chosen setting
boxed. One setting that is not a number (a recipe) over several training-set sizes: validation
error against n, a line per family and value. Anything else: no figure (the table says it all).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from matplotlib.patches import Rectangle
from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

from bench.analysis.plot_style import family_color, figure_style, save

LOG_SPAN = 3.0  # values spanning at least this factor get a log axis
LABELS = {"lr": "peak learning rate", "weight_decay": "weight decay"}


BUDGET_STYLES = (("o", "-"), ("s", "--"), ("^", ":"), ("D", "-."))


def draw(doc: dict, path: Path) -> Path | None:
    axes = doc["axes"]
    if len(axes) == 1 and not _numeric(doc, axes[0]):
        if len({c["n_train"] for c in doc["cells"]}) < 2:
            return None
        with figure_style():
            _over_n(doc, axes[0], path)
        return path
    if len(axes) > 2 or not all(_numeric(doc, a) for a in axes):
        return None
    with figure_style():
        if len(axes) == 1:
            _lines(doc, axes[0], path)
        else:
            _heatmaps(doc, axes, path)
    return path


def _numeric(doc: dict, axis: str) -> bool:
    values = [o["settings"][axis] for c in doc["cells"] for o in c["options"]]
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _axis_label(axis: str) -> str:
    return LABELS.get(axis, axis)


def _scale(cell: dict) -> str:
    return f", {cell['budget_scale']:g}x" if cell["budget_scale"] != 1 else ""


def _label(cell: dict) -> str:
    return f"{cell['family']} {cell['size']}, n = {cell['n_train']:,}{_scale(cell)}"


def _ticks_at(axis, values, fmt: str) -> None:
    """The values tried, as written in the sweep, and no other tick."""
    axis.set_major_locator(FixedLocator(sorted(set(values))))
    axis.set_major_formatter(plt.FuncFormatter(lambda v, _: fmt.format(v)))
    axis.set_minor_locator(NullLocator())
    axis.set_minor_formatter(NullFormatter())


def _lines(doc: dict, axis: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    families = sorted({c["family"] for c in doc["cells"]})
    scales = sorted({c["budget_scale"] for c in doc["cells"]})
    values = []
    for cell in doc["cells"]:
        points = sorted(
            (o["settings"][axis], o["val_error"])
            for o in cell["options"]
            if o["val_error"] is not None
        )
        xs, ys = zip(*points, strict=True) if points else ((), ())
        values += xs
        color = family_color(cell["family"], families)
        # one family's cells at another budget: the same colour, told apart by line and marker
        marker, line = BUDGET_STYLES[scales.index(cell["budget_scale"]) % len(BUDGET_STYLES)]
        ax.plot(xs, [100 * y for y in ys], marker=marker, ls=line, color=color, label=_label(cell))
        best = cell["options"][0]
        if best["val_error"] is not None:
            ax.plot(best["settings"][axis], 100 * best["val_error"], "*", ms=16, color=color)
    if values and min(values) > 0 and max(values) / min(values) >= LOG_SPAN:
        ax.set_xscale("log")
    _ticks_at(ax.xaxis, values, "{:g}")
    ax.set_xlabel(_axis_label(axis))
    ax.set_ylabel("validation error (%)")
    ax.set_title(
        f"Tuning — {doc['study']}: validation error per {_axis_label(axis)}\nstar: the choice"
    )
    ax.legend()
    save(fig, path)


def over_n_series(doc: dict, axis: str) -> dict[tuple, list[tuple]]:
    """(family, size, budget, value) -> [(n, val error %, seed std % or NaN with one seed)]."""
    lines: dict[tuple, list] = {}
    for cell in doc["cells"]:
        for o in cell["options"]:
            if o["val_error"] is not None:
                key = (cell["family"], cell["size"], _scale(cell), str(o["settings"][axis]))
                std = 100 * o["val_std"] if o.get("val_std") is not None else np.nan
                lines.setdefault(key, []).append((cell["n_train"], 100 * o["val_error"], std))
    return {key: sorted(points) for key, points in sorted(lines.items())}


def _over_n(doc: dict, axis: str, path: Path) -> None:
    """Validation error against n (log), one colour per family, one line style per value; a bar
    of one seed standard deviation where a point has several seeds."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    families = sorted({c["family"] for c in doc["cells"]})
    values = sorted({str(o["settings"][axis]) for c in doc["cells"] for o in c["options"]})
    series = over_n_series(doc, axis)
    for (fam, size, scale, value), points in series.items():
        xs, ys, stds = zip(*points, strict=True)
        marker, line = BUDGET_STYLES[values.index(value) % len(BUDGET_STYLES)]
        label = f"{fam} {size}{scale}, {axis} {value}"
        color = family_color(fam, families)
        ax.errorbar(xs, ys, yerr=stds, marker=marker, ls=line, color=color, label=label, capsize=3)
    ax.set_xscale("log")
    _ticks_at(ax.xaxis, [c["n_train"] for c in doc["cells"]], "{:,.0f}")
    ax.set_xlabel("training-set size n (images)")
    ax.set_ylabel("validation error (%)")
    title = f"Tuning — {doc['study']}: validation error per {axis}"
    if any(np.isfinite(s) for points in series.values() for *_, s in points):
        title += "\nbars: ±1 std over seeds, where a point has several"
    ax.set_title(title)
    ax.legend()
    save(fig, path)


def _heatmaps(doc: dict, axes: list[str], path: Path) -> None:
    cells = doc["cells"]
    fig, panels = plt.subplots(1, len(cells), figsize=(4.8 * len(cells), 4.2), squeeze=False)
    fig.subplots_adjust(wspace=0.45, top=0.82)  # room for each panel's colour bar and title
    x_axis, y_axis = axes
    for ax, cell in zip(panels[0], cells, strict=True):
        xs = sorted({o["settings"][x_axis] for o in cell["options"]})
        ys = sorted({o["settings"][y_axis] for o in cell["options"]})
        grid = np.full((len(ys), len(xs)), np.nan)
        for o in cell["options"]:
            if o["val_error"] is not None:
                grid[ys.index(o["settings"][y_axis]), xs.index(o["settings"][x_axis])] = (
                    100 * o["val_error"]
                )
        sns.heatmap(
            grid,
            annot=True,
            fmt=".1f",
            cmap="rocket_r",
            ax=ax,
            cbar_kws={"label": "validation error (%)"},
            xticklabels=[f"{v:g}" for v in xs],
            yticklabels=[f"{v:g}" for v in ys],
        )
        best = cell["best"]
        i, j = ys.index(best[y_axis]), xs.index(best[x_axis])
        ax.add_patch(Rectangle((j, i), 1, 1, fill=False, edgecolor="0.1", lw=2.5))
        ax.invert_yaxis()  # the larger value up, as on a plot's y axis
        ax.set_xlabel(_axis_label(x_axis))
        ax.set_ylabel(_axis_label(y_axis) if ax is panels[0][0] else "")
        ax.tick_params(axis="y", rotation=0)
        ax.set_title(_label(cell), fontsize=11)
    fig.suptitle(f"Tuning — {doc['study']}: validation error (%), boxed: the choice")
    save(fig, path)
