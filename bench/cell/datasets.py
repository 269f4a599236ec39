"""Datasets decoded once into uint8 arrays, cached on disk; training never touches PIL.

Sources: ``synthetic`` (generated, learnable), ``digits`` (scikit-learn's 1,797 real digits),
``cifar10``/``cifar100`` (torchvision, downloaded into ``data_dir``), ``imagefolder``
(``data_dir/train/<class>/*`` and ``test/`` or ``val/``, any format PIL reads) and ``hf`` (a
Hugging Face dataset in ``data_dir``, :mod:`bench.cell.hf_data`). Each is decoded at the cell's
image size into ``cache_dir`` (``BENCH_CACHE``, ``~/.cache/bench``) under a key that changes when
the source does (:mod:`bench.cell.store`), and read back memory-mapped as ``Splits``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from bench.cell import decode, hf_data, store
from bench.cell.batches import augment
from bench.cell.config import Cell
from bench.errors import BenchError, StorageError, is_storage

SYNTHETIC_SEED = 1234


@dataclass
class Splits:
    """Decoded images: uint8 [N, 3, H, W] (memory-mapped when read from the cache), int64 labels."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]
    maps: list = field(default_factory=list, repr=False, compare=False)  # behind the images

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def release(self) -> None:
        """Unmap the image pages this process touched (the kernel's page cache keeps them)."""
        store.release(self.maps)


# ---------------------------------------------------------------------- loading and caching
def load_splits(cell: Cell, img_size: int | None = None) -> Splits:
    """The cell's dataset at ``img_size``, from the cache when it is there."""
    img_size = img_size or cell.img_size
    path = _cache_dir(cell) / f"{cell.dataset}-{_source_key(cell)}-{img_size}px"
    if path.is_dir():
        try:
            return _read(path)
        except Exception:  # a damaged cache is rebuilt, never trusted
            shutil.rmtree(path, ignore_errors=True)
    writer = None
    try:
        writer = store.CacheWriter(path)
        writer.commit(_decode(cell, img_size, writer))
    except BaseException as e:
        if writer is not None:
            writer.discard()
        if is_storage(e):  # a full disk: one line naming the cache, exit 3, nothing left behind
            raise StorageError(path, e) from None
        raise
    return _read(path)


def _read(path: Path) -> Splits:
    arrays, maps = store.read(path)
    return Splits(**arrays, maps=maps)


def _cache_dir(cell: Cell) -> Path:
    root = cell.cache_dir or os.environ.get("BENCH_CACHE") or Path.home() / ".cache" / "bench"
    return Path(root)


