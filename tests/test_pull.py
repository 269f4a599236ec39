"""bench pull: records back from W&B offline run directories (read with `wandb leet inspect`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bench.cell.config import Cell
from bench.results import records as results
from tests.conftest import bench


def offline_run(tmp: Path, config: dict, summary: dict, exit_code: int = 0) -> None:
    """A real offline W&B run in tmp/wandb, made by wandb itself."""
    script = textwrap.dedent(f"""
        import json, wandb
        run = wandb.init(project="bench", mode="offline", config=json.loads({json.dumps(json.dumps(config))}))
        run.define_metric("val/error", summary="min")
        run.log({{"val/error": 0.6}}); run.log({{"val/error": 0.4}}); run.log({{"val/error": 0.5}})
        for k, v in json.loads({json.dumps(json.dumps(summary))}).items():
            run.summary[k] = v
        run.finish(exit_code={exit_code})
    """)
    env = {**os.environ, "WANDB_SILENT": "true", "WANDB_DIR": str(tmp)}
    subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp,
        env=env,
        check=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def a_record(cell: Cell, **metrics) -> dict:
    return {
        "schema": 1,
        "run_id": cell.run_id,
        "study": cell.study,
        "status": "completed",
        "error": None,
        "config": cell.to_dict(),
        "params": 201930,
        "flops_per_image": 1.5e6,
        "train_flops": 4.5e9,
        "metrics": {
            "test_error": 0.25,
            "test_loss": 0.9,
            "val_error": 0.5,
            "train_loss": 1.0,
            "epochs": 2.0,
            "steps": 10,
            **metrics,
        },
        "timing": {"wall_s": 3.2, "train_images_per_s": 100.0, "device": "cpu"},
        "env": {"python": "3.11", "torch": "2.x"},
        "wandb": {"mode": "offline", "path": None},
        "created_at": "2026-01-01T00:00:00+00:00",
        "finished_at": "2026-01-01T00:00:03+00:00",
        "nested": {"list": [1, 2.5, {"deep": None}]},
    }


def test_pull_offline_reproduces_records(tmp_path):
    cells = [
        Cell.from_dict(
            {
                "study": "p",
                "family": f,
                "size": "xxs",
                "n_train": 300,
                "lr": 1.0,
                "grad_clip": 1.0,
                "dataset": "synthetic",
            }
        )
        for f in ("vit", "resnet")
    ]
    recs = [a_record(c, val_error=1.0) for c in cells]
    for c, rec in zip(cells, recs, strict=True):
        offline_run(
            tmp_path,
            {**c.to_dict(), "run_id": c.run_id, "params": 201930},
            {"record": rec, "test/error": 0.25, "status": "completed"},
        )
    out = tmp_path / "out"
    assert bench("pull", f"--offline_dir={tmp_path / 'wandb'}", f"--results_dir={out}") == 0
    pulled = {r["run_id"]: r for r in results.iter_records(out)}
    assert pulled == {r["run_id"]: r for r in recs}
    for r in pulled.values():  # 1.0 comes back a float, not the int W&B's JSON made of it
        assert isinstance(r["config"]["lr"], float) and isinstance(r["metrics"]["val_error"], float)
    # pulling again changes nothing
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.json")}
    assert bench("pull", f"--offline_dir={tmp_path / 'wandb'}", f"--results_dir={out}") == 0
    assert before == {p.name: p.stat().st_mtime_ns for p in out.glob("*.json")}


def test_pull_offline_rebuilds_a_run_without_record_from_config_and_summary(
    tmp_path, monkeypatch, capsys
):
    cell = Cell.from_dict(
        {"study": "p2", "family": "resnet", "size": "xs", "n_train": 500, "dataset": "synthetic"}
    )
    offline_run(
        tmp_path,
        {**cell.to_dict(), "run_id": cell.run_id, "params": 700000},
        {"test/error": 0.3, "test/loss": 1.1, "status": "completed"},
    )
    monkeypatch.chdir(tmp_path)
    assert bench("pull", "--offline_dir=wandb") == 0  # default: results/<study>/runs
    assert "1 new" in capsys.readouterr().out
    rec = results.read_record(tmp_path / "results" / "p2" / "runs" / f"{cell.run_id}.json")
    assert rec["status"] == "completed" and rec["params"] == 700000
    assert rec["config"] == cell.to_dict()
    assert rec["metrics"]["test_error"] == 0.3 and rec["metrics"]["val_error"] == 0.4  # the min
    assert "no record" in rec["pulled_from"]


def test_pull_keeps_a_completed_record_over_a_failed_run(tmp_path):
    cell = Cell.from_dict(
        {"study": "p3", "family": "vit", "size": "xxs", "n_train": 100, "dataset": "synthetic"}
    )
    done = a_record(cell)
    results.write_record(done, tmp_path / "out")
    failed = {**a_record(cell), "status": "failed", "error": "boom"}
    offline_run(tmp_path, cell.to_dict(), {"record": failed}, exit_code=1)
    assert (
        bench("pull", f"--offline_dir={tmp_path / 'wandb'}", f"--results_dir={tmp_path / 'out'}")
        == 0
    )
    assert results.read_record(tmp_path / "out" / f"{cell.run_id}.json") == done


def test_pull_bad_input_is_one_line(tmp_path, capsys, monkeypatch):
    assert bench("pull", f"--offline_dir={tmp_path / 'nope'}") == 2
    assert "does not exist" in capsys.readouterr().err
    assert bench("pull", "--wandb=justaproject") == 2
    assert "ENTITY/PROJECT" in capsys.readouterr().err
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert bench("pull", "--wandb=ent/proj") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "could not read runs from W&B" in err


@pytest.mark.slow
def test_pull_reproduces_the_record_of_a_real_bench_run(tmp_path):
    env = {**os.environ, "WANDB_SILENT": "true", "WANDB_DIR": str(tmp_path)}
    subprocess.run(
        [
            "bench",
            "run",
            "--dataset=synthetic",
            "--family=vit",
            "--size=xxs",
            "--steps=4",
            "--batch_size=32",
            "--n_train=200",
            "--wandb=offline",
            "--progress=false",
            f"--results_dir={tmp_path / 'runs'}",
        ],
        cwd=tmp_path,
        env=env,
        check=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    [original] = list(results.iter_records(tmp_path / "runs"))
    assert original["wandb"]["mode"] == "offline"
    assert (
        bench("pull", f"--offline_dir={tmp_path / 'wandb'}", f"--results_dir={tmp_path / 'pulled'}")
        == 0
    )
    [pulled] = list(results.iter_records(tmp_path / "pulled"))
    assert pulled == original
