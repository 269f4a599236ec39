"""How a runner shows where a grid stands: a live bar in a terminal, plain lines elsewhere.

The ETA is planned, not extrapolated from cells per second: each running cell's time left comes
from its own progress (the last ``step S/T`` in its log), each queued cell takes its estimated
work at the seconds per unit of work the cells done took (or, before any is done, the running
cells' projections), and they are laid out on the free slots. When nothing says how long a cell
takes, the ETA is ``?``, never 0s.
"""

from __future__ import annotations

import heapq
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from bench.cell.progress import parse_rate, parse_step
from bench.clock import fmt_duration

HEARTBEAT_S = 30.0  # plain output: a state line at least this often while cells run
REFRESH_S = 1.0  # live bar: redrawn at most this often (elapsed time and ETA tick)
LOG_TAIL = 4096  # bytes of a cell's log read for its last progress line
TRUSTED = 0.05  # the fraction of its steps after which a cell's own progress projects its end


@dataclass
class GridState:
    done: int
    total: int | None
    running: int
    failed: int
    queued: int
    elapsed: float
    eta: float | None
    images_per_s: float | None = None  # the running cells' together (None: none reports yet)

    def line(self) -> str:
        total = f"/{self.total}" if self.total else ""
        return (
            f"{self.done}{total} done, {self.running} running, {self.failed} failed, "
            f"{self.queued} queued; {self.timing()}"
        )

    def timing(self) -> str:
        rate = f", {self.images_per_s:,.0f} img/s" if self.images_per_s is not None else ""
        eta = f", ETA {fmt_duration(self.eta)}" if self.eta is not None else ""
        return f"elapsed {fmt_duration(self.elapsed)}{rate}{eta}"


class GridDisplay:
    def __init__(self, label: str, total: int | None, out: TextIO | None = None, live=None):
        self.label, self.out = label, out or sys.stderr
        self.live = _isatty(self.out) if live is None else live
        self.bar = None
        self.last = 0.0
        if self.live:
            self.bar = tqdm(
                total=total,
                desc=label,
                unit="cell",
                file=self.out,
                dynamic_ncols=True,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} cells{postfix}",
            )

    def say(self, msg: str) -> None:
        """An event (a cell started, done, failed): above the bar, or a plain line."""
        if self.bar is not None:
            self.bar.write(f"[{self.label}] {msg}", file=self.out)
        else:
            print(f"[{self.label}] {msg}", file=self.out, flush=True)

    def due(self, changed: bool) -> bool:
        """Whether to draw now: on a change, else every REFRESH_S (bar) or HEARTBEAT_S (lines)."""
        every = REFRESH_S if self.bar is not None else HEARTBEAT_S
        return changed or time.time() - self.last >= every

    def show(self, state: GridState) -> None:
        self.last = time.time()
        if self.bar is None:
            self.say(state.line())
            return
        self.bar.n = state.done + state.failed  # settled cells: the bar ends full
        timing = state.timing() + ("" if state.eta is not None else ", ETA ?")
        self.bar.set_postfix_str(
            f"{state.done} done, {state.running} running, {state.failed} failed, "
            f"{state.queued} queued, {timing}",
            refresh=True,
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _isatty(out: TextIO) -> bool:
    try:
        return out.isatty()
    except (AttributeError, ValueError):
        return False


def cell_progress(log: Path) -> tuple[float | None, float | None]:
    """How far a running cell is and its images/s, from the last progress line of its log (one
    read of its tail; None: no line yet)."""
    tail = _tail(log)
    found = parse_step(tail)
    return (found[0] / found[1] if found and found[1] else None), parse_rate(tail)


def total_rate(rates: list[float | None]) -> float | None:
    """The running cells' images/s together: those that report one (None: none does yet)."""
    known = [r for r in rates if r is not None]
    return sum(known) if known else None


def _tail(log: Path) -> str:
    try:
        with open(log, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - LOG_TAIL))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def plan_eta(
    running: list[tuple[float, float | None, float | None, str | None]],
    queued: list[tuple[float | None, str | None]],
    done: list[tuple[float, float | None, str | None]],
    slots: int,
) -> float | None:
    """Seconds until the last cell ends. ``running``: (elapsed, fraction done or None, cost,
    model) per running cell; ``queued``: each queued cell's (cost, model), in queue order;
    ``done``: (wall, cost, model) of the cells finished. A cost
    (:func:`bench.study.estimate.relative_cost`, None: unknown) is a cell's work: its images seen
    at its model's speed on the reference GPU. The seconds per unit of cost that the cells done
    took (before any is done: the running cells' projections) turn a queued cell's cost into its
    time, so a grid whose budgets grow with n is planned cell by cell, not as so many average
    cells. The rate is measured per model where a cell of that model is done, since models rank
    differently on other machines (on a CPU a ResNet runs twice as fast as a ViT of its size;
    on the reference GPU both are launch-bound). A model no finished cell has priced takes its
    running cells' projections where they have one (a grid that finishes its fast ResNets first
    would otherwise plan its ViTs at the ResNets' pace), else the rate of all.
    A cell without a cost takes the average wall. A cell less than ``TRUSTED`` of the way
    through is planned as if it had no progress line: its elapsed time is mostly start-up
    (imports, decoding the data), which projecting by 1/f would multiply many times over.
    None when nothing tells a cell's length."""
    running = [(e, f if f and f >= TRUSTED else None, c, m) for e, f, c, m in running]
    projected = [(e / f, c, m) for e, f, c, m in running if f]
    sample = done or projected
    avg = sum(w for w, _, _ in sample) / len(sample) if sample else None
    rates = _rates(sample)
    if done:
        for model, rate in _rates(projected).items():
            if model is not None:
                rates.setdefault(model, rate)

    def length(cost: float | None, model: str | None) -> float | None:
        rate = rates.get(model, rates.get(None))
        return cost * rate if cost and rate else avg

    left = []
    for elapsed, f, cost, model in running:
        if f:
            left.append(elapsed * (1 - f) / f)
            continue
        total = length(cost, model)
        if total is None or total <= elapsed:  # past its expected length, no progress line
            return None
        left.append(total - elapsed)
    lengths = [length(c, m) for c, m in queued]
    if None in lengths:
        return None
    free = sorted(left) + [0.0] * max(0, slots - len(left))
    heapq.heapify(free)
    for v in lengths:
        heapq.heappush(free, heapq.heappop(free) + v)
    return max(free) if free else 0.0


def _rates(sample: list[tuple[float, float | None, str | None]]) -> dict[str | None, float]:
    """Seconds per unit of cost: per model of the cells priced, and over all of them (key None)."""
    priced = [(w, c, m) for w, c, m in sample if c]
    groups: dict[str | None, list[tuple[float, float]]] = {None: [(w, c) for w, c, _ in priced]}
    for w, c, m in priced:
        if m is not None:
            groups.setdefault(m, []).append((w, c))
    return {k: sum(w for w, _ in v) / sum(c for _, c in v) for k, v in groups.items() if v}
