"""What a study may claim: its recipe, its calibration, its control, and the headline they allow.

A break-even is a statement about converged, well-tuned models. Until a study's cells meet their
calibration targets (records carry a ``calibration`` block with ``met``; absent: not recorded)
and its convergence control finds the largest-n cells not compute-bound, the headline is the
measured lead ("the ResNet leads by X points at n = Y (k seeds)"), not a break-even.
"""

from __future__ import annotations

import pandas as pd

from bench.analysis import control, scaled_arm
from bench.analysis.formats import ci_text, ci_words, fmt_x, lead_range, leader
from bench.analysis.scaling import round6

# Config fields that describe how a cell was trained (shown when present in the records).
RECIPE_FIELDS = ("lr", "weight_decay", "batch_size", "label_smoothing", "warmup", "budget")
FEW_SEEDS = 3


def _augment_text(row: dict) -> str:
    """The recipe's name. A record written before recipes existed trained with ``basic`` (its
    run_id is the same), so it reads the same as one that names it."""
    recipe = row.get("recipe")
    name = "basic" if recipe is None or pd.isna(recipe) else str(recipe)
    if name == "basic":
        name = "basic (crop+flip)"
    return name if row.get("augment", True) not in (False, 0) else f"{name}, augmentation off"


def recipes(frame: pd.DataFrame) -> list[str]:
    """Each distinct recipe of the study's cells, per family, as one line of text."""
    out = set()
    for row in frame.to_dict("records"):
        fields = [
            f"{k}={row[k]:g}" if isinstance(row[k], float) else f"{k}={row[k]}"
            for k in RECIPE_FIELDS
            if k in row and row[k] is not None and not pd.isna(row[k])
        ]
        text = _augment_text(row) + (f"; {', '.join(fields)}" if fields else "")
        out.add(f"{row['family']}: {text}")
    return sorted(out)


def calibration(frame: pd.DataFrame) -> dict:
    """{met: True/False/None, text}: None when no record carries a calibration."""
    if "calibration_met" not in frame or frame["calibration_met"].isna().all():
        return {"met": None, "text": "not recorded"}
    met = frame["calibration_met"].fillna(False).astype(bool)
    text = (
        "met by every cell"
        if met.all()
        else f"not met by {int((~met).sum())} of {len(met)} records"
    )
    return {"met": bool(met.all()), "text": text}


def positive_control(frame: pd.DataFrame) -> int | None:
    """The tile size of a patch-permuted study (a positive control), else None."""
    if "permute_patches" not in frame:
        return None
    values = frame["permute_patches"].dropna()
    return int(values.iloc[0]) if len(values) else None


def pixels_permuted(frame: pd.DataFrame) -> bool:
    """A positive control that also shuffles the pixels inside each tile."""
    return "permute_pixels" in frame and bool(frame["permute_pixels"].fillna(False).any())


def lead(doc: dict) -> dict | None:
    """Who leads at the largest n both families share, by how much, and on how many seeds."""
    w = doc.get("winners")
    if not w:
        return None
    r = w["largest"]
    fits = doc["fits"]
    counts = [
        e["count"]
        for f in (r["winner"], r["loser"])
        for e in fits[f]["envelope"]
        if e["x"] == r["n_train"]
    ]
    be = doc.get("break_even") or {}
    ci = be.get("lead_ci")
    if ci is not None and be.get("families") and r["winner"] != be["families"][0]:
        ci = [-ci[1], -ci[0]]  # lead_ci is family b minus family a; turn it to the winner's lead
    return {
        "leader": r["winner"],
        "other": r["loser"],
        "n_train": r["n_train"],
        "points": round6(100 * r["margin"]),
        "points_ci": None if ci is None else [round6(100 * c) for c in ci],
        "seeds": min(counts) if counts else 0,
    }


def headline(doc: dict) -> str:
    """The sentence the study's evidence supports."""
    ld = lead(doc)
    be = doc.get("break_even") or {}
    ctrl = doc.get("control") or {}
    converged = ctrl.get("compute_bound") is False and ctrl.get("largest_n")
    calibrated = (doc.get("calibration") or {}).get("met") is True
    if ld is None:
        return "No headline: the two families share no training-set size."
    ci = ld["points_ci"]
    ci_txt = lead_range(*ci) if ci and ld["seeds"] > 1 else ""
    seeds = f"{ld['seeds']} seed" + ("s" if ld["seeds"] != 1 else "")
    text = (
        f"the {ld['leader']} leads by {ld['points']:.1f} points{ci_txt} at n = {ld['n_train']:,} "
        f"({seeds})" + _budget_turns(ctrl, ld)
    )
    arm = arm_crossing_text(doc, after=text)
    text += f"; {arm}" if arm else ""
    if calibrated and converged and be.get("kind") in ("inside", "extrapolated"):
        return text + f"; break-even at n = {be['x']:,.0f} ({be['kind']})"
    missing = [
        w for w, ok in (("calibration", calibrated), ("convergence control", converged)) if not ok
    ]
    return text + f"; no break-even claim until the study meets its {' and '.join(missing)}"


