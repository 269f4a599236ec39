"""Study throughput: one fixed set of cells run several ways in one call, side by side.

The cells: both families, rungs xs and s, several training-set sizes and seeds, a fixed number of
steps each, the recipe of ``sweeps/cifar10.yaml`` (32 px, batch 256, lr 1e-3, AdamW, warm-up and
cosine, label smoothing, clipping, augmentation, 10 validation passes, test of the best). The data
is ``synthetic`` at 32 px with 10 classes: images per second do not depend on what the pixels
show, and the benchmark runs where nothing can be downloaded. The ways:

- ``sequential``: one ``bench run`` process after another (the runner with one slot), on a subset
  of the cells (``--sequential_cells``, one per rung by default): its rate is the baseline;
- ``processes``: today's ``bench grid --per_device K``: K ``bench run`` processes at once;
- ``worker``: ``bench grid --worker``: W long-lived workers, cells one after another in each;
- ``packed``: ``bench grid --worker --pack G``: W workers, cells of one rung packed G at a time;
- ``compiled``: ``bench grid --worker --set compile_mode=MODE``: W workers whose cells compile
  their model (``--compile_mode``, default ``reduce-overhead`` on a GPU: CUDA graphs), the
  compiled kernels shared through the inductor cache. Not in the default ways.

For each it prints wall time, aggregate training images/s (images seen in training, over the
wall time of the whole way, start-up and evaluation included), achieved TFLOP/s from the
measured FLOPs of the records (``train_flops``: 3x forward FLOPs per image seen), the share of
the card's peak, and the ratios to ``sequential`` and ``processes``; then how far each way's
test errors are from the same cells' sequential ones (packing must not change the science), and
where a cell's time went outside its training steps (the records' ``timing.phases_s``).

    python benchmarks/study_throughput.py                      # GPU: under 5 minutes on an H100/H200
    python benchmarks/study_throughput.py --device=cpu --quick # correctness on a CPU
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import sys
import time
from pathlib import Path

import torch

from bench.cell.config import Cell
from bench.study.runner import Job, Runner
from bench.study.worker import launch

RECIPE = dict(dataset="synthetic", img_size=32, batch_size=256, lr=1e-3, evals=10)
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense, SXM spec sheets


def cells(args) -> list[dict]:
    grid = itertools.product(args.families, args.sizes, args.n, range(args.seeds))
    return [
        dict(
            RECIPE,
            study="throughput",
            family=f,
            size=s,
            n_train=n,
            seed=seed,
            steps=args.steps,
            batch_size=args.batch,
            device=args.device,
            wandb="disabled",
            progress=False,
        )
        for f, s, n, seed in grid
    ]


def way_cells(way: str, all_cells: list[dict], args) -> list[dict]:
    """The cells a way runs: ``sequential`` one per rung, ``compiled`` every cell compiled."""
    if way == "sequential":
        return all_cells[:: args.per_rung][: args.sequential_cells]
    if way == "compiled":
        return [dict(c, compile_mode=args.compile_mode) for c in all_cells]
    return all_cells


def jobs_for(params: list[dict], results: Path) -> list[Job]:
    jobs = []
    for p in params:
        cell = Cell.from_dict({**p, "results_dir": str(results / "runs")})
        argv = [f"--{k}={v}" for k, v in p.items()] + [f"--results_dir={results / 'runs'}"]
        command = [sys.executable, "-m", "bench.cli", "run", *argv]
        jobs.append(Job(p, cell.run_id, cell.study, cell.folder, command))
    return jobs


def run_way(name: str, jobs: list[Job], args, slots: list[str | None]) -> dict:
    t0 = time.perf_counter()
    if name in ("sequential", "processes"):
        runner = Runner(slots, label=name, out=open(args.out / f"{name}.log", "w"))
        batches = iter([jobs])
        runner.run(lambda n: next(batches, []))
        rc = runner.outcome.exit_code
    else:
        rc = launch(jobs, slots, args.pack if name == "packed" else 1)
    wall = time.perf_counter() - t0
    recs = [json.loads(j.record_path.read_text()) for j in jobs if j.record_path.exists()]
    done = [r for r in recs if r["status"] == "completed"]
    images = sum(r["metrics"]["examples"] for r in done)
    # per cell: a pack's phases are the whole pack's, shared by its members
    shares = [
        {k: v / r["execution"].get("pack", 1) for k, v in r["timing"]["phases_s"].items()}
        for r in done
        if r["timing"].get("phases_s")
    ]
    phases = {k: sum(p[k] for p in shares) / len(shares) for k in shares[0]} if shares else {}
    flops = sum(r["train_flops"] for r in done)
    return dict(
        way=name,
        cells=len(jobs),
        completed=len(done),
        wall=wall,
        images_per_s=images / wall,
        tflops=flops / wall / 1e12,
        errors={r["run_id"]: r["metrics"]["test_error"] for r in done},
        phases_per_cell=phases,
        # stopped by SIGINT/SIGTERM (a time limit): the runner and the workers catch the signal
        # and stop their cells, so the way ends early rather than the script
        stopped=rc > 128,
    )


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="a few tiny cells: correctness on a CPU")
    p.add_argument("--ways", default="sequential,processes,worker,packed")
    p.add_argument(
        "--per_device", type=int, default=None, help="K processes (default 16 GPU, 2 CPU)"
    )
    p.add_argument("--workers", type=int, default=None, help="W workers (default 4 GPU, 1 CPU)")
    p.add_argument(
        "--pack", type=int, default=None, help="G cells per pack (default: all of a rung)"
    )
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--sequential_cells", type=int, default=None)
    p.add_argument(
        "--compile_mode",
        default=None,
        help="the compiled way's mode (default reduce-overhead on a GPU, default on a CPU)",
    )
    p.add_argument("--peak_tflops", type=float, default=None, help="the card's bf16 peak")
    p.add_argument("--out", type=Path, default=Path("/tmp/study-throughput"))
    args = p.parse_args()
    gpu = args.device == "cuda"
    quick = args.quick or not gpu
    args.families = ["vit", "resnet"]
    args.sizes = ["xxs"] if args.quick else ["xs", "s"]
    args.n = [200, 300] if args.quick else [1000, 2000, 3000]
    args.seeds = 2
    args.steps = args.steps or (6 if quick else 150)
    args.batch = 32 if args.quick else 256
    args.pack = args.pack or len(args.n) * args.seeds
    k = args.per_device or (16 if gpu else 2)
    w = args.workers or (4 if gpu else 1)
    slot = "0" if gpu else None
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    args.compile_mode = args.compile_mode or ("reduce-overhead" if gpu else "default")
    all_cells = cells(args)
    args.per_rung = len(args.n) * args.seeds
    args.sequential_cells = args.sequential_cells or len(all_cells) // args.per_rung
    name = torch.cuda.get_device_name() if gpu else f"cpu ({torch.get_num_threads()} threads)"
    peak = args.peak_tflops or next((v for key, v in PEAK_BF16_TFLOPS.items() if key in name), None)
    print(
        f"device: {name} | {len(all_cells)} cells ({', '.join(args.families)} x "
        f"{', '.join(args.sizes)} x n {args.n} x {args.seeds} seeds), {args.steps} steps of "
        f"{args.batch} | processes K={k} | workers W={w} | pack G={args.pack}"
        + (f" | compiled: {args.compile_mode}" if "compiled" in args.ways else ""),
        flush=True,
    )
    results = []
    for way in args.ways.split(","):
        subset = way_cells(way, all_cells, args)
        slots = {"sequential": [slot], "processes": [slot] * k}.get(way, [slot] * w)
        r = run_way(way, jobs_for(subset, args.out / way), args, slots)
        results.append(r)
        share = f"{100 * r['tflops'] / peak:5.1f}%" if peak else "  n/a"
        print(
            f"{way:<11} {r['completed']:>3}/{r['cells']:<3} cells {r['wall']:8.1f} s "
            f"{r['images_per_s']:>11,.0f} img/s {r['tflops']:8.3f} TFLOP/s {share} of peak"
            + ("  STOPPED by a signal: not a measurement" if r["stopped"] else ""),
            flush=True,
        )
        if r["phases_per_cell"]:
            p = r["phases_per_cell"]
            print(
                f"{'':<11} per cell: fit {p['fit_s']:.2f} s, of it validation "
                f"{p['validation_s']:.2f} s and checkpoints {p['checkpoint_s']:.2f} s; "
                f"test {p['test_s']:.2f} s",
                flush=True,
            )
        if r["stopped"]:
            break
    results = [r for r in results if not r["stopped"]]
    by = {r["way"]: r for r in results}
    for base in ("sequential", "processes"):
        if base in by and len(by) > 1:
            ratios = ", ".join(
                f"{r['way']} {r['images_per_s'] / by[base]['images_per_s']:.2f}x"
                for r in results
                if r["way"] != base
            )
            print(f"vs {base}: {ratios}")
    if "sequential" in by:
        ref = by["sequential"]["errors"]
        for r in results:
            common = [i for i in r["errors"] if i in ref]
            if r["way"] != "sequential" and common:
                gap = max(abs(r["errors"][i] - ref[i]) for i in common)
                print(
                    f"test error vs sequential, same cells: {r['way']} max |diff| {gap:.4f} "
                    f"over {len(common)} cells"
                )
    (args.out / "summary.json").write_text(json.dumps(results, indent=1))
    complete = len(results) == len(args.ways.split(","))
    return 0 if complete and all(r["completed"] == r["cells"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
