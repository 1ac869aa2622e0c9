"""Progress lines of a training run in a log (stderr not a terminal)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np


def duration(seconds: float) -> str:
    """A duration for people: 42s, 6m21s, 2h05m."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """Progress lines for logs (stderr not a terminal): step, mean loss since the last line, speed
    since the last line and the time left at the average speed of this process."""

    def __init__(self, first: int, last: int, log: Callable[[str], None]) -> None:
        self.first, self.last, self.log = first, last, log
        self.start = self.since = time.perf_counter()
        self.step_since = first
        self.losses: list[float] = []

    def add(self, loss: float) -> None:
        self.losses.append(loss)

    def report(self, step: int) -> None:
        now = time.perf_counter()
        speed = (step - self.step_since) / max(now - self.since, 1e-9)
        average = (step - self.first) / max(now - self.start, 1e-9)
        left = duration((self.last - step) / average) if average > 0 else "?"
        loss = float(np.mean(self.losses)) if self.losses else math.nan
        self.log(
            f"step {step}/{self.last} ({100 * step / self.last:.0f}%): loss {loss:.4f}, {speed:.2f} it/s, ETA {left}"
        )
        self.since, self.step_since, self.losses = now, step, []
