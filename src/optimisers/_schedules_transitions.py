"""The schedules of one formula each: constant, linear, polynomial, cosine_decay and
exponential_decay (public in ``optimisers.schedules``).

Examples
--------
>>> s = exponential_decay(1.0, transition_steps=2, decay_rate=0.25, staircase=True)
>>> [s(t) for t in range(5)]
[1.0, 1.0, 0.25, 0.25, 0.0625]
"""

from __future__ import annotations

import math
from typing import Any

from ._schedule import Schedule, check_flag, check_real, check_steps, schedule_class

__all__ = ["constant", "polynomial", "linear", "cosine_decay", "exponential_decay"]


@schedule_class
class constant(Schedule):
    """The same value at every count (optax's ``constant_schedule``).

    .. math:: s(t) = v

    Parameters
    ----------
    value : float
        The value.

    Examples
    --------
    >>> from optimisers import schedules
    >>> schedules.constant(0.1)(12345)
    0.1
    """

    value: float

    def _check(self) -> dict[str, Any]:
        return {"value": check_real("constant", "value", self.value)}

    def _value(self, count: int) -> float:
        return self.value


def _polynomial_value(
    init_value: float,
    end_value: float,
    power: float,
    transition_steps: int,
    transition_begin: int,
    count: int,
) -> float:
    """The value of ``polynomial`` (and of ``linear``, with power 1) at ``count``."""
    # optax's order: clip the count into the transition, then the fraction left
    if transition_steps == 0:
        return init_value
    done = min(max(count - transition_begin, 0), transition_steps)
    left = 1 - done / transition_steps
    fraction: float = left**power  # float ** float is typed Any: it may be complex
    return (init_value - end_value) * fraction + end_value


def _check_transition(schedule: str, self: linear | polynomial) -> dict[str, Any]:
    """The checks ``linear`` and ``polynomial`` share: their values and steps."""
    init_value = check_real(schedule, "init_value", self.init_value)
    end_value = check_real(schedule, "end_value", self.end_value)
    if not math.isfinite(init_value - end_value):
        raise ValueError(
            f"schedules.{schedule}: init_value={init_value!r} and "
            f"end_value={end_value!r} differ by more than a float holds"
        )
    return {
        "init_value": init_value,
        "end_value": end_value,
        "transition_steps": check_steps(schedule, "transition_steps", self.transition_steps),
        "transition_begin": check_steps(schedule, "transition_begin", self.transition_begin),
    }


def _transition_knots(self: linear | polynomial) -> tuple[int, ...]:
    """Where the transition of ``linear`` or ``polynomial`` begins and ends."""
    if self.transition_steps == 0:
        return ()
    return (self.transition_begin, self.transition_begin + self.transition_steps)


@schedule_class
class polynomial(Schedule):
    """From ``init_value`` to ``end_value`` along a power of the fraction of the transition
    left (optax's ``polynomial_schedule``).

    With :math:`I, E, P, T, B` = ``init_value, end_value, power, transition_steps,
    transition_begin``, and the count clipped into the transition,
    :math:`\\tau = \\min(\\max(t - B, 0), T)`:

    .. math:: s(t) = (I - E) \\, (1 - \\tau / T)^P + E

    so :math:`I` up to count :math:`B`, :math:`E` from count :math:`B + T` on.  With
    ``transition_steps=0`` the value stays :math:`I` (as in optax).

    Parameters
    ----------
    init_value, end_value : float
        The values before and after the transition.
    power : float
        The exponent, >= 0 (``power=0`` keeps the value at ``init_value``, as
        :math:`0^0 = 1`).
    transition_steps : int
        The length of the transition, >= 0.
    transition_begin : int
        The count where the transition starts, >= 0.

    Examples
    --------
    >>> from optimisers import schedules
    >>> s = schedules.polynomial(1.0, 0.0, power=2, transition_steps=4, transition_begin=1)
    >>> [s(t) for t in range(7)]
    [1.0, 1.0, 0.5625, 0.25, 0.0625, 0.0, 0.0]
    """

    init_value: float
    end_value: float
    power: float
    transition_steps: int
    transition_begin: int = 0

    def _check(self) -> dict[str, Any]:
        checked = _check_transition("polynomial", self)
        checked["power"] = check_real("polynomial", "power", self.power, lo=0.0)
        return checked

    def _value(self, count: int) -> float:
        return _polynomial_value(
            self.init_value,
            self.end_value,
            self.power,
            self.transition_steps,
            self.transition_begin,
            count,
        )

    _knots = _transition_knots


