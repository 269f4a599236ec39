"""Report sections on what a study may claim: title, facts, gap, capacity, compute, control.

Numbers in (the fits.json document), Markdown lines out; :mod:`bench.analysis.report` puts the
report together.
"""

from __future__ import annotations

from bench.analysis import claims
from bench.analysis import control as control_rows
from bench.analysis.formats import fmt_x, leader, pct, unsupported_text

# The moves of the standing that keep the study's cells from placing the break-even, as the verdict
# names them (control.move).
BUDGET_MOVES = {
    "changes": "the leader changes with the budget",
    "opens": "a tie becomes a lead",
    "closes": "a lead closes to within the noise",
}

# What the budget did to the lead at one control n (control.move), in its leader line.
STANDING = {
    "changes": "**the leader changes with the budget**",
    "closes": "**the lead closes to within the noise**",
    "opens": "a tie at the lower budget becomes a lead",
    "level": "level at both budgets",
    "same": "the same leader",
}


def _figure(doc: dict, name: str) -> list[str]:
    """A link to the figure, when this run drew it."""
    return [f"- figure: [{name}](figures/{name})"] if name in doc.get("figures", []) else []


def title(doc: dict) -> list[str]:
    """The title line, marked as a positive control when the study permutes tiles."""
    tile = doc.get("positive_control")
    if tile:
        inside = (
            ", and the pixels inside every tile by another" if doc.get("pixels_permuted") else ""
        )
        return [
            f"# Positive control: {doc['study']} (every image's {tile}x{tile}-pixel tiles "
            f"shuffled by one fixed permutation{inside})",
            "",
            "A positive control of the break-even machinery, not an answer about natural images: "
            "a ViT with learned position embeddings and patches of the tile size is blind to the "
            "permutation, while a ResNet's locality prior is made wrong. " + _control_shows(doc),
        ]
    return [f"# Scaling analysis: {doc['study']}"]


def _control_shows(doc: dict) -> str:
    """What the positive control says about the harness: only a crossing inside the data, or the
    ViT ahead everywhere, shows the machinery at work; anything else is said as a failure."""
    be = doc.get("break_even") or {}
    if be.get("kind") == "inside":
        crossing = f"n = {be['x']:,.0f} ({be['below']} ahead below, {be['above']} above)"
        undone = _crossing_undone(doc, be)
        if undone:
            return (
                f"What it shows: at its budget the fitted envelopes cross inside the measured "
                f"range at {crossing}, but {undone}: the crossing is the budget's, not placed."
            )
        return (
            f"What it shows: the harness finds a crossing inside the measured range at {crossing}."
        )
    flip = _vit_ahead_when_trained_longer(doc)
    arm = claims.arm_crossing_text(doc, after=flip)
    longer = (flip or (" at its budget" if arm else "")) + (f"; {arm}" if arm else "")
    points = (be.get("gap") or {}).get("points") or []
    signs = {p["log_ratio"] > 0 for p in points}
    if not points or len(signs) != 1:
        return "What it shows: no crossing the fits can place within the data" + longer + "."
    b, a = be["gap"]["families"]  # log_ratio = log(err_b / err_a): positive, a is ahead
    win = a if signs.pop() else b
    shown = (
        f"the {win} is ahead at every n measured, from {points[0]['n']:,} to {points[-1]['n']:,}"
    )
    if win == "vit":
        return f"What it shows: {shown}; the harness registers the broken locality prior."
    outside = (
        f" (the fitted curves cross only outside the data, at n = {be['x']:,.0f}, "
        f"{be['kind']}: not a finding)"
        if be.get("kind") == "extrapolated"
        else unsupported_text(be)
    )
    if longer:
        return f"What it shows: {shown}{outside}{longer}."
    starved = _lead_when_trained_longer(doc, win)
    if starved:
        return (
            f"What it shows: {shown}{outside} at its budget, but its largest-n cells are "
            f"compute-bound ({starved}): the control is inconclusive at this budget, not negative."
        )
    return (
        f"What it shows: {shown}{outside}. The permutation did not take the {win}'s lead away "
        "in this range, so this control does not show the harness finding a crossing."
    )


def _crossing_undone(doc: dict, be: dict) -> str:
    """Where the convergence control, above the crossing, hands the lead back to the family
    ahead below it: the crossing came from the budget. The clause, or ''."""
    rows = [
        r
        for r in control_rows.first_leaders(doc.get("control") or {})
        if r["n_train"] > be["x"] and r["leader_scaled"] == be["below"] and not r["level_scaled"]
    ]
    if not rows:
        return ""
    return (
        f"trained {control_rows.times_longer(rows[0]):g}x as long, the {be['below']} leads again "
        f"at n = {_ns(rows)} (see the convergence control)"
    )


