"""Result records: the schema, the one builder, the atomic writer and the one reader.

A record is one JSON file per cell, ``<records_dir>/<run_id>.json``. A record whose status is
``completed`` (or ``diverged``: the cell ran and its loss blew up, a result too) means the cell is
done. Every record in the project is made by :func:`make_record`, so a record written by a
training run, by the grid runner for a cell that died, or by ``bench pull`` has the same fields.
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.clock import utc_now
from bench.errors import StorageError, is_storage

SCHEMA = 1
STATUSES = ("completed", "diverged", "failed")
DONE = ("completed", "diverged")
ARTIFACT_RECORD = "record.json"  # a record's name inside a W&B model artifact
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
CORRUPT = ".corrupt"  # damaged records are moved here, never deleted
# What a reader cannot do without; the other fields are checked for their type when present, so
# records of older versions and records made elsewhere (fewer fields) still read.
ESSENTIAL = ("run_id", "status", "config")
RECORD_NAME = re.compile(r".+-[0-9a-f]{8}\.json")
_OBJ = (dict,)
FIELD_TYPES = {
    "run_id": (str,),
    "status": (str,),
    "config": _OBJ,
    "metrics": _OBJ,
    "timing": _OBJ,
    "env": _OBJ,
    "wandb": _OBJ,
    "error": (str, type(None)),
}


class CorruptRecord(ValueError):
    """A file where a record should be that is not one; ``why`` says what is wrong."""

    def __init__(self, path: Path, why: str):
        super().__init__(f"record {path} is damaged: {why}")
        self.path, self.why = path, why


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
    """:func:`atomic_write_bytes` of ``text`` in UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_figure(fig, path: str | os.PathLike, **savefig_kwargs) -> None:
    """A matplotlib figure rendered in memory, then written by :func:`atomic_write_bytes`: a crash
    or a full disk never leaves half an image. The format follows the file's suffix."""
    buffer = io.BytesIO()
    fmt = Path(path).suffix.lstrip(".") or "png"
    fig.savefig(buffer, format=fmt, **savefig_kwargs)
    atomic_write_bytes(path, buffer.getvalue())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write via a temp file in the same folder, fsync and rename, so readers never see half a
    file; on any error (a full disk) the temp file is removed and the old file stays as it was.

    The file gets the mode ``open()`` would give it (0644 under the usual umask), not mkstemp's
    0600: records are read by other users and tools like logs are.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if is_storage(e):
            raise StorageError(path, e) from None
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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
    """A record, checked: raises :class:`CorruptRecord` (a ValueError) when the file cannot be a
    record (bytes that are not UTF-8 JSON, not an object, a field missing or of the wrong type)."""
    path = Path(path)
    try:
        rec = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise CorruptRecord(path, "not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise CorruptRecord(path, "empty" if not e.doc.strip() else f"not JSON ({e.msg})") from None
    # inside a model artifact the record has a fixed name; elsewhere its name is its run_id
    problem = record_problem(rec, None if path.name == ARTIFACT_RECORD else path.stem)
    if problem:
        raise CorruptRecord(path, problem)
    return rec


def load_record(path: str | os.PathLike, quarantine: bool = True) -> dict[str, Any] | None:
    """The one reader: the record at ``path``, or None when there is none. A damaged record is
    moved aside to ``.corrupt/`` beside it (``quarantine``), with one warning line, and never
    read as "not done": :func:`cell_state` then says ``corrupt``."""
    path = Path(path)
    try:
        return read_record(path)
    except FileNotFoundError:
        return None
    except CorruptRecord as e:
        if quarantine:
            moved = move_aside(path)
            warn(f"record {path} is damaged ({e.why}): moved to {moved}")
        return None


def record_problem(rec: Any, stem: str | None = None) -> str | None:
    """What makes ``rec`` not a record (None when it is one)."""
    if not isinstance(rec, dict):
        return f"a JSON {type(rec).__name__}, not an object"
    missing = [k for k in ESSENTIAL if k not in rec]
    if missing:
        return f"no {missing[0]!r} field"
    for key, kinds in FIELD_TYPES.items():
        if key in rec and not isinstance(rec[key], kinds):
            return f"{key!r} is {type(rec[key]).__name__}"
    if rec["status"] not in STATUSES:
        return f"status {rec['status']!r} is not one of {', '.join(STATUSES)}"
    if stem is not None and rec["run_id"] != stem:
        return f"run_id {rec['run_id']!r} is not the file's name"
    metrics = rec.get("metrics") or {}
    bad = [k for k, v in metrics.items() if k in METRICS and not _number_or_none(v)]
    if bad:
        return f"metric {bad[0]!r} is not a number"
    return None


def _number_or_none(v: Any) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


def move_aside(path: Path) -> Path:
    """``path`` into ``.corrupt/`` beside it, under a name that never overwrites an earlier one."""
    dest_dir = path.parent / CORRUPT
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / path.name
    n = 1
    while dest.exists():
        dest, n = dest_dir / f"{path.name}.{n}", n + 1
    os.replace(path, dest)
    return dest


def warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr, flush=True)


def cell_state(records_dir: str | os.PathLike, run_id: str, quarantine: bool = True) -> str:
    """``done``, ``failed``, ``corrupt`` (its record was damaged and moved aside: retraining
    needs --force or a rebuilt record) or ``todo``."""
    rec = load_record(record_path(records_dir, run_id), quarantine)
    if rec is not None:
        return "done" if rec["status"] in DONE else "failed"
    corrupt = Path(records_dir) / CORRUPT
    if (Path(records_dir) / f"{run_id}.json").exists() or any(corrupt.glob(f"{run_id}.json*")):
        return "corrupt"
    return "todo"


def is_done(records_dir: str | os.PathLike, run_id: str) -> bool:
    """A cell is done when its record exists and is not a failure (diverged counts as done)."""
    return cell_state(records_dir, run_id) == "done"


def looks_like_record(path: Path) -> bool:
    """A file named as :func:`write_record` names records (``<name>-<8 hex digits>.json``)."""
    return RECORD_NAME.fullmatch(path.name) is not None


def iter_records(folder: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Every record under ``folder`` (searched recursively, hidden folders left out), sorted by
    path. A damaged file named like a record is moved aside with a warning; other JSON files
    (fits.json, probe.json) are not records and are passed over."""
    folder = Path(folder)
    for path in sorted(folder.rglob("*.json")):
        if any(part.startswith(".") for part in path.relative_to(folder).parts[:-1]):
            continue
        if looks_like_record(path):
            rec = load_record(path)
        else:
            try:
                rec = read_record(path)
            except (OSError, ValueError):
                continue
        if rec is not None:
            yield rec
