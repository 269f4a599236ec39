"""The software a record was produced with (versions, the project's git commit), and whether this
machine holds W&B credentials."""

from __future__ import annotations

import netrc
import os
import platform
import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path
from urllib.parse import urlparse


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


COMMIT_VAR = "BENCH_GIT_COMMIT"  # set by device scripts and SLURM jobs, where no checkout is


def git_commit() -> str | None:
    """The project's commit: ``BENCH_GIT_COMMIT`` when set, else asked of git."""
    return os.environ.get(COMMIT_VAR, "").strip() or _git_head()


@cache
def _git_head() -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment() -> dict:
    return {
        "python": platform.python_version(),
        "torch": _version("torch"),
        "timm": _version("timm"),
        "lightning": _version("pytorch-lightning") or _version("lightning"),
        "wandb": _version("wandb"),
        "bench": _version("bench"),
        "git_commit": git_commit(),
    }


def has_credentials() -> bool:
    """A W&B API key in the environment or in ~/.netrc for the W&B host (never prompts)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False
