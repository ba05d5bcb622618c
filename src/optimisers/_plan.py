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

import threading
import weakref
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
    "advance",
    "advance_scheduled",
    "check_state",
    "global_omega",
    "join",
    "leaf_plan",
    "moved_on",
    "plan_count",
    "rule_state_misfit",
    "scheduled_plan",
    "scheduled_templates",
    "template",
]


def leaf_plan(leaf: Leaf, x: Any, link: tuple[Any, ...]) -> tuple[Any, ...]:
    """What does not change between steps for a Leaf and its array, cached on the Leaf as
    ``(rule, dtype, gradient dtype, batch template or None, scheduled, count)``: the dtype
    its gradient is cast to, and the batch template of its rule (:func:`template`), keyed
    by the identity of its rule and of the array's dtype.  A rule with a scheduled
    hyper-parameter has one template per count (:func:`scheduled_plan`): the plan holds the
    one of the leaf's count (:func:`plan_count`), which moves on with the count of its
    leaves (:func:`advance`), so that the walk batches such a leaf inline like any other.
    Made when a Leaf meets an array of a new dtype or a new rule; its state is then checked
    against the rule and the array (``ValueError`` naming the key path and what differs),
    unless only hyper-parameters changed (adjust_)."""
    rule, old = leaf.rule, leaf._plan
    if old is None or old[1] is not x.dtype or type(old[0]) is not type(rule):
        check_state(rule, leaf.state, x, link)
    if rule._scheduled():
        return join(leaf, scheduled_plan(rule, x, leaf.state, leaf._count))
    key = (id(rule), x.dtype)
    tpl = _TEMPLATES.get(key)
    if tpl is None or tpl[0] is not rule:
        if len(_TEMPLATES) > 4096:
            _TEMPLATES.clear()
        tpl = _TEMPLATES[key] = (rule, template(rule, x, leaf.state))
    plan = leaf._plan = (rule, x.dtype, gradient_dtype(rule, x.dtype), tpl[1], False, 0)
    return plan


class ScheduledTemplate(list):
    """The template of a scheduled rule at one count, shared by the leaves at that count:
    the rule made concrete there (``concrete``: every schedule replaced by its value)
    recorded as any template.  Its type marks it for the batch (``Batch.marked``) and the
    engine.  ``at`` is the count it is for: when every leaf that holds it (``members``)
    has stepped, :func:`advance` moves it on to the next count in place, so that a
    schedule costs one evaluation per rule, dtype and step, and nothing per leaf."""

    __slots__ = ("at", "concrete", "rule", "plan", "members", "_upcoming", "global_omega")

    def __init__(self, stages: list[Any], concrete: Rule, rule: Rule, count: int) -> None:
        super().__init__(stages)
        self.concrete = concrete
        self.rule = rule
        self.at = count  # the count it is for (list.count stays the list's)
        self.plan: tuple[Any, ...] = ()  # the plan that holds it (set by scheduled_plan)
        # id -> every Leaf given this template's plan (join): a superset of those that
        # hold it (a Leaf is not hashable; a dead one leaves by itself)
        self.members: weakref.WeakValueDictionary[int, Leaf] = weakref.WeakValueDictionary()
        self._upcoming: tuple[Any, ...] = ()  # (count, concrete rule, stages) of upcoming()
        self.global_omega = global_omega(rule)  # its norm group at every count (settle)

    def upcoming(self, x: Any, state: Any) -> tuple[Any, ...]:
        """``(count, concrete rule, stages or None)`` of the count after this one, for
        leaves like ``x``: made once, so that the engine can make it while the rules are
        still in cache, before the kernels run, and :func:`advance` take it after."""
        got = self._upcoming
        if not got or got[0] != self.at + 1:
            got = self._upcoming = (self.at + 1, *_made_at(self.rule, x, state, self.at + 1))
        return got


def global_omega(rule: Any) -> Any:
    """The omega of ``rule``'s leading ClipGlobalNorm as the rule holds it (a schedule, or
    a number), which names its norm group at every count (``_global.settle``); None
    without one."""
    f = getattr(rule, "_global_spec", None)
    spec = f() if f is not None else None
    return None if spec is None else spec["omega"]


def _made_at(rule: Rule, x: Any, state: Any, count: int) -> tuple[Rule, Any]:
    """``rule`` at ``count`` (every schedule replaced by its value) and its template for
    leaves like ``x`` (None: a barrier)."""
    concrete = rule._at(count)
    return concrete, template(concrete, x, state)


