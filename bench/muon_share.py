"""Muon's step on one matrix: the share of its time spent outside the matrix products.

Each round times one ``update_`` of ``Muon()`` on one float32 matrix, and inside that very
step the time of its matrix products (``np.matmul`` as the rule module calls it, timed
call by call: per Newton-Schulz step ``X X^T``, ``A A``, ``B X``).  The share outside is
``1 - products/step`` of each round (so the load of a shared machine weighs on both
alike), the median over the rounds printed with their range: the momentum pass, the norm,
the scalings and sums of the iteration and the final pass, all memory-bound, against the
O(n^3) products.  A second figure times the same products alone, on buffers of the same
shapes, after each step, as a check that timing them inside the step costs nothing.
Usage:  python bench/muon_share.py [--rows 4096] [--cols 4096] [--rounds 5] [--threads N]
        [--no-alone]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

import optimisers as opt
from optimisers import _rules_muon


class _TimedMatmul:
    """Stands in for numpy in the rule module: every attribute is numpy's, and matmul
    adds its seconds to ``seconds``."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __getattr__(self, name: str) -> object:
        return getattr(np, name)

    def matmul(self, *args: object, **kwargs: object) -> object:
        t = time.perf_counter()
        try:
            return np.matmul(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t


def products_only(shape: tuple[int, int], steps: int) -> float:
    """Seconds for the iteration's matrix products alone (buffers made beforehand)."""
    rng = np.random.default_rng(1)
    rows, cols = shape
    wide = rows <= cols
    k = min(shape)
    X = (rng.standard_normal(shape) / np.sqrt(rows * cols)).astype(np.float32)
    T = np.empty(shape, np.float32)
    A = np.empty((k, k), np.float32)
    B = np.empty((k, k), np.float32)
    t = time.perf_counter()
    for _ in range(steps):
        np.matmul(X, X.T, out=A) if wide else np.matmul(X.T, X, out=A)
        np.matmul(A, A, out=B)
        np.matmul(B, X, out=T) if wide else np.matmul(X, B, out=T)
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=4096)
    p.add_argument("--cols", type=int, default=4096)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="OpenMP and BLAS threads")
    p.add_argument(
        "--no-alone", action="store_true", help="skip timing the products alone (half the run)"
    )
    a = p.parse_args(argv)
    shape = (a.rows, a.cols)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    rule = opt.Muon()
    state = opt.setup(rule, x)
    timed = _TimedMatmul()
    with threadpool_limits(limits=a.threads):
        opt.update_(state, x, g)  # warm-up: the workspace is made here
        products_only(shape, 1)
        shares, steps, inside, alone = [], [], [], []
        _rules_muon.np = timed
        try:
            for _ in range(a.rounds):
                timed.seconds = 0.0
                t = time.perf_counter()
                opt.update_(state, x, g)
                step = time.perf_counter() - t
                steps.append(step)
                inside.append(timed.seconds)
                shares.append(1 - timed.seconds / step)
                if not a.no_alone:
                    alone.append(products_only(shape, rule.ns_steps))
        finally:
            _rules_muon.np = np
    print(
        f"Muon() on a {a.rows} x {a.cols} float32 matrix, {a.rounds} rounds, "
        f"load average {_load():.1f} at the end"
    )
    for name, v in [("step", steps), ("its products", inside), ("products alone", alone)]:
        if not v:
            continue
        print(f"  {name:15s} median {np.median(v):8.3f} s  ({min(v):.3f} - {max(v):.3f})")
    print(
        f"  share of the step outside the products: median {100 * np.median(shares):.2f}% "
        f"(rounds {100 * min(shares):.2f}% - {100 * max(shares):.2f}%)"
    )


def _load() -> float:
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except OSError:
        return float("nan")


if __name__ == "__main__":
    main()
