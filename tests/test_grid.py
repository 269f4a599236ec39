"""The local runner: workers, devices, locks, interrupts, failures, SLURM submission.

Most tests run a small stand-in for `bench run` (it validates the cell, sleeps, writes a record
and logs that it trained) so they take seconds; the slow ones run the real `bench run`.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from bench.results import records as results
from bench.study.jobs import finished_runs, grid_jobs
from bench.study.procs import foreign_cells_here
from bench.study.runner import child_env
from bench.study.sweep_config import load_sweep
from bench.study.worker import cell_of

# Stands in for `bench run`: steps/10 seconds of "training"; seed 13 fails with a record of its
# own (exit 1); seed 14 dies without a record (exit 3); seed 15 is killed right after writing its
# completed record. Each start and end goes to trained.log.
FAKE_RUN = textwrap.dedent("""
    import os, sys, time
    from datetime import datetime, timezone
    from bench.results import records as results
    from bench.cell.config import Cell
    cell = Cell.from_dict(dict(a[2:].split("=", 1) for a in sys.argv[1:]))
    log = os.path.join(os.path.dirname(os.path.abspath(__file__)), "trained.log")
    dev = os.environ.get("CUDA_VISIBLE_DEVICES", "-")
    with open(log, "a") as f:
        f.write(f"start {cell.run_id} {time.time()} {dev}\\n")
    time.sleep((cell.steps or 0) / 10)
    if cell.seed == 14:
        os._exit(3)
    now = datetime.now(timezone.utc).isoformat()
    status = "failed" if cell.seed == 13 else "completed"
    results.write_record({
        "schema": 1, "run_id": cell.run_id, "study": cell.study, "status": status,
        "error": "boom" if status == "failed" else None, "config": cell.to_dict(), "params": 1,
        "flops_per_image": 1, "train_flops": 1, "timing": {}, "env": {}, "wandb": {},
        "metrics": {"val_error": 0.1 * cell.n_train % 1, "test_error": 0.5},
        "created_at": now, "finished_at": now}, cell.folder.records_dir)
    with open(log, "a") as f:
        f.write(f"end {cell.run_id} {time.time()} {dev}\\n")
    if cell.seed == 15:
        os.kill(os.getpid(), 9)
    sys.exit(1 if status == "failed" else 0)
