"""Adafactor on one matrix: ``optimisers.update_`` against ``torch.optim.Adafactor``.

``optimisers-bench`` times 1-D arrays, where Adafactor keeps a full second moment; this
times the factored form (row and column factors) on one float32 matrix, against torch's
``foreach=True`` step, the two stepped in turn, median of the steps, on 1 and 2 threads
(torch's and OpenMP's).  Needs torch.
Usage:  python bench/adafactor_matrix.py [--rows 10000] [--cols 10000] [--steps 5]
"""

import argparse
import time

import numpy as np
import torch
from threadpoolctl import threadpool_limits

import optimisers as opt


def main() -> None:
    """Print, per thread count, the median step of each and torch's over ours."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10000)
    ap.add_argument("--cols", type=int, default=10000)
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.rows, args.cols), dtype=np.float32)
    g = rng.standard_normal(x.shape, dtype=np.float32)
    state = opt.setup(opt.Adafactor(), x)
    p = torch.nn.Parameter(torch.from_numpy(x.copy()))
    p.grad = torch.from_numpy(g.copy())
    theirs_opt = torch.optim.Adafactor([p], foreach=True)
    for threads in (1, 2):
        torch.set_num_threads(threads)
        ours, theirs = [], []
        with threadpool_limits(limits=threads, user_api="openmp"):
            opt.update_(state, x, g)  # warm-up
            theirs_opt.step()
            for _ in range(args.steps):
                t = time.perf_counter()
                opt.update_(state, x, g)
                ours.append(time.perf_counter() - t)
                t = time.perf_counter()
                theirs_opt.step()
                theirs.append(time.perf_counter() - t)
        o, q = np.median(ours) * 1e3, np.median(theirs) * 1e3
        print(
            f"threads {threads}: optimisers {o:.0f} ms, torch foreach {q:.0f} ms, "
            f"torch/optimisers {q / o:.2f}"
        )


if __name__ == "__main__":
    main()
