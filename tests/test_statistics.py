"""The statistics a reviewer accepts: seed-bootstrap coverage, break-even kinds, bound flags,
0% cells, validation-picked sizes, the convergence control and missing cells."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import brentq

from bench.analysis import (
    breakeven,
    claims,
    control,
    formats,
    identify,
    report,
    scaled_arm,
    scaling,
    sections,
)
from bench.analysis.analyze import analyze
from bench.cli import main
from bench.results.records import write_record

NS = np.geomspace(1000, 200000, 6)


def resnet(n):
    return 0.10 + 1.5 * np.asarray(n, float) ** -0.3


def vit(n):
    return 0.04 + 30.0 * np.asarray(n, float) ** -0.5


def true_crossing(f, g):
    return 10 ** brentq(lambda t: math.log(f(10**t)) - math.log(g(10**t)), 2, 8)


def envelopes(curves, ns, seeds, noise, rng):
    """One group per family, ``seeds`` noisy values per n: envelopes and power-law fits."""
    envs, fits = {}, {}
    for name, f in curves.items():
        x = np.repeat(np.asarray(ns, float), seeds)
        y = f(x) * np.exp(rng.normal(0.0, noise, x.size))
        envs[name] = scaling.envelope(scaling.group_seeds([""] * len(x), x, y))
        fits[name] = scaling.fit_form("power", x, y)
    return envs, fits


# ------------------------------------------------------------------------------ the bootstrap
def test_seed_bootstrap_interval_covers_the_true_crossing_in_most_studies():
    true = true_crossing(resnet, vit)
    assert NS[0] < true < NS[-1]
    hits = 0
    with scaling.single_threaded_blas():
        for study in range(40):
            rng = np.random.default_rng(1000 + study)
            envs, fits = envelopes({"resnet": resnet, "vit": vit}, NS, 3, 0.03, rng)
            out = breakeven.analyse_pair(envs, fits, ["resnet", "vit"], {}, 60, seed=study)
            lo, hi = out["ci"]
            hits += lo <= true <= (hi or math.inf)
            assert "seeds resampled within each cell" in out["method"]
    assert hits >= 34, f"the 95% interval covered the truth in {hits} of 40 studies"


def test_one_seed_cells_get_the_test_sets_binomial_noise():
    rng = np.random.default_rng(0)
    envs, fits = envelopes({"resnet": resnet, "vit": vit}, NS, 1, 0.0, rng)
    with_noise = breakeven.analyse_pair(
        envs, fits, ["resnet", "vit"], {"resnet": 10_000, "vit": 10_000}, 50, 0
    )
    assert "binomial" in with_noise["method"]
    lo, hi = with_noise["ci"]
    assert lo < with_noise["x"] < hi  # noise-free points: the width is the test set's noise
    bigger = breakeven.analyse_pair(
        envs, fits, ["resnet", "vit"], {"resnet": 500, "vit": 500}, 50, 0
    )
    assert bigger["ci"][1] / bigger["ci"][0] > hi / lo  # a smaller test set, a wider interval


# ------------------------------------------------------------------------------ kinds
def test_curves_that_do_not_cross_within_a_decade_get_a_lower_bound_not_a_point():
    def slow_vit(n):  # closes the gap on the ResNet by 0.1 per decade: equal only at n = 1e7
        return resnet(n) * np.exp(0.1 * (7 - np.log10(n)))

    ns = np.geomspace(1000, 20000, 5)
    assert true_crossing(resnet, slow_vit) > 10 * ns.max()
    envs, fits = envelopes(
        {"resnet": resnet, "vit": slow_vit}, ns, 3, 0.01, np.random.default_rng(1)
    )
    out = breakeven.analyse_pair(envs, fits, ["resnet", "vit"], {}, 100, 0)
    assert out["x"] is None and out["ci"] is None
    assert out["kind"] == "lower_bound" and out["leader"] == "resnet"
    assert 10 * ns.max() < out["beyond"] < 1e7  # a bound short of the true crossing
    assert max(out["bracket"]) == pytest.approx(10 * ns.max())  # no search to 1e9


def test_a_gap_that_widens_has_no_trend_to_a_crossing():
    def worse(n):
        return 0.05 + 1.0 * np.asarray(n, float) ** -0.15

    envs, fits = envelopes({"resnet": resnet, "vit": worse}, NS, 3, 0.01, np.random.default_rng(2))
    out = breakeven.analyse_pair(envs, fits, ["resnet", "vit"], {}, 60, 0)
    assert out["kind"] == "no_trend" and out["beyond"] is None and out["trend_passed"] is None
    assert out["gap"]["slope_per_decade"] > 0  # the ViT falls further behind as n grows


def test_a_crossing_below_the_data_is_never_a_finding_however_backed():
    # the vit falls further behind from n = 1k on; its fit and the resnet's meet near n = 500,
    # below the data, and the resamples agree. Below the data every curve bends towards chance,
    # which the fitted forms do not follow: the answer is about the data, not that meeting.
    def behind(n):
        return resnet(n) * (1 + 0.1 * np.log10(np.asarray(n, float) / 500))

    envs, fits = envelopes(
        {"resnet": resnet, "vit": behind}, NS, 3, 0.005, np.random.default_rng(4)
    )
    out = breakeven.analyse_pair(envs, fits, ["resnet", "vit"], {}, 60, 0)
    assert out["x"] is None and out["ci"] is None and out["kind"] == "no_trend"
    u = out["unsupported"]
    assert u["side"] == "below" and 100 < u["x"] < NS[0]
    assert u["resamples"] > 30  # most resamples place it there too: still not a finding
    line = report.describe_break_even(out)
    assert "below the data, where the curves bend towards chance" in line and "n*" not in line


def test_a_trend_past_zero_with_the_leader_still_ahead_places_nothing():
    # The gap of a real control: the vit level by 10k, behind again at 30k. The line through the
    # four points reaches zero near 24k, inside the data, while the resnet leads at 30k: the
    # report must not say the trend "does not close the gap", nor place a bound.
    ratio = {1000: 0.057, 3000: 0.019, 10000: -0.004, 30000: 0.009}
    ns = np.array(sorted(ratio), dtype=float)

    def bumpy(n):
        return resnet(n) * np.exp([ratio[int(v)] for v in np.atleast_1d(n)])

    envs, _ = envelopes({"resnet": resnet, "vit": bumpy}, ns, 3, 0.002, np.random.default_rng(0))
    x = np.repeat(ns, 3)  # fits handed in that do not cross, as the study's did not
    fits = {
        "resnet": scaling.fit_form("power", x, resnet(x)),
        "vit": scaling.fit_form("power", x, resnet(x) * 1.02),
    }
    out = breakeven.analyse_pair(envs, fits, ["resnet", "vit"], {}, 100, 0)
    assert out["kind"] == "no_trend" and out["leader"] == "resnet" and out["beyond"] is None
    assert 10_000 < out["trend_passed"] < 30_000
    line = report.describe_break_even(out)
    assert (
        "the resnet is still ahead at n = 30,000, though the gap's trend line reaches zero" in line
    )
    assert "does not close the gap" not in line


def test_a_crossing_just_beyond_the_data_is_labelled_extrapolated():
    ns = np.geomspace(1000, 20000, 5)  # true crossing ~71k: within a decade
    envs, fits = envelopes({"resnet": resnet, "vit": vit}, ns, 3, 0.01, np.random.default_rng(3))
    out = breakeven.analyse_pair(envs, fits, ["resnet", "vit"], {}, 60, 0)
    assert out["kind"] == "extrapolated" and out["side"] == "above"
    assert ns.max() < out["x"] <= 10 * ns.max()


def test_an_extrapolated_crossing_the_resamples_do_not_back_is_not_reported():
    # The data: a vit 4% behind at every n (no trend, no crossing). The fits handed in meet
    # beyond the data, at n ~ 110k, as near-parallel fits may; no resample of the data does.
    ns = np.geomspace(1000, 30000, 4)

    def level(n):
        return resnet(n) * 1.04

    envs, _ = envelopes({"resnet": resnet, "vit": level}, ns, 3, 0.01, np.random.default_rng(5))
    x = np.repeat(ns, 3)
    meets = resnet(x) * (1.04 - 0.02 * np.log10(x / 1000))  # level with the resnet at 100k
    fits = {
        "resnet": scaling.fit_form("power", x, resnet(x)),
        "vit": scaling.fit_form("power", x, meets),
    }
    out = breakeven.analyse_pair(envs, fits, ["resnet", "vit"], {}, 100, 0)
    assert out["crossings"] == [pytest.approx(1.1e5, rel=0.2)]  # the fits do cross there
    assert out["x"] is None and out["ci"] is None and out["kind"] in ("lower_bound", "no_trend")
    assert out["unsupported"] == {"x": out["crossings"][0], "side": "above", "resamples": 0}
    line = report.describe_break_even(out)
    assert "the resnet is still ahead at n = 30,000 (the fitted curves cross at n = 11" in line
    assert "above the data, but only 0 of 100 resamples do: not a finding)" in line


# ------------------------------------------------------------------------------ identification
def test_a_parameter_at_its_bound_is_flagged():
    x = np.repeat(NS, 2)
    no_floor = scaling.fit_form("power", x, 2.0 * x**-0.3)  # the floor wants to be below 0
    assert "e_inf" in no_floor.at_bound
    assert no_floor.to_dict()["at_bound"] == ["e_inf"]
    fine = scaling.fit_form("power", x, resnet(x))
    assert fine.at_bound == ()


def test_floor_profile_says_when_the_floor_is_not_identified():
    x = np.repeat(np.geomspace(1000, 3000, 4), 3)  # a narrow range: any floor fits
    y = resnet(x) * np.exp(np.random.default_rng(4).normal(0, 0.02, x.size))
    fit = scaling.fit_form("power", x, y)
    loose = identify.floor_profile(fit, x, y, noise_var=0.02**2)
    assert loose["identified"] is False
    assert loose["range"][0] <= fit.params["e_inf"] <= loose["range"][1]
    x = np.repeat(np.geomspace(1000, 1e7, 8), 3)
    tight = identify.floor_profile(scaling.fit_form("power", x, resnet(x)), x, resnet(x), 1e-6)
    assert tight["identified"] is True and tight["range"][0] <= 0.10 <= tight["range"][1]
    assert tight["reaches"] == []  # pinned by the data, not by 0 or the lowest observation


def test_m4_is_not_fitted_without_enough_n_and_says_why():
    x = np.repeat(NS[:4], 3)
    result = scaling.fit_family(x, resnet(x), x_name="n_train")
    assert "m4" not in result["fits"]
    assert "at least 5 distinct n_train" in result["not_fitted"]["m4"]


# ------------------------------------------------------------------------------ studies on disk
def record(
    folder,
    family,
    size,
    n,
    seed,
    err,
    val=None,
    params=1e6,
    scale=1.0,
    n_test=10_000,
    n_val=None,
    tag="",
    **cfg,
):
    config = {"family": family, "size": size, "n_train": n, "seed": seed, "budget_scale": scale}
    config.update(cfg)
    rid = f"{family}-{size}-n{n}-s{seed}-x{scale:g}" + (f"-{tag}" if tag else "")
    write_record(
        {
            "schema": 1,
            "run_id": rid,
            "study": "stats",
            "status": "completed",
            "error": None,
            "config": config,
            "data": {"n_train": n, "n_test": n_test} | ({"n_val": n_val} if n_val else {}),
            "params": int(params),
            "flops_per_image": 2.0 * params,
            "train_flops": 6.0 * params * n * 30 * scale,
            "metrics": {"test_error": err, "val_error": err if val is None else val},
            "timing": {},
            "env": {},
            "wandb": {},
            "created_at": "2026-01-01T00:00:00Z",
            "finished_at": "2026-01-01T00:01:00Z",
        },
        Path(folder) / "runs",
    )


def small_study(folder, seeds=3, ns=(1000, 4000, 16000, 64000), skip=()):
    rng = np.random.default_rng(5)
    for fam, f in (("resnet", resnet), ("vit", vit)):
        for size, p in (("xs", 1e6), ("s", 4e6)):
            for n in ns:
                for s in range(seeds):
                    if (fam, size, n, s) in skip:
                        continue
                    err = float(
                        f(n) * (1.0 if size == "s" else 1.05) * math.exp(rng.normal(0, 0.02))
                    )
                    record(folder, fam, size, n, s, err, params=p)
    return Path(folder)


def test_a_zero_error_cell_is_kept_and_floored(tmp_path):
    folder = small_study(tmp_path, seeds=1)
    record(folder, "resnet", "xs", 1000, 0, 0.0, val=0.01, params=1e6, n_test=200)
    doc = analyze(folder, bootstrap=20)
    summary = pd.read_csv(folder / "summary.csv")
    cell = summary[
        (summary["family"] == "resnet") & (summary["size"] == "xs") & (summary["n_train"] == 1000)
    ]
    assert len(cell) == 1 and cell["test_error_mean"].iloc[0] == 0.0
    env = {e["x"]: e for e in doc["fits"]["resnet"]["envelope"]}
    assert env[1000]["group"] == "xs" and env[1000]["mean"] == pytest.approx(0.5 / 200)
    report = (folder / "report.md").read_text()
    assert "0% test error" in report and "0.5 / n_test" in report
    assert "missing" not in " ".join(doc["notes"])


def test_best_size_per_n_is_picked_on_validation_error(tmp_path):
    # At every n, size "s" has the lower test error but the higher validation error.
    for fam, f in (("resnet", resnet), ("vit", vit)):
        for n in (1000, 4000, 16000, 64000):
            record(tmp_path, fam, "xs", n, 0, float(f(n)) * 1.1, val=0.2, params=1e6)
            record(tmp_path, fam, "s", n, 0, float(f(n)), val=0.3, params=4e6)
    doc = analyze(tmp_path, bootstrap=0)
    for fam in ("resnet", "vit"):
        assert {e["group"] for e in doc["fits"][fam]["envelope"]} == {"xs"}


@pytest.mark.parametrize("gain, bound", [(0.05, True), (0.001, False)])
def test_convergence_control_verdict_both_ways(gain, bound):
    main_rows, ctrl_rows = [], []
    for noise in (-0.004, 0.0, 0.004):
        main_rows.append(
            {
                "family": "vit",
                "size": "s",
                "n_train": 50000,
                "test_error": 0.30 + noise,
                "n_test": 10000,
            }
        )
        ctrl_rows.append(
            {
                "family": "vit",
                "size": "s",
                "n_train": 50000,
                "test_error": 0.30 - gain + noise,
                "budget_scale": 2.0,
            }
        )
    out = control.compare(pd.DataFrame(main_rows), pd.DataFrame(ctrl_rows))
    assert out["compute_bound"] is bound and out["largest_n"] is True
    assert out["cells"][0]["spread_from"].startswith("seed std")


def test_a_gain_past_the_spread_but_within_the_noise_is_unresolved():
    # 3 seeds at 1x (std 0.4 points) against one 2x seed 0.5 points better: past the 1x cell's
    # spread, but the one seed carries a whole seed's noise, so the gain's interval spans 0.
    main = pd.DataFrame(_family_rows({"vit": 0.300}, 1.0, seeds=3, jitter=0.004))
    one = pd.DataFrame(_family_rows({"vit": 0.295}, 2.0, seeds=1, jitter=0.0))
    out = control.compare(main, one)
    (cell,) = out["cells"]
    lo, hi = cell["gain_ci"]
    assert cell["compute_bound"] and lo < 0 < cell["gain"] < hi
    assert not cell["gain_resolved"] and out["compute_bound"] and not out["gain_resolved"]
    text = "\n".join(sections.control({"control": out}))
    assert "the gain's 95% CI includes 0" in text and "within the noise of the difference" in text
    # three seeds at 2x, 2 points better: the interval clears 0
    three = pd.DataFrame(_family_rows({"vit": 0.280}, 2.0, seeds=3, jitter=0.004))
    out = control.compare(main, three)
    assert out["cells"][0]["gain_ci"][0] > 0 and out["gain_resolved"]
    assert "lowers their error beyond the noise" in "\n".join(sections.control({"control": out}))


def test_control_cells_are_compared_not_fitted(tmp_path):
    folder = small_study(tmp_path)
    for s in range(3):
        record(folder, "vit", "s", 64000, s, float(vit(64000)) * 0.8, params=4e6, scale=2.0)
    doc = analyze(folder, bootstrap=0)
    assert doc["records"]["control"] == 3 and doc["records"]["used"] == 48
    assert all(e["count"] == 3 for e in doc["fits"]["vit"]["envelope"])
    assert doc["control"]["compute_bound"] is True
    report = (folder / "report.md").read_text()
    assert "**compute-bound**" in report and "## Convergence control" in report
    assert "no break-even claim" in doc["headline"]


def test_missing_cells_are_listed_from_the_records_or_the_sweep(tmp_path):
    folder = small_study(tmp_path / "a", skip={("vit", "s", 64000, 2), ("resnet", "xs", 1000, 0)})
    doc = analyze(folder, bootstrap=0)
    assert doc["grid"]["expected"] == 48 and doc["grid"]["held"] == 46
    assert doc["grid"]["missing"] == ["resnet xs n=1,000 seed 0", "vit s n=64,000 seed 2"]
    report = (folder / "report.md").read_text()
    assert "46 of 48 cells" in report and "## Missing cells: 2 of 48" in report
    assert "- vit s: n=64,000 (seeds 2)" in report

    (folder / "sweep.yaml").write_text(
        "parameters:\n  family: {values: [vit, resnet]}\n  size: {values: [xs, s]}\n"
        "  n_train: {values: [1000, 4000, 16000, 64000, all]}\n  seed: {values: [0, 1, 2]}\n"
    )
    doc = analyze(folder, bootstrap=0)
    assert doc["grid"]["expected"] == 60 and doc["grid"]["source"] == "the sweep sweep.yaml"
    assert "vit s n=all seed 1" in doc["grid"]["missing"]

    # a second sweep feeding the same study (as bench grid keeps it): the grids add up
    (folder / "sweeps").mkdir()
    (folder / "sweeps" / "ladder.yaml").write_text(
        "parameters:\n  family: {value: resnet}\n  size: {value: xxs}\n"
        "  n_train: {values: [1000, 4000]}\n  seed: {values: [0, 1, 2]}\n"
    )
    doc = analyze(folder, bootstrap=0)
    assert doc["grid"]["expected"] == 66
    assert doc["grid"]["source"] == "the sweeps sweep.yaml, ladder.yaml"
    assert "resnet xxs n=4,000 seed 2" in doc["grid"]["missing"]

    # a convergence-control sweep (budget_scale 2) is counted apart, against the 2x records
    (folder / "sweeps" / "control.yaml").write_text(
        "parameters:\n  family: {values: [vit, resnet]}\n  size: {value: s}\n"
        "  n_train: {value: 64000}\n  seed: {values: [0, 1, 2]}\n  budget_scale: {value: 2}\n"
    )
    record(folder, "vit", "s", 64000, 0, float(vit(64000)) * 0.9, params=4e6, scale=2.0)
    doc = analyze(folder, bootstrap=0)
    assert doc["grid"]["expected"] == 66
    ctrl = doc["control_grid"]
    assert (ctrl["expected"], ctrl["held"]) == (6, 1)
    assert "vit s n=64,000 seed 1 at 2x" in ctrl["missing"]
    assert "- convergence control: 1 of 6 cells" in (folder / "report.md").read_text()
    # a 4x check of the 2x arm trains seed 0 again: the 2x record does not stand in for it
    (folder / "sweeps" / "control4.yaml").write_text(
        "parameters:\n  family: {values: [vit, resnet]}\n  size: {value: s}\n"
        "  n_train: {value: 64000}\n  seed: {value: 0}\n  budget_scale: {value: 4}\n"
    )
    ctrl = analyze(folder, bootstrap=0)["control_grid"]
    assert (ctrl["expected"], ctrl["held"]) == (8, 1)
    assert "vit s n=64,000 seed 0 at 4x" in ctrl["missing"]
    # a sweep adding a seed at 1x and at 2x feeds both grids: its 1x cells are the study's
    (folder / "sweeps" / "seeds.yaml").write_text(
        "parameters:\n  family: {value: vit}\n  size: {value: s}\n"
        "  n_train: {value: 64000}\n  seed: {value: 3}\n  budget_scale: {values: [1, 2]}\n"
    )
    doc = analyze(folder, bootstrap=0)
    assert doc["grid"]["expected"] == 67 and "vit s n=64,000 seed 3" in doc["grid"]["missing"]
    assert "seeds.yaml" in doc["grid"]["source"]
    ctrl = doc["control_grid"]
    assert ctrl["expected"] == 9 and "vit s n=64,000 seed 3 at 2x" in ctrl["missing"]


def test_few_seeds_and_the_positive_control_are_said_first(tmp_path, capsys):
    folder = small_study(tmp_path, seeds=1)
    record(folder, "vit", "s", 256000, 0, float(vit(256000)), params=4e6, permute_patches=4)
    assert main(["analyze", str(folder), "--bootstrap", "20"]) == 0
    lines = (folder / "report.md").read_text().splitlines()
    assert lines[0].startswith("# Positive control: stats")
    head = "\n".join(lines[:12])
    assert "Fewer than 3 seeds" in head and "**Headline:**" in head
    doc = json.loads((folder / "fits.json").read_text())
    assert doc["headline"].startswith("the ")
    assert "leads by" in doc["headline"] and "(1 seed)" in doc["headline"]
    # these records name no recipe, as before recipes existed: they read as basic, as they were
    assert doc["recipes"] == ["resnet: basic (crop+flip)", "vit: basic (crop+flip)"]


def test_fit_keeps_a_zero_row_with_n_test(tmp_path, capsys):
    path = tmp_path / "t.csv"
    rows = ["arch,n,err"] + [f"{f.__name__},{n:.0f},{f(n):.6f}" for f in (resnet, vit) for n in NS]
    rows.append("vit,500,0")
    path.write_text("\n".join(rows) + "\n")
    argv = ["fit", str(path), "--x=n", "--y=err", "--family=arch", "--json", "--bootstrap", "20"]
    assert main([*argv, "--n_test", "1000"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["fits"]["vit"]["envelope"][0] == {"x": 500, "group": "", "mean": 0.0005, "count": 1}
    assert "binomial" in doc["break_even"]["method"]
    assert main([*argv, "--n_test", "0"]) == 2


def test_a_positive_control_claims_a_crossing_only_inside_the_data():
    def doc(kind, ratios, x=181.0):
        points = [
            {"n": n, "log_ratio": r} for n, r in zip((1000, 3000, 10000), ratios, strict=True)
        ]
        gap = {"families": ["vit", "resnet"], "points": points}
        be = {"kind": kind, "x": x, "below": "resnet", "above": "vit", "gap": gap}
        return {"study": "c", "positive_control": 4, "break_even": be}

    inside = " ".join(sections.title(doc("inside", [0.1, 0.0, -0.1], x=3000.0)))
    assert "finds a crossing inside the measured range at n = 3,000" in inside
    behind = " ".join(sections.title(doc("extrapolated", [0.08, 0.1, 0.18])))
    assert "the resnet is ahead at every n measured" in behind and "not a finding" in behind
    assert "does not show the harness finding a crossing" in behind
    # a convergence control that finds the largest n compute-bound, the resnet still ahead there
    # when trained longer but by less: inconclusive at this budget, not a negative result
    main_ = pd.DataFrame(_family_rows({"resnet": 0.443, "vit": 0.459}, 1.0))
    ctrl = control.compare(main_, pd.DataFrame(_family_rows({"resnet": 0.423, "vit": 0.428}, 2.0)))
    starved = " ".join(sections.title({**doc("no_trend", [0.08, 0.1, 0.04]), "control": ctrl}))
    assert "the resnet is ahead at every n measured, from 1,000 to 10,000 at its budget" in starved
    assert "the resnet's lead at n = 30,000 goes from 1.6 to 0.5 points" in starved
    assert "inconclusive at this budget, not negative" in starved
    assert "does not show the harness finding a crossing" not in starved
    ahead = " ".join(sections.title(doc("lower_bound", [-0.1, -0.2, -0.3])))
    assert "the vit is ahead at every n measured" in ahead and "registers" in ahead
    assert "and the pixels inside every tile" not in ahead
    pixels = {**doc("inside", [0.1, 0.0, -0.1], x=3000.0), "pixels_permuted": True}
    assert "and the pixels inside every tile by another" in sections.title(pixels)[0]
    # a crossing at 3,000 whose largest n, trained longer, is the resnet's again: the budget's
    main_ = pd.DataFrame(_family_rows({"resnet": 0.326, "vit": 0.317}, 4.0))
    longer = pd.DataFrame(_family_rows({"resnet": 0.295, "vit": 0.313}, 8.0))
    ctrl = control.compare(main_, longer, own=4.0)
    undone = " ".join(
        sections.title({**doc("inside", [0.1, 0.0, -0.1], x=3000.0), "control": ctrl})
    )
    assert "the resnet leads again at n = 30,000" in undone and "trained 2x as long" in undone
    assert "the crossing is the budget's, not placed" in undone
    assert "the harness finds a crossing" not in undone
    # trained longer, the vit keeps the lead above the crossing: the crossing stands
    kept = pd.DataFrame(_family_rows({"resnet": 0.315, "vit": 0.300}, 8.0))
    ctrl = control.compare(main_, kept, own=4.0)
    stands = " ".join(
        sections.title({**doc("inside", [0.1, 0.0, -0.1], x=3000.0), "control": ctrl})
    )
    assert "finds a crossing inside the measured range at n = 3,000" in stands


def _family_rows(errors: dict, scale: float, seeds: int = 3, jitter: float = 0.002) -> list[dict]:
    """One cell per family at n = 30k, its seeds spread evenly by ``jitter`` around ``err``."""
    return [
        {
            "family": fam,
            "size": "xs",
            "n_train": 30000,
            "test_error": err + jitter * (i - (seeds - 1) / 2),
            "n_test": 10000,
            "budget_scale": scale,
        }
        for fam, err in errors.items()
        for i in range(seeds)
    ]


@pytest.mark.parametrize("vit_2x, changes", [(0.37, True), (0.41, False)])
def test_the_control_says_when_more_training_changes_the_leader(vit_2x, changes):
    main = pd.DataFrame(_family_rows({"resnet": 0.438, "vit": 0.442}, 1.0))
    ctrl = pd.DataFrame(_family_rows({"resnet": 0.402, "vit": vit_2x}, 2.0))
    out = control.compare(main, ctrl)
    (row,) = out["leaders"]
    assert row["leader_base"] == "resnet" and row["changes"] is changes
    assert row["leader_scaled"] == ("vit" if changes else "resnet")
    text = "\n".join(sections.control({"control": out}))
    assert ("**the leader changes with the budget**" in text) is changes
    assert ("cannot place the break-even" in text) is changes
    doc = {"control": out, "break_even": {"kind": "no_trend"}, "positive_control": 4, "study": "c"}
    shows = " ".join(sections.title(doc))
    assert ("the budget, not the data, hides the crossing" in shows) is changes
    env = {"envelope": [{"x": 30000, "count": 3}]}
    largest = {"winner": "resnet", "loser": "vit", "n_train": 30000, "margin": 0.004}
    doc.update(winners={"largest": largest}, fits={"resnet": env, "vit": env})
    # the lead trained longer carries its interval: 3 seeds a side, std 0.2 points, +-0.32
    turned = "but trained 2x as long the vit leads there by 3.2 points (95% CI 2.9 to 3.5)"
    assert (turned in claims.headline(doc)) is changes
    # where the leader holds, the headline says by how much it leads trained longer
    held = "leads by 0.4 points at n = 30,000 (3 seeds); trained 2x as long, by 0.8 points (95% CI"
    assert (held in claims.headline(doc)) is not changes


def test_a_lead_within_the_noise_is_a_tie_not_a_change_of_leader():
    # 1x: the resnet leads by 0.4 points against a standard error of 0.16 (3 seeds, std 0.2):
    # a lead. 2x: the vit is 0.1 points ahead, within the noise: level, not a new leader.
    main = pd.DataFrame(_family_rows({"resnet": 0.438, "vit": 0.442}, 1.0))
    ctrl = pd.DataFrame(_family_rows({"resnet": 0.402, "vit": 0.401}, 2.0))
    out = control.compare(main, ctrl)
    (row,) = out["leaders"]
    assert row["leader_scaled"] == "vit" and row["level_scaled"] and not row["level_base"]
    assert row["changes"] is False
    text = "\n".join(sections.control({"control": out}))
    assert (
        "at 2x the vit leads by 0.10 points (95% CI -0.22 to 0.42, within the noise: level)" in text
    )
    assert "**the lead closes to within the noise**" in text
    assert "a lead closes to within the noise at n = 30,000, so the 1x cells cannot" in text
    assert "the leader changes" not in text
    doc = {"control": out, "break_even": {"kind": "no_trend"}, "positive_control": 4, "study": "c"}
    env = {"envelope": [{"x": 30000, "count": 3}]}
    largest = {"winner": "resnet", "loser": "vit", "n_train": 30000, "margin": 0.004}
    doc.update(winners={"largest": largest}, fits={"resnet": env, "vit": env})
    level = "but trained 2x as long the two are level there (the vit 0.1 points ahead, within"
    assert level in claims.headline(doc)
    points = [{"n": 1000, "log_ratio": 0.08}, {"n": 30000, "log_ratio": 0.01}]
    doc["break_even"]["gap"] = {"families": ["vit", "resnet"], "points": points}
    shows = " ".join(sections.title(doc))
    assert "hides the crossing" not in shows
    assert "the resnet's lead at n = 30,000 (0.4 points) closes to within the noise" in shows
    # the other way round: a tie at 1x that trained longer becomes a vit lead beyond the noise
    main = pd.DataFrame(_family_rows({"resnet": 0.440, "vit": 0.441}, 1.0))
    ctrl = pd.DataFrame(_family_rows({"resnet": 0.402, "vit": 0.37}, 2.0))
    doc["control"] = control.compare(main, ctrl)
    text = "\n".join(sections.control(doc))
    assert "a tie at the lower budget becomes a lead" in text
    assert "a tie becomes a lead at n = 30,000, so the 1x cells cannot" in text
    shows = " ".join(sections.title(doc))
    assert "the vit leads at n = 30,000, where the two were level: the budget" in shows


def test_a_control_over_enough_n_is_fitted_as_its_own_grid(tmp_path):
    # At 1x the vit is starved (50% worse everywhere); trained 2x as long over four n, the true
    # curves cross near n = 70k, inside the arm's range.
    rng = np.random.default_rng(3)
    for fam, f, starved in (("resnet", resnet, 1.0), ("vit", vit, 1.5)):
        for n in (4000, 16000, 64000, 256000):
            for s in range(3):
                noise = math.exp(rng.normal(0, 0.01))
                err = float(f(n)) * noise
                record(tmp_path, fam, "s", n, s, err * starved, permute_patches=4)
                record(tmp_path, fam, "s", n, s, err, scale=2.0, permute_patches=4)
    doc = analyze(tmp_path, bootstrap=50)
    (arm,) = doc["scaled_arms"]
    assert arm["budget_scale"] == 2.0 and arm["cells"] == 24
    be = arm["break_even"]
    assert be["kind"] == "inside" and 0.5 < be["x"] / true_crossing(resnet, vit) < 2
    assert doc["break_even"]["kind"] != "inside"  # the 1x grid alone places no crossing
    claim = f"the fitted envelopes cross at n = {be['x']:,.0f}"
    assert claim in doc["headline"]
    assert "(no control at a longer budget checks those cells' convergence)" in doc["headline"]
    report = (tmp_path / "report.md").read_text()
    assert "## Break-even at the 2x budget" in report and claim in report.splitlines()[2]
    # the control's cells sit in the error table, a row per budget under their 1x row
    table = report[report.index("## Test error") : report.index("## Fitted curves")].splitlines()
    rows = [r.split(" | ")[:2] for r in table if r.startswith("| vit")]
    assert rows == [["| vit", "s"], ["| vit", "s at 2x budget"]]
    twice = next(r for r in table if "s at 2x budget" in r and r.startswith("| vit"))
    at_4000 = float(twice.split(" | ")[3].split(" ")[0])  # "mean ± std (seeds)" at n = 4,000
    assert twice.count("(3)") == 4 and abs(at_4000 - 100 * float(vit(4000))) < 1
    assert (tmp_path / "figures" / "error_vs_n.png").exists()
    # a 4x check that finds the 2x arm still improving at its largest n qualifies the claim
    record(tmp_path, "vit", "s", 256000, 0, float(vit(256000)) * 0.8, scale=4.0)
    headline = analyze(tmp_path, bootstrap=0)["headline"]
    assert "(but those cells are still compute-bound at n = 256,000)" in headline
    assert "no control at a longer budget" not in headline
    # a 4x arm over three n is a third grid: compared with the 2x arm's crossing, and drawn
    for fam, f in (("resnet", resnet), ("vit", vit)):
        for n in (16000, 64000, 256000):
            for s in range(3):
                record(tmp_path, fam, "s", n, s, float(f(n)) * (0.99 + 0.002 * s), scale=4.0)
    figures = [tmp_path / "figures" / name for name in ("error_vs_n.png", "gap_vs_n.png")]
    for fig in figures:
        fig.unlink()
    doc = analyze(tmp_path, bootstrap=50)
    assert [a["budget_scale"] for a in doc["scaled_arms"]] == [2.0, 4.0]
    assert "trained 4x as long, the fitted envelopes cross" in doc["headline"]
    assert "the 2x arm's crossing" in doc["headline"]
    assert "- against the 2x arm's crossing, n = " in (tmp_path / "report.md").read_text()
    assert all(fig.exists() for fig in figures)  # both arms drawn, each in its own look


def test_a_longer_check_that_finds_an_arm_converged_says_so():
    check = {"base_scale": 4.0, "budget_scale": 8.0, "n_train": [30000], "bound_n": []}
    doc = {"scaled_arms": [_placed_arm(4.0, 9270.0, [6608.0, 15441.0])]}
    doc["control"] = {"arms": [{**check, "compute_bound": False}]}
    text = claims.arm_crossing_text(doc)
    assert "trained 4x as long, the fitted envelopes cross at n = 9,270" in text
    assert "(trained 8x as long at n = 30,000, they gain no more than the seed spread)" in text
    doc["control"] = {"arms": [{**check, "bound_n": [30000], "compute_bound": True}]}
    text = claims.arm_crossing_text(doc)
    assert "(but those cells are still compute-bound at n = 30,000)" in text
    assert "seed spread" not in text


def _placed_arm(scale: float, x: float, ci: list) -> dict:
    return {
        "budget_scale": scale,
        "break_even": {"kind": "inside", "x": x, "ci": ci, "bracket": [100.0, 1e6]},
    }


@pytest.mark.parametrize(
    "x_4x, ci_4x, verdict",
    [
        (4233.0, [3500.0, 11000.0], "held"),  # the point inside the 2x interval
        (9000.0, [6000.0, 15000.0], "overlap"),  # outside it, the intervals meet
        (20000.0, [9000.0, 40000.0], "apart"),  # the intervals do not meet
    ],
)
def test_two_arms_say_whether_the_crossing_moves_with_the_budget(x_4x, ci_4x, verdict):
    unplaced = {"budget_scale": 8.0, "break_even": {"kind": "no_trend"}}
    arms = [_placed_arm(4.0, x_4x, ci_4x), _placed_arm(2.0, 4785.0, [3114.0, 6774.0])]
    arms.append(unplaced)
    assert scaled_arm.crossing_of(arms)["budget_scale"] == 4.0  # the 8x arm places none
    shorter = scaled_arm.versus_shorter(arms)
    assert shorter["budget_scale"] == 2.0 and shorter["verdict"] == verdict
    text = claims.arm_crossing_text({"scaled_arms": arms})
    at = "the 2x arm's crossing (n = 4,785, 95% CI 3,114..6,774)"
    assert (f"within the interval of {at}" in text) is (verdict == "held")
    assert ("moved the crossing is not resolved" in text) is (verdict == "overlap")
    assert ("the crossing moves with the budget" in text) is (verdict == "apart")
    assert scaled_arm.versus_shorter(arms[:1] + [unplaced]) is None
    assert "interval" not in claims.arm_crossing_text({"scaled_arms": arms[:1]})


def test_an_open_interval_meets_everything_above_it():
    arms = [_placed_arm(2.0, 22639.0, [9592.0, None]), _placed_arm(4.0, 9270.0, [6608.0, 15441.0])]
    assert scaled_arm.versus_shorter(arms)["verdict"] == "overlap"
    arms[1]["break_even"]["ci"] = [6608.0, 9000.0]
    assert scaled_arm.versus_shorter(arms)["verdict"] == "apart"
    arms[1]["break_even"]["ci"] = None  # no bootstrap: nothing to compare
    assert scaled_arm.versus_shorter(arms) is None


def test_a_control_at_one_n_is_not_fitted_as_a_grid(tmp_path):
    folder = small_study(tmp_path, seeds=1)
    for s in range(3):
        record(folder, "vit", "s", 64000, s, float(vit(64000)) * 0.8, params=4e6, scale=2.0)
        record(folder, "resnet", "s", 64000, s, float(resnet(64000)), params=4e6, scale=2.0)
    doc = analyze(folder, bootstrap=0)
    assert doc["scaled_arms"] == [] and "trained 2x as long, the fitted" not in doc["headline"]
    assert "## Break-even at the 2x budget" not in (folder / "report.md").read_text()


def test_a_longer_control_checks_the_shorter_arm():
    main = pd.DataFrame(_family_rows({"resnet": 0.438, "vit": 0.442}, 1.0))
    arm = pd.DataFrame(_family_rows({"resnet": 0.402, "vit": 0.370}, 2.0))
    longer = pd.DataFrame(_family_rows({"resnet": 0.401, "vit": 0.340}, 4.0))
    out = control.compare(main, pd.concat([arm, longer], ignore_index=True))
    four = {r["family"]: r for r in out["cells"] if r["budget_scale"] == 4.0}
    assert four["vit"]["base_scale"] == 2.0 and four["vit"]["gain"] == pytest.approx(0.03)
    assert four["vit"]["compute_bound"] and not four["resnet"]["compute_bound"]
    assert four["vit"]["spread_from"] == "seed std of the 2x cell (3 seeds)"
    assert out["compute_bound"] is True  # the 1x verdict, from the 2x cells
    (verdict,) = out["arms"]
    assert verdict["base_scale"] == 2.0 and verdict["compute_bound"] is True
    text = "\n".join(sections.control({"control": out}))
    assert (
        "at 2x (3 seeds), " in text
        and "verdict on the 2x cells (n = 30,000): compute-bound as well at n = 30,000" in text
    )
    assert "the 4x cells are better beyond the noise" in text
    assert [r["base_scale"] for r in out["leaders"]] == [1.0, 2.0]


def test_a_longer_check_within_the_noise_does_not_call_the_arm_starved():
    """One 4x seed that beats its 2x twin by more than the twin's seed spread, but not by more
    than the noise of the difference, passes the spread rule only: the verdict on the 2x cells
    says so, and does not claim the 4x cells are better beyond the noise."""
    main = pd.DataFrame(_family_rows({"resnet": 0.438, "vit": 0.442}, 1.0))
    arm = pd.DataFrame(_family_rows({"resnet": 0.402, "vit": 0.370}, 2.0, jitter=0.008))
    longer = pd.DataFrame(_family_rows({"resnet": 0.402, "vit": 0.361}, 4.0, seeds=1))
    out = control.compare(main, pd.concat([arm, longer], ignore_index=True))
    vit_4x = next(r for r in out["cells"] if r["budget_scale"] == 4.0 and r["family"] == "vit")
    assert vit_4x["compute_bound"] and not vit_4x["gain_resolved"]
    (verdict,) = out["arms"]
    assert verdict["bound_n"] == [30000] and verdict["resolved_n"] == []
    assert control.within_noise(verdict)
    text = "\n".join(sections.control({"control": out}))
    assert "verdict on the 2x cells (n = 30,000): compute-bound by the spread rule" in text
    assert "better beyond the noise" not in text
    doc = {"scaled_arms": [_placed_arm(2.0, 9270.0, [6608.0, 15441.0])], "control": out}
    assert "still compute-bound by the spread rule at n = 30,000" in claims.arm_crossing_text(doc)


@pytest.mark.parametrize(
    "lo, hi, words",
    [
        (0.2, 1.4, " (95% CI 0.2 to 1.4)"),
        (-0.04, 0.83, " (95% CI -0.04 to 0.83)"),  # one decimal would read '-0.0'
        (0.03, 0.9, " (95% CI 0.03 to 0.90)"),
    ],
)
def test_a_lead_interval_that_touches_zero_keeps_its_sign(lo, hi, words):
    assert formats.lead_range(lo, hi) == words
