"""``bench run --config FILE.yaml``: cell fields from a YAML file, plain or as W&B writes them.

Two forms are read:

- plain: ``{field: value}``, e.g. ``family: vit``;
- a W&B run's ``config.yaml`` (the Files tab of a run, or ``wandb pull``):
  ``{field: {desc: ..., value: ...}, _wandb: {...}}``, maybe with ``wandb_version: 1``.
  wandb's own keys (``_wandb``, ``wandb_version``, any ``_``-prefixed key) and the two values
  bench adds to a run's config (``run_id``, ``params``) are not cell fields and are skipped; so are
  the runtime fields that name the other machine's places (``results_dir``, ``cache_dir``) and
  ``force``: the cell is rerun here, into this machine's ``results/<study>/runs``.

Any other key that is not a field is an error naming every such key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from bench.errors import BenchError, yaml_error

WANDB_KEYS = {"wandb_version"}  # wandb's own, besides every "_"-prefixed key
ADDED_BY_BENCH = {"run_id", "params"}  # bench.cell.tracking puts these in a run's config
MACHINE_LOCAL = {"results_dir", "cache_dir", "force"}


def read_config_file(path: str, fields: set[str]) -> tuple[dict[str, Any], str | None]:
    """(cell values, the run_id the W&B run was trained as, or None) from ``path``."""
    data = _load(path)
    wandb_form = is_wandb_config(data)
    values = {
        k: (v["value"] if wandb_form else v)
        for k, v in data.items()
        if not (k.startswith("_") or k in WANDB_KEYS)
    }
    ran_as = values.pop("run_id", None) if wandb_form else None
    if wandb_form:
        values = {k: v for k, v in values.items() if k not in ADDED_BY_BENCH | MACHINE_LOCAL}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise BenchError(
            f"config file {path}: unknown field{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(unknown)} (see `bench run --help`)"
        )
    return values, ran_as


def is_wandb_config(data: dict[str, Any]) -> bool:
    """True for W&B's ``{key: {value: ..., desc: ...}}`` form: every field wrapped (cell fields
    are scalars, so a plain file never looks like this)."""
    entries = [v for k, v in data.items() if not (k.startswith("_") or k in WANDB_KEYS)]
    return bool(entries) and all(
        isinstance(v, dict) and "value" in v and set(v) <= {"value", "desc"} for v in entries
    )


def _load(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise BenchError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise yaml_error(f"config file {path}", e) from None
    if not isinstance(data, dict):
        raise BenchError(f"config file {path} must hold a mapping of field: value")
    return data
