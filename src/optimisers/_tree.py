"""The tree functions: setup, trainables, and the walk of ``update_`` over state tree,
model and gradient (the step itself is the engine's, ``_engine``; adjusting and freezing a
state tree are ``_adjust``'s).

The walk is most of the time of a step on many small arrays: its common case (dicts of
arrays, Leaves whose cached plan fits) is written out inline.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Literal, overload

import numpy as np

from ._align import grad_children, state_children
from ._dtypes import is_bfloat16, is_float, is_low_precision
from ._functor import children, is_namedtuple, trainable_keys
from ._keypath import KeyPath, linked_keypath
from ._leaf import Leaf
from ._rule import Rule
from ._types import Array, Model, StateTree

#: what ``setup`` takes first: a rule for every array, or a function choosing per array
RuleChoice = Rule | Callable[[KeyPath, Array], "Rule | None"]

__all__ = ["setup", "collect", "trainables", "isnumeric", "maywrite"]


def isnumeric(x: object) -> bool:
    """Whether ``x`` is something optimisers train: a numpy array of floating or complex numbers.

    Integer and boolean arrays, scalars (Python or numpy), and everything else are not
    trainable: :func:`setup` gives them no ``Leaf`` and :func:`trainables` skips them.

    Parameters
    ----------
    x : object
        Any object.

    Returns
    -------
    bool
        ``True`` for a ``numpy.ndarray`` whose dtype is of kind ``f`` or ``c``, or
        bfloat16 (ml_dtypes).

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> opt.isnumeric(np.zeros(2)), opt.isnumeric(np.arange(2)), opt.isnumeric(1.0)
    (True, False, False)
    """
    return isinstance(x, np.ndarray) and is_float(x.dtype)


def maywrite(x: object) -> bool:
    """Whether :func:`update_` may write into ``x`` in place (a writable numpy array).

    Views count: writing through a view writes the array it looks into, which is how a
    model held by another framework is trained through numpy views of its tensors.  A
    read-only parameter is not written: ``update_`` puts a new array in its place in the
    model it returns.

    Parameters
    ----------
    x : object
        Any object.

    Returns
    -------
    bool
        ``True`` for a ``numpy.ndarray`` whose ``flags.writeable`` is set.

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> a = np.zeros(2); a.flags.writeable = False
    >>> opt.maywrite(np.zeros(2)), opt.maywrite(a)
    (True, False)
    """
    return isinstance(x, np.ndarray) and x.flags.writeable


# ----------------------------------------------------------------------------------------
# setup


def _state_container(x: Any, keys: Sequence[Hashable], states: Sequence[Any]) -> Any:
    t = type(x)
    if t is list:
        return list(states)
    if t is tuple:
        return tuple(states)
    if is_namedtuple(x):
        return t._make(states)
    if isinstance(x, tuple):
        return tuple(states)
    return dict(zip(keys, states))


# what the kernels compute on (float16 and bfloat16 via float32); not big-endian, not
# extended precision
_TRAINABLE_DTYPES = frozenset(
    np.dtype(t) for t in (np.float16, np.float32, np.float64, np.complex64, np.complex128)
)


def setup(rule: RuleChoice, model: Model, *, low_precision_state: bool = False) -> StateTree:
    """Initialise ``rule`` for every trainable array of ``model``: the state tree.

    The state tree has the model's shape (a dict for a dict, a list for a list, the same
    namedtuple type for a namedtuple, a dict of fields for a registered object), with a
    :class:`Leaf` for each trainable array and ``None`` where there is nothing to train.
    An array appearing twice (tied weights) gets one shared ``Leaf``.  When ``model`` is
    itself an array, the result is a bare ``Leaf``.

    ``rule`` may also be a function ``rule_for(path, x) -> Rule or None``, called once for
    each trainable array (once for a tied array, at its first path) with its
    :class:`KeyPath`: a rule per part of the model (torch's parameter groups, optax's
    ``multi_transform``); ``None`` leaves that array untrained (``None`` in the state tree).
    Equal rules it returns are kept as one object, so that their leaves run as one batch.

    Parameters
    ----------
    rule : Rule or callable
        The optimisation rule (a built-in rule, an ``OptimiserChain``, or a subclass of
        :class:`Rule` written in Python), or a function ``(KeyPath, array) -> Rule | None``
        choosing one per array.
    model : nested dicts, lists, tuples, namedtuples, registered objects and arrays
        The model to train; only its trainable arrays (see :func:`isnumeric` and
        :func:`functor`) get a state.
    low_precision_state : bool, default False
        The state arrays of float16 and bfloat16 parameters are float32 (the dtype the
        kernels compute in): a float16 Adam ``v`` would underflow to 0 for ``|g|`` below
        about 8e-3.  ``True`` rounds the built-in rules' float32 state arrays of such
        parameters to the parameter's dtype, to save memory (each step still computes in
        float32 and rounds them once on store).

    Returns
    -------
    Leaf, None or nested containers
        The state tree, to pass to :func:`update` / :func:`update_` with this model.

    Raises
    ------
    TypeError
        If ``rule`` is neither a :class:`Rule` nor callable, or ``rule_for`` returns
        something else than a rule or ``None``; for a parameter the rule cannot train (e.g.
        a complex array with ``Rprop``), or of a dtype optimisers cannot train (not one of
        float16/32/64, bfloat16, complex64/128 in native byte order), naming its key path.

    Warns
    -----
    UserWarning
        When ``model`` has no trainable parameter at all.

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> st = opt.setup(opt.Momentum(), {"x": np.zeros(3), "y": (True, False), "z": np.tanh})
    >>> st["x"], st["y"], st["z"]
    (Leaf(Momentum(eta=0.01, rho=0.9), array([0., 0., 0.])), (None, None), None)

    A rule per part: weight decay on matrices only, the biases untouched by it.

    >>> model = {"w": np.ones((2, 2)), "b": np.ones(2)}
    >>> st = opt.setup(lambda path, x: opt.AdamW(lambda_=0.1 if x.ndim >= 2 else 0.0), model)
    >>> st["w"].rule.lambda_, st["b"].rule.lambda_
    (0.1, 0.0)
    """
    rule_for = _rule_chooser(rule)
    cache: dict[int, Any] = {}

    def walk(x: Any, path: KeyPath) -> Any:
        if isnumeric(x):
            if id(x) in cache:
                return cache[id(x)]
            if x.dtype not in _TRAINABLE_DTYPES and not is_bfloat16(x.dtype):
                raise TypeError(
                    f"setup: the parameter at {path} has dtype {x.dtype.str}, which "
                    f"optimisers cannot train; convert it to one of float16/32/64 or "
                    f"complex64/128 in native byte order (e.g. x.astype(np.float64))"
                )
            r = rule_for(path, x)
            leaf = None
            if r is not None:
                r.check_param(x, path)
                state = r.init(x)
                if low_precision_state and is_low_precision(x.dtype):
                    state = r._lower_state(state, x)
                leaf = Leaf(r, state)
            cache[id(x)] = leaf
            return leaf
        kv = children(x)
        if kv is None:
            return None
        keys, values = kv
        allowed = trainable_keys(x, keys)
        states = [
            walk(v, path + (k,)) if allowed is None or k in allowed else None
            for k, v in zip(keys, values)
        ]
        return _state_container(x, keys, states)

    tree = walk(model, KeyPath())
    if not cache:
        warnings.warn("setup found no trainable parameters in this model", stacklevel=2)
    return tree


def _rule_chooser(rule: RuleChoice) -> Callable[[KeyPath, Array], Rule | None]:
    """``(path, x) -> Rule or None`` for ``setup``'s first argument: a rule for every array,
    or a function's choice, checked, with equal rules kept as one object."""
    if isinstance(rule, Rule):
        return lambda path, x: rule
    if not callable(rule):
        raise TypeError(
            f"setup(rule, model) takes a rule, or a function (path, array) -> "
            f"rule or None, first; got {type(rule).__name__}"
        )
    chosen: dict[Rule, Rule] = {}

    def choose(path: KeyPath, x: Array) -> Rule | None:
        r = rule(path, x)
        if r is None:
            return None
        if not isinstance(r, Rule):
            raise TypeError(
                f"setup: the rule function gave {r!r} for the parameter at "
                f"{path}; it must give a Rule or None"
            )
        try:
            return chosen.setdefault(r, r)  # equal rules: one object, one batch template
        except TypeError:  # a rule of one's own that is not hashable
            return r

    return choose


