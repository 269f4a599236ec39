"""Fine-tuning a trained ViT at a higher resolution, the patch size fixed.

    bench finetune RUN --img_size=64 [--steps=N --lr=X --batch_size=B ...] [--results_dir=DIR]
    bench finetune --report results/<study>      (the comparison table: bench.analysis.report)

More pixels at the same patch size means more tokens (32 px at patch 4: 64 patches; 64 px: 256).
The learned position embeddings are resized as a 2-D grid by bicubic interpolation, the class
token's row kept as it is (``bench.cell.models.set_resolution``); fixed sin-cos embeddings are
recomputed at the new grid.

Two ways in:
- ``bench finetune RUN``: a NEW cell, started from RUN's best weights. Its cell names the parent
  (``parent``), its ``img_size`` is the new resolution and its ``patch_size`` the parent's; the
  record adds ``finetune = {mode, parent, from_img_size, img_size, ...}``.
- a cell with ``finetune_img_size`` (``bench run``, a sweep): after pre-training and testing, the
  same cell fine-tunes its best weights at ``finetune_img_size`` for ``finetune_steps`` (default a
  fifth of the training steps) and reports the fine-tuned test error; the pre-training numbers
  stay under ``outcome["pretrain"]``. With ``finetune_img_size == img_size`` this phase simply
  continues training at the same resolution for the same number of steps, under the same recipe:
  the baseline the higher resolution is compared with.

Recipe of the fine-tuning phase: the cell's own (AdamW, weight decay, warm-up share, label
smoothing, augmentation), a fresh warm-up + cosine schedule, and a peak learning rate of
``FINETUNE_LR_FACTOR`` x the cell's ``lr`` unless ``--lr`` is given (fine-tuning at a lower rate
than pre-training, as in the ViT and DeiT recipes).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import sys
from pathlib import Path

import torch
from torch import nn

from bench.cell import denormals, threads
from bench.cell.budget import resolve_budget
from bench.cell.checkpoints import load_run, model_state
from bench.cell.config import Cell
from bench.cell.datasets import load_splits
from bench.cell.models import set_resolution, train_flops
from bench.cell.subsets import make_subsets
from bench.cell.train import (
    EXIT_CODES,
    CellSetup,
    already_done,
    fit_and_test,
    fresh_checkpoints,
    pick_device,
    setup_for_model,
    train_and_record,
)
from bench.errors import ArgumentParser, BenchError

FINETUNE_LR_FACTOR = 0.1
STEPS_SHARE = 5  # default fine-tuning steps: a fifth of the training steps
PHASE_DIR = "finetune"  # in-cell fine-tuning checkpoints: <ckpt_dir>/finetune/{best,last}.ckpt
BUDGETS = ("steps", "epochs", "examples")
# cell fields `bench finetune` may change; identity fields (family, size, data, seed) are the parent's
RECIPE_FIELDS = (
    *BUDGETS,
    "batch_size",
    "lr",
    "weight_decay",
    "warmup",
    "label_smoothing",
    "grad_clip",
    "augment",
    "evals",
)
RUNTIME_FIELDS = (
    "study",
    "results_dir",
    "cache_dir",
    "data_dir",
    "wandb",
    "wandb_project",
    "wandb_entity",
    "log_model",
    "device",
    "precision",
    "compile",
    "force",
    "progress",
)
PHASE_KEYS = (
    "test_error",
    "test_loss",
    "val_error",
    "train_loss",
    "epochs",
    "steps",
    "train_images_per_s",
    "checkpoint",
)


def phase_cell(
    base: Cell,
    *,
    img_size: int,
    patch_size: int,
    steps: int | None,
    lr: float | None,
    parent: str | None,
    overrides: dict | None = None,
) -> Cell:
    """The cell of a fine-tuning phase: ``base`` at ``img_size``, patch size fixed, own budget."""
    values = base.to_dict()
    values.update(
        img_size=img_size,
        patch_size=patch_size,
        parent=parent,
        finetune_img_size=None,
        finetune_steps=None,
    )
    overrides = dict(overrides or {})
    values.update(
        steps=None if any(k in overrides for k in BUDGETS) else steps,
        epochs=None,
        examples=None,
        min_examples=None,
        max_examples=None,
        budget_scale=1.0,
    )
    if "lr" not in overrides and lr is not None:
        values["lr"] = lr
    values.update(overrides)
    return Cell.from_dict(values)


def load_weights(model: nn.Module, ckpt: str | None) -> None:
    """The weights of a cell's best checkpoint into ``model`` (nothing when there is none)."""
    if not ckpt or not Path(ckpt).is_file():
        return  # no validation split, no best.ckpt: the model holds the weights that were tested
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    model.load_state_dict(model_state(state))


