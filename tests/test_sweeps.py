"""Sweep YAMLs: wandb's engine expands them, the runner renders commands as `wandb agent` does."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
import yaml
from wandb.wandb_agent import Agent

from bench.cell.config import Cell
from bench.results import records as results
from bench.study.jobs import grid_jobs
from bench.study.sweep import agent_lines
from bench.study.sweep_config import expand, load_sweep, render_command
from tests.conftest import REPO, bench, shipped_sweep_cells

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import sweeps

SHIPPED = {
    "smoke.yaml": 12,
    "cifar10-cpu.yaml": 30,
    "cifar10.yaml": 72,
    "cifar10-ladder.yaml": 36,
    "cifar10-control.yaml": 4,
    "cifar10-permuted.yaml": 36,
    "cifar10-cpu-plain.yaml": 16,
    "cifar10-cpu-lr.yaml": 6,
    "cifar10-cpu-lr-resnet.yaml": 3,
    "cifar10-cpu-lr-resnet-4x.yaml": 4,
    "cifar10-cpu-lr-vit-4x.yaml": 4,
    "cifar10-cpu-plain-control-4x.yaml": 12,
    "cifar10-cpu-plain-control-4x-probe.yaml": 2,
    "cifar10-cpu-plain-control-4x-seeds.yaml": 6,
    "cifar10-cpu-plain-seeds.yaml": 8,
    "cifar10-cpu-plain-tuned-resnet.yaml": 9,
    "cifar10-cpu-plain-tuned-vit.yaml": 9,
    "cifar10-cpu-permuted.yaml": 16,
    "cifar10-cpu-permuted-control.yaml": 16,
    "cifar10-cpu-permuted-control-4x.yaml": 4,
    "cifar10-cpu-permuted-control-4x-arm.yaml": 12,
    "cifar10-cpu-permuted-control-4x-seeds.yaml": 6,
    "cifar10-cpu-permuted-control-8x.yaml": 2,
    "cifar10-cpu-permuted-control-8x-seeds.yaml": 4,
    "cifar10-cpu-permuted-tuned-resnet.yaml": 9,
    "cifar10-cpu-permuted-tuned-vit.yaml": 9,
    "cifar10-cpu-permuted-seeds.yaml": 16,
    "cifar10-cpu-scrambled.yaml": 24,
    "cifar10-cpu-scrambled-control.yaml": 24,
    "cifar10-cpu-scrambled-control-4x.yaml": 4,
    "cifar10-cpu-scrambled-control-4x-seeds.yaml": 4,
    "cifar10-cpu-scrambled-control-4x-arm.yaml": 18,
    "cifar10-cpu-scrambled-tuned-resnet.yaml": 6,
    "cifar10-cpu-scrambled-tuned-resnet-seeds.yaml": 3,
    "cifar10-cpu-scrambled-tuned-8x-resnet.yaml": 1,
    "cifar10-cpu-scrambled-tuned-8x-resnet-seeds.yaml": 2,
    "cifar10-cpu-scrambled-tuned-8x-vit.yaml": 1,
    "cifar10-cpu-scrambled-tuned-8x-vit-seeds.yaml": 1,
    "cifar10-cpu-scrambled-tuned-16x-resnet.yaml": 1,
    "cifar10-cpu-scrambled-tuned-16x-resnet-seeds.yaml": 2,
    "cifar10-cpu-scrambled-tuned-vit.yaml": 9,
    "cifar10-cpu-recipe-vit.yaml": 6,
    "cifar10-cpu-recipe-resnet.yaml": 3,
    "cifar10-cpu-recipe-resnet-basic.yaml": 3,
    "cifar10-cpu-recipe-vit-seeds.yaml": 8,
    "cifar10-cpu-recipe-resnet-seeds.yaml": 4,
    "cifar10-cpu-recipe-resnet-basic-seeds.yaml": 4,
}

# sweeps whose cells their own feature's tests check (test_ablations, test_finetune, test_recipe)
CHECKED_ELSEWHERE = {
    "cifar10-ablations.yaml",
    "cifar10-calibration.yaml",
    "cifar10-finetune.yaml",
    "cifar10-lr-wd.yaml",
}


def test_every_shipped_sweep_is_counted():
    on_disk = {p.name for p in (REPO / "sweeps").glob("*.yaml")}
    assert on_disk - CHECKED_ELSEWHERE == set(SHIPPED)


def write_yaml(tmp_path: Path, **changes) -> Path:
    cfg = yaml.safe_load((REPO / "sweeps" / "smoke.yaml").read_text())
    for k, v in changes.items():
        if k == "parameters":
            cfg["parameters"].update(v)
        elif v is None:  # None removes a key
            cfg.pop(k, None)
        else:
            cfg[k] = v
    cfg["parameters"] = {k: v for k, v in cfg["parameters"].items() if v is not None}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_expansion_matches_wandb_engine_cell_for_cell(name):
    sweep = load_sweep(REPO / "sweeps" / name)
    ours = expand(sweep)
    engine = sweeps.next_runs(sweep.config, [], validate=True, n=SHIPPED[name] + 1)
    assert engine[-1] is None  # the engine, too, has exactly this many cells
    theirs = [{k: v["value"] for k, v in r.config.items()} for r in engine[:-1]]
    assert ours == theirs
    assert len(ours) == SHIPPED[name]
    # every cell is valid, distinct, and carries the study named by the YAML
    cells = [Cell.from_dict(p) for p in ours]
    assert len({c.run_id for c in cells}) == len(cells)
    assert {c.study for c in cells} == {sweep.study}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_dry_run_validates_each_shipped_yaml(name, in_tmp, capsys):
    assert bench("grid", str(REPO / "sweeps" / name), "--dry-run") == 0
    out = capsys.readouterr().out
    assert f"{SHIPPED[name]} cells: 0 done, {SHIPPED[name]} to run" in out
    assert out.count("  todo ") == SHIPPED[name]
    assert "command: bench run " in out


def test_shipped_studies_shape():
    smoke = load_sweep(REPO / "sweeps" / "smoke.yaml")
    cells = [Cell.from_dict(p) for p in expand(smoke)]
    for fam in ("vit", "resnet"):
        assert len({c.n_train for c in cells if c.family == fam}) >= 3
    assert {c.dataset for c in cells} == {"digits"}
    cpu = [Cell.from_dict(p) for p in expand(load_sweep(REPO / "sweeps" / "cifar10-cpu.yaml"))]
    assert {c.size for c in cpu} == {"xxs", "xs", "s"} and {c.dataset for c in cpu} == {
        "imagefolder"
    }
    assert min(c.n_train for c in cpu) <= 500 and max(c.n_train for c in cpu) >= 10000
    gpu = [Cell.from_dict(p) for p in expand(load_sweep(REPO / "sweeps" / "cifar10.yaml"))]
    assert {c.size for c in gpu} == {"s", "m"} and {c.seed for c in gpu} == {0, 1, 2}
    assert {c.n_train for c in gpu} == {1000, 2500, 5000, 10000, 20000, "all"}
    ladder = shipped_sweep_cells("cifar10-ladder.yaml")[1]
    control = shipped_sweep_cells("cifar10-control.yaml")[1]
    assert {c.study for c in gpu + ladder + control} == {"cifar10"}
    assert {(c.family, c.size) for c in ladder} == {("resnet", "xxs"), ("resnet", "xs")}
    assert {c.budget_scale for c in control} == {2} and {c.n_train for c in control} == {"all"}


def test_dry_run_says_which_cells_are_done(in_tmp, capsys):
    sweep = load_sweep(REPO / "sweeps" / "smoke.yaml")
    job = grid_jobs(sweep)[0]
    results.write_record(
        {
            "schema": 1,
            "run_id": job.run_id,
            "study": "smoke",
            "status": "completed",
            "error": None,
            "config": job.params,
            "params": 1,
            "flops_per_image": 1,
            "train_flops": 1,
            "metrics": {},
            "timing": {},
            "env": {},
            "wandb": {},
            "created_at": "",
            "finished_at": "",
        },
        job.records_dir,
    )
    assert bench("grid", str(REPO / "sweeps" / "smoke.yaml"), "--dry-run") == 0
    out = capsys.readouterr().out
    assert f"  done     {job.run_id}" in out and "12 cells: 1 done, 11 to run" in out


def test_bad_parameter_block_gives_engine_message(tmp_path, capsys):
    bad = {"lr": {"min": 0.1, "max": 0.001}, "size": {"values": "xs"}}
    path = write_yaml(tmp_path, parameters=bad)
    expected = sweeps.schema_violations_from_proposed_config(yaml.safe_load(path.read_text()))
    assert expected  # the engine itself rejects it
    assert bench("grid", str(path), "--dry-run") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    for message in expected:
        assert message in err


@pytest.mark.parametrize(
    "change, words",
    [
        ({"parameters": {"opt": {"parameters": {"lr": {"values": [0.1, 0.01]}}}}}, "nested block"),
        ({"parameters": {"lr": {"value": None}}}, "non-null"),
        ({"parameters": {"study": {"values": ["a", "b"]}}}, "study must be one name"),
        ({"command": ["bench", "run"]}, "no ${args}"),
        ({"command": ["${program}", "${args}"], "program": ""}, "has no 'program'"),
        ({"name": ""}, "give the sweep a 'name'"),
        ({"method": "random", "metric": None}, "needs 'metric"),
        ({"parameters": {"family": {"values": ["vit", "mlp"]}}}, "family='mlp'"),
    ],
)
def test_bad_yaml_is_one_line_and_exit_2(tmp_path, capsys, change, words):
    path = write_yaml(tmp_path, **change)
    assert bench("grid", str(path), "--dry-run") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err, err


def test_rendered_command_equals_what_wandb_agent_runs(tmp_path, monkeypatch):
    """wandb's own Agent._command_run launches the process; its argv is our rendered command."""
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "bench").write_text("#!/bin/sh\nexit 0\n")
    (stub / "bench").chmod(0o755)
    monkeypatch.setenv("PATH", f"{stub}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_RUN_ID", "unset-after-test")
    monkeypatch.setenv("WANDB_SWEEP_PARAM_PATH", "unset-after-test")
    sweep = load_sweep(REPO / "sweeps" / "cifar10.yaml")
    agent = Agent(api=None, queue=None)
    agent._sweep_command = sweep.config["command"]
    for i, params in enumerate(expand(sweep)[::37]):
        run_id = f"r{i}"
        agent._command_run(
            {
                "run_id": run_id,
                "program": sweep.config.get("program"),
                "args": {k: {"value": v} for k, v in params.items()},
            }
        )
        proc = agent._run_processes[run_id]
        assert proc.wait() == 0
        assert proc._popen.args == render_command(
            sweep.command, params, program=sweep.config.get("program")
        )
        assert proc._popen.args[:2] == ["bench", "run"]
        assert f"--study={sweep.study}" in proc._popen.args


