"""``bench fit``: the study's fits and break-even on any table, one row per measurement.

bench fit table.csv --x=n --y=err --family=arch [--families A B] [--json]
"""

from __future__ import annotations

import argparse
import json

import pandas as pd

from bench.analysis import fits, report
from bench.analysis.frame import select_families
from bench.errors import ArgumentParser, BenchError


def read_table(
    path: str, x: str, y: str, family: str, notes: list[str], n_test: int | None = None
) -> pd.DataFrame:
    """The three columns, with rows a log-space fit cannot take dropped (and counted in notes).

    With ``n_test`` a 0 error is kept, floored at half a test example's error (0.5 / n_test)."""
    try:
        table = pd.read_csv(path)
    except FileNotFoundError as e:
        raise BenchError(f"cannot read {path!r}: no such file") from e
    except (OSError, ValueError, pd.errors.ParserError) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise BenchError(f"cannot read {path!r}: {why}") from e
    for opt, col in (("--x", x), ("--y", y), ("--family", family)):
        if col not in table.columns:
            columns = ", ".join(map(str, table.columns))
            raise BenchError(f"{opt}: no column {col!r} in {path} (columns: {columns})")
    table = table[[x, y, family]].copy()
    for col in (x, y):
        table[col] = pd.to_numeric(table[col], errors="coerce")
    zero = table[y] == 0
    if n_test and zero.any():
        table.loc[zero, y] = 0.5 / n_test
        notes.append(f"{int(zero.sum())} rows with {y} = 0 kept, floored at 0.5 / n_test")
    bad = table.isna().any(axis=1) | (table[x] <= 0) | (table[y] <= 0)
    if bad.any():
        notes.append(
            f"skipped {int(bad.sum())} rows with a missing, non-numeric or non-positive {x}/{y}"
        )
    table = table[~bad]
    table[family] = table[family].astype(str)
    return table


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="bench fit", description="fit scaling curves and the break-even on any CSV"
    )
    p.add_argument("csv", help="a table with one row per measurement")
    p.add_argument("--x", required=True, help="column of the scaling variable (e.g. n_train)")
    p.add_argument("--y", required=True, help="column of the error to fit (e.g. test_error)")
    p.add_argument("--family", required=True, help="column naming each row's family")
    p.add_argument(
        "--families", nargs="+", metavar="FAMILY", help="families to fit (default: all present)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument(
        "--n_test",
        type=int,
        default=None,
        help="test-set size behind each error: one-seed rows get its binomial noise in the "
        "bootstrap, and 0 errors are floored at 0.5 / n_test",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.bootstrap < 0:
        raise BenchError(f"--bootstrap must be >= 0, got {args.bootstrap}")
    notes: list[str] = []
    if args.n_test is not None and args.n_test <= 0:
        raise BenchError(f"--n_test must be a positive number of test examples, got {args.n_test}")
    table = read_table(args.csv, args.x, args.y, args.family, notes, args.n_test)
    if not len(table):
        raise BenchError(
            f"{args.csv}: no rows with a positive number in both {args.x} and {args.y}"
        )
    present = sorted(table[args.family].unique().tolist())
    fams = select_families(present, args.families, notes)
    n_test = dict.fromkeys(fams, args.n_test) if args.n_test else None
    result, _ = fits.fit_families(
        table, fams, None, args.x, args.y, args.family, args.bootstrap, args.seed, n_test=n_test
    )
    result["notes"] = notes + result["notes"]
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        print(report.fit_table(result, args.x))
    return 0
