"""Fault injection: damaged records, bad input, torn checkpoints, full disks, kills.

Each test breaks something on purpose and asserts two things: the harness says what broke in one
line (no traceback), and nothing finished is lost or silently replaced.
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from bench.analysis.plot_style import plt, save
from bench.cell.config import Cell
from bench.errors import StorageError
from bench.results import records
from bench.results.locks import LOCK_FD_ENV, try_lock
from bench.study.pull import PulledRun, record_from_run
from tests.conftest import bench
from tests.test_grid import grid, make_grid, start_grid, trained

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


# ---------------------------------------------------------------------- bad input
def _imagefolder(root: Path, train: dict[str, int]) -> str:
    """A tiny imagefolder: ``train`` maps class -> images; test/ has one image per class."""
    for split, counts in (("train", train), ("test", {c: 1 for c in train})):
        for cls, n in counts.items():
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.new("RGB", (8, 8), (i * 40 % 255, 0, 0)).save(root / split / cls / f"{i}.png")
    return str(root)


RUN = ["run", "--dataset=synthetic", "--size=xxs", "--steps=2", "--wandb=disabled"]
BAD_INPUTS = {
    # id: (argv after `bench`, the field the one line must name)
    "lr_nan": ([*RUN, "--lr=nan"], "lr"),
    "lr_inf": ([*RUN, "--lr=inf"], "lr"),
    "lr_negative": ([*RUN, "--lr=-1"], "lr"),
    "lr_zero": ([*RUN, "--lr=0"], "lr"),
    "lr_text": ([*RUN, "--lr=fast"], "lr"),
    "epochs_inf": (["run", "--dataset=synthetic", "--epochs=inf"], "epochs"),
    "epochs_nan": (["run", "--dataset=synthetic", "--epochs=nan"], "epochs"),
    "epochs_zero": (["run", "--dataset=synthetic", "--epochs=0"], "epochs"),
    "steps_inf": (["run", "--steps=inf"], "steps"),
    "steps_negative": (["run", "--steps=-5"], "steps"),
    "examples_zero": (["run", "--examples=0"], "examples"),
    "batch_size_zero": ([*RUN, "--batch_size=0"], "batch_size"),
    "batch_size_text": ([*RUN, "--batch_size=abc"], "batch_size"),
    "weight_decay_nan": ([*RUN, "--weight_decay=nan"], "weight_decay"),
    "weight_decay_negative": ([*RUN, "--weight_decay=-0.1"], "weight_decay"),
    "warmup_nan": ([*RUN, "--warmup=nan"], "warmup"),
    "warmup_one": ([*RUN, "--warmup=1.5"], "warmup"),
    "label_smoothing_inf": ([*RUN, "--label_smoothing=inf"], "label_smoothing"),
    "grad_clip_nan": ([*RUN, "--grad_clip=nan"], "grad_clip"),
    "budget_scale_nan": ([*RUN, "--budget_scale=nan"], "budget_scale"),
    "budget_scale_zero": ([*RUN, "--budget_scale=0"], "budget_scale"),
    "img_size_zero": ([*RUN, "--img_size=0"], "img_size"),
    "patch_size_not_dividing": ([*RUN, "--patch_size=5"], "patch_size"),
    "depth_overflow": ([*RUN, "--depth=1e400"], "depth"),
    "n_train_zero": ([*RUN, "--n_train=0"], "n_train"),
    "n_train_text": ([*RUN, "--n_train=many"], "n_train"),
    "seed_negative": ([*RUN, "--seed=-1"], "seed"),
    "checkpoint_every_s_negative": ([*RUN, "--checkpoint_every_s=-1"], "checkpoint_every_s"),
    "checkpoint_every_s_nan": ([*RUN, "--checkpoint_every_s=nan"], "checkpoint_every_s"),
    "evals_zero": ([*RUN, "--evals=0"], "evals"),
    "val_size_negative": ([*RUN, "--val_size=-1"], "val_size"),
    "val_size_too_large": ([*RUN, "--val_size=100000"], "val_size"),
    "family_unknown": ([*RUN, "--family=cnn"], "family"),
    "dataset_unknown": ([*RUN, "--dataset=mnist"], "dataset"),
    "two_budgets": ([*RUN, "--epochs=2"], "steps"),
    "flag_without_value": ([*RUN, "--lr"], "--lr"),
    "unknown_flag": ([*RUN, "--learning_rate=1"], "--learning_rate"),
    "config_missing": ([*RUN, "--config=nope.yaml"], "nope.yaml"),
    "results_dir_under_a_file": ([*RUN, "--results_dir=afile/runs"], "results_dir"),
    "imagefolder_no_data_dir": ([*RUN, "--dataset=imagefolder"], "data_dir"),
    "imagefolder_one_class": ([*RUN, "--dataset=imagefolder", "--data_dir={one}"], "data_dir"),
    "imagefolder_empty_class": ([*RUN, "--dataset=imagefolder", "--data_dir={empty}"], "data_dir"),
    "grid_workers_zero": (["grid", "t.yaml", "--workers=0"], "--workers"),
    "grid_workers_without_value": (["grid", "t.yaml", "--workers"], "--workers"),
    "grid_count_zero": (["grid", "t.yaml", "--count=0"], "--count"),
    "grid_set_identity_field": (["grid", "t.yaml", "--set", "n_train=5"], "n_train"),
    "grid_set_unknown_field": (["grid", "t.yaml", "--set", "speed=11"], "speed"),
    "grid_set_without_value": (["grid", "t.yaml", "--set", "compile_mode"], "compile_mode"),
    "grid_set_bad_value": (["grid", "t.yaml", "--set=checkpoint_every_s=-1"], "checkpoint_every_s"),
    "dry_run_set_bad_value": (
        ["grid", "t.yaml", "--dry-run", "--set", "compile_mode=fastest"],
        "compile_mode",
    ),
    "grid_results_dir_under_a_file": (["grid", "t.yaml", "--results_dir=afile/r"], "results_dir"),
    "dry_run_results_dir_under_a_file": (
        ["grid", "t.yaml", "--dry-run", "--results_dir=afile/r"],
        "results_dir",
    ),
    "analyze_bootstrap_negative": (["analyze", ".", "--bootstrap=-1"], "--bootstrap"),
    "fit_without_columns": (["fit", "t.csv"], "--x"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_naming_the_field_and_exit_2(tmp_path, monkeypatch, capsys, case):
    monkeypatch.chdir(tmp_path)
    make_grid(tmp_path, families=("vit",))
    (tmp_path / "afile").write_text("a regular file\n")
    (tmp_path / "t.csv").write_text("n,err,arch\n")
    one = _imagefolder(tmp_path / "one", {"a": 3})
    empty = _imagefolder(tmp_path / "empty", {"a": 3, "b": 3})
    for f in (tmp_path / "empty" / "train" / "b").iterdir():
        f.unlink()
    before = sorted(p.name for p in tmp_path.iterdir())
    argv, field = BAD_INPUTS[case]
    argv = [a.format(one=one, empty=empty) for a in argv]

    assert bench(*argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert field in err and err.startswith(f"bench {argv[0]}: error: "), err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no record, no W&B run


def test_dry_run_rejects_what_the_real_grid_rejects(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # a sweep varying a runtime field: two cells, one experiment
    make_grid(tmp_path, families=("vit",), extra={"wandb": {"values": ["disabled", "offline"]}})
    for argv in (["--dry-run"], []):
        assert bench("grid", "t.yaml", *argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "runtime field" in err[0]
    assert not (tmp_path / "results").exists()


def test_a_cell_another_process_trains_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    """Two `bench run`s of one cell would resume from each other's checkpoints: the second is
    refused (exit 4) and touches nothing; one started by a runner holding the lock trains."""
    monkeypatch.chdir(tmp_path)
    argv = ["run", *CELL[:5], "--steps=4", "--evals=1", *CELL[7:]]
    cell = Cell.from_dict(dict(a[2:].split("=", 1) for a in argv[1:]))
    lock = cell.folder.lock(cell.run_id)
    fd = try_lock(lock)  # another trainer: held through its own open file
    assert fd is not None
    assert bench(*argv) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "being trained by another process" in err[0], err
    assert f"{os.uname().nodename} {os.getpid()}" in err[0] and str(lock) in err[0]
    assert not cell.folder.record(cell.run_id).exists()
    assert not cell.folder.checkpoints(cell.run_id).exists()
    # the runner that holds the lock passes it down: the cell trains under it
    monkeypatch.setenv(LOCK_FD_ENV, str(fd))
    assert bench(*argv) == 0
    assert records.read_record(cell.folder.record(cell.run_id))["status"] == "completed"
    os.close(fd)


# ---------------------------------------------------------------------- kills and resume
CELL = [
    "--dataset=synthetic",
    "--family=vit",
    "--size=xxs",
    "--n_train=400",
    "--batch_size=64",  # 6 batches an epoch: validations every 5 steps fall mid-epoch
    "--steps=30",
    "--evals=6",
    "--wandb=disabled",
    "--progress=false",
    "--checkpoint_every_s=0",  # at every validation: the kills below wait for new checkpoints
]


def run_cell(
    cwd: Path, out: str, kill_when=None, recipe: str = "basic"
) -> subprocess.CompletedProcess | None:
    """``bench run`` of CELL into ``out``; SIGKILLed as soon as ``kill_when(ckpt_dir)`` holds."""
    argv = [sys.executable, "-m", "bench.cli", "run", *CELL, f"--results_dir={out}/runs"]
    argv.append(f"--recipe={recipe}")
    if kill_when is None:
        return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=600)
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpts = cwd / out / "checkpoints"
    while proc.poll() is None:
        dirs = list(ckpts.glob("*")) if ckpts.is_dir() else []
        if dirs and kill_when(dirs[0]):
            proc.kill()
            break
        time.sleep(0.02)
    proc.wait()
    return None


def new_checkpoint(out: Path):
    """A kill condition: last.ckpt is newer than when this was called."""
    before = {p: p.stat().st_mtime_ns for p in out.glob("checkpoints/*/last.ckpt")}

    def written(ckpt_dir: Path) -> bool:
        last = ckpt_dir / "last.ckpt"
        try:
            return (ckpt_dir / "prev.ckpt").exists() and last.stat().st_mtime_ns != before.get(last)
        except FileNotFoundError:
            return False

    return written


def only(folder: Path) -> dict:
    (path,) = folder.glob("*.json")
    return records.read_record(path)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    return whole_run(tmp_path_factory, "basic")


def whole_run(tmp_path_factory, recipe: str) -> dict:
    tmp = tmp_path_factory.mktemp("whole")
    done = run_cell(tmp, "whole", recipe=recipe)
    assert done.returncode == 0, done.stderr
    return only(tmp / "whole" / "runs")


# the strong recipe draws from four more generators (the per-image policy in the loader; erasing,
# mixup/cutmix and drop-path in the step), which a resumed cell must continue, not restart
@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["basic", "strong"])
def test_killed_cell_resumes_to_the_same_result_as_an_uninterrupted_one(
    tmp_path, tmp_path_factory, uninterrupted, recipe
):
    if recipe != "basic":
        uninterrupted = whole_run(tmp_path_factory, recipe)
    for _ in range(2):  # two kills, each once the attempt has written a checkpoint of its own
        run_cell(tmp_path, "k", kill_when=new_checkpoint(tmp_path / "k"), recipe=recipe)
        assert not list((tmp_path / "k" / "runs").glob("*.json"))
    done = run_cell(tmp_path, "k", recipe=recipe)
    assert done.returncode == 0 and "resuming from" in done.stderr, done.stderr
    rec = only(tmp_path / "k" / "runs")
    assert rec["metrics"] == uninterrupted["metrics"]  # bit-identical, not approximately
    steps = [a["resumed_from_step"] for a in rec["attempts"]]
    assert len(steps) == 3 and steps[0] is None and 0 < steps[1] <= steps[2] < 30
    assert rec["timing"]["wall_s"] == pytest.approx(sum(a["wall_s"] for a in rec["attempts"]))


@pytest.mark.slow
@pytest.mark.parametrize("torn", ["last", "last_and_prev"])
def test_a_torn_checkpoint_falls_back_to_the_previous_one_else_restarts(
    tmp_path, uninterrupted, torn
):
    run_cell(tmp_path, "t", kill_when=lambda d: (d / "prev.ckpt").exists())
    (ckpt_dir,) = (tmp_path / "t" / "checkpoints").glob("*")
    for name in ["last", "prev"] if torn == "last_and_prev" else ["last"]:
        path = ckpt_dir / f"{name}.ckpt"
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # a copy cut short
    done = run_cell(tmp_path, "t")
    assert done.returncode == 0, done.stderr
    warnings = [ln for ln in done.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == len(torn.split("_and_")) and "last.ckpt is damaged" in warnings[0]
    rec = only(tmp_path / "t" / "runs")
    assert rec["metrics"] == uninterrupted["metrics"]
    expect_resume = torn == "last"
    assert (rec["attempts"][-1]["resumed_from_step"] is not None) == expect_resume


# ---------------------------------------------------------------------- full disks
@pytest.fixture
def tiny_disk(tmp_path):
    """A 256 KB tmpfs at tmp_path/disk (root only; skipped where mount is not allowed)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("mounting a tmpfs needs root; the stand-in tests below still run")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith((".tmp", ".ckpt")))


