"""Hosts whose clocks disagree, in one process: what a module reads as `time` on another host."""
from __future__ import annotations

import time


class SkewedClock:
    """`time` as a host whose clock is `skew` seconds off sees it: its wall clock moved, its monotonic clock and
    its sleeps as they are."""

    def __init__(self, skew: float):
        self.skew = skew

    def time(self) -> float:
        return time.time() + self.skew

    def __getattr__(self, name: str) -> object:
        return getattr(time, name)
