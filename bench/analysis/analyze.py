"""``bench analyze``: from a study's records to summary.csv, fits.json, figures and report.md.

    bench analyze results/<study> [--bootstrap 1000] [--seed 0] [--families resnet vit]
                                  [--wandb=online|offline]

Reads every completed record under the folder (recursively) and regenerates, in that folder:
``summary.csv``, ``fits.json``, ``figures/*.png`` and ``report.md``. Everything is sorted and the
bootstrap is seeded, so two runs on the same records give byte-identical files. With
``--wandb=online|offline`` the same files also go to the study's own W&B run
(:mod:`bench.analysis.wandb_run`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.analysis import (
    capacity,
    cells,
    claims,
    control,
    fits,
    plots,
    report,
    scaled_arm,
    scaling,
    settings,
    wandb_run,
)
from bench.analysis.frame import load_study, select_families, size_orders, summarize
from bench.errors import ArgumentParser, BenchError
from bench.results.layout import StudyDir
from bench.results.records import atomic_write_text


def analyze(study_dir, bootstrap: int = 1000, seed: int = 0, families=None) -> dict:
    """Regenerate summary.csv, fits.json, figures/ and report.md in ``study_dir``.

    Returns the fits.json content plus ``report`` (its path) and ``break_even_text`` (one line).
    """
    with scaling.single_threaded_blas():  # once for the thousands of small fits below
        return _analyze(study_dir, bootstrap, seed, families)


def _analyze(study_dir, bootstrap, seed, families) -> dict:
    if bootstrap < 0:
        raise BenchError(f"--bootstrap must be >= 0, got {bootstrap}")
    folder = StudyDir.at(study_dir)
    frame, n_records, fams, notes = _load(folder, families)
    base = cells.base_scale(folder.study_dir, frame)
    main, ctrl = cells.split_control(frame, base)
    if len(ctrl):
        notes.append(
            f"{len(ctrl)} convergence-control records (budget_scale != {base:g}) compared with "
            f"their {base:g}x twins, not fitted"
        )
    orders = size_orders(main) if len(main) else {}
    summary = summarize(main, orders)
    grid = cells.coverage(folder.study_dir, main, base=base)
    _note_missing(grid["missing"], notes)
    if len(main) and main["val_error"].isna().any():
        notes.append(
            f"{int(main['val_error'].isna().sum())} records without val_error: where a cell has "
            "none, its size is picked on test error"
        )
    n_sets = {"n_test": _set_sizes(main, fams, "n_test"), "n_val": _set_sizes(main, fams, "n_val")}
    result = _fit(main, fams, orders, bootstrap, seed, n_sets, notes)
    crossing = result["break_even"]
    pair = tuple(crossing["families"]) if crossing else fits.family_pair(fams, [])
    doc = {
        "study": _study_name(frame, folder.study_dir),
        "records": {"total": n_records, "used": int(len(main)), "control": int(len(ctrl))},
        "cells": int(len(summary)),
        "grid": grid,
        "control_grid": cells.coverage(folder.study_dir, ctrl, control=True, base=base),
        "budget_scale": base,
        "seeds_per_cell": cells.seeds_per_cell(summary),
        "families": fams,
        "sizes": {f: orders.get(f, []) for f in fams},
        "n_train": sorted(int(v) for v in main["n_train"].unique()) if len(main) else [],
        "n_test": n_sets["n_test"],
        "bootstrap": {"resamples": bootstrap, "seed": seed},
        "fits": result["fits"],
        "break_even": crossing,
        "winners": fits.winners(result["fits"], pair),
        "control": control.compare(main, ctrl, base),
        "scaled_arms": scaled_arm.fit_arms(
            ctrl, pair, size_orders(ctrl) if len(ctrl) else {}, bootstrap, seed, **n_sets
        ),
        "compute": capacity.compute_frontiers(summary, pair),
        "break_even_vs_params": _capacity(main, pair, crossing, n_sets["n_test"], bootstrap, seed),
        "notes": notes,
        **_claims(frame),
    }
    doc["lead"] = claims.lead(doc)
    doc["headline"] = claims.headline(doc)
    _write(folder, doc, main, summary, orders)
    doc["report"] = str(folder.report_md)
    doc["break_even_text"] = report.describe_break_even(crossing)
    return doc


def _load(folder: StudyDir, families) -> tuple:
    """The study's records (only ``families`` when given), how many were found, the families
    analysed and the notes so far; no record to analyse is an error, not an empty report."""
    frame, n_records, notes = load_study(folder.study_dir)
    frame, derived = settings.split_derived(frame)
    if derived:
        notes.append(
            f"{derived} records started from another run's weights (bench finetune) left out: "
            f"compare them with `bench finetune --report {folder.study_dir}`"
        )
    settings.check_pooled(frame, str(folder.study_dir))
    present = sorted(frame["family"].unique().tolist()) if len(frame) else []
    fams = select_families(present, families, notes)
    frame = frame[frame["family"].isin(fams)].reset_index(drop=True) if families else frame
    if len(fams) == 1:
        notes.append(
            f"only one family ({fams[0]}): no break-even, the analysis covers {fams[0]} alone"
        )
    if not len(frame):
        raise BenchError(
            f"{folder.study_dir}: no completed records with test_error to analyse "
            f"({n_records} records found)"
        )
    return frame, n_records, fams, notes


def _fit(main, fams, orders, bootstrap, seed, n_sets: dict, notes: list[str]) -> dict:
    """Each family's envelope fits and the break-even, then its joint fit err(N, n)."""
    result, _ = fits.fit_families(
        main, fams, "size", "n_train", "fit_error", "family", bootstrap, seed,
        group_orders=orders, score_col="val_error", **n_sets,
    )  # fmt: skip
    notes += result.pop("notes")
    for fam in fams:
        joint = result["fits"][fam]["joint"] = fits.joint_fit(main, fam)
        if "skipped" in joint:
            notes.append(f"{fam}: joint fit err(N, n) skipped ({joint['skipped']})")
    return result


