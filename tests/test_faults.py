"""Fault injection: damaged records, bad input, torn checkpoints, full disks, kills.

Each test breaks something on purpose and asserts two things: the harness says what broke in one
line (no traceback), and nothing finished is lost or silently replaced.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bench.cell.config import Cell
from bench.results import records
from tests.conftest import bench
from tests.test_grid import make_grid

# ---------------------------------------------------------------------- damaged records
# kind -> what is written over a completed record
DAMAGE = {
    "random_bytes": lambda text: os.urandom(64) + b"\xff\xfe",
    "empty": lambda text: b"",
    "truncated": lambda text: text[: len(text) // 2].encode(),
    "json_list": lambda text: b"[1, 2, 3]",
    "json_string": lambda text: b'"completed"',
    "missing_status": lambda text: _edit(text, lambda r: r.pop("status")),
    "config_null": lambda text: _edit(text, lambda r: r.update(config=None)),
    "metrics_list": lambda text: _edit(text, lambda r: r.update(metrics=[0.5])),
    "metric_string": lambda text: _edit(text, lambda r: r["metrics"].update(test_error="0.5")),
    "unknown_status": lambda text: _edit(text, lambda r: r.update(status="done")),
    "run_id_mismatch": lambda text: _edit(text, lambda r: r.update(run_id="other-0000aaaa")),
}


def _edit(text: str, change) -> bytes:
    rec = json.loads(text)
    change(rec)
    return json.dumps(rec).encode()


def fake_record(cell: Cell, test_error: float = 0.25) -> dict:
    return records.make_record(
        cell.run_id,
        cell.study,
        "completed",
        cell.to_dict(),
        params=1000,
        metrics={"test_error": test_error, "val_error": 0.3, "steps": 5},
    )


def grid_cells(tmp: Path) -> list[Cell]:
    """The two cells of a one-family grid from tests.test_grid's make_grid."""
    make_grid(tmp, families=("vit",))
    base = dict(study="t", dataset="synthetic", size="xxs", steps=5, family="vit", seed=0)
    return [Cell.from_dict({**base, "n_train": n}) for n in (100, 200)]


def test_records_are_written_readable_by_all(tmp_path):
    cell = Cell(study="t")
    old = os.umask(0o022)
    try:
        path = records.write_record(fake_record(cell), tmp_path)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_a_damaged_record_is_moved_aside_shown_corrupt_and_never_retrained(
    tmp_path, monkeypatch, capsys, kind
):
    monkeypatch.chdir(tmp_path)
    good, bad = grid_cells(tmp_path)
    runs = Path("results/t/runs")
    for c in (good, bad):
        records.write_record(fake_record(c), runs)
    path = runs / f"{bad.run_id}.json"
    damaged = DAMAGE[kind](path.read_text())
    path.write_bytes(damaged)

    assert bench("grid", "t.yaml", "--dry-run") == 0
    out = capsys.readouterr().out
    assert f"corrupt  {bad.run_id}" in out and f"done     {good.run_id}" in out
    assert path.read_bytes() == damaged  # a dry run moves nothing

    assert bench("grid", "t.yaml") == 1  # the fake trainer would log what it trained
    err = capsys.readouterr().err
    assert f"warning: record {path} is damaged" in err and "Traceback" not in err
    assert not (tmp_path / "trained.log").exists()  # nothing retrained, nothing replaced
    assert not path.exists() and (runs / ".corrupt" / path.name).read_bytes() == damaged
    assert json.loads((runs / f"{good.run_id}.json").read_text())["metrics"]["test_error"] == 0.25

    assert bench("grid", "t.yaml", "--dry-run") == 0  # still corrupt once moved aside
    assert f"corrupt  {bad.run_id}" in capsys.readouterr().out

    assert bench("run", *_args(bad), "--wandb=disabled") == 2
    err = capsys.readouterr().err
    assert "--force retrains" in err and len(err.strip().splitlines()) == 1


def _args(cell: Cell) -> list[str]:
    keys = ("study", "dataset", "size", "steps", "family", "seed", "n_train")
    return [f"--{k}={getattr(cell, k)}" for k in keys]


def test_analyze_and_pull_read_records_through_the_same_reader(tmp_path):
    good, bad = grid_cells(tmp_path)
    runs = tmp_path / "results" / "t" / "runs"
    records.write_record(fake_record(good), runs)
    (runs / f"{bad.run_id}.json").write_bytes(b"\x89PNG\x00\xff")
    (runs.parent / "fits.json").write_text("[]")  # not a record: left alone
    seen = [r["run_id"] for r in records.iter_records(runs.parent)]
    assert seen == [good.run_id]
    assert (runs / ".corrupt" / f"{bad.run_id}.json").is_file()
    assert (runs.parent / "fits.json").read_text() == "[]"
