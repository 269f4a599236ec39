"""Compiled cells against a study's committed eager ones: does compiling change the science?

Trains the cells of a sweep (or one family of it) again with the model compiled,
``bench grid SWEEP --set compile_mode=MODE`` (a runtime field: the same ``run_id``s), into a
scratch folder, and sets each cell's test error beside the committed record of the same cell.
A difference is read against two scales: the binomial spread of the difference of two
independent test errors, sqrt(2 p (1 - p) / n_test) (``z`` is the difference over it; the two
models see the same test images, so this is a generous scale), and the seed-to-seed spread of
the committed cells, the one that matters: compiling changes the float arithmetic, so a
compiled cell follows another trajectory from the same seed, as another seed would.

    python benchmarks/compiled_cells.py sweeps/cifar10-cpu-plain.yaml --family resnet

Speed is not measured here (the committed cells ran on another day, under another load):
``throughput.py --compile_mode`` times both side by side.
"""

from __future__ import annotations

import argparse
import math
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import yaml

from bench.results.records import iter_records
from bench.study.sweep_config import load_sweep


def compiled_sweep(sweep: Path, family: str | None, out: Path) -> Path:
    """The sweep, narrowed to ``family`` when given, written under ``out``."""
    cfg = yaml.safe_load(sweep.read_text())
    if family:
        cfg["parameters"]["family"] = {"value": family}
    path = out / sweep.name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def completed(records_dir: Path) -> dict[str, dict]:
    return {r["run_id"]: r for r in iter_records(records_dir) if r.get("status") == "completed"}


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("sweep", type=Path, help="a sweep whose study's records are committed")
    p.add_argument("--family", default=None, help="only this family's cells")
    p.add_argument("--compile_mode", default="default")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("/tmp/compiled-cells"))
    args = p.parse_args()
    study = load_sweep(args.sweep).study
    eager = completed(Path("results") / study / "runs")
    args.out.mkdir(parents=True, exist_ok=True)
    grid = [sys.executable, "-m", "bench.cli", "grid"]
    grid += [str(compiled_sweep(args.sweep, args.family, args.out)), f"--workers={args.workers}"]
    grid += [f"--set=compile_mode={args.compile_mode}", f"--results_dir={args.out / 'runs'}"]
    if subprocess.run([*grid, "--wandb=disabled"]).returncode:
        return 1
    ours = completed(args.out / "runs")
    pairs = [(rid, eager[rid], rec) for rid, rec in sorted(ours.items()) if rid in eager]
    if not pairs:
        print(f"no compiled cell has a committed record in results/{study}/runs")
        return 1
    print(f"study {study}: {len(pairs)} cells, compile_mode={args.compile_mode}, test error (%)")
    print(f"{'cell':<32}{'eager':>8}{'compiled':>10}{'diff':>8}{'noise sd':>10}{'z':>7}")
    groups, zs = defaultdict(list), []
    for rid, e, c in pairs:
        pe, pc = e["metrics"]["test_error"], c["metrics"]["test_error"]
        n_test = c["data"]["n_test"]
        p_mean = (pe + pc) / 2
        sd = math.sqrt(2 * p_mean * (1 - p_mean) / n_test)
        zs.append((pc - pe) / sd)
        conf = e["config"]
        groups[(conf["family"], conf["size"], conf["n_train"])].append((pe, pc))
        print(f"{rid:<32}{100 * pe:>8.2f}{100 * pc:>10.2f}{100 * (pc - pe):>+8.2f}", end="")
        print(f"{100 * sd:>10.2f}{zs[-1]:>+7.2f}")
    print(f"{'cells (family, size, n)':<32}{'eager':>8}{'compiled':>10}{'diff':>8}{'seed sd':>10}")
    for (family, size, n), errs in sorted(groups.items()):
        pe = statistics.mean(e for e, _ in errs)
        pc = statistics.mean(c for _, c in errs)
        spread = statistics.stdev(e for e, _ in errs) if len(errs) > 1 else float("nan")
        name = f"{family} {size} n={n} ({len(errs)})"
        print(f"{name:<32}{100 * pe:>8.2f}{100 * pc:>10.2f}{100 * (pc - pe):>+8.2f}", end="")
        print(f"{100 * spread:>10.2f}")
    print(
        f"max |z| {max(abs(z) for z in zs):.2f} over {len(zs)} cells; mean z {statistics.mean(zs):+.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
