"""The param groups of :class:`optimisers.torch.Optimizer`: each group's parameters, its
model of numpy views and state tree, and how its ``lr`` becomes the ``eta`` of its rule.

A group's ``lr`` is the ``eta`` of its rule, of *every* rule in a chain that has one
(:func:`at_lr`): a chain with two learning rates, such as ``OptimiserChain(RMSProp(1.0),
Momentum(lr))``, has both moved by a scheduler, so that its step scales as ``lr**2``, not
as ``lr``: such a chain matches torch's ``RMSprop(momentum=...)`` at a constant ``lr``
only, and is not the rule to use with a scheduler.

A ``Momentum`` or ``Nesterov`` runs as torch's ``SGD`` runs it (:func:`leaf_rule`): at
``eta = 1`` its velocity is torch's momentum buffer, and the ``lr`` multiplies the step
after it (``Descent(lr)``), so that a new ``lr`` (0 included) applies to the whole buffer
at once, as in torch, and ``SGD`` with momentum (Nesterov's too) tracks torch's under a
scheduler, its checkpoints holding the buffer whatever the ``lr``.

A parameter that has not taken a step yet has its state made again from the rule at the
``lr`` (and rule) in force when either changes, as torch makes its state at the first
step: ``Rprop``'s step sizes start at the ``lr`` of a warm-up scheduler, not at the
constructor's (only for rules whose ``init`` reads ``eta``, and on a new rule).

Imported only by :mod:`optimisers.torch` (it imports torch).

>>> import optimisers as opt
>>> default_lr(opt.Adam(0.01)), default_lr(opt.AdaDelta())
(0.01, 1.0)
>>> at_lr(opt.OptimiserChain(opt.RMSProp(1.0), opt.Momentum(0.01)), 0.5, 1.0).opts[1]
Momentum(eta=0.005, rho=0.9)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from . import _torch_views as tv
from ._adjust import adjust
from ._composite import MixedPrecision, OptimiserChain
from ._leaf import Leaf, state_misfit, tree_equal
from ._rule import Rule, init
from ._rules_sgd import Descent, Momentum, Nesterov
from ._schedule import Schedule
from ._torch_momentum import momentum_key, with_momentum
from ._tree import setup

__all__ = [
    "REFUSED_KEYS",
    "Group",
    "at_lr",
    "base_rule",
    "check_keys",
    "check_new_group",
    "default_lr",
    "leaf_rule",
]

_DATA_PTR = torch.Tensor.data_ptr

# The hyper-parameters of torch.optim's optimisers (their constructors' keywords, lr
# aside): this optimiser reads none of them from a group (its rule holds them), so a group
# that has one is refused rather than silently run without it.  The keys torch's lr
# schedulers write (initial_lr, max_lr, min_lr, base_momentum, max_momentum) are not here.
TORCH_KEYS = frozenset(
    {
        "adjust_lr_fn", "alpha", "amsgrad", "beta2_decay", "betas", "capturable",
        "centered", "d", "dampening", "decoupled_weight_decay", "differentiable", "eps",
        "etas", "foreach", "fused", "history_size", "initial_accumulator_value", "lambd",
        "line_search_fn", "lr_decay", "max_eval", "max_iter", "maximize", "momentum",
        "momentum_decay", "nesterov", "ns_coefficients", "ns_steps", "rho", "step_sizes",
        "t0", "tolerance_change", "tolerance_grad", "weight_decay",
    }
)  # fmt: skip
# the keys refused in a group whose rule has no momentum key, or has "betas" / "momentum"
# (_torch_momentum), which it allows
REFUSED_KEYS = {k: TORCH_KEYS.difference((k,)) for k in (None, "betas", "momentum")}
_FLAGS = ("foreach", "fused", "capturable", "differentiable")
_HINTS = {
    "weight_decay": "opt.AdamW(1e-3, lambda_=0.01) (torch's AdamW; lambda_ may be a "
    "schedule of optimisers.schedules), or opt.OptimiserChain(opt.WeightDecay(0.01), "
    "opt.Adam(1e-3)) (torch's Adam with weight_decay)",
    "betas": "opt.Adam(1e-3, beta=(0.9, 0.999))",
    "eps": "opt.Adam(1e-3, epsilon=1e-8)",
    "momentum": "opt.Momentum(1e-3, rho=0.9)",
    "nesterov": "opt.Nesterov(1e-3, rho=0.9)",
}


def check_keys(
    group: dict[str, Any], at: str, saved: bool = False, allowed: str | None = None
) -> None:
    """``ValueError`` naming ``at`` when ``group`` (``saved``: a group of a state dict) has
    a key of :data:`TORCH_KEYS` other than ``allowed`` (the ``"betas"`` or ``"momentum"``
    of its rule: ``_torch_momentum``)."""
    found = sorted(REFUSED_KEYS[allowed].intersection(group))
    if not found:
        return
    key = found[0]
    if key in ("betas", "momentum") and not saved:
        todo = (
            f"its rule has no {'beta pair' if key == 'betas' else 'Momentum or Nesterov'} "
            f"for it to set" + (f" (its rule's key is {allowed!r})" if allowed else "")
        )
    elif saved:
        todo = "it had no effect where it was saved: delete it from the state dict's group"
    elif key in _FLAGS:
        todo = "leave it out: this optimiser always runs its own fused CPU kernels"
    elif key == "maximize":
        todo = "leave it out and minimise the negated loss"
    else:
        example = _HINTS.get(key, "opt.AdamW(1e-3, lambda_=0.0)")
        todo = f"give the group a 'rule' that holds it, e.g. {{'params': ..., 'rule': {example}}}"
    raise ValueError(
        f"{at}: {key!r} is a torch.optim hyper-parameter, which an "
        f"optimisers.torch.Optimizer does not read (the group's rule holds its "
        f"hyper-parameters, and the group's 'lr' its eta): {todo}"
        + (f"; the group also has {found[1:]}" if len(found) > 1 else "")
    )


def check_new_group(group: dict[str, Any], index: int, allowed: str | None) -> None:
    """Refuse, before torch adds it, a group with a torch.optim hyper-parameter (but
    ``allowed``, its rule's momentum key) or with a parameter given twice
    (``group["params"]`` made a list, as torch makes it)."""
    at = f"param group {index}"
    check_keys(group, at, allowed=allowed)
    params = group.get("params")
    if params is None or isinstance(params, (torch.Tensor, set)):
        return  # one tensor; torch refuses a set (unordered) or no params itself
    group["params"] = params = list(params)
    tensors = [p[1] if isinstance(p, tuple) and len(p) == 2 else p for p in params]
    first: dict[int, int] = {}
    for i, t in enumerate(tensors):
        j = first.setdefault(id(t), i)
        if j != i:
            named = isinstance(params[i], tuple) and isinstance(params[j], tuple)
            what = f"{params[j][0]!r} and {params[i][0]!r}" if named else f"{j} and {i}"
            raise ValueError(
                f"{at}: the same tensor is given twice (parameters {what}); each "
                f"parameter must appear once (two entries would step it twice, each with "
                f"its own state): remove the repeat"
            )


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


def leaf_rule(rule: Rule) -> Rule:
    """The rule the group's Leaves run for its rule at an ``lr`` (:func:`at_lr`): each
    ``Momentum(eta, rho)`` (or ``Nesterov``) made ``OptimiserChain(Momentum(1.0, rho),
    Descent(eta))``, the same step as torch's ``SGD`` computes it (a buffer ``buf <-
    mu*buf + g``, then ``p -= lr*buf``), whose velocity is the buffer whatever the ``lr``."""
    if isinstance(rule, OptimiserChain):
        return OptimiserChain(*map(leaf_rule, rule.opts))
    if isinstance(rule, MixedPrecision):
        return MixedPrecision(rule.dtype, leaf_rule(rule.rule))
    if isinstance(rule, (Momentum, Nesterov)) and not isinstance(rule.eta, Schedule):
        return OptimiserChain(adjust(rule, eta=1.0), Descent(rule.eta))
    return rule


def at_lr(rule: Rule, lr: float, lr0: float) -> Rule:
    """The base ``rule`` (made for the learning rate ``lr0``) at ``lr``: every ``eta``
    equal to ``lr0`` becomes ``lr`` exactly; another one (the second learning rate of a
    chain such as ``RMSProp(1.0) -> Momentum(0.01)``) is scaled by ``lr / lr0``, so that a
    scheduler moves the chain's learning rates together: the step of a chain with two
    ``eta`` then scales as ``lr**2`` (see the module's docstring)."""
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
    model of numpy views and its state tree (made once), the rule and ``lr`` its leaves
    were last given (so that a change of either is applied once), and which of its
    parameters have not stepped yet (their state is made again at a change)."""

    __slots__ = (
        "_labels",
        "base",
        "eta_init",
        "index",
        "lps",
        "lr",
        "lr0",
        "mom",
        "mom_key",
        "model",
        "names",
        "params",
        "ptrs",
        "rule",
        "tree",
        "unstepped",
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
        momentum: Any = None,
    ) -> None:
        self.index, self.params, self.names, self._labels = index, params, names, labels
        self.lps = low_precision_state
        self._view()
        self.rule, self.lr, self.lr0 = rule, lr, lr
        self.base = base_rule(rule, lr, given)
        # the group's "betas" or "momentum" (its rule's, or given in the group), applied
        # before the state is made (Adam's running products start at the betas)
        key = momentum_key(rule)
        self.mom_key: str | None = None if key is None else key[0]
        self.mom: Any = None if key is None else momentum
        if key is not None and momentum != key[1]:
            self.base = with_momentum(self.base, key[0], momentum)
        self.tree = setup(leaf_rule(self.base), self.model, low_precision_state=low_precision_state)
        self.eta_init = self._reads_eta(self.base, lr)
        # the positions of the parameters that may not have stepped (count 0), whose state
        # is made again when the lr or rule changes (pruned then)
        self.unstepped = list(range(len(params)))

    def _view(self) -> None:
        """The model of numpy views of the parameters, and their addresses."""
        labels, params = self._labels, self.params
        self.model = {
            n: tv.tensor_view(p, labels[i]) for i, (n, p) in enumerate(zip(self.names, params))
        }
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
        key = momentum_key(group["rule"])
        return cls(
            index,
            params,
            names,
            labels,
            group["rule"],
            float(group["lr"]),
            given,
            low_precision_state,
            None if key is None else group[key[0]],
        )

    # Pickle and deepcopy (of the optimiser): everything but the numpy views and the
    # addresses, made again for the parameters the copy holds.
    def __getstate__(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__ if k not in ("model", "ptrs")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            setattr(self, k, v)
        self._view()

    @property
    def leaves(self) -> list[Leaf]:
        """The Leaf of each parameter, as the state tree holds it now: one given to the tree
        by hand (``optim.state_tree[0]["0.weight"] = opt.Leaf(...)``, a reset of its state)
        is the one the steps, the ``lr`` and ``state_dict`` then use."""
        tree, found = self.tree, []
        for i, name in enumerate(self.names):
            leaf = tree.get(name)
            if not isinstance(leaf, Leaf):
                raise ValueError(
                    f"{self.where(i)}: the state tree holds {leaf!r} for it, not a Leaf "
                    f"(optim.state_tree[{self.index}] was changed by hand)"
                )
            found.append(leaf)
        return found

    def where(self, i: int) -> str:
        """How errors name the ``i``-th parameter of the group."""
        return self._labels[i]

    def loaded(self, counts: list[int | None]) -> None:
        """The states were loaded, with these counts (``None``: not saved, the count is
        unknown): the parameters at count 0 have their state made at the next step."""
        self.unstepped = [i for i, c in enumerate(counts) if c == 0]
        if self.unstepped and self.eta_init:
            self.lr = math.nan  # the next step applies the group's lr (NaN equals nothing)

    def refresh(self, group: dict[str, Any]) -> bool:
        """Apply a new ``lr`` or ``rule`` of the group to its leaves (once per change), and
        refuse a parameter whose memory changed since the views were made; whether there
        was a change."""
        lr, rule, key = group["lr"], group["rule"], self.mom_key
        mom = None if key is None else group.get(key)
        changed = lr != self.lr or rule is not self.rule or mom != self.mom
        if changed:
            self._apply(lr, rule, group)
        params = group["params"]
        if list(map(_DATA_PTR, params)) != self.ptrs:  # same memory (and count) as set up
            self._replaced(params)
        return changed

    def _apply(self, lr: Any, rule: Any, group: dict[str, Any]) -> None:
        """Give the leaves the rule at ``lr`` and the group's momentum, after checking all
        of it (nothing changes when it raises); the parameters not stepped yet get their
        state made again (for a new rule or momentum, or an ``lr`` that their rule's
        ``init`` reads)."""
        at = f"param group {self.index}"
        try:
            lr = float(lr)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"{at}: its 'lr' is {lr!r}, not a number") from None
        if not isinstance(rule, Rule):
            raise TypeError(f"{at}: 'rule' must be an optimisers rule, got {rule!r}")
        base, lr0, eta_init = self.base, self.lr0, self.eta_init
        renewed = rule is not self.rule
        if renewed:  # a new rule: its etas take the group's lr
            base, lr0 = base_rule(rule, lr, True), lr
            eta_init = self._reads_eta(base, lr)
        new = at_lr(base, lr, lr0)
        key, mom = self._momentum(group, rule, renewed)
        if key is not None:
            try:
                new = with_momentum(new, key, mom)
            except (TypeError, ValueError) as e:
                raise ValueError(f"{at}: its {key!r} is {mom!r}: {e}") from None
        new = leaf_rule(new)
        if renewed:
            self._check_kind(new, rule)
        leaves = self.leaves
        remake = self.unstepped
        if remake and (renewed or eta_init or mom != self.mom):
            remake = [i for i in remake if leaves[i]._count == 0]
            states = [
                init(new, self.model[self.names[i]], low_precision_state=self.lps) for i in remake
            ]
            for i, state in zip(remake, states):
                leaves[i].state = state
            self.unstepped = remake
        for leaf in leaves:
            leaf.rule = new
        self.lr, self.rule, self.base, self.lr0, self.eta_init = lr, rule, base, lr0, eta_init
        if renewed and key != self.mom_key:  # the group's key follows its new rule
            if self.mom_key is not None:
                group.pop(self.mom_key, None)
            if key is not None:
                group[key] = mom
        self.mom_key, self.mom = key, mom

    def _momentum(self, group: dict[str, Any], rule: Rule, renewed: bool) -> tuple[Any, Any]:
        """The group's momentum key and value to apply: its own, or for a new rule with
        another key (or none), the new rule's."""
        if not renewed:
            return self.mom_key, None if self.mom_key is None else group.get(self.mom_key)
        key = momentum_key(rule)
        if key is None:
            return None, None
        return key[0], group.get(key[0], key[1]) if key[0] == self.mom_key else key[1]

    def _check_kind(self, new: Rule, rule: Rule) -> None:
        """``ValueError`` when the state of a leaf does not fit the rule ``new`` (the group's
        new ``rule`` at its lr): a rule of another kind, which cannot carry it over."""
        for i, (name, leaf) in enumerate(zip(self.names, self.leaves)):
            try:
                misfit = state_misfit(new, leaf.state, self.model[name])
            except Exception:  # a rule written in Python whose init refuses an empty array
                misfit = None  # its own apply judges the state, as in any step
            if misfit is not None:
                raise ValueError(
                    f"param group {self.index}: its 'rule' was changed from "
                    f"{self.rule!r} to {rule!r}, which keeps another kind of state "
                    f"({self.where(i)}: {misfit}), so the state cannot carry over.  Put "
                    f"the old rule back in param_groups[{self.index}]['rule'], or build a "
                    f"new Optimizer with the new rule for these parameters (its state "
                    f"starts afresh, as in a new torch optimiser)"
                )

    def _reads_eta(self, base: Rule, lr: float) -> bool:
        """Whether the state ``base`` makes depends on its learning rate (``Rprop``'s step
        sizes): its ``init`` at two ``lr`` on a small array like the first parameter."""
        if not self.params:
            return False
        x = self.model[self.names[0]]
        probe = np.zeros((1,) * x.ndim, x.dtype)
        try:
            one, two = (at_lr(base, v, lr).init(probe) for v in (0.25, 0.5))
        except Exception:  # an init that refuses the probe: take it as reading eta
            return True
        return not tree_equal(one, two)

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
