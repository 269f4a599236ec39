"""Data beyond RAM: the memory-mapped cache, streamed batches, Hugging Face datasets."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from bench.cell.batches import DeviceBatches, channel_stats
from bench.cell.config import Cell
from bench.cell.datasets import load_splits
from bench.cell.streaming import Prefetcher, StreamedBatches, batches, streams
from bench.cell.subsets import make_subsets
from bench.errors import BenchError
from tests.conftest import TINY, bench
from tests.test_data import write_folder


def record(folder) -> dict:
    (path,) = Path(folder).glob("*.json")
    return json.loads(path.read_text())


def test_cache_is_a_memory_map_written_atomically(tmp_path):
    cell = Cell(dataset="synthetic", cache_dir=str(tmp_path))
    splits = load_splits(cell)
    (folder,) = [p for p in tmp_path.iterdir()]  # no temporary folder left beside it
    assert folder.name == "synthetic-v2-32px"
    assert sorted(p.name for p in folder.iterdir()) == [
        "classes.json",
        "test_x.npy",
        "test_y.npy",
        "train_x.npy",
        "train_y.npy",
    ]
    assert all(isinstance(m, np.memmap) for m in splits.maps) and len(splits.maps) == 2
    on_disk = np.load(folder / "train_x.npy", mmap_mode="r")
    assert splits.train_x.data_ptr() == on_disk.__array_interface__["data"][0] or np.array_equal(
        splits.train_x[:5].numpy(), on_disk[:5]
    )
    before = splits.train_x[100:164].clone()
    splits.release()  # pages unmapped: a later read maps them back from the file, unchanged
    assert torch.equal(splits.train_x[100:164], before)
    (folder / "train_x.npy").write_bytes(b"damaged")
    again = load_splits(cell)  # a damaged cache is rebuilt
    assert torch.equal(again.train_x[100:164], before)


@pytest.mark.parametrize("augment_pad", [0, 4])
def test_streamed_batches_equal_device_batches(augment_pad):
    cell = Cell(dataset="synthetic", n_train=500)
    s = load_splits(cell)
    sub = make_subsets(cell, s.train_y, s.num_classes)
    kw = dict(shuffle=True, augment_pad=augment_pad, seed=3, drop_last=True)
    whole = DeviceBatches(s.train_x[sub.train_idx], s.train_y[sub.train_idx], 64, **kw)
    streamed = StreamedBatches(
        s.train_x, s.train_y, 64, device=torch.device("cpu"), rows=sub.train_idx, **kw
    )
    assert len(whole) == len(streamed) == 500 // 64
    for _ in range(2):  # two epochs: the generator moves on alike
        pairs = list(zip(whole, streamed, strict=True))
        for (xa, ya), (xb, yb) in pairs:
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # evaluation order: unshuffled, the last short batch kept
    whole = batches(
        s.test_x, s.test_y, None, 300, device=torch.device("cpu"), stream=False, shuffle=False
    )
    streamed = batches(
        s.test_x, s.test_y, None, 300, device=torch.device("cpu"), stream=True, shuffle=False
    )
    got = [torch.cat(t) for t in zip(*streamed, strict=True)]
    assert torch.equal(got[0], s.test_x) and torch.equal(got[1], s.test_y)
    assert [len(y) for _, y in whole] == [len(y) for _, y in streamed] == [300, 300, 300, 100]


def mapped_kb(path: Path) -> int:
    """Resident kB of this process's mappings of ``path`` (Linux: /proc/self/smaps)."""
    total, current = 0, None
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if "-" in head[0] and not head[0].endswith(":"):  # a mapping's first line: its range
            current = head[5] if len(head) > 5 else None
        elif head[0] == "Rss:" and current == str(path):
            total += int(head[1])
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="Linux only")
def test_streamed_rows_are_read_from_the_file_not_faulted_into_the_process(tmp_path):
    """A streamed epoch maps none of the set's pages into the process, and yields the batches
    the in-memory path yields."""
    cell = Cell(dataset="synthetic", n_train=1500, cache_dir=str(tmp_path))
    s = load_splits(cell)
    sub = make_subsets(cell, s.train_y, s.num_classes)
    kw = dict(shuffle=True, augment_pad=4, seed=3, drop_last=True)
    whole = DeviceBatches(s.train_x[sub.train_idx].clone(), s.train_y[sub.train_idx], 64, **kw)
    cpu = torch.device("cpu")
    streamed = batches(
        s.train_x, s.train_y, sub.train_idx, 64, device=cpu, stream=True, maps=s.maps, **kw
    )
    file = next(tmp_path.glob("*/train_x.npy"))
    s.release()
    assert mapped_kb(file) == 0
    for (xa, ya), (xb, yb) in zip(whole, streamed, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert mapped_kb(file) == 0  # read into the batches' own memory, not through the map
    through_map = batches(s.train_x, s.train_y, sub.train_idx, 64, device=cpu, stream=True, **kw)
    list(through_map)
    assert mapped_kb(file) > 0  # what the check above would see without the file reads


def test_channel_stats_read_a_map_in_chunks():
    s = load_splits(Cell(dataset="synthetic"))
    idx = torch.randperm(len(s.train_y))[:2500]
    released = []
    mean, std = channel_stats(s.train_x, idx, chunk=300, release=lambda: released.append(1))
    assert len(released) == 9  # after each chunk of 300: the pages read are let go as it goes
    xf = s.train_x[idx].float() / 255
    assert torch.allclose(mean, xf.mean(dim=(0, 2, 3)), atol=1e-5)
    assert torch.allclose(std, xf.std(dim=(0, 2, 3)), atol=1e-5)


def test_prefetcher_stops_early_and_passes_errors_on():
    def numbers():
        yield from range(1000)

    p = Prefetcher(numbers(), depth=2)
    assert [x for _, x in zip(range(5), p, strict=False)] == [0, 1, 2, 3, 4]
    p.close()  # the reader left early: the thread ends instead of blocking
    assert not p.thread.is_alive()

    def broken():
        yield 1
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        list(Prefetcher(broken()))


def test_the_budget_picks_the_path(capsys):
    cell = Cell(dataset="synthetic", n_train=400)
    s = load_splits(cell)
    sub = make_subsets(cell, s.train_y, s.num_classes)
    need_mb = (400 + len(sub.val_idx) + len(s.test_y)) * 3 * 32 * 32 / 2**20  # ~5 MB
    cpu = torch.device("cpu")
    assert not streams(cell.replace(data_budget_mb=need_mb * 2), s, sub, cpu)
    assert streams(cell.replace(data_budget_mb=need_mb / 2), s, sub, cpu)
    assert "streaming" in capsys.readouterr().err
    assert streams(cell.replace(data_in_memory="never"), s, sub, cpu)
    assert not streams(cell.replace(data_in_memory="always", data_budget_mb=0.01), s, sub, cpu)
    assert not streams(cell, s, sub, cpu)  # auto: a few MB fit in any machine's free memory


@pytest.mark.slow  # trains a real cell
def test_data_larger_than_the_budget_trains_as_it_would_in_memory(in_tmp, capfd):
    short = [*TINY, "--steps=12", "--evals=2"]
    assert bench("run", *short, "--results_dir=whole/runs") == 0
    assert "streaming" not in capfd.readouterr().err
    assert bench("run", *short, "--data_budget_mb=1", "--results_dir=streamed/runs") == 0
    assert "streaming" in capfd.readouterr().err
    whole, streamed = record(in_tmp / "whole/runs"), record(in_tmp / "streamed/runs")
    assert whole["run_id"] == streamed["run_id"]  # where the data lives is not what is trained
    assert streamed["status"] == "completed" and streamed["metrics"]["steps"] == 12
    assert streamed["timing"]["train_images_per_s"] > 0  # trained here, not resumed
    # the same batches in the same order: the same training, step for step
    for key in ("train_loss", "test_error", "test_loss", "val_error"):
        assert streamed["metrics"][key] == pytest.approx(whole["metrics"][key], rel=1e-4), key


# ---------------------------------------------------------------------- Hugging Face datasets
datasets = pytest.importorskip("datasets")


def hf_dataset(n_train=60, n_test=30, size=12):
    """A DatasetDict of real PNG-encoded images, a ClassLabel column and a class colour."""
    rng = np.random.default_rng(0)
    features = datasets.Features(
        {"img": datasets.Image(), "fine_label": datasets.ClassLabel(names=["red", "green", "blue"])}
    )

    def split(n):
        images, labels = [], []
        for i in range(n):
            arr = rng.integers(0, 120, (size + i % 3, size, 3), dtype=np.uint8)
            arr[..., i % 3] = 255
            images.append(PILImage.fromarray(arr))
            labels.append(i % 3)
        return datasets.Dataset.from_dict({"img": images, "fine_label": labels}, features=features)

    return datasets.DatasetDict({"train": split(n_train), "test": split(n_test)})


HF_ARGS = ["--dataset=hf", "--hf_image_column=img", "--hf_label_column=fine_label", "--img_size=16"]


@pytest.mark.slow  # trains a real cell
def test_hf_dataset_saved_to_disk_trains(in_tmp):
    hf_dataset().save_to_disk(str(in_tmp / "hfdata"))
    args = [a for a in TINY if not a.startswith(("--dataset", "--n_train", "--steps"))]
    argv = ["run", *args, *HF_ARGS, f"--data_dir={in_tmp / 'hfdata'}", "--n_train=40"]
    assert bench(*argv, "--steps=20", "--results_dir=out") == 0
    rec = record(in_tmp / "out")
    assert rec["status"] == "completed" and rec["metrics"]["steps"] == 20
    assert rec["data"]["num_classes"] == 3 and rec["data"]["n_test"] == 30
    assert rec["metrics"]["test_error"] < 0.5  # the class colour is learnable; chance is 2/3
    cell = Cell(**{k: v for k, v in rec["config"].items()})
    s = load_splits(cell)
    red = s.train_x[s.train_y == 0].float().mean(dim=(0, 2, 3))
    assert red[0] > 200 and red[1] < 150  # images and labels kept together


def test_hf_parquet_files_and_image_folders(tmp_path):
    ds = hf_dataset(n_train=12, n_test=6)
    (tmp_path / "pq").mkdir()
    for name, split in ds.items():
        split.to_parquet(str(tmp_path / "pq" / f"{name}.parquet"))
    base = dict(dataset="hf", hf_image_column="img", hf_label_column="fine_label", img_size=8)
    s = load_splits(Cell(**base, data_dir=str(tmp_path / "pq"), cache_dir=str(tmp_path / "c")))
    assert s.train_x.shape == (12, 3, 8, 8) and s.classes == ["red", "green", "blue"]
    assert s.test_y.tolist() == [0, 1, 2, 0, 1, 2]
    folder = write_folder(
        tmp_path / "imgs"
    )  # train/<class>/*, test/<class>/*: the imagefolder builder
    s = load_splits(Cell(dataset="hf", data_dir=str(folder), img_size=8, cache_dir=str(tmp_path)))
    assert s.train_x.shape == (18, 3, 8, 8) and s.classes == ["cat", "dog", "frog"]


@pytest.mark.parametrize("field", ["hf_image_column", "hf_label_column"])
def test_a_bad_column_is_one_line_naming_the_field(tmp_path, field):
    hf_dataset(n_train=6, n_test=3).save_to_disk(str(tmp_path / "hfdata"))
    args = [*TINY, *HF_ARGS, f"--data_dir={tmp_path / 'hfdata'}", "--n_train=6", f"--{field}=nope"]
    proc = subprocess.run(
        [sys.executable, "-m", "bench.cli", "run", *args, "--results_dir=out"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=os.environ,
    )
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert f"{field}='nope'" in lines[0] and "img" in lines[0]  # names the columns there are
    assert not (tmp_path / "out").exists()
    with pytest.raises(BenchError, match="train split"):
        hf_dataset(n_train=3)["train"].save_to_disk(str(tmp_path / "one"))  # one split only
        load_splits(Cell(dataset="hf", data_dir=str(tmp_path / "one")))