def _source_key(cell: Cell) -> str:
    if cell.dataset not in ("imagefolder", "hf"):
        return "v2"
    root = Path(cell.data_dir).resolve()
    h = hashlib.sha256(str(root).encode())
    if cell.dataset == "hf":
        h.update(f"{cell.hf_image_column}:{cell.hf_label_column}".encode())
    files = _image_files(root) if cell.dataset == "imagefolder" else hf_data.source_files(root)
    for path in files:
        st = path.stat()
        h.update(f"{path.relative_to(root)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:12]


def _decode(cell: Cell, img_size: int, writer: store.CacheWriter) -> list[str]:
    """Decode the cell's source into ``writer``; the class names."""
    if cell.dataset == "imagefolder":  # decoded chunk by chunk: may be larger than RAM
        return imagefolder(cell.data_dir, img_size, writer)
    if cell.dataset == "hf":
        return hf_data.decode(cell, img_size, writer)
    if cell.dataset == "synthetic":
        splits = synthetic(img_size)
    elif cell.dataset == "digits":
        splits = digits(img_size)
    else:
        splits = cifar(cell.dataset, cell.data_dir or str(_cache_dir(cell) / "downloads"), img_size)
    for name in store.ARRAYS:
        writer.put(name, getattr(splits, name))
    return splits.classes


def _resize(x: torch.Tensor, img_size: int) -> torch.Tensor:
    """uint8 [N, C, H, W] -> uint8 [N, C, img_size, img_size]."""
    if x.shape[-1] == img_size and x.shape[-2] == img_size:
        return x.contiguous()
    out = []
    for chunk in x.split(4096):
        y = F.interpolate(
            chunk.float(),
            size=(img_size, img_size),
            mode="bilinear",
            antialias=True,
            align_corners=False,
        )
        out.append(y.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out)


def synthetic(
    img_size: int, n_train: int = 4000, n_test: int = 1000, num_classes: int = 10
) -> Splits:
    """Images with learnable class structure: each class is a smooth coloured template, seen
    shifted, rescaled in brightness and under noise."""
    g = torch.Generator().manual_seed(SYNTHETIC_SEED)
    # a class colour (easy for a CNN's global pooling) plus a class layout (easy for a ViT)
    coarse = 0.5 * torch.rand(num_classes, 3, 4, 4, generator=g) + 0.5 * torch.rand(
        num_classes, 3, 1, 1, generator=g
    )
    templates = F.interpolate(
        coarse, size=(img_size, img_size), mode="bicubic", align_corners=False
    )

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % num_classes
        y = y[torch.randperm(n, generator=g)]
        x = (templates[y] * 255).to(torch.uint8)
        x = augment(x, max(1, img_size // 16), g).float() / 255  # per-image shift and flip
        x = x * (0.7 + 0.6 * torch.rand(n, 1, 1, 1, generator=g))
        x = x + 0.25 * torch.randn(x.shape, generator=g)
        return (x.clamp(0, 1) * 255).round().to(torch.uint8), y

    train_x, train_y = draw(n_train)
    test_x, test_y = draw(n_test)
    return Splits(train_x, train_y, test_x, test_y, [f"class{i}" for i in range(num_classes)])


def digits(img_size: int) -> Splits:
    """scikit-learn's 1,797 real 8x8 handwritten digits, upsampled to RGB; fixed 20% test split."""
    from sklearn.datasets import load_digits  # only this dataset pays scikit-learn's import

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] * (255.0 / 16.0)
    x = x.round().to(torch.uint8).expand(-1, 3, -1, -1)
    y = torch.tensor(d.target, dtype=torch.int64)
    g = torch.Generator().manual_seed(0)
    test = torch.zeros(len(y), dtype=torch.bool)
    for c in range(10):
        idx = (y == c).nonzero().flatten()
        test[idx[torch.randperm(len(idx), generator=g)[: len(idx) // 5]]] = True
    x = _resize(x, img_size)
    return Splits(x[~test], y[~test], x[test], y[test], [str(i) for i in range(10)])


def cifar(name: str, root: str, img_size: int) -> Splits:
    """torchvision's CIFAR-10/100, downloaded into ``root`` when it is not there."""
    import torchvision  # only torchvision's downloaders pay its import

    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    try:
        train = cls(root, train=True, download=True)
        test = cls(root, train=False, download=True)
    except Exception as e:  # offline, or a broken archive
        raise BenchError(f"could not load {name} into data_dir={root}: {e}") from None

    def to_tensor(ds) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(ds.data).permute(0, 3, 1, 2)
        return _resize(x, img_size), torch.tensor(ds.targets, dtype=torch.int64)

    (train_x, train_y), (test_x, test_y) = to_tensor(train), to_tensor(test)
    return Splits(train_x, train_y, test_x, test_y, list(train.classes))


def _image_files(root: Path) -> list[Path]:
    exts = {e.lower() for e in Image.registered_extensions()}
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in exts and p.is_file())


def imagefolder(data_dir: str | None, img_size: int, writer: store.CacheWriter) -> list[str]:
    """``data_dir/train/<class>/*`` and ``data_dir/test/<class>/*`` (or ``val/``), any PIL format."""
    if not data_dir or not Path(data_dir).is_dir():
        raise BenchError(f"data_dir={data_dir} does not exist or is not a folder")
    root = Path(data_dir)
    train_dir = root / "train"
    test_dir = next((root / s for s in ("test", "val") if (root / s).is_dir()), None)
    if not train_dir.is_dir() or test_dir is None:
        raise BenchError(
            f"data_dir={data_dir} must hold train/<class>/ and test/<class>/ (or val/)"
        )
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    if len(classes) < 2:
        raise BenchError(f"data_dir={data_dir}: train/ has {len(classes)} class folder(s), need 2")
    listed = [
        (split, _folder_items(d, classes))
        for split, d in (("train", train_dir), ("test", test_dir))
    ]
    present = {label for _, label in listed[0][1]}
    for label, name in enumerate(classes):  # an empty class folder would silently become a class
        if label not in present:
            raise BenchError(f"data_dir={data_dir}: class folder train/{name} holds no images")
    for split, items in listed:
        print(f"decoding {len(items)} images from {root / split} ...", file=sys.stderr, flush=True)
        out = writer.images(f"{split}_x", len(items), img_size)
        decode.fill(
            out, lambda a, b, items=items: items[a:b], lambda it: _read_image(it[0], img_size)
        )
        writer.put(f"{split}_y", np.array([label for _, label in items], dtype=np.int64))
    return classes


def _folder_items(split_dir: Path, classes: list[str]) -> list[tuple[Path, int]]:
    items = []
    for label, name in enumerate(classes):
        folder = split_dir / name
        if folder.is_dir():
            items += [(p, label) for p in _image_files(folder)]
    unknown = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and p.name not in classes)
    if unknown:
        raise BenchError(f"{split_dir}/{unknown[0]}: class not present in train/")
    if not items:
        raise BenchError(f"{split_dir} holds no images")
    return items


def _read_image(path: Path, img_size: int) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return decode.to_array(im, img_size)
    except Exception as e:
        raise BenchError(f"cannot read image {path}: {e.__class__.__name__}") from None