def _budget_turns(ctrl: dict, ld: dict) -> str:
    """The convergence control's word on the lead at the headline's n: when more training hands
    the lead to the other family, the measured lead is the budget's; when it closes to within the
    noise, the two are level; when the leader holds, how far it leads trained longer (a lead that
    shrinks with the budget is partly the budget's)."""
    for r in control.first_leaders(ctrl):
        if r["n_train"] != ld["n_train"]:
            continue
        win, points = leader(r["scaled"])
        scale = f"{control.times_longer(r):g}x"
        if r["level_scaled"]:
            return (
                f", but trained {scale} as long the two are level there (the {win} "
                f"{points:.1f} points ahead, within the noise)"
            )
        ci = _lead_ci(points, r)
        if win != ld["leader"]:
            return f", but trained {scale} as long the {win} leads there by {points:.1f} points{ci}"
        return f"; trained {scale} as long, by {points:.1f} points{ci}"
    return ""


def _lead_ci(points: float, row: dict) -> str:
    """The 95% interval of a lead at the control's budget, as a clause."""
    half = 100 * row["noise_scaled"]
    return lead_range(points - half, points + half)


def arm_crossing_text(doc: dict, after: str = "") -> str:
    """The break-even of the longest-trained arm that places one (:mod:`scaled_arm`), as a
    clause, with what a still longer control says of that arm's own convergence; '' when none.
    ``after``: the clause before it, which may already have named the budget."""
    cross = scaled_arm.crossing_of(doc.get("scaled_arms") or [])
    if not cross:
        return ""
    where = "inside its measured range" if cross["kind"] == "inside" else "extrapolated"
    scale = f"{cross['budget_scale'] / doc.get('budget_scale', 1.0):g}x"
    lead = "at that budget" if f"trained {scale} as long" in after else f"trained {scale} as long,"
    text = (
        f"{lead} the fitted envelopes cross at "
        f"n = {fmt_x(cross['x'])}{ci_text(cross.get('ci'), cross['bracket'])}, {where}"
    )
    arms = (doc.get("control") or {}).get("arms", [])
    checked = [a for a in arms if a["base_scale"] == cross["budget_scale"]]
    if not checked:
        text += " (no control at a longer budget checks those cells' convergence)"
    elif checked[0]["compute_bound"]:
        ns = ", ".join(f"{n:,}" for n in checked[0]["bound_n"])
        noise = " by the spread rule" if control.within_noise(checked[0]) else ""
        text += f" (but those cells are still compute-bound{noise} at n = {ns})"
    else:
        ns = ", ".join(f"{n:,}" for n in checked[0]["n_train"])
        longer = f"{checked[0]['budget_scale'] / doc.get('budget_scale', 1.0):g}x"
        text += f" (trained {longer} as long at n = {ns}, they gain no more than the seed spread)"
    return text + _shorter_arm_clause(doc)


def _shorter_arm_clause(doc: dict) -> str:
    """How the longest arm's crossing compares with the next shorter arm's, when both place one:
    a crossing that stays put as training doubles is not the budget's artefact."""
    shorter = scaled_arm.versus_shorter(doc.get("scaled_arms") or [])
    if shorter is None:
        return ""
    ci = ci_words(shorter.get("ci"), shorter["bracket"])
    at = f"the {shorter['budget_scale']:g}x arm's crossing (n = {fmt_x(shorter['x'])}"
    at += f", {ci})" if ci else ")"
    if shorter["verdict"] == "held":
        return f", within the interval of {at}"
    if shorter["verdict"] == "overlap":
        return (
            f", outside the interval of {at}, though the two intervals overlap: whether more "
            "training moved the crossing is not resolved"
        )
    return f", apart from the interval of {at}: the crossing moves with the budget"


def seed_warning(seeds: dict) -> str | None:
    """The first line of a report whose cells have fewer than 3 seeds."""
    if seeds["min"] >= FEW_SEEDS:
        return None
    return (
        f"**Fewer than {FEW_SEEDS} seeds per cell (fewest: {seeds['min']}).** Intervals carry "
        "only the noise the seeds (or, with one seed, the test set) show; seed-to-seed spread of "
        "real training is larger, so every interval below is too narrow."
    )
