"""``bench analyze`` and ``bench fit``: from result records (or any table) to fits and a report.

``bench analyze results/<study>`` reads every completed record under the folder and regenerates,
in that folder: ``summary.csv``, ``fits.json``, ``figures/*.png`` and ``report.md``. Everything is
sorted and the bootstrap is seeded, so two runs on the same records give byte-identical files.
``bench fit FILE.csv --x=COL --y=COL --family=COL`` runs the same fitting and break-even on a table.

Never imports torch: this stage reads records only.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from bench import scaling
from bench.errors import BenchError

# Size order to fall back on when a record has no parameter count.
LADDER = ("xxs", "xs", "s", "m", "l", "xl", "xxl", "h", "g")
FIGURES = ("error_vs_n.png", "error_vs_params.png", "grid_heatmap.png", "error_vs_compute.png")
DEFAULT_PAIR = ("resnet", "vit")


# ---------------------------------------------------------------------------------------------
# Fitting shared by both commands


def fit_families(
    table, families, group_col, x_col, y_col, fam_col, bootstrap, seed, group_orders=None
):
    """Envelope fits per family and the break-even between the first two of ``families``.

    ``table`` has one row per measurement; rows with the same family, group and x are seeds.
    Returns ``{"fits": {...}, "break_even": {...} or None, "notes": [...]}`` (JSON-ready) and the
    per-family cells, which the bootstrap and the figures reuse.
    """
    notes: list[str] = []
    fits: dict = {}
    chosen: dict = {}
    cells_by_family: dict = {}
    for fam in families:
        rows = table[table[fam_col] == fam]
        groups = rows[group_col].tolist() if group_col else [""] * len(rows)
        cells = scaling.make_cells(groups, rows[x_col].to_numpy(float), rows[y_col].to_numpy(float))
        cells_by_family[fam] = cells
        env = scaling.envelope(cells, (group_orders or {}).get(fam))
        x, y = scaling.envelope_points(env)
        result = scaling.fit_family(x, y, x_name=x_col)
        entry: dict = {
            "form": result["chosen"],
            "selection": result["reason"],
            "envelope": [
                {
                    "x": _num(xv),
                    "group": g,
                    "mean": scaling._round(float(np.mean(ys))),
                    "count": len(ys),
                }
                for xv, g, ys in env
            ],
            "x_range": [_num(x.min()), _num(x.max())] if len(x) else None,
            "forms": {f: fit.to_dict() for f, fit in sorted(result["fits"].items())},
            "holdout": {f: h for f, h in sorted(result["holdout"].items())},
        }
        if result["chosen"] is None:
            notes.append(f"{fam}: no envelope fit ({result['reason']})")
            entry.update(params=None, rmse_log=None, extrapolation=None)
        else:
            fit = result["fits"][result["chosen"]]
            chosen[fam] = fit
            entry.update(params=fit.to_dict()["params"], rmse_log=scaling._round(fit.rmse_log))
            entry["extrapolation"] = result["holdout"].get(result["chosen"])
            if entry["extrapolation"] is None:
                notes.append(
                    f"{fam}: extrapolation check skipped (too few distinct {x_col} to hold the largest out)"
                )
        fits[fam] = entry

    pair = _pair(families, notes)
    be = None
    if pair is None:
        notes.append(
            "break-even skipped: it needs two families, found "
            + (", ".join(families) if families else "none")
        )
    elif any(f not in chosen for f in pair):
        missing = [f for f in pair if f not in chosen]
        notes.append(f"break-even skipped: no envelope fit for {', '.join(missing)}")
    else:
        be = _break_even(pair, fits, chosen, cells_by_family, bootstrap, seed, group_orders, notes)
    return {"fits": fits, "break_even": be, "notes": notes}, cells_by_family


def _pair(families, notes):
    if len(families) < 2:
        return None
    if len(families) == 2:
        return tuple(families)
    pair = DEFAULT_PAIR if all(f in families for f in DEFAULT_PAIR) else tuple(families[:2])
    notes.append(f"more than two families: break-even between {pair[0]} and {pair[1]} only")
    return pair


def _break_even(pair, fits, chosen, cells_by_family, bootstrap, seed, group_orders, notes):
    ranges = [fits[f]["x_range"] for f in pair]
    x_lo, x_hi = max(r[0] for r in ranges), min(r[1] for r in ranges)
    if x_lo > x_hi:  # measured on disjoint ranges: judge against everything measured
        x_lo, x_hi = min(r[0] for r in ranges), max(r[1] for r in ranges)
        notes.append("the two families were measured on disjoint ranges of x")
    bracket = scaling.bracket_for(x_lo, x_hi)
    a, b = chosen[pair[0]], chosen[pair[1]]
    be = scaling.break_even(a, b, pair, x_lo, x_hi, bracket)
    be.update(
        families=list(pair),
        measured_range=[_num(x_lo), _num(x_hi)],
        bracket=[_num(v) for v in bracket],
        ci=None,
        p_no_crossing=None,
        n_resamples=0,
        n_crossing=0,
    )
    if bootstrap > 0:
        boot = scaling.bootstrap_break_even(
            cells_by_family,
            chosen,
            pair,
            x_lo,
            x_hi,
            bracket,
            bootstrap,
            seed,
            group_orders=group_orders,
        )
        be.update(boot)
        if be["x"] is None:
            be["ci"] = None  # an interval around no crossing would mislead; p_no_crossing says it
    else:
        notes.append("bootstrap skipped (--bootstrap 0): no interval for the break-even")
    return dict(sorted(be.items()))


def _num(v):
    """Integers stay integers in JSON (n_train, params); everything else to six digits."""
    v = float(v)
    return int(v) if v.is_integer() and abs(v) < 2**53 else scaling._round(v)


def describe_break_even(be: dict | None, x_name: str = "n") -> str:
    """One line: ``break-even: n* = 12,345 (95% CI ...), inside the measured range; ...``."""
    if be is None:
        return "break-even: not computed (needs an envelope fit for two families)"
    p = be.get("p_no_crossing")
    p_txt = f"; no crossing in {p:.0%} of {be['n_resamples']} resamples" if p is not None else ""
    if be["x"] is None:
        m = be.get("margin_at_max_x") or {}
        return (
            f"break-even: none; the fitted curves never cross in {_fmt_x(be['bracket'][0])}"
            f"..{_fmt_x(be['bracket'][1])}: {be['below']} is lower everywhere "
            f"(by {100 * m.get('difference', float('nan')):.2f} points at {x_name} = {_fmt_x(m.get('x'))})"
            + p_txt
        )
    ci = be.get("ci")
    ci_txt = f" (95% CI {_fmt_x(ci[0])}..{_fmt_x(ci[1])})" if ci else ""
    where = {
        "inside": "inside the measured range",
        "above": "extrapolated above the measured range",
        "below": "extrapolated below the measured range",
    }[be.get("side") or ("inside" if be["inside_range"] else "above")]
    return (
        f"break-even: {x_name}* = {_fmt_x(be['x'])}{ci_txt}, {where}; "
        f"{be['below']} lower below, {be['above']} lower above" + p_txt
    )


def _fmt_x(v) -> str:
    if v is None:
        return "?"
    v = float(v)
    if 1 <= abs(v) < 1e7:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def _fmt_params(params: dict | None) -> str:
    if not params:
        return "-"
    return ", ".join(f"{k}={v:.4g}" for k, v in params.items())


# ---------------------------------------------------------------------------------------------
# bench analyze


def _size_orders(frame) -> dict:
    """Per family, sizes from smallest to largest model (by parameter count, then ladder name)."""
    orders = {}
    for fam, rows in frame.groupby("family", sort=True):

        def key(size, rows=rows):
            p = rows.loc[rows["size"] == size, "params"].median()
            rank = LADDER.index(size) if size in LADDER else len(LADDER)
            return (0 if p == p else 1, p if p == p else 0.0, rank, str(size))

        orders[fam] = sorted(rows["size"].unique().tolist(), key=key)
    return orders


def load_study(results_dir):
    """Completed records as a clean frame plus counts of what was excluded and why."""
    import pandas as pd

    from bench.results import load_frame

    path = Path(results_dir)
    if not path.is_dir():
        raise BenchError(f"results folder {str(path)!r} does not exist")
    everything = load_frame(path, completed_only=False)
    notes = []
    if len(everything):
        counts = everything["status"].value_counts().sort_index()
        other = {k: int(v) for k, v in counts.items() if k != "completed"}
        if other:
            notes.append(
                "excluded records: " + ", ".join(f"{v} {k}" for k, v in sorted(other.items()))
            )
        frame = everything[everything["status"] == "completed"].copy()
    else:
        frame = everything
    for col in ("n_train", "test_error", "params", "train_flops"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce")
    bad = (
        frame["family"].isna()
        | frame["size"].isna()
        | frame["n_train"].isna()
        | frame["test_error"].isna()
    )
    if bad.any():
        notes.append(
            f"skipped {int(bad.sum())} completed records lacking family, size, n_train or test_error"
        )
    frame = frame[~bad]
    nonpos = (frame["test_error"] <= 0) | (frame["n_train"] <= 0)
    if nonpos.any():
        # Log-space fits cannot take a zero error; such a cell says the test set is too small.
        notes.append(
            f"skipped {int(nonpos.sum())} records with test_error or n_train <= 0 (log-space fits)"
        )
    frame = frame[~nonpos].copy()
    frame["family"] = frame["family"].astype(str)
    frame["size"] = frame["size"].astype(str)
    frame["n_train"] = frame["n_train"].astype("int64")
    return frame.reset_index(drop=True), len(everything), notes


def summarize(frame, orders):
    """One row per (family, size, n_train): mean/std/count of test_error over seeds."""
    import pandas as pd

    cols = [
        "family",
        "size",
        "n_train",
        "params",
        "train_flops",
        "test_error_mean",
        "test_error_std",
        "test_error_count",
    ]
    if not len(frame):
        return pd.DataFrame(columns=cols)
    g = frame.groupby(["family", "size", "n_train"], sort=True)
    out = g.agg(
        params=("params", "median"),
        train_flops=("train_flops", "mean"),
        test_error_mean=("test_error", "mean"),
        test_error_std=("test_error", "std"),
        test_error_count=("test_error", "count"),
    ).reset_index()
    out["_rank"] = [orders[f].index(s) for f, s in zip(out["family"], out["size"], strict=True)]
    out = out.sort_values(["family", "_rank", "n_train"], kind="stable").drop(columns="_rank")
    out["params"] = out["params"].round().astype("Int64")
    return out[cols].reset_index(drop=True)


def _missing_cells(summary, orders) -> list[str]:
    """Cells of the full grid (each family's sizes x every n in the study) with no record."""
    if not len(summary):
        return []
    have = set(zip(summary["family"], summary["size"], summary["n_train"], strict=True))
    ns = sorted(summary["n_train"].unique())
    return [
        f"{fam} {size} n={int(n):,}"
        for fam in sorted(orders)
        for size in orders[fam]
        for n in ns
        if (fam, size, n) not in have
    ]


def _joint(frame, fam):
    rows = frame[(frame["family"] == fam) & frame["params"].notna() & (frame["params"] > 0)]
    fit = (
        scaling.fit_joint(rows["params"], rows["n_train"], rows["test_error"])
        if len(rows)
        else None
    )
    if fit is None:
        return {
            "skipped": "needs at least 2 sizes with parameter counts, 2 values of n_train and 5 cells"
        }
    out = fit.to_dict()
    n_max = rows["n_train"].max()
    train = rows[rows["n_train"] < n_max]
    held = rows[rows["n_train"] == n_max]
    without = (
        scaling.fit_joint(train["params"], train["n_train"], train["test_error"])
        if len(train)
        else None
    )
    if without is None:
        out["extrapolation"] = None
        return out
    cells = held.groupby("size", sort=True).agg(
        params=("params", "median"), observed=("test_error", "mean")
    )
    pred = scaling.predict_joint(without, cells["params"], np.full(len(cells), float(n_max)))
    log_err = np.log(pred / cells["observed"].to_numpy())
    out["extrapolation"] = {
        "x": int(n_max),
        "mean_abs_log_error": scaling._round(float(np.mean(np.abs(log_err)))),
        "cells": [
            {"size": s, "observed": scaling._round(o), "predicted": scaling._round(p)}
            for s, o, p in zip(cells.index, cells["observed"], pred, strict=True)
        ],
    }
    return out


def _winners(fits, pair):
    """Which family has the lower envelope error at the smallest and largest shared n."""
    if pair is None or any(not fits.get(f, {}).get("envelope") for f in pair):
        return None
    env = {f: {e["x"]: e["mean"] for e in fits[f]["envelope"]} for f in pair}
    shared = sorted(set(env[pair[0]]) & set(env[pair[1]]))
    if not shared:
        return None
    out = {}
    for label, n in (("smallest", shared[0]), ("largest", shared[-1])):
        a, b = env[pair[0]][n], env[pair[1]][n]
        win, lose = (pair[0], pair[1]) if a <= b else (pair[1], pair[0])
        out[label] = {
            "n_train": n,
            "winner": win,
            "margin": scaling._round(abs(a - b)),
            pair[0]: a,
            pair[1]: b,
            "loser": lose,
        }
    return out


def analyze(results_dir, bootstrap: int = 1000, seed: int = 0, families=None) -> dict:
    """Regenerate summary.csv, fits.json, figures/ and report.md in ``results_dir``.

    Returns the fits.json content plus ``report`` (its path) and ``break_even_text`` (one line).
    """
    from bench import plots

    if bootstrap < 0:
        raise BenchError(f"--bootstrap must be >= 0, got {bootstrap}")
    out_dir = Path(results_dir)
    frame, n_records, notes = load_study(out_dir)
    present = sorted(frame["family"].unique().tolist()) if len(frame) else []
    if families:
        absent = [f for f in families if f not in present]
        if absent:
            notes.append(
                f"--families: no usable records for {', '.join(absent)} (present: {', '.join(present) or 'none'})"
            )
        fams = [f for f in families if f in present]
        frame = frame[frame["family"].isin(fams)].reset_index(drop=True)
    else:
        fams = present
    if len(fams) == 1:
        notes.append(
            f"only one family ({fams[0]}): no break-even, the analysis covers {fams[0]} alone"
        )
    if not len(frame):
        notes.append("no completed records with test_error: nothing to fit or plot")
    orders = _size_orders(frame) if len(frame) else {}
    summary = summarize(frame, orders)
    missing = _missing_cells(summary, orders)
    if missing:
        shown = ", ".join(missing[:12]) + (
            f" and {len(missing) - 12} more" if len(missing) > 12 else ""
        )
        notes.append(f"missing cells ({len(missing)}): {shown}; envelopes use the sizes present")

    result, _ = fit_families(
        frame, fams, "size", "n_train", "test_error", "family", bootstrap, seed, group_orders=orders
    )
    notes += result.pop("notes")
    for fam in fams:
        result["fits"][fam]["joint"] = _joint(frame, fam)
        if "skipped" in result["fits"][fam]["joint"]:
            notes.append(
                f"{fam}: joint fit err(N, n) skipped ({result['fits'][fam]['joint']['skipped']})"
            )
    pair = tuple(result["break_even"]["families"]) if result["break_even"] else _pair(fams, [])
    study = _study_name(frame, out_dir)
    doc = {
        "study": study,
        "records": {"total": n_records, "used": int(len(frame))},
        "cells": int(len(summary)),
        "families": fams,
        "sizes": {f: orders[f] for f in fams},
        "n_train": sorted(int(v) for v in frame["n_train"].unique()) if len(frame) else [],
        "bootstrap": {"resamples": bootstrap, "seed": seed},
        "fits": result["fits"],
        "break_even": result["break_even"],
        "winners": _winners(result["fits"], pair),
        "notes": notes,
    }

    out_dir.mkdir(parents=True, exist_ok=True)
    summary.to_csv(out_dir / "summary.csv", index=False, float_format="%.6g", lineterminator="\n")
    fig_dir = out_dir / "figures"
    made, fig_notes = plots.make_figures(frame, summary, doc, orders, fig_dir)
    for name in FIGURES:  # a figure this run could not draw must not survive from an older run
        if name not in made and (fig_dir / name).exists():
            (fig_dir / name).unlink()
    doc["figures"] = sorted(made)
    doc["notes"] = notes + fig_notes
    (out_dir / "fits.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    (out_dir / "report.md").write_text(render_report(doc, summary))
    doc["report"] = str(out_dir / "report.md")
    doc["break_even_text"] = describe_break_even(doc["break_even"])
    return doc


def _study_name(frame, out_dir: Path) -> str:
    names = sorted({str(s) for s in frame["study"].dropna().unique()}) if len(frame) else []
    return ", ".join(names) if names else out_dir.resolve().name


def _pct(v) -> str:
    return "-" if v is None or v != v else f"{100 * float(v):.2f}"


def render_report(doc: dict, summary) -> str:
    fams = doc["families"]
    lines = [f"# Scaling analysis: {doc['study']}", ""]
    lines += [
        f"- records: {doc['records']['used']} used of {doc['records']['total']} found",
        f"- cells (family x size x n_train): {doc['cells']}",
        f"- families: {', '.join(fams) if fams else 'none'}",
        f"- training-set sizes: {', '.join(f'{n:,}' for n in doc['n_train']) or 'none'}",
        f"- bootstrap: {doc['bootstrap']['resamples']} resamples, seed {doc['bootstrap']['seed']}",
        "",
    ]
    if doc["notes"]:
        lines += ["## What was skipped or excluded", ""] + [f"- {n}" for n in doc["notes"]] + [""]

    lines += _error_table(doc, summary)
    lines += _fits_section(doc)
    lines += ["## Break-even", ""]
    be = doc["break_even"]
    lines += [describe_break_even(be).replace("break-even: ", "- ", 1)]
    if be is not None:
        lines += [
            f"- families compared: {be['families'][0]} vs {be['families'][1]}; measured range of n "
            f"(both families): {_fmt_x(be['measured_range'][0])}..{_fmt_x(be['measured_range'][1])}",
            "- crossings of the fitted envelopes in "
            f"{_fmt_x(be['bracket'][0])}..{_fmt_x(be['bracket'][1])}: "
            + (", ".join(_fmt_x(c) for c in be["crossings"]) or "none"),
        ]
        if be.get("p_no_crossing") is not None:
            lines.append(
                f"- p_no_crossing = {be['p_no_crossing']:.3f} ({be['n_resamples'] - be['n_crossing']} of "
                f"{be['n_resamples']} bootstrap resamples never cross; {be['method']})"
            )
    lines.append("")
    lines += _winner_lines(doc)
    lines += ["## Figures", ""]
    captions = {
        "error_vs_n.png": "test error vs training-set size, per size (thin) and envelope (bold), fits and break-even",
        "error_vs_params.png": "test error vs parameter count, one panel per training-set size",
        "grid_heatmap.png": "the grid: test error (%) per family and size (rows) and training-set size (columns)",
        "error_vs_compute.png": "test error vs training compute, with each family's frontier",
    }
    for name in [f for f in FIGURES if f in doc["figures"]]:
        lines.append(f"- [{captions.get(name, name)}](figures/{name})")
    if not doc["figures"]:
        lines.append("- none (no data to plot)")
    lines.append("")
    return "\n".join(lines)


def _error_table(doc, summary) -> list[str]:
    if not len(summary):
        return ["## Test error (%)", "", "No cells.", ""]
    ns = doc["n_train"]
    lines = [
        "## Test error (%): mean ± std over seeds (number of seeds)",
        "",
        "| family | size | params | " + " | ".join(f"n={n:,}" for n in ns) + " |",
        "|---|---|---:|" + "---:|" * len(ns),
    ]
    for (fam, size), rows in summary.groupby(["family", "size"], sort=False):
        by_n = {int(r.n_train): r for r in rows.itertuples()}
        cells = []
        for n in ns:
            r = by_n.get(n)
            if r is None:
                cells.append("-")
            elif r.test_error_count > 1:
                cells.append(
                    f"{_pct(r.test_error_mean)} ± {_pct(r.test_error_std)} ({r.test_error_count})"
                )
            else:
                cells.append(f"{_pct(r.test_error_mean)} (1)")
        p = rows["params"].iloc[0]
        lines.append(
            f"| {fam} | {size} | {'-' if p is None or p != p else f'{int(p):,}'} | "
            + " | ".join(cells)
            + " |"
        )
    return lines + [""]


def _fits_section(doc) -> list[str]:
    lines = ["## Fitted curves", ""]
    if not doc["fits"]:
        return lines + ["No family to fit.", ""]
    lines += [
        "Envelope = each family's best size at each n. Forms: power `e_inf + a*n^-b`; "
        "m4 `(err-e_inf)/(e_0-err)^alpha = beta*n^-c`; joint `E + A/N^alpha + B/n^beta`. "
        "Huber loss on log residuals; the envelope form is chosen by how well it predicts the "
        "largest n when fitted without it.",
        "",
        "| family | chosen form | parameters | rmse (log) | why |",
        "|---|---|---|---:|---|",
    ]
    for fam, f in doc["fits"].items():
        rmse = "-" if f["rmse_log"] is None else f"{f['rmse_log']:.3g}"
        lines.append(
            f"| {fam} | {f['form'] or '-'} | {_fmt_params(f['params'])} | {rmse} | {f['selection']} |"
        )
    lines += ["", "Extrapolation check (fit without the largest n, predict it):", ""]
    for fam, f in doc["fits"].items():
        ex = f.get("extrapolation")
        if ex:
            lines.append(
                f"- {fam} ({f['form']}): at n = {_fmt_x(ex['x'])} predicted {_pct(ex['predicted'])}%, "
                f"observed {_pct(ex['observed'])}% (relative error {100 * ex['rel_error']:+.1f}%)"
            )
        else:
            lines.append(f"- {fam}: skipped (too few distinct n)")
        j = f.get("joint") or {}
        if "params" in j:
            jx = j.get("extrapolation")
            jtxt = (
                f"; without n = {_fmt_x(jx['x'])} it predicts that column with mean |log error| "
                f"{jx['mean_abs_log_error']:.3f}"
                if jx
                else ""
            )
            lines.append(
                f"  - joint fit: {_fmt_params(j['params'])}, rmse (log) {j['rmse_log']:.3g}{jtxt}"
            )
    return lines + [""]


def _winner_lines(doc) -> list[str]:
    w = doc.get("winners")
    lines = ["## Who wins", ""]
    if not w:
        return lines + ["- needs two families measured at a shared n", ""]
    for label in ("smallest", "largest"):
        r = w[label]
        lines.append(
            f"- at the {label} shared n ({r['n_train']:,}): {r['winner']} "
            f"({_pct(r[r['winner']])}% vs {_pct(r[r['loser']])}% for {r['loser']}, "
            f"{100 * r['margin']:.2f} points lower)"
        )
    return lines + [""]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="bench analyze",
        description="fit curves, find the break-even, write figures and report",
    )
    ap.add_argument(
        "results_dir", help="a study's results folder, e.g. results/<study> (searched recursively)"
    )
    ap.add_argument(
        "--bootstrap",
        type=int,
        default=1000,
        help="bootstrap resamples for the break-even CI (default 1000)",
    )
    ap.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    ap.add_argument(
        "--families", nargs="+", metavar="FAMILY", help="families to analyse (default: all present)"
    )
    args = ap.parse_args(argv)
    doc = analyze(
        args.results_dir, bootstrap=args.bootstrap, seed=args.seed, families=args.families
    )
    print(f"report: {doc['report']}")
    for note in doc["notes"]:
        print(f"note: {note}")
    print(doc["break_even_text"])
    return 0


# ---------------------------------------------------------------------------------------------
# bench fit


def fit_main(argv: list[str] | None = None) -> int:
    import pandas as pd

    ap = argparse.ArgumentParser(
        prog="bench fit", description="fit scaling curves and the break-even on any CSV"
    )
    ap.add_argument("csv", help="a table with one row per measurement")
    ap.add_argument("--x", required=True, help="column of the scaling variable (e.g. n_train)")
    ap.add_argument("--y", required=True, help="column of the error to fit (e.g. test_error)")
    ap.add_argument("--family", required=True, help="column naming each row's family")
    ap.add_argument(
        "--families", nargs="+", metavar="FAMILY", help="families to fit (default: all present)"
    )
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ap.add_argument(
        "--bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000)"
    )
    ap.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    args = ap.parse_args(argv)
    if args.bootstrap < 0:
        raise BenchError(f"--bootstrap must be >= 0, got {args.bootstrap}")

    try:
        table = pd.read_csv(args.csv)
    except FileNotFoundError as e:
        raise BenchError(f"cannot read {args.csv!r}: no such file") from e
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise BenchError(
            f"cannot read {args.csv!r}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from e
    for opt, col in (("--x", args.x), ("--y", args.y), ("--family", args.family)):
        if col not in table.columns:
            raise BenchError(
                f"{opt}: no column {col!r} in {args.csv} (columns: {', '.join(map(str, table.columns))})"
            )
    notes = []
    table = table[[args.x, args.y, args.family]].copy()
    for col in (args.x, args.y):
        table[col] = pd.to_numeric(table[col], errors="coerce")
    bad = table[args.x].isna() | table[args.y].isna() | table[args.family].isna()
    bad |= (table[args.x] <= 0) | (table[args.y] <= 0)
    if bad.any():
        notes.append(
            f"skipped {int(bad.sum())} rows with a missing, non-numeric or non-positive {args.x}/{args.y}"
        )
    table = table[~bad]
    table[args.family] = table[args.family].astype(str)
    present = sorted(table[args.family].unique().tolist())
    if args.families:
        absent = [f for f in args.families if f not in present]
        if absent:
            notes.append(
                f"--families: no usable rows for {', '.join(absent)} (present: {', '.join(present) or 'none'})"
            )
        fams = [f for f in args.families if f in present]
    else:
        fams = present
    result, _ = fit_families(
        table, fams, None, args.x, args.y, args.family, args.bootstrap, args.seed
    )
    result["notes"] = notes + result["notes"]
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
        return 0
    print(_fit_table(result, args.x))
    return 0


def _fit_table(result, x_name) -> str:
    rows = [("family", "form", "parameters", "rmse_log", "held-out largest x")]
    for fam, f in result["fits"].items():
        ex = f.get("extrapolation")
        ex_txt = (
            f"{x_name}={_fmt_x(ex['x'])}: predicted {ex['predicted']:.4g}, observed {ex['observed']:.4g}"
            if ex
            else "-"
        )
        rmse = "-" if f["rmse_log"] is None else f"{f['rmse_log']:.3g}"
        rows.append((fam, f["form"] or "-", _fmt_params(f["params"]), rmse, ex_txt))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    be = result["break_even"]
    out += ["", describe_break_even(be, x_name)]
    if be is not None:
        out.append("crossings: " + (", ".join(_fmt_x(c) for c in be["crossings"]) or "none"))
    out += [f"note: {n}" for n in result["notes"]]
    return "\n".join(out)
