"""Timing of one step, and a plain-text progress bar.

Every step is timed on its own with :func:`time.perf_counter`; the figure reported is the
median.  Implementations compared in one case are timed *round-robin* (a few rounds, each
giving every implementation a share of the time, in a new order each round), so
that a change in the machine's load during the case hits them all alike: on a busy machine
only ratios taken this way mean much.  :func:`ratio` then compares two implementations
round by round (a *paired* comparison): the median over the rounds of the ratio of their
round medians.  A burst of load that lasts a round moves both sides of that round's ratio,
where it would move only one side of a ratio of overall medians; on this project's 2-core
machine under outside load the paired ratio scattered about half as much between runs.
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from dataclasses import dataclass

__all__ = ["Budget", "Timing", "measure", "ratio", "Progress"]


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
    """Seconds per step: the median, the fastest, the quartiles, how many steps, and the
    median of each round-robin round (one round when timed alone).

    >>> Timing.of([[0.3, 0.1], [0.2]])
    Timing(median=0.2, best=0.1, q1=0.1, q3=0.3, steps=3, by_round=(0.2, 0.2))
    """

    median: float
    best: float
    q1: float
    q3: float
    steps: int
    by_round: tuple = ()

    @classmethod
    def of(cls, rounds):
        """From the samples of each round: a list of lists of seconds."""
        s = sorted(x for r in rounds for x in r)
        if len(s) >= 4:
            q1, _, q3 = statistics.quantiles(s, n=4)
        else:
            q1, q3 = s[0], s[-1]
        return cls(
            statistics.median(s), s[0], q1, q3, len(s), tuple(statistics.median(r) for r in rounds)
        )


def ratio(a, b):
    """``a``'s time per step over ``b``'s (> 1: ``b`` is faster).

    Paired when both were timed in the same rounds: the median over the rounds of
    ``a``'s round median over ``b``'s.  Else (timed one after the other) the ratio of
    their medians.

    >>> a = Timing.of([[2.0], [4.0], [2.2]])     # a burst of load in round 2 ...
    >>> b = Timing.of([[1.0], [4.0], [1.0]])     # ... hit both
    >>> ratio(a, b), a.median / b.median
    (2.0, 2.2)
    >>> ratio(Timing.of([[3.0, 1.0]]), Timing.of([[1.0]]))     # one round: the medians
    2.0
    """
    if len(a.by_round) == len(b.by_round) >= 2:
        return statistics.median(x / y for x, y in zip(a.by_round, b.by_round))
    return a.median / b.median


def _sample(step, min_steps, min_time, max_time, max_steps, out, prepare=None):
    clock = time.perf_counter
    spent = 0.0
    n = 0
    while True:
        if prepare is not None:  # not timed, nor counted in the time spent
            prepare()
        t0 = clock()
        step()
        t1 = clock()
        out.append(t1 - t0)
        n += 1
        spent += t1 - t0
        if n >= max_steps or spent >= max_time or (n >= min_steps and spent >= min_time):
            return


def measure(steps, budget=Budget(), prepare=None):
    """Time every callable of the dict ``steps`` (name -> step): a dict name -> Timing.
    ``prepare`` (name -> callable, for some of the names) runs untimed before each of that
    step's runs, warm-up included (e.g. new gradient tensors, as after ``zero_grad()``).

    >>> t = measure({"noop": lambda: None}, Budget(warmup=1, min_steps=5, min_time=0))
    >>> t["noop"].steps >= 5
    True
    """
    prepare = prepare or {}
    rounds = max(1, budget.rounds)
    names = list(steps)
    samples = {k: [[] for _ in range(rounds)] for k in names}
    for k, f in steps.items():
        for _ in range(budget.warmup):
            if k in prepare:
                prepare[k]()
            f()
    shuffler = random.Random(0)
    for r in range(rounds):
        # a new order each round (the same in every run), so that no implementation
        # always follows the same one (whose threads or traffic might still be winding
        # down); turning the list would keep every predecessor
        shuffler.shuffle(names)
        for k in names:
            _sample(
                steps[k],
                -(-budget.min_steps // rounds),
                budget.min_time / rounds,
                budget.max_time / rounds,
                -(-budget.max_steps // rounds),
                samples[k][r],
                prepare.get(k),
            )
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
        line = f"\r[{'#' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total}  {label}"
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
