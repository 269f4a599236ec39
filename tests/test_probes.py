"""What a trained ViT learned: the math of the three probes, and `bench probe` on real runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from bench.cell.batches import PatchPermutation
from bench.cell.config import Cell
from bench.cell.models import Arch, build_model
from bench.vit.probe import log_to_wandb, probe_images
from bench.vit.probes import (
    attention_map,
    embedding_locality,
    filter_pca,
    image_order,
    mean_attention_distance,
    patch_distances,
    pos_embed_similarity,
    source_centres,
)
from tests.conftest import bench, working_dir

TINY = [
    "--dataset=synthetic",
    "--size=xxs",
    "--n_train=200",
    "--batch_size=32",
    "--steps=12",
    "--evals=2",
    "--val_size=100",
    "--wandb=disabled",
    "--progress=false",
    "--results_dir=out",
]
FIGS = ["filters.png", "pos_embed.png", "attention_distance.png"]


# ---------------------------------------------------------------------- mean attention distance
def test_attention_distance_is_zero_when_every_patch_attends_to_itself():
    grid, p = (4, 4), 4
    eye = torch.eye(1 + 16).expand(2, 3, 17, 17)  # class token at index 0, sliced off
    assert torch.allclose(
        mean_attention_distance(eye, grid, p), torch.zeros(3, dtype=torch.float64)
    )


def test_attention_distance_under_uniform_attention_is_the_mean_pairwise_distance():
    grid, p = (3, 5), 2
    n = 15
    uniform = torch.full((2, 4, n, n), 1.0 / n)
    # mean pairwise distance between patch centres, by brute force, in pixels
    pts = [(r, c) for r in range(3) for c in range(5)]
    brute = sum(p * math.dist(a, b) for a in pts for b in pts) / n**2
    mad = mean_attention_distance(uniform, grid, p)
    assert mad.shape == (4,)
    assert torch.allclose(mad, torch.full((4,), brute, dtype=torch.float64))
    # with a class token in front that gets no attention, the same
    padded = torch.zeros(2, 4, n + 1, n + 1)
    padded[:, :, 1:, 1:] = 1.0 / n
    padded[:, :, 0, 0] = 1.0
    assert torch.allclose(mean_attention_distance(padded, grid, p), mad)


def test_attention_distance_of_a_fixed_offset_is_that_offset_in_pixels():
    grid, p = (4, 4), 8
    attn = torch.zeros(1, 1, 16, 16)
    for i in range(16):
        r, c = divmod(i, 4)
        neighbour = c + 1 if c < 3 else c - 1  # one patch sideways
        attn[0, 0, i, r * 4 + neighbour] = 1.0
    assert torch.allclose(
        mean_attention_distance(attn, grid, p), torch.tensor([8.0], dtype=torch.float64)
    )
    assert patch_distances((2, 2), 8)[0, 3].item() == pytest.approx(8 * math.sqrt(2))


def test_recomputed_attention_reproduces_timm_attention_output():
    """The hook's attention maps, applied to v, give exactly what timm's own module returns."""
    torch.manual_seed(0)
    model = build_model(
        Arch("vit", 16, 10, embed_dim=32, depth=2, num_heads=4, patch_size=4)
    ).eval()
    attn_mod = model.blocks[1].attn
    seen = {}
    handle = attn_mod.register_forward_hook(lambda m, i, o: seen.update(x=i[0], out=o))
    with torch.no_grad():
        model(torch.randn(3, 3, 16, 16))
        handle.remove()
        x = seen["x"]
        a = attention_map(attn_mod, x)
        assert a.shape == (3, 4, 17, 17)
        assert torch.allclose(a.sum(-1), torch.ones(3, 4, 17))
        b, t, c = x.shape
        v = attn_mod.qkv(x).reshape(b, t, 3, 4, -1).permute(2, 0, 3, 1, 4)[2]
        out = attn_mod.proj((a @ v).transpose(1, 2).reshape(b, t, c))
    assert torch.allclose(out, seen["out"], atol=1e-5)


# ---------------------------------------------------------------------- tile-shuffled runs
@pytest.mark.parametrize("block, pixels", [(4, False), (4, True), (8, False)])
def test_each_patch_of_a_shuffled_image_is_traced_to_where_it_came_from(block, pixels):
    shuffle = PatchPermutation(32, block, pixels=pixels)
    marks = torch.arange(64, dtype=torch.float64).reshape(1, 1, 8, 8)  # one value per 4x4 patch
    marks = marks.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)
    moved = shuffle(marks).reshape(8, 4, 8, 4).amin(dim=(1, 3)).flatten().long()  # source ids
    assert sorted(moved.tolist()) != moved.tolist()  # the patches did move
    raster = source_centres((8, 8), 4)
    assert torch.allclose(source_centres((8, 8), 4, shuffle), raster[moved])
    order = image_order((8, 8), 4, shuffle)
    assert torch.equal(moved[order], torch.arange(64))  # token order[k] came from place k


def test_a_shuffled_runs_position_embeddings_read_in_the_image_are_the_images_own():
    """Token j of a shuffled image holds the patch from place src(j); a ViT that learned the
    image's geometry has pos[j] = E[src(j)]. Read in the image's layout, that is sim(E)."""
    shuffle = PatchPermutation(16, 4, pixels=True)
    src = shuffle(
        torch.arange(16.0).reshape(1, 1, 4, 4).repeat_interleave(4, 2).repeat_interleave(4, 3)
    )
    src = src.reshape(4, 4, 4, 4).amin(dim=(1, 3)).flatten().long()
    e = torch.randn(16, 24, dtype=torch.float64)
    sim = pos_embed_similarity(e[src])
    order = image_order((4, 4), 4, shuffle)
    assert torch.allclose(sim[order][:, order], pos_embed_similarity(e))
    assert not torch.allclose(sim, pos_embed_similarity(e))


def test_attention_to_the_images_neighbour_is_one_patch_away_in_the_image_not_the_input():
    shuffle = PatchPermutation(16, 4)
    order = image_order((4, 4), 4, shuffle)  # token at each image place
    attn = torch.zeros(1, 1, 16, 16)
    for place in range(16):
        r, c = divmod(place, 4)
        neighbour = r * 4 + (c + 1 if c < 3 else c - 1)
        attn[0, 0, order[place], order[neighbour]] = 1.0
    in_image = mean_attention_distance(attn, (4, 4), 4, patch_distances((4, 4), 4, shuffle))
    assert torch.allclose(in_image, torch.tensor([4.0], dtype=torch.float64))
    assert mean_attention_distance(attn, (4, 4), 4).item() > 6.0  # scattered in the input


def test_embedding_locality_is_high_for_a_smooth_map_and_lost_in_a_shuffle():
    dist = patch_distances((6, 6), 4)
    sim = pos_embed_similarity(torch.exp(-(dist**2) / 50))  # each patch: its closeness to all
    assert embedding_locality(sim, dist) > 0.9
    perm = torch.randperm(36, generator=torch.Generator().manual_seed(0))
    assert abs(embedding_locality(sim[perm][:, perm], dist)) < 0.2


def test_a_shuffled_runs_probe_images_are_shuffled_as_in_training():
    plain = Cell(dataset="synthetic", family="vit", size="xxs", n_train=200, img_size=32)
    shuffled = Cell(**{**vars(plain), "permute_patches": 8, "permute_pixels": True})
    arch = Arch("vit", 32, 10, embed_dim=32, depth=2, num_heads=2, patch_size=4)
    x = probe_images(plain, arch, 6)
    assert torch.equal(probe_images(shuffled, arch, 6), PatchPermutation(32, 8, pixels=True)(x))


# ---------------------------------------------------------------------- position embeddings, filters
def test_pos_embed_similarity_has_ones_on_its_diagonal():
    pos = torch.randn(64, 48) * torch.rand(64, 1) * 5
    sim = pos_embed_similarity(pos)
    assert sim.shape == (64, 64)
    assert torch.allclose(sim.diagonal(), torch.ones(64, dtype=torch.float64))
    assert torch.allclose(sim, sim.T)
    assert sim.max() <= 1 + 1e-9 and sim.min() >= -1 - 1e-9


def test_filter_pca_returns_the_known_components_up_to_sign():
    torch.manual_seed(0)
    p, d, k = 4, 200, 3
    basis, _ = torch.linalg.qr(torch.randn(3 * p * p, 3 * p * p, dtype=torch.float64))
    known = basis[:, :k].T  # k orthonormal directions
    scales = torch.tensor([5.0, 3.0, 1.5], dtype=torch.float64)
    coeff = torch.randn(d, k, dtype=torch.float64)
    coeff = (coeff - coeff.mean(0)) / coeff.std(0)
    coeff, _ = torch.linalg.qr(coeff)  # uncorrelated columns: the PCA is exactly the basis
    filters = 7.0 + (coeff * scales) @ known  # an offset the centring must remove
    comps = filter_pca(filters.reshape(d, 3, p, p).float(), k)
    assert comps.shape == (k, 3, p, p)
    for i in range(k):
        cos = torch.dot(comps[i].flatten().double(), known[i])
        assert abs(cos) == pytest.approx(1.0, abs=1e-4), f"component {i}"


# ---------------------------------------------------------------------- the command, for real
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny ViT and a tiny ResNet, trained for a few steps with `bench run`."""
    root = tmp_path_factory.mktemp("probe-runs")
    with working_dir(root):
        assert bench("run", "--family=vit", *TINY) == 0
        vit = next(Path("out").glob("vit-*.json"))
        assert bench("run", "--family=resnet", "--steps=2", *TINY) == 0
        resnet = next(Path("out").glob("resnet-*.json"))
    return root, root / vit, root / resnet


