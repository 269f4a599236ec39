"""The one training path: prepare a cell, fit, test, write its record. Nothing else trains.

    setup = prepare(cell)                      # data, subsets, model: every check before W&B starts
    record = train_and_record(setup, ckpt_dir) # fit (resuming), test the best checkpoint, record

A *phase* (``phase(setup, outcome, ckpt_dir, logger) -> outcome``) may run after the first fit
inside the same W&B run and record: in-cell fine-tuning at a higher resolution is one
(:mod:`bench.cell.finetune`). ``annotate(record, outcome)`` may add to the record before it is
written.
"""

from __future__ import annotations

import math
import shutil
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from bench import env
from bench.cell import artifacts, denormals, tracking
from bench.cell.augment import BatchMix, ImagePolicy
from bench.cell.batches import DeviceBatches, channel_stats, tile_permutation, transform_batches
from bench.cell.budget import Budget, resolve_budget
from bench.cell.compiled import compile_model
from bench.cell.config import Cell
from bench.cell.datasets import Splits, load_splits
from bench.cell.models import (
    Arch,
    build_model,
    count_params,
    forward_flops,
    resolve_arch,
    train_flops,
)
from bench.cell.module import CellModule, Diverged
from bench.cell.phases import Stopwatch, ValidationClock
from bench.cell.progress import Progress, quiet_lightning
from bench.cell.provenance import data_source, portable_config, portable_path
from bench.cell.resume import (
    BEST,
    Attempts,
    ResumableBatches,
    ResumeCheckpoints,
    drop_resume_files,
    pick_resume,
)
from bench.cell.streaming import batches, streams
from bench.cell.subsets import Subsets, make_subsets
from bench.clock import utc_now
from bench.errors import STORAGE_EXIT, BenchError, StorageError
from bench.results import records

EVAL_BATCH = 1024
EXIT_CODES = {"completed": 0, "diverged": 0}  # a diverged cell is a result; a failed one is not
Phase = Callable[["CellSetup", dict, Path, Any], dict]
Annotate = Callable[[dict, dict], None]


@dataclass
class CellSetup:
    """Everything a cell needs before training: checked, so a bad cell fails before W&B starts."""

    cell: Cell
    splits: Splits
    subsets: Subsets
    arch: Arch
    model: torch.nn.Module
    params: int
    flops_per_image: int
    budget: Budget
    device: torch.device

    @property
    def batch_size(self) -> int:
        """The cell's batch, or the whole training subset when it is smaller."""
        return self.budget.batch_size

    @property
    def total_steps(self) -> int:
        return self.budget.steps


