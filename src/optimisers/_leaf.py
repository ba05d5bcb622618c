"""Leaf: the state of one trainable array in a state tree."""

from __future__ import annotations

import copy
import numbers
from typing import Any

import numpy as np

from ._dtypes import is_low_precision
from ._functor import is_namedtuple
from ._rule import Rule
from ._types import Array, RuleState

__all__ = ["Leaf", "tree_equal", "state_difference", "state_misfit", "describe", "copy_state"]


_SHOWN = 10  # a Leaf's repr shows arrays of up to this many elements in full


def _summary(s: Any) -> str:
    """The repr of a state with every array of more than ``_SHOWN`` elements on one line: a
    few of its values (in C order), its shape and dtype, so that a state tree prints in a
    training log."""
    if isinstance(s, np.ndarray):
        if s.size <= _SHOWN:
            return repr(s)
        values = np.array2string(
            s.ravel(), threshold=0, edgeitems=3, separator=", ", max_line_width=1 << 20
        )
        return f"array({values}, shape={s.shape}, dtype={s.dtype})"
    if is_namedtuple(s):
        inner = ", ".join(f"{k}={_summary(v)}" for k, v in zip(s._fields, s))
        return f"{type(s).__name__}({inner})"
    if isinstance(s, (list, tuple)):
        inner = ", ".join(_summary(v) for v in s)
        return f"[{inner}]" if isinstance(s, list) else f"({inner}{',' if len(s) == 1 else ''})"
    if isinstance(s, dict):
        return "{" + ", ".join(f"{k!r}: {_summary(v)}" for k, v in s.items()) + "}"
    return repr(s)


class Leaf:
    """The optimiser state of one parameter array: its rule, its state, and a frozen flag.

    ``setup`` makes one ``Leaf`` per distinct trainable array; an array that appears twice in
    a model (tied weights) shares one ``Leaf``.  A ``Leaf`` is mutable: ``update_`` replaces
    ``.state`` and counts the update in ``.count``, ``adjust_`` replaces ``.rule``,
    ``freeze_``/``thaw_`` set ``.frozen``.  Equality compares rule, state (arrays by value
    and dtype) and flag, as the seed's does (not the count: a stateless rule's Leaf equals
    itself after a step).  A ``Leaf`` is picklable and not hashable.

    Parameters
    ----------
    rule : Rule
        The rule that updates this array.
    state : object
        Its state for this array, as ``rule.init(x)`` gives (``None`` for a stateless rule).
    frozen : bool, default False
        Whether the array and state are frozen (see :func:`freeze_`).
    count : int, default 0
        The number of updates this array has taken: what a scheduled hyper-parameter of
        its rule is evaluated at (0 at the first update).

    Attributes
    ----------
    rule, state, frozen, count
        As given, and changed as described above.

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> leaf = opt.setup(opt.Momentum(), np.zeros(2))
    >>> leaf
    Leaf(Momentum(eta=0.01, rho=0.9), array([0., 0.]))
    """

    __slots__ = (
        "rule",
        "state",
        "frozen",
        "_count",
        "_scratch",
        "_plan",
        "_backup",
        "_fill",
        "__weakref__",
    )

    rule: Rule
    state: RuleState
    frozen: bool

    def __init__(self, rule: Rule, state: RuleState, frozen: bool = False, count: int = 0) -> None:
        self.rule = rule
        self.state = state
        self.frozen = bool(frozen)
        self._count = count  # the engine advances it directly (no property call a leaf)
        self._scratch = None  # a per-leaf buffer for chains that must materialise d
        # per-leaf facts update_ reuses between steps (_plan.leaf_plan)
        self._plan: Any = None  # the plan tuple, or None until the first step
        self._backup: list[Array] | None = None  # copies of its arrays, for a late failure
        # what the batch found in its state at its last step (_kernels' leafcache.pxi),
        # reused while the state is the same object and its arrays are unchanged
        self._fill: Any = None

    @property
    def count(self) -> int:
        """The number of updates this array has taken (what schedules are evaluated at)."""
        return self._count

    @count.setter
    def count(self, value: int) -> None:
        # the cached plan of a scheduled rule holds its template at the count: a count set
        # from outside the engine makes the next step plan the leaf again
        self._count = value
        self._plan = None

    def __repr__(self) -> str:
        tail = ", frozen=True" if self.frozen else ""
        return f"Leaf({self.rule!r}, {_summary(self.state)}{tail})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Leaf):
            return NotImplemented
        return (
            self.frozen == other.frozen
            and self.rule == other.rule
            and tree_equal(self.state, other.state)
        )

    __hash__ = None  # type: ignore[assignment]   # mutable (its state): unhashable

    def __getstate__(self) -> tuple[Rule, RuleState, bool, int]:
        return (self.rule, self.state, self.frozen, self._count)

    def __setstate__(self, s: tuple[Any, ...]) -> None:
        self.rule, self.state, self.frozen = s[:3]
        self._count = s[3] if len(s) > 3 else 0  # pickles of 0.1.0 have no count
        self._scratch = None
        self._plan = None
        self._backup = None
        self._fill = None


