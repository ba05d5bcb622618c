"""The schedules made of pieces: join, warmup_cosine_decay, piecewise_constant and
cosine_onecycle (public in ``optimisers.schedules``).

Examples
--------
>>> s = piecewise_constant(1.0, {2: 0.5, 4: 0.5})
>>> [s(t) for t in range(6)], s.bounds()
([1.0, 1.0, 0.5, 0.5, 0.25, 0.25], (0.25, 1.0))
"""

from __future__ import annotations

import bisect
import math
from typing import Any, ClassVar, cast

from ._schedule import Schedule, check_real, check_steps, schedule_class
from ._schedules_transitions import cosine_decay, linear

__all__ = ["join", "warmup_cosine_decay", "piecewise_constant", "cosine_onecycle"]


@schedule_class
class join(Schedule):
    """One schedule after another (optax's ``join_schedules``): from each boundary on,
    the next schedule, counted from that boundary.

    With boundaries :math:`b_1 < \\dots < b_n`, :math:`b_0 = 0`, and :math:`k` the last
    index with :math:`b_k \\le t`:

    .. math:: s(t) = s_k(t - b_k)

    Parameters
    ----------
    schedules : sequence of Schedule
        At least one.
    boundaries : sequence of int
        ``len(schedules) - 1`` counts, >= 0 and increasing.

    Examples
    --------
    >>> from optimisers import schedules
    >>> s = schedules.join([schedules.constant(1.0), schedules.linear(1.0, 0.0, 2)], [3])
    >>> [s(t) for t in range(6)]
    [1.0, 1.0, 1.0, 1.0, 0.5, 0.0]
    >>> s
    schedules.join(schedules=(schedules.constant(value=1.0),
                              schedules.linear(init_value=1.0, end_value=0.0,
                                               transition_steps=2, transition_begin=0)),
                   boundaries=(3,))
    """

    schedules: tuple[Schedule, ...]
    boundaries: tuple[int, ...]

    def _check(self) -> dict[str, Any]:
        members = _sequence("schedules", self.schedules)
        if not members:
            raise ValueError("schedules.join: schedules=() must hold at least one schedule")
        for i, member in enumerate(members):
            if not isinstance(member, Schedule):
                raise TypeError(
                    f"schedules.join: schedules[{i}] must be a Schedule, got {member!r}"
                )
        boundaries = tuple(
            check_steps("join", f"boundaries[{i}]", b)
            for i, b in enumerate(_sequence("boundaries", self.boundaries))
        )
        if len(boundaries) != len(members) - 1:
            raise ValueError(
                f"schedules.join: boundaries={boundaries!r} must hold one count "
                f"fewer than schedules ({len(members)} schedules)"
            )
        for i in range(1, len(boundaries)):
            if boundaries[i] <= boundaries[i - 1]:
                raise ValueError(
                    f"schedules.join: boundaries={boundaries!r} must be "
                    f"increasing (boundaries[{i}] <= boundaries[{i - 1}])"
                )
        return {"schedules": members, "boundaries": boundaries}

    def _value(self, count: int) -> float:
        k = bisect.bisect_right(self.boundaries, count)
        return self.schedules[k]._value(count - (self.boundaries[k - 1] if k else 0))

    def _range(self, stop: int | None) -> tuple[float, float]:
        starts = (0,) + self.boundaries
        ends = self.boundaries + (None,)
        ranges = []
        for start, end, member in zip(starts, ends, self.schedules):
            if stop is not None and start >= stop:
                break
            if end == start:  # a boundary at 0: the first schedule is never used
                continue
            # the member's own counts: from 0 to its next boundary or to the stop
            local = [e - start for e in (end, stop) if e is not None]
            ranges.append(member._range(min(local) if local else None))
        return min(lo for lo, _ in ranges), max(hi for _, hi in ranges)


def _sequence(name: str, value: object) -> tuple[Any, ...]:
    """``value``, a list or tuple argument of ``join``, as a tuple."""
    if not isinstance(value, (tuple, list)):
        raise TypeError(f"schedules.join: {name} must be a list or tuple, got {value!r}")
    return tuple(value)


