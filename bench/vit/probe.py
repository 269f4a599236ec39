"""``bench probe``: what a trained ViT has learned, the three analyses of the ViT paper, on one run.

    bench probe RUN [--out=DIR] [--n_images=256]

RUN is a run_id (looked up under results/*/runs/), a record .json, a checkpoint .ckpt, a
folder holding one, or a run on W&B: wandb:ENTITY/PROJECT/RUN_ID (the model artifact it logged
with log_model=best) or wandb-artifact:ENTITY/PROJECT/NAME[:ALIAS].
Writes, by default to results/<study>/probes/<run_id>/:

  filters.png             top principal components of the patch-embedding filters
  pos_embed.png           cosine similarity of each patch's position embedding with every other's
  attention_distance.png  mean attention distance (pixels) of every head against depth
  probe.json              the numbers behind the figures

For a positive-control run (tiles shuffled by ``permute_patches``) the probe images are shuffled
as in training, and two more figures read the model in the unshuffled image, where each patch
came from: pos_embed_unshuffled.png and attention_distance_unshuffled.png. A ViT that learned
the image's geometry from its data, against the shuffle, shows it there.

and logs the figures to the run's W&B run when it has one (online or offline).

The math is in :mod:`bench.vit.probes`, the figures in :mod:`bench.vit.probe_plots`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch import nn

from bench.cell.batches import channel_stats, tile_permutation
from bench.cell.checkpoints import load_run
from bench.cell.datasets import load_splits
from bench.cell.subsets import balanced_order, make_subsets
from bench.errors import ArgumentParser, BenchError
from bench.results.layout import StudyDir
from bench.results.records import atomic_write_text
from bench.vit.probe_plots import plot_attention_distance, plot_filters, plot_pos_embed
from bench.vit.probes import (
    N_COMPONENTS,
    attention_distances,
    embedding_locality,
    explained_variance,
    filter_pca,
    image_order,
    patch_distances,
    pos_embed_similarity,
)

DEFAULT_IMAGES = 256


PROBE_SEED = 0


def probe_indices(test_y: torch.Tensor, n_images: int) -> torch.Tensor:
    """A fixed set of test images: the first ``n_images`` of a seeded, class-balanced order.

    Not simply the first N of the split: an ImageFolder test split is sorted by class, and its
    first 256 images would all be one class. The same images for every run of a dataset.
    """
    return balanced_order(test_y, PROBE_SEED)[:n_images]


def probe_images(cell, arch, n_images: int) -> torch.Tensor:
    """The probe's test images at the model's resolution, as the model saw them in training:
    tile-shuffled for a positive-control run, normalised."""
    splits = load_splits(cell, arch.img_size)
    subsets = make_subsets(cell, splits.train_y, splits.num_classes)
    mean, std = channel_stats(splits.train_x, subsets.train_idx)
    x = splits.test_x[probe_indices(splits.test_y, n_images)]
    shuffle = tile_permutation(cell)
    x = (shuffle(x) if shuffle is not None else x).float() / 255.0
    return (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)


def run_probes(
    model: nn.Module, arch, images: torch.Tensor, title: str, out: Path, shuffle=None
) -> dict:
    """Compute the three analyses, write the figures into ``out``; returns probe.json's numbers.

    ``shuffle``: the run's fixed tile permutation (a positive control). The position
    embeddings and attention distances are then also read in the unshuffled image's layout,
    where a ViT that learned the image's geometry from its data shows it again.
    """
    out.mkdir(parents=True, exist_ok=True)
    grid = tuple(int(g) for g in model.patch_embed.grid_size)
    p = arch.patch_size
    images = images.to(next(model.parameters()).device)
    # the patches' distances as the model sees them, and (shuffled run) in the unshuffled image
    dists = [patch_distances(grid, p)]
    if shuffle is not None:
        dists.append(patch_distances(grid, p, shuffle))
    mads = [m.cpu() for m in attention_distances(model, images, grid, p, dists=dists)]
    sim = _similarity(model)
    uniform = float(dists[0].mean())  # a head that attends to every patch alike
    summary = {
        "img_size": arch.img_size,
        "patch_size": p,
        "grid": list(grid),
        "n_images": len(images),
        "images": f"the first {len(images)} of a class-balanced order (seed {PROBE_SEED}) of the "
        "test split" + (", tile-shuffled as in training" if shuffle is not None else ""),
        "pos_embed_kind": arch.pos_embed,
        "pool": arch.pool,
        "filters": _filters(model, title, out),
        "pos_embed": _pos_embed(sim, dists[0], grid, title, out),
        "attention_distance": _attention(mads[0], uniform, arch, title, out),
        "figures": ["filters.png", "pos_embed.png", "attention_distance.png"],
    }
    if shuffle is not None:
        _unshuffled(sim, mads[1], dists[1], uniform, arch, grid, title, out, shuffle, summary)
    return summary


def _filters(model: nn.Module, title: str, out: Path) -> dict:
    weight = model.patch_embed.proj.weight.detach().cpu()
    comps = filter_pca(weight, N_COMPONENTS)
    explained = explained_variance(weight, N_COMPONENTS)
    plot_filters(comps, explained, title, out / "filters.png")
    return {
        "k": comps.shape[0],
        "shape": list(comps.shape[1:]),
        "explained_variance_ratio": _rounded_list(explained),
        "components": _rounded_list(comps),
    }


def _similarity(model: nn.Module) -> torch.Tensor:
    """[N, N] cosine similarity of the patches' position embeddings (class token dropped)."""
    prefix = 0 if getattr(model, "no_embed_class", False) else model.num_prefix_tokens
    return pos_embed_similarity(model.pos_embed.detach().cpu()[0, prefix:])


