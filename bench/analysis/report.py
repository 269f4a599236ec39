"""Every word the analysis writes: the study report, the ``bench fit`` table, the fine-tuning
comparison, and the one-line break-even. Numbers in, Markdown or plain text out."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.analysis import control, scaled_arm, sections
from bench.analysis.formats import ci_text, fmt_params, fmt_x, pct, unsupported_text
from bench.analysis.frame import LADDER
from bench.results.records import iter_records

# Figure files in the order the report lists them, with their captions.
CAPTIONS = {
    "error_vs_n.png": "test error vs training-set size, per size (thin) and envelope (bold), fits and break-even",
    "error_vs_params.png": "test error vs parameter count, one panel per training-set size",
    "grid_heatmap.png": "the grid: test error (%) per family and size (rows) and training-set size (columns)",
    "error_vs_compute.png": "test error vs training compute, with each family's frontier",
    "gap_vs_n.png": "the gap log(err_b / err_a) vs training-set size, with its trend",
    "break_even_vs_params.png": "break-even n* for each ViT rung against ResNets across the ladder",
    "error_vs_budget.png": "the convergence control: test error vs training budget, one panel per n",
}
WHERE = {
    "inside": "inside the measured range",
    "above": "extrapolated above the measured range",
    "below": "extrapolated below the measured range",
}


# ---------------------------------------------------------------------- the break-even line
def describe_break_even(crossing: dict | None, x_name: str = "n") -> str:
    """One line, as far as the data carry it: a crossing inside the range or at most a decade
    beyond it, else the lower bound the gap's trend allows, else that the trend does not close it."""
    if crossing is None:
        return "break-even: not computed (needs an envelope fit for two families)"
    kind = crossing.get("kind")
    if kind in ("inside", "extrapolated"):
        where = (
            "inside the measured range"
            if kind == "inside"
            else f"extrapolated, {WHERE[crossing['side']].split(' ', 1)[1]} (at most one decade)"
        )
        return (
            f"break-even: {x_name}* = {fmt_x(crossing['x'])}"
            f"{ci_text(crossing.get('ci'), crossing['bracket'])}, {where}; "
            f"{crossing['below']} lower below, {crossing['above']} lower above"
        )
    hi = crossing["measured_range"][1]
    lead = f"the {crossing['leader']} is still ahead at {x_name} = {fmt_x(hi)}"
    lead += unsupported_text(crossing, x_name)
    if kind == "lower_bound":
        return (
            f"break-even: none within a decade of the data; {lead}; at the measured trend the "
            f"crossing lies beyond {x_name} = {fmt_x(crossing['beyond'])} with 95% confidence"
        )
    if crossing.get("trend_passed"):
        return (
            f"break-even: none within a decade of the data; {lead}, though the gap's trend line "
            f"reaches zero at {x_name} = {fmt_x(crossing['trend_passed'])}, inside the data: the "
            f"trend and the largest {x_name} disagree, so no crossing and no bound is placed"
        )
    return f"break-even: none within a decade of the data; {lead}; the trend does not close the gap"


# ---------------------------------------------------------------------- bench analyze: report.md
def render_report(doc: dict, summary: pd.DataFrame) -> str:
    lines = sections.title(doc) + ["", f"**Headline:** {doc['headline']}", ""]
    lines += sections.facts(doc) + [""]
    if doc["notes"]:
        lines += ["## What was skipped or excluded", ""] + [f"- {n}" for n in doc["notes"]] + [""]
    lines += _error_table(doc, summary)
    lines += _fits_section(doc)
    lines += _break_even_section(doc["break_even"])
    lines += sections.gap(doc)
    lines += sections.capacity(doc)
    lines += sections.compute(doc)
    lines += sections.control(doc)
    lines += _scaled_arm_sections(doc)
    lines += _winner_lines(doc)
    lines += sections.missing(doc)
    lines += _figure_lines(doc["figures"])
    return "\n".join(lines)


