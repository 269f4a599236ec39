"""The budget rule (epochs bounded in images seen, scaled) and the patch-permutation control."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from bench.cell.batches import DeviceBatches, PatchPermutation
from bench.cell.budget import resolve_budget
from bench.cell.config import Cell
from bench.cell.models import Arch, build_model
from bench.cell.train import build_loaders, prepare
from bench.errors import BenchError
from bench.results import records
from tests.conftest import REPO, TINY, bench

GROWING = dict(epochs=200, min_examples=1_500_000, max_examples=9_000_000, batch_size=500)


@pytest.mark.parametrize(
    "n, steps, rule_applied",
    [
        (1_000, 3_000, "floor"),  # 200 epochs = 200k images, raised to 1.5M
        (7_500, 3_000, "epochs"),  # 200 epochs = exactly 1.5M
        (20_000, 8_000, "epochs"),  # 4M images
        (50_000, 18_000, "ceiling"),  # 10M images, capped at 9M
    ],
)
def test_an_epochs_budget_with_bounds_resolves_to_the_stated_steps(n, steps, rule_applied):
    budget = resolve_budget(Cell(**GROWING), n)
    assert budget.steps == steps
    assert budget.examples == steps * 500
    assert budget.epochs == pytest.approx(steps * 500 / n)
    assert "within [1.5e+06, 9e+06]" in budget.rule


def test_both_families_see_the_same_images_at_the_same_n():
    for n in (300, 4_000, 45_000):
        vit = resolve_budget(Cell(family="vit", **GROWING), n)
        resnet = resolve_budget(Cell(family="resnet", **GROWING), n)
        assert vit.examples == resnet.examples


def test_budget_scale_doubles_any_budget():
    for kind in (dict(steps=100), dict(examples=64_000), dict(epochs=3), GROWING):
        one = resolve_budget(Cell(**{"batch_size": 64, **kind}), 10_000)
        two = resolve_budget(Cell(**{"batch_size": 64, **kind, "budget_scale": 2.0}), 10_000)
        assert abs(two.steps - 2 * one.steps) <= 1 and "x2" in two.rule


@pytest.mark.parametrize(
    "values, field",
    [
        (dict(steps=100, min_examples=10), "min_examples"),
        (dict(epochs=10, min_examples=100, max_examples=10), "min_examples"),
        (dict(budget_scale=0), "budget_scale"),
        (dict(permute_patches=5, img_size=32), "permute_patches"),
        (dict(permute_pixels=True), "permute_pixels"),
    ],
)
def test_bad_budgets_and_blocks_name_their_field(values, field):
    with pytest.raises(BenchError, match=field):
        Cell.from_dict(values)


def test_fields_added_later_leave_earlier_run_ids_unchanged():
    """A committed record's run_id is still the run_id of its own config."""
    files = sorted((REPO / "results" / "cifar10-cpu" / "runs").glob("*.json"))
    assert files
    for path in files[:5]:
        rec = json.loads(path.read_text())
        assert Cell.from_dict(rec["config"]).run_id == rec["run_id"] == path.stem
    assert Cell(permute_patches=4).run_id != Cell().run_id  # set, a new field is identity


def test_patch_permutation_moves_whole_tiles_by_one_fixed_permutation():
    x = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8)
    perm = PatchPermutation(16, 4)
    y = perm(x)
    assert y.shape == x.shape and y.dtype == torch.uint8
    assert not torch.equal(x, y)
    assert torch.equal(perm(x), y)  # fixed
    assert torch.equal(PatchPermutation(16, 4)(x), y)  # and the same in another process
    tiles = x.unfold(2, 4, 4).unfold(3, 4, 4).reshape(5, 3, 16, 4, 4)
    moved = y.unfold(2, 4, 4).unfold(3, 4, 4).reshape(5, 3, 16, 4, 4)
    assert torch.equal(moved, tiles[:, :, perm.order])  # tile i of y is tile order[i] of x


def test_pixel_permutation_also_shuffles_inside_every_tile_the_same_way():
    x = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8)
    perm = PatchPermutation(16, 4, pixels=True)
    y = perm(x)
    assert torch.equal(PatchPermutation(16, 4, pixels=True)(x), y)  # fixed
    assert torch.equal(perm.order, PatchPermutation(16, 4).order)  # the same tile shuffle
    tiles = x.unfold(2, 4, 4).unfold(3, 4, 4).reshape(5, 3, 16, 16)
    moved = y.unfold(2, 4, 4).unfold(3, 4, 4).reshape(5, 3, 16, 16)
    assert sorted(perm.inner.tolist()) == list(range(16)) and not torch.equal(
        perm.inner, torch.arange(16)
    )
    # pixel j of tile i of y is pixel inner[j] of tile order[i] of x, in every channel
    assert torch.equal(moved, tiles[:, :, perm.order][..., perm.inner])


def test_device_batches_permute_after_augmenting():
    x = torch.arange(16 * 16, dtype=torch.int64).reshape(1, 1, 16, 16).expand(8, 3, 16, 16)
    x = (x % 251).to(torch.uint8).contiguous()
    y = torch.zeros(8, dtype=torch.int64)
    perm = PatchPermutation(16, 4)
    plain = DeviceBatches(x, y, 8, shuffle=False, augment_pad=2, seed=3)
    permuted = DeviceBatches(x, y, 8, shuffle=False, augment_pad=2, seed=3, transform=perm)
    (a, _), (b, _) = next(iter(plain)), next(iter(permuted))
    assert torch.equal(perm(a), b)