def tree_equal(a: Any, b: Any) -> bool:
    """Equality of nested states: arrays equal in value (NaN equals NaN) and dtype."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
        )
    if isinstance(a, Leaf) or isinstance(b, Leaf):
        return bool(a == b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(tree_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return (
            type(a) is type(b) and len(a) == len(b) and all(tree_equal(x, y) for x, y in zip(a, b))
        )
    if isinstance(a, np.generic) or isinstance(b, np.generic):
        return type(a) is type(b) and (a == b or (a != a and b != b))
    return type(a) is type(b) and a == b


def copy_state(s: Any, memo: dict[int, Any]) -> Any:
    """A deep copy of a state tree (or any state in it) that keeps ties: a Leaf or array
    met twice is copied once (``memo``: id -> copy).  Rules are immutable values and are
    shared, not copied."""
    if isinstance(s, np.ndarray):
        c = memo.get(id(s))
        if c is None:
            c = memo[id(s)] = s.copy()
        return c
    if isinstance(s, Leaf):
        c = memo.get(id(s))
        if c is None:
            c = memo[id(s)] = Leaf(s.rule, copy_state(s.state, memo), s.frozen, s._count)
        return c
    if isinstance(s, dict):
        return {k: copy_state(v, memo) for k, v in s.items()}
    if is_namedtuple(s):
        return type(s)._make(copy_state(v, memo) for v in s)
    if isinstance(s, (list, tuple)):
        return type(s)(copy_state(v, memo) for v in s)
    if s is None or isinstance(s, (numbers.Number, np.generic, str, bytes, Rule)):
        return s
    return copy.deepcopy(s, memo)  # a user rule's own state object (memo keeps ties)


def describe(x: object) -> str:
    if isinstance(x, np.ndarray):
        return f"an array of {x.dtype} and shape {x.shape}"
    if x is None:
        return "None"
    return f"a {type(x).__name__}"


def state_difference(
    a: Any, b: Any, where: str, like_x: list[tuple[str, tuple[int, ...]]]
) -> str | None:
    """Where ``a`` (a stored state) differs in structure from ``b`` (what ``init`` gives for
    an empty parameter); the shapes of the arrays shaped like the parameter go to
    ``like_x``.  A state type with a ``_difference`` of its own (Adafactor's, whose
    arrays take their shapes from the parameter's in more than one way) says itself,
    adding ``(where, shape, shape_from_x)`` to ``like_x``."""
    own = getattr(type(b), "_difference", None)
    if own is not None:
        difference: str | None = own(a, b, where, like_x)
        return difference
    if isinstance(b, np.ndarray):
        if isinstance(a, np.ndarray) and a.dtype == b.dtype:
            if b.shape == (0,):
                like_x.append((where, a.shape))
                return None
            if a.shape == b.shape:
                return None
    elif isinstance(b, (tuple, list)):
        if type(a) is type(b) and len(a) == len(b):
            named = is_namedtuple(b)
            keys = b._fields if named else range(len(b))  # type: ignore[union-attr]
            for k, x, y in zip(keys, a, b):
                d = state_difference(x, y, f"{where}.{k}" if named else f"{where}[{k}]", like_x)
                if d is not None:
                    return d
            return None
    elif type(a) is type(b):
        return None
    what = describe(b).replace("shape (0,)", "the parameter's shape")
    if isinstance(b, (tuple, list)) and type(a) is type(b):
        what += f" of length {len(b)}"
    return f"{where} is {describe(a)} where the rule keeps {what}"


def state_misfit(rule: Rule, state: RuleState, x: Array) -> str | None:
    """What differs between ``state`` and the state ``rule`` keeps for the parameter ``x``
    (its structure, array dtypes and shapes), or ``None`` when it fits.  A 16-bit parameter
    fits its float32 state and the one ``low_precision_state`` rounds to its dtype."""
    empty = np.empty(0, x.dtype)
    ref = rule.init(empty)
    problem = _misfit(state, ref, x)
    if (
        problem is not None
        and is_low_precision(x.dtype)
        and _misfit(state, rule._lower_state(ref, empty), x) is None
    ):
        return None
    return problem


def _misfit(state: RuleState, ref: RuleState, x: Array) -> str | None:
    like_x: list[tuple[Any, ...]] = []
    problem = state_difference(state, ref, "state", like_x)
    if problem is None:
        for where, shape, *of_x in like_x:
            if of_x and shape != of_x[0](x.shape):  # a shape made from x's
                return (
                    f"{where} has shape {shape} where the rule keeps shape "
                    f"{of_x[0](x.shape)} for the parameter's {x.shape}"
                )
            if not of_x and shape != x.shape:
                return f"{where} has shape {shape} where the parameter has shape {x.shape}"
    return problem