# ----------------------------------------------------------------------------------------
# the walk of update_


def collect(t: StateTree, m: Model, g: Any, link: tuple[Any, ...], step: Any) -> None:
    """Walk state tree ``t``, model ``m`` and gradient ``g`` together, checking their
    structure, and hand every Leaf that has a gradient to ``step`` (an ``_engine.Step``).
    ``link`` is the linked path of ``t`` (see ``linked_keypath``).  Checks, writes nothing.

    The children of a container are handed over in one loop, dicts take a path that builds
    no key tuples, and the common Leaf becomes a batch entry here, inline: one whose plan,
    cached by the engine as ``(rule, dtype, gradient dtype, template)``, is for this rule
    and this array's dtype and has a template (and that is not frozen).  Every other Leaf
    goes through ``step.route``."""
    if g is None or t is None:
        return
    if type(t) is Leaf:
        step.route(t, m, g, link)
        return
    keys: Any
    values: Any
    if type(m) is dict and type(t) is dict and type(g) is dict:
        keys = m.keys()
        if t.keys() != keys or not g.keys() <= keys:
            state_children(t, m, tuple(m), link)  # raise, naming what differs
            grad_children(m, g, tuple(m), link)
        values, ts, gs = m.values(), map(t.__getitem__, keys), map(g.get, keys)
    else:
        kv = children(m)
        if kv is None:
            raise TypeError(
                f"the state tree has a {type(t).__name__} at {linked_keypath(link)} "
                f"but the model has a {type(m).__name__} there"
            )
        keys, values = kv
        ts = state_children(t, m, keys, link)
        gs = grad_children(m, g, keys, link)
    append, route = step.entries.append, step.route
    for k, tv, mv, gv in zip(keys, ts, values, gs):
        if gv is None or tv is None:
            continue
        if type(tv) is Leaf:
            plan = tv._plan
            if (
                plan is not None
                and plan[0] is tv.rule
                and type(mv) is np.ndarray
                and plan[1] is mv.dtype
                and plan[3] is not None
                and not tv.frozen
            ):
                append((plan[3], tv.state, mv, gv, tv, (link, k)))
            else:
                route(tv, mv, gv, (link, k))
        else:
            collect(tv, mv, gv, (link, k), step)


