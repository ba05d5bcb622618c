"""The quality mode: what each rule achieves on the built-in problems (:mod:`.problems`).

Every rule trains every problem from the same start for the same number of steps, with its
learning rate from the table in :mod:`.rules` (``RuleSpec.lr``).  The table shows the final
loss and the number of steps until the loss first reached the problem's target.
"""

from __future__ import annotations

import math
import time

import optimisers as opt

from . import problems as P
from . import rules

__all__ = ["train", "run_quality"]


def train(spec, problem, steps):
    """Train ``problem`` with the rule ``spec`` for ``steps`` steps: the loss curve.

    ``curve[t]`` is the loss after ``t`` updates (``len(curve) == steps + 1``); a run whose
    loss becomes NaN or infinite stops there.

    >>> curve = train(rules.get("adam"), P.get("logistic"), 20)
    >>> len(curve), curve[-1] < curve[0]
    (21, True)
    """
    model = problem.init()
    state = opt.setup(spec.rule(spec.learning_rate(problem.name)), model)
    curve = []
    for _ in range(steps):
        loss, grad = problem.loss_grad(model)
        curve.append(loss)
        if not math.isfinite(loss):
            return curve
        state, model = opt.update_(state, model, grad)
    curve.append(problem.loss_grad(model)[0])
    return curve


def _steps_to(curve, target):
    for t, loss in enumerate(curve):
        if loss <= target:
            return t
    return None


def run_quality(rule_names, problem_names=None, steps=None, progress=None):
    """Train every rule on every problem: ``(rows, curves)``.

    ``steps`` overrides every problem's own step count.  ``curves`` maps
    ``(rule, problem)`` to the loss curve."""
    problem_names = list(P.PROBLEMS) if problem_names is None else problem_names
    rows, curves = [], {}
    for pname in problem_names:
        problem = P.get(pname)
        n = problem.steps if steps is None else steps
        for rname in rule_names:
            spec = rules.get(rname)
            if progress is not None:
                progress.show(f"quality {rname} {pname}")
            t0 = time.perf_counter()
            curve = train(spec, problem, n)
            seconds = time.perf_counter() - t0
            curves[(rname, pname)] = curve
            final = curve[-1]
            rows.append({
                "section": "quality", "rule": rname, "problem": pname,
                "lr": spec.learning_rate(pname), "steps": n,
                "initial_loss": curve[0], "final_loss": final,
                "best_loss": min(curve) if all(map(math.isfinite, curve)) else math.nan,
                "target": problem.target, "steps_to_target": _steps_to(curve, problem.target),
                "diverged": not math.isfinite(final), "seconds": seconds,
            })
            if progress is not None:
                progress.advance(f"quality {rname} {pname}")
    return rows, curves
