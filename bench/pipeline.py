"""``bench study``: a whole study in one command, the sweep's cells through the local grid runner,
then the analysis (``bench tune``'s table where the sweep is a tuning grid: its cells differ in a
setting such as the learning rate, so their records are not seeds of one cell).

    bench study sweeps/smoke.yaml [--workers N] [--bootstrap N] [grid options]
"""

from __future__ import annotations

import argparse
import sys

from bench.analysis import settings, tuning
from bench.analysis.analyze import analyze
from bench.analysis.frame import load_study
from bench.errors import ArgumentParser
from bench.results.layout import StudyDir
from bench.study import grid
from bench.study.sweep_config import load_sweep


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="bench study", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", help="a sweep YAML, e.g. sweeps/smoke.yaml")
    parser.add_argument(
        "--bootstrap", type=int, default=1000, help="resamples for the break-even CI"
    )
    parser.add_argument(
        "--results_dir",
        "--results-dir",
        default=None,
        help="record folder (default results/<study>/runs)",
    )
    return parser


def main(argv: list[str]) -> int:
    args, grid_args = build_parser().parse_known_args(argv)
    sweep = load_sweep(args.sweep)
    extra = [f"--results_dir={args.results_dir}"] if args.results_dir else []
    code = grid.main([args.sweep, *extra, *grid_args])
    folder = (
        StudyDir.of_records(args.results_dir)
        if args.results_dir
        else StudyDir.of_study(sweep.study)
    )
    if code:
        print(
            f"bench study: some cells failed (exit {code}); analysing the records there are",
            file=sys.stderr,
        )
    if _is_tuning_grid(folder.study_dir):
        tuning.tune(folder.study_dir)
        print(f"\nstudy {sweep.study}: a tuning grid")
        print(f"table:   {folder.study_dir / 'tuning.md'}")
        return code
    result = analyze(folder.study_dir, bootstrap=args.bootstrap)
    print(f"\nstudy {sweep.study}: {result['records']['used']} records analysed")
    print(f"report:  {result['report']}")
    for fig in result.get("figures", []):
        print(f"figure:  {folder.figures / fig}")
    print(result["break_even_text"])
    return code


def _is_tuning_grid(study_dir) -> bool:
    frame, _, _ = load_study(study_dir)
    return bool(settings.varying(settings.split_derived(frame)[0]))