# ----------------------------------------------------------------------------------------
# trainables


@overload
def trainables(model: Model, path: Literal[False] = False) -> list[Array]: ...
@overload
def trainables(model: Model, path: Literal[True]) -> list[tuple[KeyPath, Array]]: ...
@overload
def trainables(model: Model, path: bool) -> list[Array] | list[tuple[KeyPath, Array]]: ...
def trainables(model: Model, path: bool = False) -> list[Array] | list[tuple[KeyPath, Array]]:
    """Every trainable array of ``model``, each distinct array once, depth first.

    The arrays themselves, not copies: writing into them changes the model.  Fields of a
    registered class that are not ``trainable`` (see :func:`functor`) are skipped, and a
    tied array is listed once, at its first place.

    Parameters
    ----------
    model : nested containers and arrays
        The model.
    path : bool, default False
        Whether to pair each array with its :class:`KeyPath`.

    Returns
    -------
    list
        The arrays, or with ``path=True`` a list of ``(KeyPath, array)`` pairs.

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> x = {"a": np.array([1.0, 2.0]),
    ...      "b": ({"c": np.array([3.0, 4.0]), "d": 5.0}, np.array([6.0, 7.0]))}
    >>> for kp, y in opt.trainables(x, path=True):
    ...     print(kp, y)
    a [1. 2.]
    b.0.c [3. 4.]
    b.1 [6. 7.]
    """
    out, seen = [], set()

    def walk(x: Any, kp: KeyPath) -> None:
        if isnumeric(x):
            if id(x) not in seen:
                seen.add(id(x))
                out.append((kp, x) if path else x)
            return
        kv = children(x)
        if kv is None:
            return
        keys, values = kv
        allowed = trainable_keys(x, keys)
        for k, v in zip(keys, values):
            if allowed is None or k in allowed:
                walk(v, kp + (k,))

    walk(model, KeyPath())
    return out
