"""``bench tune``: read a tuning grid, the cells of one study that differ in a training setting.

    bench tune results/<study>

A tuning sweep (``sweeps/cifar10-lr-wd.yaml``: lr and weight-decay multipliers per family) trains
the same cell under several settings. For each cell (family, size, n_train, budget) this writes the
settings that vary, their validation and test error, and the setting with the lowest validation
error, and says what a reviewer asks of a tuning grid: is the winner at the grid's edge (the
optimum may lie beyond it), and does it beat the runner-up by more than the noise (a 95% normal
interval of the difference: the seed spread where a setting has several seeds, else the
validation set's binomial noise)? Writes ``tuning.md``, ``tuning.json`` and
``figures/tuning.png`` in the study folder; the choice is made on validation error, never on test.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pandas as pd

from bench.analysis import settings, tuning_plot
from bench.analysis.control import Z95
from bench.analysis.formats import pct
from bench.analysis.frame import load_study
from bench.analysis.scaling import round6
from bench.errors import ArgumentParser, BenchError
from bench.results.records import atomic_write_text

# A scale multiplies the lr or weight decay the record holds resolved: one of the two is enough.
SHOWN_INSTEAD = {"lr_scale": "lr", "wd_scale": "weight_decay"}


def tune(study_dir) -> dict:
    """The tuning table of ``study_dir``; writes tuning.md, tuning.json and figures/tuning.png."""
    folder = Path(study_dir)
    frame, _, notes = load_study(folder)
    frame, derived = settings.split_derived(frame)
    if derived:
        notes.append(f"{derived} records started from another run's weights left out")
    axes = shown_axes(settings.varying(frame))
    if not axes:
        raise BenchError(
            f"{folder}: the records of each cell share every setting, so nothing was tuned: "
            f"read the study with `bench analyze {folder}`"
        )
    table = pd.concat([frame, settings.settings_frame(frame)[axes].add_prefix("set_")], axis=1)
    cells = [
        _cell(key, rows, axes) for key, rows in table.groupby(list(settings.CELL_KEYS), sort=True)
    ]
    doc = {"study": folder.name, "axes": axes, "cells": cells, "notes": notes}
    figure = tuning_plot.draw(doc, folder / "figures" / "tuning.png")
    doc["figure"] = figure.name if figure else None
    atomic_write_text(folder / "tuning.json", json.dumps(doc, indent=2, sort_keys=True) + "\n")
    atomic_write_text(folder / "tuning.md", markdown(doc))
    return doc


def shown_axes(varying: list[str]) -> list[str]:
    """The settings to show: a scale is left out where the value it scales varies too."""
    return [a for a in varying if SHOWN_INSTEAD.get(a) not in varying]


def _cell(key: tuple, rows: pd.DataFrame, axes: list[str]) -> dict:
    """One cell's settings, best first by validation error, with the winner's standing."""
    family, size, n_train, scale = key
    options = []
    for values, group in rows.groupby([f"set_{a}" for a in axes], sort=True, dropna=False):
        values = values if isinstance(values, tuple) else (values,)
        options.append(_option(dict(zip(axes, values, strict=True)), group))
    options.sort(key=lambda o: (o["val_error"] is None, o["val_error"] or 0.0))
    cell = {
        "family": family,
        "size": size,
        "n_train": int(n_train),
        "budget_scale": float(scale),
        "options": options,
        "best": options[0]["settings"],
        "edges": _edges(options, axes),
    }
    if len(options) > 1 and options[1]["val_error"] is not None:
        cell.update(_margin(options[0], options[1]))
    return cell


def _option(values: dict, group: pd.DataFrame) -> dict:
    val = pd.to_numeric(group["val_error"], errors="coerce")
    n_val = pd.to_numeric(group["n_val"], errors="coerce").dropna()
    return {
        "settings": {k: _plain(v) for k, v in values.items()},
        "val_error": round6(val.mean()),
        "val_std": round6(val.std(ddof=1)) if val.count() > 1 else None,
        "test_error": round6(pd.to_numeric(group["test_error"], errors="coerce").mean()),
        "seeds": int(len(group)),
        "n_val": int(n_val.iloc[0]) if len(n_val) else None,
    }


def _edges(options: list[dict], axes: list[str]) -> dict[str, str]:
    """Numeric settings (3 values or more) whose best value is the smallest or largest tried."""
    best = options[0]["settings"]
    edges = {}
    for axis in axes:
        tried = sorted({o["settings"][axis] for o in options if _number(o["settings"][axis])})
        if len(tried) < 3 or not _number(best[axis]):
            continue
        if best[axis] == tried[0]:
            edges[axis] = "low"
        elif best[axis] == tried[-1]:
            edges[axis] = "high"
    return edges


def _margin(best: dict, runner: dict) -> dict:
    """How far the runner-up trails, and whether that is beyond the noise."""
    margin = runner["val_error"] - best["val_error"]
    noise = Z95 * math.sqrt(_mean_variance(best) + _mean_variance(runner))
    return {"margin": round6(margin), "noise": round6(noise), "resolved": bool(margin > noise)}


def _mean_variance(option: dict) -> float:
    """The variance of an option's mean validation error: seeds, else the binomial noise."""
    if option["val_std"] is not None:
        return option["val_std"] ** 2 / option["seeds"]
    if option["n_val"]:
        err = option["val_error"]
        return err * (1 - err) / option["n_val"]
    return 0.0


