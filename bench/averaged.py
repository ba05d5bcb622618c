"""Schedule-Free AdamW, Lookahead and EMA on one large array (issue 17, point 7): each step's
time against the plain probe pass of its own minimal byte count, and Schedule-Free against
the ``schedulefree`` package's step (torch, foreach and not).

    python bench/averaged.py [--size 1e8] [--rounds 5] [--threads 1,2]

Minimal traffic per element (float32, 4 bytes an array):

* ScheduleFreeAdamW: g read; y, z, v read and written: 1 + 2*3 = 7 arrays (28 B);
* EMA(Adam): g; x, m, v, ema: 1 + 2*4 = 9 arrays (36 B);
* Lookahead(Adam, k=5): Adam's 7 arrays on the 4 steps that do not synchronise, and
  1 + 2*4 = 9 on the one that does (the slow copy read and written): 7.4 arrays a step on
  average.  Its time is the mean over whole rounds of k steps.

The probe (``optimisers._probe.probe``) runs that pattern as one plain OpenMP pass; the
``of probe`` column is probe time over step time (1.0: at the machine's bandwidth for the
same bytes).  Ours and its yardstick take turns round by round (best of the rounds each),
so that a load that drifts on a shared machine weighs on both alike.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

import optimisers as opt
from optimisers import _probe

try:
    import schedulefree
    import torch
except ImportError:  # the comparison with the package is then left out
    schedulefree = torch = None


def best_time(step, calls, rounds):
    """The best over ``rounds`` of the mean time of ``calls`` calls of ``step``."""
    return best_times([step], calls, rounds)[0]


def best_times(steps, calls, rounds):
    """``best_time`` of each of ``steps``, taking turns round by round: on a shared machine
    the load drifts, and turns give each the same chances."""
    for step in steps:
        step()
    best = [np.inf] * len(steps)
    for _ in range(rounds):
        for j, step in enumerate(steps):
            t0 = time.perf_counter()
            for _ in range(calls):
                step()
            best[j] = min(best[j], (time.perf_counter() - t0) / calls)
    return best


def _repeat(step, calls):
    def run():
        for _ in range(calls):
            step()

    return run


def arrays(n, count, seed):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(n, dtype=np.float32) for _ in range(count)]


def ours(rule, n):
    x, g = arrays(n, 2, 0)
    state = opt.setup(rule, x)

    def step():
        opt.update_(state, x, g)

    return step


def probe(n, pattern):
    """Plain passes of the given ``(reads, updates)`` per step, in turn."""
    g = arrays(n, 1, 1)
    up = arrays(n, max(u for _, u in pattern), 2)
    calls = [(g + up[:u], up[:u]) for _, u in pattern]

    def step():
        for reads, writes in calls:
            _probe.probe(reads, writes)

    return step


def package(n, foreach):
    y = torch.nn.Parameter(torch.from_numpy(arrays(n, 1, 3)[0]))
    o = schedulefree.AdamWScheduleFree([y], lr=2.5e-3, foreach=foreach)
    o.train()
    # the package divides the gradient in place: its values stay of order 1 step after
    # step (no subnormals), and restoring it would add a pass that is not the package's
    y.grad = torch.from_numpy(arrays(n, 1, 4)[0])

    def step():
        o.step()

    return step


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=float, default=1e8)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", default="1,2")
    a = p.parse_args()
    n = int(a.size)
    k = 5
    cases = [
        ("ScheduleFreeAdamW", opt.ScheduleFreeAdamW(), [(1, 3)], 1),
        ("EMA(Adam)", opt.EMA(opt.Adam()), [(1, 4)], 1),
        ("Lookahead(Adam, k=5)", opt.Lookahead(opt.Adam(), k=k), [(1, 3)] * (k - 1) + [(1, 4)], k),
        ("Adam (for scale)", opt.Adam(), [(1, 3)], 1),
    ]
    print(f"{n:.0e} float32 elements, kernels {opt.kernel_isa()}, best of {a.rounds} rounds")
    print(f"{'rule':22s} {'thr':>3s} {'ms/step':>8s} {'probe ms':>8s} {'of probe':>8s}")
    for threads in [int(t) for t in a.threads.split(",")]:
        with threadpool_limits(threads):
            for name, rule, pattern, calls in cases:
                # the probe runs the k passes of a round in one call: time k of ours too
                t, tp = best_times([_repeat(ours(rule, n), calls), probe(n, pattern)], 1, a.rounds)
                t, tp = t / calls, tp / calls
                print(f"{name:22s} {threads:3d} {t * 1e3:8.1f} {tp * 1e3:8.1f} {tp / t:8.2f}")
            if torch is None:
                print("schedulefree: not installed (pip install schedulefree torch)")
                continue
            torch.set_num_threads(threads)
            for foreach in (True, False):
                t, tt = best_times(
                    [ours(opt.ScheduleFreeAdamW(), n), package(n, foreach)], 1, a.rounds
                )
                print(
                    f"{'schedulefree package':22s} {threads:3d} {tt * 1e3:8.1f} "
                    f"foreach={foreach}: {tt / t:.2f}x ours ({t * 1e3:.1f} ms)"
                )


if __name__ == "__main__":
    main()
