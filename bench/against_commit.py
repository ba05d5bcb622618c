"""The same steps timed with two installs of optimisers, taking turns: is a change as fast as
the commit before it?

    python bench/against_commit.py OLD_PYTHON NEW_PYTHON [--rounds 7] [--threads 2] [--quick]
                                   [--recipe] [--cases NAME,NAME...] [--quantile Q]

OLD_PYTHON and NEW_PYTHON are the interpreters of two virtual environments, each with one
build of optimisers installed (e.g. ``pip install .`` of a worktree at the previous commit).
Each round runs every case once with each interpreter, in a new order each round (a
subprocess per case and interpreter, so that neither warms the other's caches); a case's
figure is the median over the rounds of that round's ratio new/old (below 1: the new build
is faster), so a burst of load that lasts a round moves both sides.  Only the public API is
used, so any two versions run the same script.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys

# name -> (rule expression, number of arrays, elements each, dtype, steps timed)
CASES = {
    "adam f32 1e8": ("opt.Adam()", 1, 10**8, "float32", 6),
    "adam f64 1e8": ("opt.Adam()", 1, 10**8, "float64", 6),
    "adamw f32 1e8": ("opt.AdamW(lambda_=0.1)", 1, 10**8, "float32", 6),
    "momentum f32 1e8": ("opt.Momentum()", 1, 10**8, "float32", 6),
    "lion f64 1e8": ("opt.Lion()", 1, 10**8, "float64", 6),
    "clipnorm+adamw f32 1e8": (
        "opt.OptimiserChain(opt.ClipNorm(1.0), opt.AdamW())",
        1,
        10**8,
        "float32",
        6,
    ),
    "weightdecay+adam f64 1e7": (
        "opt.OptimiserChain(opt.WeightDecay(), opt.Adam())",
        1,
        10**7,
        "float64",
        20,
    ),
    "adam f64 2.6e5 (cache)": ("opt.Adam()", 1, 260_000, "float64", 400),
    "adam f32 1000x1000": ("opt.Adam()", 1000, 1000, "float32", 100),
    # issue 18's AdamW case (100 tensors, 25M parameters), through update_
    "adamw f32 100x250000": ("opt.AdamW()", 100, 250_000, "float32", 30),
    "adam f32 10000 leaves of 10": ("opt.Adam()", 10_000, 10, "float32", 30),
    # issue 16's training recipe (a rule function, SkipNonFinite, ClipGlobalNorm, a schedule)
    "adamw f32 1000x1000": ("opt.AdamW(1e-3, lambda_=0.1)", 1000, 1000, "float32", 100),
    "recipe f32 1000x1000": (
        (
            "lambda path, x: opt.OptimiserChain(opt.SkipNonFinite(), opt.ClipGlobalNorm(1.0), "
            "opt.AdamW(opt.schedules.warmup_cosine_decay(0.0, 1e-3, 100, 10**5), "
            "lambda_=0.1 if x.ndim >= 2 else 0.0))"
        ),
        1000,
        1000,
        "float32",
        100,
    ),
    "clipglobalnorm+adamw f32 1e8": (
        "opt.OptimiserChain(opt.ClipGlobalNorm(1.0), opt.AdamW())",
        1,
        10**8,
        "float32",
        6,
    ),
}
RECIPE = ("adamw f32 1000x1000", "recipe f32 1000x1000")
QUICK = (
    "weightdecay+adam f64 1e7",
    "adam f64 2.6e5 (cache)",
    "adam f32 1000x1000",
    "adam f32 10000 leaves of 10",
)

WORKER = r"""
import json, sys, time
import numpy as np
import optimisers as opt
from threadpoolctl import threadpool_limits
rule_src, count, size, dtype, steps, threads, quantile = json.loads(sys.argv[1])
rng = np.random.default_rng(0)
model = {f"p{i}": rng.standard_normal(size).astype(dtype) for i in range(count)}
grads = [{k: rng.standard_normal(size).astype(dtype) for k in model} for _ in range(2)]
state = opt.setup(eval(rule_src), model)
with threadpool_limits(threads):
    for i in range(3):
        state, model = opt.update_(state, model, grads[i % 2])
    times = []
    for i in range(steps):
        t = time.perf_counter()
        state, model = opt.update_(state, model, grads[i % 2])
        times.append(time.perf_counter() - t)
print(json.dumps(sorted(times)[int(quantile * (len(times) - 1))]))
"""


def _time(python, case, threads, quantile):
    rule, count, size, dtype, steps = CASES[case]
    arg = json.dumps([rule, count, size, dtype, steps, threads, quantile])
    out = subprocess.run([python, "-c", WORKER, arg], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    which = ap.add_mutually_exclusive_group()  # the cases to run (default: all of them)
    which.add_argument(
        "--quick",
        action="store_true",
        help="only the cases that fit in cache and the many-leaf ones",
    )
    which.add_argument(
        "--recipe",
        action="store_true",
        help="only issue 16's training recipe and AdamW alone, on 1000 arrays of 1000 elements",
    )
    which.add_argument(
        "--cases",
        type=lambda text: text.split(","),
        help="only these cases, by name, comma-separated (see CASES)",
    )
    ap.add_argument(
        "--quantile",
        type=float,
        default=0.5,
        help="the quantile of a run's "
        "step times it reports (default 0.5, the median; on a loaded machine a "
        "step that is descheduled loses a time slice, and 0 - the fastest step - "
        "is what the code costs)",
    )
    args = ap.parse_args()
    cases = list(args.cases or (RECIPE if args.recipe else QUICK if args.quick else CASES))
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        ap.error(f"unknown case(s) {unknown}; the cases are {list(CASES)}")
    order = random.Random(0)
    ratios = {c: [] for c in cases}
    ms = {c: {"old": [], "new": []} for c in cases}
    for r in range(args.rounds):
        runs = [(c, side) for c in cases for side in ("old", "new")]
        order.shuffle(runs)
        got = {}
        for case, side in runs:
            got[case, side] = _time(
                args.old if side == "old" else args.new, case, args.threads, args.quantile
            )
        for c in cases:
            ratios[c].append(got[c, "new"] / got[c, "old"])
            ms[c]["old"].append(got[c, "old"] * 1e3)
            ms[c]["new"].append(got[c, "new"] * 1e3)
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    print(f"{'case':32} {'old ms':>9} {'new ms':>9} {'new/old':>8} {'range':>15}")
    for c in cases:
        rs = ratios[c]
        print(
            f"{c:32} {statistics.median(ms[c]['old']):9.3f} "
            f"{statistics.median(ms[c]['new']):9.3f} {statistics.median(rs):8.3f} "
            f"{min(rs):7.3f}-{max(rs):.3f}"
        )


if __name__ == "__main__":
    main()
