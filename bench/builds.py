"""Time `update_` of one or more rules with each build of the kernels (baseline, AVX2,
AVX-512) in one process, every (rule, build) pair taking turns, and print nanoseconds per
element (median of the rounds).  The builds give the same bits; this shows what each
instruction set buys, and (with several rules) what a chain costs over its last rule
alone, free of the load changes between separate runs.

    python bench/builds.py --rule adam --dtype float64 --size 1e5 --threads 1
    python bench/builds.py --rule adam,weightdecay+adam --isa avx512 --size 1e7

Builds this processor cannot run are left out.
"""

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

import optimisers as opt
from optimisers import _engine, _native, _program

RULES = {
    "adam": lambda: opt.Adam(),
    "adamw": lambda: opt.AdamW(lambda_=0.01),
    "radam": lambda: opt.RAdam(),
    "nadam": lambda: opt.NAdam(),
    "adabelief": lambda: opt.AdaBelief(),
    "oadam": lambda: opt.OAdam(),
    "momentum": lambda: opt.Momentum(),
    "lion": lambda: opt.Lion(),
    "rmsprop": lambda: opt.RMSProp(),
    "adadelta": lambda: opt.AdaDelta(),
    "clipnorm+adamw": lambda: opt.OptimiserChain(opt.ClipNorm(1.0), opt.AdamW(lambda_=0.01)),
    "weightdecay+adam": lambda: opt.OptimiserChain(opt.WeightDecay(0.01), opt.Adam()),
    "clipgrad+adam": lambda: opt.OptimiserChain(opt.ClipGrad(1.0), opt.Adam()),
    "weightdecay+momentum": lambda: opt.OptimiserChain(opt.WeightDecay(0.01), opt.Momentum()),
    "weightdecay": lambda: opt.WeightDecay(0.01),
}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--rule",
        default="adam",
        help="one or more of " + ",".join(sorted(RULES)) + ", comma-separated",
    )
    p.add_argument(
        "--isa",
        default=None,
        help="only these builds, comma-separated (default: every runnable one)",
    )
    p.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    p.add_argument("--size", type=float, default=1e5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--seconds", type=float, default=0.3, help="time per build and round")
    args = p.parse_args(argv)
    rules = args.rule.split(",")
    for r in rules:
        if r not in RULES:
            p.error(f"unknown rule {r!r}; choose from {', '.join(sorted(RULES))}")
    builds = _native.builds()
    if args.isa is not None:
        builds = {isa: builds[isa] for isa in args.isa.split(",") if isa in builds}
        if not builds:
            p.error(
                f"none of the builds {args.isa} runs here; runnable: {', '.join(_native.builds())}"
            )

    n, dtype = int(args.size), np.dtype(args.dtype)
    rng = np.random.default_rng(0)
    models = {}
    for r in rules:
        x = rng.standard_normal(n).astype(dtype)
        # two gradients in turn: with one, a rule with weight decay would drive its moments
        # towards zero over the many steps timed here, into subnormal values no training
        # sees
        grads = [(rng.standard_normal(n) * 1e-2).astype(dtype) for _ in range(2)]
        models[r] = (opt.setup(RULES[r](), x), x, grads)
    pairs = [(r, isa) for r in rules for isa in builds]
    times = {pair: [] for pair in pairs}
    try:
        with threadpool_limits(limits=args.threads, user_api="openmp"):
            for _ in range(args.rounds):
                for r, isa in pairs:
                    state, x, grads = models[r]
                    _program._kernels = _engine._kernels = builds[isa]
                    opt.update_(state, x, grads[0])
                    start, steps = time.perf_counter(), 0
                    while time.perf_counter() - start < args.seconds:
                        opt.update_(state, x, grads[steps % 2])
                        steps += 1
                    times[r, isa].append((time.perf_counter() - start) / steps / n * 1e9)
    finally:
        _program._kernels = _engine._kernels = _native.kernels
    for r in rules:
        cells = "  ".join(f"{isa} {np.median(times[r, isa]):.3f}" for isa in builds)
        print(f"{r} {dtype} {n} elements, {args.threads} thread(s), ns/element: {cells}")


if __name__ == "__main__":
    main()