def _lead_when_trained_longer(doc: dict, win: str) -> str:
    """Where the convergence control finds the largest n compute-bound and ``win`` still ahead
    there when trained longer: how its lead changed, as a clause; '' otherwise."""
    ctrl = doc.get("control") or {}
    if not ctrl.get("compute_bound") or not ctrl.get("largest_n"):
        return ""
    rows = control_rows.first_leaders(ctrl)
    rows = [r for r in rows if r["leader_scaled"] == win or r["level_scaled"]]
    if not rows:
        return ""
    r = rows[-1]
    (_, before), (_, after) = leader(r["base"]), leader(r["scaled"])
    longer = f"trained {control_rows.times_longer(r):g}x as long, the {win}'s lead at n = {r['n_train']:,}"
    if r["level_scaled"]:
        return f"{longer} ({before:.1f} points) closes to within the noise"
    return f"{longer} goes from {before:.1f} to {after:.1f} points"


def _control_grid(doc: dict) -> list[str]:
    """The convergence control's own coverage, with its missing cells named."""
    grid = doc.get("control_grid") or {}
    if not grid.get("expected"):
        return []
    missing = f"; missing: {', '.join(grid['missing'])}" if grid["missing"] else ""
    return [
        f"- convergence control: {grid['held']} of {grid['expected']} cells "
        f"(from {grid['source']}){missing}"
    ]


def _vit_ahead_when_trained_longer(doc: dict) -> str:
    """The convergence control's word on a control where, trained longer, the ViT leads beyond
    the noise where it did not before: the crossing is then hidden by the budget, not absent."""
    rows = [r for r in control_rows.first_leaders(doc.get("control") or {}) if _vit_takes(r)]
    if not rows:
        return ""
    led = [r for r in rows if not r["level_base"]]
    tied = [r for r in rows if r["level_base"]]
    where = [f"at n = {_ns(led)}, where the resnet led"] if led else []
    where += [f"at n = {_ns(tied)}, where the two were level"] if tied else []
    return (
        f" at its budget; trained {control_rows.times_longer(rows[0]):g}x as long, the vit leads "
        f"{' and '.join(where)}: the budget, not the data, hides the crossing (see the "
        "convergence control)"
    )


def facts(doc: dict) -> list[str]:
    lines = []
    warn = claims.seed_warning(doc["seeds_per_cell"])
    if warn:
        lines += [warn, ""]
    grid = doc["grid"]
    seeds = doc["seeds_per_cell"]
    seeds_txt = (
        str(seeds["min"]) if seeds["min"] == seeds["max"] else f"{seeds['min']}-{seeds['max']}"
    )
    lines += [
        f"- cells: {grid['held']} of {grid['expected']} cells of the grid (family x size x "
        f"n_train x seed; grid from {grid['source']})",
        *_control_grid(doc),
        f"- records: {doc['records']['used']} fitted, {doc['records']['control']} convergence "
        f"control, {doc['records']['total']} found",
        f"- families: {', '.join(doc['families']) or 'none'}; seeds per cell: {seeds_txt}",
        f"- training-set sizes: {', '.join(f'{n:,}' for n in doc['n_train']) or 'none'}",
        *_budget(doc),
        f"- bootstrap: {doc['bootstrap']['resamples']} resamples, seed {doc['bootstrap']['seed']}"
        + _pick_text(doc),
        f"- calibration against published numbers: {doc['calibration']['text']}",
        "- recipe (from the records' config):",
    ]
    lines += [f"  - {r}" for r in doc["recipes"]] or ["  - none recorded"]
    return lines


def _budget(doc: dict) -> list[str]:
    """A line when the study's own cells train longer than the budget rule gives."""
    base = doc.get("budget_scale", 1.0)
    if base == 1.0:
        return []
    return [f"- budget: every fitted cell at {base:g}x the budget rule (budget_scale={base:g})"]


def _pick_text(doc: dict) -> str:
    if not (doc.get("break_even") or {}).get("size_picks"):
        return ""
    return (
        "; where several sizes were measured at an n, each resample re-picks the envelope's size "
        "by validation error (the pick's own luck enters the intervals)"
    )


def missing(doc: dict) -> list[str]:
    grid = doc["grid"]
    if not grid["missing"]:
        return []
    lines = [
        f"## Missing cells: {len(grid['missing'])} of {grid['expected']}",
        "",
        f"Cells of the grid ({grid['source']}) with no completed record, per family and size:",
        "",
    ]
    return lines + [f"- {line}" for line in grid["by_model"]] + [""]


