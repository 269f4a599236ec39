"""Weights & Biases through Lightning's WandbLogger, chosen without ever prompting.

wandb is imported only when a run uses it, so ``wandb=disabled`` works where it is not installed.
"""

from __future__ import annotations

import os
from pathlib import Path

from pytorch_lightning.loggers import WandbLogger

from bench.cell.config import Cell
from bench.env import has_credentials


def resolve_mode(requested: str) -> str:
    """auto: WANDB_MODE if set, else online with credentials, else offline."""
    if requested != "auto":
        return requested
    env = os.environ.get("WANDB_MODE", "").lower()
    if env in ("online", "offline", "disabled"):
        return env
    if env == "dryrun":
        return "offline"
    return "online" if has_credentials() else "offline"


def make_logger(cell: Cell, params: int):
    mode = resolve_mode(cell.wandb)
    if mode == "disabled":
        return None
    import wandb  # only a run that logs needs it: wandb=disabled works where it is not installed

    os.environ["WANDB_MODE"] = mode  # a non-interactive process must never reach the login prompt
    if wandb.run is not None:  # a run left open in this process must not swallow this cell
        wandb.finish()
    n = cell.n_train
    logger = WandbLogger(
        name=cell.name,
        project=cell.wandb_project,
        entity=cell.wandb_entity,
        group=cell.study,
        job_type="train",
        tags=[cell.family, cell.size, f"n{n}"],
        mode=mode,
        config={
            **cell.to_dict(),
            # lr, optimizer, mixup ... as run, not None
            **{k: v for k, v in cell.resolved_recipe.items() if k != "name"},
            "run_id": cell.run_id,
            "params": params,
        },
        save_dir=os.environ.get("WANDB_DIR", "."),
    )
    run = logger.experiment  # start now, so a failure in training is still recorded
    run.define_metric("val/error", summary="min")
    run.define_metric("val/loss", summary="min")
    return logger


def log_record(logger, record: dict) -> None:
    """The whole record goes into the run summary: `bench pull` rebuilds records from it."""
    if logger is None:
        return
    run = logger.experiment
    for k in ("test_error", "test_loss"):
        v = record["metrics"].get(k)
        if v is not None:
            run.summary[f"test/{k.split('_')[1]}"] = v
    run.summary["status"] = record["status"]
    run.summary["record"] = record


def describe(logger) -> dict:
    if logger is None:
        return {"mode": "disabled", "path": None, "dir": None}
    run = logger.experiment
    mode = os.environ.get("WANDB_MODE", "online")
    return {
        "mode": mode,
        "path": run.path if mode == "online" else None,
        "dir": _short(Path(run.dir).parent),
        "id": run.id,
    }


def _short(path: Path) -> str:
    """Relative to the working folder when inside it: records should not name one machine's paths."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def finish(logger, exit_code: int = 0) -> None:
    if logger is None:
        return
    logger.experiment.finish(exit_code=exit_code)
