"""One trainer per cell: an exclusive ``fcntl`` lock on ``<records>/.locks/<run_id>.lock``.

The grid runner and the workers take a cell's lock before training it. A ``bench run`` started
by the runner inherits the runner's lock (the open file is passed down, its number in
:data:`LOCK_FD_ENV`); one started by hand or by a W&B agent takes the lock itself, so two
processes never train one cell into the same checkpoint folder. The file names the host and
process that hold it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_FD_ENV = "BENCH_CELL_LOCK_FD"  # set by the runner: the lock it holds for this process


def try_lock(path: Path) -> int | None:
    """An exclusive, non-blocking lock; the open fd holds it (None: someone else holds it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.uname().nodename} {os.getpid()}\n".encode())
    return fd


def release(fd: int) -> None:
    """Let go of a lock and of the name in its file: a lock left naming a live process (a runner
    that only looked, or adopted the cell) would count as a cell that process still trains."""
    try:
        os.ftruncate(fd, 0)
    except OSError:  # the lock must go even where the name cannot
        pass
    finally:
        os.close(fd)


def is_locked(path: Path) -> bool:
    fd = try_lock(path)
    if fd is None:
        return True
    release(fd)
    return False


def holder(path: Path) -> str:
    """Who holds the lock, as its file says (``host pid``), or ``unknown``."""
    try:
        return " ".join(path.read_text().split()) or "unknown"
    except OSError:
        return "unknown"


def inherited(path: Path) -> bool:
    """Whether the process that started this one holds ``path`` for it (:data:`LOCK_FD_ENV`)."""
    fd = os.environ.get(LOCK_FD_ENV, "")
    try:
        ours, lock = os.fstat(int(fd)), os.stat(path)
    except (OSError, ValueError):
        return False
    return (ours.st_dev, ours.st_ino) == (lock.st_dev, lock.st_ino)
