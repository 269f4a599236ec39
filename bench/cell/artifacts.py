"""A cell's trained model as a W&B Artifact, and trained runs fetched back from W&B.

Writing (opt-in per cell, ``log_model=best``): at the end of the cell, its best checkpoint (the
one that was tested) and its record go into an artifact of type ``model`` named
``model-<run_id>``, logged by the cell's own W&B run with the aliases ``best`` and ``latest``.
Offline, wandb writes the manifest into the run's ``.wandb`` log and keeps the files staged
until ``wandb sync`` uploads them.

Reading (``bench probe``, ``bench finetune``): besides a local run_id, record or checkpoint, RUN
may name a run on W&B:

    wandb:ENTITY/PROJECT/RUN_ID                  the model artifact that W&B run logged
    wandb-artifact:ENTITY/PROJECT/NAME[:ALIAS]   an artifact (alias or version; default latest)

``ENTITY/`` may be left out (your default entity). The artifact is downloaded (online, with
credentials) into ``$BENCH_CACHE/artifacts/`` (default ``~/.cache/bench``) and read like a local
folder holding ``record.json`` and ``best.ckpt``.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.cell.config import Cell
from bench.env import has_credentials
from bench.errors import BenchError
from bench.results import records

RUN_PREFIX = "wandb:"
ARTIFACT_PREFIX = "wandb-artifact:"
TYPE = "model"
RECORD_FILE = records.ARTIFACT_RECORD
ALIASES = ["best", "latest"]
_PART = re.compile(r"^[\w.\-]+$")  # one path part: entity, project, run id or artifact name


def artifact_name(run_id: str) -> str:
    return f"model-{run_id}"


# ---------------------------------------------------------------------- writing
def log_model(logger, cell: Cell, record: dict, record_path: Path, ckpt_dir: Path) -> str | None:
    """The cell's tested checkpoint and its record as the run's model artifact; its reference."""
    if cell.log_model != "best" or logger is None or record["status"] != "completed":
        return None  # a failed or diverged cell has no model worth keeping
    ckpt = Path(record["checkpoint"]) if record.get("checkpoint") else ckpt_dir / "last.ckpt"
    if not ckpt.is_file():
        return None
    import wandb  # a run that logs has wandb (tracking made its logger)

    run = logger.experiment
    art = wandb.Artifact(
        artifact_name(cell.run_id),
        type=TYPE,
        description=f"{cell.name} ({cell.study}): the checkpoint that was tested, and its record",
        metadata={
            "run_id": cell.run_id,
            "study": cell.study,
            "status": record["status"],
            "test_error": (record.get("metrics") or {}).get("test_error"),
            "params": record.get("params"),
        },
    )
    art.add_file(str(ckpt), name=ckpt.name)  # best.ckpt, or last.ckpt without a validation split
    art.add_file(str(record_path), name=RECORD_FILE)
    run.log_artifact(art, aliases=ALIASES)
    owner = f"{run.entity}/" if run.entity else ""
    ref = f"{ARTIFACT_PREFIX}{owner}{run.project}/{art.name}:best"
    later = " once `wandb sync` has uploaded the run" if run.offline else ""
    print(f"{cell.run_id}: model artifact logged: {ref}{later}", file=sys.stderr)
    return ref


# ---------------------------------------------------------------------- reading
@dataclass(frozen=True)
class RemoteRef:
    kind: str  # "run" or "artifact"
    path: str  # ENTITY/PROJECT/RUN_ID or ENTITY/PROJECT/NAME:ALIAS

    def __str__(self) -> str:
        return f"{RUN_PREFIX if self.kind == 'run' else ARTIFACT_PREFIX}{self.path}"


def parse_ref(ref: str) -> RemoteRef | None:
    """A ``wandb:`` or ``wandb-artifact:`` reference; None for a local one."""
    if ref.startswith(ARTIFACT_PREFIX):
        kind, prefix = "artifact", ARTIFACT_PREFIX
    elif ref.startswith(RUN_PREFIX):
        kind, prefix = "run", RUN_PREFIX
    else:
        return None
    body = ref[len(prefix) :].removeprefix("//")
    if kind == "artifact":
        name, _, alias = body.partition(":")
        alias = alias or "latest"
        parts, valid = name.split("/"), bool(_PART.match(alias))
        body = f"{name}:{alias}"
    else:
        parts, valid = body.split("/"), True
    if not (valid and len(parts) in (2, 3) and all(_PART.match(p) for p in parts)):
        shape = "ENTITY/PROJECT/NAME[:ALIAS]" if kind == "artifact" else "ENTITY/PROJECT/RUN_ID"
        raise BenchError(f"{ref!r} is not a W&B reference: write {prefix}{shape}")
    return RemoteRef(kind, body)


def fetch(ref: RemoteRef, root: Path | None = None) -> Path:
    """Download the model artifact ``ref`` names; the local folder holding its files (online)."""
    if not has_credentials():
        raise BenchError(f"{ref}: no W&B credentials (run `wandb login` or set WANDB_API_KEY)")
    import wandb

    root = root or downloads_root()
    try:
        api = wandb.Api()
        art = _run_model(api, ref) if ref.kind == "run" else api.artifact(ref.path, type=TYPE)
        dest = root / art.name.replace(":", "_")
        return Path(art.download(root=str(dest)))
    except BenchError:
        raise
    except Exception as e:  # not found, no network, no access: one line
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BenchError(f"{ref}: could not fetch the model from W&B: {msg}") from None


def _run_model(api, ref: RemoteRef):
    """The model artifact a W&B run logged (its ``latest`` version when it logged several)."""
    models = [a for a in api.run(ref.path).logged_artifacts() if a.type == TYPE]
    if not models:
        raise BenchError(
            f"{ref}: the run logged no model artifact (train the cell with --log_model=best)"
        )
    latest = [a for a in models if "latest" in (a.aliases or [])]
    return (latest or models)[-1]


def downloads_root() -> Path:
    root = os.environ.get("BENCH_CACHE") or Path.home() / ".cache" / "bench"
    return Path(root) / "artifacts"
