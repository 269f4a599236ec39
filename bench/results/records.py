"""Result records: the schema, the one builder, the atomic writer and the one reader.

A record is one JSON file per cell, ``<records_dir>/<run_id>.json``. A record whose status is
``completed`` (or ``diverged``: the cell ran and its loss blew up, a result too) means the cell is
done. Every record in the project is made by :func:`make_record`, so a record written by a
training run, by the grid runner for a cell that died, or by ``bench pull`` has the same fields.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.clock import utc_now

SCHEMA = 1
STATUSES = ("completed", "diverged", "failed")
DONE = ("completed", "diverged")
REQUIRED = (
    "schema",
    "run_id",
    "study",
    "status",
    "error",
    "config",
    "params",
    "flops_per_image",
    "train_flops",
    "metrics",
    "timing",
    "env",
    "wandb",
    "created_at",
    "finished_at",
)
METRICS = ("test_error", "test_loss", "val_error", "train_loss", "epochs", "steps")


def make_record(run_id: str, study: str, status: str, config: dict, **fields: Any) -> dict:
    """A record with every required field; ``fields`` fill or add to the defaults."""
    now = utc_now()
    record: dict[str, Any] = {
        "schema": SCHEMA,
        "run_id": run_id,
        "study": study,
        "status": status,
        "error": None,
        "config": dict(config),
        "params": None,
        "flops_per_image": None,
        "train_flops": None,
        "metrics": {},
        "timing": {},
        "env": {},
        "wandb": {},
        "created_at": now,
        "finished_at": now,
    }
    record.update(fields)
    return record


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


def record_path(records_dir: str | os.PathLike, run_id: str) -> Path:
    return Path(records_dir) / f"{run_id}.json"


def write_record(record: dict[str, Any], records_dir: str | os.PathLike) -> Path:
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        raise ValueError(f"record lacks fields: {', '.join(missing)}")
    if record["status"] not in STATUSES:
        raise ValueError(f"record status must be one of {STATUSES}, got {record['status']!r}")
    path = record_path(records_dir, record["run_id"])
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True) + "\n")
    return path


def read_record(path: str | os.PathLike) -> dict[str, Any]:
    with open(path) as f:
        return json.load(f)


def is_done(records_dir: str | os.PathLike, run_id: str) -> bool:
    """A cell is done when its record exists and is not a failure (diverged counts as done)."""
    path = record_path(records_dir, run_id)
    if not path.exists():
        return False
    try:
        return read_record(path).get("status") in DONE
    except (OSError, json.JSONDecodeError):
        return False


def iter_records(folder: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Every record under ``folder`` (searched recursively), sorted by path."""
    for path in sorted(Path(folder).rglob("*.json")):
        try:
            rec = read_record(path)
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(rec, dict) and "run_id" in rec and "config" in rec:
            yield rec
