"""Per-coordinate learning rates from a running second moment: RMSProp, AdaGrad, AdaDelta."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ._native import kernels as K
from ._program import Program, moment_dtype, moment_zeros
from ._rule import Rule, checked, decay, flag, nonneg, number
from ._rules_sgd import zeros
from ._schedule import Hyperparameter, value_at
from ._types import Array, RuleState

__all__ = ["RMSProp", "AdaGrad", "AdaDelta", "RMSPropState", "AdaDeltaState"]


class RMSPropState(NamedTuple):
    q: Array
    l: Array | None  # noqa: E741 (the seed's name, stored in checkpoints)


class AdaDeltaState(NamedTuple):
    acc: Array
    dacc: Array


@checked
class RMSProp(Rule):
    r"""RMSProp (Hinton), plain or centred.

    .. math::
        q \leftarrow \rho q + (1-\rho) g^2, \qquad
        d = \frac{\eta\, g}{\sqrt{q - \ell^2} + \epsilon}

    where, when centred, :math:`\ell \leftarrow \rho \ell + (1-\rho) g` estimates the mean
    gradient (so the denominator is a standard deviation); otherwise :math:`\ell = 0`.

    Parameters
    ----------
    eta : float, default 1e-3
    rho : float, default 0.9
        Decay of the moments, in [0, 1).
    epsilon : float, default 1e-8
        Added outside the square root.
    centred : bool, default False
        Also accepted as ``centered=``.

    Notes
    -----
    State: ``RMSPropState(q, l)``, ``l`` is ``None`` unless centred.  ``adjust`` cannot
    change ``centred`` (the two variants keep different states).

    Examples
    --------
    >>> import optimisers as opt
    >>> opt.RMSProp(centered=True)
    RMSProp(eta=0.001, rho=0.9, epsilon=1e-08, centred=True)
    """

    eta: Hyperparameter = 1e-3
    rho: Hyperparameter = 0.9
    epsilon: Hyperparameter = 1e-8
    centred: bool = False

    def __init__(
        self,
        eta: Hyperparameter = 1e-3,
        rho: Hyperparameter = 0.9,
        epsilon: Hyperparameter = 1e-8,
        centred: bool = False,
        *,
        centered: bool = False,
    ) -> None:
        object.__setattr__(self, "eta", eta)
        object.__setattr__(self, "rho", rho)
        object.__setattr__(self, "epsilon", epsilon)
        object.__setattr__(
            self, "centred", flag(self, "centred", centred) or flag(self, "centered", centered)
        )
        self.__post_init__()  # type: ignore[attr-defined]  # (added by @checked)

    def _check(self) -> dict[str, Any]:
        return {
            "eta": nonneg(self, "eta", self.eta),
            "rho": decay(self, "rho", self.rho),
            "epsilon": nonneg(self, "epsilon", self.epsilon),
        }

    state_types = (RMSPropState,)

    def init(self, x: Array) -> RMSPropState:
        return RMSPropState(moment_zeros(x), zeros(x) if self.centred else None)

    def _compile(self, state: RuleState, prog: Program) -> RuleState:
        rho = number(self.rho)
        hp = {"rho": rho, "omr": 1 - rho, "eps": self.epsilon, "eta": self.eta}
        if self.centred:
            prog.add(K.RMSPROP_CENTRED, hp, state.q, state.l)
        else:
            prog.add(K.RMSPROP, hp, state.q)
        return state


@checked
class AdaGrad(Rule):
    r"""AdaGrad (Duchi et al., 2011).

    .. math::
        a \leftarrow a + g^2, \qquad d = \frac{\eta\, g}{\sqrt{a} + \epsilon}

    Parameters
    ----------
    eta : float, default 0.1
    epsilon : float, default 1e-8

    Notes
    -----
    As in the seed the accumulator starts at ``epsilon``, not 0.  State: the array ``a``.

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> st = opt.setup(opt.AdaGrad(), np.zeros(2))
    >>> st, x = opt.update(st, np.zeros(2), np.array([3.0, -4.0]))
    >>> np.round(x, 6)
    array([-0.1,  0.1])
    """

    eta: Hyperparameter = 0.1
    epsilon: Hyperparameter = 1e-8

    def _check(self) -> dict[str, Any]:
        return {
            "eta": nonneg(self, "eta", self.eta),
            "epsilon": nonneg(self, "epsilon", self.epsilon),
        }

    def init(self, x: Array) -> RuleState:
        # the accumulator starts at epsilon: a scheduled one's value before the first step
        return np.full(x.shape, value_at(self.epsilon, 0), moment_dtype(x.dtype))

    def _compile(self, acc: RuleState, prog: Program) -> RuleState:
        prog.add(K.ADAGRAD, {"eta": self.eta, "eps": self.epsilon}, acc)
        return acc


@checked
class AdaDelta(Rule):
    r"""AdaDelta (Zeiler, 2012): no learning rate, steps scaled by past steps.

    .. math::
        a &\leftarrow \rho a + (1-\rho) g^2 \\
        d &= \frac{g \sqrt{\delta + \epsilon}}{\sqrt{a + \epsilon}} \quad (\text{old } \delta)\\
        \delta &\leftarrow \rho \delta + (1-\rho) d^2

    Parameters
    ----------
    rho : float, default 0.9
    epsilon : float, default 1e-8
        Inside both square roots.

    Notes
    -----
    State: ``AdaDeltaState(acc, dacc)``.  ``adjust(..., eta=...)`` does not apply (there is
    no learning rate).

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> st = opt.setup(opt.AdaDelta(), np.zeros(1))
    >>> st, x = opt.update(st, np.zeros(1), np.ones(1))
    >>> float(x[0]) < 0
    True
    """

    rho: Hyperparameter = 0.9
    epsilon: Hyperparameter = 1e-8

    def _check(self) -> dict[str, Any]:
        return {
            "rho": decay(self, "rho", self.rho),
            "epsilon": nonneg(self, "epsilon", self.epsilon),
        }

    state_types = (AdaDeltaState,)

    def init(self, x: Array) -> AdaDeltaState:
        return AdaDeltaState(moment_zeros(x), moment_zeros(x))

    def _compile(self, state: RuleState, prog: Program) -> RuleState:
        rho = number(self.rho)
        prog.add(
            K.ADADELTA, {"rho": rho, "omr": 1 - rho, "eps": self.epsilon}, state.acc, state.dacc
        )
        return state
