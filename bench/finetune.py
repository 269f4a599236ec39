"""Fine-tuning a trained ViT at a higher resolution, the patch size fixed.

    bench finetune RUN --img_size=64 [--steps=N --lr=X --batch_size=B ...] [--results_dir=DIR]
    bench finetune --report results/<study>

More pixels at the same patch size means more tokens (32 px at patch 4: 64 patches; 64 px: 256).
The learned position embeddings are resized as a 2-D grid by bicubic interpolation, the class
token's row kept as it is (``timm.layers.resample_abs_pos_embed`` through
``VisionTransformer.set_input_size``); fixed sin-cos embeddings are recomputed at the new grid.

Two ways in:
- ``bench finetune RUN``: a NEW cell, started from RUN's best weights. Its cell names the parent
  (``parent``), its ``img_size`` is the new resolution and its ``patch_size`` the parent's; the
  record adds ``finetune = {mode, parent, from_img_size, img_size, ...}``.
- a cell with ``finetune_img_size`` (``bench run``, a sweep): after pre-training and testing, the
  same cell fine-tunes its best weights at ``finetune_img_size`` for ``finetune_steps`` (default a
  fifth of the training steps) and reports the fine-tuned test error; the pre-training numbers
  stay under ``outcome["pretrain"]``. With ``finetune_img_size == img_size`` this phase simply
  continues training at the same resolution for the same number of steps, under the same recipe:
  the baseline the higher resolution is compared with (``finetune_report``).

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

from bench.errors import BenchError

FINETUNE_LR_FACTOR = 0.1
STEPS_SHARE = 5  # default fine-tuning steps: a fifth of the training steps
PHASE_DIR = "finetune"  # in-cell fine-tuning checkpoints: <ckpt_dir>/finetune/{best,last}.ckpt

# cell fields `bench finetune` may change; identity fields (family, size, data, seed) are the parent's
RECIPE_FIELDS = ("steps", "epochs", "examples", "batch_size", "lr", "weight_decay", "warmup",
                 "label_smoothing", "grad_clip", "augment", "evals")
RUNTIME_FIELDS = ("study", "results_dir", "cache_dir", "data_dir", "wandb", "wandb_project",
                  "wandb_entity", "device", "precision", "compile", "force", "progress")


# ---------------------------------------------------------------------- resizing a ViT
def resize_pos_embed(pos: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int],
                     num_prefix_tokens: int = 1) -> torch.Tensor:
    """[1, prefix + gh*gw, D] -> [1, prefix + GH*GW, D]: the patch rows resized as a 2-D grid
    (bicubic, antialiased), the prefix (class-token) rows copied unchanged."""
    from timm.layers import resample_abs_pos_embed

    return resample_abs_pos_embed(pos, new_size=list(new_grid), old_size=list(old_grid),
                                  num_prefix_tokens=num_prefix_tokens)


def set_resolution(model: nn.Module, arch, img_size: int):
    """Switch a timm ViT (in place) to ``img_size`` with its patch size kept; returns the new Arch.

    Learned position embeddings are interpolated (timm ``set_input_size``); fixed sin-cos ones
    are recomputed on the new grid and stay untrained.
    """
    from bench.models import set_sincos_pos_embed

    if arch.family != "vit":
        raise BenchError(f"fine-tuning at another resolution applies to ViTs, not {arch.family}")
    if img_size <= 0:
        raise BenchError(f"img_size={img_size} must be positive")
    if img_size % arch.patch_size:
        raise BenchError(f"img_size={img_size} is not a multiple of the patch size {arch.patch_size}")
    if img_size != arch.img_size:
        model.set_input_size(img_size=(img_size, img_size))
        if arch.pos_embed == "sincos":
            set_sincos_pos_embed(model)
    return dataclasses.replace(arch, img_size=img_size)


# ---------------------------------------------------------------------- preparing a phase
def phase_cell(base, *, img_size: int, patch_size: int, steps: int | None, lr: float | None,
               parent: str | None, overrides: dict | None = None):
    """The cell of a fine-tuning phase: ``base`` at ``img_size``, patch size fixed, own budget."""
    from bench.config import Cell

    values = base.to_dict()
    values.update(img_size=img_size, patch_size=patch_size, parent=parent,
                  finetune_img_size=None, finetune_steps=None)
    overrides = dict(overrides or {})
    if any(k in overrides for k in ("steps", "epochs", "examples")):
        values.update(steps=None, epochs=None, examples=None)
    else:
        values.update(steps=steps, epochs=None, examples=None)
    if "lr" not in overrides and lr is not None:
        values["lr"] = lr
    values.update(overrides)
    return Cell.from_dict(values)


def phase_prep(cell, arch, model: nn.Module, device: torch.device):
    """A ``bench.run.Prepared`` for ``model`` (already at ``arch.img_size``) on ``cell``'s data."""
    from bench.data import load_splits, make_subsets
    from bench.models import count_params, forward_flops
    from bench.run import Prepared, total_steps_for

    splits = load_splits(cell, arch.img_size)
    if splits.num_classes != arch.num_classes:
        raise BenchError(f"the data has {splits.num_classes} classes, the model {arch.num_classes}")
    subsets = make_subsets(cell, splits.train_y, splits.num_classes)
    return Prepared(
        cell=cell, splits=splits, subsets=subsets, arch=arch, model=model,
        params=count_params(model), flops_per_image=forward_flops(model, arch.img_size),
        total_steps=total_steps_for(cell, len(subsets.train_idx)), device=device,
    )


