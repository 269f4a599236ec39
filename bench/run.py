"""Train one cell and write its record. Nothing else in the project trains.

    bench run --family=vit --size=s --n_train=2000 --seed=0 --dataset=cifar10
"""

from __future__ import annotations

import math
import shutil
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench import results
from bench.config import Cell, build_parser, parse_cell_args
from bench.errors import BenchError

EVAL_BATCH = 1024


@dataclass
class Prepared:
    """Everything a cell needs before training: checked, so a bad cell fails before W&B starts."""

    cell: Cell
    splits: Any
    subsets: Any
    arch: Any
    model: torch.nn.Module
    params: int
    flops_per_image: int
    total_steps: int
    device: torch.device


def main(argv: list[str]) -> int:
    parser = build_parser("bench run", __doc__)
    cell, _ = parse_cell_args(argv, parser)
    record = run_cell(cell)
    if record is None:
        return 0
    return {"completed": 0, "diverged": 0}.get(record["status"], 1)


def run_cell(cell: Cell) -> dict | None:
    """Train, evaluate and record one cell; None when it was already done."""
    out_dir = cell.records_dir
    if results.is_done(out_dir, cell.run_id) and not cell.force:
        print(f"{cell.run_id}: done already ({results.record_path(out_dir, cell.run_id)}); "
              "--force retrains", file=sys.stderr)
        return None
    ckpt_dir = checkpoint_dir(cell)
    if cell.force and ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)
    prep = prepare(cell)
    return train_and_record(prep, ckpt_dir)


def checkpoint_dir(cell: Cell) -> Path:
    return cell.records_dir.parent / "checkpoints" / cell.run_id