def _pos_embed(sim: torch.Tensor, dist: torch.Tensor, grid, title: str, out: Path) -> dict:
    plot_pos_embed(sim, grid, title, out / "pos_embed.png")
    return {
        "locality": round(embedding_locality(sim, dist), 4),
        "similarity": _rounded_list(sim),
        "note": "cosine similarity of patch position embeddings, class token dropped, "
        "row-major patch order of the model's input; locality: rank correlation over patch "
        "pairs of that similarity with their closeness (1: nearby patches most alike)",
    }


def _attention(mad: torch.Tensor, uniform: float, arch, title: str, out: Path) -> dict:
    plot_attention_distance(mad, arch.img_size, uniform, title, out / "attention_distance.png")
    return {
        "unit": "pixels",
        "per_head": _rounded_list(mad),
        "per_layer_mean": _rounded_list(mad.mean(dim=1)),
        "uniform_attention": round(uniform, 4),
        "image_size": arch.img_size,
        "note": "patch tokens only, class token sliced off, not renormalised; distances "
        "between patches of the model's input",
    }


def _unshuffled(sim, mad, dist, uniform, arch, grid, title, out, shuffle, summary) -> None:
    """The position-embedding similarity and the attention distances of a tile-shuffled run,
    read in the unshuffled image: where each patch's pixels came from (``dist``, ``mad``)."""
    plot_attention_distance(
        mad, arch.img_size, uniform, title, out / "attention_distance_unshuffled.png", axis="image"
    )
    summary["attention_distance"]["image_layout"] = {
        "per_head": _rounded_list(mad),
        "per_layer_mean": _rounded_list(mad.mean(dim=1)),
        "note": "the same attention, with distances between where the patches sit in the "
        "unshuffled image",
    }
    summary["figures"].append("attention_distance_unshuffled.png")
    try:
        order = image_order(grid, arch.patch_size, shuffle)
    except ValueError as e:  # tiles smaller than the patches: no one place per patch
        summary["pos_embed"]["image_layout"] = f"not drawn: {e}"
        return
    unshuffled = sim[order][:, order]
    plot_pos_embed(unshuffled, grid, title, out / "pos_embed_unshuffled.png", axis="image")
    summary["pos_embed"]["image_layout"] = {
        "locality": round(embedding_locality(sim, dist), 4),
        "similarity": _rounded_list(unshuffled),
        "note": "the same similarities, rows and columns in the row-major order of where "
        "each patch sits in the unshuffled image",
    }
    summary["figures"].append("pos_embed_unshuffled.png")


