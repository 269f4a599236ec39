"""Hugging Face ``datasets`` as a source (``dataset=hf``).

``data_dir`` is a folder written by ``save_to_disk``, a folder of parquet or arrow files, or an
image folder (``load_dataset`` picks the builder from the files). The image and label columns
are named by ``hf_image_column`` and ``hf_label_column``; the splits are ``train`` and ``test``
(or ``validation``). Images are decoded chunk by chunk into the cache, so the set may be larger
than RAM.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from bench.cell.config import Cell
from bench.cell.decode import fill, to_array
from bench.cell.store import CacheWriter
from bench.errors import BenchError

TEST_SPLITS = ("test", "validation", "val", "valid")


def source_files(root: Path) -> list[Path]:
    """Every file of the dataset folder (hidden ones aside): their sizes and times key the cache."""
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def decode(cell: Cell, img_size: int, writer: CacheWriter) -> list[str]:
    """Decode the train and test splits into ``writer``; the class names."""
    hf = _hf()
    train, test = _splits(hf, cell, writer.path.parent / "hf")
    for split in (train, test):
        _check_columns(cell, split)
    classes, to_label = _labels(hf, cell.hf_label_column, train, test)
    for name, split in (("train", train), ("test", test)):
        _decode_split(hf, cell, split, img_size, writer, name)
        raw = split.with_format("numpy")[cell.hf_label_column]
        writer.put(f"{name}_y", np.array([to_label(v) for v in raw], dtype=np.int64))
    return classes


def _hf():
    try:
        import datasets
    except ImportError:
        raise BenchError(
            "dataset=hf needs Hugging Face datasets: pip install 'bench[hf]' (or datasets)"
        ) from None
    datasets.disable_progress_bars()
    return datasets


def _splits(hf, cell: Cell, hf_cache: Path):
    root = Path(cell.data_dir or "")
    if not cell.data_dir or not root.is_dir():
        raise BenchError(f"data_dir={cell.data_dir} does not exist or is not a folder")
    try:
        if (root / "dataset_dict.json").exists() or (root / "state.json").exists():
            ds = hf.load_from_disk(str(root))
        else:
            ds = hf.load_dataset(str(root), cache_dir=str(hf_cache))
    except Exception as e:
        why = str(e).splitlines()[0] if str(e) else ""
        raise BenchError(
            f"data_dir={cell.data_dir}: not a dataset Hugging Face datasets can read "
            f"({e.__class__.__name__}: {why})"
        ) from None
    names = list(ds) if isinstance(ds, dict) else []
    test = next((s for s in TEST_SPLITS if s in names), None)
    if "train" not in names or test is None:
        raise BenchError(
            f"data_dir={cell.data_dir} must hold a train split and a test (or validation) "
            f"split; it holds: {', '.join(names) or 'one unnamed split'}"
        )
    return ds["train"], ds[test]


def _check_columns(cell: Cell, split) -> None:
    for field in ("hf_image_column", "hf_label_column"):
        column = getattr(cell, field)
        if column not in split.column_names:
            raise BenchError(
                f"{field}={column!r} is not a column of data_dir={cell.data_dir} "
                f"(its columns: {', '.join(split.column_names)})"
            )


def _labels(hf, column: str, train, test):
    """Class names and a value -> class index map: a ClassLabel's own names, else the sorted
    distinct values of both splits."""
    feature = train.features[column]
    if isinstance(feature, hf.ClassLabel):
        return list(feature.names), int
    values = sorted(set(train.unique(column)) | set(test.unique(column)))
    index = {v: i for i, v in enumerate(values)}
    return [str(v) for v in values], lambda v: index[v.item() if hasattr(v, "item") else v]


def _decode_split(hf, cell: Cell, split, img_size: int, writer: CacheWriter, name: str) -> None:
    column = cell.hf_image_column
    split = split.select_columns([column])
    if isinstance(split.features[column], hf.Image):
        # undecoded bytes: the thread pool decodes them, not this thread
        split = split.cast_column(column, hf.Image(decode=False))
    out = writer.images(f"{name}_x", len(split), img_size)
    print(
        f"decoding {len(split)} images of {cell.data_dir} ({name}) ...", file=sys.stderr, flush=True
    )
    fill(out, lambda a, b: split[a:b][column], lambda item: _to_array(item, img_size, cell))


def _to_array(item, img_size: int, cell: Cell) -> np.ndarray:
    try:
        if isinstance(item, dict):  # an undecoded Image feature: bytes or a path
            src = io.BytesIO(item["bytes"]) if item.get("bytes") else item["path"]
            with Image.open(src) as im:
                return to_array(im, img_size)
        return to_array(item, img_size)
    except Exception as e:
        raise BenchError(
            f"hf_image_column={cell.hf_image_column!r}: cannot read an image of "
            f"data_dir={cell.data_dir} ({e.__class__.__name__})"
        ) from None
