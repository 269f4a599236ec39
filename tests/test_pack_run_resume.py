"""A killed pack's members resume wherever they are run again: alone, or beside another pack's."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from bench.cell.packed import lone_member_step
from bench.cell.resume import LAST
from bench.cell.run import run_cell
from bench.cell.train import prepare
from bench.study.jobs import grid_jobs
from bench.study.runner import Job
from bench.study.sweep_config import load_sweep
from bench.study.worker import CellWorker, work
from tests.test_pack_resume import Killed, Terminated, cells, killed_after, revived, train
from tests.test_worker import records_of, write_sweep


def resumed_steps(cell) -> list:
    attempts = cell.folder.checkpoints(cell.run_id) / "attempts.json"
    return [a["resumed_from_step"] for a in json.loads(attempts.read_text())]


def test_a_killed_pack_member_run_alone_resumes_to_the_packs_result(in_tmp, monkeypatch, capsys):
    whole = train(cells("whole"))
    killed_after(monkeypatch, 12)
    group = cells("k")
    with pytest.raises(Killed):
        train(group)
    revived(monkeypatch)
    record = run_cell(group[0])  # `bench run` on one member, without its pack mate
    line = "resuming a killed pack member at step 12"
    assert f"{group[0].run_id}: {line}" in capsys.readouterr().err
    assert record["execution"]["via"] == "bench run"
    job = Job({}, group[1].run_id, group[1].study, group[1].folder, [])
    CellWorker().run_alone(job, group[1])  # the other by a worker, alone
    assert line in job.log_path.read_text()
    got = records_of(group[1].folder.records_dir)
    assert got[group[1].run_id]["execution"]["worker_cell"] == 1
    for cell, r, w in zip(group, [record, got[group[1].run_id]], whole, strict=True):
        assert resumed_steps(cell) == [None, 12]
        assert r["run_id"] == w["run_id"] and r["status"] == "completed"
        assert [a["resumed_from_step"] for a in r["attempts"]] == [None, 12]
        assert r["execution"]["mode"] == "packed" and r["execution"]["pack"] == 1
        # not bit-identical as a pack resumed whole is: the stack is 1 deep where it was 2, and
        # CPU kernels may then sum in another order (here the last bits of train_loss)
        assert r["metrics"] == pytest.approx(w["metrics"], rel=1e-5), r["run_id"]


def test_last_ckpt_wins_unless_the_pack_checkpoint_is_later(in_tmp, monkeypatch):
    group = cells("both")
    killed_after(monkeypatch, 6)
    with pytest.raises(Killed):
        train(group)
    setup = prepare(group[0])
    folder = group[0].folder.checkpoints(group[0].run_id)
    assert lone_member_step(setup, folder) == 6
    for step, expected in [(0, 6), (6, None), (12, None)]:  # a tie goes to last.ckpt
        torch.save({"global_step": step}, folder / LAST)  # all the rule reads of it
        assert lone_member_step(setup, folder) == expected, step
    (folder / LAST).unlink()
    forced = dataclasses.replace(setup, cell=dataclasses.replace(setup.cell, force=True))
    assert lone_member_step(forced, folder) is None  # --force retrains from step 0


def test_two_killed_packs_in_one_worker_group_resume_each_at_its_step(in_tmp, monkeypatch):
    sweep = load_sweep(str(write_sweep(in_tmp, seeds=[0, 1, 2, 3], steps=16, evals=4)))
    jobs = grid_jobs(sweep, None, "disabled")
    killed_after(monkeypatch, 12, Terminated)  # checkpoints at 8 and 12
    with pytest.raises(Terminated):
        work(jobs[:2], pack=2)
    killed_after(monkeypatch, 4, Terminated)  # a checkpoint at 4 only: no step meets the other's
    with pytest.raises(Terminated):
        work(jobs[2:], pack=2)
    revived(monkeypatch)
    assert work(jobs, pack=4) == 0  # one group of four
    got = records_of(jobs[0].records_dir)
    for job, step in zip(jobs, [12, 12, 4, 4], strict=True):
        r = got[job.run_id]
        assert r["status"] == "completed" and r["metrics"]["steps"] == 16
        assert [a["resumed_from_step"] for a in r["attempts"]] == [None, step], job.run_id
        assert r["execution"]["mode"] == "packed" and r["execution"]["pack"] == 2
