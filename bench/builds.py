"""Time one rule's `update_` with each build of the kernels (baseline, AVX2, AVX-512) in
one process, the builds taking turns, and print nanoseconds per element (median of the
rounds).  The builds give the same bits; this shows what each instruction set buys.

    python bench/builds.py --rule adam --dtype float64 --size 1e5 --threads 1

Builds this processor cannot run are left out.
"""

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

import optimisers as opt
from optimisers import _native, _program, _tree

RULES = {
    "adam": lambda: opt.Adam(), "adamw": lambda: opt.AdamW(lambda_=0.01),
    "radam": lambda: opt.RAdam(), "nadam": lambda: opt.NAdam(),
    "adabelief": lambda: opt.AdaBelief(), "oadam": lambda: opt.OAdam(),
    "momentum": lambda: opt.Momentum(), "lion": lambda: opt.Lion(),
    "rmsprop": lambda: opt.RMSProp(), "adadelta": lambda: opt.AdaDelta(),
    "clipnorm+adamw": lambda: opt.OptimiserChain(opt.ClipNorm(1.0), opt.AdamW(lambda_=0.01)),
    "weightdecay+adam": lambda: opt.OptimiserChain(opt.WeightDecay(0.01), opt.Adam()),
    "clipgrad+adam": lambda: opt.OptimiserChain(opt.ClipGrad(1.0), opt.Adam()),
    "weightdecay+momentum": lambda: opt.OptimiserChain(opt.WeightDecay(0.01), opt.Momentum()),
    "weightdecay": lambda: opt.WeightDecay(0.01),
}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rule", choices=sorted(RULES), default="adam")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    p.add_argument("--size", type=float, default=1e5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--seconds", type=float, default=0.3, help="time per build and round")
    args = p.parse_args(argv)

    n, dtype = int(args.size), np.dtype(args.dtype)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(n).astype(dtype)
    # two gradients in turn: with one, a rule with weight decay would drive its moments
    # towards zero over the many steps timed here, into subnormal values no training sees
    grads = [(rng.standard_normal(n) * 1e-2).astype(dtype) for _ in range(2)]
    state = opt.setup(RULES[args.rule](), x)
    builds = _native.builds()
    times = {isa: [] for isa in builds}
    try:
        with threadpool_limits(limits=args.threads, user_api="openmp"):
            for _ in range(args.rounds):
                for isa, module in builds.items():
                    _program._kernels = _tree._kernels = module
                    opt.update_(state, x, grads[0])
                    start, steps = time.perf_counter(), 0
                    while time.perf_counter() - start < args.seconds:
                        opt.update_(state, x, grads[steps % 2])
                        steps += 1
                    times[isa].append((time.perf_counter() - start) / steps / n * 1e9)
    finally:
        _program._kernels = _tree._kernels = _native.kernels
    cells = "  ".join(f"{isa} {np.median(t):.3f}" for isa, t in times.items())
    print(f"{args.rule} {dtype} {n} elements, {args.threads} thread(s), ns/element: {cells}")


if __name__ == "__main__":
    main()
