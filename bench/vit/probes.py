"""The math of the three probes of what a trained ViT learned (article, "What a trained ViT has
learned"). Tensors in, tensors out; :mod:`bench.vit.probe` runs them on a trained run.

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
- locality of the position embeddings: the rank correlation, over patch pairs, of their
  similarity with their closeness (:func:`embedding_locality`).
- a tile-shuffled run (positive control): the same numbers, read where each patch's pixels came
  from in the unshuffled image (:func:`source_centres`, :func:`image_order`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from scipy.stats import spearmanr
from torch import nn

from bench.errors import BenchError

N_COMPONENTS = 28


def source_centres(
    grid_hw: tuple[int, int], patch_size: int, shuffle: Callable | None = None
) -> torch.Tensor:
    """[N, 2] where each patch of a row-major patch grid sits in the unshuffled image: the mean
    (row, column), in pixels, of the image positions its pixels came from.

    ``shuffle`` is the run's fixed tile permutation (a callable on [B, C, H, W] images); without
    one these are the grid's own patch centres. Exact where each patch is a whole patch of the
    image, moved (tiles a multiple of the patch size); where a patch gathers several smaller
    tiles, the mean of where they came from.
    """
    gh, gw = grid_hw
    rows, cols = torch.meshgrid(
        torch.arange(gh * patch_size, dtype=torch.float64),
        torch.arange(gw * patch_size, dtype=torch.float64),
        indexing="ij",
    )
    coords = torch.stack([rows, cols])[None]  # [1, 2, H, W]: each pixel's own position
    if shuffle is not None:
        coords = shuffle(coords)
    per_patch = coords.reshape(2, gh, patch_size, gw, patch_size).mean(dim=(2, 4))
    return per_patch.reshape(2, gh * gw).T


def patch_distances(
    grid_hw: tuple[int, int], patch_size: int, shuffle: Callable | None = None
) -> torch.Tensor:
    """[N, N] distances in pixels between patches of a row-major patch grid, measured where
    they sit in the unshuffled image (:func:`source_centres`)."""
    centres = source_centres(grid_hw, patch_size, shuffle)
    return torch.cdist(centres, centres)


def image_order(grid_hw: tuple[int, int], patch_size: int, shuffle: Callable) -> torch.Tensor:
    """[N] the token at each row-major place of the unshuffled image: index a token-by-token
    matrix with it on both axes to read it in the image's own layout."""
    gh, gw = grid_hw
    rc = (source_centres(grid_hw, patch_size, shuffle) - (patch_size - 1) / 2) / patch_size
    place = rc[:, 0].round().long() * gw + rc[:, 1].round().long()
    if sorted(place.tolist()) != list(range(gh * gw)):
        raise ValueError("the tiles are smaller than the patches: no patch has one source place")
    return torch.argsort(place)


def mean_attention_distance(
    attn: torch.Tensor, grid_hw: tuple[int, int], patch_size: int, dist: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean attention distance in pixels, one value per head: [H].

    ``attn`` is [B, H, T, T] softmax attention (rows are queries). When T is larger than the
    number of patches, the first T - N tokens (class / register tokens) are sliced off both axes;
    the rest is not renormalised. Averaged over the B images and the N query patches.
    ``dist``: the [N, N] patch distances to use (default: the grid's own, :func:`patch_distances`).
    """
    if attn.ndim != 4 or attn.shape[-1] != attn.shape[-2]:
        raise ValueError(f"attention must be [B, H, T, T], got {list(attn.shape)}")
    n = grid_hw[0] * grid_hw[1]
    prefix = attn.shape[-1] - n
    if prefix < 0:
        raise ValueError(f"{attn.shape[-1]} tokens cannot hold a {grid_hw} patch grid")
    a = attn[..., prefix:, prefix:].double()
    dist = (patch_distances(grid_hw, patch_size) if dist is None else dist).to(a.device)
    per_query = (a * dist).sum(-1)  # [B, H, N]
    return per_query.mean(dim=(0, 2))


def pos_embed_similarity(pos: torch.Tensor) -> torch.Tensor:
    """[N, N] cosine similarity between the rows of ``pos`` ([N, D], class token already dropped)."""
    unit = nn.functional.normalize(pos.double(), dim=-1)
    return unit @ unit.T


def embedding_locality(sim: torch.Tensor, dist: torch.Tensor) -> float:
    """How local the position embeddings are: the rank correlation, over all pairs of patches,
    between their embeddings' similarity and their closeness (minus their distance ``dist``).
    Near 1: nearby patches have the most alike embeddings; near 0: no trace of the geometry."""
    pairs = torch.triu_indices(len(sim), len(sim), offset=1)
    rho = spearmanr(sim[pairs[0], pairs[1]].numpy(), -dist[pairs[0], pairs[1]].numpy())[0]
    return float(rho)


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
def attention_distances(
    model: nn.Module,
    images: torch.Tensor,
    grid_hw: tuple[int, int],
    patch_size: int,
    batch_size: int = 64,
    dists: list[torch.Tensor] | None = None,
) -> list[torch.Tensor]:
    """[L, H] mean attention distance (pixels) over ``images`` (already normalised floats), one
    per [N, N] patch-distance matrix in ``dists`` (default: the grid's own), all from one pass."""
    dists = dists if dists is not None else [patch_distances(grid_hw, patch_size)]
    totals, count = None, 0
    model.eval()
    with AttentionRecorder(model) as rec:
        for chunk in images.split(batch_size):
            rec.maps.clear()
            model(chunk)
            per_layer = torch.stack(
                [
                    torch.stack(
                        [mean_attention_distance(a, grid_hw, patch_size, d) for a in rec.maps]
                    )
                    for d in dists
                ]
            )  # [K, L, H], mean over the chunk
            totals = per_layer * len(chunk) if totals is None else totals + per_layer * len(chunk)
            count += len(chunk)
    return list(totals / count)
