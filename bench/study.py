"""A whole study in one command: the sweep's cells through the local grid runner, then the analysis.

    bench study sweeps/smoke.yaml [--workers N] [--bootstrap N] [grid options]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    from bench import analyze, grid
    from bench.sweep_config import load_sweep

    parser = argparse.ArgumentParser(prog="bench study", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", help="a sweep YAML, e.g. sweeps/smoke.yaml")
    parser.add_argument("--bootstrap", type=int, default=1000, help="resamples for the break-even CI")
    parser.add_argument("--results_dir", "--results-dir", default=None, help="record folder (default results/<study>/runs)")
    args, grid_args = parser.parse_known_args(argv)
    sweep = load_sweep(args.sweep)
    extra = [f"--results_dir={args.results_dir}"] if args.results_dir else []
    code = grid.main([args.sweep, *extra, *grid_args])
    study_dir = Path(args.results_dir).parent if args.results_dir else Path("results") / sweep.study
    if code:
        print(f"bench study: some cells failed (exit {code}); analysing the records there are",
              file=sys.stderr)
    doc = analyze.analyze(study_dir, bootstrap=args.bootstrap)
    print(f"\nstudy {sweep.study}: {doc['records']['used']} records analysed")
    print(f"report:  {doc['report']}")
    for fig in doc.get("figures", []):
        print(f"figure:  {study_dir / 'figures' / fig}")
    print(doc["break_even_text"])
    return code
