"""Flush denormal floats to zero on the CPU, on every thread that trains.

Under AdamW with weight decay, weights whose gradient has died shrink by ``1 - lr * wd`` a step
and pass through the denormal range (below 1.2e-38) on their way to zero. x86 cores compute on
denormals through a slow path: a step with half its weights denormal runs 13x (ResNet xs) to 70x
(ViT xs) slower (``benchmarks/denormals.py``), so a cell at a too-high learning rate slows down
as its dead units decay. Flushing (FTZ/DAZ) turns those values into the zero they are heading
for.

The flag lives in each thread's MXCSR register and a thread inherits it when it is created, so
:func:`flush` must run before the process's first parallel torch op starts the intra-op thread
pool: the training entry points (``bench run``, the grid's worker, ``bench finetune``) call it
first. :func:`every_thread_flushes` says whether it took on every thread; records carry it.
"""

from __future__ import annotations

import torch

SMALL, SCALE = 1e-30, 1e-10  # their product, 1e-40, is denormal: 0 where the thread flushes
GRAIN = 32768  # at::internal::GRAIN_SIZE: elements an intra-op thread is given at least


def flush() -> bool:
    """Turn flushing on for this thread and those it creates from now on; False where the CPU
    has no such mode."""
    return torch.set_flush_denormal(True)


def every_thread_flushes() -> bool:
    """Whether each intra-op thread flushes: one elementwise product, large enough that every
    thread computes a share of it, must come out all zeros."""
    n = 4 * GRAIN * torch.get_num_threads()
    out = torch.full((n,), SMALL) * SCALE
    return not bool(out.any())
