"""A quiet progress line for long runs: steps, images/s, loss, best val error, ETA."""

from __future__ import annotations

import logging
import math
import sys
import time
import warnings

import pytorch_lightning as pl

from bench.clock import fmt_duration


def quiet_lightning() -> None:
    """Lightning's banners and tips drown the progress lines; keep its warnings and errors.

    Called after Lightning is imported, since importing it resets its loggers' levels.
    """
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in (
        r".*isinstance\(treespec, LeafSpec\).*",
        ".*does not have many workers.*",
        ".*litlogger.*",
        ".*LitLogger.*",
    ):
        warnings.filterwarnings("ignore", message=pattern)


class Progress(pl.Callback):
    """Prints one line at most every ``every_s`` seconds (never a per-step refresh)."""

    def __init__(self, name: str, total_steps: int, batch_size: int, every_s: float = 10.0):
        self.name, self.total, self.batch = name, total_steps, batch_size
        self.every_s = every_s
        self.start = self.last = None
        self.start_step = 0
        self.best_val = None

    def on_train_start(self, trainer, module):
        self.start = self.last = time.perf_counter()
        self.start_step = trainer.global_step

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        now = time.perf_counter()
        step = trainer.global_step
        if now - self.last < self.every_s and step < self.total:
            return
        self.last = now
        done = step - self.start_step
        rate = done / max(now - self.start, 1e-9)
        eta = (self.total - step) / rate if rate > 0 else float("inf")
        val = f" | best val err {self.best_val:.1%}" if self.best_val is not None else ""
        loss = module.last_train_loss
        loss = "" if math.isnan(loss) else f" | loss {loss:.3f}"
        print(
            f"[{self.name}] step {step}/{self.total} ({step / self.total:.0%}) | "
            f"{rate * self.batch:,.0f} img/s{loss}{val} | ETA {fmt_duration(eta)}",
            file=sys.stderr,
            flush=True,
        )

    def on_validation_end(self, trainer, module):
        err = trainer.callback_metrics.get("val/error")
        if err is not None:
            err = float(err)
            self.best_val = err if self.best_val is None else min(self.best_val, err)