def gap(doc: dict) -> list[str]:
    be = doc.get("break_even") or {}
    g = be.get("gap")
    if not g or not g["points"]:
        return []
    b, a = g["families"]
    lines = [
        f"## The gap: log(err_{b} / err_{a}) against n",
        "",
        "Positive: the "
        + a
        + " is ahead. "
        + ", ".join(f"n = {p['n']:,}: {p['log_ratio']:+.3f}" for p in g["points"]),
    ]
    return lines + slope_lines(g) + _figure(doc, "gap_vs_n.png") + [""]


def slope_lines(g: dict) -> list[str]:
    """The gap's trend per decade of n with its interval, and which family it favours."""
    if g["slope_per_decade"] is None:
        return []
    b, a = g["families"]
    ci = g.get("slope_ci")
    ci_txt = f" (95% CI {ci[0]:+.3f} to {ci[1]:+.3f})" if ci else ""
    closing = _direction(g["slope_per_decade"], ci, a, b)
    return [f"- slope: {g['slope_per_decade']:+.3f} per decade of n{ci_txt}; {closing}"]


def _direction(slope: float, ci, a: str, b: str) -> str:
    if ci and ci[0] <= 0 <= ci[1]:
        return "the interval includes 0: no measurable trend in the gap"
    return f"the {b if slope < 0 else a} gains on the {a if slope < 0 else b} as n grows"


def capacity(doc: dict) -> list[str]:
    cap = doc.get("break_even_vs_params")
    if not cap:
        return []
    lines = ["## Break-even over model size (joint fits)", ""]
    if "skipped" in cap:
        return lines + [f"- skipped: {cap['skipped']}", ""]
    a, b = cap["families"]
    lo, hi = cap["bracket"]
    lines += [
        f"n at which each {b} rung equals a {a} of N parameters, from the joint fits "
        f"err(N, n); searched in n = {fmt_x(lo)}..{fmt_x(hi)} (a decade beyond the data); 95% band "
        f"from {cap['n_resamples']} resamples. '-' : no crossing there.",
        "",
        f"| {b} rung | " + " | ".join(f"{a} {s} ({p / 1e6:.2g}M)" for s, p in _sizes(cap)) + " |",
        "|---|" + "---:|" * len(cap["ladder_sizes"]),
    ]
    for rung in cap["rungs"]:
        cells = [_nstar(rung, cap["ladder"].index(p)) for _, p in _sizes(cap)]
        lines.append(
            f"| {rung['size']} ({rung['params'] / 1e6:.2g}M) | " + " | ".join(cells) + " |"
        )
    return lines + [""] + _figure(doc, "break_even_vs_params.png") + [""]


def _sizes(cap):
    return sorted(cap["ladder_sizes"].items(), key=lambda kv: kv[1])


def _nstar(rung, i) -> str:
    v, ci = rung["n_star"][i], rung["ci"][i]
    if v is None:
        return "-"
    if not ci:
        return fmt_x(v)
    return f"{fmt_x(v)} ({fmt_x(ci[0])}..{fmt_x(ci[1]) if ci[1] else 'open'})"


def compute(doc: dict) -> list[str]:
    c = doc.get("compute")
    if not c:
        return []
    lines = ["## At matched compute", ""]
    start = c["leader_from"]
    lines.append(
        f"- from {start['flops']:.3g} training FLOPs (where both families have a cell) the "
        f"{start['leader']} frontier is lower"
    )
    for ch in c["changes"]:
        lines.append(f"- at {ch['flops']:.3g} FLOPs the {ch['leader']} frontier becomes lower")
    if not c["changes"]:
        lines.append("- the frontiers do not cross over the measured compute")
    m = c["at_max"]
    fams = [f for f in m if f not in ("flops", "leader")]
    lines.append(
        f"- at the most compute measured ({m['flops']:.3g} FLOPs): "
        + ", ".join(f"{f} {pct(m[f])}%" for f in fams)
    )
    return lines + _figure(doc, "error_vs_compute.png") + [""]


