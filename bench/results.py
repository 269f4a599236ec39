"""Result records: schema, atomic write, loading many records into one DataFrame.

A record is one JSON file per cell, ``<results_dir>/<run_id>.json``. A record with
``status == "completed"`` means the cell is done.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

SCHEMA = 1
STATUSES = ("completed", "diverged", "failed")
REQUIRED = (
    "schema", "run_id", "study", "status", "error", "config", "params", "flops_per_image",
    "train_flops", "metrics", "timing", "env", "wandb", "created_at", "finished_at",
)
METRICS = ("test_error", "test_loss", "val_error", "train_loss", "epochs", "steps")

# Columns of the frame every analysis reads; config fields are added as they are.
FRAME_COLUMNS = (
    "run_id", "study", "status", "family", "size", "n_train", "seed", "params",
    "flops_per_image", "train_flops", *METRICS, "wall_s", "train_images_per_s",
)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write via a temp file in the same folder and rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_record(record: dict[str, Any], results_dir: str | os.PathLike) -> Path:
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        raise ValueError(f"record lacks fields: {', '.join(missing)}")
    if record["status"] not in STATUSES:
        raise ValueError(f"record status must be one of {STATUSES}, got {record['status']!r}")
    path = Path(results_dir) / f"{record['run_id']}.json"
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True) + "\n")
    return path


def read_record(path: str | os.PathLike) -> dict[str, Any]:
    with open(path) as f:
        return json.load(f)


def record_path(results_dir: str | os.PathLike, run_id: str) -> Path:
    return Path(results_dir) / f"{run_id}.json"


def is_done(results_dir: str | os.PathLike, run_id: str) -> bool:
    """A cell is done when its record exists and is not a failure (diverged counts as done)."""
    path = record_path(results_dir, run_id)
    if not path.exists():
        return False
    try:
        return read_record(path).get("status") in ("completed", "diverged")
    except (OSError, json.JSONDecodeError):
        return False


def iter_records(results_dir: str | os.PathLike):
    """Yield every record under ``results_dir`` (searched recursively), sorted by path."""
    for path in sorted(Path(results_dir).rglob("*.json")):
        try:
            rec = read_record(path)
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(rec, dict) and "run_id" in rec and "config" in rec:
            yield rec


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
    return row


def load_frame(results_dir: str | os.PathLike, completed_only: bool = True):
    """All records under ``results_dir`` as a pandas DataFrame, one row per run."""
    import pandas as pd

    rows = [flatten(r) for r in iter_records(results_dir)]
    frame = pd.DataFrame(rows)
    for col in FRAME_COLUMNS:
        if col not in frame.columns:
            frame[col] = pd.Series(dtype="float64")
    if completed_only and len(frame):
        frame = frame[frame["status"] == "completed"]
    return frame.sort_values(["family", "size", "n_train", "seed"], kind="stable").reset_index(drop=True) if len(frame) else frame
