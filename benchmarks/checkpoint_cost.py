"""What a cell's checkpoints cost: writes at every validation against ``checkpoint_every_s``.

One cell, trained through ``bench run``'s own path (fit, validations, checkpoints, test) with
``checkpoint_every_s=0`` (``last.ckpt`` at every validation; before the interval existed a cell
also wrote a full ``best.ckpt`` at every validation that improved, so the old cost was higher
still) and with the default (60 s: for a short cell, the end only), alternating, on synthetic
data. Prints each way's time spent writing checkpoints
(``timing.phases_s.checkpoint_s`` of its record), its fit time, its test error (the same weights
must be tested both ways), the size of ``best.ckpt`` (now weights only), of ``last.ckpt`` (a full
checkpoint, with optimizer state: what ``best.ckpt`` was before), and of the cell's folder before
and after a completed cell drops its resume-only files.

    python benchmarks/checkpoint_cost.py                  # ResNet m (11.2M), 10 validations
    python benchmarks/checkpoint_cost.py --family vit --size s
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from bench.cell.config import Cell
from bench.cell.resume import drop_resume_files
from bench.cell.train import fit_and_test, prepare

WAYS = {"every validation": 0.0, "default (60 s)": 60.0}


def once(cell: Cell, root: Path) -> dict:
    """One training of ``cell`` in a fresh folder under ``root``: its outcome and file sizes."""
    cell = cell.replace(results_dir=str(Path(tempfile.mkdtemp(dir=root)) / "runs"))
    ckpt_dir = cell.folder.checkpoints(cell.run_id)
    out = fit_and_test(prepare(cell), ckpt_dir, None)
    out["best_mb"] = (ckpt_dir / "best.ckpt").stat().st_size / 2**20
    out["last_mb"] = (ckpt_dir / "last.ckpt").stat().st_size / 2**20  # with optimizer state
    out["before_mb"] = folder_mb(ckpt_dir)
    drop_resume_files(ckpt_dir)  # as a completed cell's record does
    out["kept_mb"] = folder_mb(ckpt_dir)
    return out


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--family", default="resnet")
    p.add_argument("--size", default="m")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--evals", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    base = Cell(
        dataset="synthetic",
        family=args.family,
        size=args.size,
        n_train=1000,
        val_size=64,
        batch_size=16,
        steps=args.steps,
        evals=args.evals,
        wandb="disabled",
        progress=False,
        device="cpu",
    )
    runs: dict[str, list[dict]] = {k: [] for k in WAYS}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):  # alternate, so drift in load hits both alike
            for name, every in WAYS.items():
                runs[name].append(once(base.replace(checkpoint_every_s=every), Path(tmp)))
    print(
        f"cpu | {args.family} {args.size}, {args.steps} steps of 16, {args.evals} validations | "
        f"median of {args.repeats} alternating repeats"
    )
    print(
        f"{'checkpoints':<18}{'writes s':>10}{'fit s':>8}{'test error':>12}{'best.ckpt MiB':>14}"
        f"{'last.ckpt MiB':>14}{'folder MiB':>11}{'kept MiB':>9}"
    )
    med = {}
    for name, outs in runs.items():
        med[name] = statistics.median(o["phases"]["checkpoint_s"] for o in outs)
        fit = statistics.median(o["phases"]["fit_s"] for o in outs)
        errors = {round(o["test_error"], 6) for o in outs}
        print(
            f"{name:<18}{med[name]:>10.2f}{fit:>8.2f}{'/'.join(f'{e:.2%}' for e in errors):>12}"
            f"{outs[0]['best_mb']:>14.1f}{outs[0]['last_mb']:>14.1f}{outs[0]['before_mb']:>11.1f}"
            f"{outs[0]['kept_mb']:>9.1f}"
        )
    every, default = med.values()
    print(f"checkpoint writes, every validation / default: {every / max(default, 1e-9):.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
