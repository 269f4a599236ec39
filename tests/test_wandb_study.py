"""At home in W&B: sweeps written as W&B documents them, the study's analysis run, artifacts,
and a W&B run's config.yaml as the base of `bench run`. Real wandb, offline; no mocks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from bench.cell.config import Cell
from bench.study.jobs import grid_jobs
from bench.study.sweep_config import expand, load_sweep
from tests.conftest import REPO, bench

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
YAML_BLOCK = re.compile(r"```yaml\n(.*?)```", re.S)


def smoke_without_study(tmp_path: Path, **params) -> Path:
    cfg = yaml.safe_load((REPO / "sweeps" / "smoke.yaml").read_text())
    del cfg["parameters"]["study"]
    cfg["parameters"].update(params)
    path = tmp_path / "nostudy.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


# ---------------------------------------------------------------------- 1. sweeps
def test_a_sweep_without_study_parameter_runs_as_the_study_named_by_its_name(tmp_path, capsys):
    path = smoke_without_study(tmp_path)
    sweep = load_sweep(path)
    assert sweep.study == "smoke"
    jobs = grid_jobs(sweep)
    assert len(jobs) == 12 and {j.study for j in jobs} == {"smoke"}
    assert all("--study=smoke" in j.command for j in jobs)  # what an agent renders, too
    assert all(j.folder.study_dir.name == "smoke" for j in jobs)
    # the same cells, in the same order, as the YAML that spells the study out
    shipped = expand(load_sweep(REPO / "sweeps" / "smoke.yaml"))
    assert [Cell.from_dict(p).run_id for p in expand(sweep)] == [
        Cell.from_dict(p).run_id for p in shipped
    ]
    assert bench("grid", str(path), "--dry-run") == 0
    assert "12 cells: 0 done, 12 to run" in capsys.readouterr().out


def test_a_study_parameter_wins_over_the_name(tmp_path):
    sweep = load_sweep(smoke_without_study(tmp_path, study={"value": "other"}))
    assert sweep.study == "other"
    assert {Cell.from_dict(p).study for p in expand(sweep)} == {"other"}


def doc_yaml_blocks() -> list[tuple[str, str]]:
    blocks = []
    for doc in DOCS:
        for i, m in enumerate(YAML_BLOCK.finditer(doc.read_text())):
            blocks.append((f"{doc.name}#{i}", m.group(1)))
    return blocks


def test_docs_have_yaml_examples():
    assert any(name.startswith("scaling-out.md") for name, _ in doc_yaml_blocks())


@pytest.mark.parametrize("name, text", doc_yaml_blocks(), ids=[n for n, _ in doc_yaml_blocks()])
def test_every_yaml_block_in_the_docs_parses(name, text, tmp_path):
    data = yaml.safe_load(text)
    assert isinstance(data, dict), name
    if "parameters" in data and "command" in data:  # a sweep: it must also run as written
        path = tmp_path / "doc.yaml"
        path.write_text(text)
        assert [j.study for j in grid_jobs(load_sweep(path))]


def test_yaml_error_names_file_line_and_column(tmp_path, capsys):
    path = tmp_path / "flow.yaml"
    path.write_text("name: s\nmethod: grid\ncommand: [bench, run, ${args}]\n")
    assert bench("grid", str(path), "--dry-run") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"{path}:3:24: not valid YAML" in err and "flow sequence" in err
