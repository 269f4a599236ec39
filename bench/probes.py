"""What a trained ViT has learned: three analyses of the ViT paper, on one trained run.

    bench probe RUN [--out=DIR] [--n_images=256]

RUN is a run_id (looked up under results/*/runs/), a record .json or a checkpoint .ckpt.
Writes, by default to results/<study>/probes/<run_id>/:

  filters.png             top principal components of the patch-embedding filters
  pos_embed.png           cosine similarity of each patch's position embedding with every other's
  attention_distance.png  mean attention distance (pixels) of every head against depth
  probe.json              the numbers behind the three figures

and logs the figures to the run's W&B run when it has one (online or offline).

Definitions (article, "What a trained ViT has learned"):
- filters: the D patch-embedding filters (P x P x 3 each) as D vectors, mean-centred; their top
  principal components, each reshaped to P x P x 3 and min-max scaled for display.
- position embeddings: cosine similarity between patch i's and patch j's embedding, the class
  token's row dropped.
- mean attention distance of layer l, head h:
      MAD = mean over images and query patches i of  sum_j A_ij * P * ||(r_i, c_i) - (r_j, c_j)||
  over patch tokens only. The class token's row and column are sliced off and the remaining
  weights are *not* renormalised: the share of attention a patch gives the class token adds no
  distance. Attention maps are recomputed from each block's own q/k projections on the block's
  normed input (captured with forward hooks), so fused attention kernels do not matter.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch
from torch import nn

from bench.errors import BenchError

N_COMPONENTS = 28
DEFAULT_IMAGES = 256


# ---------------------------------------------------------------------- the math (pure)
def patch_distances(grid_hw: tuple[int, int], patch_size: int) -> torch.Tensor:
    """[N, N] distances in pixels between patch centres of a row-major patch grid."""
    gh, gw = grid_hw
    rows, cols = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    centres = torch.stack([rows.flatten(), cols.flatten()], dim=1).double() * patch_size
    return torch.cdist(centres, centres)


def mean_attention_distance(attn: torch.Tensor, grid_hw: tuple[int, int],
                            patch_size: int) -> torch.Tensor:
    """Mean attention distance in pixels, one value per head: [H].

    ``attn`` is [B, H, T, T] softmax attention (rows are queries). When T is larger than the
    number of patches, the first T - N tokens (class / register tokens) are sliced off both axes;
    the rest is not renormalised. Averaged over the B images and the N query patches.
    """
    if attn.ndim != 4 or attn.shape[-1] != attn.shape[-2]:
        raise ValueError(f"attention must be [B, H, T, T], got {list(attn.shape)}")
    n = grid_hw[0] * grid_hw[1]
    prefix = attn.shape[-1] - n
    if prefix < 0:
        raise ValueError(f"{attn.shape[-1]} tokens cannot hold a {grid_hw} patch grid")
    a = attn[..., prefix:, prefix:].double()
    dist = patch_distances(grid_hw, patch_size).to(a.device)
    per_query = (a * dist).sum(-1)  # [B, H, N]
    return per_query.mean(dim=(0, 2))


def pos_embed_similarity(pos: torch.Tensor) -> torch.Tensor:
    """[N, N] cosine similarity between the rows of ``pos`` ([N, D], class token already dropped)."""
    unit = nn.functional.normalize(pos.double(), dim=-1)
    return unit @ unit.T


def _pca(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = weight.detach().reshape(weight.shape[0], -1).double()
    x = x - x.mean(dim=0, keepdim=True)
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    # a deterministic sign: the largest-magnitude entry of each component is positive
    idx = vh.abs().argmax(dim=1)
    signs = torch.sign(vh[torch.arange(len(vh)), idx])
    signs[signs == 0] = 1
    var = s**2
    return vh * signs[:, None], var / var.sum().clamp_min(1e-30)


def filter_pca(weight: torch.Tensor, k: int = N_COMPONENTS) -> torch.Tensor:
    """Top-``k`` principal components of the D filters ``weight`` [D, C, P, P]: [k, C, P, P].

    Mean-centred PCA over the D filters (each a C*P*P vector), unit-norm components, ordered by
    explained variance. ``k`` is capped at min(D, C*P*P).
    """
    comps, _ = _pca(weight)
    k = min(k, comps.shape[0])
    return comps[:k].reshape(k, *weight.shape[1:])


def explained_variance(weight: torch.Tensor, k: int = N_COMPONENTS) -> torch.Tensor:
    """Share of the filters' variance each of the top-``k`` components explains."""
    return _pca(weight)[1][:k]


