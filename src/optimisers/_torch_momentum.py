"""A param group's momentum for torch's schedulers that cycle it: ``"betas"`` or ``"momentum"``.

torch's ``OneCycleLR`` and ``CyclicLR`` cycle the momentum by default
(``cycle_momentum=True``): they read ``"betas"`` (torch's Adam family) or ``"momentum"``
(``SGD``) in the optimiser's defaults and write it into every group at each step.  A group's
``"betas"`` is the ``beta`` pair of its rule (every rule in it that has one: Adam and its
relatives, Lion, ...), as its ``"lr"`` is the rule's ``eta``; a group's ``"momentum"`` is the
``rho`` of its ``Momentum`` or ``Nesterov``.  A rule with neither has no such key, and a
group that gives one is refused.

Imported only by :mod:`optimisers.torch` (through :mod:`._torch_groups`).

>>> import optimisers as opt
>>> momentum_key(opt.AdamW(1e-3)), momentum_key(opt.Momentum(0.1, 0.8)), momentum_key(opt.RMSProp())
(('betas', (0.9, 0.999)), ('momentum', 0.8), None)
>>> with_momentum(opt.OptimiserChain(opt.WeightDecay(), opt.Nesterov()), "momentum", 0.5).opts[1]
Nesterov(eta=0.001, rho=0.5)
"""

from __future__ import annotations

from typing import Any

from ._adjust import adjust
from ._composite import MixedPrecision, OptimiserChain
from ._rule import Rule
from ._rules_sgd import Momentum, Nesterov

__all__ = ["momentum_key", "with_momentum"]


def momentum_key(rule: Rule) -> tuple[str, Any] | None:
    """``("betas", beta)`` of the first rule in ``rule`` with a ``beta`` pair of numbers,
    else ``("momentum", rho)`` of its first ``Momentum`` or ``Nesterov`` with a number
    ``rho``, else None (no key: a schedule there is the rule's own)."""
    found = _first(rule, _beta) or _first(rule, _rho)
    return found


def _beta(rule: Rule) -> tuple[str, Any] | None:
    beta = getattr(rule, "beta", None) if "beta" in rule._fields() else None
    if isinstance(beta, tuple) and len(beta) == 2 and all(isinstance(b, float) for b in beta):
        return "betas", beta
    return None


def _rho(rule: Rule) -> tuple[str, Any] | None:
    if isinstance(rule, (Momentum, Nesterov)) and isinstance(rule.rho, float):
        return "momentum", rule.rho
    return None


def _first(rule: Rule, find: Any) -> tuple[str, Any] | None:
    if isinstance(rule, OptimiserChain):
        for r in rule.opts:
            got = _first(r, find)
            if got is not None:
                return got
        return None
    if isinstance(rule, MixedPrecision):
        return _first(rule.rule, find)
    result: tuple[str, Any] | None = find(rule)
    return result


def with_momentum(rule: Rule, key: str, value: Any) -> Rule:
    """``rule`` with the group's ``"betas"`` as every ``beta`` pair in it, or its
    ``"momentum"`` as the ``rho`` of every ``Momentum`` and ``Nesterov`` (a ``ValueError``
    from the rule's checks for a value out of range)."""
    if isinstance(rule, OptimiserChain):
        return OptimiserChain(*(with_momentum(r, key, value) for r in rule.opts))
    if isinstance(rule, MixedPrecision):
        return MixedPrecision(rule.dtype, with_momentum(rule.rule, key, value))
    if key == "betas" and _beta(rule) is not None:
        return adjust(rule, beta=tuple(float(b) for b in value))
    if key == "momentum" and _rho(rule) is not None:
        return adjust(rule, rho=float(value))
    return rule
