"""Rules made of rules: OptimiserChain, AccumGrad, MixedPrecision."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ._keypath import KeyPath
from ._native import kernels as K
from ._program import Program, run_functional
from ._rule import Rule
from ._rules_sgd import zeros
from ._types import Array, DTypeLike, RuleState

__all__ = ["OptimiserChain", "AccumGrad", "MixedPrecision", "AccumGradState", "MixedPrecisionState"]


def _skip_only(rules: list[Rule]) -> bool:
    """Whether ``rules`` is one SkipNonFinite (what a ClipGlobalNorm may follow)."""
    return len(rules) == 1 and getattr(rules[0], "_leads", None) == "skip"


class OptimiserChain(Rule):
    r"""Compose rules: each one transforms the step the previous one produced.

    .. math::  d_0 = g, \qquad d_k = \mathrm{rule}_k(d_{k-1}), \qquad x \leftarrow x - d_n

    The element-wise rules of a chain run in one fused pass over memory (tile by tile),
    with ``x -= d`` fused into the last; a leading ``ClipNorm`` (or ``ClipGlobalNorm``,
    ``SkipNonFinite``) costs one more read of the gradient (its norm), its scale being
    applied inside the next rule's loop.  A rule that
    needs the whole step first (a ``ClipNorm`` after another rule, a rule written in
    Python) splits the pass there.  An
    ``AccumGrad`` that is not yet due skips the rules after it (their states unchanged).
    The empty chain is the identity (``x -= g``).  Chains nest.

    Parameters
    ----------
    *rules : Rule
        Applied in order.  ``MixedPrecision`` may not be one of them (wrap the chain).

    Notes
    -----
    State: the tuple of the members' states.  ``adjust`` applies to every member that has
    the named fields.

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> rule = opt.OptimiserChain(opt.ClipGrad(1.0), opt.Descent(0.1))
    >>> rule.opts
    (ClipGrad(delta=1.0), Descent(eta=0.1))
    """

    __slots__ = ("opts",)
    opts: tuple[Rule, ...]

    def __init__(self, *rules: Rule) -> None:
        for r in rules:
            if isinstance(r, MixedPrecision):
                raise ValueError(
                    "MixedPrecision should wrap the entire OptimiserChain, not be inside it"
                )
            if not isinstance(r, Rule):
                raise TypeError(f"OptimiserChain takes rules, got {r!r}")
        before: list[Rule] = []  # the rules before each one that do something
        for r in rules:
            # SkipNonFinite and ClipGlobalNorm look at the raw gradients of every leaf
            lead = getattr(r, "_leads", None)
            if lead and before and not (lead == "clip" and _skip_only(before)):
                raise ValueError(
                    f"{type(r).__name__} must lead its chain (a ClipGlobalNorm may follow a "
                    f"SkipNonFinite): it looks at the raw gradients of every leaf, and "
                    f"here it comes after {before[-1]!r}"
                )
            if not (isinstance(r, OptimiserChain) and not r.opts):
                before.append(r)
        for r in rules[:-1]:
            # Lookahead and EMA follow the step of the whole program (rules_averaged.pxi)
            if getattr(r, "_follows_step", False):
                raise ValueError(
                    f"{type(r).__name__} must be the last rule of an "
                    "OptimiserChain: it follows the step the chain makes"
                )
        object.__setattr__(self, "opts", tuple(rules))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("rules are immutable: use optimisers.adjust")

    @property
    def _follows_step(self) -> bool:
        """Whether the chain ends in a Lookahead or an EMA (see ``__init__``)."""
        return bool(self.opts) and getattr(self.opts[-1], "_follows_step", False)

    def __repr__(self) -> str:
        return f"OptimiserChain({', '.join(repr(r) for r in self.opts)})"

    def __eq__(self, other: object) -> bool:
        return type(other) is OptimiserChain and self.opts == other.opts

    def __hash__(self) -> int:
        return hash(("OptimiserChain",) + self.opts)

    def __reduce__(self) -> tuple[type[OptimiserChain], tuple[Rule, ...]]:
        return (OptimiserChain, self.opts)

    def check_param(self, x: Array, path: KeyPath | None = None) -> None:
        for r in self.opts:
            r.check_param(x, path)

    def init(self, x: Array) -> tuple[RuleState, ...]:
        return tuple(r.init(x) for r in self.opts)

    def _lower_state(self, state: RuleState, x: Array) -> RuleState:
        return tuple(r._lower_state(s, x) for r, s in zip(self.opts, state))

    def _adjust(self, changes: dict[str, Any], used: set[str], known: set[str]) -> Rule:
        return OptimiserChain(*(r._adjust(changes, used, known) for r in self.opts))

    def _scheduled(self) -> bool:
        return any(r._scheduled() for r in self.opts)

    def _at(self, count: int) -> Rule:
        # the rules after an AccumGrad(n) take one update in n: their schedules run at the
        # count of their own updates (as their state, e.g. Adam's bias correction, does)
        at = []
        for r in self.opts:
            at.append(r._at(count))
            if isinstance(r, AccumGrad):
                count //= r.n
        members = tuple(at)
        same = all(a is b for a, b in zip(members, self.opts))
        if same:
            return self
        chain = object.__new__(OptimiserChain)  # members like its own: checked already
        object.__setattr__(chain, "opts", members)
        return chain

    def _fails_late(self, leading: bool) -> bool:
        return any(r._fails_late(leading and i == 0) for i, r in enumerate(self.opts))

    def _global_spec(self) -> dict[str, Any] | None:
        # a leading ClipGlobalNorm or SkipNonFinite (both: the one stage they share)
        first = getattr(self.opts[0], "_global_spec", None) if self.opts else None
        spec = first() if first is not None else None
        if spec is not None and spec["clip"] == 0 and len(self.opts) > 1:
            second = getattr(self.opts[1], "_global_spec", None)
            clip = second() if second is not None else None
            if clip is not None and clip["clip"] != 0:
                spec = dict(clip, skip=spec["skip"], max=spec["max"])
        return spec

    def _skip_state(self, state: RuleState) -> Any:
        return self.opts[0]._skip_state(state[0])

    def _precheck(self, prog: Program) -> None:
        if self.opts:
            pre = getattr(self.opts[0], "_precheck", None)
            if pre is not None:
                pre(prog)

    def _compile(self, state: RuleState, prog: Program) -> RuleState:
        new = []
        for r, s in zip(self.opts, state):
            new.append(s if prog.stopped else r._compile(s, prog))
        # the same state object when no member replaced its own: the kernels advance states
        # in place, and a program that keeps its state can run in a batch (_program.template)
        if all(a is b for a, b in zip(new, state)):
            return state
        return tuple(new)

    def apply(self, state: RuleState, x: Array, dx: Array) -> tuple[RuleState, Array | None]:
        return run_functional(self, state, x, dx)


class AccumGradState(NamedTuple):
    acc: Array
    counter: Array


class AccumGrad(Rule):
    r"""Accumulate ``n`` gradients, then pass their mean on: for large effective batches.

    .. math::
        a \leftarrow g/n \ (\text{1st}), \quad a \leftarrow a + g/n \ (\text{later}), \qquad
        d = a \text{ on the } n\text{-th gradient, else no step}

    Use as ``OptimiserChain(AccumGrad(n), rule)``: ``rule`` then sees one gradient in ``n``
    and its state advances once; a schedule in it runs at the count of its own updates,
    the leaf's count // ``n`` (optax's ``MultiSteps`` does the same), so a warm-up of 100
    steps lasts 100 of its updates.  Rules before ``AccumGrad`` in a chain run every time.

    Parameters
    ----------
    n : int
        Number of gradients to average, >= 1.

    Notes
    -----
    State: ``AccumGradState(acc, counter)``, ``counter`` (a 0-d int64 array) from 1 to
    ``n``.

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> m = {"x": np.array([1.0], np.float32), "y": np.array([2.0], np.float32)}
    >>> rule = opt.OptimiserChain(opt.AccumGrad(2), opt.WeightDecay(0.01), opt.Descent(0.1))
    >>> s = opt.setup(rule, m)
    >>> s, m = opt.update_(s, m, {"x": np.array([33]), "y": np.array([0])})
    >>> m["x"], m["y"]      # not changed yet
    (array([1.], dtype=float32), array([2.], dtype=float32))
    >>> s, m = opt.update_(s, m, {"x": np.array([0]), "y": np.array([444])})
    >>> m["x"], m["y"]
    (array([-0.651], dtype=float32), array([-20.202002], dtype=float32))
    """

    __slots__ = ("n",)
    n: int

    def __init__(self, n: int) -> None:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
            raise TypeError(f"AccumGrad: n must be an integer, got {n!r}")
        if n < 1:
            raise ValueError(
                f"AccumGrad: n={n} is out of range, it must be >= 1 "
                "(accumulate at least one gradient)"
            )
        object.__setattr__(self, "n", int(n))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("rules are immutable: use optimisers.adjust")

    def __repr__(self) -> str:
        return f"AccumGrad(n={self.n})"

    def __eq__(self, other: object) -> bool:
        return type(other) is AccumGrad and self.n == other.n

    def __hash__(self) -> int:
        return hash(("AccumGrad", self.n))

    def __reduce__(self) -> tuple[type[AccumGrad], tuple[int]]:
        return (AccumGrad, (self.n,))

    def _replace(self, **kw: Any) -> AccumGrad:
        return AccumGrad(kw.get("n", self.n))

    def _fields(self) -> tuple[str, ...]:
        return ("n",)

    state_types = (AccumGradState,)

    def init(self, x: Array) -> AccumGradState:
        return AccumGradState(zeros(x), np.ones((), np.int64))

    def _compile(self, state: RuleState, prog: Program) -> RuleState:
        # The kernel reads the counter: before the n-th gradient it accumulates and stops
        # the program (nothing subtracted, later rules skipped), then advances the counter.
        prog.add(K.ACCUMGRAD, {"n": self.n}, state.acc, ctr=state.counter)
        return state

    def apply(self, state: RuleState, x: Array, dx: Array) -> tuple[RuleState, Array | None]:
        return run_functional(self, state, x, dx)


class MixedPrecisionState(NamedTuple):
    xT: Array
    inner: object


class MixedPrecision(Rule):
    r"""Train a low-precision parameter through a high-precision master copy.

    The inner rule runs on the master copy :math:`x_T` (and keeps its state in that
    precision); the parameter receives :math:`x_T` rounded:

    .. math::  x_T \leftarrow x_T - \mathrm{rule}(g), \qquad x \leftarrow \mathrm{round}(x_T)

    Parameters
    ----------
    dtype : numpy dtype, default float32
        Precision of the master copy; may be omitted: ``MixedPrecision(rule)``.
    rule : Rule
        The rule to run in that precision.

    Notes
    -----
    Must wrap a whole chain, never sit inside one.  The gradient is cast once, straight to
    ``dtype``.  State: ``MixedPrecisionState(xT, inner)``.

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> x = np.ones(2, np.float16)
    >>> st = opt.setup(opt.MixedPrecision(opt.Descent(1e-4)), x)
    >>> for _ in range(10):
    ...     st, x = opt.update_(st, x, np.ones(2, np.float16))
    >>> x, st.state.xT     # float16 alone would never leave 1.0 (its spacing is 1e-3)
    (array([0.999, 0.999], dtype=float16), array([0.99899983, 0.99899983], dtype=float32))
    """

    __slots__ = ("rule", "dtype")
    rule: Rule
    dtype: np.dtype[Any]

    def __init__(
        self, *args: Any, rule: Rule | None = None, dtype: DTypeLike | None = None
    ) -> None:
        if len(args) == 2:
            dtype, rule = args
        elif len(args) == 1:
            rule = args[0]
        elif args:
            raise TypeError("MixedPrecision(rule) or MixedPrecision(dtype, rule)")
        dtype = np.dtype(np.float32 if dtype is None else dtype)
        if dtype.kind not in "fc":
            raise TypeError(f"MixedPrecision: dtype must be a floating dtype, got {dtype}")
        if not isinstance(rule, Rule):
            raise TypeError(f"MixedPrecision wraps a rule, got {rule!r}")
        if isinstance(rule, MixedPrecision):
            raise ValueError("MixedPrecision cannot wrap another MixedPrecision")
        object.__setattr__(self, "rule", rule)
        object.__setattr__(self, "dtype", dtype)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("rules are immutable: use optimisers.adjust")

    def __repr__(self) -> str:
        return f"MixedPrecision(np.{self.dtype.name}, {self.rule!r})"

    def __eq__(self, other: object) -> bool:
        return type(other) is MixedPrecision and (self.dtype, self.rule) == (
            other.dtype,
            other.rule,
        )

    def __hash__(self) -> int:
        return hash(("MixedPrecision", self.dtype, self.rule))

    def __reduce__(self) -> tuple[type[MixedPrecision], tuple[np.dtype[Any], Rule]]:
        return (MixedPrecision, (self.dtype, self.rule))

    # (no _fields: _adjust, _scheduled and _at, which read them, are its own here)
    def _adjust(self, changes: dict[str, Any], used: set[str], known: set[str]) -> Rule:
        return MixedPrecision(self.dtype, self.rule._adjust(changes, used, known))

    def _scheduled(self) -> bool:
        return self.rule._scheduled()

    def _at(self, count: int) -> Rule:
        inner = self.rule._at(count)
        return self if inner is self.rule else MixedPrecision(self.dtype, inner)

    def _high(self, dtype: DTypeLike) -> np.dtype[Any]:
        """The master copy's dtype for a parameter of ``dtype``: a complex parameter gets
        the complex dtype of this precision (its imaginary part is kept)."""
        if np.dtype(dtype).kind == "c" and self.dtype.kind != "c":
            return np.promote_types(self.dtype, np.complex64)
        return self.dtype

    def check_param(self, x: Array, path: KeyPath | None = None) -> None:
        # component-wise itself: only its rule decides, in the master copy's dtype (an
        # empty array of x's rank: Muon takes matrices only)
        self.rule.check_param(np.empty((0,) * x.ndim, self._high(x.dtype)), path)

    def _fails_late(self, leading: bool) -> bool:
        return self.rule._fails_late(leading)

    def _precheck(self, prog: Program) -> None:
        pre = getattr(self.rule, "_precheck", None)
        if pre is not None:
            pre(prog)  # prog's gradient is already in self.dtype

    def grad_dtype(self, dtype: DTypeLike) -> np.dtype[Any]:
        return self._high(dtype)

    def _global_spec(self) -> dict[str, Any] | None:
        spec = getattr(self.rule, "_global_spec", None)
        return spec() if spec is not None else None

    def _skip_state(self, state: MixedPrecisionState) -> Any:
        return self.rule._skip_state(state.inner)

    state_types = (MixedPrecisionState,)

    def init(self, x: Array) -> MixedPrecisionState:
        xT = np.array(x, dtype=self._high(x.dtype), order="C")
        return MixedPrecisionState(xT, self.rule.init(xT))

    def _lower_state(self, state: RuleState, x: Array) -> RuleState:
        return state  # the master copy and its rule's state stay high

    def _compile(self, state: RuleState, prog: Program) -> RuleState:
        # The whole raw gradient, already cast to self.dtype by the engine.  (Asking for it
        # first also keeps batch recording free of side effects: it is a barrier there.)
        g = prog.current()
        inner = Program(state.xT, np.ascontiguousarray(g, dtype=state.xT.dtype), path=prog.path)
        inner.global_scale = prog.global_scale  # a leading ClipGlobalNorm's
        new_inner = self.rule._compile(state.inner, inner)
        inner.finish()  # xT -= d'
        prog.assign(state.xT)  # x <- round(xT)
        return MixedPrecisionState(state.xT, new_inner)

    def apply(self, state: RuleState, x: Array, dx: Array) -> tuple[RuleState, Array | None]:
        return run_functional(self, state, x, dx)
