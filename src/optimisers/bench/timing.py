"""Timing of one step, and a plain-text progress bar.

Every step is timed on its own with :func:`time.perf_counter`; the figure reported is the
median.  Implementations compared in one case are timed *round-robin* (a few rounds, each
giving every implementation a share of the time), so that a change in the machine's load
during the case hits them all alike: on a busy machine only ratios taken this way mean much.
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass

__all__ = ["Budget", "Timing", "measure", "Progress"]


@dataclass(frozen=True)
class Budget:
    """How long to time each implementation of a case.

    ``warmup`` untimed steps first; then at least ``min_steps`` timed steps and at least
    ``min_time`` seconds, stopping at ``max_time`` seconds or ``max_steps`` steps, split
    over ``rounds`` round-robin rounds.
    """

    warmup: int = 3
    min_steps: int = 10
    max_steps: int = 5000
    min_time: float = 0.25
    max_time: float = 3.0
    rounds: int = 3


@dataclass(frozen=True)
class Timing:
    """Seconds per step: the median, the fastest, the quartiles, and how many steps.

    >>> Timing.of([0.3, 0.1, 0.2])
    Timing(median=0.2, best=0.1, q1=0.1, q3=0.3, steps=3)
    """

    median: float
    best: float
    q1: float
    q3: float
    steps: int

    @classmethod
    def of(cls, samples):
        s = sorted(samples)
        if len(s) >= 4:
            q1, _, q3 = statistics.quantiles(s, n=4)
        else:
            q1, q3 = s[0], s[-1]
        return cls(statistics.median(s), s[0], q1, q3, len(s))


def _sample(step, min_steps, min_time, max_time, max_steps, out):
    clock = time.perf_counter
    start = clock()
    n = 0
    while True:
        t0 = clock()
        step()
        t1 = clock()
        out.append(t1 - t0)
        n += 1
        spent = t1 - start
        if n >= max_steps or spent >= max_time or (n >= min_steps and spent >= min_time):
            return


def measure(steps, budget=Budget()):
    """Time every callable of the dict ``steps`` (name -> step): a dict name -> Timing.

    >>> t = measure({"noop": lambda: None}, Budget(warmup=1, min_steps=5, min_time=0))
    >>> t["noop"].steps >= 5
    True
    """
    rounds = max(1, budget.rounds)
    samples = {k: [] for k in steps}
    for f in steps.values():
        for _ in range(budget.warmup):
            f()
    for _ in range(rounds):
        for k, f in steps.items():
            _sample(f, -(-budget.min_steps // rounds), budget.min_time / rounds,
                    budget.max_time / rounds, -(-budget.max_steps // rounds), samples[k])
    return {k: Timing.of(v) for k, v in samples.items()}


class Progress:
    """``[#####.....] 12/40  adam float32 1e7 x1 t2`` on stderr, redrawn in place.

    Draws nothing when ``enabled`` is false.  Plain text, no dependency."""

    def __init__(self, total, enabled=True, stream=None, width=28):
        self.total = max(1, total)
        self.done = 0
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self._last = 0

    def show(self, label=""):
        """Redraw with ``label`` naming what runs now."""
        if not self.enabled:
            return
        filled = int(self.width * min(self.done, self.total) / self.total)
        line = (f"\r[{'#' * filled}{'.' * (self.width - filled)}] "
                f"{self.done}/{self.total}  {label}")
        pad = max(0, self._last - len(line))
        self.stream.write(line + " " * pad)
        self.stream.flush()
        self._last = len(line)

    def advance(self, label=""):
        self.done += 1
        self.show(label)

    def close(self):
        if self.enabled and self._last:
            self.stream.write("\r" + " " * self._last + "\r")
            self.stream.flush()
        self._last = 0
