"""A rule (Adam unless --rules names others) on one array of float16 (and bfloat16, when
ml_dtypes imports) parameters against the same on float32, per element: ``update_`` timed
for each dtype in turn, interleaved in one run (so that a busy machine slows all of them
alike), median of the repeats.

The gradient has the parameter's dtype.  Usage:
    python bench/low_precision.py [--sizes 1e6,1e8] [--threads 1,2] [--repeat 15]
                                  [--rules adam,momentum,lion]
"""

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

import optimisers as opt

try:
    import ml_dtypes

    LOW = [np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16)]
except ImportError:
    LOW = [np.dtype(np.float16)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1e6,1e8")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--rules", default="adam")
    args = ap.parse_args()
    by_name = {cls.__name__.lower(): cls for cls in opt.RULES}
    for name in args.rules.split(","):
        run(by_name[name](), args)


def run(rule, args):
    dtypes = [np.dtype(np.float32)] + LOW
    print(f"kernels: {opt.kernel_isa()}; {rule!r}, update_, median ms a step (ratio to float32)")
    for n in (int(float(s)) for s in args.sizes.split(",")):
        repeat = args.repeat if n < 10**7 else max(3, args.repeat // 5)
        rng = np.random.default_rng(0)
        g64 = rng.standard_normal(n, np.float32) * np.float32(1e-3)
        cases = []
        for dt in dtypes:
            x = np.ones(n, dt)
            cases.append((dt, x, g64.astype(dt), opt.setup(rule, x)))
        for threads in (int(t) for t in args.threads.split(",")):
            times = {dt: [] for dt in dtypes}
            with threadpool_limits(limits=threads, user_api="openmp"):
                for _, x, g, st in cases:  # warm up (pages, caches)
                    opt.update_(st, x, g)
                for _ in range(repeat):
                    for dt, x, g, st in cases:
                        t = time.perf_counter()
                        opt.update_(st, x, g)
                        times[dt].append(time.perf_counter() - t)
            base = np.median(times[dtypes[0]])
            row = ", ".join(
                f"{dt.name} {np.median(times[dt]) * 1e3:.3f} ms "
                f"({np.median(times[dt]) / base:.2f}x)"
                for dt in dtypes
            )
            print(f"n={n:.0e} threads={threads}: {row}", flush=True)
        del cases


if __name__ == "__main__":
    main()
