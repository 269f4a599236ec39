"""The three probe figures: filter components, position-embedding similarity, attention distance."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: probes run on servers and in CI

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from bench.results.records import atomic_write_figure  # noqa: E402
from bench.vit.probes import minmax  # noqa: E402


def plot_filters(components: torch.Tensor, explained: torch.Tensor, title: str, path: Path) -> None:
    k = components.shape[0]
    cols = 7
    rows = math.ceil(k / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.45 * rows + 0.9), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= k:
            ax.axis("off")
            continue
        tile = minmax(components[i]).permute(1, 2, 0).float().numpy()  # P x P x C
        ax.imshow(
            tile if tile.shape[-1] == 3 else tile[..., 0],
            interpolation="nearest",
            cmap=None if tile.shape[-1] == 3 else "gray",
        )
        ax.set_title(f"PC{i + 1} ({explained[i]:.0%})", fontsize=8)
    p = components.shape[-1]
    fig.suptitle(
        f"{title}\npatch-embedding filters: top {k} principal components "
        f"({p}x{p}x{components.shape[1]}, min-max scaled; % = variance explained)",
        fontsize=9,
    )
    fig.tight_layout()
    _save(fig, path)


def plot_pos_embed(
    sim: torch.Tensor, grid_hw: tuple[int, int], title: str, path: Path, axis: str = "input"
) -> None:
    """One small map per patch; ``axis`` names whose rows and columns they are laid out in:
    the model's ``input``, or the unshuffled ``image`` of a tile-shuffled run."""
    gh, gw = grid_hw
    side = min(0.75, 9.0 / max(gh, gw))
    # at least ~5 inches wide, so the two-line title fits even for a 4x4 grid
    fig, axes = plt.subplots(
        gh,
        gw,
        figsize=(max(5.2, side * gw + 1.6), side * gh + 1.5),
        squeeze=False,
        gridspec_kw=dict(wspace=0.06, hspace=0.06),
    )
    lo = float(sim.min())
    image = None
    for i in range(gh * gw):
        ax = axes[i // gw, i % gw]
        image = ax.imshow(
            sim[i].reshape(gh, gw).numpy(),
            vmin=lo,
            vmax=1.0,
            cmap="viridis",
            interpolation="nearest",
        )
        ax.set_xticks([])
        ax.set_yticks([])
    for c in range(gw):
        axes[-1, c].set_xlabel(str(c + 1), fontsize=7)
    for r in range(gh):
        axes[r, 0].set_ylabel(str(r + 1), fontsize=7, rotation=0, labelpad=8, va="center")
    fig.supxlabel(f"{axis} patch column", fontsize=9)
    fig.supylabel(f"{axis} patch row", fontsize=9)
    where = " in the unshuffled image" if axis == "image" else ""
    fig.suptitle(
        f"{title}\nposition-embedding similarity{where}: one tile per patch,\n"
        f"its cosine similarity with every patch",
        fontsize=9,
    )
    fig.subplots_adjust(left=0.1, right=0.8, bottom=0.08, top=0.86)
    cax = fig.add_axes([0.83, 0.15, 0.025, 0.65])
    fig.colorbar(image, cax=cax).set_label("cosine similarity")
    _save(fig, path)


def plot_attention_distance(
    mad: torch.Tensor, img_size: int, uniform: float, title: str, path: Path, axis: str = "input"
) -> None:
    """Every head's mean attention distance against depth; ``axis="image"``: the distances
    were measured in the unshuffled image of a tile-shuffled run."""
    layers, heads = mad.shape
    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    depth = torch.arange(1, layers + 1)
    for h in range(heads):
        jitter = (h - (heads - 1) / 2) * min(0.08, 0.5 / heads)
        ax.scatter(depth + jitter, mad[:, h].numpy(), s=22, alpha=0.8, label=f"head {h + 1}")
    ax.axhline(img_size, color="0.3", ls="--", lw=1, label=f"image size ({img_size} px)")
    ax.axhline(uniform, color="0.6", ls=":", lw=1, label=f"uniform attention ({uniform:.1f} px)")
    ax.set_xlabel("network depth (layer)")
    ax.set_ylabel("mean attention distance (pixels)")
    ax.set_xticks(depth.tolist())
    ax.set_ylim(0, img_size * 1.1)
    where = ", in the unshuffled image" if axis == "image" else ""
    ax.set_title(f"{title}\nmean attention distance of every head{where}", fontsize=9)
    ax.legend(fontsize=7, loc="lower right", ncol=2 if heads > 4 else 1)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)


def _save(fig, path: Path) -> None:
    """Written atomically: a crash never leaves half a figure in a probe folder."""
    try:
        atomic_write_figure(fig, path, dpi=120)
    finally:
        plt.close(fig)
