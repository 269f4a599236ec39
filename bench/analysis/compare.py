"""``bench compare``: the gap between the families in several studies, side by side.

bench compare results/cifar10-cpu-plain results/cifar10-cpu-permuted --out figures/gap.png

A positive control is read against its baseline: the same grid on other images, at the same
budget. This reads each study's ``fits.json`` (written by ``bench analyze``; nothing is refitted)
and sets their gaps log(err_b / err_a) against n beside each other, one panel per training
budget (the study's own, and every convergence-control arm fitted as a grid), one colour per
study, with the 95% intervals the analysis computed; it prints the same series as a table:
slope per decade, gap at the largest n, and the break-even each analysis placed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.analysis.formats import fmt_x, signed_range
from bench.analysis.plot_style import figure_style
from bench.analysis.plots_extra import gap_across_studies
from bench.analysis.report import describe_break_even
from bench.errors import ArgumentParser, BenchError
from bench.results.layout import StudyDir


def read_fits(study_dir: str) -> dict:
    """A study's fits.json; one line naming the folder when it is missing or unreadable."""
    path = StudyDir.at(study_dir).fits_json
    if not path.is_file():
        raise BenchError(f"{study_dir}: no fits.json (run `bench analyze {study_dir}` first)")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise BenchError(f"cannot read {path}: {e.__class__.__name__}") from None


def study_series(doc: dict, label: str) -> list[dict]:
    """One series per budget the study's analysis measured a gap at: its own (1x unless every
    cell of the study trained longer), then each arm."""
    budgets = [(doc.get("budget_scale", 1.0), doc.get("break_even"))]
    budgets += [(a["budget_scale"], a.get("break_even")) for a in doc.get("scaled_arms") or []]
    return [
        {"label": label, "budget_scale": float(scale), "gap": be["gap"], "break_even": be}
        for scale, be in budgets
        if be and be.get("gap") and len(be["gap"]["points"]) >= 2
    ]


def collect(study_dirs: list[str], docs: list[dict], labels: list[str]) -> list[dict]:
    """Every study's series, checked to compare the same two families the same way round."""
    series, pair = [], None
    for study_dir, doc, label in zip(study_dirs, docs, labels, strict=True):
        found = study_series(doc, label)
        if not found:
            raise BenchError(f"{study_dir}: its analysis measured no gap (two families at 2+ n)")
        families = found[0]["gap"]["families"]
        if pair is not None and families != pair:
            raise BenchError(
                f"{study_dir}: compares {' / '.join(families)}, the first study {' / '.join(pair)}"
            )
        pair = families
        series += found
    return series


def table(series: list[dict]) -> str:
    """The series as a Markdown table, one row per study and budget."""
    b, a = series[0]["gap"]["families"]
    lines = [
        f"| study | budget | n measured | log(err_{b} / err_{a}) at the largest n (95% CI) "
        "| slope per decade (95% CI) | break-even |",
        "|---|---|---|---|---|---|",
    ]
    for s in series:
        g = s["gap"]
        last = g["points"][-1]
        ns = f"{fmt_x(g['points'][0]['n'])}..{fmt_x(last['n'])}"
        at_max = f"{last['log_ratio']:+.3f}{signed_range(last.get('ci'))}"
        slope = f"{g['slope_per_decade']:+.3f}{signed_range(g.get('slope_ci'))}"
        crossing = describe_break_even(s["break_even"]).removeprefix("break-even: ")
        lines.append(
            f"| {s['label']} | {s['budget_scale']:g}x | {ns} | {at_max} | {slope} | {crossing} |"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="bench compare",
        description="the gap between the families in several analysed studies, side by side",
    )
    p.add_argument("studies", nargs="+", help="study folders, each analysed by bench analyze")
    p.add_argument("--out", required=True, help="the figure to write (PNG)")
    p.add_argument(
        "--labels",
        help="comma-separated names for the studies, in their order (default: the study names)",
    )
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    labels = args.labels.split(",") if args.labels else None
    if labels is not None and len(labels) != len(args.studies):
        raise BenchError(f"--labels: {len(labels)} names for {len(args.studies)} studies")
    if Path(args.out).suffix.lower() != ".png":
        raise BenchError(f"--out: {args.out} is not a .png file")
    docs = [read_fits(d) for d in args.studies]  # each read once
    names = [doc.get("study") or Path(d).name for d, doc in zip(args.studies, docs, strict=True)]
    labels = labels or names
    series = collect(args.studies, docs, labels)
    with figure_style():
        gap_across_studies(series, Path(args.out))
    print(table(series))
    print(f"\nfigure: {args.out}")
    return 0