def test_record_on_a_full_disk_is_one_error_naming_it_and_leaves_nothing(tmp_path, monkeypatch):
    def no_space(fd):  # stand-in for a full disk: the data cannot reach it
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    rec = fake_record(Cell(study="t"))
    with pytest.raises(StorageError, match=r"cannot write .*\.json: No space left on device"):
        records.write_record(rec, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_figure_on_a_full_disk_leaves_the_old_figure_whole(tmp_path, monkeypatch):
    path = tmp_path / "figures" / "error_vs_n.png"
    fig, ax = plt.subplots()
    ax.plot([1, 2], [3, 4])
    save(fig, path)
    before = path.read_bytes()
    assert before.startswith(b"\x89PNG")

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    fig, ax = plt.subplots()
    ax.plot([1, 2], [4, 3])
    with pytest.raises(StorageError, match=r"cannot write .*error_vs_n\.png"):
        save(fig, path)
    assert path.read_bytes() == before and [p.name for p in path.parent.iterdir()] == [path.name]


def test_bench_run_on_a_full_disk_exits_3_in_one_line_with_no_partial_files(tmp_path, tiny_disk):
    argv = [sys.executable, "-m", "bench.cli", "run", *CELL, f"--results_dir={tiny_disk}/s/runs"]
    argv.append(f"--cache_dir={tiny_disk}/cache")  # the data cache does not fit either
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 3, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("bench run: error: cannot write ") and "No space left" in last
    assert "Traceback" not in done.stderr
    assert _leftovers(tiny_disk) == []  # no temp file, no checkpoint cut short
    assert not list(tiny_disk.glob("s/runs/*.json"))  # and no record


def test_grid_on_a_full_disk_fails_each_cell_in_one_line_then_recovers(tmp_path, tiny_disk):
    make_grid(tmp_path, families=("vit",), steps=1)
    filler = tiny_disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:  # fill the disk to the last page
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    full = grid("t.yaml", f"--results_dir={tiny_disk}/runs", cwd=tmp_path)
    assert full.returncode == 3 and "Traceback" not in full.stderr, full.stderr
    assert full.stderr.count("No space left on device") >= 2  # each cell said so, and went on
    assert "2 failed" in full.stderr
    assert [p.name for p in tiny_disk.rglob("*.tmp")] == []
    filler.unlink()  # space again: the same grid completes every cell
    again = grid("t.yaml", f"--results_dir={tiny_disk}/runs", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert len(list((tiny_disk / "runs").glob("*.json"))) == 2


# ---------------------------------------------------------------------- runners and their cells
def lock_pids(folder: Path) -> list[int]:
    """The pids named by the cells' lock files (the cell's process, see bench.study.procs)."""
    pids = []
    for lock in folder.glob("**/.locks/*.lock"):
        try:
            pids.append(int(lock.read_text().split()[1]))
        except (OSError, ValueError, IndexError):
            pass
    return pids


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def wait_until(pred, timeout: float = 60.0) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_cells_die_with_a_killed_runner(tmp_path):
    make_grid(tmp_path, families=("vit",), steps=600)  # the fake cell "trains" a minute
    runner = start_grid("t.yaml", "--workers", "2", cwd=tmp_path)
    assert wait_until(lambda: len(trained(tmp_path, "start")) == 2)
    pids = lock_pids(tmp_path / "results")
    assert len(pids) == 2 and all(alive(p) for p in pids)
    os.kill(runner.pid, signal.SIGKILL)  # the runner alone: its cells are in sessions of their own
    runner.wait()
    assert wait_until(lambda: not any(alive(p) for p in pids), timeout=10)


def test_a_second_runner_counts_the_first_ones_cells_against_its_slots(tmp_path):
    make_grid(tmp_path, families=("vit", "resnet"), steps=30)  # 4 cells of 3 s
    first = start_grid("t.yaml", "--workers", "1", cwd=tmp_path)
    assert wait_until(lambda: trained(tmp_path, "start"))
    second = grid("t.yaml", "--workers", "1", cwd=tmp_path)
    first.wait(timeout=300)
    assert first.returncode == 0 and second.returncode == 0, second.stderr
    events = []
    for line in (tmp_path / "trained.log").read_text().splitlines():
        what, _, t, _ = line.split()
        events.append((float(t), 1 if what == "start" else -1))
    running, most = 0, 0
    for _, step in sorted(events):
        running += step
        most = max(most, running)
    assert most == 1  # one slot on this host between them, never two cells at once
    assert sorted(trained(tmp_path)) == sorted(set(trained(tmp_path)))  # each cell once


# ---------------------------------------------------------------------- nothing to analyse
def test_analyze_and_fit_with_nothing_to_analyse_exit_2_and_write_nothing(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "study" / "runs").mkdir(parents=True)
    (tmp_path / "nan.csv").write_text("n,err,arch\nx,nan,vit\n,1,resnet\n")
    (tmp_path / "header.csv").write_text("n,err,arch\n")
    for argv in (
        ["analyze", "study"],
        ["fit", "nan.csv", "--x=n", "--y=err", "--family=arch"],
        ["fit", "header.csv", "--x=n", "--y=err", "--family=arch"],
    ):
        before = sorted(str(p) for p in tmp_path.rglob("*"))
        assert bench(*argv) == 2
        captured = capsys.readouterr()
        assert len(captured.err.strip().splitlines()) == 1 and captured.out == ""
        assert sorted(str(p) for p in tmp_path.rglob("*")) == before


def test_pull_skips_a_run_without_a_usable_config_and_says_so(tmp_path, capsys):
    killed = PulledRun(source="wandb/offline-run-x", config={}, summary={}, state="crashed")
    assert record_from_run(killed) is None
    assert "skipping wandb/offline-run-x: its config has no 'study'" in capsys.readouterr().err


# ---------------------------------------------------------------------- random kills
KILLS = 20
REAL = {
    "batch_size": {"value": 64},
    "evals": {"value": 6},
    "wandb": {"value": "disabled"},
    "progress": {"value": False},
    "checkpoint_every_s": {"value": 0},  # at every validation, for kills to land after some
}


@pytest.mark.slow
def test_random_sigkills_of_a_grid_and_its_cells_lose_and_change_nothing(tmp_path):
    """20 SIGKILLs at random moments, of the runner (its cells die with it) or of one cell; then
    every cell is completed exactly once, with the metrics of an uninterrupted run."""

    def study(folder: Path) -> Path:
        folder.mkdir()
        make_grid(
            folder,
            steps=45,  # 9 validations, so kills land between many checkpoints
            n_train=(400,),
            families=("vit",),
            seeds=(0, 1, 2),
            fake=False,
            extra={**REAL, "evals": {"value": 9}},
        )
        return folder

    whole, killed = study(tmp_path / "whole"), study(tmp_path / "killed")
    started = time.time()
    assert grid("t.yaml", "--workers", "2", cwd=whole).returncode == 0
    # waits between kills scale with this machine's pace, so a fast idle machine does not finish
    # the grid within a few kills and a slow loaded one still lets kills land between checkpoints
    pace = min(5.0, (time.time() - started) / 12)
    rng, kills, runners = random.Random(11), 0, 0
    while kills < KILLS:
        started = time.time()
        runner = start_grid("t.yaml", "--workers", "2", cwd=killed)
        runners += 1
        # kill while cells train: after an attempt has begun (its attempts.json), at random
        began = lambda r=runner, t=started: r.poll() is not None or training_since(killed, t)  # noqa: E731
        assert wait_until(began, timeout=600)
        time.sleep(rng.uniform(0.0, pace))
        if runner.poll() is not None:
            break  # the grid finished between two kills
        cells = [p for p in lock_pids(killed / "results") if alive(p)]
        if cells and rng.random() < 0.5:
            os.kill(rng.choice(cells), signal.SIGKILL)  # one cell; its runner records the failure
            kills += 1
            time.sleep(rng.uniform(0.1, 0.8) * pace)
        os.kill(runner.pid, signal.SIGKILL)  # then the runner, whose cells die with it
        runner.wait()
        kills += 1
        assert wait_until(lambda cells=cells: not any(alive(p) for p in cells), timeout=10)
    final = grid("t.yaml", "--workers", "2", cwd=killed)
    assert final.returncode == 0, final.stderr
    assert kills >= KILLS // 4, f"only {kills} kills before the grid finished"
    want = {r["run_id"]: r for r in records.iter_records(whole / "results")}
    got = {r["run_id"]: r for r in records.iter_records(killed / "results")}
    assert sorted(got) == sorted(want) and len(got) == 3
    for run_id, rec in got.items():
        assert rec["status"] == "completed" and rec["metrics"] == want[run_id]["metrics"], run_id
    resumed = [a["resumed_from_step"] for r in got.values() for a in r["attempts"]]
    assert any(step for step in resumed), "no kill landed after a checkpoint: nothing resumed"
    print(f"{kills} kills over {runners} runners at pace {pace:.1f} s; resumed from: {resumed}")


def training_since(folder: Path, t: float) -> bool:
    """An attempt at some cell has begun training since ``t``."""
    return any(p.stat().st_mtime >= t for p in folder.glob("results/*/checkpoints/*/attempts.json"))
