"""Datasets decoded once into uint8 tensors, cached on disk; training never touches PIL.

Sources: ``synthetic`` (generated, learnable), ``digits`` (scikit-learn's 1,797 real digits),
``cifar10``/``cifar100`` (torchvision, downloaded into ``data_dir``) and ``imagefolder``
(``data_dir/train/<class>/*`` and ``test/`` or ``val/``, any format PIL reads). Each is decoded
at the cell's image size into ``Splits`` and kept in ``cache_dir`` (``BENCH_CACHE``,
``~/.cache/bench``) under a key that changes when the source does.
"""

from __future__ import annotations

import hashlib
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from bench.cell.batches import augment
from bench.cell.config import Cell
from bench.errors import BenchError

SYNTHETIC_SEED = 1234


@dataclass
class Splits:
    """Decoded images: uint8 [N, 3, H, W] and int64 labels."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


# ---------------------------------------------------------------------- loading and caching
def load_splits(cell: Cell, img_size: int | None = None) -> Splits:
    """The cell's dataset at ``img_size``, from the cache when it is there."""
    img_size = img_size or cell.img_size
    source = _source_key(cell)
    cache = _cache_dir(cell) / f"{cell.dataset}-{source}-{img_size}px.pt"
    if cache.exists():
        try:
            return Splits(**torch.load(cache, weights_only=True))
        except Exception:  # a damaged cache is rebuilt, never trusted
            cache.unlink(missing_ok=True)
    splits = _decode(cell, img_size)
    try:
        _atomic_save(vars(splits), cache)
    except (OSError, RuntimeError) as e:  # a full disk: the cache only saves time, go on without
        Path(f"{cache.parent}/.{cache.name}.{os.getpid()}.tmp").unlink(missing_ok=True)
        why = str(e).strip().splitlines()[-1][:120] if str(e).strip() else type(e).__name__
        print(
            f"warning: cannot write the data cache {cache} ({why}); going on without it",
            file=sys.stderr,
            flush=True,
        )
    return splits


def _cache_dir(cell: Cell) -> Path:
    root = cell.cache_dir or os.environ.get("BENCH_CACHE") or Path.home() / ".cache" / "bench"
    return Path(root)


def _source_key(cell: Cell) -> str:
    if cell.dataset != "imagefolder":
        return "v2"
    root = Path(cell.data_dir).resolve()
    h = hashlib.sha256(str(root).encode())
    for path in _image_files(root):
        st = path.stat()
        h.update(f"{path.relative_to(root)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:12]


def _atomic_save(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _decode(cell: Cell, img_size: int) -> Splits:
    if cell.dataset == "synthetic":
        return synthetic(img_size)
    if cell.dataset == "digits":
        return digits(img_size)
    if cell.dataset in ("cifar10", "cifar100"):
        return cifar(cell.dataset, cell.data_dir or str(_cache_dir(cell) / "downloads"), img_size)
    return imagefolder(cell.data_dir, img_size)


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
    from sklearn.datasets import load_digits

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
    import torchvision

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


def imagefolder(data_dir: str | None, img_size: int) -> Splits:
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
    for name in classes:  # an empty class folder would silently become a class of no images
        if not _image_files(train_dir / name):
            raise BenchError(f"data_dir={data_dir}: class folder train/{name} holds no images")
    train_x, train_y = _read_folder(train_dir, classes, img_size)
    test_x, test_y = _read_folder(test_dir, classes, img_size)
    return Splits(train_x, train_y, test_x, test_y, classes)


def _read_folder(
    split_dir: Path, classes: list[str], img_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
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
    print(f"decoding {len(items)} images from {split_dir} ...", file=sys.stderr, flush=True)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        arrays = list(pool.map(lambda it: _read_image(it[0], img_size), items, chunksize=256))
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor([label for _, label in items], dtype=torch.int64)


def _read_image(path: Path, img_size: int):
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.size != (img_size, img_size):
                im = im.resize((img_size, img_size), Image.BICUBIC)
            return np.asarray(im, dtype=np.uint8)
    except Exception as e:
        raise BenchError(f"cannot read image {path}: {e.__class__.__name__}") from None
