"""Gradient descent, momentum, Nesterov, Rprop and Lion."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ._native import kernels as K
from ._program import Program, state_dtype, state_full
from ._rule import Rule, checked, decay, extent, nonneg, number, pair, real
from ._schedule import HyperPair, Hyperparameter, value_at
from ._types import Array, RuleState

__all__ = ["Descent", "Momentum", "Nesterov", "Rprop", "Lion", "RpropState"]


def zeros(x: Array) -> Array:
    """A zero element-wise state array for ``x``: its shape, C order (``np.zeros_like``
    would keep Fortran order), ``state_dtype`` (float32 for a 16-bit ``x``)."""
    return np.zeros(x.shape, state_dtype(x.dtype))


@checked
class Descent(Rule):
    r"""Plain gradient descent: :math:`x \leftarrow x - \eta\, g`.

    Parameters
    ----------
    eta : float, default 0.1
        Learning rate, :math:`\eta \ge 0`.

    Notes
    -----
    ``d = g * eta``.  No state.  Departure from the seed: the default is exactly ``0.1``
    (Optimisers.jl stores the float32 ``0.1f0``).

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> st, x = opt.update(opt.setup(opt.Descent(0.1), np.ones(2)), np.ones(2),
    ...                    np.array([1.0, 2.0]))
    >>> x
    array([0.9, 0.8])
    """

    eta: Hyperparameter = 0.1

    def _check(self) -> dict[str, Any]:
        return {"eta": nonneg(self, "eta", self.eta)}

    def _compile(self, state: RuleState, prog: Program) -> RuleState:
        # After another stage, eta = 1 multiplies by one: no stage, the same bits, and the
        # step before stays one fused pass (optimisers.torch chains a rule without eta with
        # Descent(lr), lr = 1 by default: AdaDelta 10% faster so).
        if self.eta == 1.0 and prog.stages:
            return state
        prog.add(K.DESCENT, {"eta": self.eta})
        return state


@checked
class Momentum(Rule):
    r"""Gradient descent with momentum.

    .. math::  v \leftarrow \rho v + \eta g, \qquad x \leftarrow x - v

    Parameters
    ----------
    eta : float, default 0.01
        Learning rate.
    rho : float, default 0.9
        Momentum, in [0, 1).

    Notes
    -----
    State: the velocity ``v`` (an array like ``x``).

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> x = np.array([1.0, 2.0]); st = opt.setup(opt.Momentum(0.1, 0.5), x)
    >>> st, x = opt.update_(st, x, np.ones(2)); st, x = opt.update_(st, x, np.ones(2))
    >>> st.state, x
    (array([0.15, 0.15]), array([0.75, 1.75]))
    """

    eta: Hyperparameter = 0.01
    rho: Hyperparameter = 0.9

    def _check(self) -> dict[str, Any]:
        return {"eta": nonneg(self, "eta", self.eta), "rho": decay(self, "rho", self.rho)}

    def init(self, x: Array) -> Array:
        return zeros(x)

    def _compile(self, v: RuleState, prog: Program) -> RuleState:
        prog.add(K.MOMENTUM, {"eta": self.eta, "rho": self.rho}, v)
        return v


@checked
class Nesterov(Rule):
    r"""Gradient descent with Nesterov momentum.

    .. math::
        d = -\rho^2 v + (1+\rho)\,\eta\, g, \qquad v \leftarrow \rho v - \eta g
        \qquad (d \text{ uses the old } v)

    Parameters
    ----------
    eta : float, default 0.001
        Learning rate.
    rho : float, default 0.9
        Nesterov momentum, in [0, 1).

    Notes
    -----
    Operation order of the seed: ``d = ((-(rho*rho))*v) + (((1+rho)*eta)*g)``, then
    ``v = (rho*v) - (eta*g)``.  State: ``v``.

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> m = {"vec": np.zeros(2, np.float32)}
    >>> st = opt.setup(opt.Nesterov(), m)
    >>> st, m = opt.update(st, m, {"vec": np.array([16, 88])})
    >>> st["vec"].state
    array([-0.016     , -0.08800001], dtype=float32)
    """

    eta: Hyperparameter = 0.001
    rho: Hyperparameter = 0.9

    def _check(self) -> dict[str, Any]:
        return {"eta": nonneg(self, "eta", self.eta), "rho": decay(self, "rho", self.rho)}

    def init(self, x: Array) -> Array:
        return zeros(x)

    def _compile(self, v: RuleState, prog: Program) -> RuleState:
        eta, rho = number(self.eta), number(self.rho)
        prog.add(
            K.NESTEROV,
            {"eta": eta, "rho": rho, "old_weight": -(rho * rho), "grad_weight": (1 + rho) * eta},
            v,
        )
        return v


class RpropState(NamedTuple):
    gprev: Array
    step: Array


@checked
class Rprop(Rule):
    r"""Resilient backpropagation (iRprop-), which uses only the sign of the gradient.

    For each element, with :math:`p = g_{prev}\, g`:

    .. math::
        s \leftarrow \begin{cases} \min(s\,\ell_2, \Gamma_2) & p > 0 \\
                                   \max(s\,\ell_1, \Gamma_1) & p < 0 \\ s & p = 0\end{cases}
        \qquad g_{prev} \leftarrow \begin{cases} 0 & p < 0 \\ g & \text{else}\end{cases}
        \qquad d = s\,\mathrm{sign}(g_{prev})

    Parameters
    ----------
    eta : float, default 1e-3
        Initial step size of every element (used by ``init`` only).
    ell : (float, float), default (0.5, 1.2)
        Decrease factor in (0, 1] and increase factor >= 1.
    gamma : (float, float), default (1e-6, 50.0)
        Minimal and maximal step size, ``0 <= gamma[0] <= gamma[1]``.

    Notes
    -----
    State: ``RpropState(gprev, step)``.  Not defined for complex parameters.

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> x = np.array([1.0, 1.0]); st = opt.setup(opt.Rprop(0.1), x)
    >>> for g in ([1.0, 1.0], [1.0, -1.0]):
    ...     st, x = opt.update_(st, x, np.array(g))
    >>> x, st.state.step
    (array([0.78, 0.9 ]), array([0.12, 0.05]))
    """

    eta: Hyperparameter = 1e-3
    ell: HyperPair = (0.5, 1.2)
    gamma: HyperPair = (1e-6, 50.0)

    def _check(self) -> dict[str, Any]:
        ell = pair(self, "ell", self.ell, lambda r, n, v: real(r, n, v, lo=0.0, lo_open=True))
        # every value a schedule takes must satisfy them: its bounds are exact
        if not (extent(ell[0])[1] <= 1.0 <= extent(ell[1])[0]):
            raise ValueError(f"Rprop: ell={ell} must satisfy 0 < ell[0] <= 1 <= ell[1]")
        gamma = pair(self, "gamma", self.gamma, nonneg)
        if extent(gamma[0])[1] > extent(gamma[1])[0]:
            raise ValueError(f"Rprop: gamma={gamma} must satisfy gamma[0] <= gamma[1]")
        return {"eta": nonneg(self, "eta", self.eta), "ell": ell, "gamma": gamma}

    state_types = (RpropState,)

    def init(self, x: Array) -> RpropState:
        # the first step's size: eta at count 0
        return RpropState(zeros(x), state_full(x, value_at(self.eta, 0)))

    def _compile(self, state: RuleState, prog: Program) -> RuleState:
        prog.add(
            K.RPROP,
            {
                "ell_dec": self.ell[0],
                "ell_inc": self.ell[1],
                "gamma_min": self.gamma[0],
                "gamma_max": self.gamma[1],
            },
            state.gprev,
            state.step,
        )
        return state


@checked
class Lion(Rule):
    r"""Lion, the evolved sign momentum of Chen et al. (2023).

    .. math::
        c = \beta_1 m + (1-\beta_1) g, \qquad d = \eta\, \mathrm{sign}(c), \qquad
        m \leftarrow \beta_2 m + (1-\beta_2) g

    Parameters
    ----------
    eta : float, default 1e-3
        Learning rate.
    beta : (float, float), default (0.9, 0.999)
        Interpolation weight of the update and decay of the momentum, each in [0, 1).

    Notes
    -----
    Departure from the seed: Optimisers.jl v0.4.8 has the two weights of its momentum EMA
    swapped (``m <- b2*g + (1-b2)*m``); this is the paper's rule.  State: ``m``.
    Not defined for complex parameters.

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> x = np.zeros(3); st = opt.setup(opt.Lion(0.1), x)
    >>> st, x = opt.update_(st, x, np.array([2.0, -3.0, 0.0]))
    >>> x
    array([-0.1,  0.1,  0. ])
    """

    eta: Hyperparameter = 1e-3
    beta: HyperPair = (0.9, 0.999)

    def _check(self) -> dict[str, Any]:
        return {"eta": nonneg(self, "eta", self.eta), "beta": pair(self, "beta", self.beta, decay)}

    def init(self, x: Array) -> Array:
        return zeros(x)

    def _compile(self, m: RuleState, prog: Program) -> RuleState:
        b1, b2 = number(self.beta[0]), number(self.beta[1])
        prog.add(K.LION, {"b1": b1, "b2": b2, "omb1": 1 - b1, "omb2": 1 - b2, "eta": self.eta}, m)
        return m