""")


def make_grid(
    tmp: Path,
    *,
    steps: int = 5,
    n_train=(100, 200),
    families=("vit", "resnet"),
    seeds=(0,),
    method: str = "grid",
    fake: bool = True,
    extra: dict | None = None,
) -> Path:
    (tmp / "fake_run.py").write_text(FAKE_RUN)
    command = (
        ["python", str(tmp / "fake_run.py"), "${args}"] if fake else ["bench", "run", "${args}"]
    )
    params = {
        "study": {"value": "t"},
        "dataset": {"value": "synthetic"},
        "size": {"value": "xxs"},
        "family": {"values": list(families)},
        "n_train": {"values": list(n_train)},
        "seed": {"values": list(seeds)},
        "steps": {"value": steps},
    }
    params.update(extra or {})
    cfg = {
        "name": "t",
        "method": method,
        "metric": {"name": "val/error", "goal": "minimize"},
        "command": command,
        "parameters": params,
    }
    path = tmp / "t.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def grid(*args: str, cwd: Path, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bench.cli", "grid", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        **kw,
    )


def start_grid(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.cli", "grid", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def trained(tmp: Path, what: str = "end") -> list[str]:
    log = tmp / "trained.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return [ln.split()[1] for ln in lines if ln.startswith(what + " ")]


def records(tmp: Path) -> dict[str, dict]:
    return {r["run_id"]: r for r in results.iter_records(tmp / "results" / "t" / "runs")}


def wait_for(pred, timeout: float = 120.0) -> None:
    t0 = time.time()
    while not pred():
        assert time.time() - t0 < timeout, "timed out"
        time.sleep(0.1)


def test_workers_run_cells_concurrently_then_skip_done(tmp_path):
    make_grid(tmp_path, steps=10)
    p = grid("t.yaml", "--workers", "2", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    recs = records(tmp_path)
    assert len(recs) == 4 and {r["status"] for r in recs.values()} == {"completed"}
    assert sorted(trained(tmp_path)) == sorted(recs)
    # the study keeps the sweep it ran: bench analyze reads the expected grid from it
    kept = tmp_path / "results" / "t" / "sweeps" / "t.yaml"
    assert kept.read_text() == (tmp_path / "t.yaml").read_text()
    # two at a time: the first two cells overlap, and never three
    events = sorted(
        (float(ln.split()[2]), ln.split()[0])
        for ln in (tmp_path / "trained.log").read_text().splitlines()
    )
    depth = peak = 0
    for _, kind in events:
        depth += 1 if kind == "start" else -1
        peak = max(peak, depth)
    assert peak == 2
    assert "4/4 done" in p.stderr and "ETA" in p.stderr
    for run_id in recs:  # each cell's output went to its own log
        assert (tmp_path / "results" / "t" / "logs" / f"{run_id}.log").read_text().count(
            "=== exit 0"
        ) == 1
    mtimes = {
        k: (tmp_path / "results" / "t" / "runs" / f"{k}.json").stat().st_mtime_ns for k in recs
    }
    again = grid("t.yaml", "--workers", "2", cwd=tmp_path)
    assert again.returncode == 0 and "0 trained, 4 already done" in again.stderr
    assert len(trained(tmp_path, "start")) == 4
    assert mtimes == {
        k: (tmp_path / "results" / "t" / "runs" / f"{k}.json").stat().st_mtime_ns for k in recs
    }


def test_failed_cells_are_recorded_listed_and_the_grid_goes_on(tmp_path):
    make_grid(tmp_path, steps=1, families=("vit",), n_train=(100,), seeds=(0, 13, 14, 15))
    p = grid("t.yaml", "--workers", "2", cwd=tmp_path)
    assert p.returncode == 1
    recs = records(tmp_path)
    by_seed = {r["config"]["seed"]: r for r in recs.values()}
    assert by_seed[0]["status"] == by_seed[15]["status"] == "completed"  # done is a record
    assert (
        by_seed[13]["status"] == "failed" and by_seed[13]["error"] == "boom"
    )  # its own record kept
    assert (
        by_seed[14]["status"] == "failed" and "exit code 3" in by_seed[14]["error"]
    )  # written by the grid
    assert "2 trained" in p.stderr and "2 failed" in p.stderr
    assert f"failed: {by_seed[14]['run_id']}: exit code 3" in p.stderr
    # a rerun retries the failures only
    again = grid("t.yaml", "--workers", "2", cwd=tmp_path)
    assert again.returncode == 1 and "2 already done" in again.stderr
    assert trained(tmp_path, "start").count(by_seed[0]["run_id"]) == 1
    assert trained(tmp_path, "start").count(by_seed[13]["run_id"]) == 2


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_grid_resumes_without_retraining(tmp_path, sig):
    make_grid(tmp_path, steps=15)
    proc = start_grid("t.yaml", "--workers", "1", cwd=tmp_path)
    wait_for(lambda: len(records(tmp_path)) >= 1 and len(trained(tmp_path, "start")) >= 2)
    first = dict(records(tmp_path))
    mtimes = {
        k: (tmp_path / "results" / "t" / "runs" / f"{k}.json").stat().st_mtime_ns for k in first
    }
    os.killpg(proc.pid, sig)  # as a terminal's Ctrl-C (or a scheduler) reaches the whole group
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err
    assert "interrupted" in err and "rerun to resume" in err
    assert len(records(tmp_path)) < 4
    again = grid("t.yaml", "--workers", "2", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    recs = records(tmp_path)
    assert len(recs) == 4
    for k in first:  # completed cells were not trained again
        assert (tmp_path / "results" / "t" / "runs" / f"{k}.json").stat().st_mtime_ns == mtimes[k]
        assert recs[k]["created_at"] == first[k]["created_at"]
        assert trained(tmp_path, "start").count(k) == 1
    assert sorted(trained(tmp_path)) == sorted(recs)  # every cell completed exactly once


def test_two_runners_train_each_cell_exactly_once(tmp_path):
    make_grid(tmp_path, steps=8, n_train=(100, 200, 300))
    a = start_grid("t.yaml", "--workers", "2", cwd=tmp_path)
    b = start_grid("t.yaml", "--workers", "2", cwd=tmp_path)
    (_, err_a), (_, err_b) = a.communicate(timeout=120), b.communicate(timeout=120)
    assert a.returncode == 0 and b.returncode == 0, err_a + err_b
    starts = trained(tmp_path, "start")
    assert len(starts) == 6 and len(set(starts)) == 6
    assert len(records(tmp_path)) == 6
    assert "another runner" in err_a + err_b


LOOK_AT_A_LOCK = """
import sys, time
from pathlib import Path
from bench.results.locks import release, try_lock
fd = try_lock(Path(sys.argv[1]))
if sys.argv[2] == "let-go":
    release(fd)