@schedule_class
class linear(Schedule):
    """From ``init_value`` to ``end_value`` in a straight line (optax's
    ``linear_schedule``: the polynomial of power 1).

    With :math:`\\tau = \\min(\\max(t - B, 0), T)` as in :class:`polynomial`:

    .. math:: s(t) = (I - E) \\, (1 - \\tau / T) + E

    Parameters
    ----------
    init_value, end_value : float
        The values before and after the transition.
    transition_steps : int
        The length of the transition, >= 0; with 0 the value stays ``init_value``.
    transition_begin : int
        The count where the transition starts, >= 0.

    Examples
    --------
    >>> from optimisers import schedules
    >>> s = schedules.linear(init_value=0.0, end_value=1.0, transition_steps=4)
    >>> [s(t) for t in range(6)]
    [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    """

    init_value: float
    end_value: float
    transition_steps: int
    transition_begin: int = 0

    def _check(self) -> dict[str, Any]:
        return _check_transition("linear", self)

    def _value(self, count: int) -> float:
        return _polynomial_value(
            self.init_value, self.end_value, 1, self.transition_steps, self.transition_begin, count
        )

    _knots = _transition_knots


@schedule_class
class cosine_decay(Schedule):
    """Half a cosine from ``init_value`` down to ``alpha * init_value`` over
    ``decay_steps`` (optax's ``cosine_decay_schedule``).

    With :math:`I, T, \\alpha, p` = ``init_value, decay_steps, alpha, exponent``:

    .. math:: s(t) = I \\left( (1 - \\alpha) \\left[ \\tfrac12
              \\left(1 + \\cos \\tfrac{\\pi \\min(t, T)}{T}\\right) \\right]^p + \\alpha \\right)

    Parameters
    ----------
    init_value : float
        The value at count 0.
    decay_steps : int
        The length of the decay, > 0.
    alpha : float
        The final value as a fraction of ``init_value``.
    exponent : float
        The power of the half cosine, >= 0.

    Examples
    --------
    >>> from optimisers import schedules
    >>> s = schedules.cosine_decay(1.0, decay_steps=4, alpha=0.5)
    >>> [round(s(t), 6) for t in range(6)]
    [1.0, 0.926777, 0.75, 0.573223, 0.5, 0.5]
    """

    init_value: float
    decay_steps: int
    alpha: float = 0.0
    exponent: float = 1.0

    def _check(self) -> dict[str, Any]:
        return {
            "init_value": check_real("cosine_decay", "init_value", self.init_value),
            "decay_steps": check_steps("cosine_decay", "decay_steps", self.decay_steps, minimum=1),
            "alpha": check_real("cosine_decay", "alpha", self.alpha),
            "exponent": check_real("cosine_decay", "exponent", self.exponent, lo=0.0),
        }

    def _value(self, count: int) -> float:
        # optax's order: pi * count first, then / decay_steps
        steps = self.decay_steps
        half_cosine = 0.5 * (1 + math.cos(math.pi * min(count, steps) / steps))
        shape: float = half_cosine**self.exponent
        return self.init_value * ((1 - self.alpha) * shape + self.alpha)

    def _knots(self) -> tuple[int, ...]:
        return (self.decay_steps,)


def _power(base: float, exponent: float) -> float:
    """``base ** exponent`` for ``base > 0``, infinite where it overflows (as in optax;
    Python's ``**`` raises there)."""
    try:
        value: float = base**exponent
    except OverflowError:
        return math.inf
    return value


