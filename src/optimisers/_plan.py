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
from ._leaf import state_misfit
from ._program import Program, gradient_dtype

__all__ = ["leaf_plan", "template", "check_state", "BATCH_DTYPES"]


def leaf_plan(leaf: Any, x: Any, link: tuple[Any, ...]) -> tuple[Any, ...]:
    """What does not change between steps for a Leaf and its array, cached on the Leaf as
    ``(rule, dtype, gradient dtype, batch template or None, scheduled)``: the dtype its
    gradient is cast to, and the batch template of its rule (:func:`template`), keyed by
    the identity of its rule and of the array's dtype (none for a rule with a scheduled
    hyper-parameter: :meth:`Step.rule_of`).  Made when a Leaf meets an array of a new dtype
    or a new rule; its state is then checked against the rule and the array (``ValueError``
    naming the key path and what differs), unless only hyper-parameters changed (adjust_)."""
    rule, old = leaf.rule, leaf._plan
    if old is None or old[1] is not x.dtype or type(old[0]) is not type(rule):
        check_state(rule, leaf.state, x, link)
    if rule._scheduled():        # its template is made each step (Step.rule_of)
        plan = leaf._plan = (rule, x.dtype, gradient_dtype(rule, x.dtype), None, True)
        return plan
    key = (id(rule), x.dtype)
    tpl = _TEMPLATES.get(key)
    if tpl is None or tpl[0] is not rule:
        if len(_TEMPLATES) > 4096:
            _TEMPLATES.clear()
        tpl = _TEMPLATES[key] = (rule, template(rule, x, leaf.state))
    plan = leaf._plan = (rule, x.dtype, gradient_dtype(rule, x.dtype), tpl[1], False)
    return plan


def check_state(rule: Any, state: Any, x: Any, link: tuple[Any, ...],
                otherwise: str | None = None) -> None:
    """``ValueError`` naming the key path and what differs when ``state`` does not fit
    ``rule`` for the parameter ``x`` (``otherwise``: the reason to give when nothing is
    found to differ, else fine).  A rule written in Python keeps a state of its own."""
    misfit = None if rule._user_rule() else state_misfit(rule, state, x)
    misfit = misfit or otherwise
    if misfit is not None:
        raise ValueError(f"the state of the Leaf at {linked_keypath(link)} does not fit its "
                         f"rule {rule!r} for a parameter of {x.dtype} and shape {x.shape}: "
                         f"{misfit} (the state tree was changed by hand, or set up for "
                         f"another model or rule)")


# (id(rule), parameter dtype) -> (rule, template or None); the rule is kept so its id stays
# valid, and one template object is shared by all the leaves of a group.
_TEMPLATES = {}

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


def _paths(state: Any, prefix: tuple[Any, ...] = (),
           out: dict[int, tuple[Any, ...]] | None = None) -> dict[int, tuple[Any, ...]]:
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
        return None          # a rule that rebuilds its state cannot be batched
    paths = _paths(state)
    try:
        return [(kind, hp, tuple(paths[id(b)] for b in bufs),
                 None if sc is None else paths[id(sc)],
                 None if ctr is None else paths[id(ctr)])
                for kind, hp, bufs, sc, ctr in rec.stages]
    except KeyError:
        return None
