"""What the strong recipe costs: training images/s with ``recipe=strong`` against ``basic``
(crop and flip), side by side in one process, through the project's own training path.

    python benchmarks/augment_cost.py                     # CPU: xxs rungs of both families
    python benchmarks/augment_cost.py --device cuda       # GPU: the calibration rungs

Each rung builds one model; copies of it train ``basic`` and ``strong`` alternately, ``repeats``
times, and the median images/s over the steps after the warm-up is compared. The strong recipe
differs in augmentation (TrivialAugment, random erasing, mixup/cutmix, soft-target loss) and,
as it would in a study, in its optimizer (SGD for ResNets) and drop-path (ViTs). A second table
times the augmentation alone (images/s of crop and flip and the two strong stages, batched as
training batches them). The goal on a GPU: strong >= 0.85x basic. Ends with ``min ratio: X``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
import warnings

import pytorch_lightning as pl
import torch

from bench.cell.batches import DeviceBatches, transform_batches
from bench.cell.budget import Budget
from bench.cell.config import Cell
from bench.cell.datasets import Splits, synthetic
from bench.cell.models import build_model, count_params, resolve_arch
from bench.cell.subsets import Subsets
from bench.cell.train import (
    CellSetup,
    batch_augment,
    build_loaders,
    build_module,
    build_trainer,
    image_policy,
)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Clock(pl.Callback):
    """Starts after the warm-up steps, stops when training ends."""

    def __init__(self, warm: int, device: torch.device):
        self.warm, self.device, self.t0, self.t1 = warm, device, None, None

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.warm and self.t0 is None:
            sync(self.device)
            self.t0 = time.perf_counter()

    def on_train_end(self, trainer, module):
        sync(self.device)
        self.t1 = time.perf_counter()


def train_rate(cell: Cell, model, splits: Splits, steps: int, warm: int, device) -> float:
    """Images/s of ``bench run``'s own path (module, on-device batches, trainer) for ``cell``."""
    n = len(splits.train_y)
    setup = CellSetup(
        cell=cell,
        splits=splits,
        subsets=Subsets(train_idx=torch.arange(n), val_idx=torch.arange(0)),
        arch=resolve_arch(cell, splits.num_classes),
        model=model,
        params=0,
        flops_per_image=0,
        budget=Budget(steps, cell.batch_size, n, f"steps={steps}"),
        device=device,
    )
    module = build_module(setup)
    train, _, _ = build_loaders(setup)
    clock = Clock(warm, device)
    trainer = build_trainer(setup, None, None, has_val=False, extra_callbacks=[clock])
    trainer.fit(module, train_dataloaders=train)
    return (steps - warm) * cell.batch_size / (clock.t1 - clock.t0)


def augment_rate(cell: Cell, splits: Splits, device, repeats: int = 4) -> float:
    """Images/s of the strong recipe's augmentation alone, as training makes it: crop and flip,
    the per-image policy on ``transform_batches`` batches at a time, erasing and mixup/cutmix."""
    mix = batch_augment(cell, splits.num_classes)
    x, y = splits.train_x.to(device), splits.train_y.to(device)
    pad, chunk = max(1, cell.img_size // 8), transform_batches(cell.batch_size, cell.img_size)
    loader = DeviceBatches(
        x,
        y,
        cell.batch_size,
        shuffle=True,
        augment_pad=pad,
        drop_last=True,
        transform=image_policy(cell),
        transform_batches=chunk,
    )
    images = 0
    for i in range(repeats + 1):  # the first pass warms up
        if i == 1:
            sync(device)
            t0 = time.perf_counter()
        for xb, yb in loader:
            mix(xb.float() / 255, yb)
            images += len(yb) if i else 0
    sync(device)
    return images / (time.perf_counter() - t0)


def bench_rung(family, size, device, args, splits) -> tuple[float, float, float, int]:
    def cell(recipe: str) -> Cell:
        return Cell(
            family=family,
            size=size,
            dataset="synthetic",
            recipe=recipe,
            batch_size=args.batch,
            steps=args.steps,
            progress=False,
            wandb="disabled",
            device=device.type,
        )

    basic, strong = cell("basic"), cell("strong")
    torch.manual_seed(0)
    init = build_model(resolve_arch(strong, splits.num_classes))  # drop-path is off in basic's
    basic_model = build_model(resolve_arch(basic, splits.num_classes))
    basic_model.load_state_dict(init.state_dict())
    rates: dict[str, list[float]] = {"basic": [], "strong": []}
    for _ in range(args.repeats):  # alternate, so drift in load hits both alike
        for name, c, model in (("basic", basic, basic_model), ("strong", strong, init)):
            rate = train_rate(c, copy.deepcopy(model), splits, args.steps, args.warm, device)
            rates[name].append(rate)
    aug = augment_rate(strong, splits, device)
    return (
        statistics.median(rates["basic"]),
        statistics.median(rates["strong"]),
        aug,
        count_params(init),
    )


def main() -> int:
    warnings.filterwarnings("ignore", message=".*val_dataloader.*")
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--rungs", default=None, help="family:size,... (default per device)")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--steps", type=int, default=None, help="steps per run, warm-up included")
    p.add_argument("--warm", type=int, default=None)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    rungs = args.rungs or ("resnet:s,resnet:m,vit:s,vit:m" if gpu else "resnet:xxs,vit:xxs")
    args.batch = args.batch or (128 if gpu else 64)
    args.steps = args.steps or (300 if gpu else 30)
    args.warm = args.warm or (50 if gpu else 6)
    splits = synthetic(32, n_train=max(4000, args.batch * 8), n_test=10)
    name = torch.cuda.get_device_name() if gpu else f"cpu ({torch.get_num_threads()} threads)"
    print(
        f"device: {name} | batch {args.batch} | {args.steps - args.warm} timed steps after "
        f"{args.warm} warm-up | median of {args.repeats} alternating repeats",
        flush=True,
    )
    print(
        f"{'family':<8}{'size':<6}{'params':>9}{'basic img/s':>13}{'strong img/s':>14}"
        f"{'ratio':>8}{'augment alone img/s':>21}"
    )
    ratios = []
    for rung in rungs.split(","):
        family, size = rung.split(":")
        basic, strong, aug, params = bench_rung(family, size, device, args, splits)
        ratios.append(strong / basic)
        print(
            f"{family:<8}{size:<6}{params / 1e6:>8.2f}M{basic:>13,.0f}{strong:>14,.0f}"
            f"{strong / basic:>8.2f}{aug:>21,.0f}",
            flush=True,
        )
    print(f"min ratio: {min(ratios):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