def test_render_expands_every_agent_macro(monkeypatch):
    monkeypatch.setenv("BENCH_TEST_VAR", "xyz")
    cmd = [
        "${env}",
        "${interpreter}",
        "${program}",
        "${args_no_hyphens}",
        "--tag=${envvar:BENCH_TEST_VAR}",
    ]
    out = render_command(cmd, {"lr": 0.001, "n_train": "all"}, program="train.py")
    assert out == ["/usr/bin/env", "python", "train.py", "lr=0.001", "n_train=all", "--tag=xyz"]


def test_random_and_bayes_need_count_and_learn_from_records(tmp_path, in_tmp, capsys):
    for method in ("random", "bayes"):
        path = write_yaml(
            tmp_path,
            method=method,
            parameters={"lr": {"min": 0.0001, "max": 0.01, "distribution": "log_uniform_values"}},
        )
        assert bench("grid", str(path)) == 2
        assert "--count" in capsys.readouterr().err
        assert bench("grid", str(path), "--dry-run", "--count", "3") == 0
        out = capsys.readouterr().out
        assert "3 sample proposals" in out and out.count("  todo ") == 3


def test_sweep_without_credentials_fails_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path))
    assert bench("sweep", str(REPO / "sweeps" / "smoke.yaml"), "--project", "p") == 2
    captured = capsys.readouterr()
    assert "12 cells, all valid" in captured.out  # validated before any server is asked
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and "W&B" in err


def test_agent_lines():
    assert agent_lines("ent/proj/abc123") == ["wandb agent ent/proj/abc123"]
    lines = agent_lines("ent/proj/abc123", gpus=2)
    assert lines == [
        "CUDA_VISIBLE_DEVICES=0 wandb agent ent/proj/abc123 &",
        "CUDA_VISIBLE_DEVICES=1 wandb agent ent/proj/abc123 &",
    ]
