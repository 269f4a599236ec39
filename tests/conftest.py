"""Shared fixtures: a dataset cache shared by the whole session, tiny-cell arguments."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CIFAR = (REPO.parent / "shared" / "data" / "cifar10-jpeg").resolve()

# A cell small enough to train in seconds on two CPU cores.
TINY = ["--dataset=synthetic", "--family=vit", "--size=xxs", "--n_train=400", "--batch_size=64",
        "--steps=40", "--wandb=disabled", "--progress=false"]


@pytest.fixture(autouse=True, scope="session")
def _session_env(tmp_path_factory):
    os.environ["BENCH_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ["WANDB_SILENT"] = "true"
    os.environ.pop("WANDB_MODE", None)
    yield


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run from an empty folder, as a user would from a fresh checkout."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def bench(*args: str) -> int:
    from bench.cli import main

    return main(list(args))


@contextlib.contextmanager
def working_dir(path):
    """chdir for fixtures wider than one test (monkeypatch.chdir is function-scoped)."""
    cwd = os.getcwd()
    os.chdir(path)
    try:
        yield Path(path)
    finally:
        os.chdir(cwd)
