"""What the strong recipe's augmentation costs the host per training batch: operator calls, and
their time where dispatch is all there is.

On a GPU a small model's step is host-bound (benchmarks/README.md), and so is the augmentation:
every operator call is a kernel launch that the host pays for whatever the batch size. The
training loader therefore sends several batches through one call of the per-image policy
(``bench.cell.batches.transform_batches``). This compares, side by side in one process, the
loader's way (``transform_batches`` batches per call) with one call per batch:

- operator calls per training batch (crop and flip, the per-image policy, erasing and
  mixup/cutmix), counted by torch's profiler: the GPU's launches, exact on any machine;
- time per training batch on the device given (``--device cuda``: the real thing), or, on the
  CPU, with the GPU's code path (every op on the whole batch, no per-op split) on ``--img`` px
  images, so small that an op costs its dispatch, as a launch-bound GPU host's does.

    python benchmarks/augment_dispatch.py                      # CPU, batches 128 and 512
    python benchmarks/augment_dispatch.py --device cuda --img 32

Ends with ``min speed-up: X`` (per-batch time over the loader's, worst batch size).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from bench.cell.augment import BatchMix, ImagePolicy
from bench.cell.batches import DeviceBatches, transform_batches
from bench.cell.config import Cell

SEED = 0


def loader(x, y, batch: int, chunk: int, device) -> DeviceBatches:
    """The strong recipe's training batches: crop and flip, then TrivialAugment, ``chunk``
    batches per policy call, the GPU's code path wherever it runs."""
    policy = ImagePolicy("trivial", SEED, split=False)
    return DeviceBatches(
        x,
        y,
        batch,
        shuffle=True,
        augment_pad=4,
        seed=SEED,
        drop_last=True,
        transform=policy,
        transform_batches=chunk,
        device=device,
    )


def mixer() -> BatchMix:
    r = Cell(family="vit", recipe="strong").resolved_recipe
    return BatchMix(
        10, SEED, mixup=r["mixup"], cutmix=r["cutmix"], erasing=r["erasing"], label_smoothing=0.1
    )


def epoch(batches: DeviceBatches, mix: BatchMix, scale: float) -> int:
    """One pass, each batch normalised and mixed as the training step does; the batch count."""
    count = 0
    for xb, yb in batches:
        mix(xb.float() * scale, yb)
        count += 1
    return count


def ops_per_batch(batches: DeviceBatches, mix: BatchMix) -> float:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        count = epoch(batches, mix, 1 / 255)
    top = [
        e
        for e in prof.events()
        if e.name.startswith("aten::")
        and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::"))
    ]
    return len(top) / count


def ms_per_batch(batches: DeviceBatches, mix: BatchMix, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    count = epoch(batches, mix, 1 / 255)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1e3 / count


def compare(batch: int, args, device) -> tuple[int, float, float, float, float]:
    chunk = transform_batches(batch, 32)  # as a 32 px study's loader, whatever --img is
    n = batch * chunk * args.epoch_chunks
    g = torch.Generator().manual_seed(SEED)
    x = torch.randint(0, 256, (n, 3, args.img, args.img), dtype=torch.uint8, generator=g)
    x, y = x.to(device), torch.randint(0, 10, (n,), generator=g).to(device)
    ways = {"per batch": 1, "loader": chunk}
    ops = {k: ops_per_batch(loader(x, y, batch, c, device), mixer()) for k, c in ways.items()}
    times: dict[str, list[float]] = {k: [] for k in ways}
    for _ in range(args.warm):
        for c in ways.values():
            epoch(loader(x, y, batch, c, device), mixer(), 1 / 255)
    for _ in range(args.repeats):  # alternate, so drift in load hits both alike
        for k, c in ways.items():
            times[k].append(ms_per_batch(loader(x, y, batch, c, device), mixer(), device))
    med = {k: statistics.median(v) for k, v in times.items()}
    return chunk, ops["per batch"], ops["loader"], med["per batch"], med["loader"]


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--batches", default="128,512")
    p.add_argument("--img", type=int, default=4, help="image side in px for the timing")
    p.add_argument("--epoch_chunks", type=int, default=8, help="policy calls per timed pass")
    p.add_argument("--warm", type=int, default=2)
    p.add_argument("--repeats", type=int, default=15)
    args = p.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(1)  # one host thread drives a GPU; and less noise on a shared CPU
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu (1 thread)"
    print(
        f"device: {name} | {args.img} px | median of {args.repeats} alternating passes of "
        f"{args.epoch_chunks} policy calls each"
    )
    print(
        f"{'batch':>6}{'batches/call':>14}{'ops/batch 1':>13}{'ops/batch k':>13}"
        f"{'ms/batch 1':>12}{'ms/batch k':>12}{'speed-up':>10}"
    )
    gains = []
    for batch in (int(b) for b in args.batches.split(",")):
        chunk, ops1, opsk, t1, tk = compare(batch, args, device)
        gains.append(t1 / tk)
        print(
            f"{batch:>6}{chunk:>14}{ops1:>13.0f}{opsk:>13.0f}{t1:>12.2f}{tk:>12.2f}"
            f"{t1 / tk:>10.2f}",
            flush=True,
        )
    print(f"min speed-up: {min(gains):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
