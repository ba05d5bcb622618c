"""The param groups of :class:`optimisers.torch.Optimizer`: each group's parameters, its
model of numpy views and state tree, and how its ``lr`` becomes the ``eta`` of its rule.

Imported only by :mod:`optimisers.torch` (it imports torch).

>>> import optimisers as opt
>>> default_lr(opt.Adam(0.01)), default_lr(opt.AdaDelta())
(0.01, 1.0)
>>> at_lr(opt.OptimiserChain(opt.RMSProp(1.0), opt.Momentum(0.01)), 0.5, 1.0).opts[1]
Momentum(eta=0.005, rho=0.9)
"""

from __future__ import annotations

from typing import Any

import torch

from . import _torch_views as tv
from ._adjust import adjust
from ._composite import MixedPrecision, OptimiserChain
from ._leaf import Leaf
from ._rule import Rule
from ._rules_sgd import Descent
from ._schedule import Schedule
from ._tree import setup

__all__ = ["Group", "at_lr", "base_rule", "default_lr"]

_DATA_PTR = torch.Tensor.data_ptr


def _etas(rule: Rule) -> list[Any]:
    """The ``eta`` of every rule inside ``rule`` (a chain's members, a wrapper's rule)."""
    found = [getattr(rule, "eta")] if "eta" in rule._fields() else []  # noqa: B009
    wrapped = getattr(rule, "rule", None)
    for inner in getattr(rule, "opts", ()) or ((wrapped,) if isinstance(wrapped, Rule) else ()):
        found += _etas(inner)
    return found


def base_rule(rule: Rule, lr: float, given: bool) -> Rule:
    """The rule a group starts with at its first ``lr``: with ``lr`` given in the group,
    every ``eta`` set to it; a rule with no ``eta`` anywhere followed by ``Descent(lr)``
    (inside a ``MixedPrecision``), which scales its step as torch's ``Adadelta`` does."""
    if _etas(rule):
        return adjust(rule, eta=lr) if given else rule
    if isinstance(rule, MixedPrecision):
        return MixedPrecision(rule.dtype, OptimiserChain(rule.rule, Descent(lr)))
    return OptimiserChain(rule, Descent(lr))


def at_lr(rule: Rule, lr: float, lr0: float) -> Rule:
    """The base ``rule`` (made for the learning rate ``lr0``) at ``lr``: every ``eta``
    equal to ``lr0`` becomes ``lr`` exactly; another one (the second learning rate of a
    chain such as ``RMSProp(1.0) -> Momentum(0.01)``) is scaled by ``lr / lr0``, so that a
    scheduler moves the chain's learning rates together."""
    if isinstance(rule, OptimiserChain):
        return OptimiserChain(*(at_lr(r, lr, lr0) for r in rule.opts))
    if isinstance(rule, MixedPrecision):
        return MixedPrecision(rule.dtype, at_lr(rule.rule, lr, lr0))
    if "eta" in rule._fields():
        eta = getattr(rule, "eta")  # noqa: B009 - a field the Rule base does not declare
        same = isinstance(eta, Schedule) or eta == lr0 or lr0 == 0
        return adjust(rule, eta=lr if same else eta * (lr / lr0))
    return adjust(rule, eta=lr) if _etas(rule) else rule  # another kind of wrapper


def default_lr(rule: Rule) -> float | None:
    """The ``lr`` of a group that gives none: its rule's (first) ``eta``, 1.0 for a rule
    without one, ``None`` when that ``eta`` is a schedule (no number to give)."""
    etas = _etas(rule)
    if not etas:
        return 1.0
    return None if isinstance(etas[0], Schedule) else float(etas[0])


class Group:
    """What the optimiser keeps of one param group: its parameters and their names, the
    model of numpy views and its state tree (made once), and the rule and ``lr`` its
    leaves were last given (so that a change of either is applied once)."""

    __slots__ = (
        "_labels",
        "base",
        "index",
        "leaves",
        "lr",
        "lr0",
        "model",
        "names",
        "params",
        "ptrs",
        "rule",
        "tree",
    )

    def __init__(
        self,
        index: int,
        params: list[torch.Tensor],
        names: list[str],
        labels: list[str],
        rule: Rule,
        lr: float,
        given: bool,
        low_precision_state: bool,
    ) -> None:
        self.index, self.params, self.names, self._labels = index, params, names, labels
        self.model = {
            n: tv.tensor_view(p, labels[i]) for i, (n, p) in enumerate(zip(names, params))
        }
        self.rule, self.lr, self.lr0 = rule, lr, lr
        self.base = base_rule(rule, lr, given)
        self.tree = setup(self.base, self.model, low_precision_state=low_precision_state)
        self.leaves: list[Leaf] = [self.tree[n] for n in names]
        self.ptrs = list(map(_DATA_PTR, params))

    @classmethod
    def build(
        cls, group: dict[str, Any], index: int, given: bool, low_precision_state: bool
    ) -> Group:
        """The entry of a group torch has just added (its parameters checked here)."""
        params = list(group["params"])
        named = group.get("param_names")
        names = [str(n) for n in named] if named else [str(i) for i in range(len(params))]
        labels = [
            f"param group {index}, parameter {n!r}"
            if named
            else f"param group {index}, parameter {i}"
            for i, n in enumerate(names)
        ]
        if len(set(names)) != len(names):
            raise ValueError(f"param group {index}: parameter names repeat: {names}")
        for p, label in zip(params, labels):
            tv.check_parameter(p, label)
        return cls(
            index,
            params,
            names,
            labels,
            group["rule"],
            float(group["lr"]),
            given,
            low_precision_state,
        )

    def where(self, i: int) -> str:
        """How errors name the ``i``-th parameter of the group."""
        return self._labels[i]

    def refresh(self, group: dict[str, Any]) -> bool:
        """Apply a new ``lr`` or ``rule`` of the group to its leaves (once per change), and
        refuse a parameter whose memory changed since the views were made; whether there
        was a change."""
        lr, rule = group["lr"], group["rule"]
        changed = lr != self.lr or rule is not self.rule
        if changed:
            lr = float(lr)
            if not isinstance(rule, Rule):
                raise TypeError(
                    f"param group {self.index}: 'rule' must be an optimisers rule, got {rule!r}"
                )
            if rule is not self.rule:  # a new rule: its etas take the group's lr
                self.base, self.lr0 = base_rule(rule, lr, True), lr
            new = at_lr(self.base, lr, self.lr0)
            for leaf in self.leaves:
                leaf.rule = new
            self.lr, self.rule = lr, rule
        params = group["params"]
        if list(map(_DATA_PTR, params)) != self.ptrs:  # same memory (and count) as set up
            self._replaced(params)
        return changed

    def _replaced(self, params: list[torch.Tensor]) -> None:
        for i, p in enumerate(params[: len(self.params)]):
            if p is not self.params[i] or p.data_ptr() != self.ptrs[i]:
                raise RuntimeError(
                    f"{self.where(i)} was replaced or moved to new memory "
                    f"since it was added (net.to(...), .data = ...); build "
                    f"the optimiser again for the new tensors"
                )
        raise RuntimeError(
            f"param group {self.index}: its list of parameters changed "
            f"({len(self.params)} -> {len(params)}); use add_param_group"
        )
