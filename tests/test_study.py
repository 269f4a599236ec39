"""`bench study`: a sweep's grid through the local runner, then the analysis, in one command."""

import json
import subprocess
import sys

import pytest

from tests.test_grid import make_grid


@pytest.mark.slow
def test_study_trains_the_grid_then_writes_the_analysis(tmp_path):
    make_grid(
        tmp_path,
        steps=30,
        n_train=(100, 200, 400),
        fake=False,
        extra={
            "wandb": {"value": "disabled"},
            "batch_size": {"value": 32},
            "progress": {"value": False},
        },
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.cli",
            "study",
            "t.yaml",
            "--workers",
            "2",
            "--bootstrap",
            "50",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    study = tmp_path / "results" / "t"
    assert len(list((study / "runs").glob("*.json"))) == 6
    assert "report:" in proc.stdout and "break-even" in proc.stdout
    fits = json.loads((study / "fits.json").read_text())
    assert fits["records"]["used"] == 6 and set(fits["families"]) == {"vit", "resnet"}
    assert (study / "figures" / "error_vs_n.png").stat().st_size > 10_000
    assert "| vit |" in (study / "report.md").read_text()
