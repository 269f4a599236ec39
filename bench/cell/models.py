"""Model families and their size ladders: timm ViTs and timm ResNets with a small-image stem.

Rungs are matched across families: the same rung has about the same parameter count (within 25%)
and each rung is 3-4x the one before, so "size" means the same thing for both families.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import torch
from timm.layers import build_sincos2d_pos_embed
from timm.models.resnet import BasicBlock, ResNet
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bench.cell.config import SIZES, Cell
from bench.errors import ArgumentParser, BenchError

# embed_dim, depth, num_heads (mlp_ratio 4). Parameter counts at 32 px, patch 4, 10 classes.
VIT_LADDER = {
    "xxs": dict(embed_dim=64, depth=4, num_heads=2),  # 0.20M
    "xs": dict(embed_dim=112, depth=5, num_heads=4),  # 0.77M
    "s": dict(embed_dim=192, depth=6, num_heads=3),  # 2.7M
    "m": dict(embed_dim=384, depth=6, num_heads=6),  # 10.7M
    "l": dict(embed_dim=512, depth=12, num_heads=8),  # 37.9M
}
# width of the first stage (stages: w, 2w, 4w, 8w), depth 18 (BasicBlock, 2-2-2-2).
RESNET_LADDER = {
    "xxs": dict(width=8, depth=18),  # 0.18M
    "xs": dict(width=16, depth=18),  # 0.70M
    "s": dict(width=32, depth=18),  # 2.8M
    "m": dict(width=64, depth=18),  # 11.2M
    "l": dict(width=128, depth=18),  # 44.7M
}
RESNET_BLOCKS = {10: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
SMALL_IMAGE = 64  # below this side, a ResNet gets the 3x3 stride-1 stem and no max-pool


@dataclass(frozen=True)
class Arch:
    """A fully resolved architecture: the rung with the cell's overrides applied."""

    family: str
    img_size: int
    num_classes: int
    embed_dim: int = 0
    depth: int = 0
    num_heads: int = 0
    patch_size: int = 0
    width: int = 0
    pool: str = "cls"
    pos_embed: str = "learned"
    drop_path: float = 0.0  # stochastic depth rate (timm drop_path_rate); off at evaluation


def resolve_arch(cell: Cell, num_classes: int, img_size: int | None = None) -> Arch:
    img_size = img_size or cell.img_size
    if cell.family == "vit":
        rung = VIT_LADDER[cell.size]
        arch = Arch(
            "vit",
            img_size,
            num_classes,
            embed_dim=cell.embed_dim or rung["embed_dim"],
            depth=cell.depth or rung["depth"],
            num_heads=cell.num_heads or rung["num_heads"],
            patch_size=cell.resolved_patch_size,
            pool=cell.pool,
            pos_embed=cell.pos_embed,
            drop_path=cell.resolved_recipe["drop_path"],
        )
        if arch.embed_dim % arch.num_heads:
            raise BenchError(
                f"num_heads={arch.num_heads} does not divide embed_dim={arch.embed_dim}"
            )
        return arch
    rung = RESNET_LADDER[cell.size]
    return Arch(
        "resnet",
        img_size,
        num_classes,
        width=cell.width or rung["width"],
        depth=cell.depth or rung["depth"],
        drop_path=cell.resolved_recipe["drop_path"],
    )


def build_model(arch: Arch) -> nn.Module:
    return build_vit(arch) if arch.family == "vit" else build_resnet(arch)


def build_vit(arch: Arch) -> nn.Module:
    mean_pool = arch.pool == "mean"
    model = VisionTransformer(
        img_size=arch.img_size,
        patch_size=arch.patch_size,
        num_classes=arch.num_classes,
        embed_dim=arch.embed_dim,
        depth=arch.depth,
        num_heads=arch.num_heads,
        class_token=not mean_pool,
        global_pool="avg" if mean_pool else "token",
        drop_path_rate=arch.drop_path,
    )
    if arch.pos_embed == "sincos":
        set_sincos_pos_embed(model)
    return model


def set_sincos_pos_embed(model: nn.Module) -> None:
    """Replace the learned position embeddings by fixed 2-D sine-cosine ones (not trained)."""
    grid = model.patch_embed.grid_size
    dim = model.pos_embed.shape[-1]
    table = build_sincos2d_pos_embed(list(grid), dim=dim, temperature=10000.0)
    prefix = model.pos_embed.shape[1] - grid[0] * grid[1]  # class-token row(s): zeros
    table = torch.cat([torch.zeros(prefix, dim), table.float()], dim=0)[None]
    model.pos_embed = nn.Parameter(table, requires_grad=False)


