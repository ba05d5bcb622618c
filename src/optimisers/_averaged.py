"""``averaged(state, model)``: the model to evaluate, for rules that keep a second copy of
the parameters (EMA, Lookahead, ScheduleFreeAdamW) and for every other rule."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._align import state_children
from ._composite import MixedPrecision, OptimiserChain
from ._functor import children, rebuild
from ._keypath import linked_keypath
from ._leaf import Leaf
from ._rule import Rule

__all__ = ["averaged"]


def averaged(state: Any, model: Any) -> Any:
    """The model to evaluate: a new model whose trained arrays are the copies a rule keeps
    for evaluation.

    For a parameter trained by :class:`EMA` its moving average, by :class:`Lookahead` its
    slow weights, by :class:`ScheduleFreeAdamW` the averaged point ``x`` (the model holds
    ``y``, where gradients are taken), and for any other rule a copy of the parameter.
    The rules are found inside chains and ``MixedPrecision`` (whose copy is rounded to the
    parameter's dtype); in a chain the last member that keeps a copy gives it, and a
    wrapper's copy comes before that of the rule it wraps.  The trained model and the state
    are not changed.

    Parameters
    ----------
    state : state tree
        From :func:`setup` (and :func:`update_`) for ``model``.
    model : nested containers and arrays
        The trained model.

    Returns
    -------
    model
        A new model of the same structure; its arrays are new (other objects are shared).

    Raises
    ------
    ValueError, TypeError
        If ``state`` does not fit ``model``, naming the key path.

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> model = {"w": np.zeros(2), "b": np.zeros(1)}
    >>> st = opt.setup(opt.EMA(opt.Descent(0.1), decay=0.9), model)
    >>> for _ in range(2):
    ...     st, model = opt.update_(st, model, {"w": np.ones(2), "b": np.ones(1)})
    >>> model["w"], opt.averaged(st, model)["w"]      # -0.1, then -0.1 + 0.1*(-0.2 + 0.1)
    (array([-0.2, -0.2]), array([-0.11, -0.11]))
    """
    return _walk(state, model, (), {})


def _walk(t: Any, m: Any, link: Any, memo: dict[int, Any]) -> Any:
    if type(t) is Leaf:
        hit = memo.get(id(t))  # tied arrays share a Leaf: one new array for both
        if hit is None:
            hit = memo[id(t)] = (t, _evaluated(t, m, link))
        return hit[1]
    if isinstance(m, np.ndarray):
        if t is not None:
            raise TypeError(
                f"the state tree has a {type(t).__name__} at "
                f"{linked_keypath(link)} where the model has an array"
            )
        return m.copy()
    kv = children(m)
    if kv is None or t is None:
        return m
    keys, values = kv
    ts = state_children(t, m, keys, link)
    return rebuild(m, keys, [_walk(tv, mv, (link, k), memo) for k, tv, mv in zip(keys, ts, values)])


def _evaluated(leaf: Leaf, x: Any, link: Any) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise TypeError(
            f"the state tree has a Leaf at {linked_keypath(link)} where the model "
            f"has a {type(x).__name__}"
        )
    rule = leaf.rule
    if rule._scheduled():  # the values the last step used
        rule = rule._at(max(leaf.count - 1, 0))
    copy = average_of(rule, leaf.state, x)
    if copy is None:
        return np.array(x, copy=True)
    if copy.shape != x.shape:
        raise ValueError(
            f"the state of the Leaf at {linked_keypath(link)} keeps a copy of "
            f"shape {copy.shape} for a parameter of shape {x.shape}"
        )
    evaluated: np.ndarray = np.asarray(copy, dtype=x.dtype)
    return evaluated


def average_of(rule: Rule, state: Any, x: np.ndarray) -> np.ndarray | None:
    """The copy ``rule`` keeps for evaluating the parameter ``x`` (a new array), or
    ``None`` when it keeps none."""
    if isinstance(rule, OptimiserChain):
        for r, s in zip(reversed(rule.opts), reversed(state)):
            found = average_of(r, s, x)
            if found is not None:
                return found
        return None
    if isinstance(rule, MixedPrecision):
        found = average_of(rule.rule, state.inner, state.xT)
        return None if found is None else found.astype(x.dtype)
    own = getattr(rule, "_average", None)
    return own(state, x) if own is not None else None
