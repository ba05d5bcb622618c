"""The rule protocol, and the checks every hyper-parameter goes through."""

from __future__ import annotations

import copy
import dataclasses
import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeGuard, TypeVar

import numpy as np
import numpy.typing as npt

from ._dtypes import is_low_precision, lower_state
from ._keypath import KeyPath
from ._native import kernels as _kernels
from ._schedule import HyperPair, Hyperparameter, Schedule, value_at
from ._types import Array, RuleState, dataclass_transform

_R = TypeVar("_R", bound="Rule")
_C = TypeVar("_C", bound="type[Rule]")

__all__ = ["Rule", "init", "builtin_rules", "state_types", "number", "extent"]

# The one list of rules: every public Rule subclass defined in this package registers itself
# here as its class statement runs (``Rule.__init_subclass__``).  opt.RULES, the checkpoint
# allow-lists and the benchmark's list are all read from it.
_BUILTIN: dict[str, type[Rule]] = {}
# a dataclass rule's field names by class (Rule._fields: the schedules look them up each step)
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


class Rule:
    """Base class of every optimisation rule.

    A rule is an immutable value holding hyper-parameters only.  Two methods define it:

    * ``init(x) -> state``: the state for one parameter array ``x``;
    * ``apply(state, x, dx) -> (state, d)``: the new state and the step ``d``; the caller
      then does ``x -= d``.  ``d`` may be ``None`` for "no step this time".

    Subclass it to write a rule in Python with numpy; it composes with the built-in rules in
    an ``OptimiserChain``.  ``apply`` may update state arrays in place, and must not write
    into ``x`` or ``dx``.  A subclass works with :func:`setup`, :func:`update_`,
    :func:`update`, :func:`freeze_` and :func:`adjust` (its public attributes are its
    hyper-parameters); :func:`save_state` stores built-in rules only (use ``pickle`` for
    trees holding a rule written in Python).

    Methods
    -------
    init(x)
        The state for one parameter array ``x``; the default is ``None`` (no state).
    apply(state, x, dx)
        ``(state, d)``: the new state and the step; a subclass must define it.

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> class SignSGD(opt.Rule):
    ...     def __init__(self, eta=0.01):
    ...         self.eta = eta
    ...     def apply(self, state, x, dx):
    ...         return state, self.eta * np.sign(dx)
    >>> x = np.array([1.0, -2.0])
    >>> st = opt.setup(opt.OptimiserChain(opt.ClipGrad(1.0), SignSGD(0.5)), x)
    >>> st, x = opt.update_(st, x, np.array([3.0, -0.0]))
    >>> x
    array([ 0.5, -2. ])
    """

    #: the NamedTuple type(s) of the state ``init`` builds (what a checkpoint may hold)
    state_types: ClassVar[tuple[type, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__module__.startswith("optimisers.") and not cls.__name__.startswith("_"):
            _BUILTIN[cls.__name__] = cls

    def init(self, x: Array) -> RuleState:
        """The initial state for one parameter array ``x``; ``None`` (no state) by default.

        Parameters
        ----------
        x : numpy.ndarray
            The parameter.

        Returns
        -------
        object
            The state: arrays, numbers and tuples of them, or ``None``.
        """
        return None

    def apply(self, state: RuleState, x: Array, dx: Array) -> tuple[RuleState, Array | None]:
        """One step: the new state and the step ``d``, with ``x - d`` the new parameter.

        Parameters
        ----------
        state : object
            The state, as ``init`` or the previous ``apply`` gave it.
        x : numpy.ndarray
            The parameter; not to be written.
        dx : numpy.ndarray
            The incoming gradient (or step, after earlier rules of a chain); a private copy,
            not to be written either.

        Returns
        -------
        state : object
            The new state.
        d : numpy.ndarray or None
            The step, of ``x``'s shape; ``None`` for no step this time.

        Raises
        ------
        NotImplementedError
            Here: a subclass must define ``apply``.
        """
        raise NotImplementedError(f"{type(self).__name__} must define apply(state, x, dx)")

    def check_param(self, x: Array, path: KeyPath | None = None) -> None:
        """Raise ``TypeError`` at ``setup`` if this rule cannot train ``x``: a complex
        parameter with a rule whose kernel kinds order values (the kernels' table says which
        kinds are defined for complex numbers)."""
        if x.dtype.kind == "c" and not type(self)._user_rule():
            kinds = _KernelKinds(np.zeros(2, x.dtype))
            self._compile(self.init(kinds.x), kinds)
            if not all(_kernels.accepts_complex(k) for k in kinds.used):
                where = f" at {path}" if path is not None else ""
                raise TypeError(
                    f"{type(self).__name__} is not defined for complex parameters "
                    f"(it orders values){where}; got dtype {x.dtype}"
                )

    def _fails_late(self, leading: bool) -> bool:
        """Whether this rule's step may raise after earlier stages of its program have
        written (``leading``: nothing runs before it).  The engine runs such leaves first,
        each after a snapshot of its arrays, so that a failure can be undone.  A rule
        written in Python may raise anything; the built-in ones decide their errors before
        any write unless they say otherwise."""
        return self._user_rule()

    def _skip_state(self, state: RuleState) -> Any:
        """The ``SkipNonFiniteState`` in ``state``, for a rule led by ``SkipNonFinite``
        (the engine asks only those: see ``_global``)."""
        raise TypeError(f"{type(self).__name__} is not led by SkipNonFinite")

    @classmethod
    def _user_rule(cls) -> bool:
        return not cls.__module__.startswith("optimisers.")

    def _lower_state(self, state: RuleState, x: Array) -> RuleState:
        """The state of ``setup(..., low_precision_state=True)`` for a 16-bit ``x``: a
        built-in rule's float32 state arrays rounded to ``x``'s dtype; a rule written in
        Python keeps the state its ``init`` made."""
        return state if type(self)._user_rule() else lower_state(state, x)

    # The engine's hook.  Kernel rules add a stage to the program; a rule written in Python
    # (the default here) materialises the incoming step and calls its own ``apply``.
    # ``prog`` is the engine's Program (or _KernelKinds): Any here, since the rule protocol
    # may not import the engine's modules.
    def _compile(self, state: RuleState, prog: Any) -> RuleState:
        dx = prog.current()
        if dx is None:  # an AccumGrad before this rule is not due: no step
            return state
        # a private copy: dx may be the engine's per-leaf buffer, which the next step
        # overwrites, and a rule may keep the array it was given in its state
        state, d = self.apply(state, prog.compute_x(), dx.copy())
        prog.set_source(d)
        return state

    def _fields(self) -> tuple[str, ...]:
        """The names of the hyper-parameters (what ``adjust`` may change)."""
        names = _FIELD_NAMES.get(type(self))
        if names is not None:
            return names
        if dataclasses.is_dataclass(self):
            names = _FIELD_NAMES[type(self)] = tuple(f.name for f in dataclasses.fields(self))
            return names
        return tuple(k for k in getattr(self, "__dict__", {}) if not k.startswith("_"))

    # The hook of ``adjust``: a rule replaces its own fields; a rule made of rules
    # (``OptimiserChain``, ``MixedPrecision``) overrides it to adjust its members instead,
    # so that the tree functions need not know the composite classes.
    def _adjust(self, changes: dict[str, Any], used: set[str], known: set[str]) -> Rule:
        """This rule with the fields named in ``changes`` replaced, validated as at
        construction; adds the names of its fields to ``known`` and those it takes to
        ``used``."""
        names = self._fields()
        known.update(names)
        mine = {k: v for k, v in changes.items() if k in names}
        if not mine:
            return self
        if "centred" in mine:
            raise ValueError(
                "adjust cannot change RMSProp's centred: the two variants keep "
                "different states; set up a new state tree instead"
            )
        used.update(mine)
        return self._replace(**mine)

    # Schedules: a field may hold a Schedule (or a pair with one); the engine steps a leaf
    # with the rule ``_at`` its count of updates, every schedule replaced by its value.
    def _scheduled(self) -> bool:
        """Whether a field of this rule is (or holds) a schedule."""
        return any(_holds_schedule(getattr(self, name)) for name in self._fields())

    def _at(self, count: int) -> Rule:
        """This rule with every scheduled field replaced by its value at ``count`` (the
        number of updates taken before this one); itself when nothing is scheduled."""
        changes: dict[str, Any] = {}
        for name in self._fields():
            value = getattr(self, name)
            if _holds_schedule(value):
                changes[name] = _value_at(value, count)
        if not changes:
            return self
        if getattr(type(self), "__post_init__", None) is not _check_fields:
            return self._replace(**changes)
        # A rule of @checked is not checked again: its construction checked every value
        # a schedule takes (``real`` and ``extent`` use a schedule's exact bounds), and
        # this runs for every scheduled rule at every step.
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__, **changes)
        return new

    def _replace(self: _R, **changes: Any) -> _R:
        """A copy with the given fields replaced (a dataclass rule checks them again)."""
        if dataclasses.is_dataclass(self):
            return dataclasses.replace(self, **changes)
        new = copy.copy(self)
        for k, v in changes.items():
            object.__setattr__(new, k, v)
        return new


class _KernelKinds:
    """Stands in for the engine's Program to list the kernel kinds a rule compiles to on a
    small array like the parameter (nothing runs)."""

    def __init__(self, x: Array) -> None:
        self.x = x
        self.used: list[int] = []
        self.stages = self.used
        self.stopped = False
        self.path = None

    def add(
        self,
        kind: int,
        hp: Mapping[str, object],
        *buffers: Array,
        sc: Array | None = None,
        ctr: Array | None = None,
    ) -> None:
        self.used.append(kind)

    def current(self) -> Array:
        return self.x

    def known_norm(self, p: float) -> None:
        return None


def _holds_schedule(value: object) -> bool:
    return isinstance(value, Schedule) or (
        isinstance(value, tuple) and any(isinstance(v, Schedule) for v in value)
    )


def _value_at(value: object, count: int) -> object:
    """A field's value at ``count``: a pair's members each through ``value_at``."""
    if isinstance(value, tuple):
        return tuple(value_at(v, count) for v in value)
    return value_at(value, count)


def number(v: Hyperparameter) -> float:
    """A field's number where every schedule has been evaluated: in ``_compile``, which
    the engine calls on ``rule._at(count)``."""
    if isinstance(v, Schedule):
        raise TypeError(f"a schedule reached a kernel stage unevaluated: {v!r}")
    return v


def extent(v: Hyperparameter) -> tuple[float, float]:
    """The least and greatest value a field takes: ``(v, v)`` for a number, a schedule's
    :meth:`~optimisers.Schedule.bounds`."""
    return v.bounds() if isinstance(v, Schedule) else (v, v)


def builtin_rules() -> tuple[type[Rule], ...]:
    """Every rule class of this package, in the order their modules define them."""
    return tuple(_BUILTIN.values())


def state_types() -> tuple[type, ...]:
    """Every NamedTuple type a built-in rule's state is made of."""
    return tuple(dict.fromkeys(t for c in _BUILTIN.values() for t in c.state_types))


def init(rule: Rule, x: npt.ArrayLike, *, low_precision_state: bool = False) -> RuleState:
    """The initial state of ``rule`` for one parameter array ``x`` (``rule.init(x)``).

    Parameters
    ----------
    rule : Rule
        The rule.
    x : array_like
        The parameter (converted with ``numpy.asarray``).
    low_precision_state : bool, default False
        As for :func:`setup`: keep the state arrays of a float16 or bfloat16 ``x`` in its
        dtype instead of float32.

    Returns
    -------
    object
        The state, as :func:`setup` would put in the ``Leaf`` of ``x``.

    Raises
    ------
    TypeError
        If ``rule`` cannot train ``x`` (e.g. a complex array with ``Rprop``).

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> opt.init(opt.Descent(0.1), np.ones(3, np.float32)) is None
    True
    """
    x = np.asarray(x)
    rule.check_param(x)
    state = rule.init(x)
    if low_precision_state and is_low_precision(x.dtype):
        state = rule._lower_state(state, x)
    return state


# ----------------------------------------------------------------------------------------
# Hyper-parameter checks.  Each returns the normalised value or raises ValueError naming
# the rule, the field, the value and the allowed range.


def _is_real(v: object) -> TypeGuard[numbers.Real]:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def real(
    rule: Rule,
    name: str,
    v: object,
    lo: float = -math.inf,
    hi: float = math.inf,
    lo_open: bool = False,
    hi_open: bool = False,
    what: str | None = None,
) -> Hyperparameter:
    """A real number in the range; or a schedule whose every value is in it (its bounds
    are exact), kept as it is."""
    who = type(rule).__name__
    if isinstance(v, Schedule):
        low, high = v.bounds()
        low_ok = low > lo if lo_open else low >= lo
        high_ok = high < hi if hi_open else high <= hi
        if not (low_ok and high_ok):
            rng = what or f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
            raise ValueError(
                f"{who}: {name}={v!r} takes values in [{low:g}, {high:g}], out "
                f"of range: every value must be in {rng}"
            )
        return v
    if not _is_real(v) or isinstance(v, np.ndarray):
        raise TypeError(f"{who}: {name} must be a real number, got {v!r}")
    v = float(v)
    low_ok = v > lo if lo_open else v >= lo
    high_ok = v < hi if hi_open else v <= hi
    if math.isnan(v) or not (low_ok and high_ok):
        rng = what or f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        raise ValueError(f"{who}: {name}={v!r} is out of range, it must be in {rng}")
    return v


def flag(rule: Rule, name: str, v: object) -> bool:
    """A boolean switch: True or False (numpy booleans too), nothing merely truthy."""
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{type(rule).__name__}: {name} must be True or False, got {v!r}")
    return bool(v)


def nonneg(rule: Rule, name: str, v: object) -> Hyperparameter:
    return real(rule, name, v, lo=0.0, what="[0, inf]")


def decay(rule: Rule, name: str, v: object) -> Hyperparameter:
    """A decay rate: in [0, 1)."""
    return real(rule, name, v, lo=0.0, hi=1.0, hi_open=True)


def pair(
    rule: Rule, name: str, v: object, check: Callable[[Rule, str, object], Hyperparameter]
) -> HyperPair:
    if not isinstance(v, (tuple, list)) or len(v) != 2:
        raise TypeError(
            f"{type(rule).__name__}: {name} must be a pair (tuple of 2 numbers), got {v!r}"
        )
    return (check(rule, f"{name}[0]", v[0]), check(rule, f"{name}[1]", v[1]))


def _check_fields(self: Any) -> None:
    """The ``__post_init__`` of a :func:`checked` rule."""
    for name, value in self._check().items():
        object.__setattr__(self, name, value)


@dataclass_transform(frozen_default=True)
def checked(cls: _C) -> _C:
    """Decorator: a frozen dataclass rule whose ``_check()`` normalises its fields."""

    cls.__post_init__ = _check_fields  # type: ignore[attr-defined]
    return dataclasses.dataclass(frozen=True)(cls)  # type: ignore[return-value]
