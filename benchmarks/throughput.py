"""Training throughput: the project's own path (Lightning) against a plain PyTorch loop.

Both train the same model from the same initial weights, with the same batch, precision,
optimizer, schedule, gradient clipping and on-device augmented batches; only the loop differs.
Each rung of both families is timed side by side in one process, alternating the two loops.

    python benchmarks/throughput.py [--device=cpu|cuda] [--quick]
    python benchmarks/throughput.py --long --extra=vit-s16-224   # >= 300 timed steps, 3 repeats
    python benchmarks/throughput.py --compile_mode=reduce-overhead --sizes=xs,s

``--compile_mode`` compiles the model of both loops as ``bench run --compile_mode`` does, and
times the project's eager path in the same alternation: the row adds its images/s and the
speedup compilation gives (a small model's GPU step is bound by kernel launches, which CUDA
graphs, ``reduce-overhead``, replay as one). The warm-up steps include the compilation.

``--extra vit-s16-224`` adds ViT-S/16 at 224 px (384 wide, 12 deep, 6 heads), the model of the
MFU goal; every row prints achieved TFLOP/s (3x measured forward FLOPs per image) and, on a
card whose bf16 peak is known, the share of it (MFU).

Ends with ``min ratio: X`` (project images/s over plain-loop images/s, worst rung).
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
import torch.nn.functional as F

from bench.cell.batches import DeviceBatches, channel_stats
from bench.cell.budget import Budget
from bench.cell.compiled import compile_model
from bench.cell.config import Cell
from bench.cell.datasets import Splits, synthetic
from bench.cell.models import build_model, count_params, forward_flops, resolve_arch
from bench.cell.module import param_groups, warmup_cosine
from bench.cell.subsets import Subsets
from bench.cell.train import CellSetup, build_module, build_trainer


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def plain_loop(
    model, batches: DeviceBatches, steps: int, warm: int, cell: Cell, device, bf16: bool
):
    """The reference: nanoGPT-style loop with the same recipe as CellModule."""
    model = model.to(device).train()
    channels_last = device.type == "cuda" and cell.family == "resnet"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]  # as the project clips them
    mean, std = channel_stats(batches.x)
    scale = (1 / (255 * std)).view(1, 3, 1, 1)
    shift = (mean / std).view(1, 3, 1, 1)
    recipe = cell.resolved_recipe  # the basic recipe: AdamW, crop and flip
    opt = torch.optim.AdamW(
        param_groups(model, recipe["weight_decay"]), lr=recipe["lr"], fused=device.type == "cuda"
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(steps, int(cell.warmup * steps)))
    if cell.compile_mode:  # after the optimizer, which takes the uncompiled module's parameters
        model = compile_model(model, cell.compile_mode, cell.cache_dir)
    step, t0 = 0, None
    while step < steps:
        for x, y in batches:
            if step == warm:
                sync(device)
                t0 = time.perf_counter()
            x = x.float() * scale - shift
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(model(x), y, label_smoothing=cell.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cell.grad_clip)
            opt.step()
            sched.step()
            step += 1
            if step == steps:
                break
    sync(device)
    return (steps - warm) * batches.batch_size / (time.perf_counter() - t0)


class Clock(pl.Callback):
    """A Lightning callback that starts the clock after the warm-up steps."""

    def __init__(self, warm: int, device: torch.device):
        self.warm, self.device = warm, device
        self.t0 = self.t1 = None

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.warm and self.t0 is None:
            sync(self.device)
            self.t0 = time.perf_counter()

    def on_train_end(self, trainer, module):
        sync(self.device)
        self.t1 = time.perf_counter()


def project_loop(
    model, splits: Splits, batches: DeviceBatches, steps: int, warm: int, cell: Cell, device
):
    arch = resolve_arch(cell, splits.num_classes)
    subsets = Subsets(train_idx=torch.arange(len(batches.y)), val_idx=torch.arange(0))
    setup = CellSetup(
        cell=cell,
        splits=splits,
        subsets=subsets,
        arch=arch,
        model=model,
        params=0,
        flops_per_image=0,
        budget=Budget(steps, batches.batch_size, len(batches.y), f"steps={steps}"),
        device=device,
    )
    module = build_module(setup)  # compiled as in bench run when the cell says so
    clock = Clock(warm, device)
    trainer = build_trainer(setup, None, None, has_val=False, extra_callbacks=[clock])
    trainer.fit(module, train_dataloaders=batches)
    return (steps - warm) * batches.batch_size / (clock.t1 - clock.t0)


# explicit architectures beyond the ladder (cell fields), by name
EXTRA = {
    "vit-s16-224": dict(
        family="vit", size="s", embed_dim=384, depth=12, num_heads=6, patch_size=16, img_size=224
    ),
}
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense, spec sheets


def bench_rung(
    family: str,
    size: str,
    device: torch.device,
    steps: int,
    warm: int,
    batch: int,
    repeats: int,
    splits: Splits,
    fields: dict | None = None,
    compile_mode: str | None = None,
) -> tuple[float, float, float | None, int, int]:
    """Median images/s of the project path and the plain loop (compiled when ``compile_mode``
    is set), the project's eager path when compiled (else None), parameters, forward FLOPs."""
    fields = dict(fields or {}, family=family, size=size)
    cell = Cell(
        **fields,
        dataset="synthetic",
        batch_size=batch,
        steps=steps,
        progress=False,
        wandb="disabled",
        device=device.type,
        compile_mode=compile_mode,
    )
    arch = resolve_arch(cell, splits.num_classes)
    torch.manual_seed(0)
    init = build_model(arch)
    x, y = splits.train_x.to(device), splits.train_y.to(device)
    bf16 = device.type == "cuda"

    def batches():
        return DeviceBatches(x, y, batch, shuffle=True, augment_pad=4, seed=0, drop_last=True)

    ours, plain, eager = [], [], []
    for _ in range(repeats):  # alternate, so drift in clocks or load hits every loop alike
        plain.append(plain_loop(copy.deepcopy(init), batches(), steps, warm, cell, device, bf16))
        ours.append(project_loop(copy.deepcopy(init), splits, batches(), steps, warm, cell, device))
        if compile_mode:
            uncompiled = cell.replace(compile_mode=None)
            eager.append(
                project_loop(
                    copy.deepcopy(init), splits, batches(), steps, warm, uncompiled, device
                )
            )
    flops = forward_flops(init, arch.img_size)
    median = statistics.median
    return median(ours), median(plain), median(eager) if eager else None, count_params(init), flops


