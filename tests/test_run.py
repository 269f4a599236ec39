"""`bench run` end to end: real timm models, real Lightning training, real records."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bench.cell import resume
from bench.cell.config import Cell
from bench.cell.datasets import load_splits
from bench.cell.train import fit_and_test, prepare
from bench.results import records as results
from bench.results.layout import StudyDir
from tests.conftest import CIFAR, TINY, bench
from tests.test_data import write_folder


def only_record(folder: Path) -> dict:
    files = list(Path(folder).glob("*.json"))
    assert len(files) == 1, files
    return json.loads(files[0].read_text())


def test_vit_cell_learns_and_writes_a_complete_record(in_tmp):
    assert bench("run", *TINY, "--results_dir=out") == 0
    rec = only_record(in_tmp / "out")
    for key in results.REQUIRED:
        assert key in rec, key
    assert rec["status"] == "completed" and rec["error"] is None
    assert rec["metrics"]["test_error"] < 0.5  # chance is 0.9
    assert set(results.METRICS) <= set(rec["metrics"])
    assert rec["metrics"]["steps"] == 40
    assert rec["params"] == 212_554 or 150_000 < rec["params"] < 300_000
    assert rec["flops_per_image"] > 1e7
    assert rec["train_flops"] == 3 * rec["flops_per_image"] * 64 * 40
    assert rec["config"]["family"] == "vit" and rec["data"]["n_train"] == 400
    assert {"python", "torch", "timm", "lightning", "wandb", "git_commit"} <= set(rec["env"])
    assert rec["timing"]["device"] == "cpu" and rec["timing"]["train_images_per_s"] > 0
    assert rec["wandb"]["mode"] == "disabled"
    assert Path(rec["checkpoint"]).exists()
    assert (
        rec["run_id"] == Cell.from_dict({k.split("=")[0][2:]: k.split("=")[1] for k in TINY}).run_id
    )
    # the resume-only checkpoints go once the record is written; the tested weights stay
    kept = {p.name for p in Path(rec["checkpoint"]).parent.iterdir()}
    assert kept == {"best.ckpt", "attempts.json"}


def test_completed_cell_is_skipped_unless_forced(in_tmp, capsys):
    assert bench("run", *TINY, "--steps=10", "--results_dir=out") == 0
    path = next((in_tmp / "out").glob("*.json"))
    before = path.stat().st_mtime_ns
    assert bench("run", *TINY, "--steps=10", "--results_dir=out") == 0
    assert "done already" in capsys.readouterr().err
    assert path.stat().st_mtime_ns == before
    assert bench("run", *TINY, "--steps=10", "--results_dir=out", "--force") == 0
    assert path.stat().st_mtime_ns != before


@pytest.mark.slow
def test_two_records_folders_in_one_study_keep_their_own_checkpoints(in_tmp):
    # the same cell trained into runs/ and into runs-b/ under one study folder: each record's
    # tested weights must stay its own, not the other's (they would share checkpoints/<run_id>)
    for out in ("s/runs", "s/runs-b"):
        assert bench("run", *TINY, "--steps=10", f"--results_dir={out}") == 0
    a, b = only_record(in_tmp / "s" / "runs"), only_record(in_tmp / "s" / "runs-b")
    assert a["run_id"] == b["run_id"]
    ckpt_a, ckpt_b = (in_tmp / r["checkpoint"] for r in (a, b))
    assert ckpt_a.parent == in_tmp / "s" / "checkpoints" / a["run_id"]
    assert ckpt_b.parent == in_tmp / "s" / "checkpoints-runs-b" / b["run_id"]
    assert ckpt_a.is_file() and ckpt_b.is_file()
    # neither run resumed from, or counted itself into, the other's checkpoints
    assert len(a["attempts"]) == len(b["attempts"]) == 1


def test_resnet_cell_learns(in_tmp):
    args = [a for a in TINY if not a.startswith(("--family", "--steps"))]
    assert bench("run", *args, "--family=resnet", "--steps=150", "--results_dir=out") == 0
    rec = only_record(in_tmp / "out")
    assert rec["metrics"]["test_error"] < 0.3
    assert rec["arch"]["width"] == 8


def test_divergence_is_recorded_not_raised(in_tmp):
    assert bench("run", *TINY, "--steps=20", "--lr=1e9", "--results_dir=out") == 0
    rec = only_record(in_tmp / "out")
    assert rec["status"] == "diverged"
    assert "nan" in rec["error"].lower() or "inf" in rec["error"].lower()
    assert rec["metrics"]["test_error"] is None


def run_cli(args, cwd, env=None, **kw):
    return subprocess.run(
        [sys.executable, "-m", "bench.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        **kw,
    )


@pytest.mark.parametrize(
    "bad, named",
    [
        (["--family=mlp"], "family"),
        (["--size=huge"], "size"),
        (["--dataset=mnist"], "dataset"),
        (["--patch_size=5"], "patch_size"),
        (["--n_train=99999"], "n_train"),
        (["--n_train=3"], "n_train"),
        (["--dataset=imagefolder", "--data_dir=missing"], "data_dir"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_leaves_nothing(tmp_path, bad, named):
    args = [a for a in TINY if a != "--wandb=disabled"] + [
        "--wandb=offline",
        "--results_dir=out",
        *bad,
    ]
    proc = run_cli(["run", *args], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and named in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "wandb").exists()


def test_unreadable_image_names_the_file(tmp_path):
    root = write_folder(tmp_path / "imgs")
    (root / "test" / "cat" / "bad.png").write_bytes(b"\x89PNG broken")
    proc = run_cli(
        [
            "run",
            *TINY,
            "--dataset=imagefolder",
            f"--data_dir={root}",
            "--n_train=9",
            "--results_dir=out",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 2 and "bad.png" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_offline_wandb_run_holds_the_test_error(tmp_path):
    args = [a for a in TINY if a != "--wandb=disabled"]
    proc = run_cli(
        ["run", *args, "--steps=20", "--wandb=offline", "--results_dir=out"],
        cwd=tmp_path,
        env={"WANDB_DIR": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr
    rec = only_record(tmp_path / "out")
    run_dir = tmp_path / rec["wandb"]["dir"]  # relative to the folder the run started in
    assert run_dir.name.startswith("offline-run-") and run_dir.exists()
    inspect = subprocess.run(
        ["wandb", "leet", "inspect", "--summary", "--json", str(run_dir)],
        capture_output=True,
        text=True,
        check=True,
    )
    summary = json.loads(inspect.stdout)["summary"]
    assert summary["test/error"] == pytest.approx(rec["metrics"]["test_error"])
    assert summary["val/error"]["min"] == pytest.approx(rec["metrics"]["val_error"])
    assert summary["record"]["run_id"] == rec["run_id"]
    config = json.loads(inspect.stdout)["config"]
    assert config["family"] == "vit" and config["params"] == rec["params"]


@pytest.mark.slow
def test_interrupted_cell_resumes_from_its_checkpoint(tmp_path):
    args = ["run", *TINY, "--steps=400", "--evals=40", "--results_dir=out"]
    args.append("--checkpoint_every_s=0")  # at every validation, so one exists to kill after
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.cli", *args],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    ckpt_dir = StudyDir.of_records(tmp_path / "out").checkpoints("any").parent
    deadline = time.time() + 240
    while time.time() < deadline and not list(ckpt_dir.glob("*/last.ckpt")):
        time.sleep(0.5)
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    last = next(ckpt_dir.glob("*/last.ckpt"))
    step_at_kill = torch.load(last, weights_only=False)["global_step"]
    assert 0 < step_at_kill < 400
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.json"))
    again = run_cli(args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "resuming from" in again.stderr
    rec = only_record(tmp_path / "out")
    assert rec["status"] == "completed" and rec["metrics"]["steps"] == 400


@pytest.mark.slow
@pytest.mark.skipif(
    not (CIFAR / "train").is_dir(), reason=f"CIFAR-10 ImageFolder tree not found at {CIFAR}"
)
def test_cifar10_jpeg_tree_trains(in_tmp):
    cell = Cell(dataset="imagefolder", data_dir=str(CIFAR))
    splits = load_splits(cell)
    assert splits.train_x.shape == (50000, 3, 32, 32) and splits.test_x.shape == (10000, 3, 32, 32)
    assert splits.classes[:3] == ["airplane", "automobile", "bird"]
    assert (
        bench(
            "run",
            "--dataset=imagefolder",
            f"--data_dir={CIFAR}",
            "--family=vit",
            "--size=xxs",
            "--n_train=2000",
            "--steps=150",
            "--wandb=disabled",
            "--progress=false",
            "--results_dir=out",
        )
        == 0
    )
    assert only_record(in_tmp / "out")["metrics"]["test_error"] < 0.8  # chance is 0.9


def test_checkpoints_wait_for_their_interval_and_the_result_does_not_change(in_tmp, monkeypatch):
    """With ``checkpoint_every_s`` longer than the run, a cell writes best.ckpt then last.ckpt
    once, at the end, and tests the same weights as a cell that wrote at every validation."""
    written = []
    save = resume.save_atomic

    def counted(trainer, path, *args, **kwargs):
        written.append(path.name)
        save(trainer, path, *args, **kwargs)

    monkeypatch.setattr(resume, "save_atomic", counted)
    base = Cell(dataset="synthetic", size="xxs", n_train=200, batch_size=32, steps=24, evals=6)
    base = base.replace(wandb="disabled", progress=False, device="cpu")
    outcomes, bests = {}, {}
    for every in (0.0, 3600.0):
        cell = base.replace(checkpoint_every_s=every, study=f"every{every:.0f}")
        written.clear()
        ckpt_dir = cell.folder.checkpoints(cell.run_id)
        outcomes[every] = fit_and_test(prepare(cell), ckpt_dir, None)
        bests[every] = torch.load(ckpt_dir / "best.ckpt", weights_only=False)
        if every:
            assert written == ["best.ckpt", "last.ckpt"]
        else:
            assert written.count("last.ckpt") == 7 and written[-2:] == ["best.ckpt", "last.ckpt"]
    assert outcomes[0.0]["test_error"] == outcomes[3600.0]["test_error"]
    assert outcomes[0.0]["val_error"] == outcomes[3600.0]["val_error"]
    a, b = (bests[e]["state_dict"] for e in (0.0, 3600.0))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert "optimizer_states" not in bests[0.0]  # tested, never resumed from