@schedule_class
class warmup_cosine_decay(Schedule):
    """A linear warmup from ``init_value`` to ``peak_value``, then a cosine decay to
    ``end_value`` (optax's ``warmup_cosine_decay_schedule``).

    With :math:`W, D` = ``warmup_steps, decay_steps`` (``decay_steps`` counts the warmup
    too) it is ``join([linear(init_value, peak_value, W), cosine_decay(peak_value, D - W,
    alpha, exponent)], [W])`` with :math:`\\alpha = E / P` (0 when :math:`P = 0`, as in
    optax, so that a zero peak decays to 0 whatever the end value):

    .. math:: s(t) = I + (P - I) \\, t / W \\text{ for } t < W, \\quad
              P \\left( (1 - \\alpha) \\left[ \\tfrac12 \\left(1 + \\cos
              \\tfrac{\\pi \\min(t - W, D - W)}{D - W}\\right) \\right]^p + \\alpha \\right)
              \\text{ otherwise}

    Parameters
    ----------
    init_value, peak_value : float
        The values at count 0 and at count ``warmup_steps``.
    warmup_steps : int
        The length of the warmup, >= 0.
    decay_steps : int
        The count where the decay ends, > ``warmup_steps``.
    end_value : float
        The value from ``decay_steps`` on.
    exponent : float
        The power of the half cosine, >= 0.

    Examples
    --------
    >>> from optimisers import schedules
    >>> s = schedules.warmup_cosine_decay(0.0, peak_value=1.0, warmup_steps=2,
    ...                                   decay_steps=4, end_value=0.5)
    >>> [s(t) for t in range(6)]
    [0.0, 0.5, 1.0, 0.75, 0.5, 0.5]
    """

    init_value: float
    peak_value: float
    warmup_steps: int
    decay_steps: int
    end_value: float = 0.0
    exponent: float = 1.0
    # derived by _check, per instance (a ClassVar to the type checker: not a field)
    _pieces: ClassVar[join]

    def _check(self) -> dict[str, Any]:
        name = "warmup_cosine_decay"
        checked: dict[str, Any] = {
            "init_value": check_real(name, "init_value", self.init_value),
            "peak_value": check_real(name, "peak_value", self.peak_value),
            "warmup_steps": check_steps(name, "warmup_steps", self.warmup_steps),
            "decay_steps": check_steps(name, "decay_steps", self.decay_steps),
            "end_value": check_real(name, "end_value", self.end_value),
            "exponent": check_real(name, "exponent", self.exponent, lo=0.0),
        }
        warmup, decay, peak = (
            checked["warmup_steps"],
            checked["decay_steps"],
            checked["peak_value"],
        )
        if decay <= warmup:
            raise ValueError(
                f"schedules.{name}: decay_steps={decay!r} must exceed "
                f"warmup_steps={warmup!r} (decay_steps counts the warmup too)"
            )
        alpha = 0.0 if peak == 0.0 else checked["end_value"] / peak
        if not math.isfinite(alpha):
            raise ValueError(
                f"schedules.{name}: end_value={checked['end_value']!r} over "
                f"peak_value={peak!r} overflows"
            )
        checked["_pieces"] = join(
            (
                linear(checked["init_value"], peak, warmup),
                cosine_decay(peak, decay - warmup, alpha, checked["exponent"]),
            ),
            (warmup,),
        )
        return checked

    def _value(self, count: int) -> float:
        return self._pieces._value(count)

    def _range(self, stop: int | None) -> tuple[float, float]:
        return self._pieces._range(stop)


@schedule_class
class piecewise_constant(Schedule):
    """``init_value`` times the scales of every boundary reached (optax's
    ``piecewise_constant_schedule``).

    With the boundaries :math:`b_1 < b_2 < \\dots` and their scales :math:`c_i`, multiplied
    in the order of the boundaries:

    .. math:: s(t) = I \\prod_{b_i \\le t} c_i

    Parameters
    ----------
    init_value : float
        The value before the first boundary.
    boundaries_and_scales : dict or None
        ``{boundary: scale}``: from count ``boundary`` on, the value is multiplied by
        ``scale``; boundaries >= 0, scales >= 0.  None or ``{}``: a constant.  The items'
        pairs are accepted too (the schedule keeps them sorted; :meth:`fields` gives the
        dict).

    Examples
    --------
    >>> from optimisers import schedules
    >>> s = schedules.piecewise_constant(0.1, {3: 0.1, 1: 10.0})
    >>> [s(t) for t in range(5)]
    [0.1, 1.0, 1.0, 0.1, 0.1]
    >>> s
    schedules.piecewise_constant(init_value=0.1, boundaries_and_scales={1: 10.0, 3: 0.1})
    """

    init_value: float
    boundaries_and_scales: tuple[tuple[int, float], ...] | dict[int, float] | None = None

    def _check(self) -> dict[str, Any]:
        name = "piecewise_constant"
        given = self.boundaries_and_scales
        if given is None:
            given = ()
        elif isinstance(given, dict):
            given = tuple(given.items())
        elif not isinstance(given, (tuple, list)) or any(
            not isinstance(pair, (tuple, list)) or len(pair) != 2 for pair in given
        ):
            raise TypeError(
                f"schedules.{name}: boundaries_and_scales must be a dict "
                f"{{boundary: scale}}, got {given!r}"
            )
        pairs = {}
        for boundary, scale in given:
            boundary = check_steps(name, "boundaries_and_scales (a boundary)", boundary)
            if boundary in pairs:
                raise ValueError(
                    f"schedules.{name}: boundaries_and_scales holds the boundary {boundary} twice"
                )
            pairs[boundary] = check_real(name, f"boundaries_and_scales[{boundary}]", scale, lo=0.0)
        return {
            "init_value": check_real(name, "init_value", self.init_value),
            "boundaries_and_scales": tuple(sorted(pairs.items())),
        }

    def fields(self) -> dict[str, Any]:
        """The constructor's arguments, ``boundaries_and_scales`` as a dict.

        Examples
        --------
        >>> from optimisers import schedules
        >>> schedules.piecewise_constant(1.0, {5: 0.5}).fields()
        {'init_value': 1.0, 'boundaries_and_scales': {5: 0.5}}
        """
        return {"init_value": self.init_value, "boundaries_and_scales": dict(self._pairs)}

    @property
    def _pairs(self) -> tuple[tuple[int, float], ...]:
        """``boundaries_and_scales`` as ``_check`` keeps it: (boundary, scale), sorted."""
        return cast(tuple[tuple[int, float], ...], self.boundaries_and_scales)

    def _value(self, count: int) -> float:
        value = self.init_value
        for boundary, scale in self._pairs:
            if count < boundary:
                break
            value = scale * value
        return value

    def _knots(self) -> tuple[int, ...]:
        return tuple(boundary for boundary, _ in self._pairs)