def _scaled_arm_sections(doc: dict) -> list[str]:
    """The convergence control fitted as its own grid, where it spans enough n."""
    lines = []
    for arm in doc.get("scaled_arms") or []:
        scale = f"{arm['budget_scale'] / doc.get('budget_scale', 1.0):g}x"
        intro = [
            f"The convergence control's {arm['cells']} cells span n = "
            f"{', '.join(f'{n:,}' for n in arm['n_train'])}: fitted as a grid of its own, "
            f"trained {scale} as long, with the same envelopes, bootstrap and break-even rules. "
            + _arm_convergence(doc, arm["budget_scale"]),
            "",
        ]
        intro += [
            f"- {fam}: {f['form'] or 'no fit'}, {fmt_params(f['params'])}"
            + (f"; **at bound**: {', '.join(f['at_bound'])}" if f.get("at_bound") else "")
            for fam, f in arm["fits"].items()
        ]
        gap = (arm["break_even"] or {}).get("gap")
        intro += sections.slope_lines(gap) if gap else []
        intro += _against_shorter_arm(doc, arm["budget_scale"])
        heading = f"## Break-even at the {scale} budget (the convergence control as a grid)"
        lines += _break_even_section(arm["break_even"], heading, intro + [""])
    return lines


def _against_shorter_arm(doc: dict, scale: float) -> list[str]:
    """For the longest arm that places a crossing: whether the next shorter arm's interval holds
    it, i.e. whether more training moved the crossing beyond the bootstrap's uncertainty."""
    shorter = scaled_arm.versus_shorter(doc.get("scaled_arms") or [])
    if shorter is None or shorter["longest"]["budget_scale"] != scale:
        return []
    x = fmt_x(shorter["longest"]["x"])
    ci = ci_text(shorter.get("ci"), shorter["bracket"])
    where = f"the {shorter['budget_scale']:g}x arm's crossing, n = {fmt_x(shorter['x'])}{ci}"
    if shorter["verdict"] == "held":
        return [
            f"- against {where}: n* = {x} lies inside that interval; more training did not "
            "move the crossing beyond the bootstrap's uncertainty"
        ]
    if shorter["verdict"] == "overlap":
        return [
            f"- against {where}: n* = {x} lies outside that interval, but the two intervals "
            "overlap: whether more training moved the crossing is not resolved"
        ]
    return [
        f"- against {where}: n* = {x} lies outside that interval, and the two intervals do not "
        "meet; the crossing moves with the budget: it has not settled at these budgets"
    ]


def _arm_convergence(doc: dict, scale: float) -> str:
    """What a longer control says about the arm's own convergence, or that nothing checks it."""
    verdicts = [a for a in (doc.get("control") or {}).get("arms", []) if a["base_scale"] == scale]
    if not verdicts:
        longer = f"{2 * scale:g}x"
        return f"Nothing checks these cells' own convergence (that takes a control at {longer})."
    v = verdicts[0]
    ns = ", ".join(f"{n:,}" for n in v["n_train"])
    if v["compute_bound"]:
        bound = v.get("bound_n", v["n_train"])
        where = "" if bound == v["n_train"] else " at n = " + ", ".join(f"{n:,}" for n in bound)
        word = f"**still compute-bound**{where}"
        if control.within_noise(v):
            word += " by the spread rule, though within the noise of the difference"
    else:
        word = "not compute-bound"
    return f"Their own convergence, checked at {v['budget_scale']:g}x at n = {ns}: {word}."


def _break_even_section(
    crossing: dict | None, heading: str = "## Break-even", intro: list[str] = ()
) -> list[str]:
    line = describe_break_even(crossing).replace("break-even: ", "- ", 1)
    lines = [heading, "", *intro, line]
    if crossing is not None:
        lo, hi = crossing["measured_range"]
        b_lo, b_hi = crossing["bracket"]
        lines += [
            f"- kind: `{crossing['kind']}`; families compared: {crossing['families'][0]} vs "
            f"{crossing['families'][1]}; measured range of n (both): {fmt_x(lo)}..{fmt_x(hi)}",
            f"- crossings of the fitted envelopes searched in {fmt_x(b_lo)}..{fmt_x(b_hi)} "
            "(one decade beyond the data, no farther): "
            + (", ".join(fmt_x(c) for c in crossing["crossings"]) or "none"),
        ]
        if crossing.get("p_no_crossing") is not None:
            never = crossing["n_resamples"] - crossing["n_crossing"]
            sides = crossing.get("resamples_crossing") or {}
            where = ", ".join(f"{v} of them {k} the measured range" for k, v in sides.items() if v)
            lines.append(
                f"- bootstrap: {never} of {crossing['n_resamples']} resamples do not cross within "
                f"that range"
                + (f"; the others cross, {where}" if where else "")
                + f" ({crossing['method']})"
            )
        lines += _pick_lines(crossing.get("size_picks") or {})
        if crossing.get("trend_crossing"):
            lines.append(
                f"- the gap's straight-line trend reaches zero at n = "
                f"{fmt_x(crossing['trend_crossing'])} (point estimate, far beyond the data)"
            )
    return lines + [""]


