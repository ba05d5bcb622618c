"""Gradient transformations, usually composed in an OptimiserChain: weight decay, sign
decay, element clipping and norm clipping."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from ._native import kernels as K
from ._norms import _NORM_KINDS, clip_scale, grad_norm, nonfinite_norm_error, norm_kind
from ._program import Program
from ._rule import Rule, checked, flag, nonneg, number, real
from ._schedule import Hyperparameter
from ._types import Array, RuleState

__all__ = [
    "WeightDecay",
    "SignDecay",
    "ClipGrad",
    "ClipNorm",
    "ClipGlobalNorm",
    "SkipNonFinite",
    "SkipNonFiniteState",
]


def _norm_fields(rule: ClipNorm | ClipGlobalNorm) -> dict[str, Any]:
    """The checked fields of ClipNorm and ClipGlobalNorm."""
    return {
        "omega": nonneg(rule, "omega", rule.omega),
        "p": real(rule, "p", rule.p, what="any real number or +-inf, not NaN"),
        "throw": flag(rule, "throw", rule.throw),
    }


@checked
class WeightDecay(Rule):
    r"""L2 regularisation: adds :math:`\lambda x` to the gradient, :math:`d = g + \lambda x`.

    .. math::  d = g + \lambda x

    Equivalent to adding :math:`\frac{\lambda}{2}\lVert x\rVert_2^2` to the loss; put it
    first in an ``OptimiserChain``.

    Parameters
    ----------
    lambda_ : float, default 5e-4
        Penalty, >= 0.

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> rule = opt.OptimiserChain(opt.WeightDecay(0.5), opt.Descent(0.1))
    >>> st, x = opt.update(opt.setup(rule, np.ones(1)), np.ones(1), np.zeros(1))
    >>> x
    array([0.95])
    """

    lambda_: Hyperparameter = 5e-4

    def _check(self) -> dict[str, Any]:
        return {"lambda_": nonneg(self, "lambda_", self.lambda_)}

    def _compile(self, state: RuleState, prog: Program) -> RuleState:
        prog.add(K.WEIGHTDECAY, {"lam": self.lambda_})
        return state


@checked
class SignDecay(Rule):
    r"""L1 regularisation: adds :math:`\lambda\,\mathrm{sign}(x)` to the gradient.

    .. math::  d = g + \lambda\,\mathrm{sign}(x)

    Equivalent to adding :math:`\lambda \lVert x\rVert_1` to the loss.

    Parameters
    ----------
    lambda_ : float, default 1e-3
        Penalty, >= 0.

    Notes
    -----
    Not defined for complex parameters.

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> rule = opt.OptimiserChain(opt.SignDecay(0.5), opt.Descent(0.1))
    >>> st, x = opt.update(opt.setup(rule, np.array([2.0, -2.0])), np.array([2.0, -2.0]),
    ...                    np.zeros(2))
    >>> x
    array([ 1.95, -1.95])
    """

    lambda_: Hyperparameter = 1e-3

    def _check(self) -> dict[str, Any]:
        return {"lambda_": nonneg(self, "lambda_", self.lambda_)}

    def _compile(self, state: RuleState, prog: Program) -> RuleState:
        prog.add(K.SIGNDECAY, {"lam": self.lambda_})
        return state


@checked
class ClipGrad(Rule):
    r"""Clip every gradient element to :math:`[-\delta, \delta]`; NaN passes through.

    .. math::  d = \min\!\left(\max(g, -\delta), \delta\right)

    Parameters
    ----------
    delta : float, default 10.0
        Bound, >= 0.

    Notes
    -----
    Not defined for complex parameters.

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> rule = opt.OptimiserChain(opt.ClipGrad(1.0), opt.Descent(0.1))
    >>> opt.update(opt.setup(rule, (np.zeros(3),)), (np.zeros(3),), (np.array([0.3, 1, 7]),))[1]
    (array([-0.03, -0.1 , -0.1 ]),)
    """

    delta: Hyperparameter = 10.0

    def _check(self) -> dict[str, Any]:
        return {"delta": nonneg(self, "delta", self.delta)}

    def _compile(self, state: RuleState, prog: Program) -> RuleState:
        prog.add(K.CLIPGRAD, {"delta": self.delta})
        return state


@checked
class ClipNorm(Rule):
    r"""Scale each gradient array whose p-norm exceeds :math:`\omega` down to :math:`\omega`.

    .. math::  d = g \cdot \min\!\left(\frac{\omega}{\lVert g\rVert_p}, 1\right)

    The norm is that of this one array's incoming gradient (not a global norm).

    Parameters
    ----------
    omega : float, default 10.0
        Largest norm allowed, >= 0.
    p : float, default 2.0
        Any real or ``inf``/``-inf``; ``p=0`` counts non-zeros.
    throw : bool, default True
        Raise ``FloatingPointError`` (naming the leaf's key path) when the norm is not
        finite.  When the ``ClipNorm`` is the first rule of its chain this check runs for
        every leaf before any parameter is written; later in a chain it runs when that
        leaf's step reaches it, and the leaves updated before stay updated.

    Notes
    -----
    The norm is accumulated in float64, in blocks of 8192 elements with 8 lanes each,
    combined in a fixed order, so it does not depend on the number of threads.  The scale
    :math:`\min(\omega/n, 1)` is computed in float64 and rounded to the parameter's dtype.

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> st, x = opt.update(opt.setup(opt.ClipNorm(1.0), np.zeros(2)), np.zeros(2),
    ...                    np.array([3.0, 4.0]))
    >>> x
    array([-0.6, -0.8])
    """

    omega: Hyperparameter = 10.0
    p: Hyperparameter = 2.0
    throw: bool = True

    def _check(self) -> dict[str, Any]:
        return _norm_fields(self)

    def _fails_late(self, leading: bool) -> bool:
        # after other stages its norm is that of their output, known only once they ran
        return self.throw and not leading

    def _precheck(self, prog: Program) -> None:
        # Only for parameters the batch engine does not take (see _engine): the norm
        # of a leading ClipNorm is checked for every leaf before any leaf is written.
        if self.throw:
            p = number(self.p)
            n = prog.norm(p)
            if n is not None and not math.isfinite(n):
                raise nonfinite_norm_error(prog.where(), p, n)

    def _compile(self, state: RuleState, prog: Program) -> RuleState:
        # The norm is that of the step so far: when rules before this one are pending, it
        # must be materialised first (a barrier; None: an AccumGrad before is not due).
        if prog.stages and prog.current() is None:
            return state
        # The kernel stage computes the norm and the scale min(omega/|g|_p, 1) in float64
        # (conventions §7: norm 0 -> 1, inf -> 0, NaN -> NaN), rounds the scale to the
        # dtype, and folds it into the next stage's read of g.
        # A norm the engine has already computed (the precheck of a leading ClipNorm) is
        # passed on, so that the kernel does not read g again.
        p = number(self.p)
        known = prog.known_norm(p)
        prog.add(
            K.CLIPNORM,
            {
                "omega": self.omega,
                "p": p,
                "how": _NORM_KINDS.get(p, K.NORM_POWER),
                "throw": float(self.throw),
                "norm": 0.0 if known is None else known,
                "known": float(known is not None),
            },
        )
        return state


def _joined_stage(prog: Program, who: str) -> dict[str, Any] | None:
    """The hyper-parameters of the SkipNonFinite stage that ``who`` joins (the one stage
    both share: one read of the gradient), or None when ``who`` starts the program; a
    ValueError when other stages come first (the norm is that of the raw gradients)."""
    stages = prog.stages
    if not stages:
        return None
    last = stages[-1]
    kind = last[0] if isinstance(last, tuple) else last  # _rule._KernelKinds: kinds only
    if len(stages) == 1 and kind == K.GLOBALNORM and who == "ClipGlobalNorm":
        hp: dict[str, Any] = last[1] if isinstance(last, tuple) else {"clip": 0.0}
        if hp["clip"] == 0:
            return hp
    raise ValueError(
        f"{who} must lead its chain (after a SkipNonFinite for a "
        f"ClipGlobalNorm): its norm is that of the raw gradients of every leaf"
    )


@checked
class ClipGlobalNorm(Rule):
    r"""Scale every gradient by :math:`\min(1, \omega / \lVert G\rVert_p)`, with
    :math:`G` all the gradients of the step together.

    .. math::  \lVert G\rVert_p = \Big(\sum_{\text{leaves } \ell}\ \sum_i
               \lvert g_{\ell,i}\rvert^p\Big)^{1/p}, \qquad
               d_\ell = g_\ell \cdot \min\!\left(\frac{\omega}{\lVert G\rVert_p}, 1\right)

    The leaves of :math:`G` are those updated in the same ``update_`` call whose rule starts
    with an equal ``ClipGlobalNorm`` (torch's ``clip_grad_norm_`` over a model, optax's
    ``clip_by_global_norm``).  It leads its chain (after a ``SkipNonFinite`` if any):
    ``OptimiserChain`` refuses it anywhere else.

    Parameters
    ----------
    omega : float, default 1.0
        Largest global norm allowed, >= 0.
    p : float, default 2.0
        Any real or ``inf``/``-inf``; ``p=0`` counts non-zeros.
    throw : bool, default True
        Raise ``FloatingPointError`` when the global norm is not finite, before any
        parameter or state is written, naming a key path where a non-finite gradient sits.
        A step that a ``SkipNonFinite`` of the same call skips (its leaves' gradients hold
        a NaN or an infinity) is skipped for every leaf of the call, these included: the
        skip is decided first, and nothing is written either way.

    Notes
    -----
    Leaves whose rules are equal share the norm, also with a scheduled ``omega`` whose
    leaves are at different counts (after ``None`` gradients, or a freeze): each is then
    scaled by :math:`\min(1, \omega_t / \lVert G\rVert_p)` at its own count :math:`t`.
    (A scheduled ``p`` splits them: norms of other ``p`` do not add up.)

    One read of every gradient: each leaf's partial sum (:math:`\sum_i |g_i|^p`, or the
    max) is accumulated in float64 in blocks of 8192 elements with 8 lanes (the order fixed
    by the data), the partials are added exactly rounded (``math.fsum``), so the norm does
    not depend on the number of threads nor on the order of the leaves.  The scale is
    computed in float64 and folded into the next rule's read of the gradient: no extra
    write.  A zero norm leaves the gradients as they are, an infinite one (``throw=False``)
    zeroes them.  With ``apply_`` (one array) the global norm is that array's.

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> m = {"a": np.zeros(1), "b": np.zeros(1)}
    >>> st = opt.setup(opt.OptimiserChain(opt.ClipGlobalNorm(1.0), opt.Descent(1.0)), m)
    >>> st, m = opt.update_(st, m, {"a": np.array([3.0]), "b": np.array([4.0])})
    >>> m["a"], m["b"]
    (array([-0.6]), array([-0.8]))
    """

    omega: Hyperparameter = 1.0
    p: Hyperparameter = 2.0
    throw: bool = True

    _leads = "clip"  # where it may stand in a chain (OptimiserChain checks it)

    def _check(self) -> dict[str, Any]:
        return _norm_fields(self)

    def _global_spec(self) -> dict[str, Any]:
        """What the engine needs to combine this rule's leaves (see _global)."""
        return {
            "clip": 1.0,
            "skip": 0.0,
            "omega": self.omega,
            "p": self.p,
            "throw": float(self.throw),
            "max": None,
        }

    def _compile(self, state: RuleState, prog: Program) -> RuleState:
        joined = _joined_stage(prog, "ClipGlobalNorm")
        # The engine gives the scale of the whole step; a batch template leaves it to the
        # engine (the kernel reduces this leaf's partial); one array alone (apply_) is
        # clipped by its own norm.
        scale = getattr(prog, "global_scale", None)
        p = number(self.p)
        if scale is None and not getattr(prog, "recording", True):
            n = grad_norm(prog.src, p)
            if self.throw and not math.isfinite(n):
                raise FloatingPointError(
                    f"ClipGlobalNorm: the gradient at {prog.where()} "
                    f"has {p:g}-norm {n} (throw=False lets it "
                    f"through)"
                )
            scale = clip_scale(number(self.omega), n)
        hp = {
            "omega": self.omega,
            "p": p,
            "how": norm_kind(p),
            "throw": float(self.throw),
            "clip": 1.0,
            "known": float(scale is not None),
            "scale": 1.0 if scale is None else scale,
        }
        if joined is not None:
            joined.update(hp)  # SkipNonFinite's stage: one read serves both
        else:
            prog.add(K.GLOBALNORM, dict(hp, skip=0.0))
        return state


