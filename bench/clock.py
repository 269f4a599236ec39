"""Time as the project prints and records it: UTC timestamps and short durations."""

from __future__ import annotations

import math
from datetime import datetime, timezone


def utc_now() -> str:
    """An ISO-8601 UTC timestamp to the second, as records store them."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def fmt_duration(seconds: float) -> str:
    """``42s``, ``3m07s``, ``2h05m``: rounded to the second, never negative; ``?`` when unknown."""
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(max(0.0, seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
