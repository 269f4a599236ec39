"""The cell: one fully specified experiment, validated before anything trains.

A cell is plain data. Its *identity* fields (what was trained, on what, how) hash to a stable
``run_id``; its *runtime* fields (where files go, W&B mode, device) do not, so the same cell run on
another machine or into another folder is the same cell.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import sys
from dataclasses import dataclass, field, fields
from typing import Any

from bench.cell import recipes
from bench.cell.config_file import read_config_file
from bench.errors import ArgumentParser, BenchError
from bench.results.layout import StudyDir

FAMILIES = ("vit", "resnet")
SIZES = ("xxs", "xs", "s", "m", "l")
DATASETS = ("synthetic", "digits", "cifar10", "cifar100", "imagefolder", "hf")
DATA_IN_MEMORY = ("auto", "always", "never")
POOLS = ("cls", "mean")
POS_EMBEDS = ("learned", "sincos")
WANDB_MODES = ("auto", "online", "offline", "disabled")
LOG_MODELS = ("off", "best")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
RESNET_DEPTHS = (10, 18, 34)
DEFAULT_EPOCHS = 30


def _f(default: Any, help: str, *, runtime: bool = False, choices=None, since: int = 1):
    """A cell field. ``since=2``: added after the first studies were run, so it is left out of the
    identity while it holds its default, and every earlier run_id stays what it was."""
    meta = {"help": help, "runtime": runtime, "choices": choices, "since": since}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Cell:
    # --- what is trained ---
    study: str = _f("default", "study name: records go to results/<study>/runs", runtime=True)
    family: str = _f("vit", "model family", choices=FAMILIES)
    size: str = _f("s", "rung of the size ladder (see `bench models`)", choices=SIZES)
    dataset: str = _f("digits", "dataset", choices=DATASETS)
    n_train: int | str = _f(
        "all", "training images: an integer (class-balanced, nested subsets) or 'all'"
    )
    seed: int = _f(0, "seed of the subset, the initialisation and the data order")
    img_size: int = _f(32, "image side in pixels (images are resized to it)")
    # --- architecture overrides (None: the rung's value) ---
    patch_size: int | None = _f(None, "ViT patch size (default img_size/8)")
    embed_dim: int | None = _f(None, "ViT width (overrides the rung)")
    depth: int | None = _f(None, "ViT blocks, or ResNet depth 10/18/34 (overrides the rung)")
    num_heads: int | None = _f(None, "ViT attention heads (overrides the rung)")
    width: int | None = _f(None, "ResNet channels of the first stage (overrides the rung)")
    pool: str = _f(
        "cls", "ViT head input: the class token or mean-pooled patch tokens", choices=POOLS
    )
    pos_embed: str = _f(
        "learned", "ViT position embeddings: learned or fixed 2-D sin-cos", choices=POS_EMBEDS
    )
    permute_patches: int | None = _f(
        None,
        "positive control: shuffle every image's BLOCK x BLOCK-pixel tiles by one fixed, seeded "
        "permutation, after augmentation, train and test alike (breaks a CNN's locality prior)",
        since=2,
    )
    permute_pixels: bool = _f(
        False,
        "with permute_patches: also shuffle the pixels inside every tile by one fixed permutation "
        "shared by all tiles (a ViT with patches of the tile size stays blind to it; a CNN loses "
        "locality inside tiles too)",
        since=2,
    )
    hf_image_column: str = _f("image", "dataset=hf: the column holding the images", since=2)
    hf_label_column: str = _f("label", "dataset=hf: the column holding the labels", since=2)
    # --- recipe ---
    epochs: float | None = _f(
        None, "budget in passes over n_train (default 30 when no budget is set)"
    )
    steps: int | None = _f(None, "budget in optimizer steps")
    examples: int | None = _f(None, "budget in training images seen")
    min_examples: int | None = _f(
        None,
        "with an epochs budget: at least this many images seen (small n train longer)",
        since=2,
    )
    max_examples: int | None = _f(
        None, "with an epochs budget: at most this many images seen (caps the largest n)", since=2
    )
    budget_scale: float = _f(
        1.0, "multiplies the resolved budget (2: the convergence control of a study)", since=2
    )
    batch_size: int = _f(128, "images per step")
    # lr and weight_decay: None = the optimizer's default (identity holds the resolved value)
    lr: float | None = _f(None, "peak learning rate (default: AdamW 1e-3, SGD 0.1)")
    weight_decay: float | None = _f(
        None, "weight decay, not on norms, biases, embeddings (default: AdamW 0.05, SGD 5e-4)"
    )
    recipe: str = _f(
        "basic",
        "defaults for the fields below: basic = AdamW, crop+flip; strong = per family (README)",
        choices=recipes.RECIPES,
        since=2,
    )
    optimizer: str | None = _f(
        None,
        "sgd: Nesterov, momentum 0.9 (default: the recipe's)",
        choices=recipes.OPTIMIZERS,
        since=2,
    )
    auto_augment: str | None = _f(
        None,
        "per-image policy on the device: TrivialAugment, RandAugment (2 ops, magnitude 9)",
        choices=recipes.AUTO_AUGMENTS,
        since=2,
    )
    lr_scale: float = _f(1.0, "multiplies the lr (tunes both families in one sweep)", since=2)
    wd_scale: float = _f(1.0, "multiplies the weight decay", since=2)
    mixup: float | None = _f(None, "mixup alpha (0: off; default: the recipe's)", since=2)
    cutmix: float | None = _f(None, "cutmix alpha (0: off; default: the recipe's)", since=2)
    erasing: float | None = _f(None, "random-erasing probability (default: the recipe's)", since=2)
    drop_path: float | None = _f(None, "stochastic depth rate (default: the recipe's)", since=2)
    warmup: float = _f(0.05, "share of the steps spent in linear warm-up before cosine decay")
    label_smoothing: float = _f(0.1, "label smoothing of the cross-entropy")
    grad_clip: float = _f(1.0, "gradient norm clip (0: off)")
    augment: bool = _f(True, "random crop (padding img_size/8) and horizontal flip, on the device")
    val_size: int | None = _f(
        None, "validation images held out of the training split (default 10%, at most 5000)"
    )
    evals: int = _f(10, "validation passes over the run (the best one picks the test checkpoint)")
    finetune_img_size: int | None = _f(None, "after training, fine-tune at this resolution (ViT)")
    finetune_steps: int | None = _f(
        None, "fine-tuning steps (default: a fifth of the training steps)"
    )
    parent: str | None = _f(None, "run_id of the run this cell starts from (set by bench finetune)")
    # --- runtime: where and how, not what ---
    data_dir: str | None = _f(
        None,
        "dataset folder (imagefolder: train/ and test/ or val/; hf: save_to_disk, parquet/arrow "
        "files or an image folder)",
        runtime=True,
    )
    cache_dir: str | None = _f(None, "decoded-image cache (default ~/.cache/bench)", runtime=True)
    data_in_memory: str = _f(
        "auto",
        "training data on the device whole (always), streamed from the memory-mapped cache "
        "(never), or whole when it fits in data_budget_mb (auto)",
        runtime=True,
        choices=DATA_IN_MEMORY,
    )
    data_budget_mb: float | None = _f(
        None,
        "data_in_memory=auto: the budget (default: half of free RAM or GPU memory)",
        runtime=True,
    )
    results_dir: str | None = _f(None, "record folder (default results/<study>/runs)", runtime=True)
    wandb: str = _f(
        "auto",
        "W&B mode; auto = online with credentials, else offline",
        runtime=True,
        choices=WANDB_MODES,
    )
    wandb_project: str = _f("bench", "W&B project", runtime=True)
    wandb_entity: str | None = _f(None, "W&B entity", runtime=True)
    log_model: str = _f(
        "off",
        "best: the tested checkpoint and the record as a W&B model artifact of the run",
        runtime=True,
        choices=LOG_MODELS,
    )
    device: str = _f("auto", "training device", runtime=True, choices=DEVICES)
    precision: str = _f(
        "auto", "auto = bf16 autocast on GPU, fp32 on CPU", runtime=True, choices=PRECISIONS
    )
    compile: bool = _f(False, "torch.compile the model", runtime=True)
    compile_mode: str | None = _f(
        None,
        "torch.compile mode (compiled graphs cached in cache_dir/inductor across cells)",
        runtime=True,
        choices=COMPILE_MODES,
    )
    checkpoint_every_s: float = _f(
        60.0,
        "write the resumable checkpoint at a validation only once this many seconds have passed "
        "since the last one (0: at every validation); always at the end",
        runtime=True,
    )
    force: bool = _f(False, "retrain even if the record says the cell is done", runtime=True)
    progress: bool = _f(True, "print progress lines (images/s, ETA)", runtime=True)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Cell:
        """Build and validate a cell from strings (as a W&B agent renders them) or typed values."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise BenchError(f"unknown field {unknown[0]!r} (see `bench run --help`)")
        parsed = {k: _parse(known[k], v) for k, v in values.items()}
        cell = cls(**parsed)
        cell.validate()
        return cell

    def replace(self, **changes: Any) -> Cell:
        cell = dataclasses.replace(self, **changes)
        cell.validate()
        return cell

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def identity(self) -> dict[str, Any]:
        """The fields that define the experiment, with derived defaults resolved."""
        d = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if not f.metadata["runtime"]
            and (f.metadata["since"] == 1 or getattr(self, f.name) != f.default)
        }
        d["patch_size"] = self.resolved_patch_size
        r = self.resolved_recipe
        d.update(lr=r["lr"], weight_decay=r["weight_decay"])  # basic: the old defaults, old run_ids
        if self.recipe != "basic":  # a changed recipe default is a new experiment
            d["resolved_recipe"] = r
        return d

    @property
    def resolved_recipe(self) -> dict[str, Any]:
        """The recipe's name and every recipe field's value for this cell (explicit ones win)."""
        given = {k: getattr(self, k) for k in recipes.FIELDS}
        return recipes.resolve(
            self.recipe, self.family, given, self.lr_scale, self.wd_scale, self.batch_size
        )

    # ------------------------------------------------------------------ derived
    @property
    def resolved_patch_size(self) -> int | None:
        if self.family != "vit":
            return None
        return self.patch_size or max(1, self.img_size // 8)

    @property
    def name(self) -> str:
        """Human-readable run name, e.g. ``vit-s-n2000-s0``."""
        return f"{self.family}-{self.size}-n{self.n_train}-s{self.seed}"

    @property
    def run_id(self) -> str:
        canon = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return f"{self.name}-{hashlib.sha256(canon.encode()).hexdigest()[:8]}"

    @property
    def folder(self) -> StudyDir:
        """The study folder: ``results/<study>``, or the parent of ``results_dir`` when given."""
        return (
            StudyDir.of_records(self.results_dir)
            if self.results_dir
            else StudyDir.of_study(self.study)
        )

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Everything that can be checked without data. Each message names the field."""
        self._validate_values()
        _positive(self, "img_size", "batch_size", "evals")
        self._validate_recipe()
        _positive(
            self,
            "epochs",
            "steps",
            "examples",
            "patch_size",
            "embed_dim",
            "depth",
            "num_heads",
            "width",
            "finetune_img_size",
            "finetune_steps",
            "min_examples",
            "max_examples",
            "permute_patches",
            optional=True,
        )
        _positive(self, "budget_scale")
        _positive(self, "data_budget_mb", optional=True)
        _nonneg(self, "label_smoothing", "grad_clip", "seed", "checkpoint_every_s")
        if not 0 <= self.warmup < 1:
            raise BenchError(f"warmup={self.warmup} must be a share of the steps in [0, 1)")
        if self.label_smoothing >= 1:
            raise BenchError(f"label_smoothing={self.label_smoothing} must be below 1")
        if self.val_size is not None and self.val_size < 0:
            raise BenchError(f"val_size={self.val_size} must be >= 0")
        self._validate_budget()
        if isinstance(self.n_train, str) and self.n_train != "all":
            raise BenchError(f"n_train={self.n_train!r} must be a positive integer or 'all'")
        if isinstance(self.n_train, int) and self.n_train <= 0:
            raise BenchError(f"n_train={self.n_train} must be a positive integer or 'all'")
        self._validate_architecture()
        if self.dataset in ("imagefolder", "hf") and not self.data_dir:
            raise BenchError(f"data_dir is required for dataset={self.dataset}")
        self._validate_permutation()

    def _validate_values(self) -> None:
        """Every number finite, every field with choices one of them."""
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):  # nan passes every <= test
                raise BenchError(f"{f.name}={value} must be a finite number")
            choices = f.metadata["choices"]
            if choices and value is not None and value not in choices:
                raise BenchError(f"{f.name}={value!r} is not one of: {', '.join(choices)}")

    def _validate_architecture(self) -> None:
        if self.family == "vit":
            p = self.resolved_patch_size
            for side_name in ("img_size", "finetune_img_size"):
                side = getattr(self, side_name)
                if side is not None and side % p:
                    raise BenchError(
                        f"patch_size={p} does not divide {side_name}={side}: choose a divisor of {side}"
                    )
        if self.family == "resnet" and self.depth is not None and self.depth not in RESNET_DEPTHS:
            raise BenchError(f"depth={self.depth} for resnet must be one of {RESNET_DEPTHS}")
        if self.finetune_img_size is not None and self.family != "vit":
            raise BenchError("finetune_img_size applies to family=vit only")

    def _validate_permutation(self) -> None:
        if self.permute_patches is not None:
            if self.img_size % self.permute_patches:
                raise BenchError(
                    f"permute_patches={self.permute_patches} does not divide img_size={self.img_size}"
                )
            if self.finetune_img_size is not None:
                raise BenchError("permute_patches cannot be combined with finetune_img_size")
        elif self.permute_pixels:
            raise BenchError("permute_pixels needs permute_patches (the tile size)")

    def _validate_recipe(self) -> None:
        _positive(self, "lr", optional=True)
        _positive(self, "lr_scale", "wd_scale")
        _nonneg(self, "weight_decay", "mixup", "cutmix", "erasing", "drop_path")
        for name in ("erasing", "drop_path"):
            if (getattr(self, name) or 0) >= 1:
                raise BenchError(f"{name}={getattr(self, name)} must be below 1")

    def _validate_budget(self) -> None:
        budgets = [k for k in ("epochs", "steps", "examples") if getattr(self, k) is not None]
        if len(budgets) > 1:
            raise BenchError(f"give one budget, not {' and '.join(budgets)}")
        bounds = [k for k in ("min_examples", "max_examples") if getattr(self, k) is not None]
        if bounds and budgets and budgets[0] != "epochs":
            raise BenchError(f"{bounds[0]} bounds an epochs budget, not {budgets[0]}")
        lo, hi = self.min_examples, self.max_examples
        if lo is not None and hi is not None and lo > hi:
            raise BenchError(f"min_examples={lo} is above max_examples={hi}")

    def budget_kind(self) -> tuple[str, float]:
        """(steps | examples | epochs, its value); 30 epochs when no budget is given."""
        for k in ("steps", "examples", "epochs"):
            if getattr(self, k) is not None:
                return k, getattr(self, k)
        return "epochs", DEFAULT_EPOCHS


# ---------------------------------------------------------------------- parsing
_NONE = {"none", "null", ""}
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _parse(f: dataclasses.Field, value: Any) -> Any:
    """Turn one value (often a string rendered by a W&B agent) into the field's type."""
    kind = str(f.type)
    optional = "None" in kind
    if isinstance(value, str) and value.strip().lower() in _NONE and optional:
        return None
    if value is None:
        if optional:
            return None
        raise BenchError(f"{f.name} cannot be empty")
    try:
        if f.name == "n_train":
            if isinstance(value, str) and value.strip().lower() == "all":
                return "all"
            return _to_int(value)
        if kind.startswith("bool"):
            if isinstance(value, bool):
                return value
            s = str(value).strip().lower()
            if s in _TRUE | _FALSE:
                return s in _TRUE
            raise ValueError
        if kind.startswith("int"):
            return _to_int(value)
        if kind.startswith("float"):
            return float(value)
        return str(value)
    except (TypeError, ValueError, OverflowError):
        expected = (
            "'all' or an integer" if f.name == "n_train" else kind.replace(" | None", " or None")
        )
        raise BenchError(f"{f.name}={value!r} is not a valid {expected}") from None


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, float) or (
        isinstance(value, str) and ("e" in value.lower() or "." in value)
    ):
        x = float(value)
        if x != int(x):
            raise ValueError
        return int(x)
    return int(value)


