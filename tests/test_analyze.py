"""``bench analyze`` and ``bench fit`` end to end, on records drawn from known curves."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from scipy.optimize import brentq

from bench.analysis.analyze import analyze
from bench.analysis.plot_style import pct_axis
from bench.analysis.plots_budget import budget_figure
from bench.cli import main
from bench.results.records import write_record

SIZES = {"xs": 1e6, "s": 4e6, "m": 16e6, "l": 64e6}
N_TRAIN = (500, 1500, 4000, 12000, 35000, 100000)
# err(N, n) = E + A / N^alpha + B / n^beta per family: ResNets lead with little data, ViTs
# improve faster with n and overtake inside the measured range.
CURVES = {
    "vit": {"E": 0.04, "A": 2.0, "alpha": 0.25, "B": 10.0, "beta": 0.5},
    "resnet": {"E": 0.08, "A": 1.5, "alpha": 0.25, "B": 1.5, "beta": 0.3},
}


def curve(family, big_n, n):
    c = CURVES[family]
    return c["E"] + c["A"] / big_n ** c["alpha"] + c["B"] / n ** c["beta"]


def write_study(
    out,
    families=("vit", "resnet"),
    sizes=SIZES,
    n_train=N_TRAIN,
    seeds=3,
    noise=0.02,
    seed=0,
    budget_scale=1.0,
    name="synthetic",
):
    """Write one completed record per (family, size, n_train, seed) with log-normal noise
    (``budget_scale`` other than 1: a convergence-control arm, its run_ids marked)."""
    arm = "" if budget_scale == 1 else f"-x{budget_scale:g}"
    rng = np.random.default_rng(seed)
    for family in families:
        for size, big_n in sizes.items():
            for n in n_train:
                for s in range(seeds):
                    err = float(curve(family, big_n, n) * math.exp(rng.normal(0.0, noise)))
                    write_record(
                        {
                            "schema": 1,
                            "run_id": f"{family}-{size}-n{n}-s{s}{arm}",
                            "study": name,
                            "status": "completed",
                            "error": None,
                            "config": {
                                "family": family,
                                "size": size,
                                "n_train": n,
                                "seed": s,
                                "budget_scale": budget_scale,
                            },
                            "params": int(big_n),
                            "flops_per_image": 2.0 * big_n,
                            "train_flops": 6.0 * big_n * n * 30,
                            "metrics": {
                                "test_error": err,
                                "test_loss": 3 * err,
                                "val_error": err,
                                "train_loss": 0.1,
                                "epochs": 30,
                                "steps": 100,
                            },
                            "timing": {"wall_s": 1.0, "train_images_per_s": 1e3, "device": "cpu"},
                            "env": {},
                            "wandb": {},
                            "created_at": "2025-01-01T00:00:00Z",
                            "finished_at": "2025-01-01T00:01:00Z",
                        },
                        Path(out) / "runs",
                    )
    return Path(out)


def true_envelope_crossing():
    """The envelope is the largest model for these curves; where the two families' cross."""
    big = max(SIZES.values())

    def gap(t):
        return math.log(curve("vit", big, 10**t)) - math.log(curve("resnet", big, 10**t))

    return 10 ** brentq(gap, 2, 6)


def outputs(folder: Path) -> dict:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "runs" not in p.parts
    }


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    folder = write_study(tmp_path_factory.mktemp("study"))
    assert main(["analyze", str(folder), "--bootstrap", "200"]) == 0
    return folder


