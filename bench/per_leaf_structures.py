"""Per-leaf overhead of ``update_`` by the shape of the model.

``optimisers-bench --per-leaf`` times a list of arrays; models are usually nested.  This
times one Adam step (float32, 16 elements per array, one thread) on 10,000 arrays held
as a flat dict, a list, a list of ``{"w", "b"}`` dicts, a list of namedtuples and a list
of registered dataclasses, and prints microseconds per array (fastest and median step).
Usage:  python bench/per_leaf_structures.py [--leaves 10000] [--repeat 60]
"""

import argparse
import dataclasses
import time
from collections import namedtuple

import numpy as np
from threadpoolctl import threadpool_limits

import optimisers as opt

Pair = namedtuple("Pair", "w b")


@opt.functor
@dataclasses.dataclass
class Layer:
    w: np.ndarray
    b: np.ndarray


def models(n, rng):
    def a():
        return rng.standard_normal(16).astype(np.float32)

    return {
        "flat dict": {f"p{i}": a() for i in range(n)},
        "list of arrays": [a() for _ in range(n)],
        "list of {w, b} dicts": [{"w": a(), "b": a()} for _ in range(n // 2)],
        "list of namedtuples": [Pair(a(), a()) for _ in range(n // 2)],
        "list of registered objects": [Layer(a(), a()) for _ in range(n // 2)],
    }


def gradient(model):
    """A gradient of the model's shape: ones, in the same containers (dicts for objects)."""
    if isinstance(model, np.ndarray):
        return np.ones_like(model)
    if isinstance(model, dict):
        return {k: gradient(v) for k, v in model.items()}
    if isinstance(model, Pair):
        return Pair(*(gradient(v) for v in model))
    if isinstance(model, list):
        return [gradient(v) for v in model]
    return {f.name: gradient(getattr(model, f.name)) for f in dataclasses.fields(model)}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--leaves", type=int, default=10000)
    p.add_argument("--repeat", type=int, default=60)
    ns = p.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'model':28s}  {'us/leaf (best)':>14s}  {'us/leaf (median)':>16s}")
    with threadpool_limits(limits=1, user_api="openmp"):
        for name, model in models(ns.leaves, rng).items():
            grad = gradient(model)
            state = opt.setup(opt.Adam(), model)
            for _ in range(3):
                opt.update_(state, model, grad)
            times = []
            for _ in range(ns.repeat):
                t0 = time.perf_counter()
                opt.update_(state, model, grad)
                times.append(time.perf_counter() - t0)
            per = 1e6 / ns.leaves
            print(f"{name:28s}  {min(times) * per:14.2f}  {np.median(times) * per:16.2f}")


if __name__ == "__main__":
    main()
