"""Host time per training step that gradient clipping spends finding the parameters.

``CellModule`` clips the gradient norm before every optimizer step. Given ``module.parameters()``
the clip walks the whole module tree at every step; given a list made once it does not. On a GPU
a small model's step is host-bound (benchmarks/README.md), so that walk is paid in full there.
This times, side by side and alternating, the clip both ways on each rung (gradients set, the
clip itself as the training step calls it), and the walk alone:

    python benchmarks/clip_overhead.py              # CPU, vit and resnet at xs, s and m

The difference is host work (Python and the module tree), so the CPU shows what a GPU's host
saves; the clip's own arithmetic is the same both ways.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from bench.cell.config import Cell
from bench.cell.models import build_model, count_params, resolve_arch


def per_call_us(fn, calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) * 1e6 / calls


def rung(family: str, size: str, args) -> tuple[int, int, float, float, float]:
    model = build_model(resolve_arch(Cell(family=family, size=size), 10))
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3  # small: the clip scales nothing, as most steps
    cached = [p for p in model.parameters() if p.requires_grad]
    ways = {
        "walk": lambda: torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True),
        "cached": lambda: torch.nn.utils.clip_grad_norm_(cached, 1.0, foreach=True),
        "walk alone": lambda: [p for p in model.parameters() if p.requires_grad],
    }
    times: dict[str, list[float]] = {k: [] for k in ways}
    for _ in range(args.repeats):  # alternate, so drift in load hits every way alike
        for k, fn in ways.items():
            times[k].append(per_call_us(fn, args.calls))
    med = {k: statistics.median(v) for k, v in times.items()}
    return count_params(model), len(cached), med["walk"], med["cached"], med["walk alone"]


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rungs", default="vit:xs,vit:s,vit:m,resnet:xs,resnet:s,resnet:m")
    p.add_argument("--calls", type=int, default=300)
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    torch.set_num_threads(1)  # one host thread drives a GPU
    print(f"cpu (1 thread) | median of {args.repeats} alternating repeats of {args.calls} calls")
    print(
        f"{'family':<8}{'size':<6}{'params':>9}{'tensors':>9}{'clip, walk us':>15}"
        f"{'clip, list us':>15}{'saved us':>10}{'walk alone us':>15}"
    )
    for item in args.rungs.split(","):
        family, size = item.split(":")
        n, tensors, walk, cached, alone = rung(family, size, args)
        print(
            f"{family:<8}{size:<6}{n / 1e6:>8.2f}M{tensors:>9}{walk:>15.0f}{cached:>15.0f}"
            f"{walk - cached:>10.0f}{alone:>15.0f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
