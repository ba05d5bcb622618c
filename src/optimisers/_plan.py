"""What does not change between steps for a Leaf: its plan (the dtype its gradient is cast
to, and the batch template of its rule), made when a Leaf meets a new rule or dtype, which
is when its state is checked against the rule and the array.

>>> import numpy as np, optimisers as opt
>>> x = np.zeros(3, np.float32)
>>> [(kind, sorted(hp)[:3], buffers) for kind, hp, buffers, sc, ctr
...  in template(opt.Momentum(), x, opt.init(opt.Momentum(), x))]
[(1, ['eta', 'rho'], ((),))]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._dtypes import is_low_precision
from ._keypath import linked_keypath
from ._leaf import Leaf, state_misfit
from ._program import Program, gradient_dtype
from ._rule import Rule

__all__ = [
    "BATCH_DTYPES",
    "ScheduledTemplate",
    "check_state",
    "leaf_plan",
    "moved_on",
    "scheduled_plan",
    "template",
]


def leaf_plan(leaf: Leaf, x: Any, link: tuple[Any, ...]) -> tuple[Any, ...]:
    """What does not change between steps for a Leaf and its array, cached on the Leaf as
    ``(rule, dtype, gradient dtype, batch template or None, scheduled, count)``: the dtype
    its gradient is cast to, and the batch template of its rule (:func:`template`), keyed
    by the identity of its rule and of the array's dtype.  A rule with a scheduled
    hyper-parameter has one template per count (:func:`scheduled_plan`): the plan holds the
    one of the leaf's count, and the engine moves it on with the count, so that the walk
    batches such a leaf inline like any other.  Made when a Leaf meets an array of a new
    dtype or a new rule; its state is then checked against the rule and the array
    (``ValueError`` naming the key path and what differs), unless only hyper-parameters
    changed (adjust_)."""
    rule, old = leaf.rule, leaf._plan
    if old is None or old[1] is not x.dtype or type(old[0]) is not type(rule):
        check_state(rule, leaf.state, x, link)
    if rule._scheduled():
        plan = leaf._plan = scheduled_plan(rule, x, leaf.state, leaf._count)
        return plan
    key = (id(rule), x.dtype)
    tpl = _TEMPLATES.get(key)
    if tpl is None or tpl[0] is not rule:
        if len(_TEMPLATES) > 4096:
            _TEMPLATES.clear()
        tpl = _TEMPLATES[key] = (rule, template(rule, x, leaf.state))
    plan = leaf._plan = (rule, x.dtype, gradient_dtype(rule, x.dtype), tpl[1], False, 0)
    return plan


class ScheduledTemplate(list):
    """The template of a scheduled rule at one count: the rule made concrete there
    (``concrete``: every schedule replaced by its value) recorded as any template.  Its
    type marks it for the batch (``Batch.marked``) and the engine, which after a step gives
    each of its leaves :meth:`next_plan`, the plan of the count after; the chain of plans
    is shared by the leaves that step together, so a schedule is evaluated once per rule,
    dtype and count, never per leaf."""

    __slots__ = ("_next", "at", "concrete", "rule")

    def __init__(self, stages: list[Any], concrete: Rule, rule: Rule, count: int) -> None:
        super().__init__(stages)
        self.concrete = concrete
        self.rule = rule
        self.at = count  # the count it is for (list.count stays the list's)
        self._next: tuple[Any, ...] | None = None

    def next_plan(self, x: Any, state: Any) -> tuple[Any, ...]:
        """The plan of the count after this one, for leaves like ``x`` (made once)."""
        nxt = self._next
        if nxt is None:
            nxt = self._next = scheduled_plan(self.rule, x, state, self.at + 1)
        return nxt


def moved_on(plan: tuple[Any, ...]) -> tuple[Any, ...]:
    """The plan of a scheduled leaf whose count moved on outside a batch: no template (so
    the walk routes it) and no count (so ``route`` plans it again, without checking the
    state again: its rule and dtype are the same)."""
    return plan[:3] + (None, True, -1)


def scheduled_plan(rule: Rule, x: Any, state: Any, count: int) -> tuple[Any, ...]:
    """The plan of a scheduled ``rule`` for leaves like ``x`` at ``count``: its template
    is that of ``rule._at(count)`` as a :class:`ScheduledTemplate` (or None: a barrier);
    one plan object per rule, dtype and count while it is in use."""
    key = (id(rule), x.dtype, count)
    got = _SCHEDULED.get(key)
    if got is None or got[0] is not rule:
        if len(_SCHEDULED) > 4096:
            _SCHEDULED.clear()
        concrete = rule._at(count)
        stages = template(concrete, x, state)
        tpl = None if stages is None else ScheduledTemplate(stages, concrete, rule, count)
        got = _SCHEDULED[key] = (
            rule,
            (rule, x.dtype, gradient_dtype(rule, x.dtype), tpl, True, count),
        )
    return got[1]


def check_state(
    rule: Any, state: Any, x: Any, link: tuple[Any, ...], otherwise: str | None = None
) -> None:
    """``ValueError`` naming the key path and what differs when ``state`` does not fit
    ``rule`` for the parameter ``x`` (``otherwise``: the reason to give when nothing is
    found to differ, else fine).  A rule written in Python keeps a state of its own."""
    misfit = None if rule._user_rule() else state_misfit(rule, state, x)
    misfit = misfit or otherwise
    if misfit is not None:
        raise ValueError(
            f"the state of the Leaf at {linked_keypath(link)} does not fit its "
            f"rule {rule!r} for a parameter of {x.dtype} and shape {x.shape}: "
            f"{misfit} (the state tree was changed by hand, or set up for "
            f"another model or rule)"
        )


# (id(rule), parameter dtype) -> (rule, template or None); the rule is kept so its id stays
# valid, and one template object is shared by all the leaves of a group.
_TEMPLATES: dict[tuple[int, Any], tuple[Rule, Any]] = {}
# (id(rule), parameter dtype, count) -> (rule, plan) of the scheduled rules
_SCHEDULED: dict[tuple[int, Any, int], tuple[Rule, tuple[Any, ...]]] = {}

# what the batch kernels take (and 16-bit floats, is_low_precision); other parameters run
# through a Program each
BATCH_DTYPES = frozenset((np.dtype(np.float32), np.dtype(np.float64)))


# ----------------------------------------------------------------------------------------
# Templates: one program for a group of leaves (recorded once, filled per leaf by the batch).


class _Barrier(Exception):
    """A rule asked for the whole step: this program cannot run as a batch."""


class _Recorder(Program):
    """A Program that only records stages; any barrier makes it give up."""

    __slots__ = ()
    recording = True

    def current(self) -> Any:
        raise _Barrier

    def set_source(self, d: Any) -> None:
        raise _Barrier

    def assign(self, value: Any) -> None:
        raise _Barrier


def _paths(
    state: Any, prefix: tuple[Any, ...] = (), out: dict[int, tuple[Any, ...]] | None = None
) -> dict[int, tuple[Any, ...]]:
    """id(array) -> index path inside a state made of tuples, arrays and scalars."""
    if out is None:
        out = {}
    if isinstance(state, np.ndarray):
        out.setdefault(id(state), prefix)
    elif isinstance(state, tuple):
        for i, s in enumerate(state):
            _paths(s, prefix + (i,), out)
    return out


def template(rule: Any, x: Any, state: Any) -> Any:
    """The program of ``rule`` for leaves like ``x`` as a list of stages whose buffers are
    index paths into a leaf's state, or ``None`` when the rule needs a barrier (or the
    dtype is not float16/bfloat16/float32/float64)."""
    if x.dtype not in BATCH_DTYPES and not is_low_precision(x.dtype):
        return None
    rec = _Recorder(x, x)
    try:
        new_state = rule._compile(state, rec)
    except _Barrier:
        return None
    if new_state is not state or not rec.stages:
        return None  # a rule that rebuilds its state cannot be batched
    paths = _paths(state)
    try:
        return [
            (
                kind,
                hp,
                tuple(paths[id(b)] for b in bufs),
                None if sc is None else paths[id(sc)],
                None if ctr is None else paths[id(ctr)],
            )
            for kind, hp, bufs, sc, ctr in rec.stages
        ]
    except KeyError:
        return None
