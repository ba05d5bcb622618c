"""What every implementation of a speed case shares: the case, its arrays, its threads.

A :class:`Case` is one rule on one model (``size`` elements of one dtype, split over
``leaves`` arrays) at one thread count.  Every implementation (ours in :mod:`.speed`, the
probe and the plain pass in :mod:`.yardsticks`, the peers in :mod:`.compare`) builds its
own arrays from :func:`make_arrays` (the same values for all, so no one's state leaks into
another's) and raises :class:`Unavailable` when it cannot run a case.
"""

from __future__ import annotations

import contextlib
import math
import sys
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from . import rules

__all__ = [
    "Case",
    "Unavailable",
    "fmt_size",
    "gradient_values",
    "make_arrays",
    "matrix_shape",
    "thread_limit",
]


class Unavailable(Exception):
    """An implementation that cannot run this case (say why)."""


@dataclass(frozen=True)
class Case:
    """One rule, dtype, total size, number of arrays and thread count.

    >>> c = Case("adam", "float32", 10**6, 1000, 2)
    >>> c.bytes, c.leaf_sizes()[:2], c.label()
    (28000000, [1000, 1000], 'adam float32 1e6 /1000 t2')
    """

    rule: str
    dtype: str
    size: int
    leaves: int
    threads: int
    section: str = "speed"  # "speed", or "per_leaf" for the per-leaf overhead

    @property
    def spec(self):
        return rules.get(self.rule)

    @property
    def itemsize(self):
        return np.dtype(self.dtype).itemsize

    @property
    def bytes(self):
        """The minimal bytes of one step (see :mod:`.rules`)."""
        return rules.bytes_per_step(self.spec.passes, self.size, self.itemsize)

    def leaf_sizes(self):
        """``size`` split over ``leaves`` arrays as evenly as possible."""
        q, r = divmod(self.size, self.leaves)
        return [q + (i < r) for i in range(self.leaves)]

    def label(self):
        return (
            f"{self.rule} {self.dtype} {fmt_size(self.size)}"
            f"{'' if self.leaves == 1 else f' /{self.leaves}'} t{self.threads}"
        )

    @property
    def state_min_bytes(self):
        """The state the rule needs: its largest pass's updated arrays less ``x``."""
        return (max(u for _, u in self.spec.passes) - 1) * self.size * self.itemsize

    def footprint(self):
        """Bytes one implementation of this case holds (x, g and the states)."""
        streams = max(r + u for r, u in self.spec.passes) + 1
        return streams * self.size * self.itemsize


def fmt_size(n):
    """1000000 -> '1e6', 16000000 -> '1.6e7', 2500 -> '2500'.

    >>> fmt_size(10**6), fmt_size(16_000_000), fmt_size(2500), fmt_size(1234567)
    ('1e6', '1.6e7', '2500', '1234567')
    """
    if n >= 10_000:
        e = len(str(n)) - 1
        if n % 10 ** (e - 1) == 0:
            return f"{n / 10**e:g}e{e}"
    return str(n)


def gradient_values(n, dtype, seed=0):
    """``n`` standard-normal-looking values of ``dtype``, cheap to make at any size."""
    block = np.random.default_rng(seed).standard_normal(min(n, 1 << 16)).astype(dtype)
    return np.resize(block, n)


def make_arrays(case, seed=0):
    """Parameters and gradients of ``case``: two lists of arrays of its leaf sizes
    (matrices of :func:`matrix_shape` for a rule that trains matrices only)."""
    xs, gs = [], []
    matrices = case.spec.matrix_only
    for i, n in enumerate(case.leaf_sizes()):
        shape = matrix_shape(n) if matrices else (n,)
        xs.append(gradient_values(n, case.dtype, seed + 2 * i).reshape(shape))
        gs.append(gradient_values(n, case.dtype, seed + 2 * i + 1).reshape(shape))
    return xs, gs


def matrix_shape(n):
    """The squarest matrix of ``n`` elements, rows <= columns.

    >>> matrix_shape(10**6), matrix_shape(4096 * 4096), matrix_shape(7)
    ((1000, 1000), (4096, 4096), (1, 7))
    """
    rows = max(r for r in range(1, math.isqrt(n) + 1) if n % r == 0)
    return rows, n // rows


@contextlib.contextmanager
def thread_limit(n):
    """Run with ``n`` threads: OpenMP and BLAS pools (threadpoolctl), and torch's own."""
    torch = sys.modules.get("torch")
    old = torch.get_num_threads() if torch is not None else None
    with threadpool_limits(limits=n):
        if torch is not None:
            torch.set_num_threads(n)
        try:
            yield
        finally:
            if torch is not None:
                torch.set_num_threads(old)
