"""Where a planned ``optimisers.torch.Optimizer.step()`` goes, on 1000 float32 tensors of
1000 elements with Adam, one thread: each part timed on its own (fastest of 300), beside
torch's fused Adam, the general path and ``update_`` (bench/RESULTS.md, section 22).

    python bench/torch_plan_profile.py
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

import optimisers as opt
from optimisers.torch import Optimizer


def tensors() -> list[torch.Tensor]:
    """1000 float32 tensors of 1000 elements, each with a gradient."""
    rng = np.random.default_rng(0)
    ps = [torch.from_numpy(rng.standard_normal(1000).astype(np.float32)) for _ in range(1000)]
    for p in ps:
        p.grad = torch.from_numpy(rng.standard_normal(1000).astype(np.float32))
    return ps


def show(name: str, f: Callable[[], Any], n: int = 300) -> None:
    """Print the fastest of ``n`` calls of ``f``, in us."""
    best = float("inf")
    for _ in range(n):
        t0 = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t0)
    print(f"{name:44s} {best * 1e6:8.1f} us")


def main() -> None:
    """Print the profile (see the module's docstring)."""
    torch.set_num_threads(1)
    with threadpool_limits(1):
        ps, theirs = tensors(), tensors()
        o = Optimizer(ps, opt.Adam())
        o.step()
        o.step()
        fused = torch.optim.Adam(theirs, fused=True)
        plan = o._planned
        assert plan
        grads: list[Any] = [p.grad for p in ps]
        addresses = [g.data_ptr() for g in grads]

        def fresh_gradients() -> None:
            plan._refs = None  # as if the gradients were new tensors
            plan._gradient_addresses(grads)

        show("torch Adam(fused=True).step()", fused.step)
        show("Optimizer.step() (planned)", o.step)
        show("  Plan.step", lambda: plan.step(o.param_groups, o._groups, o._tree, False))
        show("    Replay.run_with (kernels, prologues)", lambda: plan._replay.run_with(addresses))
        show("    gradients: same tensors as last step", lambda: plan._gradient_addresses(grads))
        show("    gradients: new tensors (all checks)", fresh_gradients)
        show("    parameters' addresses", lambda: list(map(torch.Tensor.data_ptr, ps)))
        show("    .grad of 1000 parameters", lambda: [p.grad for p in ps])
        show("  Plan.holds (state tree handed out)", lambda: plan.holds(o._tree))

        group = o.param_groups[0]

        def new_lr() -> None:  # a scheduler such as OneCycleLR: the plan applies it
            group["lr"] = 1e-3 if group["lr"] != 1e-3 else 2e-3
            o.step()

        show("Optimizer.step() with a new lr each step", new_lr)
        assert o._planned is plan

        general = Optimizer(tensors(), opt.Adam())

        def general_step() -> None:
            general._planned = False
            general.step()

        show("Optimizer.step() general path (as before)", general_step)
        xs, gs = [p.numpy() for p in ps], [g.numpy() for g in grads]
        state = opt.setup(opt.Adam(), xs)
        show("update_ on the numpy arrays", lambda: opt.update_(state, xs, gs))


if __name__ == "__main__":
    main()
