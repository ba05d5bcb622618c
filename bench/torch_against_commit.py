"""``optimisers.torch.Optimizer.step()`` on 1000 float32 tensors of 1000 elements, with
two installs of optimisers taking turns, against torch's fused Adam timed in the same
process: did a change of the torch layer make its step faster?  (``against_commit.py``
does the same for ``update_``; this one needs torch in both environments.)

    python bench/torch_against_commit.py OLD_PYTHON NEW_PYTHON [--rounds 7] [--threads 1]

Each round runs one subprocess per interpreter (in a new order each round); a subprocess
times, interleaved step by step, ``Optimizer(params, opt.Adam()).step()`` and
``torch.optim.Adam(params, fused=True).step()`` with gradients that persist between
steps (as ``zero_grad(set_to_none=False)`` leaves them), then both again with a new
gradient tensor for every parameter before each step (as after ``zero_grad()``; the
new tensors are made outside the timed step), and prints the median of each.  The table
gives, per install, the median over the rounds of ours and of torch's, and of torch /
ours in each subprocess (the ratio the issue asks about).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys

CODE = r"""
import json, sys, time
import numpy as np, torch
import optimisers as opt
from optimisers.torch import Optimizer
from threadpoolctl import threadpool_limits

threads, steps = int(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(threads)


def tensors(seed):
    rng = np.random.default_rng(seed)
    ps = [torch.from_numpy(rng.standard_normal(1000).astype(np.float32)) for _ in range(1000)]
    for p in ps:
        p.grad = torch.from_numpy(rng.standard_normal(1000).astype(np.float32))
    return ps


with threadpool_limits(threads):
    a, b = tensors(0), tensors(0)
    ours, theirs = Optimizer(a, opt.Adam()), torch.optim.Adam(b, fused=True)
    base = [p.grad.clone() for p in a]
    out = {}
    for fresh in (False, True):
        times = {"ours": [], "torch": []}
        for i in range(steps + 5):
            for name, o, ps in (("ours", ours, a), ("torch", theirs, b)):
                if fresh:
                    for p, g in zip(ps, base):
                        p.grad = g.clone()
                t0 = time.perf_counter()
                o.step()
                if i >= 5:
                    times[name].append(time.perf_counter() - t0)
        for name, ts in times.items():
            out[name + (" fresh" if fresh else "")] = float(np.median(ts))
print(json.dumps(out))
"""


def run(python: str, threads: int, steps: int) -> dict[str, float]:
    """One subprocess of ``python``: the medians of its steps (seconds)."""
    got = subprocess.run(
        [python, "-c", CODE, str(threads), str(steps)],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, float] = json.loads(got.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    """Print the table (see the module's docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=150, help="timed steps of each kind")
    args = ap.parse_args()
    sides = {"old": args.old, "new": args.new}
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in sides}
    order = list(sides)
    shuffler = random.Random(0)
    for _ in range(args.rounds):
        shuffler.shuffle(order)
        for k in order:
            runs[k].append(run(sides[k], args.threads, args.steps))
    print(f"1000 x 1000 float32 Adam, {args.threads} thread(s), {args.rounds} rounds: ms per step")
    print(f"{'':6} {'case':<12} {'ours':>7} {'torch':>7} {'torch/ours':>10}  range")
    for k in sides:
        for case in ("", " fresh"):
            ours = [r["ours" + case] for r in runs[k]]
            theirs = [r["torch" + case] for r in runs[k]]
            ratios = [t / o for t, o in zip(theirs, ours)]
            print(
                f"{k:6} {'persisting' if not case else 'fresh':<12} "
                f"{1e3 * statistics.median(ours):7.3f} {1e3 * statistics.median(theirs):7.3f} "
                f"{statistics.median(ratios):10.2f}  {min(ratios):.2f}-{max(ratios):.2f}"
            )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