@contextlib.contextmanager
def _prefixed(logger, prefix: str, step_offset: int):
    """Log the phase's metrics as ``<prefix>/<key>``, its steps after the pre-training steps."""
    if logger is None:
        yield
        return
    original = logger.log_metrics

    def log_metrics(metrics, step=None):
        metrics = {f"{prefix}/{k}": v for k, v in metrics.items()}
        original(metrics, step=None if step is None else step + step_offset)

    logger.log_metrics = log_metrics
    try:
        yield
    finally:
        del logger.log_metrics  # back to the class's method


# ---------------------------------------------------------------------- in-cell phase
def finetune_phase(setup: CellSetup, outcome: dict, ckpt_dir: Path, logger) -> dict:
    """Second phase of a cell with ``finetune_img_size``: fine-tune the best weights at that size.

    Returns the fine-tuned outcome (test/val error and loss of the fine-tuned model, its best
    checkpoint; ``steps`` and ``epochs`` of both phases together) with ``outcome["pretrain"]``
    (the pre-training phase's numbers) and ``outcome["finetune"]`` (resolutions, steps,
    learning rate, FLOPs of the fine-tuning phase).
    """
    cell = setup.cell
    size = cell.finetune_img_size
    steps = cell.finetune_steps or max(1, setup.total_steps // STEPS_SHARE)
    lr = cell.resolved_recipe["lr"] * FINETUNE_LR_FACTOR
    model = copy.deepcopy(setup.model)
    load_weights(model, outcome.get("checkpoint"))
    arch = set_resolution(model, setup.arch, size)
    tuned_cell = phase_cell(
        cell,
        img_size=size,
        patch_size=setup.arch.patch_size,
        steps=steps,
        lr=lr,
        parent=cell.run_id,
    )
    tuned_setup = setup_for_model(tuned_cell, arch, model, setup.device)
    pretrain_steps = int(outcome.get("steps") or 0)
    print(
        f"{cell.run_id}: fine-tuning at {size} px ({setup.arch.img_size} px before) for "
        f"{steps} steps, lr {lr:g}",
        file=sys.stderr,
    )
    with _prefixed(logger, PHASE_DIR, pretrain_steps):
        tuned = fit_and_test(tuned_setup, Path(ckpt_dir) / PHASE_DIR, logger)
    result = dict(tuned)
    result["steps"] = pretrain_steps + int(tuned.get("steps") or 0)
    result["epochs"] = (outcome.get("epochs") or 0) + (tuned.get("epochs") or 0)
    result["pretrain"] = _phase_numbers(setup, outcome)
    result["finetune"] = {
        **_phase_numbers(tuned_setup, tuned),
        "mode": "in_cell",
        "parent": None,
        "from_img_size": setup.arch.img_size,
        "continued": size == setup.arch.img_size,
        "lr": lr,
        "patch_size": setup.arch.patch_size,
        "tokens": tuned_setup.model.patch_embed.num_patches,
    }
    return result


def _phase_numbers(setup: CellSetup, outcome: dict) -> dict:
    """One phase's errors and steps, at its resolution, with its training FLOPs."""
    steps = int(outcome.get("steps") or 0)
    return {
        **{k: outcome.get(k) for k in PHASE_KEYS},
        "img_size": setup.arch.img_size,
        "flops_per_image": setup.flops_per_image,
        "train_flops": train_flops(setup.flops_per_image, setup.batch_size, steps),
    }


# ---------------------------------------------------------------------- bench finetune RUN
def _default_steps(parent: Cell, record: dict | None) -> int:
    """A fifth of the parent's training steps."""
    n = ((record or {}).get("data") or {}).get("n_train")
    if not n:
        splits = load_splits(parent)
        n = len(make_subsets(parent, splits.train_y, splits.num_classes).train_idx)
    return max(1, resolve_budget(parent, n).steps // STEPS_SHARE)


def finetune_run(
    ref: str, img_size: int, overrides: dict, results_root: str = "results"
) -> dict | None:
    """Fine-tune run ``ref`` at ``img_size`` as a new cell; its record, or None when done already."""
    record, parent, arch, model = load_run(ref, results_root)
    parent_id = (record or {}).get("run_id") or parent.run_id
    if arch.family != "vit":
        raise BenchError(
            f"run {parent_id} is a {arch.family}: fine-tuning at another resolution applies to ViTs only"
        )
    steps = None if any(k in overrides for k in BUDGETS) else _default_steps(parent, record)
    # a fine-tuned phase checkpoint carries its own (phase) cell: the parent is its parent's parent
    base = parent.replace(finetune_img_size=None, finetune_steps=None, force=False)
    cell = phase_cell(
        base,
        img_size=img_size,
        patch_size=arch.patch_size,
        steps=steps,
        lr=parent.resolved_recipe["lr"] * FINETUNE_LR_FACTOR,
        parent=parent_id,
        overrides=overrides,
    )
    if already_done(cell):
        return None
    from_size = arch.img_size
    arch = set_resolution(model, arch, img_size)
    model.train()
    setup = setup_for_model(cell, arch, model, pick_device(cell))
    info = dict(
        mode="from_parent",
        parent=parent_id,
        parent_checkpoint=(record or {}).get("checkpoint") or str(ref),
        from_img_size=from_size,
        img_size=img_size,
        continued=from_size == img_size,
        lr=cell.resolved_recipe["lr"],
        patch_size=arch.patch_size,
        tokens=model.patch_embed.num_patches,
    )
    print(
        f"{parent_id} -> {cell.run_id}: fine-tuning at {img_size} px ({from_size} px before, "
        f"patch {arch.patch_size}: {info['tokens']} tokens) for {setup.total_steps} steps",
        file=sys.stderr,
    )

    def annotate(rec: dict, outcome: dict) -> None:
        rec["finetune"] = {
            **info,
            "steps": outcome.get("steps"),
            "test_error": outcome.get("test_error"),
        }

    return train_and_record(setup, fresh_checkpoints(cell), annotate=annotate)


# ---------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="bench finetune",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument(
        "run",
        metavar="RUN",
        help="the trained ViT: run_id, record .json, checkpoint .ckpt, wandb:E/P/RUN_ID or "
        "wandb-artifact:E/P/NAME[:ALIAS]",
    )
    parser.add_argument(
        "--img_size",
        "--img-size",
        dest="img_size",
        type=int,
        required=True,
        help="the new resolution (patch size kept)",
    )
    parser.add_argument(
        "--results_root",
        "--results-root",
        default="results",
        help="where run_ids are looked up (default results)",
    )
    fields = {f.name: f for f in dataclasses.fields(Cell)}
    for name in RECIPE_FIELDS + RUNTIME_FIELDS:
        f = fields[name]
        flags = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
        extra = dict(nargs="?", const="true") if str(f.type).startswith("bool") else {}
        parser.add_argument(
            *flags,
            dest=name,
            metavar=name.upper(),
            help=f"{f.metadata['help']} (default: the parent's)",
            **extra,
        )
    return parser


def main(argv: list[str]) -> int:
    denormals.flush()  # before any torch op starts the thread pool: its threads inherit it
    args = vars(build_parser().parse_args(argv))
    threads.size_pool(args.get("device") or "auto")  # the cores another job keeps busy
    overrides = {k: v for k, v in args.items() if k in RECIPE_FIELDS + RUNTIME_FIELDS}
    record = finetune_run(
        args["run"], args["img_size"], overrides, args.get("results_root", "results")
    )
    return 0 if record is None else EXIT_CODES.get(record["status"], 1)