def markdown(doc: dict) -> str:
    lines = [f"# Tuning: {doc['study']}", ""]
    lines += [
        f"Settings that vary within a cell: {', '.join(doc['axes'])}. Each cell's choice is the "
        "setting with the lowest validation error (mean over seeds); test error is shown, never "
        "used to choose.",
        "",
    ]
    for cell in doc["cells"]:
        lines += _cell_lines(cell, doc["axes"])
    if doc["figure"]:
        lines += [f"![validation error per setting](figures/{doc['figure']})", ""]
    lines += [f"- note: {n}" for n in doc["notes"]]
    return "\n".join(lines).rstrip() + "\n"


def _cell_lines(cell: dict, axes: list[str]) -> list[str]:
    scale = f", {cell['budget_scale']:g}x budget" if cell["budget_scale"] != 1 else ""
    lines = [f"## {cell['family']} {cell['size']}, n = {cell['n_train']:,}{scale}", ""]
    lines += ["| " + " | ".join(axes) + " | val error (%) | test error (%) | seeds |"]
    lines += ["|" + "---|" * len(axes) + "---:|---:|---:|"]
    for i, o in enumerate(cell["options"]):
        values = [_fmt(o["settings"][a]) for a in axes]
        if i == 0:
            values = [f"**{v}**" for v in values]
        lines.append(
            f"| {' | '.join(values)} | {pct(o['val_error'])} | {pct(o['test_error'])} | "
            f"{o['seeds']} |"
        )
    return lines + ["", *_verdict(cell), ""]


def _verdict(cell: dict) -> list[str]:
    best = ", ".join(f"{k} = {_fmt(v)}" for k, v in cell["best"].items())
    out = [f"- choice: {best}"]
    for axis, side in cell["edges"].items():
        out.append(
            f"- **{axis} at the {side} edge of the grid**: the optimum may lie beyond it; "
            "extend the grid before taking this value"
        )
    if "margin" in cell:
        how = "beyond the noise" if cell["resolved"] else "**within the noise: not resolved**"
        out.append(
            f"- the runner-up trails by {100 * cell['margin']:.2f} points of validation error "
            f"(noise, 95%: {100 * cell['noise']:.2f}): {how}"
        )
    return out


def _fmt(v) -> str:
    return f"{v:g}" if _number(v) else str(v)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _plain(v):
    """A setting's value as JSON holds it (numpy scalars to Python)."""
    return v.item() if hasattr(v, "item") else v


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="bench tune",
        description="read a tuning grid: per cell, the setting with the lowest validation error",
    )
    p.add_argument("study_dir", help="a study folder, e.g. results/cifar10-lr-wd")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    doc = tune(args.study_dir)
    print(Path(args.study_dir, "tuning.md").read_text(), end="")
    return 0 if doc["cells"] else 1
