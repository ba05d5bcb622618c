"""The schedule value: the base class of the schedules of ``optimisers.schedules``, and the
checks their arguments go through.

A schedule maps a count of updates to a number.  It is a value like a rule: a frozen
dataclass whose fields are its constructor's arguments, compared and hashed by them, whose
``repr`` is its call, and which pickles by calling its constructor again (so a pickle is
validated on load like a call).

Examples
--------
>>> from optimisers import schedules
>>> s = schedules.linear(init_value=1.0, end_value=0.0, transition_steps=4)
>>> isinstance(s, Schedule), s(2), s.bounds()
(True, 0.5, (0.0, 1.0))
>>> check_real("linear", "end_value", float("nan"))
Traceback (most recent call last):
...
ValueError: schedules.linear: end_value=nan must be a finite number
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, TypeAlias, TypeVar, overload

import numpy as np

from ._types import dataclass_transform

__all__ = [
    "Schedule",
    "schedule_class",
    "value_at",
    "check_real",
    "check_steps",
    "check_flag",
    "registry",
    "Hyperparameter",
    "HyperPair",
]

# Every schedule class of this package by name, filled as the class statements run; a
# checkpoint rebuilds a schedule from its name through this table only (never by importing
# a name it read), so a file cannot make the loader construct anything else.
_REGISTRY: dict[str, type[Schedule]] = {}

_S = TypeVar("_S", bound="type[Schedule]")


class Schedule:
    """Base class of the schedules: an immutable value mapping a count to a number.

    ``s(count)`` is the value used by the update that has ``count`` updates before it (0 at
    the first update: the count of Adam's bias correction, optax's ``count``).  The value
    is a Python ``float``, computed in float64 with optax's formula and order of operations.

    A schedule is a frozen dataclass: two schedules are equal (and hash alike) when they
    are of the same kind with equal arguments; ``repr`` spells the call that builds it,
    ``schedules.<name>(<argument>=<value>, ...)``, which evaluates back to an equal
    schedule after ``from optimisers import schedules``; ``pickle`` rebuilds it through its
    constructor.  :meth:`fields` and :data:`optimisers.schedules.SCHEDULES` are what a
    checkpoint stores and reads without pickle.

    Methods
    -------
    __call__(count)
        The value at ``count`` (a non-negative Python or numpy integer).
    bounds(steps=None)
        The least and greatest values over the counts ``0 .. steps - 1`` (all counts when
        ``steps`` is None).
    fields()
        The constructor's arguments, by name.

    Examples
    --------
    >>> import pickle
    >>> from optimisers import schedules
    >>> s = schedules.cosine_decay(init_value=2.0, decay_steps=10)
    >>> s(0), s(5), s(10), s(11)
    (2.0, 1.0, 0.0, 0.0)
    >>> s
    schedules.cosine_decay(init_value=2.0, decay_steps=10, alpha=0.0, exponent=1.0)
    >>> eval(repr(s)) == s == pickle.loads(pickle.dumps(s)), hash(s) == hash(eval(repr(s)))
    (True, True)
    """

    # Subclasses are frozen dataclasses; the base has no fields.
    __slots__ = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__module__.startswith("optimisers.") and not cls.__name__.startswith("_"):
            _REGISTRY[cls.__name__] = cls

    def __call__(self, count: int | np.integer[Any]) -> float:
        """The value at ``count``, the number of updates taken before this one.

        Parameters
        ----------
        count : int or numpy.integer
            Non-negative.

        Returns
        -------
        float
            The value.

        Raises
        ------
        TypeError
            If ``count`` is not an integer.
        ValueError
            If ``count`` is negative.

        Examples
        --------
        >>> import numpy as np
        >>> from optimisers import schedules
        >>> schedules.linear(1.0, 3.0, transition_steps=4)(np.int64(1))
        1.5
        """
        return self._value(check_steps(type(self).__name__, "count", count))

    def _value(self, count: int) -> float:
        """The value at a validated ``count`` (a Python int)."""
        raise NotImplementedError

    def fields(self) -> dict[str, Any]:
        """The arguments of the constructor that built this schedule, by name.

        ``type(s)(**s.fields()) == s``; a schedule's fields are numbers, booleans, None, a
        dict of integers to numbers (``piecewise_constant``) or a tuple of schedules
        (``join``).

        Returns
        -------
        dict
            Name to value, in the order of the constructor's arguments.

        Examples
        --------
        >>> from optimisers import schedules
        >>> schedules.constant(0.5).fields()
        {'value': 0.5}
        """
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    def bounds(self, steps: int | None = None) -> tuple[float, float]:
        """The least and the greatest value the schedule takes, over the counts
        ``0, 1, ..., steps - 1``, or over all counts when ``steps`` is None.

        Exact: both are values the schedule takes (or, for an exponential decay without an
        end value over all counts, the limit it tends to), found by evaluating it where
        its monotone pieces begin and end.  A rule refuses a schedule whose bounds leave
        the range of its field.

        Parameters
        ----------
        steps : int, optional
            How many updates to consider (positive); None for all.

        Returns
        -------
        (float, float)
            ``(lo, hi)`` with ``lo <= s(count) <= hi`` for every count considered.

        Examples
        --------
        >>> from optimisers import schedules
        >>> s = schedules.warmup_cosine_decay(0.0, peak_value=1.0, warmup_steps=2,
        ...                                   decay_steps=10, end_value=0.1)
        >>> s.bounds(), s.bounds(steps=2)
        ((0.0, 1.0), (0.0, 0.5))
        """
        if steps is not None:
            steps = check_steps(type(self).__name__, "steps", steps, minimum=1)
        return self._range(steps)

    def _range(self, stop: int | None) -> tuple[float, float]:
        """``bounds`` over the counts ``0 .. stop - 1`` (all counts for None), from the
        values at the ends of the pieces between the counts of ``_knots()``."""
        knots = self._knots()
        last = stop - 1 if stop is not None else max(knots, default=0)
        # the schedule is monotone on [k, next knot): its extremes over a stretch of counts
        # lie at the first and last count of each piece, and at the ends of the stretch
        counts = {0, last}
        counts.update(c for k in knots for c in (k - 1, k) if 0 <= c <= last)
        values = [self._value(c) for c in counts]
        return min(values), max(values)

    def _knots(self) -> tuple[int, ...]:
        """The counts where a monotone piece begins; the last is where the schedule
        settles (constant from there on)."""
        return ()

    def __repr__(self) -> str:
        args = ", ".join(f"{name}={value!r}" for name, value in self.fields().items())
        return f"schedules.{type(self).__name__}({args})"

    def __reduce__(self) -> tuple[type[Schedule], tuple[Any, ...]]:
        # through the constructor, so that a pickle is validated as a call is
        return (type(self), tuple(self.fields().values()))


@dataclass_transform(frozen_default=True)
def schedule_class(cls: _S) -> _S:
    """Decorator: ``cls`` as a frozen dataclass whose ``_check()`` validates and normalises
    its fields (and may set private derived attributes with ``object.__setattr__``).

    Examples
    --------
    >>> @schedule_class
    ... class _twice(Schedule):
    ...     value: float
    ...     def _check(self):
    ...         return {"value": check_real("_twice", "value", self.value)}
    ...     def _value(self, count):
    ...         return 2 * self.value
    >>> _twice(3)(0), _twice(3), _twice(3) == _twice(3.0)
    (6.0, schedules._twice(value=3.0), True)
    """

    def __post_init__(self: Any) -> None:
        for name, value in self._check().items():
            object.__setattr__(self, name, value)

    cls.__post_init__ = __post_init__  # type: ignore[attr-defined]
    return dataclasses.dataclass(frozen=True, repr=False)(cls)  # type: ignore[return-value]


#: a real-valued hyper-parameter of a rule: a number, or a schedule of the count of updates
Hyperparameter: TypeAlias = float | Schedule
#: a pair of them (Adam's ``beta``, Rprop's ``ell`` and ``gamma``)
HyperPair: TypeAlias = tuple[Hyperparameter, Hyperparameter]


def registry() -> dict[str, type[Schedule]]:
    """Every schedule class of this package, by name (what a checkpoint may rebuild).

    Returns
    -------
    dict
        Name to class, in the order the classes are defined.

    Examples
    --------
    >>> from optimisers import schedules
    >>> registry()["linear"] is schedules.linear
    True
    """
    return dict(_REGISTRY)


_V = TypeVar("_V")


@overload
def value_at(hyperparameter: Schedule, count: int) -> float: ...
@overload
def value_at(hyperparameter: _V, count: int) -> _V: ...
def value_at(hyperparameter: object, count: int) -> object:
    """The number a hyperparameter takes at ``count``: ``hyperparameter(count)`` for a
    schedule, the number itself otherwise.

    Parameters
    ----------
    hyperparameter : float or Schedule
        A field of a rule.
    count : int
        The number of updates taken before this one.

    Returns
    -------
    float or object
        The schedule's value, or ``hyperparameter`` unchanged when it is not a schedule.

    Examples
    --------
    >>> from optimisers import schedules
    >>> value_at(0.1, 7), value_at(schedules.linear(1.0, 0.0, 10), 7)
    (0.1, 0.30000000000000004)
    """
    if isinstance(hyperparameter, Schedule):
        return hyperparameter(count)
    return hyperparameter


# ----------------------------------------------------------------------------------------
# Argument checks.  Each returns the normalised value or raises, naming the schedule, the
# argument and the value.


def check_real(
    schedule: str, name: str, value: object, lo: float = -math.inf, lo_open: bool = False
) -> float:
    """A finite real number, not below ``lo`` (above it when ``lo_open``), as a float.

    Parameters
    ----------
    schedule, name : str
        The schedule's and the argument's names, for the message.
    value : object
        The argument.
    lo : float
        The least value allowed.
    lo_open : bool
        Whether ``lo`` itself is refused.

    Returns
    -------
    float

    Raises
    ------
    TypeError
        If ``value`` is not a real number (booleans and arrays are not).
    ValueError
        If it is not finite or lies below the bound.

    Examples
    --------
    >>> check_real("constant", "value", 3)
    3.0
    >>> check_real("cosine_decay", "exponent", -1.0, lo=0.0)
    Traceback (most recent call last):
    ...
    ValueError: schedules.cosine_decay: exponent=-1.0 must be >= 0.0
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or isinstance(value, np.ndarray)
    ):
        raise TypeError(f"schedules.{schedule}: {name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"schedules.{schedule}: {name}={value!r} must be a finite number")
    if value < lo or (lo_open and value == lo):
        raise ValueError(
            f"schedules.{schedule}: {name}={value!r} must be {'>' if lo_open else '>='} {lo!r}"
        )
    return value


def check_steps(schedule: str, name: str, value: object, minimum: int = 0) -> int:
    """An integer count of steps, at least ``minimum``, as a Python int.

    Parameters
    ----------
    schedule, name : str
        The schedule's and the argument's names, for the message.
    value : object
        The argument: a Python or numpy integer (a float, even 1e4, is refused, so that
        equal schedules are spelled alike).
    minimum : int
        The least value allowed.

    Returns
    -------
    int

    Raises
    ------
    TypeError
        If ``value`` is not an integer.
    ValueError
        If it is below ``minimum``.

    Examples
    --------
    >>> check_steps("linear", "transition_steps", -5)
    Traceback (most recent call last):
    ...
    ValueError: schedules.linear: transition_steps=-5 must be >= 0
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"schedules.{schedule}: {name} must be an integer, got {value!r}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"schedules.{schedule}: {name}={value!r} must be >= {minimum}")
    return value


def check_flag(schedule: str, name: str, value: object) -> bool:
    """A boolean switch: True or False (numpy booleans too), nothing merely truthy.

    Examples
    --------
    >>> check_flag("exponential_decay", "staircase", 1)
    Traceback (most recent call last):
    ...
    TypeError: schedules.exponential_decay: staircase must be True or False, got 1
    """
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"schedules.{schedule}: {name} must be True or False, got {value!r}")
    return bool(value)
