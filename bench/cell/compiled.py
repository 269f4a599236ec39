"""torch.compile for a cell, with its compiled graphs cached on disk across cells and processes.

Inductor's FX-graph and autotuning caches live in ``TORCHINDUCTOR_CACHE_DIR``; pointing it at the
bench cache (``cache_dir``/``BENCH_CACHE``/``~/.cache/bench``, subfolder ``inductor``) makes the
second cell of one shape, in a worker or a fresh process, load the compiled kernels instead of
compiling again. A ``TORCHINDUCTOR_CACHE_DIR`` set by the user wins.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn


def inductor_cache(cache_dir: str | None) -> Path:
    root = cache_dir or os.environ.get("BENCH_CACHE") or Path.home() / ".cache" / "bench"
    return Path(root) / "inductor"


def compile_model(model: nn.Module, mode: str | None, cache_dir: str | None = None) -> nn.Module:
    """``torch.compile(model, mode=mode)`` (``None``/``default``: the default mode)."""
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        path = inductor_cache(cache_dir)
        path.mkdir(parents=True, exist_ok=True)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)
    return torch.compile(model, mode=None if mode in (None, "default") else mode)