class SkipNonFiniteState(NamedTuple):
    skipped: Array  # steps skipped so far (0-d int64)
    consecutive: Array  # of them, in a row up to now (0-d int64)


@checked
class SkipNonFinite(Rule):
    r"""Skip the whole step when any gradient holds a NaN or an infinity.

    .. math::  \text{if } \exists\, \ell, i:\ g_{\ell,i} \notin \mathbb{R}:\quad
               \text{no change (the skip is counted)}; \qquad \text{else } d = g

    The gradients looked at are those of the leaves updated in the same ``update_`` call
    whose rule starts with ``SkipNonFinite``; a skipped step changes no parameter and no
    state of any leaf of the call, except this rule's counts.  It leads its chain
    (``OptimiserChain`` refuses it anywhere else); a ``ClipGlobalNorm`` right after it
    shares its one read of the gradients.

    Parameters
    ----------
    max_consecutive : int or None, default None
        At most this many steps skipped in a row: the next non-finite step raises
        ``FloatingPointError`` instead (nothing written).  ``None``: no limit.  The run is
        the shortest count among the call's leaves (see Notes), so a leaf that had no
        gradient in the last good step does not make a run look longer than it is.

    Notes
    -----
    State: ``SkipNonFiniteState(skipped, consecutive)``, 0-d int64 arrays: the steps
    skipped so far and, of them, those in a row up to now (reset by a good step the leaf
    takes part in; with several limits in one call, the smallest applies).  The check
    is a float64 reduction of each gradient by the kernels (a NaN or an infinity makes it
    non-finite; an overflow of finite values is told apart by a second look).

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> m = {"a": np.ones(2), "b": np.ones(2)}
    >>> st = opt.setup(opt.OptimiserChain(opt.SkipNonFinite(), opt.Descent(0.5)), m)
    >>> st, m = opt.update_(st, m, {"a": np.array([1.0, np.nan]), "b": np.ones(2)})
    >>> m["a"], m["b"], int(st["a"].state[0].skipped)
    (array([1., 1.]), array([1., 1.]), 1)
    >>> st, m = opt.update_(st, m, {"a": np.ones(2), "b": np.ones(2)})
    >>> m["a"]
    array([0.5, 0.5])
    """

    max_consecutive: int | None = None

    state_types = (SkipNonFiniteState,)
    _leads = "skip"  # where it may stand in a chain (OptimiserChain checks it)

    def _check(self) -> dict[str, Any]:
        m = self.max_consecutive
        if m is None:
            return {}
        if isinstance(m, bool) or not isinstance(m, (int, np.integer)):
            raise TypeError(f"SkipNonFinite: max_consecutive must be an integer or None, got {m!r}")
        if m < 0:
            raise ValueError(
                f"SkipNonFinite: max_consecutive={m} is out of range, it must "
                f"be >= 0 (or None: no limit)"
            )
        return {"max_consecutive": int(m)}

    def init(self, x: Array) -> SkipNonFiniteState:
        return SkipNonFiniteState(np.zeros((), np.int64), np.zeros((), np.int64))

    def _global_spec(self) -> dict[str, Any]:
        return {
            "clip": 0.0,
            "skip": 1.0,
            "omega": math.inf,
            "p": 1.0,
            "throw": 0.0,
            "max": self.max_consecutive,
        }

    def _skip_state(self, state: SkipNonFiniteState) -> SkipNonFiniteState:
        return state

    def _compile(self, state: RuleState, prog: Program) -> RuleState:
        _joined_stage(prog, "SkipNonFinite")
        # The engine decides a skip for the whole step (the kernel reduces this leaf's
        # partial; a Batch resets the run of skips, its counter, when the step runs); a
        # program that runs is not skipped; one array alone (apply_) looks at itself.
        scale = getattr(prog, "global_scale", None)
        if scale is None and not getattr(prog, "recording", True):
            if not np.isfinite(prog.src).all():
                _count_skip(self, state, prog.where())
                prog.set_source(None)
                return state
            scale = 1.0
        if scale is not None:
            state.consecutive[...] = 0
        prog.add(
            K.GLOBALNORM,
            {
                "omega": math.inf,
                "p": 1.0,
                "how": K.NORM_ABS,
                "throw": 0.0,
                "clip": 0.0,
                "skip": 1.0,
                "known": float(scale is not None),
                "scale": 1.0 if scale is None else scale,
            },
            ctr=state.consecutive,
        )
        return state


def _count_skip(rule: SkipNonFinite, state: SkipNonFiniteState, where: str) -> None:
    """Count one skipped step in ``state``, or raise after ``max_consecutive`` in a row."""
    if rule.max_consecutive is not None and state.consecutive >= rule.max_consecutive:
        raise FloatingPointError(
            f"SkipNonFinite: a non-finite gradient (at {where}) after "
            f"{int(state.consecutive)} steps skipped in a row "
            f"(max_consecutive={rule.max_consecutive})"
        )
    state.skipped[...] += 1
    state.consecutive[...] += 1
