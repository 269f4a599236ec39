"""Datasets, the cache, nested balanced subsets, on-device augmentation."""

import numpy as np
import pytest
import torch
from PIL import Image

from bench.cell.batches import augment
from bench.cell.config import Cell
from bench.cell.datasets import load_splits
from bench.cell.subsets import balanced_order, make_subsets
from bench.errors import BenchError


def write_folder(root, per_class=6, size=20, classes=("cat", "dog", "frog"), test_split="test"):
    """A real ImageFolder tree: PNG and JPEG files of odd sizes, some grayscale."""
    rng = np.random.default_rng(0)
    for split in ("train", test_split):
        for ci, name in enumerate(classes):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(per_class):
                arr = rng.integers(0, 255, (size + i, size, 3), dtype=np.uint8)
                arr[..., ci] = 255  # a class colour, so the classes are learnable
                img = Image.fromarray(arr)
                if i % 3 == 0:
                    img.convert("L").save(d / f"{i}.png")
                else:
                    img.save(d / f"{i}.jpg", quality=95)
    (root / "train" / "README.txt").write_text("not an image, ignored")
    return root


def test_subsets_are_nested_balanced_and_seeded():
    splits = load_splits(Cell(dataset="synthetic"))
    cell = Cell(dataset="synthetic")
    small = make_subsets(cell.replace(n_train=100), splits.train_y, 10)
    large = make_subsets(cell.replace(n_train=1000), splits.train_y, 10)
    again = make_subsets(cell.replace(n_train=100), splits.train_y, 10)
    other = make_subsets(cell.replace(n_train=100, seed=1), splits.train_y, 10)
    assert set(small.train_idx.tolist()) <= set(large.train_idx.tolist())
    assert torch.equal(small.train_idx, again.train_idx)
    assert not torch.equal(small.train_idx, other.train_idx)
    assert torch.bincount(splits.train_y[small.train_idx], minlength=10).tolist() == [10] * 10
    counts = torch.bincount(splits.train_y[large.train_idx], minlength=10)
    assert counts.max() - counts.min() <= 1
    # the validation split is fixed across seeds and never overlaps training
    assert torch.equal(small.val_idx, other.val_idx)
    assert not set(small.val_idx.tolist()) & set(large.train_idx.tolist())


def test_balanced_order_prefixes_stay_balanced_with_uneven_classes():
    y = torch.tensor([0] * 50 + [1] * 10 + [2] * 30)
    order = balanced_order(y, seed=3)
    assert sorted(order.tolist()) == list(range(len(y)))
    first = torch.bincount(y[order[:30]], minlength=3)
    assert first.tolist() == [10, 10, 10]


def test_n_train_limits():
    cell = Cell(dataset="synthetic")
    y = load_splits(cell).train_y
    with pytest.raises(BenchError, match="n_train=99999 is larger than the training split"):
        make_subsets(cell.replace(n_train=99999), y, 10)
    with pytest.raises(BenchError, match="below the number of classes"):
        make_subsets(cell.replace(n_train=5), y, 10)
    assert len(make_subsets(cell.replace(n_train="all"), y, 10).train_idx) == 4000 - 400


def test_imagefolder_reads_any_format_and_size_into_rgb(tmp_path):
    root = write_folder(tmp_path / "imgs", test_split="val")
    s = load_splits(Cell(dataset="imagefolder", data_dir=str(root), img_size=16))
    assert s.classes == ["cat", "dog", "frog"]
    assert s.train_x.shape == (18, 3, 16, 16) and s.train_x.dtype == torch.uint8
    assert s.test_x.shape == (18, 3, 16, 16)
    # the class colour survives decoding and resizing (grayscale files are grey: R=G=B)
    colour = s.train_x[s.train_y == 1].float().mean(dim=(0, 2, 3))
    assert colour[1] > colour[0] and colour[1] > colour[2]


def test_cache_is_written_once_and_reused(tmp_path, monkeypatch):
    root = write_folder(tmp_path / "imgs")
    cache = tmp_path / "cache"
    cell = Cell(dataset="imagefolder", data_dir=str(root), img_size=16, cache_dir=str(cache))
    first = load_splits(cell)
    files = list(cache.glob("imagefolder-*-16px"))
    assert len(files) == 1

    def no_decoding(*a, **k):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr("bench.cell.datasets._read_image", no_decoding)
    second = load_splits(cell)
    assert torch.equal(first.train_x, second.train_x)


def test_unreadable_image_is_named(tmp_path):
    root = write_folder(tmp_path / "imgs")
    bad = root / "train" / "dog" / "broken.jpg"
    bad.write_bytes(b"this is not a jpeg")
    with pytest.raises(BenchError, match="broken.jpg"):
        load_splits(Cell(dataset="imagefolder", data_dir=str(root), img_size=16))


def test_missing_data_dir(tmp_path):
    with pytest.raises(BenchError, match="data_dir"):
        load_splits(Cell(dataset="imagefolder", data_dir=str(tmp_path / "nowhere")))


def test_digits_are_real_and_split():
    s = load_splits(Cell(dataset="digits"))
    assert len(s.train_y) + len(s.test_y) == 1797
    assert s.train_x.shape[1:] == (3, 32, 32) and s.num_classes == 10


def test_augment_crops_and_flips_on_the_batch():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8).to(torch.uint8)
    g = torch.Generator().manual_seed(0)
    out = augment(x, 2, g)
    assert out.shape == x.shape and out.dtype == x.dtype
    outs = [augment(x, 2, torch.Generator().manual_seed(s)) for s in range(8)]
    assert any(not torch.equal(o, x) for o in outs)
