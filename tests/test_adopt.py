"""``bench grid --adopt``: another study's finished cells taken over, not trained again."""

from __future__ import annotations

from pathlib import Path

import yaml

from bench.results import records as results
from bench.results.locks import holder
from tests.test_grid import grid, make_grid, trained


def second_sweep(tmp: Path, **params) -> Path:
    """The same grid as ``make_grid``'s into study ``u``: the ViT only, at n = 100, 200 and 300,
    with ``params`` changed."""
    cfg = yaml.safe_load((tmp / "t.yaml").read_text())
    cfg["name"] = "u"
    cfg["parameters"].update(
        study={"value": "u"}, family={"value": "vit"}, n_train={"values": [100, 200, 300]}
    )
    cfg["parameters"].update({k: {"value": v} for k, v in params.items()})
    path = tmp / "u.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def study_records(tmp: Path, study: str) -> dict[str, dict]:
    return {r["run_id"]: r for r in results.iter_records(tmp / "results" / study / "runs")}


def test_adopt_copies_the_same_experiments_and_trains_the_rest(tmp_path):
    make_grid(tmp_path, steps=1)
    assert grid("t.yaml", "--workers=2", cwd=tmp_path).returncode == 0
    source = study_records(tmp_path, "t")
    second_sweep(tmp_path)

    dry = grid("u.yaml", "--dry-run", "--adopt", "results/t", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert (
        dry.stdout.count("  adopt ") == 2 and "3 cells: 0 done, 2 to adopt, 1 to run" in dry.stdout
    )
    assert not (tmp_path / "results" / "u").exists()  # a dry run writes nothing

    before = len(trained(tmp_path))
    p = grid("u.yaml", "--adopt", "results/t", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert len(trained(tmp_path)) == before + 1  # only n = 300 was trained
    adopted = study_records(tmp_path, "u")
    assert len(adopted) == 3
    for run_id, rec in adopted.items():
        if rec["config"]["n_train"] == 300:
            assert "adopted_from" not in rec
            continue
        original = source[run_id]
        assert rec["study"] == "u" and rec["adopted_from"] == "t"
        assert rec["metrics"] == original["metrics"] and rec["config"] == original["config"]
    assert source == study_records(tmp_path, "t")  # the source study is left as it was
    # an adopted cell's lock names no holder: while the adopting runner lives, another runner of
    # the study would count it as a cell in training and hold back a slot
    locks = tmp_path / "results" / "u" / "runs" / ".locks"
    assert {holder(locks / f"{r}.lock") for r in adopted} == {"unknown"}

    again = grid("u.yaml", "--dry-run", "--adopt", "results/t", cwd=tmp_path)
    assert "3 cells: 3 done, 0 to adopt, 0 to run" in again.stdout


def test_a_cell_that_differs_in_its_identity_is_not_adopted(tmp_path):
    make_grid(tmp_path, steps=1, families=("vit",))
    assert grid("t.yaml", cwd=tmp_path).returncode == 0
    second_sweep(tmp_path, lr=0.01)  # another learning rate: another experiment
    dry = grid("u.yaml", "--dry-run", "--adopt", "results/t", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert "3 cells: 0 done, 0 to adopt, 3 to run" in dry.stdout


def test_adopt_from_a_missing_study_is_a_one_line_error(tmp_path):
    make_grid(tmp_path, steps=1)
    for extra in (["--dry-run"], []):
        p = grid("t.yaml", *extra, "--adopt", "results/nowhere", cwd=tmp_path)
        assert p.returncode != 0
        assert p.stderr.strip().splitlines() == [
            "bench grid: error: --adopt results/nowhere: no records folder results/nowhere/runs"
        ]
    assert not (tmp_path / "results").exists()


def test_a_failed_cell_here_is_replaced_and_a_damaged_one_left_alone(tmp_path):
    make_grid(tmp_path, steps=1, families=("vit",))
    assert grid("t.yaml", cwd=tmp_path).returncode == 0
    source = study_records(tmp_path, "t")
    second_sweep(tmp_path)
    runs = tmp_path / "results" / "u" / "runs"
    failed, damaged = sorted(source)  # n = 100 and n = 200
    results.write_record(results.make_record(failed, "u", "failed", {}, error="oom"), runs)
    (runs / f"{damaged}.json").write_text("{not json")
    p = grid("u.yaml", "--dry-run", "--adopt", "results/t", cwd=tmp_path)
    assert "3 cells: 0 done, 1 to adopt, 1 to run, 1 with a damaged record" in p.stdout
    p = grid("u.yaml", "--adopt", "results/t", cwd=tmp_path)
    assert p.returncode == 1 and "1 with a damaged record (not retrained)" in p.stderr  # as ever
    assert study_records(tmp_path, "u")[failed]["status"] == "completed"
    assert damaged not in study_records(tmp_path, "u")  # moved aside as ever, not adopted
    (aside,) = (runs / ".corrupt").glob(f"{damaged}.json*")
    assert aside.read_text() == "{not json"
