"""A CPU cell's training speed when another process keeps one core busy, by thread setting.

torch gives a process one intra-op thread per core. When a second job (another study's cell)
holds one of the cores, the pool's threads share it and each parallel op waits for the slowest.
This times a training step (forward, backward, AdamW; batch 128, fp32, the CPU studies' 16 px
rungs) in a fresh process per measurement, four ways, with all the cores free and with a
one-thread ResNet xs training loop running beside it as the other job:

- ``torch default``: one thread per core, libgomp's default (spinning) wait policy;
- ``passive wait``: the same threads with ``OMP_WAIT_POLICY=PASSIVE`` (idle threads sleep);
- ``1 thread``;
- ``bench``: what a cell of ``bench grid`` gets: the launcher's environment
  (:func:`bench.study.runner.child_env`) and the pool ``bench run`` picks
  (:mod:`bench.cell.threads`: the cores free at its start).

The ways alternate within each repeat, so drift in the machine's speed hits them alike; each
figure is the median over repeats. Ratios are against ``torch default`` in the same condition.

    python benchmarks/cpu_contention.py                 # vit:xs and resnet:xs, 3 repeats
    python benchmarks/cpu_contention.py --quick         # a few steps: does it run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from bench.cell import denormals, threads
from bench.cell.config import Cell
from bench.cell.models import build_model, resolve_arch
from bench.study.runner import child_env

# each way: the child's OMP_NUM_THREADS and OMP_WAIT_POLICY; "bench" as its launcher sets them
WAYS = {
    "torch default": {},
    "passive wait": {"OMP_WAIT_POLICY": "PASSIVE"},
    "1 thread": {"OMP_NUM_THREADS": "1"},
    "bench": None,
}
OMP_VARS = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")
LOAD = "resnet:xs"  # the other job: a one-thread training loop


def train_steps(spec: str, steps: int, warm: int, batch: int) -> float:
    """Images per second over ``steps`` AdamW steps of the rung, after ``warm`` untimed ones;
    ``steps`` 0 trains until killed (the other job)."""
    family, size = spec.split(":")
    torch.manual_seed(0)
    model = build_model(resolve_arch(Cell(family=family, size=size, img_size=16, patch_size=4), 10))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randn(batch, 3, 16, 16), torch.randint(0, 10, (batch,))

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    for _ in range(warm):
        step()
    t0, done = time.perf_counter(), 0
    while steps == 0 or done < steps:
        step()
        done += 1
    return steps * batch / (time.perf_counter() - t0)


def child(args) -> int:
    """One measurement (or the other job) in this fresh process: print its JSON line."""
    denormals.flush()
    chosen = threads.size_pool() if args.size_pool else {"threads": torch.get_num_threads()}
    rate = train_steps(args.child, args.steps, args.warm, args.batch)
    print(json.dumps({"images_per_s": rate, "threads": chosen["threads"]}), flush=True)
    return 0


def measure(spec: str, way: str, args) -> dict:
    """One fresh process's rate: os.environ holds none of OMP_VARS (main drops them)."""
    env = child_env(None, 1) if WAYS[way] is None else {**os.environ, **WAYS[way]}
    cmd = [sys.executable, __file__, "--child", spec, f"--steps={args.steps}"]
    cmd += [f"--warm={args.warm}", f"--batch={args.batch}"]
    cmd += ["--size_pool"] if WAYS[way] is None else []
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def other_job(args) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, __file__, "--child", LOAD, "--steps=0", f"--batch={args.batch}"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    time.sleep(args.settle)  # imported and training before the first measurement
    return proc


def condition(spec: str, busy: bool, args) -> dict[str, tuple[float, int]]:
    """Per way: median images/s over the repeats, and the threads it trained on."""
    load = other_job(args) if busy else None
    rates: dict[str, list[float]] = {w: [] for w in WAYS}
    used: dict[str, int] = {}
    try:
        for _ in range(args.repeats):
            for way in WAYS:
                r = measure(spec, way, args)
                rates[way].append(r["images_per_s"])
                used[way] = r["threads"]
    finally:
        if load is not None:
            load.kill()
            load.wait()
    return {w: (statistics.median(v), used[w]) for w, v in rates.items()}


def report(spec: str, label: str, row: dict[str, tuple[float, int]]) -> None:
    base = row["torch default"][0]
    cells = "".join(f"{r:>9,.0f} ({t}t) {r / base:>4.2f}x" for r, t in row.values())
    print(f"{spec:<10}{label:<12}{cells}", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rungs", default="vit:xs,resnet:xs")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=60, help="timed steps per measurement")
    p.add_argument("--warm", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--settle", type=float, default=5.0, help="seconds the other job warms up")
    p.add_argument("--quick", action="store_true", help="3 steps, 1 repeat")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--size_pool", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)
    for var in OMP_VARS:  # every way starts from torch's defaults
        os.environ.pop(var, None)
    if args.quick:
        args.steps, args.warm, args.repeats, args.settle = 3, 1, 1, 2.0
    print(
        f"training step (forward, backward, AdamW), batch {args.batch}, fp32, 16 px, "
        f"{len(threads.cores())} cores; median of {args.repeats} alternating repeats of "
        f"{args.steps} steps, a fresh process each; busy: a one-thread {LOAD} training loop beside"
    )
    print(f"{'rung':<10}{'cores':<12}" + "".join(f"{w:>23}" for w in WAYS))
    for spec in args.rungs.split(","):
        report(spec, "all free", condition(spec, False, args))
        report(spec, "one busy", condition(spec, True, args))
    print("img/s (threads the pool had) and the ratio to torch default in the same condition")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
