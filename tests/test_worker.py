"""bench grid --worker: one process runs cell after cell, with the records of `bench run`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from bench.errors import BenchError
from bench.results.locks import is_locked
from bench.study.grid import build_parser
from bench.study.jobs import grid_jobs
from bench.study.slurm import node_argv
from bench.study.sweep_config import load_sweep
from bench.study.worker import cell_of, load_jobs, save_jobs, work
from tests.conftest import REPO, bench


def write_sweep(folder: Path, seeds=(0, 1), steps: int = 8, command=None, **extra) -> Path:
    params = {
        "study": "t",
        "dataset": "synthetic",
        "family": "resnet",
        "size": "xxs",
        "img_size": 16,
        "n_train": 128,
        "steps": steps,
        "evals": 2,
        "batch_size": 32,
        "progress": False,
        "checkpoint_every_s": 0,  # at every validation: the resume tests kill between them
        **extra,
    }
    cfg = {
        "name": "t",
        "program": "bench",
        "method": "grid",
        "metric": {"name": "val/error", "goal": "minimize"},
        "command": command or ["bench", "run", "${args}"],
        "parameters": {k: {"value": v} for k, v in params.items()}
        | {"seed": {"values": list(seeds)}},
    }
    path = folder / "t.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def records_of(folder: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in folder.glob("*.json")}


def test_a_job_is_the_cell_bench_run_would_train(tmp_path):
    jobs = grid_jobs(load_sweep(str(write_sweep(tmp_path))), str(tmp_path / "r"), "disabled")
    cells = [cell_of(j) for j in jobs]
    assert [c.run_id for c in cells] == [j.run_id for j in jobs]
    assert {c.seed for c in cells} == {0, 1} and all(c.wandb == "disabled" for c in cells)
    as_module = write_sweep(tmp_path, command=["python", "-m", "bench.cli", "run", "${args}"])
    assert cell_of(grid_jobs(load_sweep(str(as_module)))[0]).seed == 0
    other = grid_jobs(load_sweep(str(write_sweep(tmp_path, command=["python", "x.py", "${args}"]))))
    with pytest.raises(BenchError, match="bench run"):
        cell_of(other[0])


def test_jobs_travel_to_a_worker_as_plain_data(tmp_path):
    jobs = grid_jobs(load_sweep(str(write_sweep(tmp_path))), str(tmp_path / "r" / "runs"))
    save_jobs(jobs, tmp_path / "jobs.json")
    back = load_jobs(tmp_path / "jobs.json")
    assert back == jobs and back[0].lock_path == jobs[0].lock_path


def test_pack_needs_worker(tmp_path, capsys):
    assert bench("grid", str(write_sweep(tmp_path)), "--pack", "2") == 2
    assert "--pack needs --worker" in capsys.readouterr().err


@pytest.mark.slow
def test_worker_writes_the_records_of_separate_bench_runs(in_tmp):
    sweep = load_sweep(str(write_sweep(in_tmp)))
    jobs = grid_jobs(sweep, "worker/runs", "disabled")
    assert work(jobs, pack=1) == 0
    for job in grid_jobs(sweep, "process/runs", "disabled"):
        assert bench(*job.command[1:]) == 0
    by_worker, by_process = records_of(in_tmp / "worker/runs"), records_of(in_tmp / "process/runs")
    assert set(by_worker) == set(by_process) == {j.run_id for j in jobs}
    for run_id, rec in by_worker.items():
        other = by_process[run_id]
        assert rec["metrics"] == other["metrics"]  # same process state: bit-identical
        assert set(rec) == set(other)
        assert rec["execution"]["mode"] == "worker" and other["execution"]["mode"] == "process"
    assert sorted(r["execution"]["worker_cell"] for r in by_worker.values()) == [1, 2]


@pytest.mark.slow
def test_a_killed_worker_leaves_its_cell_to_resume(in_tmp):
    sweep_path = write_sweep(in_tmp, seeds=[0], steps=120, evals=60)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    (job,) = grid_jobs(load_sweep(str(sweep_path)), None, "disabled")
    save_jobs([job], in_tmp / "jobs.json")
    cmd = [sys.executable, "-m", "bench.study.worker", str(in_tmp / "jobs.json")]
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    last = job.folder.checkpoints(job.run_id) / "last.ckpt"
    deadline = time.time() + 300
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    assert last.exists(), "the worker never wrote a checkpoint"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not job.done() and not is_locked(job.lock_path)  # no record, lock released
    assert work([job], pack=2) == 0  # a resumable cell is trained alone, from its checkpoint
    rec = records_of(job.records_dir)[job.run_id]
    assert rec["status"] == "completed" and rec["metrics"]["steps"] == 120
    assert rec["execution"]["mode"] == "worker"
    assert "resuming from" in job.log_path.read_text()


def test_slurm_nodes_keep_worker_and_pack(tmp_path):
    args = build_parser().parse_args([str(write_sweep(tmp_path)), "--worker", "--pack", "3"])
    argv = node_argv(args)
    assert argv[argv.index("--pack") + 1] == "3" and "--worker" in argv
    assert "--worker" not in node_argv(build_parser().parse_args([str(write_sweep(tmp_path))]))