def minmax(x: torch.Tensor) -> torch.Tensor:
    lo, hi = x.min(), x.max()
    return (x - lo) / (hi - lo) if hi > lo else torch.zeros_like(x)


# ---------------------------------------------------------------------- attention from a model
class AttentionRecorder:
    """Recomputes every block's softmax attention from its input, via forward hooks.

    Works on timm ``Block``s whose ``attn`` has ``qkv``, ``num_heads``, ``scale`` and optional
    ``q_norm``/``k_norm``; the hook sees the block's normed input (``norm1(x)``).
    """

    def __init__(self, model: nn.Module):
        self.maps: list[torch.Tensor] = []
        self.handles = []
        blocks = getattr(model, "blocks", None)
        if blocks is None:
            raise BenchError("the model has no transformer blocks (is it a ViT?)")
        for block in blocks:
            self.handles.append(block.attn.register_forward_hook(self._hook))

    def _hook(self, module, inputs, output):
        self.maps.append(attention_map(module, inputs[0]))

    def close(self) -> None:
        for h in self.handles:
            h.remove()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def attention_map(attn_module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """[B, H, T, T] softmax attention of a timm ``Attention`` module for its input ``x`` [B, T, C]."""
    b, t, _ = x.shape
    h = attn_module.num_heads
    qkv = attn_module.qkv(x).reshape(b, t, 3, h, -1).permute(2, 0, 3, 1, 4)
    q, k = qkv[0], qkv[1]
    q, k = attn_module.q_norm(q), attn_module.k_norm(k)
    logits = (q.float() * attn_module.scale) @ k.float().transpose(-2, -1)
    return logits.softmax(dim=-1)


@torch.no_grad()
def attention_distances(model: nn.Module, images: torch.Tensor, grid_hw: tuple[int, int],
                        patch_size: int, batch_size: int = 64) -> torch.Tensor:
    """[L, H] mean attention distance (pixels) over ``images`` (already normalised floats)."""
    totals, count = None, 0
    model.eval()
    with AttentionRecorder(model) as rec:
        for chunk in images.split(batch_size):
            rec.maps.clear()
            model(chunk)
            per_layer = torch.stack([mean_attention_distance(a, grid_hw, patch_size)
                                     for a in rec.maps])  # [L, H], mean over the chunk
            totals = per_layer * len(chunk) if totals is None else totals + per_layer * len(chunk)
            count += len(chunk)
    return totals / count


# ---------------------------------------------------------------------- figures
def plot_filters(components: torch.Tensor, explained: torch.Tensor, title: str, path: Path) -> None:
    import matplotlib.pyplot as plt

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
        ax.imshow(tile if tile.shape[-1] == 3 else tile[..., 0], interpolation="nearest",
                  cmap=None if tile.shape[-1] == 3 else "gray")
        ax.set_title(f"PC{i + 1} ({explained[i]:.0%})", fontsize=8)
    p = components.shape[-1]
    fig.suptitle(f"{title}\npatch-embedding filters: top {k} principal components "
                 f"({p}x{p}x{components.shape[1]}, min-max scaled; % = variance explained)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_pos_embed(sim: torch.Tensor, grid_hw: tuple[int, int], title: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    gh, gw = grid_hw
    side = min(0.75, 9.0 / max(gh, gw))
    # at least ~5 inches wide, so the two-line title fits even for a 4x4 grid
    fig, axes = plt.subplots(gh, gw, figsize=(max(5.2, side * gw + 1.6), side * gh + 1.5), squeeze=False,
                             gridspec_kw=dict(wspace=0.06, hspace=0.06))
    lo = float(sim.min())
    image = None
    for i in range(gh * gw):
        ax = axes[i // gw, i % gw]
        image = ax.imshow(sim[i].reshape(gh, gw).numpy(), vmin=lo, vmax=1.0, cmap="viridis",
                          interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
    for c in range(gw):
        axes[-1, c].set_xlabel(str(c + 1), fontsize=7)
    for r in range(gh):
        axes[r, 0].set_ylabel(str(r + 1), fontsize=7, rotation=0, labelpad=8, va="center")
    fig.supxlabel("input patch column", fontsize=9)
    fig.supylabel("input patch row", fontsize=9)
    fig.suptitle(f"{title}\nposition-embedding similarity: one tile per patch,\n"
                 f"its cosine similarity with every patch", fontsize=9)
    fig.subplots_adjust(left=0.1, right=0.8, bottom=0.08, top=0.86)
    cax = fig.add_axes([0.83, 0.15, 0.025, 0.65])
    fig.colorbar(image, cax=cax).set_label("cosine similarity")
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_attention_distance(mad: torch.Tensor, img_size: int, uniform: float, title: str,
                            path: Path) -> None:
    import matplotlib.pyplot as plt

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
    ax.set_title(f"{title}\nmean attention distance of every head", fontsize=9)
    ax.legend(fontsize=7, loc="lower right", ncol=2 if heads > 4 else 1)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------- the stage
PROBE_SEED = 0


def probe_indices(test_y: torch.Tensor, n_images: int) -> torch.Tensor:
    """A fixed set of test images: the first ``n_images`` of a seeded, class-balanced order.

    Not simply the first N of the split: an ImageFolder test split is sorted by class, and its
    first 256 images would all be one class. The same images for every run of a dataset.
    """
    from bench.data import balanced_order

    return balanced_order(test_y, PROBE_SEED)[:n_images]


def probe_images(cell, arch, n_images: int) -> torch.Tensor:
    """The probe's test images at the model's resolution, normalised as in training."""
    from bench.data import channel_stats, load_splits, make_subsets

    splits = load_splits(cell, arch.img_size)
    subsets = make_subsets(cell, splits.train_y, splits.num_classes)
    mean, std = channel_stats(splits.train_x, subsets.train_idx)
    x = splits.test_x[probe_indices(splits.test_y, n_images)].float() / 255.0
    return (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)


def run_probes(model: nn.Module, arch, images: torch.Tensor, title: str, out: Path) -> dict:
    """Compute the three analyses, write the figures and probe.json into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    grid = tuple(int(g) for g in model.patch_embed.grid_size)
    p = arch.patch_size

    weight = model.patch_embed.proj.weight.detach().cpu()
    comps = filter_pca(weight, N_COMPONENTS)
    explained = explained_variance(weight, N_COMPONENTS)
    plot_filters(comps, explained, title, out / "filters.png")

    prefix = 0 if getattr(model, "no_embed_class", False) else model.num_prefix_tokens
    pos = model.pos_embed.detach().cpu()[0, prefix:]
    sim = pos_embed_similarity(pos)
    plot_pos_embed(sim, grid, title, out / "pos_embed.png")

    device = next(model.parameters()).device
    mad = attention_distances(model, images.to(device), grid, p).cpu()
    n = grid[0] * grid[1]
    uniform = float(patch_distances(grid, p).sum() / (n * n))
    plot_attention_distance(mad, arch.img_size, uniform, title, out / "attention_distance.png")

    summary = {
        "img_size": arch.img_size, "patch_size": p, "grid": list(grid), "n_images": len(images),
        "images": f"the first {len(images)} of a class-balanced order (seed {PROBE_SEED}) of the "
                  "test split",
        "pos_embed_kind": arch.pos_embed, "pool": arch.pool,
        "filters": {
            "k": comps.shape[0], "shape": list(comps.shape[1:]),
            "explained_variance_ratio": _round(explained),
            "components": _round(comps),
        },
        "pos_embed": {
            "similarity": _round(sim),
            "note": "cosine similarity of patch position embeddings, class token dropped, "
                    "row-major patch order",
        },
        "attention_distance": {
            "unit": "pixels",
            "per_head": _round(mad),
            "per_layer_mean": _round(mad.mean(dim=1)),
            "uniform_attention": round(uniform, 4),
            "image_size": arch.img_size,
            "note": "patch tokens only, class token sliced off, not renormalised",
        },
        "figures": ["filters.png", "pos_embed.png", "attention_distance.png"],
    }
    return summary


def dump_json(obj: dict) -> str:
    """One line per top-level key: readable, without one line per number of the big arrays."""
    items = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in obj.items()]
    return "{\n" + ",\n".join(items) + "\n}\n"


def _round(t: torch.Tensor, nd: int = 5):
    return torch.round(t.double(), decimals=nd).tolist()


def log_to_wandb(record: dict | None, cell, out: Path) -> str | None:
    """Attach the figures to the cell's W&B run; silently nothing when it has none."""
    info = (record or {}).get("wandb") or {}
    mode = info.get("mode")
    if mode not in ("online", "offline") or not info.get("id"):
        return None
    try:
        import wandb
    except ImportError:
        return None
    kwargs = dict(id=info["id"], resume="allow", project=cell.wandb_project, mode=mode)
    if cell.wandb_entity:
        kwargs["entity"] = cell.wandb_entity
    run_dir = Path(info["dir"]) if info.get("dir") else None
    if run_dir is not None and run_dir.parent.name == "wandb" and run_dir.parent.parent.is_dir():
        kwargs["dir"] = str(run_dir.parent.parent)
    try:
        if wandb.run is not None:  # a run left open in this process must not take the figures
            wandb.finish()
        run = wandb.init(**kwargs)
        run.log({f"probe/{name}": wandb.Image(str(out / f"{name}.png"))
                 for name in ("filters", "pos_embed", "attention_distance")})
        run.finish()
    except Exception as e:  # no network, no credentials: the files on disk are the result
        print(f"bench probe: figures not logged to W&B ({e.__class__.__name__}: {e})",
              file=sys.stderr)
        return None
    return mode


def default_out(results_root: str | Path, cell, run_id: str) -> Path:
    return Path(results_root) / cell.study / "probes" / run_id


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench probe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", metavar="RUN", help="run_id, record .json or checkpoint .ckpt")
    parser.add_argument("--out", help="output folder (default results/<study>/probes/<run_id>)")
    parser.add_argument("--n_images", "--n-images", type=int, default=DEFAULT_IMAGES,
                        help="test images for the attention distances: a fixed, class-balanced "
                             f"set (default {DEFAULT_IMAGES})")
    parser.add_argument("--results_root", "--results-root", default="results",
                        help="where run_ids are looked up (default results)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    args = parser.parse_args(argv)
    if args.n_images <= 0:
        raise BenchError(f"n_images={args.n_images} must be positive")

    from bench.checkpoints import load_run

    record, cell, arch, model = load_run(args.run, args.results_root)
    run_id = (record or {}).get("run_id") or cell.run_id
    if arch.family != "vit":
        raise BenchError(f"run {run_id} is a {arch.family}: the probes apply to ViTs only")
    out = Path(args.out) if args.out else default_out(args.results_root, cell, run_id)
    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    model = model.to("cuda" if use_cuda else "cpu")

    images = probe_images(cell, arch, args.n_images)
    title = f"{run_id} ({arch.img_size} px, patch {arch.patch_size})"
    summary = run_probes(model, arch, images, title, out)
    summary = {"run_id": run_id, "arch": dict(vars(arch)), **summary}
    summary["wandb"] = log_to_wandb(record, cell, out)
    from bench.results import atomic_write_text

    atomic_write_text(out / "probe.json", dump_json(summary))
    mad = torch.tensor(summary["attention_distance"]["per_layer_mean"])
    print(f"{run_id}: probes -> {out}  (mean attention distance per layer, px: "
          f"{', '.join(f'{v:.1f}' for v in mad.tolist())})", file=sys.stderr)
    return 0
