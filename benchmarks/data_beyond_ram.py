"""Data beyond RAM: training from the memory-mapped cache against training from memory.

Generates an image set straight into the cache format (``bench.cell.store``, default 200,000
images at 64 px, ~2.5 GB), then trains the same model through the project's Lightning path
(``build_module`` + ``build_loaders`` + ``build_trainer``, what ``bench run`` uses) two ways,
each in its own process so that each has its own peak RSS:

- ``memory``: a training subset that fits (``--n_memory``) on the device whole (today's path);
- ``stream``: the whole set, ``data_in_memory=never``: each batch's rows read from the cache file by
  the prefetch thread. Before each stream run the set's pages are dropped from the kernel's page
  cache (``posix_fadvise``), so it starts cold, reading from the disk.

The two alternate ``--repeats`` times; images/s is over the steps after ``--warm``, the median of
the repeats. Peak RSS is the process's high-water mark (VmHWM: its private memory and the mapped
pages it held), next to the set's size.

    python benchmarks/data_beyond_ram.py [--n=200000] [--img_size=64] [--quick] [--keep]

Ends with ``ratio: X`` (stream images/s over memory images/s).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from bench.cell.config import Cell
from bench.cell.datasets import Splits
from bench.cell.models import build_model, resolve_arch
from bench.cell.store import ARRAYS, CacheWriter, read
from bench.cell.train import build_loaders, build_module, build_trainer, setup_for_model

CLASSES = 10
N_TEST = 1000


# ---------------------------------------------------------------------- the generated set
def generate(path: Path, n: int, img_size: int, chunk: int = 2048) -> None:
    """Class templates (a colour and a coarse layout) under noise, written chunk by chunk."""
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(CLASSES, 3, 4, 4, generator=g)
    templates = F.interpolate(coarse, size=(img_size, img_size), mode="bicubic")
    writer = CacheWriter(path)
    for name, count in (("train", n), ("test", N_TEST)):
        out = writer.images(f"{name}_x", count, img_size)
        labels = torch.arange(count) % CLASSES
        for start in range(0, count, chunk):
            y = labels[start : start + chunk]
            x = templates[y] + 0.3 * torch.randn((len(y), 3, img_size, img_size), generator=g)
            out[start : start + len(y)] = (x.clamp(0, 1) * 255).to(torch.uint8).numpy()
        writer.put(f"{name}_y", labels.numpy())
    writer.commit([f"class{i}" for i in range(CLASSES)])


def evict(path: Path) -> None:
    """Drop the set's pages from the kernel's page cache (only this file's), for a cold start."""
    for name in ARRAYS:
        fd = os.open(path / f"{name}.npy", os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


# ---------------------------------------------------------------------- one timed run (a process)
class Timer(pl.Callback):
    def __init__(self, warm: int):
        self.warm, self.t0, self.t1, self.steps = warm, None, None, 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.global_step == self.warm:
            self.t0 = time.perf_counter()
        self.t1, self.steps = time.perf_counter(), trainer.global_step


class PeakMemory:
    """Samples RssAnon and RssFile (private memory, mapped file pages) every 50 ms."""

    def __init__(self):
        self.peak = {"RssAnon": 0, "RssFile": 0}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.wait(0.05):
            for k, v in status().items():
                if k in self.peak:
                    self.peak[k] = max(self.peak[k], v)


def status() -> dict[str, int]:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if value.strip().endswith("kB"):
            out[key] = int(value.split()[0]) * 1024
    return out


def worker(args) -> dict:
    arrays, maps = read(Path(args.set))
    splits = Splits(**arrays, maps=maps)
    stream = args.worker == "stream"
    cell = Cell(
        dataset="synthetic",  # the recipe's fields only: the images are the generated set
        family="vit",
        size="xxs",
        img_size=args.img_size,
        patch_size=args.patch_size,
        n_train="all" if stream else args.n_memory,
        val_size=0,
        steps=args.steps,
        batch_size=args.batch_size,
        augment=True,
        data_in_memory="never" if stream else "always",
        wandb="disabled",
        progress=False,
        device="cpu",
    )
    arch = resolve_arch(cell, CLASSES)
    torch.manual_seed(0)
    setup = setup_for_model(cell, arch, build_model(arch), torch.device("cpu"), splits)
    memory = PeakMemory()
    module = build_module(setup)
    train, _, _ = build_loaders(setup)
    timer = Timer(args.warm)
    trainer = build_trainer(setup, None, None, has_val=False, extra_callbacks=[timer])
    trainer.fit(module, train_dataloaders=train)
    memory.stop.set()
    images = (timer.steps - args.warm) * args.batch_size
    return {
        "path": args.worker,
        "n_train": len(setup.subsets.train_idx),
        "images_per_s": images / (timer.t1 - timer.t0),
        "peak_rss": status()["VmHWM"],
        "peak_anon": memory.peak["RssAnon"],
        "peak_file": memory.peak["RssFile"],
    }


# ---------------------------------------------------------------------- the comparison
def run_worker(args, which: str) -> dict:
    argv = [sys.executable, __file__, f"--worker={which}", f"--set={args.set}"]
    argv += [f"--{k}={getattr(args, k)}" for k in TIMING]
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{which} run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


TIMING = ("img_size", "patch_size", "n_memory", "steps", "warm", "batch_size")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=200_000, help="images in the generated set")
    p.add_argument("--img_size", type=int, default=64)
    p.add_argument("--patch_size", type=int, default=16)
    p.add_argument(
        "--n_memory", type=int, default=20_000, help="training images of the memory path"
    )
    p.add_argument("--steps", type=int, default=160)
    p.add_argument("--warm", type=int, default=20)
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="5,000 images, 40 steps, 2 repeats")
    p.add_argument("--dir", default=None, help="where the set is written (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the generated set")
    p.add_argument("--worker", choices=("memory", "stream"), help=argparse.SUPPRESS)
    p.add_argument("--set", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    if args.quick:
        args.n, args.n_memory, args.steps, args.warm, args.repeats = 5000, 2000, 40, 10, 2
    root = Path(args.dir or tempfile.mkdtemp(prefix="bench-data-"))
    args.set = str(root / f"generated-{args.n}-{args.img_size}px")
    if not Path(args.set).is_dir():
        t0 = time.perf_counter()
        generate(Path(args.set), args.n, args.img_size)
        print(f"generated {args.n:,} images in {time.perf_counter() - t0:.0f}s", flush=True)
    size = sum(f.stat().st_size for f in Path(args.set).iterdir())
    print(
        f"set: {args.n:,} images at {args.img_size} px, {size / 2**30:.2f} GiB on disk; "
        f"ViT xxs, patch {args.patch_size}, batch {args.batch_size}, {args.steps} steps "
        f"({args.warm} warm-up), {torch.get_num_threads()} threads",
        flush=True,
    )
    results = {"memory": [], "stream": []}
    for r in range(args.repeats):
        for which in ("memory", "stream") if r % 2 == 0 else ("stream", "memory"):
            if which == "stream":
                evict(Path(args.set))
            res = run_worker(args, which)
            results[which].append(res)
            print(
                f"  {which:<6} n_train {res['n_train']:>7,}  {res['images_per_s']:>7,.0f} img/s  "
                f"peak RSS {res['peak_rss'] / 2**20:>5,.0f} MiB (private {res['peak_anon'] / 2**20:,.0f},"
                f" mapped {res['peak_file'] / 2**20:,.0f})",
                flush=True,
            )
    med = {k: statistics.median(x["images_per_s"] for x in v) for k, v in results.items()}
    peak = max(x["peak_rss"] for x in results["stream"])
    print(
        f"median img/s: memory {med['memory']:,.0f}, stream {med['stream']:,.0f}; "
        f"stream peak RSS {peak / 2**20:,.0f} MiB for a {size / 2**30:.2f} GiB set"
    )
    print(f"ratio: {med['stream'] / med['memory']:.2f}")
    if not args.keep and not args.dir:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
