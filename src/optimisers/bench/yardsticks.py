"""The two yardsticks every speed case is held against.

probe
    The machine's bandwidth for the case's access pattern: a plain fused OpenMP pass with
    the rule's reads and in-place writes over one array of the case's size
    (:mod:`optimisers._probe`).  ``% bw`` is its time over the step's.
plain
    The rule's own arithmetic written as one plain OpenMP loop over the whole array -- no
    tiles, no stages, no per-step scalars (``optimisers._probe.plain_pass``, for the rules
    of :data:`PLAIN_RULES`): the issue's "plain fused C pass of the same arithmetic".  It
    is compiled once per kernel build with that build's flags; the bench runs the one
    named like the kernel build in use (``optimisers._native`` chose it), so the
    comparison is between two loops of the same instruction set.

>>> opt.kernel_isa() in _probe.plain_pass_isas()
True
"""

from __future__ import annotations

import numpy as np

import optimisers as opt
import optimisers._probe as _probe  # (a compiled module: mypy skips it)

from .cases import Unavailable, gradient_values

__all__ = ["PLAIN_RULES", "probe_step", "plain_step"]


#: the rules the plain pass knows
PLAIN_RULES = tuple(_probe.PLAIN_RULES)


def probe_step(case, seed=0):
    """The plain fused passes of ``case``'s access pattern over one array of its size."""
    passes = case.spec.passes
    n_ro = max(r for r, _ in passes)
    n_up = max(u for _, u in passes)
    ro = [gradient_values(case.size, case.dtype, seed + k) for k in range(n_ro)]
    up = [gradient_values(case.size, case.dtype, seed + 10 + k) for k in range(n_up)]
    calls = [(ro[:r] + up[:u], up[:u]) for r, u in passes]
    run = _probe.probe

    def step():
        for reads, writes in calls:
            run(reads, writes)

    return step


def _plain_hyperparameters(case, rule, T):
    """The slots the plain pass reads for ``rule`` (those of the rule's kernel stage)."""
    one = T(1)
    if case.rule in ("adam", "adamw"):
        b1, b2 = T(rule.beta[0]), T(rule.beta[1])
        hp = (b1, b2, one - b1, one - b2, one - b1, one - b2, T(rule.epsilon), T(rule.eta))
        return hp + ((T(rule.lambda_),) if case.rule == "adamw" else ()), 2
    if case.rule == "momentum":
        return (T(rule.eta), T(rule.rho)), 1
    b1, b2 = T(rule.beta[0]), T(rule.beta[1])  # lion
    return (b1, b2, one - b1, one - b2, T(rule.eta)), 1


def plain_step(case, seed=0):
    """The plain pass of ``case``'s rule over one array of its size.  Its time over ours
    is how close the engine comes to the plainest loop of the same arithmetic."""
    isa = opt.kernel_isa()
    if isa not in _probe.plain_pass_isas():
        raise Unavailable(f"no plain pass built for the {isa} kernels")
    T = np.dtype(case.dtype).type
    hp, n_buffers = _plain_hyperparameters(case, case.spec.rule(), T)
    hp = tuple(float(h) for h in hp)
    x = gradient_values(case.size, case.dtype, seed)
    g = gradient_values(case.size, case.dtype, seed + 1)
    buffers = tuple(np.zeros(case.size, case.dtype) for _ in range(n_buffers))
    run = _probe.plain_pass

    def step():
        run(isa, case.rule, x, g, buffers, hp)

    return step