print("ready", flush=True)
time.sleep(120)
"""


def test_a_lock_let_go_names_no_live_cell(tmp_path):
    """A runner that only looked at a cell, or adopted it, lets go of its lock without leaving
    its name there: while it lives, another runner of the study would count a cell in training
    and hold back a slot."""
    locks = tmp_path / ".locks"
    procs = []
    try:
        for how in ("hold", "let-go"):
            cmd = [sys.executable, "-c", LOOK_AT_A_LOCK, str(locks / f"{how}.lock"), how]
            procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True))
            assert procs[-1].stdout.readline().strip() == "ready"
        assert foreign_cells_here([locks], own=set()) == 1  # the held lock only
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_a_second_runner_on_the_host_holds_back_and_says_why(tmp_path):
    """Two runners of one study on one host share its slots: never more cells than one's
    --workers at once, and the one that waits says so rather than sitting silent."""
    make_grid(tmp_path, steps=80, n_train=(100, 200, 300), families=("vit",))
    a = start_grid("t.yaml", "--workers", "1", cwd=tmp_path)
    wait_for(lambda: len(trained(tmp_path, "start")) == 1)
    b = start_grid("t.yaml", "--workers", "1", cwd=tmp_path)
    (_, err_a), (_, err_b) = a.communicate(timeout=120), b.communicate(timeout=120)
    assert a.returncode == 0 and b.returncode == 0, err_a + err_b
    assert "holding back: 1 cell(s) of another runner" in err_b
    lines = (tmp_path / "trained.log").read_text().split("\n")
    spans = {}
    for what, run_id, when, _ in (ln.split() for ln in lines if ln):
        spans.setdefault(run_id, {})[what] = float(when)
    assert len(spans) == 3
    ordered = sorted(spans.values(), key=lambda s: s["start"])
    for before, after in zip(ordered, ordered[1:], strict=False):
        assert after["start"] >= before["end"]  # one cell at a time on the host


def test_devices_spread_cells_with_per_device_slots(tmp_path, monkeypatch):
    make_grid(tmp_path, steps=3, n_train=(100, 200, 300, 400))
    p = grid(
        "t.yaml",
        "--devices",
        "0,1",
        "--per_device",
        "2",
        cwd=tmp_path,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": "5,7"},
    )
    assert p.returncode == 0, p.stderr
    lines = [
        ln.split()
        for ln in (tmp_path / "trained.log").read_text().splitlines()
        if ln.startswith("start")
    ]
    devices = [ln[3] for ln in lines]
    assert sorted(set(devices)) == ["5", "7"]  # --devices counts as CUDA does in the runner
    assert abs(devices.count("5") - devices.count("7")) <= 2
    bad = grid("t.yaml", "--devices", "0,1", "--workers", "3", cwd=tmp_path)
    assert bad.returncode == 2 and "disagrees" in bad.stderr


def test_results_dir_and_wandb_are_appended_to_each_command(tmp_path):
    make_grid(tmp_path, steps=1)
    out_dir = tmp_path / "elsewhere"
    p = grid(
        "t.yaml", "--workers", "2", f"--results_dir={out_dir}", "--wandb=disabled", cwd=tmp_path
    )
    assert p.returncode == 0, p.stderr
    assert len(list(out_dir.glob("*.json"))) == 4 and not (tmp_path / "results").exists()
    log = next((tmp_path / "logs").glob("*.log")).read_text()
    assert f"--results_dir={out_dir} --wandb=disabled\n" in log


def test_set_gives_every_cell_a_runtime_field_and_keeps_its_run_id(tmp_path):
    make_grid(tmp_path, steps=1, extra={"data_dir": {"value": "data/here"}})
    sweep = load_sweep(tmp_path / "t.yaml")
    ids = {j.run_id for j in grid_jobs(sweep)}
    p = grid(
        "t.yaml",
        "--workers=2",
        "--set",
        "data_dir=/elsewhere/data",  # the sweep's own value is overridden
        "--set=checkpoint_every_s=0",
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr
    recs = records(tmp_path)
    assert set(recs) == ids  # the same experiments
    for rec in recs.values():
        assert rec["config"]["data_dir"] == "/elsewhere/data"
        assert rec["config"]["checkpoint_every_s"] == 0
    # a worker reads its cells from the same commands
    (tmp_path / "w").mkdir()
    real = load_sweep(make_grid(tmp_path / "w", fake=False))
    cells = [cell_of(j) for j in grid_jobs(real, settings={"compile_mode": "reduce-overhead"})]
    assert {c.compile_mode for c in cells} == {"reduce-overhead"}
    assert {c.run_id for c in cells} == {j.run_id for j in grid_jobs(real)}


def test_random_sweep_runs_count_cells_and_feeds_records_back(tmp_path):
    extra = {"lr": {"min": 0.0001, "max": 0.01, "distribution": "log_uniform_values"}}
    make_grid(tmp_path, steps=1, method="random", extra=extra)
    p = grid("t.yaml", "--workers", "2", "--count", "3", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert len(records(tmp_path)) == 3
    # bayes on the same study: the three finished cells (with val/error) go to the engine
    cfg = yaml.safe_load((tmp_path / "t.yaml").read_text())
    cfg["method"] = "bayes"
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(cfg))
    runs = finished_runs(load_sweep(tmp_path / "t.yaml"), tmp_path / "results" / "t" / "runs")
    assert len(runs) == 3 and all("val/error" in r.summary_metrics for r in runs)
    p = grid("t.yaml", "--count", "2", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert len(records(tmp_path)) == 5


def test_slurm_submits_one_runner_per_node(tmp_path):
    """Real submitit up to sbatch: a stand-in sbatch keeps the script; the job runs the grid."""
    make_grid(tmp_path, steps=1)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text(
        f"#!/bin/sh\ncp \"$1\" {tmp_path}/submitted.sh\necho 'Submitted batch job 4242'\n"
    )
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    p = grid(
        "t.yaml",
        "--launcher=slurm",
        "--partition=gpu",
        "--nodes=3",
        "--gpus_per_node=2",
        "--per_device=2",
        "--time=90",
        "--setup",
        "source venv/bin/activate",
        "--set=checkpoint_every_s=0",
        cwd=tmp_path,
        env=env,
    )
    assert p.returncode == 0, p.stderr
    assert "submitted 3 SLURM job(s)" in p.stdout and "4242_0" in p.stdout
    script = (tmp_path / "submitted.sh").read_text()
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --gpus-per-node=2",
        "#SBATCH --array=0-2%3",
        "#SBATCH --time=90",
        "#SBATCH --nodes=1",
        "source venv/bin/activate",
    ):
        assert line in script, script
    assert "submitit.core._submit" in script
    pickles = sorted((tmp_path / "slurm").glob("*_submitted.pkl"))
    assert len(pickles) == 3
    with open(pickles[0], "rb") as f:
        delayed = pickle.load(f)
    argv, cwd = delayed.args
    assert argv[:1] == [str(tmp_path / "t.yaml")] and cwd == str(tmp_path)
    assert (
        argv[argv.index("--devices") + 1] == "0,1" and argv[argv.index("--per_device") + 1] == "2"
    )
    assert "--set=checkpoint_every_s=0" in argv
    # what the job would run on its node: the grid itself
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            "import pickle,sys; d=pickle.load(open(sys.argv[1],'rb')); sys.exit(d.result())",
            str(pickles[0]),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert len(records(tmp_path)) == 4


def test_slurm_without_slurm_is_one_line(tmp_path):
    make_grid(tmp_path)
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + "/usr/bin:/bin"}
    p = grid("t.yaml", "--launcher=slurm", cwd=tmp_path, env=env)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "srun" in p.stderr


# ---------------------------------------------------------------------- the real `bench run`
REAL = {"batch_size": {"value": 32}, "progress": {"value": False}, "wandb": {"value": "disabled"}}


@pytest.mark.slow
def test_four_cell_grid_of_real_bench_run_with_two_workers(tmp_path):
    make_grid(tmp_path, steps=4, fake=False, extra=REAL)
    t0 = time.time()
    p = grid("t.yaml", "--workers", "2", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    recs = records(tmp_path)
    assert len(recs) == 4 and {r["status"] for r in recs.values()} == {"completed"}
    assert {(r["config"]["family"], r["config"]["n_train"]) for r in recs.values()} == {
        ("vit", 100),
        ("vit", 200),
        ("resnet", 100),
        ("resnet", 200),
    }
    for run_id in recs:
        assert "completed" in (tmp_path / "results" / "t" / "logs" / f"{run_id}.log").read_text()
    print(f"4 real cells, 2 workers: {time.time() - t0:.1f}s")
    again = grid("t.yaml", "--workers", "2", cwd=tmp_path)
    assert again.returncode == 0 and "0 trained, 4 already done" in again.stderr


@pytest.mark.slow
def test_real_grid_interrupted_then_rerun_keeps_completed_cells(tmp_path):
    make_grid(tmp_path, steps=4, fake=False, extra=REAL)
    proc = start_grid("t.yaml", "--workers", "2", cwd=tmp_path)
    wait_for(lambda: len(records(tmp_path)) >= 1, timeout=300)
    first = {k: json.dumps(v, sort_keys=True) for k, v in records(tmp_path).items()}
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode in (0, 130), err  # 0 if every cell happened to finish first
    again = grid("t.yaml", "--workers", "2", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    recs = records(tmp_path)
    assert len(recs) == 4 and {r["status"] for r in recs.values()} == {"completed"}
    for k, text in first.items():
        assert json.dumps(recs[k], sort_keys=True) == text  # untouched: not retrained


def test_cpu_cells_share_the_cores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert child_env(None, 2)["OMP_NUM_THREADS"] == str(max(1, (os.cpu_count() or 1) // 2))
    assert "OMP_NUM_THREADS" not in child_env(None, 1)
    assert "OMP_NUM_THREADS" not in child_env("0", 4)  # GPU cells keep their threads
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert child_env(None, 2)["OMP_NUM_THREADS"] == "3"  # the user's choice wins