def plan_count(plan: tuple[Any, ...]) -> int:
    """The count a scheduled plan is for (its template's, which moves on in place)."""
    tpl = plan[3]
    return plan[5] if tpl is None else int(tpl.at)


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
    with _LOCK:
        got = _SCHEDULED.get(key)
        if got is not None and got[0] is rule and plan_count(got[1]) == count:
            return got[1]
        if len(_SCHEDULED) > 4096:
            _SCHEDULED.clear()
        concrete, stages = _made_at(rule, x, state, count)
        tpl = None if stages is None else ScheduledTemplate(stages, concrete, rule, count)
        plan = (rule, x.dtype, gradient_dtype(rule, x.dtype), tpl, True, count)
        if tpl is not None:
            tpl.plan = plan
        _SCHEDULED[key] = (rule, plan)
        return plan


def join(leaf: Leaf, plan: tuple[Any, ...]) -> tuple[Any, ...]:
    """Give ``leaf`` the scheduled ``plan``, as a member of its template."""
    with _LOCK:
        leaf._plan = plan
        if plan[3] is not None:
            plan[3].members[id(leaf)] = leaf
    return plan


def advance(tpl: ScheduledTemplate, stepped: int, x: Any, state: Any) -> bool:
    """Move ``tpl`` on to the next count in place, when the ``stepped`` leaves of it that
    a step ran (and counted) are every leaf that holds it; ``x`` and ``state`` are one of
    them.  False when some leaf that holds it did not step (the caller then moves the
    stepped ones on one by one, :meth:`ScheduledTemplate` of the next count), or when the
    rule needs a barrier at the next count."""
    with _LOCK:
        if len(tpl.members) != stepped:
            for key, leaf in list(tpl.members.items()):  # forget those that hold another plan
                if leaf._plan is not tpl.plan:
                    del tpl.members[key]
            if len(tpl.members) != stepped:
                return False
        count, concrete, stages = tpl.upcoming(x, state)
        if stages is None:
            return False
        rule, dtype = tpl.rule, x.dtype
        old = _SCHEDULED.get((id(rule), dtype, tpl.at))
        if old is not None and old[1] is tpl.plan:
            del _SCHEDULED[(id(rule), dtype, tpl.at)]
        tpl[:] = stages
        tpl.concrete = concrete
        tpl.at = count
        _SCHEDULED.setdefault((id(rule), dtype, count), (rule, tpl.plan))
        return True


def scheduled_templates(batches: list[Any]) -> list[list[Any]]:
    """``[template, leaves, x, state]`` for each scheduled template the batches run (how
    many leaves run it, and one of them), its next count's template made."""
    found: dict[int, list[Any]] = {}
    for batch in batches:
        if not batch.marked:
            continue
        for tpl, n, first in batch.marked_templates():
            got = found.get(id(tpl))
            if got is None:
                e = batch.entries[first]
                found[id(tpl)] = [tpl, n, e[2], e[1]]
                tpl.upcoming(e[2], e[1])
            else:
                got[1] += n
    return list(found.values())


def advance_scheduled(scheduled: list[list[Any]], stepped: list[list[tuple[Any, ...]]]) -> None:
    """Move the plans of the scheduled leaves the batches ran (and counted) on to the next
    count: their template in place where they are all the leaves that hold it (one
    evaluation of the schedule a step, nothing per leaf: ``advance``), else each
    stepped leaf to the plan of its new count."""
    for tpl, n, x, state in scheduled:
        if not advance(tpl, n, x, state):
            nxt = scheduled_plan(tpl.rule, x, state, tpl.at + 1)
            for entries in stepped:
                for e in entries:
                    if e[0] is tpl:
                        join(e[4], nxt)


def rule_state_misfit(rule: Any, state: Any, x: Any) -> str | None:
    """:func:`state_misfit`, or None for a rule written in Python (it keeps a state of its
    own)."""
    return None if rule._user_rule() else state_misfit(rule, state, x)


def check_state(
    rule: Any, state: Any, x: Any, link: tuple[Any, ...], otherwise: str | None = None
) -> None:
    """``ValueError`` naming the key path and what differs when ``state`` does not fit
    ``rule`` for the parameter ``x`` (``otherwise``: the reason to give when nothing is
    found to differ, else fine).  A rule written in Python keeps a state of its own."""
    misfit = rule_state_misfit(rule, state, x) or otherwise
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
# (id(rule), parameter dtype, count) -> (rule, plan) of the scheduled rules; an entry whose
# template moved on is no longer for its count (plan_count tells)
_SCHEDULED: dict[tuple[int, Any, int], tuple[Rule, tuple[Any, ...]]] = {}
# the templates' members and counts move together (update_ may run in several threads)
_LOCK = threading.RLock()

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