def main() -> int:
    warnings.filterwarnings("ignore", message=".*val_dataloader.*")
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="fewer rungs and steps")
    p.add_argument(
        "--sizes", default=None, help="comma-separated rungs (default: all, quick: xxs,xs,s)"
    )
    p.add_argument("--families", default="vit,resnet", help="comma-separated families")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument(
        "--repeats", type=int, default=None, help="alternating repeats (default 2, long 3)"
    )
    p.add_argument("--steps", type=int, default=None, help="timed steps per repeat")
    p.add_argument("--warm", type=int, default=None, help="untimed warm-up steps per repeat")
    p.add_argument("--long", action="store_true", help="300 timed steps, 3 repeats")
    p.add_argument("--extra", default="", help=f"extra architectures: {', '.join(EXTRA)}")
    p.add_argument(
        "--compile_mode",
        default=None,
        choices=["default", "reduce-overhead", "max-autotune"],
        help="compile both loops' model; adds the project's eager images/s and the speedup",
    )
    args = p.parse_args()
    repeats = args.repeats or (3 if args.long else 2)
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    sizes = (
        args.sizes.split(",")
        if args.sizes
        else (["xxs", "xs", "s"] if args.quick else ["xxs", "xs", "s", "m", "l"])
    )
    steps, warm = (60, 20) if gpu else ((12, 4) if args.quick else (30, 6))
    if args.long:
        steps, warm = 300 + (20 if gpu else 4), 20 if gpu else 4
    warm = args.warm if args.warm is not None else warm
    steps = warm + args.steps if args.steps else steps
    batch = args.batch or (256 if gpu else 64)
    splits = synthetic(32, n_train=max(4000, batch * 8), n_test=10)
    name = torch.cuda.get_device_name() if gpu else f"cpu ({torch.get_num_threads()} threads)"
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None) if gpu else None
    rows = [(f, s, {}) for f in args.families.split(",") for s in sizes]
    rows += [(EXTRA[e]["family"], e, EXTRA[e]) for e in args.extra.split(",") if e]
    compiled = args.compile_mode
    print(
        f"device: {name} | batch {batch} | {steps - warm} timed steps after {warm} warm-up | "
        f"{'bf16 autocast' if gpu else 'fp32'} | {repeats} alternating repeats, median"
        + (f" | both loops compiled ({compiled}), project eager beside them" if compiled else ""),
        flush=True,
    )
    eager_head = f"{'eager img/s':>13}{'speedup':>9}" if compiled else ""
    print(
        f"{'family':<8}{'size':<12}{'params':>9}{'project img/s':>15}{'plain img/s':>13}{'ratio':>8}"
        f"{eager_head}{'TFLOP/s':>9}{'MFU':>7}"
    )
    ratios = []
    for family, size, fields in rows:
        data = splits
        if fields.get("img_size", 32) != 32:
            data = synthetic(fields["img_size"], n_train=batch * 8, n_test=10)
        rung = size if not fields else fields["size"]
        ours, plain, eager, params, flops = bench_rung(
            family, rung, device, steps, warm, batch, repeats, data, fields, compiled
        )
        ratios.append(ours / plain)
        tflops = 3 * flops * ours / 1e12
        mfu = f"{100 * tflops / peak:6.1f}%" if peak else "    n/a"
        eager_cols = f"{eager:>13,.0f}{ours / eager:>8.2f}x" if eager else ""
        print(
            f"{family:<8}{size:<12}{params / 1e6:>8.2f}M{ours:>15,.0f}{plain:>13,.0f}"
            f"{ours / plain:>8.2f}{eager_cols}{tflops:>9.2f}{mfu}",
            flush=True,
        )
    print(f"min ratio: {min(ratios):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
