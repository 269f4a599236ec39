"""Shared fixtures: a dataset cache shared by the whole session, tiny-cell arguments."""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from bench.cell.config import Cell
from bench.cli import main as cli_main

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import sweeps  # wandb's own sweep engine

REPO = Path(__file__).resolve().parent.parent
CIFAR = (REPO.parent / "shared" / "data" / "cifar10-jpeg").resolve()

# A cell small enough to train in seconds on two CPU cores.
TINY = [
    "--dataset=synthetic",
    "--family=vit",
    "--size=xxs",
    "--n_train=400",
    "--batch_size=64",
    "--steps=40",
    "--wandb=disabled",
    "--progress=false",
]


@pytest.fixture(autouse=True, scope="session")
def _session_env(tmp_path_factory):
    os.environ["BENCH_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ["WANDB_SILENT"] = "true"
    os.environ.pop("WANDB_MODE", None)
    # One thread count for every cell the tests train, whatever else runs on the machine: runs
    # compared bit for bit must split their float sums alike (tests/test_threads.py unsets it).
    os.environ.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))
    yield


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run from an empty folder, as a user would from a fresh checkout."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def bench(*args: str) -> int:
    """The ``bench`` command in this process: its exit code."""
    return cli_main(list(args))


def shipped_sweep_cells(name: str) -> tuple[dict, list[Cell]]:
    """A sweep YAML under sweeps/, checked as a study needs it, and its cells from wandb's engine.

    Checks: a grid of flat, scalar parameters running ``bench run ${args}``, minimising
    ``val/error``, with no schema violation in the engine's eyes.
    """
    cfg = yaml.safe_load((REPO / "sweeps" / name).read_text())
    assert cfg["method"] == "grid" and cfg["command"] == ["bench", "run", "${args}"]
    assert cfg["metric"] == {"name": "val/error", "goal": "minimize"}
    assert all(set(v) <= {"value", "values"} for v in cfg["parameters"].values())  # flat
    assert not sweeps.schema_violations_from_proposed_config(cfg)
    runs = sweeps.next_runs(cfg, [], validate=True, n=1000)
    assert runs[-1] is None  # the engine has no more cells than these
    cells = [Cell.from_dict({k: v["value"] for k, v in r.config.items()}) for r in runs[:-1]]
    return cfg, cells


@contextlib.contextmanager
def working_dir(path):
    """chdir for fixtures wider than one test (monkeypatch.chdir is function-scoped)."""
    cwd = os.getcwd()
    os.chdir(path)
    try:
        yield Path(path)
    finally:
        os.chdir(cwd)
