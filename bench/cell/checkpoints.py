"""Load a trained run back: its record, its cell, its architecture and its model with weights.

    record, cell, arch, model = load_run("vit-s-n2000-s0-1a2b3c4d")          # a run_id
    record, cell, arch, model = load_run("results/cifar10/runs/<run_id>.json")  # a record
    record, cell, arch, model = load_run("results/cifar10/checkpoints/<run_id>/best.ckpt")
    record, cell, arch, model = load_run("wandb:ENTITY/PROJECT/RUN_ID")  # its model artifact
    record, cell, arch, model = load_run("wandb-artifact:ENTITY/PROJECT/model-<run_id>:best")

Every Lightning checkpoint of a cell holds ``checkpoint["bench"] = {"cell", "arch", "run_id"}``
(see ``CellModule.on_save_checkpoint``), so a checkpoint alone is enough to rebuild the model;
the architecture is taken from the checkpoint, not re-derived from the cell, because a fine-tuned
phase has another image size than its cell's ``img_size``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from bench.cell.artifacts import RECORD_FILE, fetch, parse_ref
from bench.cell.config import Cell
from bench.cell.models import Arch, build_model
from bench.errors import BenchError
from bench.results import records
from bench.results.layout import RECORDS, StudyDir

MODEL_PREFIX = "model."


def load_run(ref: str | Path, results_root: str | Path = "results"):
    """``(record | None, cell, arch, model)`` for a run_id, a record ``.json``, a ``.ckpt``, a
    folder (a checkpoint folder, or a downloaded artifact: record.json + best.ckpt) or a W&B
    reference (downloaded first, see :mod:`bench.cell.artifacts`).

    The model is on the CPU, in eval mode, with the checkpoint's weights.
    """
    remote = parse_ref(str(ref))
    if remote is not None:
        ref = fetch(remote)
    record, ckpt_path = resolve(ref, results_root)
    cell, arch, model = load_checkpoint(ckpt_path)
    if record is None:
        record = _record_beside(ckpt_path, cell)
    if record is not None and record.get("config"):
        cell = cell_from_dict(record["config"])  # the record's cell is the one that was run
    return record, cell, arch, model


def resolve(ref: str | Path, results_root: str | Path = "results") -> tuple[dict | None, Path]:
    """The record (when there is one) and the checkpoint file that ``ref`` points at."""
    ref_s = str(ref)
    path = Path(ref_s)
    if ref_s.endswith(".ckpt"):
        if not path.is_file():
            raise BenchError(f"checkpoint {ref_s} does not exist")
        return None, path
    if path.is_dir():
        record = _read(path / RECORD_FILE) if (path / RECORD_FILE).is_file() else None
        for name in ("best.ckpt", "last.ckpt"):
            if (path / name).is_file():
                return record, path / name
        raise BenchError(f"{ref_s} is a folder without best.ckpt or last.ckpt")
    if ref_s.endswith(".json"):
        if not path.is_file():
            raise BenchError(f"record {ref_s} does not exist")
        record_file = path
    else:
        record_file = find_record(ref_s, results_root)
    record = _read(record_file)
    return record, checkpoint_of(record, record_file)


def _read(record_file: Path) -> dict:
    try:
        return records.read_record(record_file)
    except (OSError, ValueError) as e:
        raise BenchError(f"cannot read record {record_file}: {e}") from None


def find_record(run_id: str, results_root: str | Path = "results") -> Path:
    """``<results_root>/*/runs/<run_id>.json`` (or ``<results_root>/<run_id>.json``)."""
    root = Path(results_root)
    hits = sorted(root.glob(f"*/{RECORDS}/{run_id}.json")) + sorted(root.glob(f"{run_id}.json"))
    if not hits:
        raise BenchError(
            f"no record for run {run_id!r} under {root}/*/runs/ "
            "(give a run_id, a record .json or a checkpoint .ckpt)"
        )
    if len(hits) > 1:
        listed = ", ".join(str(h) for h in hits)
        raise BenchError(f"run {run_id!r} has several records ({listed}): pass one of them")
    return hits[0]


def checkpoint_of(record: dict, record_file: Path) -> Path:
    """The record's best checkpoint; a relative path is tried from here, then from the record."""
    run_id = record.get("run_id", record_file.stem)
    ckpt = record.get("checkpoint")
    if not ckpt:
        raise BenchError(
            f"run {run_id} has no checkpoint (status {record.get('status')!r}): nothing to load"
        )
    p = Path(ckpt)
    candidates = [p]
    if not p.is_absolute():
        # the path was written relative to where the run was started: try the usual layouts
        folder = StudyDir.of_records(record_file.parent)
        candidates += [
            folder.study_dir / p,
            folder.records_dir / p,
            folder.checkpoints(run_id) / p.name,
        ]
    for c in candidates:
        if c.is_file():
            return c
    raise BenchError(f"run {run_id}: checkpoint {ckpt} does not exist (was it deleted or moved?)")


def load_checkpoint(path: str | Path):
    """``(cell, arch, model)`` from a Lightning checkpoint written by ``CellModule``."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # truncated or not a checkpoint at all
        raise BenchError(f"cannot read checkpoint {path}: {e.__class__.__name__}: {e}") from None
    meta = ckpt.get("bench") if isinstance(ckpt, dict) else None
    if not meta or "arch" not in meta or "cell" not in meta:
        raise BenchError(f"checkpoint {path} was not written by bench (no cell/architecture in it)")
    known = {f.name for f in dataclasses.fields(Arch)}
    arch = Arch(**{k: v for k, v in meta["arch"].items() if k in known})
    cell = cell_from_dict(meta["cell"])
    model = build_model(arch)
    state = model_state(ckpt["state_dict"])
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise BenchError(
            f"checkpoint {path} does not match its architecture: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}"
        )
    model.eval()
    return cell, arch, model


def model_state(state_dict: dict[str, Any]) -> dict[str, Any]:
    """The model's weights out of a CellModule state dict (also when it was torch.compile'd)."""
    out = {}
    for k, v in state_dict.items():
        if k.startswith(MODEL_PREFIX):
            k = k[len(MODEL_PREFIX) :]
            out[k.removeprefix("_orig_mod.")] = v
    return out


def cell_from_dict(values: dict[str, Any]):
    """A Cell from a saved dict, ignoring fields this version of bench does not know."""
    known = {f.name for f in dataclasses.fields(Cell)}
    return Cell.from_dict({k: v for k, v in values.items() if k in known})


def _record_beside(ckpt_path: Path, cell) -> dict | None:
    """The record of a checkpoint's run, when it is where ``bench run`` put it."""
    run_id = cell.run_id
    beside = StudyDir.at(ckpt_path.resolve().parents[2])  # <study>/checkpoints/<run_id>/best.ckpt
    for c in (cell.folder.record(run_id), beside.record(run_id)):
        if c.is_file():
            try:
                return records.read_record(c)
            except (OSError, ValueError):
                return None
    return None