def _claims(frame) -> dict:
    """What the records say about how the cells were trained, for the report's header."""
    return {
        "recipes": claims.recipes(frame),
        "calibration": claims.calibration(frame),
        "positive_control": claims.positive_control(frame),
        "pixels_permuted": claims.pixels_permuted(frame),
    }


def _set_sizes(main, fams, col: str) -> dict:
    """Each family's test- or validation-set size (``col``: n_test, n_val), when records say it:
    the binomial noise of one-seed cells."""
    out = {}
    for fam in fams:
        v = main.loc[main["family"] == fam, col].dropna()
        if len(v):
            out[fam] = int(v.median())
    return out


def _capacity(main, pair, crossing, n_test, bootstrap, seed) -> dict | None:
    if crossing is None or pair is None:
        return None
    return capacity.break_even_vs_params(
        main, pair, n_test, bootstrap, seed, tuple(crossing["measured_range"])
    )


def _note_missing(missing: list[str], notes: list[str]) -> None:
    if not missing:
        return
    shown = ", ".join(missing[:12]) + (
        f" and {len(missing) - 12} more" if len(missing) > 12 else ""
    )
    notes.append(
        f"missing cells ({len(missing)}, listed under 'Missing cells'): {shown}; "
        "envelopes use the sizes present"
    )


def _write(folder: StudyDir, doc: dict, frame, summary, orders) -> None:
    """summary.csv, the figures, fits.json and report.md; a figure not drawn now is removed."""
    folder.study_dir.mkdir(parents=True, exist_ok=True)
    csv_text = summary.to_csv(index=False, float_format="%.6g", lineterminator="\n")
    atomic_write_text(folder.summary_csv, csv_text)
    made, fig_notes = plots.make_figures(frame, summary, doc, orders, folder.figures)
    # A figure this run could not draw must not survive from an older run.
    for name in plots.FIGURES:
        if name not in made and (folder.figures / name).exists():
            (folder.figures / name).unlink()
    doc["figures"] = sorted(made)
    doc["notes"] = doc["notes"] + fig_notes
    atomic_write_text(folder.fits_json, json.dumps(doc, indent=2, sort_keys=True) + "\n")
    atomic_write_text(folder.report_md, report.render_report(doc, summary))


def _study_name(frame, study_dir: Path) -> str:
    names = sorted({str(s) for s in frame["study"].dropna().unique()}) if len(frame) else []
    return ", ".join(names) if names else study_dir.resolve().name


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="bench analyze",
        description="fit curves, find the break-even, write figures and report",
    )
    p.add_argument(
        "study_dir", help="a study's folder, e.g. results/<study> (searched recursively)"
    )
    p.add_argument(
        "--bootstrap",
        type=int,
        default=1000,
        help="bootstrap resamples for the break-even CI (default 1000)",
    )
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument(
        "--families", nargs="+", metavar="FAMILY", help="families to analyse (default: all present)"
    )
    p.add_argument(
        "--wandb",
        choices=wandb_run.MODES,
        default="off",
        help="also log figures, table, fits and report to the study's W&B run (default off)",
    )
    p.add_argument("--wandb_project", "--wandb-project", help="default: the cells' project")
    p.add_argument("--wandb_entity", "--wandb-entity", help="default: the cells' entity")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    wandb_run.check_mode(args.wandb)
    doc = analyze(args.study_dir, bootstrap=args.bootstrap, seed=args.seed, families=args.families)
    print(f"report: {doc['report']}")
    for note in doc["notes"]:
        print(f"note: {note}")
    print(doc["break_even_text"])
    if args.wandb != "off":
        where = wandb_run.log_analysis(
            StudyDir.at(args.study_dir),
            doc["study"],
            args.wandb,
            args.wandb_project,
            args.wandb_entity,
            headline=doc["break_even_text"],
        )
        sync = f" (upload: wandb sync {where['dir']})" if where["mode"] == "offline" else ""
        print(f"W&B {where['mode']}: analysis run {where['path'] or where['id']}{sync}")
    return 0