@pytest.mark.slow
def test_bench_probe_writes_three_figures_and_the_numbers(trained, tmp_path):
    _, vit_record, _ = trained
    out = tmp_path / "probe"
    assert bench("probe", str(vit_record), f"--out={out}", "--n_images=40") == 0
    for name in ("filters.png", "pos_embed.png", "attention_distance.png"):
        assert (out / name).stat().st_size > 5000, name
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    probe = json.loads((out / "probe.json").read_text())
    assert probe["grid"] == [8, 8] and probe["n_images"] == 40
    mad = torch.tensor(probe["attention_distance"]["per_head"])
    assert mad.shape == (4, 2)  # xxs: 4 layers, 2 heads
    assert ((mad > 0) & (mad < 32 * math.sqrt(2))).all()
    sim = torch.tensor(probe["pos_embed"]["similarity"])
    assert sim.shape == (64, 64) and torch.allclose(sim.diagonal(), torch.ones(64), atol=1e-4)
    assert len(probe["filters"]["components"]) == 28
    assert probe["wandb"] is None  # the run had W&B disabled: nothing to log to


@pytest.mark.slow
def test_bench_probe_on_a_shuffled_run_also_reads_it_in_the_unshuffled_image(tmp_path):
    with working_dir(tmp_path):
        assert bench("run", "--family=vit", "--permute_patches=8", *TINY) == 0
        record = next(Path("out").glob("vit-*.json"))
        assert bench("probe", str(record), "--out=probe", "--n_images=8") == 0
        probe = json.loads(Path("probe/probe.json").read_text())
        for name in probe["figures"]:
            assert Path("probe", name).read_bytes()[:4] == b"\x89PNG"
    assert probe["figures"][3:] == ["attention_distance_unshuffled.png", "pos_embed_unshuffled.png"]
    assert "tile-shuffled as in training" in probe["images"]
    mad = torch.tensor(probe["attention_distance"]["per_head"])
    in_image = torch.tensor(probe["attention_distance"]["image_layout"]["per_head"])
    assert in_image.shape == mad.shape and not torch.allclose(in_image, mad)
    sim = torch.tensor(probe["pos_embed"]["similarity"])
    unshuffled = torch.tensor(probe["pos_embed"]["image_layout"]["similarity"])
    assert torch.equal(unshuffled.flatten().sort().values, sim.flatten().sort().values)
    assert -1 <= probe["pos_embed"]["image_layout"]["locality"] <= 1
    assert not torch.equal(unshuffled, sim)


