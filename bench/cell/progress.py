"""Progress of a cell: steps, images/s, loss, best val error, ETA.

In a terminal, a live tqdm bar; elsewhere (logs, CI, SLURM, a cell under ``bench grid``) a plain
line at most every ten seconds, which :func:`parse_step` and :func:`parse_rate` read back (the
grid's ETA and images/s use them).
The ETA is the steps left at the average rate since training began, validation included.
"""

from __future__ import annotations

import logging
import math
import re
import sys
import time
import warnings

import pytorch_lightning as pl
from tqdm import tqdm

from bench.clock import fmt_duration

STEP = re.compile(r"\bstep (\d+)/(\d+)\b")
RATE = re.compile(r"\| ([\d,]+) img/s\b")


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
    """A live bar on a terminal (``live``: default, whether stderr is one), else one line at most
    every ``every_s`` seconds (never a per-step refresh)."""

    def __init__(
        self,
        name: str,
        total_steps: int,
        batch_size: int,
        every_s: float = 10.0,
        live: bool | None = None,
    ):
        self.name, self.total, self.batch = name, total_steps, batch_size
        self.every_s = every_s
        self.live = sys.stderr.isatty() if live is None else live
        self.start = self.last = None
        self.start_step = 0
        self.best_val = None
        self.bar = None

    def on_train_start(self, trainer, module):
        self.start = self.last = time.perf_counter()
        self.start_step = trainer.global_step
        if self.live:
            self.bar = tqdm(
                total=self.total,
                initial=self.start_step,
                desc=self.name,
                unit="step",
                file=sys.stderr,
                dynamic_ncols=True,
                smoothing=0,  # the average since the start: validation time counts in the ETA
                mininterval=0.5,
            )

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        now = time.perf_counter()
        step = trainer.global_step
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            if now - self.last >= 1.0 or step >= self.total:  # the postfix costs a host sync
                self.last = now
                self.bar.set_postfix_str(self.postfix(module, step, now), refresh=False)
            return
        if now - self.last < self.every_s and step < self.total:
            return
        self.last = now
        rate = (step - self.start_step) / max(now - self.start, 1e-9)
        eta = (self.total - step) / rate if rate > 0 else None
        print(
            f"[{self.name}] step {step}/{self.total} ({step / self.total:.0%}) | "
            f"{self.postfix(module, step, now)} | ETA {fmt_duration(eta) if eta is not None else '?'}",
            file=sys.stderr,
            flush=True,
        )

    def postfix(self, module, step: int, now: float) -> str:
        rate = (step - self.start_step) / max(now - self.start, 1e-9)
        parts = [f"{rate * self.batch:,.0f} img/s"]
        loss = module.last_train_loss
        if not math.isnan(loss):
            parts.append(f"loss {loss:.3f}")
        if self.best_val is not None:
            parts.append(f"best val err {self.best_val:.1%}")
        return " | ".join(parts)

    def on_validation_end(self, trainer, module):
        err = trainer.callback_metrics.get("val/error")
        if err is not None:
            err = float(err)
            self.best_val = err if self.best_val is None else min(self.best_val, err)

    def on_train_end(self, trainer, module):
        self._close()

    def on_exception(self, trainer, module, exception):
        self._close()

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def parse_step(text: str) -> tuple[int, int] | None:
    """The last ``step S/T`` of a cell's plain progress lines (its log), or None."""
    found = STEP.findall(text)
    return (int(found[-1][0]), int(found[-1][1])) if found else None


def parse_rate(text: str) -> float | None:
    """The images/s of a cell's last plain progress line (since its training began), or None."""
    found = RATE.findall(text)
    return float(found[-1].replace(",", "")) if found else None