def pick_device(cell: Cell) -> torch.device:
    if cell.device == "cuda" or (cell.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise BenchError("device=cuda but no CUDA device is available")
        return torch.device("cuda")
    return torch.device("cpu")


def total_steps_for(cell: Cell, n_train: int) -> int:
    kind, value = cell.budget
    batch = min(cell.batch_size, n_train)
    if kind == "steps":
        return int(value)
    images = value if kind == "examples" else value * n_train
    return max(1, math.ceil(images / batch))


def prepare(cell: Cell) -> Prepared:
    from bench.data import load_splits, make_subsets
    from bench.models import build_model, count_params, forward_flops, resolve_arch

    splits = load_splits(cell)
    subsets = make_subsets(cell, splits.train_y, splits.num_classes)
    arch = resolve_arch(cell, splits.num_classes)
    torch.manual_seed(cell.seed)
    model = build_model(arch)
    return Prepared(
        cell=cell, splits=splits, subsets=subsets, arch=arch, model=model,
        params=count_params(model), flops_per_image=forward_flops(model, arch.img_size),
        total_steps=total_steps_for(cell, len(subsets.train_idx)), device=pick_device(cell),
    )


def train_and_record(prep: Prepared, ckpt_dir: Path, annotate=None) -> dict:
    """Train, test, write the record; ``annotate(record, outcome)`` may add to it first."""
    from bench import tracking

    cell = prep.cell
    created = _now()
    logger = tracking.make_logger(cell, prep.params)
    t0 = time.perf_counter()
    status, error, outcome = "completed", None, {}
    try:
        outcome = fit_and_test(prep, ckpt_dir, logger)
    except KeyboardInterrupt:
        tracking.finish(logger, exit_code=130)
        raise
    except Exception as e:
        from bench.module import Diverged

        status = "diverged" if isinstance(e, Diverged) else "failed"
        error = f"{e.__class__.__name__}: {e}"
        if status == "failed":
            traceback.print_exc()
    record = build_record(prep, status, error, outcome, time.perf_counter() - t0, created, logger)
    if annotate is not None:
        annotate(record, outcome)
    path = results.write_record(record, cell.records_dir)
    tracking.log_record(logger, record)
    tracking.finish(logger, exit_code=0 if status == "completed" else 1)
    err = record["metrics"].get("test_error")
    summary = f"test error {err:.2%}" if err is not None else (error or "")
    print(f"{cell.run_id}: {status}: {summary} -> {path}", file=sys.stderr)
    return record


def make_module(prep: Prepared, total_steps: int):
    from bench.data import channel_stats
    from bench.module import CellModule

    cell = prep.cell
    mean, std = channel_stats(prep.splits.train_x, prep.subsets.train_idx)
    return CellModule(
        prep.model, lr=cell.lr, weight_decay=cell.weight_decay, total_steps=total_steps,
        warmup=cell.warmup, label_smoothing=cell.label_smoothing, mean=mean, std=std,
        batch_size=min(cell.batch_size, len(prep.subsets.train_idx)),
        channels_last=prep.device.type == "cuda" and prep.arch.family == "resnet",
        grad_clip=cell.grad_clip,
        meta={"cell": cell.to_dict(), "arch": dict(vars(prep.arch)), "run_id": cell.run_id},
    )


def loaders(prep: Prepared):
    from bench.data import DeviceBatches

    cell, s, dev = prep.cell, prep.splits, prep.device
    tx, ty = s.train_x[prep.subsets.train_idx].to(dev), s.train_y[prep.subsets.train_idx].to(dev)
    batch = min(cell.batch_size, len(ty))
    pad = max(1, cell.img_size // 8) if cell.augment else 0
    train = DeviceBatches(tx, ty, batch, shuffle=True, augment_pad=pad, seed=cell.seed, drop_last=True)
    vx, vy = s.train_x[prep.subsets.val_idx].to(dev), s.train_y[prep.subsets.val_idx].to(dev)
    val = DeviceBatches(vx, vy, EVAL_BATCH, shuffle=False) if len(vy) else None
    test = DeviceBatches(s.test_x.to(dev), s.test_y.to(dev), EVAL_BATCH, shuffle=False)
    return train, val, test


def make_trainer(prep: Prepared, total_steps: int, ckpt_dir: Path | None, logger, has_val: bool,
                 extra_callbacks=()):
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint

    from bench.progress import Progress, quiet_lightning

    quiet_lightning()

    cell = prep.cell
    callbacks = list(extra_callbacks)
    if cell.progress:
        callbacks.append(Progress(cell.name, total_steps, min(cell.batch_size, len(prep.subsets.train_idx))))
    if ckpt_dir is not None:
        callbacks.append(ModelCheckpoint(
            dirpath=ckpt_dir, filename="best", monitor="val/error" if has_val else None,
            mode="min", save_top_k=1, save_last=True, enable_version_counter=False,
        ))
    gpu = prep.device.type == "cuda"
    precision = cell.precision if cell.precision != "auto" else ("bf16" if gpu else "fp32")
    return pl.Trainer(
        accelerator="gpu" if gpu else "cpu", devices=1,
        precision="bf16-mixed" if precision == "bf16" else "32-true",
        max_steps=total_steps, max_epochs=-1,
        val_check_interval=max(1, total_steps // cell.evals) if has_val else None,
        check_val_every_n_epoch=None, num_sanity_val_steps=0, limit_val_batches=1.0 if has_val else 0,
        logger=logger if logger is not None else False,
        callbacks=callbacks, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=ckpt_dir is not None, default_root_dir=str(ckpt_dir or "."),
        log_every_n_steps=50,
    )


def fit_and_test(prep: Prepared, ckpt_dir: Path, logger) -> dict:
    """Fit (resuming from the last checkpoint if there is one), then test the best checkpoint."""
    cell = prep.cell
    module = make_module(prep, prep.total_steps)
    if cell.compile:
        module.model = torch.compile(module.model)
    train, val, test = loaders(prep)
    trainer = make_trainer(prep, prep.total_steps, ckpt_dir, logger, has_val=val is not None)
    last = ckpt_dir / "last.ckpt"
    resume = str(last) if last.exists() else None
    if resume:
        print(f"{cell.run_id}: resuming from {last}", file=sys.stderr)
    trainer.fit(module, train_dataloaders=train, val_dataloaders=val, ckpt_path=resume)
    if not math.isfinite(module.last_train_loss) and trainer.global_step > 0:
        module._flush_train_metrics(trainer.global_step)
    val_error = _best_val(trainer)
    best = ckpt_dir / "best.ckpt"
    tested = trainer.test(module, dataloaders=test, ckpt_path=str(best) if best.exists() else None,
                          verbose=False)[0]
    outcome = {
        "test_error": tested["test/error"], "test_loss": tested["test/loss"],
        "val_error": val_error, "train_loss": module.last_train_loss,
        "epochs": trainer.global_step / max(1, len(train)), "steps": trainer.global_step,
        "train_images_per_s": module.train_images_per_s,
        "checkpoint": str(best) if best.exists() else None,
    }
    if cell.finetune_img_size:
        from bench.finetune import finetune_in_cell  # second phase: same cell, higher resolution

        outcome = finetune_in_cell(prep, outcome, ckpt_dir, logger)
    return outcome


def _best_val(trainer) -> float | None:
    for cb in trainer.checkpoint_callbacks:
        if cb.best_model_score is not None:
            return float(cb.best_model_score)
    return None


def build_record(prep: Prepared, status: str, error: str | None, outcome: dict, wall_s: float,
                 created: str, logger) -> dict:
    from bench import tracking
    from bench.env import environment

    cell = prep.cell
    steps = outcome.get("steps", 0)
    batch = min(cell.batch_size, len(prep.subsets.train_idx))
    metrics = {k: _finite(outcome.get(k)) for k in results.METRICS}
    metrics["steps"] = int(steps)
    return {
        "schema": results.SCHEMA,
        "run_id": cell.run_id,
        "name": cell.name,
        "study": cell.study,
        "status": status,
        "error": error,
        "config": cell.to_dict(),
        "arch": dict(vars(prep.arch)),
        "data": {
            "n_train": len(prep.subsets.train_idx), "n_val": len(prep.subsets.val_idx),
            "n_test": len(prep.splits.test_y), "num_classes": prep.splits.num_classes,
            "img_size": prep.arch.img_size,
        },
        "params": prep.params,
        "flops_per_image": prep.flops_per_image,
        # training costs about 3x the forward pass (forward + backward)
        "train_flops": 3 * prep.flops_per_image * batch * steps,
        "metrics": metrics,
        "timing": {
            "wall_s": round(wall_s, 3),
            "train_images_per_s": _finite(outcome.get("train_images_per_s")),
            "device": torch.cuda.get_device_name() if prep.device.type == "cuda" else "cpu",
        },
        "checkpoint": outcome.get("checkpoint"),
        "parent": cell.parent,
        # cells with finetune_img_size: the pre-training phase's numbers and the second phase's
        "pretrain": outcome.get("pretrain"),
        "finetune": outcome.get("finetune"),
        "env": environment(),
        "wandb": tracking.describe(logger),
        "created_at": created,
        "finished_at": _now(),
    }


def _finite(x):
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds")
