"""Rules that keep a second copy of the parameters for evaluation: Schedule-Free AdamW,
Lookahead and EMA.  :func:`optimisers.averaged` reads that copy (``_averaged.py``)."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ._dtypes import lower_state
from ._keypath import KeyPath
from ._native import kernels as K
from ._program import Program, moment_zeros, run_functional, state_dtype
from ._rule import Rule, checked, decay, nonneg, number, pair, real
from ._schedule import Schedule, value_at

__all__ = [
    "EMA",
    "EMAState",
    "Lookahead",
    "LookaheadState",
    "ScheduleFreeAdamW",
    "ScheduleFreeState",
]


def _copy_of(x: np.ndarray) -> np.ndarray:
    """A C-ordered copy of the parameter in its state dtype (float32 for 16-bit ones)."""
    return np.array(x, dtype=state_dtype(x.dtype), order="C")


def _counter() -> np.ndarray:
    return np.zeros((), np.int64)


def torch_lerp(a: np.ndarray, b: np.ndarray, w: float) -> np.ndarray:
    """``torch.lerp(a, b, w)`` in ``a``'s dtype: ``a + w*(b-a)`` when ``|w| < 0.5``, else
    ``b - (b-a)*(1-w)`` (the kernels' ``_lerp``)."""
    wd = np.asarray(w, a.real.dtype)
    if abs(float(wd)) < 0.5:
        return np.asarray(a + wd * (b - a))
    return np.asarray(b - (b - a) * (1 - wd))


class ScheduleFreeState(NamedTuple):
    z: np.ndarray
    v: np.ndarray
    sc: np.ndarray  # [lr_max, weight_sum], float64
    k: np.ndarray  # steps taken, int64


@checked
class ScheduleFreeAdamW(Rule):
    r"""Schedule-Free AdamW (Defazio et al., 2024): no learning-rate schedule to tune.

    The model holds :math:`y`, the point where gradients are taken; the state holds
    :math:`z` and the second moment.  With step :math:`k` (from 0), warm-up factor
    :math:`s_k = \min(1, (k+1)/w)`, :math:`\gamma_k = \eta s_k`,
    :math:`\gamma_{\max} = \max_{j\le k} \gamma_j`,
    :math:`c_{k} = \omega_k / \sum_{j\le k}\omega_j` with
    :math:`\omega_k = (k+1)^r \gamma_{\max}^{p}`:

    .. math::
        v &\leftarrow \beta_2 v + (1-\beta_2)\, g^2 \\
        u &= \frac{g}{\sqrt{v / (1-\beta_2^{k+1})} + \epsilon} + \lambda y \\
        y &\leftarrow (1-c_k)\, y + c_k z + \gamma_k(\beta_1 (1-c_k) - 1)\, u \\
        z &\leftarrow z - \gamma_k u

    and the point to evaluate, :math:`x = (y - (1-\beta_1) z)/\beta_1`, is what
    :func:`optimisers.averaged` returns.

    Parameters
    ----------
    eta : float, default 2.5e-3
        Learning rate :math:`\eta`.
    beta : (float, float), default (0.9, 0.999)
        :math:`\beta_1` in (0, 1) (the interpolation between z and x; 0 would make x
        unrecoverable from y and z), :math:`\beta_2` in [0, 1).
    epsilon : float, default 1e-8
    lambda_ : float, default 0.0
        Weight decay, taken at y.
    warmup_steps : int, default 0
        Linear warm-up of the learning rate over this many steps.
    r : float, default 0.0
        Power of the step count in the averaging weights.
    weight_lr_power : float, default 2.0
        Power of the largest learning rate so far in the averaging weights.

    Notes
    -----
    The authors' ``schedulefree.AdamWScheduleFree`` in train mode, operation for
    operation (``y`` interpolates towards ``z`` as ``torch.lerp`` does); the step written
    to the parameter is :math:`d = y - y_{new}`.  ``lr_max``, the weight sum and the step
    count are kept per array (every array of a tree steps together, so they agree).
    State: ``ScheduleFreeState(z, v, sc, k)``, ``sc = [lr_max, weight_sum]`` in float64.
    Complex parameters keep a real ``v`` of :math:`|g|^2`, as Adam does.

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> y = np.zeros(2); st = opt.setup(opt.ScheduleFreeAdamW(0.1), y)
    >>> st, y = opt.update_(st, y, np.ones(2))
    >>> y, st.state.z        # the first step moves y onto z's new value
    (array([-0.1, -0.1]), array([-0.1, -0.1]))
    >>> opt.averaged(st, y)  # x = (y - (1 - b1) z) / b1
    array([-0.1, -0.1])
    """

    eta: Any = 2.5e-3
    beta: Any = (0.9, 0.999)
    epsilon: Any = 1e-8
    lambda_: Any = 0.0
    warmup_steps: int = 0
    r: Any = 0.0
    weight_lr_power: Any = 2.0

    def _check(self) -> dict[str, Any]:
        beta = pair(self, "beta", self.beta, decay)
        real(self, "beta[0]", beta[0], lo=0.0, hi=1.0, lo_open=True, hi_open=True)
        w = self.warmup_steps
        if isinstance(w, bool) or not isinstance(w, (int, np.integer)):
            raise TypeError(f"ScheduleFreeAdamW: warmup_steps must be an integer, got {w!r}")
        if w < 0:
            raise ValueError(
                f"ScheduleFreeAdamW: warmup_steps={w} is out of range, it must be >= 0"
            )
        return {
            "eta": nonneg(self, "eta", self.eta),
            "beta": beta,
            "epsilon": nonneg(self, "epsilon", self.epsilon),
            "lambda_": nonneg(self, "lambda_", self.lambda_),
            "warmup_steps": int(w),
            "r": nonneg(self, "r", self.r),
            "weight_lr_power": nonneg(self, "weight_lr_power", self.weight_lr_power),
        }

    state_types = (ScheduleFreeState,)

    def init(self, x: np.ndarray) -> ScheduleFreeState:
        # lr_max starts at -1 and the weight sum at 0, as in the package
        return ScheduleFreeState(_copy_of(x), moment_zeros(x), np.array([-1.0, 0.0]), _counter())

    def _compile(self, state: ScheduleFreeState, prog: Program) -> ScheduleFreeState:
        b1, b2 = self.beta
        prog.add(
            K.SCHEDULEFREE,
            {
                "eta": self.eta,
                "b1": b1,
                "b2": b2,
                "omb2": 1 - b2,
                "eps": self.epsilon,
                "lam": self.lambda_,
                "warmup": float(self.warmup_steps),
                "r": self.r,
                "wlp": self.weight_lr_power,
            },
            state.z,
            state.v,
            sc=state.sc,
            ctr=state.k,
        )
        return state

    def _average(self, state: ScheduleFreeState, y: np.ndarray) -> np.ndarray:
        """The point to evaluate: ``x = lerp(y, z, 1 - 1/b1)``, as the package's
        ``eval()`` sets it."""
        b1 = self.beta[0]
        return torch_lerp(np.asarray(y, state.z.dtype), state.z, 1 - 1 / b1)


class _Wrapper(Rule):
    """What Lookahead and EMA share: an inner rule whose every step is followed, in the same
    kernel pass, by an AFTER_STEP stage that reads the new parameter."""

    #: an OptimiserChain refuses a rule after it (its stage follows the program's step)
    _follows_step = True

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("rules are immutable: use optimisers.adjust")

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.__reduce__() == other.__reduce__()

    def __hash__(self) -> int:
        return hash(self.__reduce__())

    def __reduce__(self) -> tuple[type[_Wrapper], tuple[Any, ...]]:
        raise NotImplementedError  # each wrapper: its class and its fields in order

    def __repr__(self) -> str:
        cls, args = self.__reduce__()
        return f"{cls.__name__}({', '.join(repr(a) for a in args)})"

    # the fields, as checkpoints read them too (rule_field_names): set by each subclass
    __slots__ = ()
    rule: Rule

    def _fields(self) -> tuple[str, ...]:
        return type(self).__slots__

    def _own(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self._fields() if k != "rule"}

    def _adjust(self, changes: dict[str, Any], used: set[str], known: set[str]) -> Rule:
        inner = self.rule._adjust(changes, used, known)
        names = tuple(self._own())
        known.update(names)
        mine = {k: v for k, v in changes.items() if k in names}
        used.update(mine)
        if not mine and inner is self.rule:
            return self
        return self._rebuilt(inner, {**self._own(), **mine})

    def _rebuilt(self, inner: Rule, own: dict[str, Any]) -> Rule:
        make: Any = type(self)  # Lookahead or EMA: (rule, **fields)
        rebuilt: Rule = make(inner, **own)
        return rebuilt

    def _scheduled(self) -> bool:
        return self.rule._scheduled() or any(isinstance(v, Schedule) for v in self._own().values())

    def _at(self, count: int) -> Rule:
        inner = self.rule._at(count)
        own = {
            k: (value_at(v, count) if isinstance(v, Schedule) else v)
            for k, v in self._own().items()
        }
        if inner is self.rule and own == self._own():
            return self
        return self._rebuilt(inner, own)

    def check_param(self, x: np.ndarray, path: KeyPath | None = None) -> None:
        self.rule.check_param(x, path)

    def _fails_late(self, leading: bool) -> bool:
        return self.rule._fails_late(leading)

    def _precheck(self, prog: Program) -> None:
        pre = getattr(self.rule, "_precheck", None)
        if pre is not None:
            pre(prog)

    def _global_spec(self) -> dict[str, Any] | None:
        spec = getattr(self.rule, "_global_spec", None)
        return spec() if spec is not None else None

    def _skip_state(self, state: Any) -> Any:
        return self.rule._skip_state(state.inner)

    def _lower_state(self, state: Any, x: np.ndarray) -> Any:
        # the copy is rounded like any state array; the inner rule lowers its own state
        own = lower_state(state._replace(inner=None), x)
        return own._replace(inner=self.rule._lower_state(state.inner, x))

    def _compile_inner(self, state: Any, prog: Program) -> Any:
        """The inner rule's stages, then (unless it stopped) a stage that emits its step
        when none is pending (it ended in a rule written in Python), so that the
        AFTER_STEP stage has a step to follow."""
        inner = self.rule._compile(state.inner, prog)
        if not prog.stopped and not prog.stages:
            prog.add(K.DESCENT, {"eta": 1.0})  # d * 1: the step as it is
        return inner

    def apply(self, state: Any, x: np.ndarray, dx: np.ndarray) -> tuple[Any, Any]:
        return run_functional(self, state, x, dx)


def _check_rule(cls: type, rule: object) -> Rule:
    if not isinstance(rule, Rule):
        raise TypeError(f"{cls.__name__} wraps a rule, got {rule!r}")
    if type(rule).__name__ == "MixedPrecision":
        raise ValueError(
            f"{cls.__name__} cannot wrap MixedPrecision: wrap it instead, "
            f"MixedPrecision({cls.__name__}(rule)), so that the copy it keeps "
            "is in the master precision"
        )
    return rule


class LookaheadState(NamedTuple):
    slow: np.ndarray
    since: np.ndarray  # steps since the last synchronisation, int64
    inner: Any


class Lookahead(_Wrapper):
    r"""Lookahead (Zhang et al., 2019): ``k`` fast steps of any rule, then a slow step.

    The inner rule steps the parameter (the fast weights) every time; every ``k``-th step
    ends with a synchronisation of the slow weights :math:`\phi`:

    .. math::
        x \leftarrow x - \mathrm{rule}(g), \qquad
        \text{every } k\text{-th step:}\quad
        \phi \leftarrow \phi + \alpha\,(x - \phi), \quad x \leftarrow \phi

    Parameters
    ----------
    rule : Rule
        The inner (fast) rule: any rule or chain.
    k : int, default 5
        Synchronisation period, >= 1.
    alpha : float, default 0.5
        Slow step size, in [0, 1].

    Notes
    -----
    optax.lookahead's semantics (its ``sync_period`` and ``slow_step_size``; the slow
    weights start as the parameter, and the synchronising step is the ``k``-th of each
    round).  The slow step runs in the inner rule's kernel pass, on the tile it has just
    written; other steps cost nothing more than the inner rule.  Must come last in a chain.
    :func:`optimisers.averaged` gives the slow weights.  State:
    ``LookaheadState(slow, since, inner)``.

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> x = np.zeros(1); st = opt.setup(opt.Lookahead(opt.Descent(1.0), k=2, alpha=0.5), x)
    >>> st, x = opt.update_(st, x, np.ones(1)); x
    array([-1.])
    >>> st, x = opt.update_(st, x, np.ones(1)); x     # phi = 0 + 0.5*(-2 - 0)
    array([-1.])
    """

    __slots__ = ("rule", "k", "alpha")  # the constructor's order
    k: int
    alpha: float | Schedule

    def __init__(self, rule: Rule, k: int = 5, alpha: Any = 0.5) -> None:
        _check_rule(Lookahead, rule)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise TypeError(f"Lookahead: k must be an integer, got {k!r}")
        if k < 1:
            raise ValueError(f"Lookahead: k={k} is out of range, it must be >= 1")
        object.__setattr__(self, "rule", rule)
        object.__setattr__(self, "k", int(k))
        object.__setattr__(self, "alpha", real(self, "alpha", alpha, lo=0.0, hi=1.0))

    def __reduce__(self) -> tuple[type[Lookahead], tuple[Rule, int, float | Schedule]]:
        return (Lookahead, (self.rule, self.k, self.alpha))

    state_types = (LookaheadState,)

    def init(self, x: np.ndarray) -> LookaheadState:
        return LookaheadState(_copy_of(x), _counter(), self.rule.init(x))

    def _compile(self, state: LookaheadState, prog: Program) -> LookaheadState:
        inner = self._compile_inner(state, prog)
        if not prog.stopped:
            prog.add(
                K.LOOKAHEAD, {"k": float(self.k), "alpha": self.alpha}, state.slow, ctr=state.since
            )
        return state if inner is state.inner else state._replace(inner=inner)

    def _average(self, state: LookaheadState, x: np.ndarray) -> np.ndarray:
        return np.array(state.slow, copy=True)


class EMAState(NamedTuple):
    ema: np.ndarray
    n: np.ndarray  # updates averaged so far, int64
    inner: Any


class EMA(_Wrapper):
    r"""Any rule, with an exponential moving average of the parameter for evaluation.

    .. math::
        x \leftarrow x - \mathrm{rule}(g), \qquad
        \bar x \leftarrow \begin{cases} x & \text{first step} \\
        \bar x + (1-\delta)(x - \bar x) & \text{later} \end{cases}

    Parameters
    ----------
    rule : Rule
        The rule that trains the parameter.
    decay : float, default 0.999
        :math:`\delta`, in [0, 1].

    Notes
    -----
    torch's ``AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay))`` with
    ``update_parameters`` after every step: the average starts as the parameter, its first
    update copies the parameter, later ones are ``torch.lerp(avg, x, 1 - decay)`` (its two
    forms, by the size of the weight).  The average runs in the inner rule's kernel pass,
    on the tile it has just written.  Must come last in a chain.
    :func:`optimisers.averaged` gives the average.  State: ``EMAState(ema, n, inner)``.

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> x = np.zeros(1); st = opt.setup(opt.EMA(opt.Descent(1.0), decay=0.5), x)
    >>> for _ in range(3):
    ...     st, x = opt.update_(st, x, np.ones(1))
    >>> x, opt.averaged(st, x)      # -1, then -1.5, then -2.25
    (array([-3.]), array([-2.25]))
    """

    __slots__ = ("rule", "decay")  # the constructor's order
    decay: float | Schedule

    def __init__(self, rule: Rule, decay: Any = 0.999) -> None:
        _check_rule(EMA, rule)
        object.__setattr__(self, "rule", rule)
        object.__setattr__(self, "decay", real(self, "decay", decay, lo=0.0, hi=1.0))

    def __reduce__(self) -> tuple[type[EMA], tuple[Rule, float | Schedule]]:
        return (EMA, (self.rule, self.decay))

    state_types = (EMAState,)

    def init(self, x: np.ndarray) -> EMAState:
        return EMAState(_copy_of(x), _counter(), self.rule.init(x))

    def _compile(self, state: EMAState, prog: Program) -> EMAState:
        inner = self._compile_inner(state, prog)
        if not prog.stopped:
            prog.add(K.EMA, {"w": 1 - number(self.decay)}, state.ema, ctr=state.n)
        return state if inner is state.inner else state._replace(inner=inner)

    def _average(self, state: EMAState, x: np.ndarray) -> np.ndarray:
        return np.array(state.ema, copy=True)