def _pick_lines(picks: dict) -> list[str]:
    """How often each size won the re-pick, per family, at the n where the pick ever changed."""
    if not picks:
        return []
    lines = []
    for fam, rows in picks.items():
        changed = [r for r in rows if r["resamples"][r["full_data"]] < sum(r["resamples"].values())]
        parts = [
            f"n={fmt_x(r['n'])}: "
            + ", ".join(f"{g} {c}" for g, c in r["resamples"].items())
            + f" (full data: {r['full_data']})"
            for r in changed
        ]
        if parts:
            lines.append(f"- {fam}: size re-picked by validation error, " + "; ".join(parts))
    return lines or ["- size re-picked by validation error: the full-data size in every resample"]


def _figure_lines(figures: list[str]) -> list[str]:
    lines = ["## Figures", ""]
    lines += [
        f"- [{caption}](figures/{name})" for name, caption in CAPTIONS.items() if name in figures
    ]
    if not figures:
        lines.append("- none (no data to plot)")
    return lines + [""]


def _error_table(doc, summary) -> list[str]:
    """Mean test error per family, size and n; a convergence control's cells in rows of their
    own below their 1x row, so every budget's numbers sit side by side."""
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
        cells = [_error_cell(by_n.get(n)) for n in ns]
        p = rows["params"].iloc[0]
        shown = "-" if p is None or pd.isna(p) else f"{int(p):,}"
        lines.append(f"| {fam} | {size} | {shown} | " + " | ".join(cells) + " |")
        for scale, at_n in _control_rows(doc, fam, size):
            cells = [_control_cell(at_n.get(n)) for n in ns]
            lines.append(
                f"| {fam} | {size} at {scale:g}x budget | {shown} | " + " | ".join(cells) + " |"
            )
    return lines + [""]


def _control_rows(doc, fam, size) -> list[tuple[float, dict]]:
    """(budget scale, {n: control cell}) for the convergence control of one family and size."""
    cells = [
        c for c in (doc.get("control") or {}).get("cells", [])
        if c["family"] == fam and c["size"] == size
    ]  # fmt: skip
    scales = sorted({c["budget_scale"] for c in cells})
    return [(s, {c["n_train"]: c for c in cells if c["budget_scale"] == s}) for s in scales]


def _control_cell(c) -> str:
    if c is None:
        return "-"
    if c.get("scaled_std") is not None:
        return f"{pct(c['scaled_error'])} ± {pct(c['scaled_std'])} ({c['scaled_seeds']})"
    return f"{pct(c['scaled_error'])} ({c['scaled_seeds']})"


def _error_cell(row) -> str:
    if row is None:
        return "-"
    if row.test_error_count > 1:
        return f"{pct(row.test_error_mean)} ± {pct(row.test_error_std)} ({row.test_error_count})"
    return f"{pct(row.test_error_mean)} (1)"


