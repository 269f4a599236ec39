"""Fine-tuning at a higher resolution: position-embedding resizing, `bench finetune`, the in-cell
phase, the continued-vs-fine-tuned report and its sweep."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from timm.layers import resample_abs_pos_embed

from bench.analysis.report import finetune_report
from bench.cell.checkpoints import load_run
from bench.cell.config import Cell
from bench.cell.finetune import finetune_phase
from bench.cell.models import Arch, build_model, set_resolution, set_sincos_pos_embed
from bench.cell.train import fit_and_test, prepare
from bench.errors import BenchError
from tests.conftest import bench, shipped_sweep_cells, working_dir

TINY = [
    "--dataset=synthetic",
    "--family=vit",
    "--size=xxs",
    "--n_train=200",
    "--batch_size=32",
    "--evals=2",
    "--val_size=100",
    "--wandb=disabled",
    "--progress=false",
    "--results_dir=out",
]


# ---------------------------------------------------------------------- resizing
def smooth_grid(gh: int, gw: int, dim: int) -> torch.Tensor:
    """A smooth function of the position, sampled at the patch centres of a gh x gw grid."""
    r = ((torch.arange(gh) + 0.5) / gh)[:, None, None]
    c = ((torch.arange(gw) + 0.5) / gw)[None, :, None]
    k = torch.arange(dim)[None, None, :] / dim
    return (torch.sin(2.0 * r * (1 + k) + k) + torch.cos(1.5 * c * (1 + 2 * k))).reshape(
        gh * gw, dim
    )


def test_resizing_a_smooth_grid_up_and_back_is_close_to_identity_and_keeps_the_class_token():
    dim = 16
    cls = torch.randn(1, dim) * 3
    pos = torch.cat([cls, smooth_grid(8, 8, dim)])[None]  # [1, 1 + 64, D]
    up = resample_abs_pos_embed(pos, new_size=[16, 16], old_size=[8, 8], num_prefix_tokens=1)
    assert up.shape == (1, 1 + 256, dim)
    assert torch.equal(up[0, 0], cls[0])
    back = resample_abs_pos_embed(up, new_size=[8, 8], old_size=[16, 16], num_prefix_tokens=1)
    assert back.shape == pos.shape
    assert torch.equal(back[0, 0], cls[0])
    err = (back - pos)[0, 1:].abs()
    assert err.max() < 0.05 * pos[0, 1:].abs().max(), err.max()
    # upsampled, it is the same smooth function sampled on the finer grid (away from the border)
    fine = smooth_grid(16, 16, dim).reshape(16, 16, dim)
    assert (up[0, 1:].reshape(16, 16, dim) - fine)[2:-2, 2:-2].abs().max() < 0.1


def test_set_resolution_interpolates_learned_and_recomputes_sincos():
    learned = build_model(Arch("vit", 16, 10, embed_dim=32, depth=1, num_heads=2, patch_size=4))
    cls_row = learned.pos_embed[0, 0].detach().clone()
    arch = set_resolution(
        learned, Arch("vit", 16, 10, embed_dim=32, depth=1, num_heads=2, patch_size=4), 32
    )
    assert arch.img_size == 32 and arch.patch_size == 4
    assert learned.pos_embed.shape == (1, 1 + 64, 32) and learned.pos_embed.requires_grad
    assert torch.equal(learned.pos_embed[0, 0], cls_row)
    assert learned(torch.zeros(2, 3, 32, 32)).shape == (2, 10)

    sc_arch = Arch(
        "vit", 16, 10, embed_dim=32, depth=1, num_heads=2, patch_size=4, pos_embed="sincos"
    )
    sincos = build_model(sc_arch)
    set_resolution(sincos, sc_arch, 32)
    fresh = build_model(Arch("vit", 32, 10, embed_dim=32, depth=1, num_heads=2, patch_size=4))
    set_sincos_pos_embed(fresh)
    assert torch.equal(sincos.pos_embed, fresh.pos_embed)  # the table of the new grid, not a resize
    assert not sincos.pos_embed.requires_grad


def test_set_resolution_refuses_a_size_the_patch_does_not_divide():
    arch = Arch("vit", 16, 10, embed_dim=32, depth=1, num_heads=2, patch_size=4)
    with pytest.raises(BenchError, match="patch size"):
        set_resolution(build_model(arch), arch, 30)


# ---------------------------------------------------------------------- for real
@pytest.fixture(scope="module")
def parent_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune-runs")
    with working_dir(root):
        assert bench("run", "--steps=10", *TINY) == 0
    return root, next((root / "out").glob("*.json"))


@pytest.mark.slow
def test_bench_finetune_starts_a_new_cell_at_64px(parent_run, monkeypatch):
    root, parent_file = parent_run
    monkeypatch.chdir(root)
    parent = json.loads(parent_file.read_text())
    assert bench("finetune", str(parent_file), "--img_size=64", "--steps=3", "--lr=3e-4") == 0
    children = [
        json.loads(p.read_text())
        for p in (root / "out").glob("*.json")
        if p.name != parent_file.name
    ]
    assert len(children) == 1
    child = children[0]
    assert child["status"] == "completed"
    assert child["parent"] == parent["run_id"] and child["config"]["parent"] == parent["run_id"]
    assert child["run_id"] != parent["run_id"]
    assert child["finetune"]["from_img_size"] == 32 and child["finetune"]["img_size"] == 64
    assert child["finetune"]["parent"] == parent["run_id"]
    assert child["config"]["img_size"] == 64 and child["config"]["patch_size"] == 4
    assert child["config"]["lr"] == 3e-4 and child["metrics"]["steps"] == 3
    assert child["data"]["img_size"] == 64 and child["arch"]["img_size"] == 64
    assert child["data"]["n_train"] == parent["data"]["n_train"]  # the same nested subset

    # the fine-tuned model runs on 64 px input: 256 patch tokens + the class token
    _, cell, arch, model = load_run(root / "out" / f"{child['run_id']}.json")
    assert arch.img_size == 64 and cell.parent == parent["run_id"]
    assert model.pos_embed.shape == (1, 257, 64)
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 10)

    # the same again is a no-op
    assert bench("finetune", str(parent_file), "--img_size=64", "--steps=3", "--lr=3e-4") == 0


@pytest.mark.slow
def test_bench_finetune_refuses_bad_input(parent_run, monkeypatch, capsys):
    root, parent_file = parent_run
    monkeypatch.chdir(root)
    assert bench("finetune", str(parent_file), "--img_size=66") == 2
    assert "does not divide img_size=66" in capsys.readouterr().err
    assert bench("finetune", str(parent_file)) == 2
    assert bench("finetune", "nope.ckpt", "--img_size=64") == 2
    assert "does not exist" in capsys.readouterr().err


def test_load_run_explains_missing_checkpoints(in_tmp):
    rec = {"run_id": "vit-xxs-n1-s0-00000000", "config": {}, "status": "failed", "checkpoint": None}
    runs = in_tmp / "results" / "s" / "runs"
    runs.mkdir(parents=True)
    (runs / "vit-xxs-n1-s0-00000000.json").write_text(json.dumps(rec))
    with pytest.raises(BenchError, match="no checkpoint"):
        load_run("vit-xxs-n1-s0-00000000")
    with pytest.raises(BenchError, match="no record"):
        load_run("vit-xxs-n1-s0-11111111")


@pytest.mark.slow
@pytest.mark.parametrize("size", [64, 32])
def test_in_cell_phase_finetunes_or_continues_and_keeps_pretraining_numbers(size, in_tmp):
    """`finetune_img_size` after pre-training: 64 fine-tunes at 64 px, 32 continues at 32 px."""
    cell = Cell.from_dict(
        dict(
            dataset="synthetic",
            family="vit",
            size="xxs",
            n_train=200,
            batch_size=32,
            steps=6,
            evals=2,
            val_size=100,
            wandb="disabled",
            progress=False,
            results_dir="out",
            finetune_img_size=size,
            finetune_steps=3,
        )
    )
    setup = prepare(cell)
    ckpt_dir = cell.folder.checkpoints(cell.run_id)
    outcome = finetune_phase(setup, fit_and_test(setup, ckpt_dir, None), ckpt_dir, None)
    pre, ft = outcome["pretrain"], outcome["finetune"]
    assert pre["steps"] == 6 and ft["steps"] == 3 and outcome["steps"] == 9
    assert ft["from_img_size"] == 32 and ft["img_size"] == size and ft["continued"] == (size == 32)
    assert ft["tokens"] == (size // 4) ** 2
    assert outcome["test_error"] == ft["test_error"]
    assert pre["test_error"] is not None and pre["checkpoint"] != outcome["checkpoint"]
    assert "finetune" in Path(outcome["checkpoint"]).parts
    _, _, arch, model = load_run(outcome["checkpoint"])
    assert arch.img_size == size
    with torch.no_grad():
        assert model(torch.randn(1, 3, size, size)).shape == (1, 10)


@pytest.mark.slow
def test_bench_run_with_finetune_img_size_records_both_phases(in_tmp):
    args = [a for a in TINY if not a.startswith("--results_dir")]
    assert (
        bench(
            "run",
            *args,
            "--steps=4",
            "--finetune_img_size=64",
            "--finetune_steps=2",
            "--results_dir=out",
        )
        == 0
    )
    rec = json.loads(next(Path("out").glob("*.json")).read_text())
    assert rec["status"] == "completed" and rec["metrics"]["steps"] == 6
    assert rec["pretrain"]["steps"] == 4 and rec["pretrain"]["img_size"] == 32
    assert rec["finetune"]["img_size"] == 64 and rec["finetune"]["from_img_size"] == 32
    assert rec["metrics"]["test_error"] == pytest.approx(rec["finetune"]["test_error"])
    # the record's checkpoint is the fine-tuned model, at 64 px
    _, _, arch, _ = load_run(Path("out") / f"{rec['run_id']}.json")
    assert arch.img_size == 64


# ---------------------------------------------------------------------- the comparison
def fake_record(
    path: Path,
    size: str,
    n: int,
    seed: int,
    img: int,
    err: float,
    pre: float,
    phase_block: bool = True,
):
    rec = {
        "run_id": f"vit-{size}-n{n}-s{seed}-{img}",
        "status": "completed",
        "config": {
            "family": "vit",
            "size": size,
            "n_train": n,
            "seed": seed,
            "img_size": 32,
            "finetune_img_size": img,
        },
        "data": {"n_train": n},
        "metrics": {"test_error": err},
        "pretrain": {"test_error": pre},
        "finetune": {"from_img_size": 32, "img_size": img},
    }
    if not phase_block:  # a record written without the phase's block: the config must do
        del rec["pretrain"], rec["finetune"]
    path.mkdir(parents=True, exist_ok=True)
    (path / f"{rec['run_id']}.json").write_text(json.dumps(rec))


def test_finetune_report_tabulates_the_difference(tmp_path):
    runs = tmp_path / "runs"
    for seed, (e32, e64) in enumerate([(0.30, 0.25), (0.32, 0.27)]):
        fake_record(runs, "s", 5000, seed, 32, e32, 0.35)
        fake_record(runs, "s", 5000, seed, 64, e64, 0.35)
    fake_record(runs, "xs", 45000, 0, 32, 0.20, 0.22, phase_block=False)
    fake_record(runs, "xs", 45000, 0, 64, 0.21, 0.22, phase_block=False)
    report = finetune_report(tmp_path)
    rows = [line for line in report.splitlines() if line.startswith("| vit")]
    assert len(rows) == 2
    assert rows[0].startswith("| vit | xs | 45000 |")  # size order of the ladder
    assert "| – | 20.00 | 21.00 | +1.00 |" in rows[0]
    assert "| 35.00 | 31.00 | 26.00 | -5.00 | 2/2 |" in rows[1]
    assert bench("finetune", "--report", str(tmp_path)) == 0
    assert "No completed" in finetune_report(tmp_path / "empty")


def test_finetune_sweep_pairs_64px_with_32px_continued():
    _, cells = shipped_sweep_cells("cifar10-finetune.yaml")
    assert len(cells) == 8 and len({c.run_id for c in cells}) == 8
    assert {c.size for c in cells} == {"xs", "s"} and len({c.n_train for c in cells}) == 2
    assert {(c.img_size, c.finetune_img_size) for c in cells} == {(32, 32), (32, 64)}
    assert {c.resolved_patch_size for c in cells} == {4}
