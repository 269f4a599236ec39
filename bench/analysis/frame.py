"""Records to one pandas DataFrame, cleaned for fitting, and its per-cell summary."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pandas as pd

from bench.analysis.cells import plain
from bench.errors import BenchError
from bench.results.records import METRICS, iter_records

# Columns of the frame every analysis reads; config fields are added as they are.
FRAME_COLUMNS = (
    "run_id",
    "study",
    "status",
    "family",
    "size",
    "n_train",
    "seed",
    "params",
    "flops_per_image",
    "train_flops",
    *METRICS,
    "wall_s",
    "train_images_per_s",
    "n_test",
    "n_val",
    "budget_scale",
    "calibration",
)
# Prefix of the columns holding the value a recipe gave each of its fields.
RESOLVED = "resolved_"
# Size order to fall back on when a record has no parameter count.
LADDER = ("xxs", "xs", "s", "m", "l", "xl", "xxl", "h", "g")
SUMMARY_COLUMNS = (
    "family",
    "size",
    "n_train",
    "params",
    "train_flops",
    "test_error_mean",
    "test_error_std",
    "test_error_count",
    "val_error_mean",
)


def flatten(record: dict[str, Any]) -> dict[str, Any]:
    """One record as one flat row: config fields, then the headline numbers."""
    row: dict[str, Any] = dict(record.get("config", {}))
    data = record.get("data") or {}
    if data.get("n_train") is not None:
        row["n_train"] = data["n_train"]  # "all" resolved to a number
    row.update(
        run_id=record["run_id"],
        study=record.get("study"),
        status=record.get("status"),
        params=record.get("params"),
        flops_per_image=record.get("flops_per_image"),
        train_flops=record.get("train_flops"),
    )
    for k in METRICS:
        row[k] = (record.get("metrics") or {}).get(k)
    timing = record.get("timing") or {}
    row["wall_s"] = timing.get("wall_s")
    row["train_images_per_s"] = timing.get("train_images_per_s")
    row["n_test"] = data.get("n_test")
    row["n_val"] = data.get("n_val")
    # The budget as its rule reads ("epochs=60 within [1e5, 4e5] images"), else as configured.
    row["budget"] = (record.get("budget") or {}).get("rule") or _budget_text(record.get("config"))
    row["budget_scale"] = row.get("budget_scale") or 1.0
    # A calibration check a recipe may carry (absent: not recorded); kept as text for the report.
    cal = record.get("calibration")
    if cal is None and isinstance(record.get("recipe"), dict):
        cal = record["recipe"].get("calibration")
    row["calibration"] = None if cal is None else json.dumps(cal, sort_keys=True)
    row["calibration_met"] = bool(cal.get("met")) if isinstance(cal, dict) else None
    # What a field left to its recipe's default trained with (settings.py compares by it).
    resolved = record.get("recipe") if isinstance(record.get("recipe"), dict) else {}
    for k, v in resolved.items():
        if k not in ("name", "calibration"):
            row[RESOLVED + k] = v
    return row


def _budget_text(config: dict | None) -> str | None:
    config = config or {}
    for key in ("examples", "steps", "epochs"):
        if config.get(key) is not None:
            return f"{key}={config[key]:g}"
    return None


def load_frame(folder: str | os.PathLike, completed_only: bool = True) -> pd.DataFrame:
    """All records under ``folder`` as a DataFrame, one row per run."""
    frame = pd.DataFrame([flatten(r) for r in iter_records(folder)])
    for col in FRAME_COLUMNS:
        if col not in frame.columns:
            frame[col] = pd.Series(dtype="float64")
    if not len(frame):
        return frame
    if completed_only:
        frame = frame[frame["status"] == "completed"]
    order = ["family", "size", "n_train", "seed"]
    return frame.sort_values(order, kind="stable").reset_index(drop=True)


def load_study(study_dir) -> tuple[pd.DataFrame, int, list[str]]:
    """Completed records as a clean frame, the number of records found, and what was excluded."""
    path = Path(study_dir)
    if not path.is_dir():
        raise BenchError(f"results folder {str(path)!r} does not exist")
    everything = load_frame(path, completed_only=False)
    _one_study(everything, path)
    notes = []
    if len(everything):
        counts = everything["status"].value_counts().sort_index()
        other = {k: int(v) for k, v in counts.items() if k != "completed"}
        if other:
            notes.append(
                "excluded records: " + ", ".join(f"{v} {k}" for k, v in sorted(other.items()))
            )
        frame = everything[everything["status"] == "completed"].copy()
    else:
        frame = everything
    for col in ("n_train", "test_error", "val_error", "params", "train_flops"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce")
    bad = frame[["family", "size", "n_train", "test_error"]].isna().any(axis=1)
    if bad.any():
        notes.append(
            f"skipped {int(bad.sum())} completed records lacking family, size, n_train or test_error"
        )
    frame = frame[~bad]
    nonpos = (frame["test_error"] < 0) | (frame["n_train"] <= 0)
    if nonpos.any():
        notes.append(f"skipped {int(nonpos.sum())} records with test_error < 0 or n_train <= 0")
    frame = frame[~nonpos].copy()
    frame["n_test"] = pd.to_numeric(frame["n_test"], errors="coerce")
    frame["n_val"] = pd.to_numeric(frame["n_val"], errors="coerce")
    frame["budget_scale"] = pd.to_numeric(frame["budget_scale"], errors="coerce").fillna(1.0)
    frame = _floor_zero_errors(frame, notes)
    frame["family"] = frame["family"].astype(str)
    frame["size"] = frame["size"].astype(str)
    frame["n_train"] = frame["n_train"].astype("int64")
    return frame.reset_index(drop=True), len(everything), notes


def _one_study(frame: pd.DataFrame, path: Path) -> None:
    """Records are searched recursively, so a parent folder (results/ rather than
    results/<study>) would pool studies trained with other settings into one fit."""
    names = sorted(frame["study"].dropna().astype(str).unique()) if len(frame) else []
    if len(names) > 1:
        shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
        raise BenchError(
            f"{str(path)!r} holds the records of {len(names)} studies ({shown}): "
            "give one study's folder (results/<study>)"
        )


def _floor_zero_errors(frame: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    """``fit_error``: the test error the log-space fits take. A 0% cell is a result, not a gap: it
    is kept and floored at half a test example's error, 0.5 / n_test."""
    frame["fit_error"] = frame["test_error"].astype(float)
    zero = frame["test_error"] == 0
    if not zero.any():
        return frame
    known = zero & frame["n_test"].notna() & (frame["n_test"] > 0)
    frame.loc[known, "fit_error"] = 0.5 / frame.loc[known, "n_test"]
    cells = ", ".join(
        f"{r.family} {r.size} n={int(r.n_train):,} seed {plain(r.seed)}"
        for r in frame[known].itertuples()
    )
    if known.any():
        notes.append(
            f"{int(known.sum())} records reached 0% test error ({cells}): kept, and floored at "
            "half a test example's error (0.5 / n_test) for the log-space fits"
        )
    unknown = zero & ~known
    if unknown.any():
        notes.append(
            f"skipped {int(unknown.sum())} records with 0% test error and no test-set size "
            "(a log-space fit needs a floor of 0.5 / n_test)"
        )
    return frame[~unknown].copy()