def control(doc: dict) -> list[str]:
    ctrl = doc.get("control")
    lines = ["## Convergence control", ""]
    if not ctrl:
        return lines + [
            f"- none: no cell was trained at budget_scale {2 * doc.get('budget_scale', 1.0):g}, "
            "so nothing says whether the largest-n cells were still improving when training "
            "stopped",
            "",
        ]
    for r in ctrl["cells"]:
        if "gain" not in r:
            lines.append(f"- {r['family']} {r['size']} n={r['n_train']:,}: {r['verdict']}")
            continue
        lo, hi = r["gain_ci"]
        lines.append(
            f"- {r['family']} {r['size']} n={r['n_train']:,}: {pct(r['base_error'])}% at "
            f"{r.get('base_scale', 1.0):g}x "
            f"({r['base_seeds']} seeds), {pct(r['scaled_error'])}% at {r['budget_scale']:g}x "
            f"({r['scaled_seeds']}); gain {100 * r['gain']:+.2f} points (95% CI "
            f"{100 * lo:+.2f} to {100 * hi:+.2f}) against a spread of "
            f"{100 * r['spread']:.2f} ({r['spread_from']}): {_gain_verdict(r)}"
        )
    lines += [_leader_line(r) for r in ctrl.get("leaders", [])]
    where = "at the largest n" if ctrl["largest_n"] else "not at the largest n"
    base = f"{ctrl.get('base_scale', 1.0):g}x"
    if ctrl["compute_bound"] is None:
        verdict = f"no verdict (no {base} twins)"
    elif ctrl["compute_bound"] and ctrl["gain_resolved"]:
        verdict = "the cells are compute-bound: more training lowers their error beyond the noise"
    elif ctrl["compute_bound"]:
        verdict = (
            "the cells are compute-bound by the spread rule: more training lowers their error "
            "by more than a cell's seed spread, though within the noise of the difference (every "
            "gain's 95% CI includes 0)"
        )
    else:
        verdict = "the cells are not compute-bound: longer training changes them within the noise"
    verdict += _budget_moves(control_rows.first_leaders(ctrl), base)
    arms = map(_arm_verdict, ctrl.get("arms", []))
    return lines + [
        f"- verdict ({where}): {verdict}",
        *arms,
        *_figure(doc, "error_vs_budget.png"),
        "",
    ]


def _gain_verdict(r: dict) -> str:
    """The spread rule's verdict, and whether the gain's interval clears zero: a gain past one
    cell's spread can still be within the noise of a difference of means (few seeds a side)."""
    if not r["compute_bound"]:
        return "not compute-bound"
    if r["gain_resolved"]:
        return "**compute-bound**"
    return "**compute-bound** by the spread rule, though the gain's 95% CI includes 0"


def _vit_takes(r: dict) -> bool:
    """Trained longer, the ViT leads beyond the noise where it did not lead at the lower budget."""
    return r["leader_scaled"] == "vit" and control_rows.move(r) in ("changes", "opens")


def _ns(rows: list[dict]) -> str:
    return ", ".join(f"{r['n_train']:,}" for r in rows)


def _budget_moves(first: list[dict], base: str) -> str:
    """Where more training moves the families' standing (a new leader, a tie that becomes a lead,
    a lead that closes to a tie), as a clause for the verdict; '' where it moves nowhere."""
    said = [
        f"{what} at n = {_ns(rows)}"
        for kind, what in BUDGET_MOVES.items()
        if (rows := [r for r in first if control_rows.move(r) == kind])
    ]
    return f"; {'; '.join(said)}, so the {base} cells cannot place the break-even" if said else ""


def _arm_verdict(arm: dict) -> str:
    """A longer control's verdict on a shorter control arm."""
    ns = ", ".join(f"{n:,}" for n in arm["n_train"])
    base, top = f"{arm['base_scale']:g}x", f"{arm['budget_scale']:g}x"
    if control_rows.within_noise(arm):
        bound = ", ".join(f"{n:,}" for n in arm["bound_n"])
        return (
            f"- verdict on the {base} cells (n = {ns}): compute-bound by the spread rule at "
            f"n = {bound}: the {top} cells are better by more than a cell's seed spread, though "
            "within the noise of the difference (the gain's 95% CI includes 0), so the "
            f"{base} cells may not be converged there"
        )
    if arm["compute_bound"]:
        bound = ", ".join(f"{n:,}" for n in arm.get("resolved_n", arm["bound_n"]))
        return (
            f"- verdict on the {base} cells (n = {ns}): compute-bound as well at n = {bound}: "
            f"the {top} cells are better beyond the noise, so the {base} cells are not converged "
            "there either"
        )
    return (
        f"- verdict on the {base} cells (n = {ns}): not compute-bound: {top} training changes "
        "them within the noise"
    )


def _leader_line(r: dict) -> str:
    """Who leads at one control n at 1x and at the scaled budget, and by how much."""

    def lead(errs: dict, scale: str, level: bool, noise: float) -> str:
        win, points = leader(errs)
        lo, hi = points - 100 * noise, points + 100 * noise
        tie = ", within the noise: level" if level else ""
        return (
            f"at {scale} the {win} leads by {points:.2f} points (95% CI {lo:.2f} to {hi:.2f}{tie})"
        )

    scaled = lead(r["scaled"], f"{r['budget_scale']:g}x", r["level_scaled"], r["noise_scaled"])
    base = lead(r["base"], f"{r.get('base_scale', 1.0):g}x", r["level_base"], r["noise_base"])
    return f"- n={r['n_train']:,}: {base}, {scaled}: {STANDING[control_rows.move(r)]}"
