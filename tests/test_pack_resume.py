"""A killed pack resumes from its members' own checkpoints and ends as an uninterrupted one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.cell.checkpoints import load_run
from bench.cell.packed import PACK_LAST, PACK_PREV, Pack, train_packed
from bench.cell.train import prepare
from bench.study.jobs import grid_jobs
from bench.study.sweep_config import load_sweep
from bench.study.worker import work
from tests.test_packing import tiny
from tests.test_worker import records_of, write_sweep

STEPS, EVALS = 24, 4  # a validation (and a checkpoint) every 6 steps; ~5 batches an epoch


class Killed(Exception):
    """Stands for the SIGTERM at a chunk's deadline."""


class Terminated(BaseException):
    """The same in a worker, which trains a failed pack's cells alone: nothing there catches it."""


def cells(study: str, recipe: str = "basic", family: str = "resnet"):
    kw = dict(steps=STEPS, evals=EVALS, study=study, recipe=recipe, grad_clip=0.5)
    return [tiny(family, 96, 0, **kw), tiny(family, 160, 1, **kw)]


def train(group) -> list[dict]:
    dirs = [c.folder.checkpoints(c.run_id) for c in group]
    return train_packed([prepare(c) for c in group], dirs)


SAVE = Pack._save


def killed_after(monkeypatch, step: int, death: type[BaseException] = Killed) -> None:
    """Packs die right after writing their checkpoints at ``step`` (until :func:`revived`)."""
    save = SAVE

    def save_then_die(self, at, opt, sched):
        out = save(self, at, opt, sched)
        if at == step:
            raise death(f"step {at}")
        return out

    monkeypatch.setattr(Pack, "_save", save_then_die)


def revived(monkeypatch) -> None:
    monkeypatch.setattr(Pack, "_save", SAVE)  # not undo(): that would leave in_tmp's folder too


@pytest.fixture(
    scope="module",
    params=[
        ("basic", "resnet"),
        # TrivialAugment, erasing, mixup/cutmix: generators of their own to restore
        ("strong", "resnet"),
        # drop-path too, drawn from torch's global generator under vmap
        pytest.param(("strong", "vit"), marks=pytest.mark.slow),
    ],
    ids=["resnet-basic", "resnet-strong", "vit-strong"],
)
def recipe(request) -> tuple[str, str]:
    return request.param


def test_killed_pack_resumes_to_the_uninterrupted_result(in_tmp, monkeypatch, recipe):
    whole = train(cells("whole", *recipe))
    killed_after(monkeypatch, 12)
    with pytest.raises(Killed):
        train(cells("k", *recipe))
    revived(monkeypatch)
    assert not list(in_tmp.glob("results/k/runs/*.json"))
    resumed = train(cells("k", *recipe))
    for r, w in zip(resumed, whole, strict=True):
        assert r["run_id"] == w["run_id"] and r["status"] == "completed"
        assert [a["resumed_from_step"] for a in r["attempts"]] == [None, 12]
        assert r["timing"]["wall_s"] == pytest.approx(sum(a["wall_s"] for a in r["attempts"]))
        assert r["metrics"] == w["metrics"]  # bit-identical, as a resumed single cell's
        kept = {p.name for p in Path(r["checkpoint"]).parent.iterdir()}
        assert kept == {"best.ckpt", "attempts.json"}  # pack-last.ckpt and pack-prev.ckpt gone


def test_a_members_checkpoint_is_its_own_state(in_tmp, monkeypatch):
    group = cells("own")
    killed_after(monkeypatch, 12)
    with pytest.raises(Killed):
        train(group)
    for c in group:
        ckpt = torch.load(c.folder.checkpoints(c.run_id) / PACK_LAST, weights_only=False)
        assert ckpt["global_step"] == 12 and ckpt["bench"]["run_id"] == c.run_id
        single = prepare(c).model.state_dict()
        assert {k.removeprefix("model."): v.shape for k, v in ckpt["state_dict"].items()} == {
            k: v.shape for k, v in single.items()
        }
        params = dict(prepare(c).model.named_parameters())
        for name, share in ckpt["optimizer_states"][0]["state"].items():
            assert all(v.shape == params[name].shape for v in share["sliced"].values()), name
        assert len(ckpt["bench_pack"]["losses"]) == 12
        _, cell, _, model = load_run(c.folder.checkpoints(c.run_id) / PACK_LAST)
        assert cell.run_id == c.run_id and model is not None


@pytest.mark.parametrize(
    "lose, resumed_from",
    [
        ("one member's last", 6),  # the members' checkpoints meet at the step before
        ("one member's last and prev", None),  # a member with none: the pack starts again
    ],
)
def test_members_resume_only_at_a_step_they_all_have(in_tmp, monkeypatch, lose, resumed_from):
    group = cells("mixed")
    killed_after(monkeypatch, 12)
    with pytest.raises(Killed):
        train(group)
    revived(monkeypatch)
    folder = group[1].folder.checkpoints(group[1].run_id)
    (folder / PACK_LAST).unlink()
    if "prev" in lose:
        (folder / PACK_PREV).unlink()
    for r in train(group):
        assert r["status"] == "completed" and r["metrics"]["steps"] == STEPS
        assert r["attempts"][-1]["resumed_from_step"] == resumed_from


def test_a_worker_resumes_killed_members_apart_from_fresh_cells(in_tmp, monkeypatch):
    sweep = load_sweep(str(write_sweep(in_tmp, seeds=[0, 1, 2], steps=16, evals=4)))
    jobs = grid_jobs(sweep, None, "disabled")
    killed_after(monkeypatch, 8, Terminated)
    with pytest.raises(Terminated):
        work(jobs, pack=2)  # seeds 0 and 1 packed, killed after their checkpoints at step 8
    revived(monkeypatch)
    assert work(jobs[:1], pack=3) == 0  # its pack mate is not among the jobs: a pack of one
    assert work(jobs, pack=3) == 0  # seed 1 resumes, seed 2 has nothing to resume: apart
    got = records_of(jobs[0].records_dir)
    assert set(got) == {j.run_id for j in jobs}
    for job in jobs:
        r = got[job.run_id]
        assert r["status"] == "completed" and r["metrics"]["steps"] == 16
        resumed = [a["resumed_from_step"] for a in r["attempts"]]
        if job is jobs[2]:
            assert r["execution"]["mode"] == "worker" and resumed == [None]
        else:
            assert r["execution"]["mode"] == "packed" and r["execution"]["pack"] == 1
            assert resumed == [None, 8]


def test_a_pack_checkpoints_once_its_interval_has_passed(in_tmp, monkeypatch):
    steps = []

    def counted(self, at, opt, sched):
        steps.append(at)
        return SAVE(self, at, opt, sched)

    monkeypatch.setattr(Pack, "_save", counted)
    train(cells("every"))
    assert steps == list(range(STEPS // EVALS, STEPS + 1, STEPS // EVALS))  # every validation
    steps.clear()
    group = [c.replace(checkpoint_every_s=3600) for c in cells("seldom")]
    train(group)
    assert steps == [STEPS]  # only the end's, which a kill while testing resumes from