def _fits_section(doc) -> list[str]:
    lines = ["## Fitted curves", ""]
    if not doc["fits"]:
        return lines + ["No family to fit.", ""]
    lines += [
        "Envelope = each family's best size at each n, picked on validation error. Forms: power "
        "`e_inf + a*n^-b`; m4 `(err-e_inf)/(e_0-err)^alpha = beta*n^-c`; joint "
        "`E + A/N^alpha + B/n^beta`. Huber loss on log residuals; the envelope form is chosen by "
        "how well it predicts the largest n when fitted without it. A parameter marked **at "
        "bound** sits on the limit of its allowed range: the data do not determine it.",
        "",
        "| family | chosen form | parameters | at bound | floor e_inf: range within the noise | rmse (log) | why |",
        "|---|---|---|---|---|---:|---|",
    ]
    for fam, f in doc["fits"].items():
        rmse = "-" if f["rmse_log"] is None else f"{f['rmse_log']:.3g}"
        bound = ", ".join(f"**{p}**" for p in f.get("at_bound") or []) or "none"
        lines.append(
            f"| {fam} | {f['form'] or '-'} | {fmt_params(f['params'])} | {bound} | "
            f"{_floor_text(f.get('floor'))} | {rmse} | {f['selection']} |"
        )
    for fam, f in doc["fits"].items():
        for form, why in sorted((f.get("not_fitted") or {}).items()):
            lines.append(f"- {fam}: {form} {why}")
    lines += ["", "Extrapolation check (fit without the largest n, predict it):", ""]
    for fam, f in doc["fits"].items():
        lines += _extrapolation_lines(fam, f)
    return lines + [""]


def _floor_text(floor: dict | None) -> str:
    if not floor:
        return "-"
    lo, hi = floor["range"]
    word = "identified" if floor["identified"] else "**unidentified** (wide)"
    reach = " and ".join(floor.get("reaches") or [])
    reach = f"; reaches {reach}" if reach else ""
    return f"{pct(lo)}..{pct(hi)}% ({word}{reach}; noise: {floor.get('noise_from', '?')})"


def _extrapolation_lines(fam: str, f: dict) -> list[str]:
    ex = f.get("extrapolation")
    if ex:
        lines = [
            f"- {fam} ({f['form']}): at n = {fmt_x(ex['x'])} predicted {pct(ex['predicted'])}%, "
            f"observed {pct(ex['observed'])}% (relative error {100 * ex['rel_error']:+.1f}%)"
        ]
    else:
        lines = [f"- {fam}: skipped (too few distinct n)"]
    joint = f.get("joint") or {}
    if "params" in joint:
        jx = joint.get("extrapolation")
        jtxt = (
            f"; without n = {fmt_x(jx['x'])} it predicts that column with mean |log error| "
            f"{jx['mean_abs_log_error']:.3f}"
            if jx
            else ""
        )
        bound = joint.get("at_bound") or []
        btxt = f"; **at bound**: {', '.join(bound)}" if bound else ""
        lines.append(
            f"  - joint fit: {fmt_params(joint['params'])}, rmse (log) {joint['rmse_log']:.3g}"
            f"{btxt}{jtxt}"
        )
    return lines


def _winner_lines(doc) -> list[str]:
    w = doc.get("winners")
    lines = ["## Who wins", ""]
    if not w:
        return lines + ["- needs two families measured at a shared n", ""]
    for label in ("smallest", "largest"):
        r = w[label]
        lines.append(
            f"- at the {label} shared n ({r['n_train']:,}): {r['winner']} "
            f"({pct(r[r['winner']])}% vs {pct(r[r['loser']])}% for {r['loser']}, "
            f"{100 * r['margin']:.2f} points lower)"
        )
    return lines + [""]


# ---------------------------------------------------------------------- bench fit: a table
def fit_table(result: dict, x_name: str) -> str:
    rows = [("family", "form", "parameters", "at bound", "rmse_log", "held-out largest x")]
    for fam, f in result["fits"].items():
        ex = f.get("extrapolation")
        ex_txt = (
            f"{x_name}={fmt_x(ex['x'])}: predicted {ex['predicted']:.4g}, observed {ex['observed']:.4g}"
            if ex
            else "-"
        )
        rmse = "-" if f["rmse_log"] is None else f"{f['rmse_log']:.3g}"
        bound = ",".join(f.get("at_bound") or []) or "-"
        rows.append((fam, f["form"] or "-", fmt_params(f["params"]), bound, rmse, ex_txt))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    crossing = result["break_even"]
    out += ["", describe_break_even(crossing, x_name)]
    if crossing is not None:
        out.append("crossings: " + (", ".join(fmt_x(c) for c in crossing["crossings"]) or "none"))
    out += [f"note: {n}" for n in result["notes"]]
    return "\n".join(out)