@pytest.mark.slow
def test_bench_probe_by_run_id_writes_under_results(trained, monkeypatch, capsys):
    root, vit_record, _ = trained
    monkeypatch.chdir(root)
    study_runs = root / "results" / "default" / "runs"
    study_runs.mkdir(parents=True, exist_ok=True)
    rec = json.loads(vit_record.read_text())
    (study_runs / vit_record.name).write_text(json.dumps(rec))
    assert bench("probe", rec["run_id"], "--n_images=8") == 0
    out = root / "results" / "default" / "probes" / rec["run_id"]
    assert sorted(p.name for p in out.iterdir()) == [
        "attention_distance.png",
        "filters.png",
        "pos_embed.png",
        "probe.json",
    ]


@pytest.mark.slow
def test_bench_probe_on_a_resnet_exits_2(trained, capsys):
    _, _, resnet_record = trained
    assert bench("probe", str(resnet_record)) == 2
    assert "ViTs" in capsys.readouterr().err


def test_bench_probe_on_an_unknown_run_exits_2(in_tmp, capsys):
    assert bench("probe", "vit-s-n100-s0-deadbeef") == 2
    assert "no record" in capsys.readouterr().err


@pytest.mark.slow
def test_figures_go_to_the_runs_wandb_run_when_it_has_one(trained, tmp_path, monkeypatch):
    """An offline W&B run is resumed by id and gets the three figures; disabled: nothing."""
    _, vit_record, _ = trained
    out = tmp_path / "probe"
    assert bench("probe", str(vit_record), f"--out={out}", "--n_images=4") == 0
    monkeypatch.chdir(tmp_path)
    cell = Cell(wandb_project="bench-test")
    assert (
        log_to_wandb({"wandb": {"mode": "disabled", "path": None, "dir": None}}, cell, out, FIGS)
        is None
    )
    assert log_to_wandb(None, cell, out, FIGS) is None
    record = {
        "wandb": {
            "mode": "offline",
            "id": "probetest1",
            "path": None,
            "dir": "wandb/offline-run-20240101_000000-probetest1",
        }
    }
    assert log_to_wandb(record, cell, out, FIGS) == "offline"
    media = list(
        (tmp_path / "wandb").glob("offline-run-*-probetest1/files/media/images/probe/*.png")
    )
    assert sorted(p.name.split("_0_")[0] for p in media) == [
        "attention_distance",
        "filters",
        "pos_embed",
    ]
