"""Functions on a state tree itself: adjust/adjust_ (change hyper-parameters, keeping
states), freeze_/thaw_, and hyperparameters (the rules the next update uses, for a log)."""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Any, cast

from ._functor import is_namedtuple
from ._keypath import KeyPath
from ._leaf import Leaf, copy_state
from ._rule import Rule
from ._schedule import Hyperparameter
from ._types import StateTree
from ._types import T as _T

__all__ = ["adjust", "adjust_", "freeze_", "thaw_", "hyperparameters"]


# ----------------------------------------------------------------------------------------
# adjust, freeze


def _state_leaves(tree: StateTree, fname: str) -> list[Leaf]:
    """Every distinct Leaf of a state tree; ``TypeError`` if the tree is a model."""
    leaves: list[Leaf] = []
    seen: set[int] = set()

    def walk(s: Any, path: KeyPath) -> None:
        if isinstance(s, Leaf):
            if id(s) not in seen:
                seen.add(id(s))
                leaves.append(s)
        elif s is None:
            pass
        elif isinstance(s, dict):
            for k, v in s.items():
                walk(v, path + (k,))
        elif isinstance(s, (list, tuple)) and not isinstance(s, str):
            named = is_namedtuple(s)
            keys: Iterable[Hashable] = s._fields if named else range(len(s))  # type: ignore[union-attr]
            for k, v in zip(keys, s):
                walk(v, path + (k,))
        else:
            raise TypeError(
                f"{fname} must be applied to a state tree from setup, not to a "
                f"model: found a {type(s).__name__} at {path}"
            )

    walk(tree, KeyPath())
    return leaves


def hyperparameters(tree: StateTree) -> Any:
    """The rule each ``Leaf``'s next update uses, with every schedule replaced by its value
    at the leaf's count of updates: a tree of the state tree's shape, for a training log.

    Parameters
    ----------
    tree : state tree or sub-tree
        From :func:`setup`.

    Returns
    -------
    Rule, None or nested containers
        A rule for each ``Leaf`` (``None`` elsewhere); its fields are plain numbers.

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> from optimisers import schedules
    >>> st = opt.setup(opt.Adam(schedules.linear(1e-3, 0.0, 100)), {"w": np.zeros(2)})
    >>> st, _ = opt.update_(st, {"w": np.zeros(2)}, {"w": np.ones(2)})
    >>> opt.hyperparameters(st)["w"]
    Adam(eta=0.00099, beta=(0.9, 0.999), epsilon=1e-08)
    """
    if isinstance(tree, Leaf):
        return tree.rule._at(tree.count)
    if tree is None:
        return None
    if isinstance(tree, dict):
        return {k: hyperparameters(v) for k, v in tree.items()}
    if is_namedtuple(tree):
        return type(tree)._make(hyperparameters(v) for v in tree)
    if isinstance(tree, (list, tuple)):
        return type(tree)(hyperparameters(v) for v in tree)
    raise TypeError(f"hyperparameters takes a state tree from setup, not a {type(tree).__name__}")


def freeze_(tree: StateTree) -> None:
    """Freeze every ``Leaf`` of ``tree`` in place, until :func:`thaw_`.

    ``tree`` may be any sub-tree of a state tree (``state["layer"]``, one ``Leaf``).  A
    frozen ``Leaf``'s parameter and state stop changing: :func:`update_` skips it even when
    it has a gradient.  Other leaves of the full tree are not affected.

    Parameters
    ----------
    tree : state tree or sub-tree
        From :func:`setup`.

    Returns
    -------
    None

    Raises
    ------
    TypeError
        If ``tree`` is (or contains) a model rather than a state tree (an array or another
        object is reached), naming where.

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> m = {"x": (np.array([1.0]), 2.0), "y": np.array([3.0])}
    >>> s = opt.setup(opt.Momentum(), m)
    >>> opt.freeze_(s["x"])
    >>> s, m = opt.update_(s, m, {"x": (np.array([np.pi]), None), "y": np.array([100 * np.pi])})
    >>> m["x"][0], m["y"]
    (array([1.]), array([-0.14159265]))
    """
    for leaf in _state_leaves(tree, "freeze_"):
        leaf.frozen = True


def thaw_(tree: StateTree) -> None:
    """Undo :func:`freeze_` in place on every ``Leaf`` of ``tree``.

    Parameters
    ----------
    tree : state tree or sub-tree
        From :func:`setup`.

    Returns
    -------
    None

    Raises
    ------
    TypeError
        If ``tree`` is (or contains) a model rather than a state tree, naming where.

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> s = opt.setup(opt.Descent(), [np.zeros(1)]); opt.freeze_(s); opt.thaw_(s)
    >>> s[0].frozen
    False
    """
    for leaf in _state_leaves(tree, "thaw_"):
        leaf.frozen = False