def _load_module_weights(model: nn.Module, ckpt: str | None) -> None:
    if not ckpt or not Path(ckpt).is_file():
        return  # no validation split, no best.ckpt: the model holds the weights that were tested
    from bench.checkpoints import model_state

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


PHASE_KEYS = ("test_error", "test_loss", "val_error", "train_loss", "epochs", "steps",
              "train_images_per_s", "checkpoint")


def finetune_in_cell(prep, outcome: dict, ckpt_dir: Path, logger) -> dict:
    """Second phase of a cell with ``finetune_img_size``: fine-tune the best weights at that size.

    Returns the fine-tuned outcome (test/val error and loss of the fine-tuned model, its best
    checkpoint; ``steps`` and ``epochs`` of both phases together) with
    ``outcome["pretrain"]`` (the pre-training phase's numbers) and ``outcome["finetune"]``
    (resolutions, steps, learning rate, FLOPs of the fine-tuning phase).
    """
    from bench.run import fit_and_test

    cell = prep.cell
    size = cell.finetune_img_size
    steps = cell.finetune_steps or max(1, prep.total_steps // STEPS_SHARE)
    lr = cell.lr * FINETUNE_LR_FACTOR
    model = copy.deepcopy(prep.model)
    _load_module_weights(model, outcome.get("checkpoint"))
    arch = set_resolution(model, prep.arch, size)
    cell2 = phase_cell(cell, img_size=size, patch_size=prep.arch.patch_size, steps=steps, lr=lr,
                       parent=cell.run_id)
    prep2 = phase_prep(cell2, arch, model, prep.device)
    pretrain_steps = int(outcome.get("steps") or 0)
    print(f"{cell.run_id}: fine-tuning at {size} px ({prep.arch.img_size} px before) for "
          f"{steps} steps, lr {lr:g}", file=sys.stderr)
    with _prefixed(logger, PHASE_DIR, pretrain_steps):
        tuned = fit_and_test(prep2, Path(ckpt_dir) / PHASE_DIR, logger)

    pre = {k: outcome.get(k) for k in PHASE_KEYS}
    batch1 = min(cell.batch_size, len(prep.subsets.train_idx))
    batch2 = min(cell2.batch_size, len(prep2.subsets.train_idx))
    pre.update(img_size=prep.arch.img_size, flops_per_image=prep.flops_per_image,
               train_flops=3 * prep.flops_per_image * batch1 * pretrain_steps)
    info = {k: tuned.get(k) for k in PHASE_KEYS}
    info.update(
        mode="in_cell", parent=None, from_img_size=prep.arch.img_size, img_size=size,
        continued=size == prep.arch.img_size, lr=lr, patch_size=prep.arch.patch_size,
        tokens=prep2.model.patch_embed.num_patches, flops_per_image=prep2.flops_per_image,
        train_flops=3 * prep2.flops_per_image * batch2 * int(tuned.get("steps") or 0),
    )
    result = dict(tuned)
    result["steps"] = pretrain_steps + int(tuned.get("steps") or 0)
    result["epochs"] = (outcome.get("epochs") or 0) + (tuned.get("epochs") or 0)
    result["pretrain"] = pre
    result["finetune"] = info
    return result


# ---------------------------------------------------------------------- bench finetune RUN
def finetune_run(ref: str, img_size: int, overrides: dict, results_root: str = "results") -> dict | None:
    """Fine-tune run ``ref`` at ``img_size`` as a new cell; its record, or None when done already."""
    from bench import results
    from bench.checkpoints import load_run
    from bench.data import load_splits, make_subsets
    from bench.run import checkpoint_dir, pick_device, total_steps_for

    record, parent, arch, model = load_run(ref, results_root)
    parent_id = (record or {}).get("run_id") or parent.run_id
    if arch.family != "vit":
        raise BenchError(f"run {parent_id} is a {arch.family}: fine-tuning at another "
                         "resolution applies to ViTs only")
    if not any(k in overrides for k in ("steps", "epochs", "examples")):
        n = ((record or {}).get("data") or {}).get("n_train")
        if not n:
            splits = load_splits(parent)
            n = len(make_subsets(parent, splits.train_y, splits.num_classes).train_idx)
        default_steps = max(1, total_steps_for(parent, n) // STEPS_SHARE)
    else:
        default_steps = None
    # a fine-tuned phase checkpoint carries its own (phase) cell: the parent is its parent's parent
    base = parent.replace(finetune_img_size=None, finetune_steps=None, force=False)
    cell = phase_cell(base, img_size=img_size, patch_size=arch.patch_size, steps=default_steps,
                      lr=parent.lr * FINETUNE_LR_FACTOR, parent=parent_id, overrides=overrides)
    if results.is_done(cell.records_dir, cell.run_id) and not cell.force:
        print(f"{cell.run_id}: done already ({results.record_path(cell.records_dir, cell.run_id)});"
              " --force retrains", file=sys.stderr)
        return None
    from_size = arch.img_size
    arch = set_resolution(model, arch, img_size)
    model.train()
    prep = phase_prep(cell, arch, model, pick_device(cell))
    ckpt_dir = checkpoint_dir(cell)
    if cell.force and ckpt_dir.exists():
        import shutil

        shutil.rmtree(ckpt_dir)
    info = dict(mode="from_parent", parent=parent_id, parent_checkpoint=str(load_ckpt_path(record, ref)),
                from_img_size=from_size, img_size=img_size, continued=from_size == img_size,
                lr=cell.lr, patch_size=arch.patch_size, tokens=model.patch_embed.num_patches)
    print(f"{parent_id} -> {cell.run_id}: fine-tuning at {img_size} px ({from_size} px before, "
          f"patch {arch.patch_size}: {info['tokens']} tokens) for {prep.total_steps} steps",
          file=sys.stderr)
    return train_and_record(prep, ckpt_dir, info)


def load_ckpt_path(record: dict | None, ref: str) -> str:
    return (record or {}).get("checkpoint") or str(ref)


def train_and_record(prep, ckpt_dir: Path, info: dict) -> dict:
    """``bench.run.train_and_record`` for a fine-tuning cell: the record also holds ``finetune``."""
    from bench import run

    def annotate(record: dict, outcome: dict) -> None:
        record["finetune"] = {**info, "steps": outcome.get("steps"), "test_error": outcome.get("test_error")}

    return run.train_and_record(prep, ckpt_dir, annotate)


# ---------------------------------------------------------------------- the comparison
def finetune_rows(results_dir: str | Path) -> list[dict]:
    """One row per completed record that went through a fine-tuning phase."""
    from bench import results

    rows = []
    records = list(results.iter_records(results_dir))
    errors = {r["run_id"]: (r.get("metrics") or {}).get("test_error") for r in records}
    for rec in records:
        cfg = rec.get("config") or {}
        ft = rec.get("finetune")
        if not isinstance(ft, dict) and cfg.get("finetune_img_size"):
            # an in-cell phase whose record does not carry the phase block: its config says it
            ft = {"from_img_size": cfg.get("img_size"), "img_size": cfg["finetune_img_size"]}
        if rec.get("status") != "completed" or not isinstance(ft, dict):
            continue
        pre = rec.get("pretrain") or {}
        rows.append(dict(
            family=cfg.get("family"), size=cfg.get("size"),
            n_train=(rec.get("data") or {}).get("n_train", cfg.get("n_train")), seed=cfg.get("seed"),
            from_img_size=ft.get("from_img_size"), img_size=ft.get("img_size"),
            test_error=(rec.get("metrics") or {}).get("test_error"),
            # in-cell: the pre-training phase; a `bench finetune` cell: its parent's record
            pretrain_error=pre.get("test_error", errors.get(ft.get("parent"))),
            run_id=rec.get("run_id"),
        ))
    return rows


def finetune_report(results_dir: str | Path) -> str:
    """Markdown: per ViT size and training-set size, test error after continuing at the
    pre-training resolution vs after fine-tuning at the higher one, and the difference."""
    from bench.config import SIZES

    rows = [r for r in finetune_rows(results_dir) if r["test_error"] is not None]
    if not rows:
        return f"No completed fine-tuning records under {results_dir}.\n"
    groups: dict[tuple, dict[str, list]] = {}
    sizes_seen = set()
    for r in rows:
        key = (r["family"], r["size"], r["n_train"], r["from_img_size"])
        g = groups.setdefault(key, {"same": [], "higher": [], "pre": [], "to": set()})
        if r["img_size"] == r["from_img_size"]:
            g["same"].append(r["test_error"])
        else:
            g["higher"].append(r["test_error"])
            g["to"].add(r["img_size"])
            sizes_seen.add(r["img_size"])
        if r["pretrain_error"] is not None:
            g["pre"].append(r["pretrain_error"])

    def mean(xs):
        return sum(xs) / len(xs) if xs else None

    def pct(x):
        return "–" if x is None else f"{100 * x:.2f}"

    to = "/".join(str(s) for s in sorted(sizes_seen)) or "higher"
    lines = [
        f"Test error (%) after the fine-tuning phase: continued at the pre-training resolution "
        f"vs fine-tuned at {to} px, the same steps and recipe; mean over seeds (n = runs per arm). "
        "Difference = fine-tuned − continued (negative: the higher resolution helps).",
        "",
        "| family | size | n_train | from px | pre-trained | continued (same px) | fine-tuned (higher px) | difference (pp) | n |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    order = {s: i for i, s in enumerate(SIZES)}

    def sort_key(k):
        fam, size, n, px = k
        return (str(fam), order.get(size, 99), float(n) if isinstance(n, (int, float)) else 1e18, px or 0)

    for key in sorted(groups, key=sort_key):
        fam, size, n, px = key
        g = groups[key]
        same, higher = mean(g["same"]), mean(g["higher"])
        diff = None if same is None or higher is None else higher - same
        label = f"{pct(higher)}" + (f" ({'/'.join(map(str, sorted(g['to'])))} px)" if len(sizes_seen) > 1 else "")
        diff_s = "–" if diff is None else f"{100 * diff:+.2f}"
        lines.append(f"| {fam} | {size} | {n} | {px} | {pct(mean(g['pre']))} | {pct(same)} | "
                     f"{label} | {diff_s} | {len(g['same'])}/{len(g['higher'])} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    from bench.config import Cell

    parser = argparse.ArgumentParser(prog="bench finetune", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     argument_default=argparse.SUPPRESS)
    parser.add_argument("run", metavar="RUN", nargs="?",
                        help="the trained ViT: run_id, record .json or checkpoint .ckpt")
    parser.add_argument("--img_size", "--img-size", dest="img_size", type=int,
                        help="the new resolution (patch size kept)")
    parser.add_argument("--report", metavar="RESULTS_DIR",
                        help="print the continued-vs-fine-tuned table of a study's records")
    parser.add_argument("--results_root", "--results-root", default="results",
                        help="where run_ids are looked up (default results)")
    defaults = {f.name: f for f in dataclasses.fields(Cell)}
    for name in RECIPE_FIELDS + RUNTIME_FIELDS:
        f = defaults[name]
        flags = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
        extra = dict(nargs="?", const="true") if str(f.type).startswith("bool") else {}
        parser.add_argument(*flags, dest=name, metavar=name.upper(),
                            help=f"{f.metadata['help']} (default: the parent's)", **extra)
    return parser


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    if "report" in args:
        path = Path(args["report"])
        if not path.exists():
            raise BenchError(f"{path} does not exist")
        print(finetune_report(path), end="")
        return 0
    if "run" not in args or "img_size" not in args:
        raise BenchError("give RUN and --img_size (or --report RESULTS_DIR)")
    overrides = {k: v for k, v in args.items() if k in RECIPE_FIELDS + RUNTIME_FIELDS}
    record = finetune_run(args["run"], args["img_size"], overrides, args.get("results_root", "results"))
    if record is None:
        return 0
    return {"completed": 0, "diverged": 0}.get(record["status"], 1)
