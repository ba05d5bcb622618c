"""Where a step of issue 16's training recipe goes, phase by phase, against AdamW alone.

    python bench/recipe_phases.py [--threads 1] [--rounds 7] [--steps 30]

1000 float32 arrays of 1000 elements; for each rule, the fastest step over rounds x steps
of: the whole ``update_``, the walk (``collect``), ``Batch()`` (every check and the
gradient pass of a leading norm), ``settle`` (the global verdict), the schedule's next
template (``scheduled_templates``) and its advance, and the kernels' pass (``Batch.run``).
It wraps private functions of the engine, so it runs against this tree's version only;
compare two builds with ``bench/against_commit.py``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

import optimisers as opt
from optimisers import _engine

TIMES: dict[str, float] = {}


def timed(name: str, f: Any) -> Any:
    """``f``, recording the time of its last call under ``name``."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        out = f(*args, **kwargs)
        TIMES[name] = time.perf_counter() - t
        return out

    return wrapper


class TimedBatch:
    """A ``_kernels.Batch`` whose ``run`` is timed."""

    def __init__(self, batch: Any) -> None:
        self._batch = batch

    def __getattr__(self, name: str) -> Any:
        return getattr(self._batch, name)

    def run(self) -> None:
        timed("run", self._batch.run)()


def schedule() -> Any:
    return opt.schedules.warmup_cosine_decay(0.0, 1e-3, 100, 10**5)


RULES: dict[str, Any] = {
    "adamw": lambda: opt.AdamW(1e-3, lambda_=0.1),
    "scheduled adamw": lambda: opt.AdamW(schedule(), lambda_=0.1),
    "clipglobalnorm+adamw": lambda: opt.OptimiserChain(
        opt.ClipGlobalNorm(1.0), opt.AdamW(1e-3, lambda_=0.1)
    ),
    "recipe": lambda: (
        lambda path, x: opt.OptimiserChain(
            opt.SkipNonFinite(),
            opt.ClipGlobalNorm(1.0),
            opt.AdamW(schedule(), lambda_=0.1 if x.ndim >= 2 else 0.0),
        )
    ),
}
PHASES = ("step", "collect", "batch", "settle", "scheduled_templates", "run", "advance_scheduled")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    kernels = _engine._kernels
    batch = kernels.Batch
    _engine._kernels = type(kernels)("timed_kernels")
    _engine._kernels.__dict__.update(kernels.__dict__)
    _engine._kernels.Batch = lambda entries: TimedBatch(timed("batch", batch)(entries))
    for name in ("collect", "settle", "scheduled_templates", "advance_scheduled"):
        setattr(_engine, name, timed(name, getattr(_engine, name)))
    rng = np.random.default_rng(0)
    model = {f"w{i}": rng.standard_normal(1000).astype(np.float32) for i in range(1000)}
    grad = {k: rng.standard_normal(1000).astype(np.float32) * 1e-3 for k in model}
    best: dict[str, dict[str, float]] = {k: {} for k in RULES}
    with threadpool_limits(args.threads):
        states = {k: opt.setup(make(), model) for k, make in RULES.items()}
        for _ in range(args.rounds):
            for k, state in states.items():
                for _ in range(args.steps):
                    TIMES.clear()
                    timed("step", opt.update_)(state, model, grad)
                    for phase, t in TIMES.items():
                        best[k][phase] = min(best[k].get(phase, np.inf), t)
    print(f"fastest of {args.rounds} x {args.steps} steps, us, {args.threads} thread(s)")
    print(f"{'':22}" + "".join(f"{p[:10]:>11}" for p in PHASES) + "   /adamw")
    for k, phases in best.items():
        row = "".join(f"{phases.get(p, 0.0) * 1e6:11.0f}" for p in PHASES)
        print(f"{k:22}{row}   {phases['step'] / best['adamw']['step']:.2f}")


if __name__ == "__main__":
    main()