def _positive(cell: Cell, *names: str, optional: bool = False) -> None:
    for n in names:
        v = getattr(cell, n)
        if v is None and optional:
            continue
        if v is None or v <= 0:
            raise BenchError(f"{n}={v} must be positive")


def _nonneg(cell: Cell, *names: str) -> None:
    for n in names:
        if getattr(cell, n) is not None and getattr(cell, n) < 0:
            raise BenchError(f"{n}={getattr(cell, n)} must be >= 0")


def build_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """An argparse parser with one ``--field``/``--field-name`` option per cell field."""
    parser = ArgumentParser(
        prog=prog,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument(
        "--config",
        metavar="FILE.yaml",
        help="base values for any field, plain or a W&B run's config.yaml (CLI wins)",
    )
    cell_group = parser.add_argument_group("cell fields (identity of the experiment)")
    run_group = parser.add_argument_group("runtime fields (not part of the run_id)")
    for f in fields(Cell):
        group = run_group if f.metadata["runtime"] else cell_group
        flags = [f"--{f.name}"] + ([f"--{f.name.replace('_', '-')}"] if "_" in f.name else [])
        choices = f" {{{','.join(f.metadata['choices'])}}}" if f.metadata["choices"] else ""
        help_text = f"{f.metadata['help']}{choices} (default: {f.default})".replace("%", "%%")
        if f.type.startswith("bool"):
            group.add_argument(
                *flags, dest=f.name, nargs="?", const="true", metavar="BOOL", help=help_text
            )
        else:
            group.add_argument(*flags, dest=f.name, metavar=f.name.upper(), help=help_text)
    return parser


def parse_cell_args(
    argv: list[str], parser: argparse.ArgumentParser
) -> tuple[Cell, argparse.Namespace]:
    """Defaults, then ``--config`` YAML, then the command line; unknown flags are errors."""
    ns, extra = parser.parse_known_args(argv)
    if extra:
        raise BenchError(f"unknown argument {extra[0]!r} (see --help)")
    values: dict[str, Any] = {}
    cell_names = {f.name for f in fields(Cell)}
    ran_as = None
    if getattr(ns, "config", None):  # a plain YAML or a W&B run's config.yaml
        file_values, ran_as = read_config_file(ns.config, cell_names)
        values.update(file_values)
    values.update({k: v for k, v in vars(ns).items() if k in cell_names})
    cell = Cell.from_dict(values)
    if ran_as and ran_as != cell.run_id:
        print(f"note: {ns.config} was run as {ran_as}; this cell is {cell.run_id}", file=sys.stderr)
    return cell, ns
