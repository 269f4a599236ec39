"""The strong recipe: batched augmentations (shape, dtype, per image, seeded), soft targets,
per-family optimizers, a tiny cell trained end to end, and the record's provenance."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from timm.layers import DropPath
from torchvision.transforms.v2 import functional as TF

from bench.cell import augment
from bench.cell.augment import OPS, BatchMix, ImagePolicy, apply_ops, random_erase
from bench.cell.batches import DeviceBatches, PatchPermutation
from bench.cell.config import Cell
from bench.cell.provenance import folder_digest, portable_path
from bench.cell.train import build_module, prepare
from tests.conftest import REPO, TINY, bench, shipped_sweep_cells


def batch(b: int = 16, seed: int = 0) -> torch.Tensor:
    """Images with structure (a gradient, a bright square) and noise, so every op changes them."""
    g = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0, 200, 32).view(1, 1, 1, 32).expand(b, 3, 32, 32)
    x = ramp + 40 * torch.rand(b, 3, 32, 32, generator=g)
    x[:, :, 8:16, 8:16] = 250
    return x.round().clamp(0, 255).to(torch.uint8)


# ---------------------------------------------------------------------- per-image policies
@pytest.mark.parametrize("name", OPS[1:])
def test_every_op_keeps_shape_and_changes_the_image(name):
    x = batch(4).float()
    op = torch.full((4,), OPS.index(name))
    out = apply_ops(x, op, torch.full((4,), 0.8), torch.ones(4), augment.TRIVIAL_WIDE)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert 0 <= out.min() and out.max() <= 255
    assert (out - x).abs().mean() > 0.5, f"{name} left the images as they were"


def test_identity_op_leaves_images_exactly():
    x = batch(4).float()
    out = apply_ops(
        x, torch.zeros(4, dtype=torch.long), torch.ones(4), torch.ones(4), augment.RANDAUGMENT
    )
    assert torch.equal(out, x)


def test_split_and_batched_paths_agree():
    """The CPU path (each op on its images) and the GPU path (every op, picked by where)."""
    x, g = batch(64).float(), torch.Generator().manual_seed(1)
    op = torch.randint(0, len(OPS), (64,), generator=g)
    m, sign = torch.rand(64, generator=g), torch.where(torch.rand(64, generator=g) < 0.5, -1.0, 1.0)
    a = apply_ops(x, op, m, sign, augment.TRIVIAL_WIDE, split=True)
    b = apply_ops(x, op, m, sign, augment.TRIVIAL_WIDE, split=False)
    assert torch.allclose(a, b, atol=1e-3)


def test_equalize_matches_torchvision():
    x = batch(3)
    ours = augment._equalize(x.float()).round().to(torch.uint8)
    assert torch.equal(ours, TF.equalize(x))


@pytest.mark.parametrize("policy", ["trivial", "rand"])
def test_policy_is_per_image_seeded_and_uint8(policy):
    x = batch(1).expand(32, -1, -1, -1).contiguous()  # one image, 32 times
    a, b = ImagePolicy(policy, seed=3)(x), ImagePolicy(policy, seed=3)(x)
    assert a.shape == x.shape and a.dtype == torch.uint8
    assert torch.equal(a, b)  # same seed, same augmentation
    distinct = {tuple(img.flatten().tolist()) for img in a}
    assert len(distinct) > 16  # copies of one image come out differently
    assert not torch.equal(a, ImagePolicy(policy, seed=4)(x))


@pytest.mark.parametrize("policy", ["trivial", "rand"])
def test_policy_skip_draws_what_a_batch_draws(policy):
    """A resumed cell replays finished epochs with ``skip``: the next batch must come out as if
    the skipped ones had been augmented."""
    x = batch(16)
    ran, skipped = ImagePolicy(policy, seed=5), ImagePolicy(policy, seed=5)
    ran(x[:7])
    ran(x)
    skipped.skip(7, x.device)
    skipped.skip(16, "cpu")
    assert torch.equal(ran(x), skipped(x))
    assert not torch.equal(ImagePolicy(policy, seed=5)(x), skipped(x))


class Counted:
    """A transform that counts its calls (and the policy's draws it replays)."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def __call__(self, x):
        self.calls += 1
        return self.inner(x)

    def skip(self, b, device):
        self.inner.skip(b, device)


def loader(transform, k: int, pad: int = 2) -> DeviceBatches:
    x, y = batch(50), torch.arange(50) % 10  # 6 batches of 8 an epoch, 2 images dropped
    return DeviceBatches(
        x, y, 8, shuffle=True, augment_pad=pad, seed=1, drop_last=True,
        transform=transform, transform_batches=k,
    )  # fmt: skip


def test_training_batches_share_policy_calls_and_nothing_else_changes():
    perm = Counted(PatchPermutation(32, 4))  # no random draws: k changes only the call count
    one, four = list(loader(perm, 1)), list(loader(Counted(perm.inner), 4))
    assert perm.calls == 6 and len(four) == 6
    for (xa, ya), (xb, yb) in zip(one, four, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and xb.shape == (8, 3, 32, 32)
    policy = Counted(ImagePolicy("trivial", seed=2))
    assert len(list(loader(policy, 4))) == 6 and policy.calls == 2  # 4 batches, then 2


@pytest.mark.parametrize("pad", [0, 2])
def test_a_skipped_epoch_leaves_the_policy_where_making_it_would(pad):
    """A resumed cell skips finished epochs; the next epoch's batches must match the
    uninterrupted run's, policy calls of several batches included."""
    ran = loader(ImagePolicy("trivial", seed=2), 4, pad)
    list(ran)
    second = list(ran)
    resumed = loader(ImagePolicy("trivial", seed=2), 4, pad)
    resumed.skip_epoch()
    for (xa, ya), (xb, yb) in zip(second, resumed, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    forgetful = loader(Counted(ImagePolicy("trivial", seed=2)), 4, pad)
    forgetful.transform.skip = lambda b, device: None  # a replay that leaves the policy behind
    forgetful.skip_epoch()
    assert not all(torch.equal(xa, xb) for (xa, _), (xb, _) in zip(second, forgetful, strict=True))


# ---------------------------------------------------------------------- erasing, mixup, cutmix
def test_random_erasing_per_image_and_seeded():
    x = torch.zeros(64, 3, 32, 32)
    a = random_erase(x, 0.5, torch.Generator().manual_seed(0))
    b = random_erase(x, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == x.shape and a.dtype == x.dtype
    erased = (a != 0).flatten(1).float().mean(1)  # share of each image under noise
    assert 10 < (erased > 0).sum() < 54  # about half the images
    assert erased[erased > 0].max() < 0.5 and len(set(erased[erased > 0].tolist())) > 5


@pytest.mark.parametrize("odd", [False, True])
def test_mixup_targets_sum_to_one_and_are_seeded(odd):
    b = 17 if odd else 16
    x, y = torch.randn(b, 3, 32, 32), torch.arange(b) % 10

    def run(seed):
        mix = BatchMix(10, seed, mixup=0.8, cutmix=1.0, erasing=0.25, label_smoothing=0.1)
        return [mix(x.clone(), y) for _ in range(4)]

    first, again = run(0), run(0)
    for (xa, ta), (xb, tb) in zip(first, again, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ta, tb)
        assert ta.shape == (b, 10) and xa.shape == x.shape
        assert torch.allclose(ta.sum(1), torch.ones(b))
    assert any(not torch.equal(xa, x) for xa, _ in first)
    assert any((t.max(1).values < 0.9).any() for _, t in first)  # some targets are mixtures
    assert not all(torch.equal(a[1], b[1]) for a, b in zip(first, run(1), strict=True))


def test_mixing_leaves_global_numpy_state_alone():
    np.random.seed(5)
    expected = np.random.rand()
    np.random.seed(5)
    BatchMix(10, 0, mixup=0.8, cutmix=1.0)(torch.randn(8, 3, 8, 8), torch.arange(8))
    assert np.random.rand() == expected


# ---------------------------------------------------------------------- the recipe as fields
def test_recipe_defaults_per_family_and_explicit_values_win():
    vit = Cell(family="vit", recipe="strong").resolved_recipe
    res = Cell(family="resnet", recipe="strong").resolved_recipe
    assert (vit["optimizer"], vit["lr"], vit["weight_decay"]) == ("adamw", 1e-3, 0.05)
    assert (res["optimizer"], res["lr"], res["weight_decay"]) == ("sgd", 0.1, 5e-4)
    assert vit["drop_path"] > 0 == res["drop_path"] and vit["mixup"] > 0 and res["erasing"] > 0
    own = Cell(family="resnet", recipe="strong", lr=0.05, mixup=0.0, optimizer="adamw")
    r = own.resolved_recipe
    assert (r["lr"], r["mixup"], r["optimizer"], r["weight_decay"]) == (0.05, 0.0, "adamw", 0.05)
    assert Cell(recipe="strong").run_id != Cell().run_id != Cell(recipe="strong", mixup=0).run_id


def test_strong_recipe_scales_a_defaulted_lr_with_the_batch():
    def lr(family: str, batch: int, **kw) -> float:
        return Cell(family=family, recipe="strong", batch_size=batch, **kw).resolved_recipe["lr"]

    assert lr("resnet", 512) == pytest.approx(4 * lr("resnet", 128))  # SGD: linear
    assert lr("vit", 512) == pytest.approx(2 * lr("vit", 128))  # AdamW: square root
    assert lr("vit", 512, lr_scale=0.5) == pytest.approx(lr("vit", 128))
    assert lr("resnet", 512, lr=0.05) == 0.05  # an explicit lr is taken as given
    basic = Cell(family="resnet", batch_size=512).resolved_recipe["lr"]
    assert basic == Cell(family="resnet", batch_size=128).resolved_recipe["lr"]


def test_basic_recipe_keeps_the_old_run_ids():
    # run_ids of cells written before recipes existed (committed records keep them too)
    assert Cell().run_id == "vit-s-nall-s0-1018976c"
    assert Cell(lr=1e-3, weight_decay=0.05, recipe="basic").run_id == Cell().run_id


@pytest.mark.parametrize("family, opt", [("resnet", torch.optim.SGD), ("vit", torch.optim.AdamW)])
def test_strong_recipe_picks_the_family_optimizer(family, opt):
    cell = Cell.from_dict(
        {"family": family, "size": "xxs", "dataset": "synthetic", "recipe": "strong", "steps": 5}
    )
    setup = prepare(cell)
    optimizer = build_module(setup).configure_optimizers()["optimizer"]
    assert type(optimizer) is opt
    if opt is torch.optim.SGD:
        assert optimizer.defaults["nesterov"] and optimizer.defaults["momentum"] == 0.9
    if family == "vit":
        rates = [m.drop_prob for m in setup.model.modules() if isinstance(m, DropPath)]
        assert rates and max(rates) == pytest.approx(0.1)


def test_strong_recipe_trains_a_tiny_cell_and_records_it(in_tmp):
    args = [a for a in TINY if not a.startswith("--family")] + ["--family=resnet"]
    assert bench("run", *args, "--recipe=strong", "--steps=6", "--results_dir=out") == 0
    (path,) = Path("out").glob("*.json")
    rec = json.loads(path.read_text())
    assert rec["status"] == "completed" and rec["metrics"]["test_error"] is not None
    r = rec["recipe"]
    assert r["name"] == "strong" and r["optimizer"] == "sgd" and r["auto_augment"] == "trivial"
    # SGD's 0.1 is for batch 128; the tiny cell's batch scales it linearly
    assert rec["config"]["lr"] == r["lr"] == pytest.approx(0.1 * rec["config"]["batch_size"] / 128)
    assert rec["config"]["batch_size"] != 128
    assert Cell.from_dict(rec["config"]).run_id == rec["run_id"]


# ---------------------------------------------------------------------- provenance
def test_commit_comes_from_the_environment(in_tmp, monkeypatch):
    monkeypatch.setenv("BENCH_GIT_COMMIT", "abc123")
    assert bench("run", *TINY, "--steps=2", "--results_dir=out") == 0
    (path,) = Path("out").glob("*.json")
    assert json.loads(path.read_text())["env"]["git_commit"] == "abc123"


def image_folder(root: Path) -> Path:
    for split in ("train", "test"):
        for c in range(2):
            folder = root / split / f"c{c}"
            folder.mkdir(parents=True)
            for i in range(12):
                Image.new("RGB", (8, 8), (40 * c + i, 0, 0)).save(folder / f"{i}.png")
    return root


def test_data_paths_in_records_are_never_temporary(tmp_path, monkeypatch):
    data = image_folder(tmp_path / "scratch" / "mydata")
    home = tmp_path / "checkout"
    home.mkdir()
    monkeypatch.chdir(home)
    results = tmp_path / "scratch" / "res" / "runs"
    argv = [a for a in TINY if not a.startswith(("--dataset", "--n_train"))]
    argv += ["--dataset=imagefolder", f"--data_dir={data}", "--n_train=20", "--val_size=4"]
    assert bench("run", *argv, f"--results_dir={results}", "--steps=2") == 0
    (path,) = results.glob("*.json")
    rec = json.loads(path.read_text())
    text = path.read_text()
    assert str(tmp_path) not in text  # no temporary folder anywhere in the record
    assert rec["config"]["data_dir"] == "mydata" and rec["config"]["results_dir"] is None
    assert rec["checkpoint"] == f"checkpoints/{rec['run_id']}/best.ckpt"
    src = rec["data"]["source"]
    assert src["files"] == 48 and len(src["sha256"]) == 64
    # the same files elsewhere: the same hash; one file changed: another
    copy = image_folder(tmp_path / "elsewhere" / "mydata")
    assert folder_digest(str(copy)) == folder_digest(str(data))
    (copy / "test" / "c0" / "0.png").write_bytes(b"\x89PNG" + bytes(100))
    folder_digest.cache_clear()
    assert folder_digest(str(copy))[2] != src["sha256"]


def test_portable_path_rules(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    assert portable_path(str(tmp_path / "data")) == "data"  # inside the working folder
    assert portable_path("../rel/data") == "../rel/data"  # relative: as given
    monkeypatch.chdir(REPO)  # a working folder outside the temporary one
    assert portable_path(str(tmp_path / "data")) is None  # a temporary folder
    assert (
        portable_path(str(tmp_path / "s" / "checkpoints" / "x"), tmp_path / "s") == "checkpoints/x"
    )


# ---------------------------------------------------------------------- the calibration sweeps
def test_calibration_sweeps_hold_the_cells_they_promise():
    _, cells = shipped_sweep_cells("cifar10-calibration.yaml")
    assert {(c.family, c.size) for c in cells} == {
        ("resnet", "m"),
        ("resnet", "s"),
        ("vit", "s"),
        ("vit", "m"),
    }
    assert all(c.recipe == "strong" and c.n_train == "all" and c.img_size == 32 for c in cells)
    _, grid = shipped_sweep_cells("cifar10-lr-wd.yaml")
    for family in ("resnet", "vit"):
        values = {
            (c.resolved_recipe["lr"], c.resolved_recipe["weight_decay"])
            for c in grid
            if c.family == family
        }
        assert len(values) == 9  # 3 learning rates x 3 weight decays, around the family's defaults
    sgd = {c.resolved_recipe["optimizer"] for c in grid if c.family == "resnet"}
    assert sgd == {"sgd"}