@schedule_class
class cosine_onecycle(Schedule):
    """The one-cycle schedule: half a cosine up from ``peak_value / div_factor`` to
    ``peak_value``, then half a cosine down to ``peak_value / (div_factor *
    final_div_factor)`` (optax's ``cosine_onecycle_schedule``).

    With :math:`T` = ``transition_steps``, the knots :math:`k_0 = 0`, :math:`k_1 =
    \\lfloor` ``pct_start`` :math:`\\cdot T \\rfloor`, :math:`k_2 = T` and the levels
    :math:`v_0 = P / d`, :math:`v_1 = v_0 d`, :math:`v_2 = v_1 / (d f)` (:math:`d, f` =
    ``div_factor, final_div_factor``; one knot when :math:`k_1 = T`, as in optax, whose
    dict then keeps the last scale), for :math:`k_i \\le t < k_{i+1}`, with
    :math:`q = (t - k_i) / \\max(k_{i+1} - k_i, 1)`:

    .. math:: s(t) = v_{i+1} + \\tfrac12 (v_i - v_{i+1}) (\\cos \\pi q + 1),
              \\quad s(t) = v_{last} \\text{ for } t \\ge T

    Parameters
    ----------
    transition_steps : int
        The length of the cycle, > 0.
    peak_value : float
        The value at count ``int(pct_start * transition_steps)``.
    pct_start : float
        The fraction of the cycle spent rising, in [0, 1].
    div_factor, final_div_factor : float
        > 0: the first value is ``peak_value / div_factor``, the last ``first /
        final_div_factor``.

    Examples
    --------
    >>> from optimisers import schedules
    >>> s = schedules.cosine_onecycle(4, peak_value=1.0, pct_start=0.5, div_factor=4.0,
    ...                               final_div_factor=2.0)
    >>> [s(t) for t in range(6)]
    [0.25, 0.625, 1.0, 0.5625, 0.125, 0.125]
    """

    transition_steps: int
    peak_value: float
    pct_start: float = 0.3
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    # derived by _check, per instance (ClassVars to the type checker: not fields)
    _starts: ClassVar[tuple[int, ...]]
    _levels: ClassVar[tuple[float, ...]]

    def _check(self) -> dict[str, Any]:
        name = "cosine_onecycle"
        steps = check_steps(name, "transition_steps", self.transition_steps, minimum=1)
        peak = check_real(name, "peak_value", self.peak_value)
        pct_start = check_real(name, "pct_start", self.pct_start, lo=0.0)
        if pct_start > 1:
            raise ValueError(f"schedules.{name}: pct_start={pct_start!r} must be <= 1")
        div = check_real(name, "div_factor", self.div_factor, lo=0.0, lo_open=True)
        final = check_real(name, "final_div_factor", self.final_div_factor, lo=0.0, lo_open=True)
        # optax's dict literal: with pct_start = 1 both knots are T and the last scale wins
        scales = {
            int(pct_start * steps): div,
            steps: 1.0 / (div * final) if div * final > 0 else math.inf,
        }
        levels = [peak / div]
        for knot in sorted(scales):
            levels.append(levels[-1] * scales[knot])
        if not all(math.isfinite(level) for level in levels):
            raise ValueError(
                f"schedules.{name}: peak_value={peak!r}, div_factor={div!r} and "
                f"final_div_factor={final!r} give values a float cannot hold"
            )
        return {
            "transition_steps": steps,
            "peak_value": peak,
            "pct_start": pct_start,
            "div_factor": div,
            "final_div_factor": final,
            "_starts": (0,) + tuple(sorted(scales)),
            "_levels": tuple(levels),
        }

    def _value(self, count: int) -> float:
        starts, levels = self._starts, self._levels
        if count >= starts[-1]:
            return levels[-1]
        i = bisect.bisect_right(starts, count) - 1
        fraction = (count - starts[i]) / max(starts[i + 1] - starts[i], 1)
        start, end = levels[i], levels[i + 1]
        # optax's order of operations, for the same bits
        return end + (start - end) / 2.0 * (math.cos(math.pi * fraction) + 1)

    def _knots(self) -> tuple[int, ...]:
        return self._starts[1:]
