"""Where a cell's wall time goes: fitting, validation, checkpoint writes and the test.

A short cell can spend more time outside its training steps than in them (validation passes,
fsynced checkpoints, the test), and packing or more processes per GPU only speed up the steps.
Each record's ``timing.phases_s`` says how the time split, so a slow study shows which part to fix.
For a packed cell the seconds are the whole pack's (``execution.pack`` members shared them).
"""

from __future__ import annotations

import contextlib
import time

import pytorch_lightning as pl

PHASES = ("fit_s", "validation_s", "checkpoint_s", "test_s")


class Stopwatch:
    """Seconds per phase, added up over the calls timed with :meth:`time`."""

    def __init__(self):
        self.seconds = dict.fromkeys(PHASES, 0.0)

    @contextlib.contextmanager
    def time(self, phase: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - t0

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] += seconds

    def to_dict(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in self.seconds.items()}


class ValidationClock(pl.Callback):
    """Times Lightning's validation passes during fit (not the sanity check) into ``watch``."""

    def __init__(self, watch: Stopwatch):
        self.watch, self.t0 = watch, None

    def on_validation_start(self, trainer, module) -> None:
        self.t0 = None if trainer.sanity_checking else time.perf_counter()

    def on_validation_end(self, trainer, module) -> None:
        if self.t0 is not None:
            self.watch.add("validation_s", time.perf_counter() - self.t0)
            self.t0 = None