def dump_json(obj: dict) -> str:
    """One line per top-level key: readable, without one line per number of the big arrays."""
    items = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in obj.items()]
    return "{\n" + ",\n".join(items) + "\n}\n"


def _rounded_list(t: torch.Tensor, nd: int = 5):
    return torch.round(t.double(), decimals=nd).tolist()


def log_to_wandb(record: dict | None, cell, out: Path, figures: list[str]) -> str | None:
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
        run.log({f"probe/{Path(name).stem}": wandb.Image(str(out / name)) for name in figures})
        run.finish()
    except Exception as e:  # no network, no credentials: the files on disk are the result
        print(
            f"bench probe: figures not logged to W&B ({e.__class__.__name__}: {e})", file=sys.stderr
        )
        return None
    return mode


def default_out(results_root: str | Path, cell, run_id: str) -> Path:
    return StudyDir.of_study(cell.study, results_root).probes(run_id)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="bench probe",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "run",
        metavar="RUN",
        help="run_id, record .json, checkpoint .ckpt, wandb:E/P/RUN_ID or wandb-artifact:E/P/NAME",
    )
    parser.add_argument("--out", help="output folder (default results/<study>/probes/<run_id>)")
    parser.add_argument(
        "--n_images",
        "--n-images",
        type=int,
        default=DEFAULT_IMAGES,
        help="test images for the attention distances: a fixed, class-balanced "
        f"set (default {DEFAULT_IMAGES})",
    )
    parser.add_argument(
        "--results_root",
        "--results-root",
        default="results",
        help="where run_ids are looked up (default results)",
    )
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.n_images <= 0:
        raise BenchError(f"n_images={args.n_images} must be positive")

    record, cell, arch, model = load_run(args.run, args.results_root)
    run_id = (record or {}).get("run_id") or cell.run_id
    if arch.family != "vit":
        raise BenchError(f"run {run_id} is a {arch.family}: the probes apply to ViTs only")
    out = Path(args.out) if args.out else default_out(args.results_root, cell, run_id)
    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    model = model.to("cuda" if use_cuda else "cpu")

    images = probe_images(cell, arch, args.n_images)
    title = f"{run_id} ({arch.img_size} px, patch {arch.patch_size})"
    summary = run_probes(model, arch, images, title, out, tile_permutation(cell))
    summary = {"run_id": run_id, "arch": dict(vars(arch)), **summary}
    summary["wandb"] = log_to_wandb(record, cell, out, summary["figures"])
    atomic_write_text(out / "probe.json", dump_json(summary))
    print(f"{run_id}: probes -> {out}  ({_in_brief(summary)})", file=sys.stderr)
    return 0


def _in_brief(summary: dict) -> str:
    """The probe's numbers in one line; a tile-shuffled run's also in the unshuffled image."""
    pos, mad = summary["pos_embed"], summary["attention_distance"]

    def layers(per_layer):
        return ", ".join(f"{v:.1f}" for v in per_layer)

    text = (
        f"position-embedding locality {pos['locality']:+.2f}; "
        f"mean attention distance per layer, px: {layers(mad['per_layer_mean'])}"
    )
    image_pos, image_mad = pos.get("image_layout"), mad.get("image_layout")
    if isinstance(image_pos, dict) and image_mad:
        text += (
            f"; in the unshuffled image: locality {image_pos['locality']:+.2f}, "
            f"distances {layers(image_mad['per_layer_mean'])}"
        )
    return text