def _changes(eta: object, fields: dict[str, Any]) -> dict[str, Any]:
    kw = dict(fields)
    if eta is not None:
        kw["eta"] = eta
    if "centered" in kw:
        kw["centred"] = kw.pop("centered")
    if not kw:
        raise TypeError(
            "adjust must be given something to change, e.g. adjust(tree, 0.01) "
            "or adjust(tree, beta=(0.9, 0.99))"
        )
    return kw


def _adjusted(rules: Iterable[Rule], kw: dict[str, Any]) -> dict[int, Rule]:
    """New rules for ``rules`` (all checked first); ``TypeError`` for names no rule has."""
    used: set[str] = set()
    known: set[str] = set()
    out: dict[int, Rule] = {}
    for r in rules:
        if id(r) not in out:
            out[id(r)] = r._adjust(kw, used, known)
    unknown = sorted(set(kw) - used)
    if unknown:
        raise TypeError(
            f"adjust: no rule here has field(s) {unknown}; the fields that exist "
            f"are {sorted(known)}"
        )
    return out


def adjust(tree_or_rule: _T, eta: Hyperparameter | None = None, **fields: Any) -> _T:
    """A copy of a rule, ``Leaf`` or state tree with hyper-parameters changed.

    States are kept (copied for trees).  ``adjust(x, 0.01)`` changes every ``eta``;
    keywords change the fields of that name in every rule that has one (in chains too).
    Values are validated as at construction; a name that no rule has is a ``TypeError``.

    Parameters
    ----------
    tree_or_rule : Rule, Leaf or state tree
        What to adjust; it is not changed.
    eta : float, optional
        The new learning rate of every rule that has an ``eta``.
    **fields
        New values of other hyper-parameters by name (``beta=(0.9, 0.99)``,
        ``lambda_=1e-4``; ``centered=`` is read as ``centred=``).

    Returns
    -------
    Rule, Leaf or state tree
        The same kind as ``tree_or_rule``, with the new hyper-parameters.

    Raises
    ------
    TypeError
        If nothing is to change, or a field name is not a field of any rule here (the
        message lists the fields that exist).
    ValueError
        For a value out of range (as at construction), or for a change of ``RMSProp``'s
        ``centred`` (its two variants keep different states).

    Examples
    --------
    >>> import optimisers as opt
    >>> opt.adjust(opt.OptimiserChain(opt.ClipGrad(2.0), opt.Adam()), 0.2)
    OptimiserChain(ClipGrad(delta=2.0), Adam(eta=0.2, beta=(0.9, 0.999), epsilon=1e-08))
    """
    kw = _changes(eta, fields)
    # what goes in comes out: a rule of the same class, a Leaf, a tree of the same shape
    if isinstance(tree_or_rule, Rule):
        return cast(_T, _adjusted([tree_or_rule], kw)[id(tree_or_rule)])
    tree: _T = copy_state(tree_or_rule, {})
    adjust_(tree, **kw)
    return tree


def adjust_(tree: StateTree, eta: Hyperparameter | None = None, **fields: Any) -> None:
    """Change hyper-parameters in place in a state tree (any sub-tree), keeping states.

    Every new rule is built and validated before any ``Leaf`` changes, so a failed
    ``adjust_`` leaves the tree as it was.  Each ``Leaf``'s ``.rule`` is replaced by the
    adjusted rule; rules are immutable, so use :func:`adjust` for a rule itself.

    Parameters
    ----------
    tree : state tree or sub-tree
        From :func:`setup`; changed in place.
    eta : float, optional
        The new learning rate of every rule that has an ``eta``.
    **fields
        New values of other hyper-parameters by name, as for :func:`adjust`.

    Returns
    -------
    None

    Raises
    ------
    TypeError
        If ``tree`` is a rule or a model, if nothing is to change, or a field name is not a
        field of any rule here.
    ValueError
        For a value out of range, or for a change of ``RMSProp``'s ``centred``.

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> st = opt.setup(opt.Nesterov(), {"vec": np.zeros(2, np.float32)})
    >>> opt.adjust_(st, 0.123)
    >>> st["vec"].rule
    Nesterov(eta=0.123, rho=0.9)
    """
    if isinstance(tree, Rule):
        raise TypeError("adjust_ changes a state tree in place; use adjust(rule, ...) for a rule")
    kw = _changes(eta, fields)
    leaves = _state_leaves(tree, "adjust_")
    new = _adjusted([leaf.rule for leaf in leaves], kw)
    for leaf in leaves:
        leaf.rule = new[id(leaf.rule)]
