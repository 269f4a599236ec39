"""Cells that die with their runner, and cells of other runners on this machine.

A cell runs in its own session (so an interrupt reaches its whole process group) but must not
outlive the runner that started it: a killed runner's orphans would keep their locks and train on
top of the next runner's cells. On Linux each cell asks the kernel for SIGKILL when its parent
dies (``prctl(PR_SET_PDEATHSIG)``); its checkpoints are written atomically, so a kill is safe.

A cell's lock file names the host and the cell's pid; a runner counts the live cells of other
runners on its own host against its slots (they share its cores and GPUs). Cells on other
hosts (a shared filesystem) do not count.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

PR_SET_PDEATHSIG = 1


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child die with this process (Linux; None elsewhere)."""
    if not sys.platform.startswith("linux"):
        return None
    parent = os.getpid()

    def preexec() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the runner died before prctl took effect
            os._exit(137)

    return preexec


def write_owner(fd: int, pid: int) -> None:
    """The lock file's content: which host and process holds it."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.uname().nodename} {pid}\n".encode(), 0)


def foreign_cells_here(lock_dirs: Iterable[Path], own: set[int]) -> int:
    """Cells on this host, not started by this runner, whose process is alive."""
    host, n = os.uname().nodename, 0
    for folder in lock_dirs:
        for lock in folder.glob("*.lock") if folder.is_dir() else ():
            try:
                owner_host, pid_text = lock.read_text().split()
                pid = int(pid_text)
            except (OSError, ValueError):
                continue
            if owner_host == host and pid not in own and pid != os.getpid() and _alive(pid):
                n += 1
    return n


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