def test_analyze_writes_summary_fits_figures_and_report(study, capsys):
    names = set(outputs(study))
    assert {"summary.csv", "fits.json", "report.md"} <= names
    for fig in ("error_vs_n", "error_vs_params", "grid_heatmap", "error_vs_compute"):
        assert f"figures/{fig}.png" in names
        assert (study / "figures" / f"{fig}.png").read_bytes()[:4] == b"\x89PNG"
    with open(study / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * len(SIZES) * len(N_TRAIN)
    assert {r["test_error_count"] for r in rows} == {"3"}
    assert {"params", "train_flops", "test_error_mean", "test_error_std"} <= set(rows[0])
    report = (study / "report.md").read_text()
    for text in (
        "synthetic",
        "Break-even",
        "resamples do not cross",
        "Extrapolation check",
        "figures/error_vs_n.png",
    ):
        assert text in report
    assert "at the largest shared n (100,000): vit" in report
    assert "at the smallest shared n (500): resnet" in report


def test_break_even_ci_contains_the_true_crossing(study):
    doc = json.loads((study / "fits.json").read_text())
    be = doc["break_even"]
    true = true_envelope_crossing()
    assert N_TRAIN[0] < true < N_TRAIN[-1]
    assert be["inside_range"] is True
    assert be["ci"][0] <= true <= be["ci"][1]
    assert be["x"] == pytest.approx(true, rel=0.3)
    assert (be["below"], be["above"]) == ("resnet", "vit")
    assert be["p_no_crossing"] < 0.05
    for fam, c in CURVES.items():
        fit = doc["fits"][fam]
        assert fit["form"] in ("power", "m4") and fit["extrapolation"]["x"] == N_TRAIN[-1]
        assert fit["forms"]["power"]["params"]["b"] == pytest.approx(c["beta"], abs=0.08)
        joint = fit["joint"]["params"]
        assert joint["beta"] == pytest.approx(c["beta"], abs=0.08)
        assert joint["alpha"] == pytest.approx(c["alpha"], abs=0.1)


def test_second_run_is_byte_identical(study):
    before = outputs(study)
    doc = analyze(study, bootstrap=200, seed=0)
    assert outputs(study) == before
    assert doc["break_even"]["x"] is not None
    assert doc["break_even_text"].startswith("break-even: n* = ")
    assert doc["report"].endswith("report.md")


def test_one_family_only_is_analysed_without_break_even(tmp_path, capsys):
    folder = write_study(tmp_path, families=("vit",), sizes={"s": 4e6, "l": 64e6}, seeds=2)
    assert main(["analyze", str(folder), "--bootstrap", "50"]) == 0
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    report = (folder / "report.md").read_text()
    assert "only one family (vit)" in report
    assert "break-even skipped" in report
    assert json.loads((folder / "fits.json").read_text())["break_even"] is None
    assert (folder / "figures" / "error_vs_n.png").exists()


def test_a_study_trained_longer_throughout_is_its_own_grid(tmp_path):
    """Every cell at 4x (a control arm paired with a retuned family): fitted as the study's grid,
    with the same answer as the same records at 1x; a sweep that also names 1x makes them a
    control again."""
    small = {"sizes": {"s": 4e6}, "n_train": N_TRAIN[:4], "seeds": 2}
    docs = {}
    for scale in (1.0, 4.0):
        folder = write_study(tmp_path / f"x{scale:g}", budget_scale=scale, **small)
        docs[scale] = analyze(folder, bootstrap=50, seed=0)
    longer = docs[4.0]
    assert longer["budget_scale"] == 4.0 and docs[1.0]["budget_scale"] == 1.0
    assert longer["records"] == {"total": 16, "used": 16, "control": 0}
    assert longer["break_even"]["x"] == pytest.approx(docs[1.0]["break_even"]["x"])
    report = (tmp_path / "x4" / "report.md").read_text()
    assert "- budget: every fitted cell at 4x the budget rule" in report
    assert "no cell was trained at budget_scale 8," in report
    assert "- budget:" not in (tmp_path / "x1" / "report.md").read_text()

    grid = {"family": ["vit", "resnet"], "size": ["s"], "n_train": list(N_TRAIN[:4])}
    grid.update(seed=[0, 1], budget_scale=[1, 4])
    sweep = {"parameters": {k: {"values": v} for k, v in grid.items()}}
    (tmp_path / "x4" / "sweeps").mkdir()
    (tmp_path / "x4" / "sweeps" / "s.yaml").write_text(json.dumps(sweep))
    doc = analyze(tmp_path / "x4", bootstrap=50, seed=0)
    assert doc["budget_scale"] == 1.0 and doc["records"]["control"] == 16
    assert doc["grid"]["expected"] == 16 and len(doc["grid"]["missing"]) == 16


def test_a_longer_check_of_a_study_trained_longer_throughout_is_read_against_its_own_budget(
    tmp_path,
):
    """An 8x check of a study whose every cell is at 4x is compared with the 4x cells (its own
    budget), and the report says 4x and 2x as long, never 1x."""
    small = {"sizes": {"s": 4e6}, "n_train": N_TRAIN[:4], "seeds": 2}
    folder = write_study(tmp_path / "x4", budget_scale=4.0, **small)
    write_study(folder, budget_scale=8.0, sizes=small["sizes"], n_train=N_TRAIN[3:4], seeds=1)
    doc = analyze(folder, bootstrap=50, seed=0)
    ctrl = doc["control"]
    assert doc["budget_scale"] == 4.0 and doc["records"]["control"] == 2
    assert ctrl["base_scale"] == 4.0 and ctrl["compute_bound"] is not None
    assert [(r["base_scale"], r["base_seeds"]) for r in ctrl["cells"]] == [(4.0, 2)] * 2
    assert [r["base_scale"] for r in ctrl["leaders"]] == [4.0]
    report = (folder / "report.md").read_text()
    section = report.split("## Convergence control")[1]
    assert section.count("% at 4x (2 seeds)") == 2 and "1x" not in section


def test_too_few_points_and_zero_records_say_what_was_skipped(tmp_path, capsys):
    few = write_study(tmp_path / "few", sizes={"m": 16e6}, n_train=(1000, 10000), seeds=1)
    assert main(["analyze", str(few), "--bootstrap", "20"]) == 0
    report = (few / "report.md").read_text()
    assert "no envelope fit" in report and "break-even skipped" in report

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["analyze", str(empty)]) == 2  # nothing to analyse: one line, nothing written
    err = capsys.readouterr().err
    assert "no completed records" in err and "Traceback" not in err
    assert list(empty.iterdir()) == []

    assert main(["analyze", str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err


def test_a_folder_of_several_studies_is_refused_not_pooled(tmp_path, capsys):
    """Records are found recursively: results/ instead of results/<study> must not fit two
    studies' cells as one grid."""
    write_study(tmp_path / "a", sizes={"m": 16e6}, seeds=1, name="a")
    write_study(tmp_path / "b", sizes={"m": 16e6}, seeds=1, name="b")
    for command in ("analyze", "tune"):
        assert main([command, str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert "holds the records of 2 studies (a, b)" in err and "Traceback" not in err
        assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]  # nothing written
    assert main(["analyze", str(tmp_path / "a"), "--bootstrap", "20"]) == 0


@pytest.fixture
def table(tmp_path):
    """A plain CSV: columns named freely, several seeds per (family, n)."""
    rng = np.random.default_rng(1)
    path = tmp_path / "table.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arch", "images", "err", "seed"])
        for fam in ("vit", "resnet"):
            for n in N_TRAIN:
                for s in range(3):
                    err = curve(fam, 64e6, n) * math.exp(rng.normal(0, 0.02))
                    w.writerow([fam, n, f"{err:.6f}", s])
    return path


def test_fit_json_has_the_documented_keys(table, capsys):
    argv = ["fit", str(table), "--x=images", "--y=err", "--family=arch", "--json"]
    assert main([*argv, "--bootstrap", "100"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc["fits"]) == {"resnet", "vit"}
    for fit in doc["fits"].values():
        assert fit["form"] in ("power", "m4")
        assert {"form", "params", "rmse_log"} <= set(fit)
    be = doc["break_even"]
    assert {"x", "ci", "inside_range", "p_no_crossing", "below", "above"} <= set(be)
    assert isinstance(be["x"], float) and len(be["ci"]) == 2
    assert be["ci"][0] <= true_envelope_crossing() <= be["ci"][1]
    assert (be["below"], be["above"]) == ("resnet", "vit")


def test_fit_prints_a_readable_table(table, capsys):
    argv = ["fit", str(table), "--x=images", "--y=err", "--family=arch", "--bootstrap", "50"]
    assert main([*argv, "--families", "vit", "resnet"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:3] == ["family", "form", "parameters"]
    assert "break-even: images* = " in out


def test_fit_bad_input_exits_2_naming_it(table, tmp_path, capsys):
    assert main(["fit", str(table), "--x=n_train", "--y=err", "--family=arch"]) == 2
    err = capsys.readouterr().err
    assert "n_train" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    missing = tmp_path / "nope.csv"
    assert main(["fit", str(missing), "--x=images", "--y=err", "--family=arch"]) == 2
    assert "nope.csv" in capsys.readouterr().err


@pytest.mark.parametrize(
    "lo, hi, labels",
    [
        (0.30, 0.66, ["30", "35", "40", "45", "50", "55", "60", "65"]),  # a band: every 5 points
        (0.05, 0.6, ["5", "7", "10", "15", "20", "30", "40", "50"]),  # a decade: fewer
    ],
)
def test_the_error_axis_is_labelled_as_densely_as_its_span_needs(lo, hi, labels):
    fig, ax = plt.subplots()
    ax.set_yscale("log")
    ax.set_ylim(lo, hi)
    pct_axis(ax)
    fmt = ax.yaxis.get_major_formatter()
    ticks = [v for v in ax.get_yticks() if lo * 0.999 <= v <= hi * 1.001]
    plt.close(fig)
    assert [fmt(v) for v in ticks] == labels


def test_the_convergence_control_is_drawn_against_the_budget(tmp_path):
    """A panel per n the control trained at: per family, the study's own cell and its longer
    twins, means of the records at each budget, every panel spanning the same factor in error;
    a study without a control draws no such figure."""
    small = {"sizes": {"s": 4e6}, "seeds": 2}
    folder = write_study(tmp_path / "s", n_train=N_TRAIN[:4], **small)
    assert "error_vs_budget.png" not in analyze(folder, bootstrap=0)["figures"]
    write_study(folder, budget_scale=2.0, n_train=N_TRAIN[2:4], seed=1, **small)
    write_study(
        folder, budget_scale=4.0, n_train=N_TRAIN[3:4], seed=2, sizes=small["sizes"], seeds=1
    )
    doc = analyze(folder, bootstrap=0)
    assert "error_vs_budget.png" in doc["figures"]
    control = (folder / "report.md").read_text().split("## Convergence control")[1]
    assert "figures/error_vs_budget.png" in control.split("\n## ")[0]

    fig = budget_figure(pd.read_csv(folder / "summary.csv"), doc, {"vit": ["s"], "resnet": ["s"]})
    assert [ax.get_title() for ax in fig.axes] == ["n = 4k", "n = 12k"]
    means = record_means(folder)
    for fam in ("vit", "resnet"):
        (line,) = [c.lines[0] for c in fig.axes[1].containers if c.get_label() == f"{fam} s"]
        assert list(line.get_xdata()) == [1.0, 2.0, 4.0]
        expected = [means[(fam, 12000, scale)] for scale in (1.0, 2.0, 4.0)]
        assert np.allclose(line.get_ydata(), expected, rtol=1e-5)
    spans = [math.log(hi / lo) for lo, hi in (ax.get_ylim() for ax in fig.axes)]
    assert spans[0] == pytest.approx(spans[1])
    legend = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert "vit s, one seed" in legend  # the 4x cell has one seed: drawn hollow, said so
    plt.close(fig)


def record_means(folder: Path) -> dict:
    """Mean test error per (family, n_train, budget_scale), read from the records themselves."""
    errors: dict = {}
    for path in (folder / "runs").glob("*.json"):
        rec = json.loads(path.read_text())
        cfg = rec["config"]
        key = (cfg["family"], cfg["n_train"], float(cfg["budget_scale"]))
        errors.setdefault(key, []).append(rec["metrics"]["test_error"])
    return {k: float(np.mean(v)) for k, v in errors.items()}
