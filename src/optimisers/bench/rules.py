"""The rules the benchmark knows by name, and the bytes each one must move.

A rule's *minimal memory traffic* is what any implementation of its step has to read and
write per parameter element, however it is written.  It is given here as a list of
*passes* over memory, each pass a pair ``(read_only, updated)``:

* ``read_only`` streams are read and never written (the gradient ``g``);
* ``updated`` streams are read and written back in place (the parameter ``x`` and every
  state array).

A pass costs ``read_only + 2 * updated`` arrays of the parameter's itemsize per element.
The probe (``optimisers._probe``) measures the machine's bandwidth on exactly these passes.

==================  =====================================  =====================  ======
rule                read                                   write                  arrays
==================  =====================================  =====================  ======
descent             x, g                                   x                      3
momentum, nesterov  x, g, v                                x, v                   5
lion                x, g, m                                x, m                   5
rmsprop, adagrad    x, g, acc                              x, acc                 5
adam, nadam, adamw  x, g, m, v                             x, m, v                7
  (AdamW coupled or not: x is read for the step anyway)
adabelief, radam    x, g, m, s                             x, m, s                7
adadelta, rprop     x, g, two states                       x, two states          7
amsgrad, oadam      x, g, three states                     x, three states        9
clipnorm+adamw      g (the norm), then x, g, m, v          x, m, v                8
clipgrad+adam       x, g, m, v  (the clip is fused)        x, m, v                7
weightdecay+adam    x, g, m, v  (the decay is fused)       x, m, v                7
==================  =====================================  =====================  ======

Adam in float32: 7 arrays x 4 bytes = 28 bytes per element.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import optimisers as opt

__all__ = ["RuleSpec", "RULES", "get", "names", "arrays_per_element", "bytes_per_step"]

# The two passes every rule below is made of.
_NORM = (1, 0)          # read g once, write nothing (ClipNorm's norm)


def _p(updated):
    """One fused pass that reads g and updates ``updated`` arrays (x and the states)."""
    return (1, updated)


@dataclass(frozen=True)
class RuleSpec:
    """A named rule of the benchmark.

    ``make(eta)`` builds the rule (``eta=None``: the speed benchmark's default);
    ``passes`` its minimal traffic (see the module docstring); ``lr`` the learning rates of
    the quality problems, by problem name, ``"*"`` for the rest.
    """

    name: str
    make: Callable
    passes: tuple
    lr: dict = field(default_factory=dict)
    doc: str = ""

    def rule(self, eta=None):
        return self.make(eta)

    def learning_rate(self, problem):
        """The learning rate this rule uses on the quality ``problem`` (None: no eta)."""
        return self.lr.get(problem, self.lr.get("*"))


def _eta(default):
    return lambda eta: default if eta is None else eta


def _spec(name, make, passes, lr, doc):
    return RuleSpec(name, make, tuple(passes), dict(lr), doc)


_ADAM_LR = {"rosenbrock": 0.02, "logistic": 0.01, "spirals": 0.03}

RULES = {s.name: s for s in [
    _spec("descent", lambda eta: opt.Descent(_eta(1e-3)(eta)), [_p(1)],
          {"rosenbrock": 1e-3, "logistic": 1.0, "spirals": 1.0}, "Descent"),
    _spec("momentum", lambda eta: opt.Momentum(_eta(1e-3)(eta), 0.9), [_p(2)],
          {"rosenbrock": 2e-4, "logistic": 0.1, "spirals": 0.3}, "Momentum(rho=0.9)"),
    _spec("nesterov", lambda eta: opt.Nesterov(_eta(1e-3)(eta), 0.9), [_p(2)],
          {"rosenbrock": 2e-4, "logistic": 0.1, "spirals": 0.3}, "Nesterov(rho=0.9)"),
    _spec("rmsprop", lambda eta: opt.RMSProp(_eta(1e-3)(eta)), [_p(2)],
          {"rosenbrock": 0.005, "logistic": 0.01, "spirals": 0.003}, "RMSProp"),
    _spec("adagrad", lambda eta: opt.AdaGrad(_eta(1e-2)(eta)), [_p(2)],
          {"rosenbrock": 0.5, "logistic": 0.1, "spirals": 0.3}, "AdaGrad"),
    _spec("adadelta", lambda eta: opt.AdaDelta(), [_p(3)], {}, "AdaDelta (no eta)"),
    _spec("rprop", lambda eta: opt.Rprop(_eta(1e-3)(eta)), [_p(3)],
          {"*": 1e-3}, "Rprop (full-batch only)"),
    _spec("adam", lambda eta: opt.Adam(_eta(1e-3)(eta)), [_p(3)], _ADAM_LR, "Adam"),
    _spec("nadam", lambda eta: opt.NAdam(_eta(1e-3)(eta)), [_p(3)], _ADAM_LR, "NAdam"),
    _spec("radam", lambda eta: opt.RAdam(_eta(1e-3)(eta)), [_p(3)],
          dict(_ADAM_LR, rosenbrock=2e-3), "RAdam (its un-adapted warm-up steps need a small eta)"),
    _spec("adamax", lambda eta: opt.AdaMax(_eta(1e-3)(eta)), [_p(3)], _ADAM_LR, "AdaMax"),
    _spec("adabelief", lambda eta: opt.AdaBelief(_eta(1e-3)(eta)), [_p(3)], _ADAM_LR,
          "AdaBelief"),
    _spec("amsgrad", lambda eta: opt.AMSGrad(_eta(1e-3)(eta)), [_p(4)], _ADAM_LR, "AMSGrad"),
    _spec("oadam", lambda eta: opt.OAdam(_eta(1e-3)(eta)), [_p(4)], _ADAM_LR, "OAdam"),
    _spec("adamw", lambda eta: opt.AdamW(_eta(1e-3)(eta), lambda_=1e-2), [_p(3)], _ADAM_LR,
          "AdamW(lambda_=0.01), coupled as in PyTorch"),
    _spec("lion", lambda eta: opt.Lion(_eta(1e-4)(eta)), [_p(2)],
          {"rosenbrock": 2e-3, "logistic": 0.01, "spirals": 0.01}, "Lion"),
    _spec("clipnorm+adamw",
          lambda eta: opt.OptimiserChain(opt.ClipNorm(1.0), opt.AdamW(_eta(1e-3)(eta),
                                                                      lambda_=1e-2)),
          [_NORM, _p(3)], _ADAM_LR, "OptimiserChain(ClipNorm(1), AdamW(lambda_=0.01))"),
    _spec("clipgrad+adam",
          lambda eta: opt.OptimiserChain(opt.ClipGrad(1.0), opt.Adam(_eta(1e-3)(eta))),
          [_p(3)], _ADAM_LR, "OptimiserChain(ClipGrad(1), Adam)"),
    _spec("weightdecay+adam",
          lambda eta: opt.OptimiserChain(opt.WeightDecay(1e-4), opt.Adam(_eta(1e-3)(eta))),
          [_p(3)], _ADAM_LR, "OptimiserChain(WeightDecay(1e-4), Adam)"),
]}


def names():
    """Every rule name, in table order."""
    return list(RULES)


def get(name):
    """The :class:`RuleSpec` called ``name`` (case-insensitive); ``KeyError`` lists them."""
    key = name.strip().lower()
    if key not in RULES:
        raise KeyError(f"unknown rule {name!r}; known rules: {', '.join(RULES)}")
    return RULES[key]


def arrays_per_element(passes):
    """How many arrays of the parameter's itemsize the ``passes`` move per element.

    >>> arrays_per_element(get("adam").passes), arrays_per_element(get("clipnorm+adamw").passes)
    (7, 8)
    """
    return sum(r + 2 * u for r, u in passes)


def bytes_per_step(passes, size, itemsize):
    """The minimal bytes one step moves over ``size`` elements."""
    return arrays_per_element(passes) * size * itemsize
