"""Measure where splitting one array over OpenMP threads starts to pay.

For Adam and Momentum (float32 and float64) on one array of n elements, time ``update_``
with the array forced serial (threshold above n) and forced parallel (threshold 0), with
``--threads`` threads, interleaved in the same run, and print the ratio.  The library's
default threshold (``optimisers.get_parallel_threshold()``) should sit where the ratio
crosses 1.  Usage:  python bench/parallel_threshold.py [--threads 2] [--repeat 400] [--pause-ms 2]
"""

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

import optimisers as opt

SIZES = [2048, 4096, 8192, 16384, 32768, 65536, 131072, 262144]


def median_step(rule, n, dtype, threshold, repeat, pause=0.0):
    x = np.ones(n, dtype)
    g = np.random.default_rng(0).standard_normal(n).astype(dtype)
    state = opt.setup(rule, x)
    opt.set_parallel_threshold(threshold)
    for _ in range(20):
        opt.update_(state, x, g)
    times = []
    for _ in range(repeat):
        if pause:
            time.sleep(pause)  # as if computing the next gradient: workers doze off
        t = time.perf_counter()
        opt.update_(state, x, g)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=400)
    p.add_argument(
        "--pause-ms",
        type=float,
        default=0.0,
        help="sleep before each timed step, as a training loop computing its "
        "gradient would (OpenMP workers then go to sleep)",
    )
    args = p.parse_args(argv)
    default = opt.get_parallel_threshold()
    print(
        f"threads={args.threads}  isa={opt.kernel_isa()}  default threshold={default}  "
        f"pause={args.pause_ms} ms"
    )
    print(f"{'rule':9} {'dtype':8} {'n':>8} {'serial us':>10} {'parallel us':>12} {'ratio':>6}")
    try:
        with threadpool_limits(args.threads, "openmp"):
            for rule, name in ((opt.Adam(), "adam"), (opt.Momentum(), "momentum")):
                for dtype in (np.float32, np.float64):
                    for n in SIZES:
                        pause = args.pause_ms / 1e3
                        s = median_step(rule, n, dtype, n + 1, args.repeat, pause)
                        q = median_step(rule, n, dtype, 0, args.repeat, pause)
                        print(
                            f"{name:9} {np.dtype(dtype).name:8} {n:>8} {s * 1e6:>10.1f} "
                            f"{q * 1e6:>12.1f} {s / q:>6.2f}"
                        )
    finally:
        opt.set_parallel_threshold(default)


if __name__ == "__main__":
    main()