@schedule_class
class exponential_decay(Schedule):
    """``init_value`` times ``decay_rate`` to the power of the transitions elapsed since
    ``transition_begin``, kept on the near side of ``end_value`` (optax's
    ``exponential_decay``).

    With :math:`I, T, r, B` = ``init_value, transition_steps, decay_rate,
    transition_begin`` and :math:`p = (t - B) / T` (rounded down when ``staircase``):

    .. math:: s(t) = \\operatorname{clip}(I \\, r^{p}) \\text{ for } t > B, \\quad
              \\operatorname{clip}(I) \\text{ for } t \\le B

    where :math:`\\operatorname{clip}(v) = \\max(v, E)` when :math:`r < 1` and
    :math:`\\min(v, E)` otherwise, with :math:`E` = ``end_value`` (no clip when it is None;
    the clip applies before ``transition_begin`` too, as in optax).  With
    ``transition_steps=0`` or ``decay_rate=0`` the value stays :math:`I`, unclipped (as in
    optax).  A power that overflows is infinite.

    Parameters
    ----------
    init_value : float
        The value up to ``transition_begin``.
    transition_steps : int
        The count of updates over which the value is multiplied by ``decay_rate`` once,
        >= 0.
    decay_rate : float
        The factor per transition, >= 0.
    transition_begin : int
        The count where the decay starts, >= 0.
    staircase : bool
        Whether the value changes only at whole transitions.
    end_value : float or None
        The bound the value stops at: a floor when ``decay_rate < 1``, a ceiling otherwise.

    Raises
    ------
    ValueError
        Besides the arguments' ranges: ``init_value=0`` with ``decay_rate > 1``, whose
        values become ``0 * inf = nan`` once the power overflows (optax's ``nan``).

    Examples
    --------
    >>> from optimisers import schedules
    >>> s = schedules.exponential_decay(8.0, transition_steps=1, decay_rate=0.5,
    ...                                 transition_begin=1, end_value=1.5)
    >>> [s(t) for t in range(6)]
    [8.0, 8.0, 4.0, 2.0, 1.5, 1.5]
    >>> s.bounds()
    (1.5, 8.0)
    """

    init_value: float
    transition_steps: int
    decay_rate: float
    transition_begin: int = 0
    staircase: bool = False
    end_value: float | None = None

    def _check(self) -> dict[str, Any]:
        name = "exponential_decay"
        checked: dict[str, Any] = {
            "init_value": check_real(name, "init_value", self.init_value),
            "transition_steps": check_steps(name, "transition_steps", self.transition_steps),
            "decay_rate": check_real(name, "decay_rate", self.decay_rate, lo=0.0),
            "transition_begin": check_steps(name, "transition_begin", self.transition_begin),
            "staircase": check_flag(name, "staircase", self.staircase),
            "end_value": (
                None if self.end_value is None else check_real(name, "end_value", self.end_value)
            ),
        }
        if (
            checked["init_value"] == 0
            and checked["decay_rate"] > 1
            and checked["transition_steps"] > 0
        ):
            raise ValueError(
                f"schedules.{name}: init_value=0.0 with decay_rate="
                f"{checked['decay_rate']!r} > 1 gives nan (0 * inf) once the "
                "power overflows; use schedules.constant(0.0)"
            )
        return checked

    def _held(self) -> bool:
        """Whether optax holds the value at ``init_value`` (no decay, no clip)."""
        return self.transition_steps == 0 or self.decay_rate == 0

    def _clip(self, value: float) -> float:
        if self.end_value is None:
            return value
        if self.decay_rate < 1:
            return max(value, self.end_value)
        return min(value, self.end_value)

    def _value(self, count: int) -> float:
        if self._held():
            return self.init_value
        elapsed = count - self.transition_begin
        if elapsed <= 0:
            return self._clip(self.init_value)
        p = elapsed / self.transition_steps
        if self.staircase:
            p = float(math.floor(p))
        return self._clip(self.init_value * _power(self.decay_rate, p))

    def _range(self, stop: int | None) -> tuple[float, float]:
        # monotone in the count: the extremes are the first value and the last (or the
        # limit over all counts: the power tends to 0, 1 or inf)
        first = self._value(0)
        if stop is not None:
            last = self._value(stop - 1)
        elif self._held():
            last = first
        else:
            rate = self.decay_rate
            power = 0.0 if rate < 1 else (1.0 if rate == 1 else math.inf)
            last = self._clip(self.init_value * power)
        return min(first, last), max(first, last)