def pick_device(cell: Cell) -> torch.device:
    if cell.device == "cuda" or (cell.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise BenchError("device=cuda but no CUDA device is available")
        return torch.device("cuda")
    return torch.device("cpu")


def prepare(cell: Cell, splits: Splits | None = None) -> CellSetup:
    """The cell's data (``splits``: already loaded, e.g. kept by a worker), subsets and freshly
    initialised model (seeded by the cell's seed)."""
    splits = splits if splits is not None else load_splits(cell)
    arch = resolve_arch(cell, splits.num_classes)
    torch.manual_seed(cell.seed)
    return setup_for_model(cell, arch, build_model(arch), pick_device(cell), splits)


def setup_for_model(
    cell: Cell,
    arch: Arch,
    model: torch.nn.Module,
    device: torch.device,
    splits: Splits | None = None,
) -> CellSetup:
    """A setup for ``model`` (already at ``arch.img_size``) on ``cell``'s data."""
    splits = splits if splits is not None else load_splits(cell, arch.img_size)
    if splits.num_classes != arch.num_classes:
        raise BenchError(f"the data has {splits.num_classes} classes, the model {arch.num_classes}")
    subsets = make_subsets(cell, splits.train_y, splits.num_classes)
    return CellSetup(
        cell=cell,
        splits=splits,
        subsets=subsets,
        arch=arch,
        model=model,
        params=count_params(model),
        flops_per_image=forward_flops(model, arch.img_size),
        budget=resolve_budget(cell, len(subsets.train_idx)),
        device=device,
    )


# ---------------------------------------------------------------------- the pieces of a fit
def build_module(setup: CellSetup) -> CellModule:
    """The cell's LightningModule, its model compiled when the cell asks for it."""
    cell = setup.cell
    recipe = cell.resolved_recipe
    s = setup.splits
    mean, std = channel_stats(s.train_x, setup.subsets.train_idx, release=s.release)
    module = CellModule(
        setup.model,
        lr=recipe["lr"],
        weight_decay=recipe["weight_decay"],
        optimizer=recipe["optimizer"],
        batch_augment=batch_augment(cell, setup.splits.num_classes),
        total_steps=setup.total_steps,
        warmup=cell.warmup,
        label_smoothing=cell.label_smoothing,
        mean=mean,
        std=std,
        batch_size=setup.batch_size,
        channels_last=setup.device.type == "cuda" and setup.arch.family == "resnet",
        grad_clip=cell.grad_clip,
        meta={"cell": cell.to_dict(), "arch": dict(vars(setup.arch)), "run_id": cell.run_id},
    )
    if cell.compile or cell.compile_mode:  # after CellModule has made the weights channels_last
        module.model = compile_model(module.model, cell.compile_mode, cell.cache_dir)
    return module


def batch_augment(cell: Cell, num_classes: int) -> BatchMix | None:
    """The recipe's erasing and mixup/cutmix, or None when it has neither."""
    r = cell.resolved_recipe
    if not (r["erasing"] or r["mixup"] or r["cutmix"]):
        return None
    return BatchMix(
        num_classes,
        cell.seed,
        mixup=r["mixup"],
        cutmix=r["cutmix"],
        erasing=r["erasing"],
        label_smoothing=cell.label_smoothing,
    )


def build_loaders(setup: CellSetup) -> tuple[DeviceBatches, DeviceBatches | None, DeviceBatches]:
    """Train (shuffled, augmented), validation (None without one) and test batches: on the device
    whole, or streamed from the memory-mapped cache when they do not fit (:mod:`streaming`)."""
    cell, s, dev = setup.cell, setup.splits, setup.device
    train_idx, val_idx = setup.subsets.train_idx, setup.subsets.val_idx
    pad = max(1, cell.img_size // 8) if cell.augment else 0
    stream = streams(cell, s, setup.subsets, dev)
    how = {"device": dev, "stream": stream, "release": s.release, "maps": s.maps}
    train = batches(
        s.train_x,
        s.train_y,
        train_idx,
        setup.batch_size,
        shuffle=True,
        augment_pad=pad,
        seed=cell.seed,
        drop_last=True,
        transform=chain(image_policy(cell), tile_permutation(cell)),
        transform_batches=transform_batches(setup.batch_size, cell.img_size),
        **how,
    )
    # the positive control's permutation is the task: validation and test images get it too
    fixed = tile_permutation(cell)
    val = None
    if len(val_idx):
        val = batches(
            s.train_x, s.train_y, val_idx, EVAL_BATCH, shuffle=False, transform=fixed, **how
        )
    test = batches(s.test_x, s.test_y, None, EVAL_BATCH, shuffle=False, transform=fixed, **how)
    s.release()  # what was copied to the device need not stay mapped here
    return train, val, test


class Chain:
    """Transforms applied in order; ``steps`` names them (a resumed pack finds its policy there)."""

    def __init__(self, steps: list[Callable]):
        self.steps = steps

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for t in self.steps:
            x = t(x)
        return x

    def skip(self, b: int, device: torch.device) -> None:
        """The random steps' draws for a batch of ``b``, as :meth:`ImagePolicy.skip`."""
        for t in self.steps:
            if hasattr(t, "skip"):
                t.skip(b, device)


def chain(*transforms: Callable | None) -> Callable | None:
    """The transforms that are set, applied in order (None when none is)."""
    steps = [t for t in transforms if t is not None]
    if len(steps) <= 1:
        return steps[0] if steps else None
    return Chain(steps)


def image_policy(cell: Cell) -> ImagePolicy | None:
    """The recipe's per-image policy on uint8 training batches (after crop and flip)."""
    policy = cell.resolved_recipe["auto_augment"]
    return None if policy == "none" else ImagePolicy(policy, cell.seed)


def build_trainer(
    setup: CellSetup, ckpt_dir: Path | None, logger, has_val: bool, extra_callbacks=()
) -> pl.Trainer:
    quiet_lightning()
    cell, total = setup.cell, setup.total_steps
    callbacks = list(extra_callbacks)
    if cell.progress:
        callbacks.append(Progress(cell.name, total, setup.batch_size))
    gpu = setup.device.type == "cuda"
    precision = cell.precision if cell.precision != "auto" else ("bf16" if gpu else "fp32")
    return pl.Trainer(
        accelerator="gpu" if gpu else "cpu",
        devices=1,
        precision="bf16-mixed" if precision == "bf16" else "32-true",
        max_steps=total,
        max_epochs=-1,
        val_check_interval=max(1, total // cell.evals) if has_val else None,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        limit_val_batches=1.0 if has_val else 0,
        logger=logger if logger is not None else False,
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,  # ResumeCheckpoints writes them, atomically
        default_root_dir=str(ckpt_dir or "."),
        log_every_n_steps=50,
    )


def fit_and_test(
    setup: CellSetup, ckpt_dir: Path, logger, attempts: Attempts | None = None
) -> dict:
    """Fit (resuming from the last good checkpoint if there is one), then test the best one."""
    cell = setup.cell
    module = build_module(setup)
    batches, val, test = build_loaders(setup)
    train = ResumableBatches(batches)
    watch = Stopwatch()
    keeper = ResumeCheckpoints(
        ckpt_dir, train, val is not None, attempts, watch, every_s=cell.checkpoint_every_s
    )
    # the clock before the keeper: its validation time ends before the checkpoints are written
    clocks = [ValidationClock(watch), keeper]
    trainer = build_trainer(setup, ckpt_dir, logger, val is not None, extra_callbacks=clocks)
    resume, step = pick_resume(ckpt_dir, cell.run_id)
    if attempts is not None:
        attempts.current["resumed_from_step"] = step if resume else None
        attempts.tick()
    if resume:
        print(f"{cell.run_id}: resuming from {resume} (step {step})", file=sys.stderr)
    with watch.time("fit_s"):
        trainer.fit(module, train_dataloaders=train, val_dataloaders=val, ckpt_path=resume)
    if math.isnan(module.last_train_loss) and trainer.global_step > 0:
        module.flush_train_metrics(trainer.global_step)
    # the end of training's numbers, read before loading the best checkpoint for the test
    # restores that checkpoint's loss window into the module
    trained = {
        "train_loss": module.last_train_loss,
        "epochs": trainer.global_step / max(1, len(train)),
        "steps": trainer.global_step,
        "train_images_per_s": module.train_images_per_s,
    }
    best = ckpt_dir / BEST
    best_path = str(best) if best.exists() else None
    with watch.time("test_s"):
        tested = trainer.test(module, dataloaders=test, ckpt_path=best_path, verbose=False)[0]
    return {
        "test_error": tested["test/error"],
        "test_loss": tested["test/loss"],
        "val_error": keeper.best,
        **trained,
        "checkpoint": best_path,
        "phases": watch.to_dict(),
    }


# ---------------------------------------------------------------------- fit, test, record
def already_done(cell: Cell) -> bool:
    """True (and says so) when the cell's record says it is done and ``force`` is off."""
    folder = cell.folder
    state = records.cell_state(folder.records_dir, cell.run_id)
    if cell.force or state not in ("done", "corrupt"):
        return False
    if state == "corrupt":
        raise BenchError(
            f"{cell.run_id}: its record was damaged and is in {folder.records_dir / records.CORRUPT}"
            "/: --force retrains the cell, `bench pull` can rebuild the record"
        )
    print(
        f"{cell.run_id}: done already ({folder.record(cell.run_id)}); --force retrains",
        file=sys.stderr,
    )
    return True


def fresh_checkpoints(cell: Cell) -> Path:
    """The cell's checkpoint folder, emptied first when ``force`` retrains it."""
    ckpt_dir = cell.folder.checkpoints(cell.run_id)
    if cell.force and ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)
    return ckpt_dir


def train_and_record(
    setup: CellSetup, ckpt_dir: Path, phase: Phase | None = None, annotate: Annotate | None = None
) -> dict:
    """Train, test (then ``phase``), write the record and close the W&B run."""
    cell = setup.cell
    created = utc_now()
    attempts = Attempts(ckpt_dir)
    logger = tracking.make_logger(cell, setup.params)
    status, error, outcome = "completed", None, {}
    try:
        outcome = fit_and_test(setup, ckpt_dir, logger, attempts)
        if phase is not None:
            outcome = phase(setup, outcome, ckpt_dir, logger)
    except KeyboardInterrupt:
        tracking.finish(logger, exit_code=130)
        raise
    except StorageError:  # a full disk: no record can be written either; one line, exit 3
        tracking.finish(logger, exit_code=STORAGE_EXIT)
        raise
    except Exception as e:
        status = "diverged" if isinstance(e, Diverged) else "failed"
        error = f"{e.__class__.__name__}: {e}"
        if status == "failed":
            traceback.print_exc()
    try:
        attempts.tick()
        record = build_record(setup, status, error, outcome, attempts, created, logger)
        if annotate is not None:
            annotate(record, outcome)
        path = records.write_record(record, cell.folder.records_dir)
    except StorageError:
        tracking.finish(logger, exit_code=STORAGE_EXIT)
        raise
    tracking.log_record(logger, record)
    artifacts.log_model(logger, cell, record, path, ckpt_dir)
    tracking.finish(logger, exit_code=0 if status == "completed" else 1)
    if status == "completed":  # a failed cell keeps them: it resumes when it is tried again
        drop_resume_files(ckpt_dir)
    err = record["metrics"].get("test_error")
    summary = f"test error {err:.2%}" if err is not None else (error or "")
    print(f"{cell.run_id}: {status}: {summary} -> {path}", file=sys.stderr)
    return record


def build_record(
    setup: CellSetup,
    status: str,
    error: str | None,
    outcome: dict,
    attempts: Attempts,
    created: str,
    logger,
) -> dict:
    cell = setup.cell
    steps = int(outcome.get("steps", 0))
    metrics = {k: _finite(outcome.get(k)) for k in records.METRICS}
    metrics["steps"] = steps
    metrics["examples"] = steps * setup.batch_size
    device = torch.cuda.get_device_name() if setup.device.type == "cuda" else "cpu"
    return records.make_record(
        cell.run_id,
        cell.study,
        status,
        portable_config(cell),  # no temporary paths; lr and weight decay as run
        recipe=cell.resolved_recipe,
        error=error,
        name=cell.name,
        arch=dict(vars(setup.arch)),
        data={
            "n_train": len(setup.subsets.train_idx),
            "n_val": len(setup.subsets.val_idx),
            "n_test": len(setup.splits.test_y),
            "num_classes": setup.splits.num_classes,
            "img_size": setup.arch.img_size,
            "source": data_source(cell),
        },
        budget=setup.budget.to_dict(),
        params=setup.params,
        flops_per_image=setup.flops_per_image,
        train_flops=train_flops(setup.flops_per_image, setup.batch_size, steps),
        metrics=metrics,
        timing={
            "wall_s": attempts.wall_s,  # every attempt's, not only the last one's
            "train_images_per_s": _finite(outcome.get("train_images_per_s")),
            "device": device,
            "cpu_denormals_flushed": denormals.every_thread_flushes(),  # bench.cell.denormals
            "cpu_threads": torch.get_num_threads(),  # bench.cell.threads
            "phases_s": outcome.get("phases"),  # this attempt's (bench.cell.phases)
        },
        checkpoint=portable_path(outcome.get("checkpoint"), cell.folder.study_dir),
        attempts=attempts.history,
        parent=cell.parent,
        # cells with finetune_img_size: the pre-training phase's numbers and the second phase's
        pretrain=outcome.get("pretrain"),
        finetune=outcome.get("finetune"),
        env=env.environment(),
        wandb=tracking.describe(logger),
        created_at=created,
    )


def _finite(x) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None
