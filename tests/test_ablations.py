"""ViT design choices as cell fields: pool=cls|mean and pos_embed=learned|sincos, and their sweep."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench.cell.checkpoints import load_run
from bench.cell.models import Arch, build_model, count_params, set_sincos_pos_embed
from bench.cell.module import param_groups
from bench.cli import main
from tests.conftest import shipped_sweep_cells


def vit(**kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(Arch("vit", 16, 10, embed_dim=32, depth=2, num_heads=2, patch_size=4, **kw))


def sincos_table(img_size: int, dim: int, cls: bool) -> torch.Tensor:
    ref = build_model(
        Arch(
            "vit",
            img_size,
            10,
            embed_dim=dim,
            depth=1,
            num_heads=2,
            patch_size=4,
            pool="cls" if cls else "mean",
        )
    )
    set_sincos_pos_embed(ref)
    return ref.pos_embed.detach()


def test_sincos_embeddings_are_fixed_and_not_counted():
    learned, fixed = vit(), vit(pos_embed="sincos")
    assert learned.pos_embed.requires_grad and not fixed.pos_embed.requires_grad
    assert count_params(fixed) == count_params(learned) - learned.pos_embed.numel()
    in_optimizer = {id(p) for g in param_groups(fixed, 0.05) for p in g["params"]}
    assert id(fixed.pos_embed) not in in_optimizer
    # a 2-D sin-cos table: the class-token row is zero, patch rows differ, values in [-1, 1]
    pos = fixed.pos_embed[0]
    assert torch.equal(pos[0], torch.zeros(32))
    assert pos[1:].abs().max() <= 1 and torch.unique(pos[1:], dim=0).shape[0] == 16
    # timm's layout [sin(row), sin(col), cos(row), cos(col)]: one row -> same row features
    grid = pos[1:].reshape(4, 4, 32)
    row = torch.cat([torch.arange(0, 8), torch.arange(16, 24)])
    col = row + 8
    assert torch.allclose(grid[1, 0, row], grid[1, 3, row])
    assert not torch.allclose(grid[1, 0, col], grid[1, 3, col])
    assert torch.allclose(grid[0, 2, col], grid[3, 2, col])


def test_mean_pooling_uses_no_class_token():
    model = vit(pool="mean").eval()
    assert model.cls_token is None and model.num_prefix_tokens == 0
    assert model.pos_embed.shape == (1, 16, 32)  # one row per patch, none for a class token
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (3, 16, 32)  # patch tokens only
        pre = model.forward_head(feats, pre_logits=True)
        assert torch.allclose(pre, model.fc_norm(feats.mean(dim=1)), atol=1e-6)
    cls = vit(pool="cls").eval()
    assert cls.cls_token is not None and cls.pos_embed.shape == (1, 17, 32)
    with torch.no_grad():
        feats = cls.forward_features(x)
        assert torch.allclose(cls.forward_head(feats, pre_logits=True), feats[:, 0])


@pytest.mark.slow
def test_sincos_and_mean_pooling_after_a_real_training_run(in_tmp):
    """bench run with pool=mean, pos_embed=sincos: trains, and the table is untouched."""
    args = [
        "run",
        "--dataset=synthetic",
        "--family=vit",
        "--size=xxs",
        "--n_train=200",
        "--batch_size=32",
        "--steps=8",
        "--evals=2",
        "--val_size=100",
        "--wandb=disabled",
        "--progress=false",
        "--results_dir=out",
        "--pool=mean",
        "--pos_embed=sincos",
    ]
    assert main(args) == 0
    record_file = next(Path("out").glob("*.json"))
    record = json.loads(record_file.read_text())
    assert record["status"] == "completed"
    _, cell, arch, model = load_run(record_file)
    assert (arch.pool, arch.pos_embed) == ("mean", "sincos")
    assert model.cls_token is None
    assert torch.equal(model.pos_embed.detach(), sincos_table(32, 64, cls=False))
    # trained: the weights moved away from the initialisation the same seed gives
    torch.manual_seed(cell.seed)
    init = build_model(arch)
    assert not torch.allclose(init.patch_embed.proj.weight, model.patch_embed.proj.weight)
    assert (
        record["params"]
        == count_params(init)
        == sum(p.numel() for n, p in init.named_parameters() if n != "pos_embed")
    )


def test_ablation_sweep_crosses_pool_and_pos_embed_at_two_sizes():
    _, cells = shipped_sweep_cells("cifar10-ablations.yaml")
    combos = {(c.pool, c.pos_embed, c.n_train) for c in cells}
    assert len(cells) == len(combos) == 8
    assert {c.pool for c in cells} == {"cls", "mean"}
    assert {c.pos_embed for c in cells} == {"learned", "sincos"}
    assert len({c.n_train for c in cells}) == 2 and {c.family for c in cells} == {"vit"}
