"""`bench compare`: the gaps of several analysed studies side by side, read from their fits.json."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image as mpimg
import pytest

from bench.cli import main
from tests.test_analyze import write_study

SMALL = {"sizes": {"s": 4e6}, "n_train": (500, 1500, 4000, 12000), "seeds": 2}


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """Two analysed studies: ``a`` at its budget only, ``b`` with a 2x arm fitted as a grid."""
    a = write_study(tmp_path_factory.mktemp("a"), seed=1, **SMALL)
    b = write_study(tmp_path_factory.mktemp("b"), seed=2, **SMALL)
    write_study(b, seed=3, budget_scale=2.0, noise=0.01, **SMALL)
    for folder in (a, b):
        assert main(["analyze", str(folder), "--bootstrap", "50"]) == 0
    return a, b


def rows(out: str) -> dict[tuple[str, str], list[str]]:
    """The printed table's rows by (study, budget)."""
    cells = [line.strip("| ").split(" | ") for line in out.splitlines() if line.startswith("| ")]
    return {(c[0], c[1]): c for c in cells[1:]}


def test_compare_sets_each_studys_gaps_side_by_side(studies, tmp_path, capsys):
    a, b = studies
    capsys.readouterr()
    png = tmp_path / "gap.png"
    assert main(["compare", str(a), str(b), "--labels", "base,control", "--out", str(png)]) == 0
    table = rows(capsys.readouterr().out)
    assert set(table) == {("base", "1x"), ("control", "1x"), ("control", "2x")}
    fits_b = json.loads((b / "fits.json").read_text())
    (arm,) = fits_b["scaled_arms"]
    for budget, be in (("1x", fits_b["break_even"]), ("2x", arm["break_even"])):
        row = table[("control", budget)]
        assert row[2] == "500..12,000"
        assert row[4].startswith(f"{be['gap']['slope_per_decade']:+.3f}")
        assert row[3].startswith(f"{be['gap']['points'][-1]['log_ratio']:+.3f}")
    # one panel per budget: two side by side make a wider figure than one
    two = mpimg.imread(png).shape
    one = tmp_path / "one.png"
    assert main(["compare", str(a), "--out", str(one)]) == 0
    one = mpimg.imread(one).shape
    assert two[1] > 1.3 * one[1] and abs(two[0] - one[0]) < 0.2 * one[0], (two, one)


def test_a_study_trained_longer_throughout_joins_that_budgets_panel(studies, tmp_path, capsys):
    _, b = studies
    longer = write_study(tmp_path / "longer", seed=4, budget_scale=2.0, **SMALL)
    assert main(["analyze", str(longer), "--bootstrap", "50"]) == 0
    capsys.readouterr()
    args = ["compare", str(b), str(longer), "--labels", "control,tuned"]
    assert main([*args, "--out", str(tmp_path / "gap.png")]) == 0
    table = rows(capsys.readouterr().out)
    assert set(table) == {("control", "1x"), ("control", "2x"), ("tuned", "2x")}


@pytest.mark.parametrize(
    "args, named",
    [
        (["{empty}"], "no fits.json"),
        (["{a}", "--labels", "x,y"], "--labels"),
        (["{a}", "--out", "{tmp}/gap.pdf"], "--out"),
    ],
)
def test_compare_bad_input_exits_2_naming_it(studies, tmp_path, capsys, args, named):
    a, _ = studies
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = [x.format(a=a, empty=empty, tmp=tmp_path) for x in args]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "gap.png")]
    assert main(["compare", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and named in err[0]
    assert not any(Path(tmp_path).glob("*.png")) and not any(Path(tmp_path).glob("*.pdf"))
