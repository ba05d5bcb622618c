"""The quality mode: what each rule achieves on the built-in problems (:mod:`.problems`).

Every rule trains every problem from the same start for the same number of steps, with
the learning rate :func:`learning_rate` gives it.  The table shows the final loss and the
number of steps until the loss first reached the problem's target.  Each problem also gets
a row for the training recipe of issue 16 (:func:`recipe`): AdamW under a warm-up and cosine
schedule, gradients clipped to a global norm of 1, no decay on vectors, non-finite steps
skipped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

import optimisers as opt
from optimisers import schedules

from . import problems as P
from . import rules

__all__ = ["LEARNING_RATES", "RECIPE", "learning_rate", "recipe", "run_quality", "runs", "train"]

# Learning rates tuned by hand on the problems, by rule name, "*" for the problems not
# named: a rule's default eta suits some problems and not others, and no property of the
# rule tells which.  "adam" is also the entry of every rule of Adam's kind (see
# learning_rate); a rule with no entry trains at its default eta.
_ADAM_LR = {"rosenbrock": 0.02, "logistic": 0.01, "spirals": 0.03}
LEARNING_RATES = {
    "descent": {"rosenbrock": 1e-3, "logistic": 1.0, "spirals": 1.0},
    "momentum": {"rosenbrock": 2e-4, "logistic": 0.1, "spirals": 0.3},
    "nesterov": {"rosenbrock": 2e-4, "logistic": 0.1, "spirals": 0.3},
    "rmsprop": {"rosenbrock": 0.005, "logistic": 0.01, "spirals": 0.003},
    "adagrad": {"rosenbrock": 0.5, "logistic": 0.1, "spirals": 0.3},
    "rprop": {"*": 1e-3},
    "adam": _ADAM_LR,
    "radam": dict(_ADAM_LR, rosenbrock=2e-3),  # its un-adapted warm-up needs a small eta
    "lion": {"rosenbrock": 2e-3, "logistic": 0.01, "spirals": 0.01},
    # Muon trains the matrices; AdamW, at the same eta, the rest (RuleSpec.for_model)
    "muon": _ADAM_LR,
    # Adafactor's eta caps its relative step min(eta, 1/sqrt(t)), the step's scale RMS(x)
    "adafactor": {"rosenbrock": 0.03, "logistic": 1.0, "spirals": 1.0},
}


def learning_rate(spec, problem):
    """The learning rate ``spec`` trains ``problem`` with (None: its default).

    Looked up by the spec's name, then by the name of the last rule of a chain, then, for
    a rule of Adam's kind (a pair of betas and an epsilon, as Adam and
    its variants have), under "adam".

    >>> [learning_rate(rules.get(n), "rosenbrock") for n in ("adam", "clipnorm+adamw", "radam")]
    [0.02, 0.02, 0.002]
    """
    last = spec.rule()
    last = last.opts[-1] if isinstance(last, opt.OptimiserChain) else last
    last = getattr(last, "rule", last)  # Lookahead, EMA: the rule they wrap
    adam_kind = hasattr(last, "beta") and hasattr(last, "epsilon")
    for key in (spec.name, type(last).__name__.lower(), "adam" if adam_kind else None):
        table = LEARNING_RATES.get(key)
        if table is not None:
            return table.get(problem, table.get("*"))
    return None


# the name of the recipe's row, and its weight decay on matrices (PyTorch's default, as the
# benchmark's AdamW: rules.SETTINGS)
RECIPE = "recipe"
_RECIPE_DECAY = 1e-2


def recipe(peak: float, steps: int) -> Callable[[opt.KeyPath, np.ndarray], opt.Rule]:
    """The training recipe of issue 16 for a run of ``steps`` steps, as a rule function
    for :func:`optimisers.setup`: ``AdamW`` whose learning rate warms up from 0 to ``peak``
    over the first 5% of the steps and decays to 0 along a cosine by the last, with weight
    decay 0.01 on arrays of two or more dimensions only, led by ``SkipNonFinite`` and
    ``ClipGlobalNorm(1.0)``.

    >>> rule_for = recipe(0.01, 100)
    >>> rule_for(opt.KeyPath("b"), np.zeros(3)).opts[2].lambda_
    0.0
    >>> rule_for(opt.KeyPath("w"), np.zeros((3, 3))).opts[2].eta(5)
    0.01
    """
    eta = schedules.warmup_cosine_decay(0.0, peak, max(1, steps // 20), steps)

    def rule_for(path: opt.KeyPath, x: np.ndarray) -> opt.Rule:
        decay = _RECIPE_DECAY if x.ndim >= 2 else 0.0
        return opt.OptimiserChain(
            opt.SkipNonFinite(), opt.ClipGlobalNorm(1.0), opt.AdamW(eta, lambda_=decay)
        )

    return rule_for


def train(spec, problem, steps):
    """Train ``problem`` with the rule ``spec`` for ``steps`` steps: the loss curve.

    ``spec`` may also be :data:`RECIPE`, the training recipe (:func:`recipe`) at the
    learning rate of AdamW on that problem.  ``curve[t]`` is the loss after ``t`` updates
    (``len(curve) == steps + 1``); a run whose loss becomes NaN or infinite stops there.

    >>> curve = train(rules.get("adam"), P.get("logistic"), 20)
    >>> len(curve), curve[-1] < curve[0]
    (21, True)
    """
    model = problem.init()
    if spec == RECIPE:
        rule = recipe(learning_rate(rules.get("adamw"), problem.name), steps)
    else:
        rule = spec.for_model(learning_rate(spec, problem.name))
    state = opt.setup(rule, model)
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


def runs(rule_names: list, problem_names: list) -> int:
    """How many training runs :func:`run_quality` makes (the recipe's row included)."""
    return (len(rule_names) + 1) * len(problem_names) if rule_names else 0


def run_quality(rule_names, problem_names=None, steps=None, progress=None):
    """Train every rule on every problem, then the training recipe (row ``"recipe"``, see
    :func:`recipe`): ``(rows, curves)``.

    ``steps`` overrides every problem's own step count.  ``curves`` maps
    ``(rule, problem)`` to the loss curve."""
    problem_names = list(P.PROBLEMS) if problem_names is None else problem_names
    rows, curves = [], {}
    for pname in problem_names:
        problem = P.get(pname)
        n = problem.steps if steps is None else steps
        for rname in [*rule_names, RECIPE] if rule_names else []:
            spec = RECIPE if rname == RECIPE else rules.get(rname)
            if progress is not None:
                progress.show(f"quality {rname} {pname}")
            t0 = time.perf_counter()
            curve = train(spec, problem, n)
            seconds = time.perf_counter() - t0
            curves[(rname, pname)] = curve
            final = curve[-1]
            rows.append(
                {
                    "section": "quality",
                    "rule": rname,
                    "problem": pname,
                    "lr": learning_rate(rules.get("adamw") if spec == RECIPE else spec, pname),
                    "steps": n,
                    "initial_loss": curve[0],
                    "final_loss": final,
                    "best_loss": min(curve) if all(map(math.isfinite, curve)) else math.nan,
                    "target": problem.target,
                    "steps_to_target": _steps_to(curve, problem.target),
                    "diverged": not math.isfinite(final),
                    "seconds": seconds,
                }
            )
            if progress is not None:
                progress.advance(f"quality {rname} {pname}")
    return rows, curves
