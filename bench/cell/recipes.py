"""Training recipes: named sets of defaults per family, which explicit cell fields override.

``basic`` is the project's first recipe (AdamW, random crop and flip, nothing else) for both
families, so every cell written before recipes existed keeps its run_id. ``strong`` is a
from-scratch CIFAR recipe per family: TrivialAugment, mixup and cutmix with soft targets, random
erasing for both; SGD with Nesterov momentum for ResNets, AdamW and drop-path for ViTs. Its
numbers are starting points that ``sweeps/cifar10-lr-wd.yaml`` and
``sweeps/cifar10-calibration.yaml`` check against published results.

Plain data and one function, no cell import: :mod:`bench.cell.config` resolves a cell's recipe
with it.
"""

from __future__ import annotations

from typing import Any

RECIPES = ("basic", "strong")
OPTIMIZERS = ("adamw", "sgd")
AUTO_AUGMENTS = ("none", "trivial", "rand")
# the cell fields a recipe gives defaults for (None in a cell: the recipe's value)
FIELDS = (
    "optimizer",
    "lr",
    "weight_decay",
    "auto_augment",
    "mixup",
    "cutmix",
    "erasing",
    "drop_path",
)

# peak learning rate and weight decay follow the optimizer unless given (values for batch 128)
OPTIMIZER_DEFAULTS = {
    "adamw": {"lr": 1e-3, "weight_decay": 0.05},
    "sgd": {"lr": 0.1, "weight_decay": 5e-4},
}
BASE_BATCH = 128
# In the strong recipe a defaulted lr follows the batch: linearly for SGD (Goyal et al. 2017,
# "Accurate, large minibatch SGD"), with its square root for AdamW (Malladi et al. 2022, "On the
# SDEs and scaling rules for adaptive gradient algorithms"). A small model's GPU step costs about
# as much at batch 512 as at 128 (host-bound), so the GPU sweeps run at 512. ``basic`` keeps a
# fixed lr: its cells predate the rule.
LR_BATCH_POWER = {"sgd": 1.0, "adamw": 0.5}
SGD_MOMENTUM = 0.9  # with Nesterov: the usual CIFAR ResNet optimizer

_OFF = {"auto_augment": "none", "mixup": 0.0, "cutmix": 0.0, "erasing": 0.0, "drop_path": 0.0}
_STRONG_DATA = {"auto_augment": "trivial", "mixup": 0.8, "cutmix": 1.0, "erasing": 0.25}
DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "basic": {
        "vit": {"optimizer": "adamw", **_OFF},
        "resnet": {"optimizer": "adamw", **_OFF},
    },
    "strong": {
        # DeiT-style regularisation for the ViT (drop-path 0.1 suits ~12 blocks or fewer)
        "vit": {"optimizer": "adamw", **_STRONG_DATA, "drop_path": 0.1},
        "resnet": {"optimizer": "sgd", **_STRONG_DATA, "drop_path": 0.0},
    },
}


def resolve(
    recipe: str,
    family: str,
    given: dict[str, Any],
    lr_scale: float = 1.0,
    wd_scale: float = 1.0,
    batch_size: int = BASE_BATCH,
) -> dict[str, Any]:
    """Every recipe field's value: the explicit ones in ``given`` (not None) win, then the
    recipe's per-family defaults; lr and weight decay default to the chosen optimizer's (the
    strong recipe's lr scaled from batch 128 to ``batch_size``), times ``lr_scale`` and
    ``wd_scale`` (one grid of multipliers tunes both families in one sweep)."""
    out = dict(DEFAULTS[recipe][family])
    out.update({k: v for k, v in given.items() if k in FIELDS and v is not None})
    for k, v in OPTIMIZER_DEFAULTS[out["optimizer"]].items():
        out.setdefault(k, v)
    if recipe != "basic" and given.get("lr") is None:
        out["lr"] *= (batch_size / BASE_BATCH) ** LR_BATCH_POWER[out["optimizer"]]
    out["lr"] *= lr_scale
    out["weight_decay"] *= wd_scale
    if out["optimizer"] == "sgd":
        out.update(momentum=SGD_MOMENTUM, nesterov=True)
    return {"name": recipe, **{k: out[k] for k in sorted(out)}}
