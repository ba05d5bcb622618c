"""``optimisers.torch.Optimizer.step()`` against torch.optim on torch models (issue 18).

Two uses:

* a peer of ``optimisers-bench --compare``: the row ``optimisers.torch`` times
  ``Optimizer(params, rule).step()`` on tensors sharing the case's arrays, beside
  ``optimisers`` (``update_`` on the arrays) and torch's loop, foreach and fused steps;
* ``optimisers-bench torch-step [--size N --tensors K --threads 1,2]``: the issue's
  table, ratios measured in one run, round-robin: a model of about 100 tensors and 25M
  float32 parameters (``--size``, ``--tensors``) with AdamW (against
  ``torch.optim.AdamW(fused=True)``) and RAdam, NAdam, RMSProp, AdaMax and AdaDelta
  (against torch's foreach steps, its best for them on the CPU), and 1000 tensors of 1000
  elements with Adam (against ``torch.optim.Adam(fused=True)``), on 1 and 2 threads, twice:
  with gradients that persist between steps (``zero_grad(set_to_none=False)``: the same
  tensors, refilled) and with fresh gradient tensors at every step (``zero_grad()``, torch's
  default: autograd then hands each parameter a new ``.grad``), the row marked ``fresh``.

A ratio is torch's time per step over ours (> 1: ours is faster), paired round by round
(:func:`.timing.ratio`).  torch is imported only when asked for.

>>> from optimisers.bench.cases import Case
>>> names = [name for name, _ in builders(Case("adam", "float32", 1000, 2, 1))]
>>> names == (["optimisers.torch"] if torch_module() else [])
True
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from typing import Any

import optimisers as opt

from .cases import Case, Unavailable, make_arrays, thread_limit
from .compare import _TORCH_RULES, torch_module
from .timing import Budget, Timing, measure, ratio

__all__ = ["builders", "main", "optimiser_step", "torch_table"]


def optimiser_step(case: Case, seed: int = 0) -> Callable[[], None]:
    """``Optimizer(params, rule).step`` over tensors sharing ``case``'s arrays (their
    ``.grad`` set once), with ``params``: the arrays it updates, and ``tensors``: the
    parameter tensors."""
    torch = torch_module()
    if torch is None:
        raise Unavailable("torch is not installed (pip install torch)")
    if getattr(case.spec, "matrix_only", False):
        raise Unavailable(
            f"optimisers.torch: {case.rule} takes matrices only; the bench "
            f"does not build the param groups it needs"
        )
    from_numpy = torch.from_numpy
    Optimizer = _optimizer_class()
    xs, gs = make_arrays(case, seed)
    params = [from_numpy(x) for x in xs]
    for p, g in zip(params, gs):
        p.grad = from_numpy(g)
    optim = Optimizer(params, case.spec.rule())

    def step() -> None:
        optim.step()

    step.params = xs  # type: ignore[attr-defined]
    step.tensors = params  # type: ignore[attr-defined]
    return step


def _optimizer_class() -> Any:
    """``optimisers.torch.Optimizer`` (importing torch: only when torch is installed)."""
    return importlib.import_module("optimisers.torch").Optimizer


def builders(case: Case) -> list[tuple[str, Callable[..., Any]]]:
    """``[("optimisers.torch", builder)]`` where torch is installed, else ``[]``."""
    return [("optimisers.torch", optimiser_step)] if torch_module() is not None else []


# ----------------------------------------------------------------------------------------
# The table

# (rule, the torch variant to beat, the factor the issue asks for)
TARGETS = [
    ("adamw", "fused", 1.0),
    ("radam", "foreach", 2.0),
    ("nadam", "foreach", 2.0),
    ("rmsprop", "foreach", 2.0),
    ("adamax", "foreach", 2.0),
    ("adadelta", "foreach", 2.0),
]
MANY = ("adam", "fused", 3.0)


def _torch_step(case: Case, variant: str) -> Callable[[], None]:
    torch = torch_module()
    name, keywords = _TORCH_RULES[case.rule]
    xs, gs = make_arrays(case)
    params = [torch.from_numpy(x) for x in xs]
    for p, g in zip(params, gs):
        p.grad = torch.from_numpy(g)
    optim = getattr(torch.optim, name)(params, **keywords(case.spec.rule()), **{variant: True})

    def step() -> None:
        optim.step()

    step.tensors = params  # type: ignore[attr-defined]
    return step


def _fresh(step: Callable[[], None]) -> Callable[[], None]:
    """What gives every parameter of ``step`` a new gradient tensor of the same values, as
    autograd does after ``zero_grad()`` (run untimed before each step)."""
    params = step.tensors  # type: ignore[attr-defined]
    base = [p.grad.clone() for p in params]

    def prepare() -> None:
        for p, g in zip(params, base):
            p.grad = g.clone()

    return prepare


def _update_step(case: Case) -> Callable[[], None]:
    """``update_`` on numpy arrays of the case: the engine without the torch layer."""
    xs, gs = make_arrays(case)
    state = opt.setup(case.spec.rule(), xs)
    return lambda: opt.update_(state, xs, gs) and None


def torch_table(
    size: int, tensors: int, threads: list[int], budget: Budget
) -> list[dict[str, Any]]:
    """One row per case: our ``step()``, torch's and ``update_`` on numpy arrays (what
    the torch layer adds), timed round-robin, and the ratio torch / ours."""
    cases = [
        (Case(rule, "float32", size, tensors, t), variant, want)
        for t in threads
        for rule, variant, want in TARGETS
    ]
    cases += [(Case(MANY[0], "float32", 1000 * 1000, 1000, t), MANY[1], MANY[2]) for t in threads]
    rows = []
    for case, variant, want in cases:
        with thread_limit(case.threads):
            steps = {
                "ours": optimiser_step(case),
                "torch": _torch_step(case, variant),
                "update_": _update_step(case),
            }
            timing = measure(steps, budget)
            if case.rule == MANY[0]:  # the same case with fresh gradient tensors each step
                fresh = measure(
                    steps,
                    budget,
                    prepare={"ours": _fresh(steps["ours"]), "torch": _fresh(steps["torch"])},
                )
            del steps
        rows.append(_row(case.label(), case.rule, variant, want, timing))
        if case.rule == MANY[0]:
            rows.append(_row(case.label() + " fresh", case.rule, variant, want, fresh))
    return rows


def _row(
    label: str, rule: str, variant: str, want: float, timing: dict[str, Timing]
) -> dict[str, Any]:
    r = ratio(timing["torch"], timing["ours"])
    return {
        "case": label,
        "torch": f"{_TORCH_RULES[rule][0]}({variant}=True)",
        "ours_ms": 1e3 * timing["ours"].median,
        "torch_ms": 1e3 * timing["torch"].median,
        "update_ms": 1e3 * timing["update_"].median,
        "ratio": r,
        "target": want,
        "met": r >= want,
    }


def main(argv: list[str] | None = None, out: Any = None) -> list[dict[str, Any]]:
    """Print the issue's table (see the module's docstring) to ``out`` (stdout)."""
    out = sys.stdout if out is None else out
    p = argparse.ArgumentParser(
        prog="optimisers-bench torch-step", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--size", type=float, default=25e6, help="parameters (default 25e6)")
    p.add_argument("--tensors", type=int, default=100, help="tensors (default 100)")
    p.add_argument("--threads", default="1,2", help="thread counts (default 1,2)")
    p.add_argument("--rounds", type=int, default=5, help="round-robin rounds (default 5)")
    p.add_argument(
        "--min-time",
        type=float,
        default=1.0,
        help="seconds of timed steps per implementation and case (default 1)",
    )
    args = p.parse_args(argv)
    if torch_module() is None:
        sys.exit("this benchmark needs PyTorch: pip install torch")
    budget = Budget(warmup=2, min_steps=args.rounds, min_time=args.min_time, rounds=args.rounds)
    rows = torch_table(
        int(args.size), args.tensors, [int(t) for t in args.threads.split(",")], budget
    )
    out.write(
        f"torch {torch_module().__version__}; ratio = torch's time / ours per step "
        f"(paired medians of {args.rounds} rounds); update_: the engine on numpy arrays, no "
        f"torch layer\n"
    )
    out.write(
        f"{'case':<36} {'against':<26} {'ours ms':>9} {'torch ms':>9} {'update_':>9} "
        f"{'ratio':>6} {'target':>6}\n"
    )
    for r in rows:
        out.write(
            f"{r['case']:<36} {r['torch']:<26} {r['ours_ms']:9.2f} "
            f"{r['torch_ms']:9.2f} {r['update_ms']:9.2f} {r['ratio']:6.2f} "
            f"{r['target']:>5.1f}x"
            f"{'' if r['met'] else '  not met'}\n"
        )
    return rows