def test_the_training_path_permutes_train_validation_and_test_images():
    """The cell's loaders, not only the transform: every split the cell sees is permuted."""
    base = dict(dataset="synthetic", size="xxs", img_size=16, n_train=64, batch_size=16)
    base.update(steps=2, wandb="disabled", progress=False, device="cpu")
    perm = PatchPermutation(16, 4)
    plain = build_loaders(prepare(Cell(**base)))
    permuted = build_loaders(prepare(Cell(**base, permute_patches=4)))
    for a, b in zip(plain, permuted, strict=True):  # train (same seed: same crops), val, test
        (xa, ya), (xb, yb) = next(iter(a)), next(iter(b))
        assert torch.equal(ya, yb) and not torch.equal(xa, xb)
        assert torch.equal(perm(xa), xb)


def test_a_permuted_cell_trains_and_records_its_budget(in_tmp):
    args = [a for a in TINY if not a.startswith("--steps")]
    code = bench(
        "run", *args, "--img_size=16", "--patch_size=4", "--permute_patches=4",
        "--epochs=1", "--min_examples=1280", "--results_dir=out",
    )  # fmt: skip
    assert code == 0
    rec = json.loads(next(Path("out").glob("*.json")).read_text())
    assert rec["config"]["permute_patches"] == 4
    assert rec["budget"]["steps"] == 20 and rec["budget"]["examples"] == 1280
    assert rec["metrics"]["steps"] == 20 and rec["metrics"]["examples"] == 1280


def test_a_vit_with_learned_positions_is_blind_to_the_permutation():
    """The control's premise: permuting tiles of the patch size is, for a ViT, a relabelling of
    its learned position embeddings; the same network with its pos-embed rows permuted gives the
    same logits on permuted images. A CNN has no such reparametrisation."""
    torch.manual_seed(0)
    vit = build_model(Arch("vit", 16, 10, embed_dim=32, depth=2, num_heads=2, patch_size=4)).eval()
    perm = PatchPermutation(16, 4)
    x = torch.rand(4, 3, 16, 16)
    with torch.no_grad():
        before = vit(x)
        pos = vit.pos_embed.data
        # token i of the permuted image is token order[i] of the original
        vit.pos_embed.data = torch.cat([pos[:, :1], pos[:, 1:][:, perm.order]], dim=1)
        after = vit(perm(x))
    assert torch.allclose(before, after, atol=1e-5)


def test_a_vit_is_blind_to_the_pixel_shuffle_inside_its_patches():
    """With permute_pixels the same network, its patch-embedding weights permuted like the
    pixels and its pos-embed rows like the tiles, gives the same logits on permuted images."""
    torch.manual_seed(0)
    vit = build_model(Arch("vit", 16, 10, embed_dim=32, depth=2, num_heads=2, patch_size=4)).eval()
    perm = PatchPermutation(16, 4, pixels=True)
    x = torch.rand(4, 3, 16, 16)
    with torch.no_grad():
        before = vit(x)
        pos, w = vit.pos_embed.data, vit.patch_embed.proj.weight.data
        vit.pos_embed.data = torch.cat([pos[:, :1], pos[:, 1:][:, perm.order]], dim=1)
        vit.patch_embed.proj.weight.data = w.flatten(2)[..., perm.inner].reshape(w.shape)
        after = vit(perm(x))
    assert torch.allclose(before, after, atol=1e-5)


def test_dry_run_totals_the_images_the_budget_rule_gives(tmp_path, capsys):
    """cifar10 n_train=all is 45,000 images (5,000 held out): 200 epochs capped at 9M, vs 1.5M."""
    sweep = {
        "name": "cost",
        "method": "grid",
        "command": ["bench", "run", "${args}"],
        "parameters": {
            "study": {"value": "cost"},
            "dataset": {"value": "cifar10"},
            "family": {"values": ["vit", "resnet"]},
            "size": {"value": "s"},
            "n_train": {"values": [1000, "all"]},
            **{k: {"value": v} for k, v in GROWING.items()},
        },
    }
    path = tmp_path / "cost.yaml"
    path.write_text(json.dumps(sweep))
    assert bench("grid", str(path), "--dry-run", f"--results_dir={tmp_path}") == 0
    out = capsys.readouterr().out
    # per family: 1.5M at n=1000 + min(200 * 45,000, 9M) = 10.5M; two families: 21.0M
    assert "budget: 21.0M images seen in all, 21.0M of them left to run" in out
    assert "of H200 time" in out
    # A finished cell leaves the total alone and comes off what is left: a ViT at n=all, 9M.
    run_id = re.search(r"todo\s+(vit-s-nall-\S+)", out).group(1)
    records.write_record(records.make_record(run_id, "cost", "completed", {}), tmp_path)
    assert bench("grid", str(path), "--dry-run", f"--results_dir={tmp_path}") == 0
    out = capsys.readouterr().out
    assert "budget: 21.0M images seen in all, 12.0M of them left to run" in out