def build_resnet(arch: Arch) -> nn.Module:
    w = arch.width
    model = ResNet(
        block=BasicBlock,
        layers=RESNET_BLOCKS[arch.depth],
        num_classes=arch.num_classes,
        # the deep stem is the one whose output width follows stem_width (2 * stem_width = w)
        channels=(w, 2 * w, 4 * w, 8 * w),
        stem_width=max(1, w // 2),
        stem_type="deep",
        drop_path_rate=arch.drop_path,
    )
    if arch.img_size < SMALL_IMAGE:
        # timm's stride-4 stem leaves a 1x1 map at 32 px: use a CIFAR-style 3x3 stride-1 stem.
        model.conv1 = nn.Conv2d(3, w, kernel_size=3, stride=1, padding=1, bias=False)
        model.bn1 = nn.BatchNorm2d(w)
        model.maxpool = nn.Identity()
    return model


def count_params(model: nn.Module) -> int:
    """All trainable parameters (fixed sin-cos position embeddings are not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def forward_flops(model: nn.Module, img_size: int) -> int:
    """Forward FLOPs for one image, measured with torch's FLOP counter.

    timm's fused attention hides its matmuls from the counter on the CPU, so it is switched off
    on a copy of the model for the count.
    """
    probe = copy.deepcopy(model).float().cpu().eval()
    for m in probe.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = False
    x = torch.zeros(1, 3, img_size, img_size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        probe(x)
    return int(counter.get_total_flops())


def train_flops(flops_per_image: int, batch_size: int, steps: int) -> int:
    """Training compute: forward plus backward is about 3x the forward pass, per image seen."""
    return 3 * flops_per_image * batch_size * steps


def set_resolution(model: nn.Module, arch: Arch, img_size: int) -> Arch:
    """Switch a timm ViT (in place) to ``img_size`` with its patch size kept; returns the new Arch.

    Learned position embeddings are resized as a 2-D grid by bicubic interpolation, the class
    token's row kept (timm ``set_input_size``, through ``resample_abs_pos_embed``); fixed
    sin-cos ones are recomputed on the new grid and stay untrained.
    """
    if arch.family != "vit":
        raise BenchError(f"fine-tuning at another resolution applies to ViTs, not {arch.family}")
    if img_size <= 0:
        raise BenchError(f"img_size={img_size} must be positive")
    if img_size % arch.patch_size:
        raise BenchError(
            f"img_size={img_size} is not a multiple of the patch size {arch.patch_size}"
        )
    if img_size != arch.img_size:
        model.set_input_size(img_size=(img_size, img_size))
        if arch.pos_embed == "sincos":
            set_sincos_pos_embed(model)
    return dataclasses.replace(arch, img_size=img_size)


def ladder_rows(img_size: int = 32, num_classes: int = 10) -> list[dict]:
    rows = []
    for family in ("vit", "resnet"):
        for size in SIZES:
            cell = Cell(family=family, size=size, img_size=img_size)
            arch = resolve_arch(cell, num_classes)
            model = build_model(arch)
            desc = (
                f"{arch.embed_dim}w/{arch.depth}d/{arch.num_heads}h p{arch.patch_size}"
                if family == "vit"
                else f"resnet{arch.depth} w{arch.width}"
            )
            rows.append(
                dict(
                    family=family,
                    size=size,
                    arch=desc,
                    params=count_params(model),
                    flops=forward_flops(model, img_size),
                )
            )
    return rows


def main(argv: list[str]) -> int:
    parser = ArgumentParser(prog="bench models", description="Print the size ladder.")
    parser.add_argument("--img_size", "--img-size", type=int, default=32)
    parser.add_argument("--num_classes", "--num-classes", type=int, default=10)
    args = parser.parse_args(argv)
    rows = ladder_rows(args.img_size, args.num_classes)
    print(f"{'family':<8}{'size':<6}{'architecture':<22}{'params':>12}{'fwd GFLOP/img':>16}")
    for r in rows:
        print(
            f"{r['family']:<8}{r['size']:<6}{r['arch']:<22}{r['params'] / 1e6:>11.2f}M"
            f"{r['flops'] / 1e9:>16.4f}"
        )
    return 0