def select_families(present: list[str], requested: list[str] | None, notes: list[str]) -> list[str]:
    """``requested`` (a --families option) restricted to the families present, in its order."""
    if not requested:
        return present
    absent = [f for f in requested if f not in present]
    if absent:
        notes.append(
            f"--families: no usable records for {', '.join(absent)} "
            f"(present: {', '.join(present) or 'none'})"
        )
    return [f for f in requested if f in present]


def size_orders(frame: pd.DataFrame) -> dict[str, list[str]]:
    """Per family, sizes from smallest to largest model (by parameter count, then ladder name)."""
    orders = {}
    for fam, rows in frame.groupby("family", sort=True):

        def key(size, rows=rows):
            p = rows.loc[rows["size"] == size, "params"].median()
            rank = LADDER.index(size) if size in LADDER else len(LADDER)
            known = not math.isnan(p)
            return (0 if known else 1, p if known else 0.0, rank, str(size))

        orders[fam] = sorted(rows["size"].unique().tolist(), key=key)
    return orders


def summarize(frame: pd.DataFrame, orders: dict[str, list[str]]) -> pd.DataFrame:
    """One row per (family, size, n_train): mean/std/count of test_error over seeds."""
    cols = list(SUMMARY_COLUMNS)
    if not len(frame):
        return pd.DataFrame(columns=cols)
    g = frame.groupby(["family", "size", "n_train"], sort=True)
    out = g.agg(
        params=("params", "median"),
        train_flops=("train_flops", "mean"),
        test_error_mean=("test_error", "mean"),
        test_error_std=("test_error", "std"),
        test_error_count=("test_error", "count"),
        val_error_mean=("val_error", "mean"),
    ).reset_index()
    out["_rank"] = [orders[f].index(s) for f, s in zip(out["family"], out["size"], strict=True)]
    out = out.sort_values(["family", "_rank", "n_train"], kind="stable").drop(columns="_rank")
    out["params"] = out["params"].round().astype("Int64")
    return out[cols].reset_index(drop=True)
