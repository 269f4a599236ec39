"""``bench finetune --report results/<study>``: continued vs fine-tuned test errors of a study.

Reads records only (no torch): the table is :func:`bench.analysis.report.finetune_report`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.analysis.report import finetune_report
from bench.errors import ArgumentParser, BenchError


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="bench finetune --report", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--report", metavar="STUDY_DIR", required=True, help="a study folder, e.g. results/<study>"
    )
    return p


def main(argv: list[str]) -> int:
    path = Path(build_parser().parse_args(argv).report)
    if not path.exists():
        raise BenchError(f"{path} does not exist")
    print(finetune_report(path), end="")
    return 0
