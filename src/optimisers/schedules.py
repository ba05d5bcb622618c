"""Schedules: hyperparameters that change with the count of updates, as values.

The nine schedules of optax's ``optax/schedules/_schedule.py`` and ``_join.py`` under the
names of ``optimisers``' API, with optax's arguments, defaults and values (computed in
float64 in optax's order of operations) and optax's edge cases.  Each is a class named like
a function, so that its ``repr``, ``schedules.linear(init_value=1.0, ...)``, is the call
that builds it; it is an immutable value (see :class:`Schedule`).  ``s(count)`` is the value
for the update that has ``count`` updates before it: 0 at the first.

Arguments are checked when the schedule is built: a ``TypeError`` or ``ValueError`` names
the schedule, the argument and the value.  optax takes some arguments that these refuse:
a count of steps that is negative (optax takes a negative ``transition_begin`` as 0) or
not an integer; a non-finite value; a negative ``power``, ``exponent`` or ``decay_rate``
(infinite or nan values); ``pct_start`` outside [0, 1] or a non-positive ``div_factor``;
and the few arguments whose values optax computes as nan or beyond a float (an
exponential growth of ``init_value=0``).  ``transition_steps=0`` keeps optax's meaning:
the value stays ``init_value``.

=======================  ==========================================================
``constant``             ``value`` at every count
``linear``               a straight line from ``init_value`` to ``end_value``
``polynomial``           the same along a power of the fraction left
``cosine_decay``         half a cosine down to ``alpha * init_value``
``warmup_cosine_decay``  a linear warmup, then a cosine decay
``exponential_decay``    ``init_value * decay_rate ** (elapsed / transition_steps)``
``piecewise_constant``   ``init_value`` times the scales of the boundaries reached
``cosine_onecycle``      half a cosine up to ``peak_value``, half a cosine down
``join``                 one schedule after another, each counted from its boundary
=======================  ==========================================================

Examples
--------
>>> from optimisers import schedules
>>> eta = schedules.warmup_cosine_decay(init_value=0.0, peak_value=1e-3, warmup_steps=100,
...                                     decay_steps=1000, end_value=1e-5)
>>> eta(0), eta(50), eta(100)
(0.0, 0.0005, 0.001)
>>> eta.bounds()
(0.0, 0.001)
>>> schedules.SCHEDULES["linear"](**schedules.linear(1.0, 0.0, 10).fields())
schedules.linear(init_value=1.0, end_value=0.0, transition_steps=10, transition_begin=0)
"""

from ._schedule import Schedule, registry, value_at
from ._schedules_piecewise import cosine_onecycle, join, piecewise_constant, warmup_cosine_decay
from ._schedules_transitions import constant, cosine_decay, exponential_decay, linear, polynomial

__all__ = [
    "Schedule",
    "value_at",
    "SCHEDULES",
    "constant",
    "linear",
    "polynomial",
    "cosine_decay",
    "warmup_cosine_decay",
    "exponential_decay",
    "piecewise_constant",
    "cosine_onecycle",
    "join",
]

#: every schedule class by name: what a checkpoint rebuilds a schedule from, as
#: ``SCHEDULES[name](**fields)`` (a name outside this table is refused, never imported)
SCHEDULES = registry()

# The classes are defined in private modules; they are named here, where users import
# them, so that a pickle refers to optimisers.schedules.<name> whichever module defines them.
for _cls in SCHEDULES.values():
    _cls.__module__ = __name__
del _cls
