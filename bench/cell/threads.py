"""How many threads a CPU cell trains on: the cores no other process is using when it starts.

torch gives its intra-op pool one thread per core. When another process keeps one of those cores
busy (a second study, a cell of another grid), one of the pool's threads shares that core with it;
every parallel op waits for its slowest thread, so the whole cell runs at the pace of a
time-shared core: half the speed of one thread alone, or worse (``benchmarks/cpu_contention.py``).
So a CPU cell counts the cores the other processes kept busy over a short sample and trains on
the rest, at least one.

``OMP_NUM_THREADS`` set by the user (or by ``bench grid --workers N``, which splits the cores
between its cells) wins: the pool is then left as it is. The choice is made once, at the start
(a grid starts a process per cell, so each cell sees the load of its own start): a pool resized
mid-cell would split, and so round, the float sums of one step differently from the last.
"""

from __future__ import annotations

import os
import sys
import time

import torch

SAMPLE_S = 0.3  # long enough for ~30 scheduler ticks a core, short beside any cell
# /proc/stat's per-core columns: user nice system idle iowait irq softirq steal (guest is in user)
IDLE_COLUMNS = (3, 4)
COUNTED = 8


def cores() -> list[int]:
    """The cores this process may run on."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # no affinity call on this system
        return list(range(os.cpu_count() or 1))


def core_times(path: str = "/proc/stat") -> dict[int, tuple[int, int]]:
    """Per core, (busy, total) clock ticks since boot; empty where there is no /proc/stat."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return {}
    out = {}
    for line in lines:
        name, *cols = line.split() or [""]
        if name.startswith("cpu") and name[3:].isdigit():
            ticks = [int(c) for c in cols[:COUNTED]]
            idle = sum(ticks[i] for i in IDLE_COLUMNS)
            out[int(name[3:])] = (sum(ticks) - idle, sum(ticks))
    return out


def busy_elsewhere(sample_s: float = SAMPLE_S) -> float | None:
    """How many of our cores other processes kept busy over ``sample_s`` seconds (this process's
    own CPU time taken out); None where the system does not say."""
    mine = cores()
    t0, own0, wall0 = core_times(), time.process_time(), time.monotonic()
    time.sleep(sample_s)
    t1, own1, wall1 = core_times(), time.process_time(), time.monotonic()
    if not t0 or not all(c in t0 and c in t1 for c in mine):
        return None
    busy = sum(t1[c][0] - t0[c][0] for c in mine)
    total = sum(t1[c][1] - t0[c][1] for c in mine)
    if total <= 0:
        return None
    fraction = busy / total  # of all our cores' time, including our own work
    return max(0.0, fraction * len(mine) - (own1 - own0) / (wall1 - wall0))


def pool_size(n_cores: int, busy: float) -> int:
    """The cores left once the busy ones are taken out (a core counts when over half busy)."""
    return max(1, n_cores - int(busy + 0.5))


def size_pool(device: str = "cpu", env: dict[str, str] | None = None) -> dict | None:
    """Set this process's intra-op pool to the free cores (unless OMP_NUM_THREADS says how
    many): {threads, by} (what decided it). None for a cell on a GPU (``device`` as the cell's
    field): its host threads only feed the GPU."""
    if device != "cpu" and torch.cuda.is_available():
        return None
    env = os.environ if env is None else env
    if env.get("OMP_NUM_THREADS"):
        return {"threads": torch.get_num_threads(), "by": "OMP_NUM_THREADS"}
    busy = busy_elsewhere()
    if busy is None:
        return {"threads": torch.get_num_threads(), "by": "default"}
    n_cores = len(cores())
    threads = pool_size(n_cores, busy)
    torch.set_num_threads(threads)
    if threads < n_cores:
        print(
            f"bench: {n_cores - threads} of {n_cores} cores busy with other work; training on "
            f"{threads} thread(s) (OMP_NUM_THREADS sets it)",
            file=sys.stderr,
        )
    return {"threads": threads, "by": "free cores"}