# ---------------------------------------------------------------------- fine-tuning comparison
def finetune_rows(study_dir: str | Path) -> list[dict]:
    """One row per completed record that went through a fine-tuning phase."""
    rows = []
    records = list(iter_records(study_dir))
    errors = {r["run_id"]: (r.get("metrics") or {}).get("test_error") for r in records}
    for rec in records:
        cfg = rec.get("config") or {}
        ft = rec.get("finetune")
        if not isinstance(ft, dict) and cfg.get("finetune_img_size"):
            # an in-cell phase whose record does not carry the phase block: its config says it
            ft = {"from_img_size": cfg.get("img_size"), "img_size": cfg["finetune_img_size"]}
        if rec.get("status") != "completed" or not isinstance(ft, dict):
            continue
        pre = rec.get("pretrain") or {}
        rows.append(
            dict(
                family=cfg.get("family"),
                size=cfg.get("size"),
                n_train=(rec.get("data") or {}).get("n_train", cfg.get("n_train")),
                seed=cfg.get("seed"),
                from_img_size=ft.get("from_img_size"),
                img_size=ft.get("img_size"),
                test_error=(rec.get("metrics") or {}).get("test_error"),
                # in-cell: the pre-training phase; a `bench finetune` cell: its parent's record
                pretrain_error=pre.get("test_error", errors.get(ft.get("parent"))),
                run_id=rec.get("run_id"),
            )
        )
    return rows


def finetune_report(study_dir: str | Path) -> str:
    """Markdown: per ViT size and training-set size, test error after continuing at the
    pre-training resolution vs after fine-tuning at the higher one, and the difference."""
    rows = [r for r in finetune_rows(study_dir) if r["test_error"] is not None]
    if not rows:
        return f"No completed fine-tuning records under {study_dir}.\n"
    groups, higher_sizes = _finetune_groups(rows)
    to = "/".join(str(s) for s in sorted(higher_sizes)) or "higher"
    lines = [
        f"Test error (%) after the fine-tuning phase: continued at the pre-training resolution "
        f"vs fine-tuned at {to} px, the same steps and recipe; mean over seeds (n = runs per arm). "
        "Difference = fine-tuned − continued (negative: the higher resolution helps).",
        "",
        "| family | size | n_train | from px | pre-trained | continued (same px) | fine-tuned (higher px) | difference (pp) | n |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key in sorted(groups, key=_finetune_sort_key):
        lines.append(_finetune_line(key, groups[key], several_sizes=len(higher_sizes) > 1))
    return "\n".join(lines) + "\n"


def _finetune_groups(rows: list[dict]) -> tuple[dict, set]:
    """Rows grouped by (family, size, n_train, from px) into same-px and higher-px arms."""
    groups: dict[tuple, dict] = {}
    higher_sizes = set()
    for r in rows:
        key = (r["family"], r["size"], r["n_train"], r["from_img_size"])
        g = groups.setdefault(key, {"same": [], "higher": [], "pre": [], "to": set()})
        if r["img_size"] == r["from_img_size"]:
            g["same"].append(r["test_error"])
        else:
            g["higher"].append(r["test_error"])
            g["to"].add(r["img_size"])
            higher_sizes.add(r["img_size"])
        if r["pretrain_error"] is not None:
            g["pre"].append(r["pretrain_error"])
    return groups, higher_sizes


def _mean(xs):
    return sum(xs) / len(xs) if xs else None


def _finetune_pct(x) -> str:
    return "–" if x is None else f"{100 * x:.2f}"


def _finetune_sort_key(key):
    fam, size, n, px = key
    rank = LADDER.index(size) if size in LADDER else len(LADDER)
    return (str(fam), rank, float(n) if isinstance(n, (int, float)) else 1e18, px or 0)


def _finetune_line(key, g, several_sizes: bool) -> str:
    fam, size, n, px = key
    same, higher = _mean(g["same"]), _mean(g["higher"])
    diff = None if same is None or higher is None else higher - same
    label = _finetune_pct(higher)
    if several_sizes:
        label += f" ({'/'.join(map(str, sorted(g['to'])))} px)"
    diff_s = "–" if diff is None else f"{100 * diff:+.2f}"
    return (
        f"| {fam} | {size} | {n} | {px} | {_finetune_pct(_mean(g['pre']))} | "
        f"{_finetune_pct(same)} | {label} | {diff_s} | {len(g['same'])}/{len(g['higher'])} |"
    )
