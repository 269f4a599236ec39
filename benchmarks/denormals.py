"""What denormal weights cost a CPU training step, and what flushing them to zero gives back.

A weight whose gradient has died shrinks under AdamW's weight decay by ``1 - lr * wd`` a step and
crosses the denormal range (below 1.2e-38) on its way to zero; at lr 0.3 and wd 0.05 that takes
a few thousand steps. ``bench run`` flushes denormals (:mod:`bench.cell.denormals`). This times,
side by side and alternating, a forward and backward pass (batch 128, fp32, the CPU studies'
16 px cells) of each rung four ways: clean weights and weights with a fraction set to 1e-39
(as a dead unit's are), each with flushing off and on:

    python benchmarks/denormals.py            # vit and resnet at xs, one thread

One thread, as each cell of the CPU studies runs: the flag is set on the calling thread, and
threads created earlier keep theirs (the module's docstring says why that matters).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F

from bench.cell.config import Cell
from bench.cell.models import build_model, resolve_arch

DENORMAL = 1e-39
# each way: (weights with denormals, flushing on)
WAYS = {
    "clean, kept": (False, False),
    "clean, flushed": (False, True),
    "denormal, kept": (True, False),
    "denormal, flushed": (True, True),
}


def with_denormals(model: torch.nn.Module, frac: float, seed: int) -> torch.nn.Module:
    """A copy with ``frac`` of every weight matrix and kernel's entries set to a denormal."""
    out = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in out.parameters():
            if p.dim() >= 2:
                p[torch.rand(p.shape, generator=g) < frac] = DENORMAL
    return out


def images_per_s(model, x, y, flush: bool, steps: int) -> float:
    torch.set_flush_denormal(flush)
    t0 = time.perf_counter()
    for _ in range(steps):
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
    rate = steps * len(x) / (time.perf_counter() - t0)
    torch.set_flush_denormal(False)
    return rate


def rung(family: str, size: str, args) -> dict[str, float]:
    torch.manual_seed(0)
    cell = Cell(family=family, size=size, img_size=16, patch_size=4)
    clean = build_model(resolve_arch(cell, 10))
    dirty = with_denormals(clean, args.frac, seed=1)
    x, y = torch.randn(args.batch, 3, 16, 16), torch.randint(0, 10, (args.batch,))
    ways = {k: (dirty if denormal else clean, flush) for k, (denormal, flush) in WAYS.items()}
    for model, flush in ways.values():  # warm-up: allocator, kernels picked
        images_per_s(model, x, y, flush, 2)
    times: dict[str, list[float]] = {k: [] for k in ways}
    for _ in range(args.repeats):  # alternate, so drift in load hits every way alike
        for k, (model, flush) in ways.items():
            steps = args.slow_steps if k == "denormal, kept" else args.steps
            times[k].append(images_per_s(model, x, y, flush, steps))
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rungs", default="resnet:xs,vit:xs")
    p.add_argument("--frac", type=float, default=0.5, help="fraction of weights made denormal")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=40, help="timed steps per repeat and way")
    p.add_argument("--slow_steps", type=int, default=4, help="the same for denormals kept")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(1)
    print(
        f"forward + backward, batch {args.batch}, fp32, 16 px, 1 thread; {args.frac:.0%} of the "
        f"weights denormal; median of {args.repeats} alternating repeats of {args.steps} steps "
        f"({args.slow_steps} with denormals kept)"
    )
    print(f"{'rung':<10}" + "".join(f"{w:>19}" for w in WAYS) + f"{'slowdown':>10}{'flushed':>9}")
    for spec in args.rungs.split(","):
        family, size = spec.split(":")
        r = rung(family, size, args)
        slowdown = r["clean, kept"] / r["denormal, kept"]
        recovered = r["denormal, flushed"] / r["clean, kept"]
        row = "".join(f"{r[w]:>13,.0f} img/s" for w in WAYS)
        print(f"{spec:<10}{row}{slowdown:>9.1f}x{recovered:>8.2f}x")
    print("slowdown: clean / denormal, both kept; flushed: denormal flushed / clean kept")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
