"""Adam and its relatives: RAdam, AdaMax, OAdam, AMSGrad, NAdam, AdamW, AdaBelief.

All keep a first moment ``m``, a second moment, and (except AMSGrad) the running products
``beta_t = (beta1^t, beta2^t)`` for the bias corrections, as numpy scalars of the compute
dtype, multiplied once per step (a running product with rounding, as the seed does).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import _kernels as K
from ._rule import Rule, checked, decay, nonneg, pair
from ._program import compute_dtype
from ._rules_sgd import zeros

__all__ = ["Adam", "RAdam", "AdaMax", "OAdam", "AMSGrad", "NAdam", "AdamW", "AdaBelief",
           "AdamState", "RAdamState", "AdaMaxState", "OAdamState", "AMSGradState",
           "AdaBeliefState"]


class AdamState(NamedTuple):
    m: np.ndarray
    v: np.ndarray
    beta_t: tuple


class RAdamState(NamedTuple):
    m: np.ndarray
    v: np.ndarray
    beta_t: tuple
    t: int


class AdaMaxState(NamedTuple):
    m: np.ndarray
    u: np.ndarray
    beta_t: tuple


class OAdamState(NamedTuple):
    m: np.ndarray
    v: np.ndarray
    beta_t: tuple
    term: np.ndarray


class AMSGradState(NamedTuple):
    m: np.ndarray
    v: np.ndarray
    vhat: np.ndarray


class AdaBeliefState(NamedTuple):
    m: np.ndarray
    s: np.ndarray
    beta_t: tuple


def _betas(rule, x):
    T = compute_dtype(x.dtype).type
    return (T(rule.beta[0]), T(rule.beta[1]))


def _adam_scalars(rule, beta_t, T):
    """b1, b2, 1-b1, 1-b2, 1-bt1, 1-bt2, eps, eta, all in the compute dtype."""
    one = T(1)
    b1, b2 = T(rule.beta[0]), T(rule.beta[1])
    return (b1, b2, one - b1, one - b2, one - beta_t[0], one - beta_t[1],
            T(rule.epsilon), T(rule.eta))


def _next(beta_t, hp):
    return (beta_t[0] * hp[0], beta_t[1] * hp[1])


class _AdamLike(Rule):
    """Shared fields and checks: eta >= 0, betas in [0, 1), epsilon >= 0."""

    def _check(self):
        return {"eta": nonneg(self, "eta", self.eta), "beta": pair(self, "beta", self.beta, decay),
                "epsilon": nonneg(self, "epsilon", self.epsilon)}


@checked
class Adam(_AdamLike):
    r"""Adam (Kingma & Ba, 2015).

    .. math::
        m &\leftarrow \beta_1 m + (1-\beta_1)\, g \\
        v &\leftarrow \beta_2 v + (1-\beta_2)\, g^2 \\
        d &= \frac{m / (1-\beta_1^t)}{\sqrt{v / (1-\beta_2^t)} + \epsilon}\; \eta

    Parameters
    ----------
    eta : float, default 1e-3
        Learning rate.
    beta : (float, float), default (0.9, 0.999)
        Decay rates of the first and second moments, each in [0, 1).
    epsilon : float, default 1e-8
        Added outside the square root (PyTorch's convention).

    Notes
    -----
    State: ``AdamState(m, v, beta_t)``.  Operation order of the seed:
    ``d = ((m/(1-bt1)) / (sqrt(v/(1-bt2)) + eps)) * eta``.

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> st = opt.setup(opt.Adam(0.1), np.zeros(2))
    >>> st, x = opt.update(st, np.zeros(2), np.ones(2))
    >>> st.state.m, st.state.v, tuple(float(b) for b in st.state.beta_t)
    (array([0.1, 0.1]), array([0.001, 0.001]), (0.81, 0.998001))
    """
    eta: float = 1e-3
    beta: tuple = (0.9, 0.999)
    epsilon: float = 1e-8
    _complex = "moments"

    def init(self, x):
        return AdamState(zeros(x), zeros(x), _betas(self, x))

    def _compile(self, state, prog):
        hp = _adam_scalars(self, state.beta_t, prog.scalar)
        prog.add(K.ADAM, hp, state.m, state.v)
        return AdamState(state.m, state.v, _next(state.beta_t, hp))


@checked
class RAdam(_AdamLike):
    r"""Rectified Adam (Liu et al., 2020).

    Moments as :class:`Adam`.  With :math:`\rho_\infty = 2/(1-\beta_2) - 1` and
    :math:`\rho_t = \rho_\infty - 2 t \beta_2^t / (1-\beta_2^t)`:

    .. math::
        d = \begin{cases}
        \frac{m/(1-\beta_1^t)}{\sqrt{v/(1-\beta_2^t)}+\epsilon}\,\eta\, r_t,\quad
        r_t = \sqrt{\frac{(\rho_t-4)(\rho_t-2)\rho_\infty}{(\rho_\infty-4)(\rho_\infty-2)\rho_t}}
        & \rho_t > 4 \\
        \frac{m}{1-\beta_1^t}\,\eta & \text{otherwise (warm-up)}
        \end{cases}

    Parameters
    ----------
    eta, beta, epsilon : as :class:`Adam`.

    Notes
    -----
    State: ``RAdamState(m, v, beta_t, t)`` with the step counter ``t`` starting at 1.
    :math:`\rho_t` and :math:`r_t` are computed once per step in the compute dtype.

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> st = opt.setup(opt.RAdam(0.1), np.zeros(2))
    >>> st, x = opt.update(st, np.zeros(2), np.ones(2))   # warm-up: d = (m/(1-b1)) * eta
    >>> x, st.state.t
    (array([-0.1, -0.1]), 2)
    """
    eta: float = 1e-3
    beta: tuple = (0.9, 0.999)
    epsilon: float = 1e-8
    _complex = "moments"

    def init(self, x):
        return RAdamState(zeros(x), zeros(x), _betas(self, x), 1)

    def _compile(self, state, prog):
        T = prog.scalar
        hp = _adam_scalars(self, state.beta_t, T)
        one, two, four = T(1), T(2), T(4)
        b2, bt2 = hp[1], state.beta_t[1]
        rho_inf = two / (one - b2) - one
        rho = rho_inf - (two * T(state.t) * bt2) / (one - bt2)
        if rho > four:
            r = np.sqrt(((rho - four) * (rho - two) * rho_inf)
                        / ((rho_inf - four) * (rho_inf - two) * rho))
            hp = hp + (r, 1.0)
        else:
            hp = hp + (T(0), 0.0)
        prog.add(K.RADAM, hp, state.m, state.v)
        return RAdamState(state.m, state.v, _next(state.beta_t, hp), state.t + 1)


@checked
class AdaMax(_AdamLike):
    r"""AdaMax, Adam with the infinity norm (Kingma & Ba, 2015).

    .. math::
        m \leftarrow \beta_1 m + (1-\beta_1) g, \qquad
        u \leftarrow \max(\beta_2 u, |g|), \qquad
        d = \frac{(\eta / (1-\beta_1^t))\, m}{u + \epsilon}

    Parameters
    ----------
    eta, beta, epsilon : as :class:`Adam`.

    Notes
    -----
    State: ``AdaMaxState(m, u, beta_t)``.  Not defined for complex parameters.

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> st = opt.setup(opt.AdaMax(0.1), np.zeros(2))
    >>> st, x = opt.update(st, np.zeros(2), np.array([1.0, -2.0]))
    >>> np.round(x, 6)
    array([-0.1,  0.1])
    """
    eta: float = 1e-3
    beta: tuple = (0.9, 0.999)
    epsilon: float = 1e-8

    def init(self, x):
        return AdaMaxState(zeros(x), zeros(x), _betas(self, x))

    def _compile(self, state, prog):
        T = prog.scalar
        hp = _adam_scalars(self, state.beta_t, T)
        b1, b2, omb1, _, bc1, _, eps, eta = hp
        prog.add(K.ADAMAX, (b1, b2, omb1, eta / bc1, eps), state.m, state.u)
        return AdaMaxState(state.m, state.u, _next(state.beta_t, hp))


@checked
class OAdam(_AdamLike):
    r"""Optimistic Adam (Daskalakis et al., 2018), for adversarial training.

    Moments as :class:`Adam`; with the previous ``term``:

    .. math::
        \tau \leftarrow \frac{\eta\, m / (1-\beta_1^t)}{\sqrt{v/(1-\beta_2^t)} + \epsilon},
        \qquad d = 2\tau - \tau_{prev}

    Parameters
    ----------
    eta : float, default 1e-3
    beta : (float, float), default (0.5, 0.9)
    epsilon : float, default 1e-8

    Notes
    -----
    State: ``OAdamState(m, v, beta_t, term)``.

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> st = opt.setup(opt.OAdam(0.1), np.zeros(1))
    >>> st, x = opt.update(st, np.zeros(1), np.ones(1))
    >>> np.round(x, 6)
    array([-0.2])
    """
    eta: float = 1e-3
    beta: tuple = (0.5, 0.9)
    epsilon: float = 1e-8
    _complex = "moments"

    def init(self, x):
        return OAdamState(zeros(x), zeros(x), _betas(self, x), zeros(x))

    def _compile(self, state, prog):
        hp = _adam_scalars(self, state.beta_t, prog.scalar)
        prog.add(K.OADAM, hp, state.m, state.v, state.term)
        return OAdamState(state.m, state.v, _next(state.beta_t, hp), state.term)


@checked
class AMSGrad(_AdamLike):
    r"""AMSGrad (Reddi et al., 2018): Adam with a non-decreasing second moment.

    .. math::
        m \leftarrow \beta_1 m + (1-\beta_1) g, \quad
        v \leftarrow \beta_2 v + (1-\beta_2) g^2, \quad
        \hat v \leftarrow \max(\hat v, v), \quad
        d = \frac{\eta\, m}{\sqrt{\hat v} + \epsilon}

    Parameters
    ----------
    eta, beta, epsilon : as :class:`Adam`.

    Notes
    -----
    No bias correction.  As in the seed, ``m``, ``v`` and ``vhat`` all start at
    ``epsilon``.  State: ``AMSGradState(m, v, vhat)``.  Not defined for complex parameters.

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> st = opt.setup(opt.AMSGrad(), np.zeros(2))
    >>> float(st.state.vhat[0])
    1e-08
    """
    eta: float = 1e-3
    beta: tuple = (0.9, 0.999)
    epsilon: float = 1e-8

    def init(self, x):
        return AMSGradState(*(np.full(x.shape, self.epsilon, x.dtype) for _ in range(3)))

    def _compile(self, state, prog):
        T = prog.scalar
        b1, b2 = T(self.beta[0]), T(self.beta[1])
        prog.add(K.AMSGRAD, (b1, b2, T(1) - b1, T(1) - b2, T(self.epsilon), T(self.eta)),
                 state.m, state.v, state.vhat)
        return state


@checked
class NAdam(_AdamLike):
    r"""NAdam, Adam with Nesterov momentum (Dozat, 2016), in the seed's form.

    Moments as :class:`Adam`, then

    .. math::
        d = \frac{\beta_1 m/(1-\beta_1\beta_1^t) + (1-\beta_1) g/(1-\beta_1^t)}
                 {\sqrt{\beta_2 v/(1-\beta_2^t)} + \epsilon}\; \eta

    Parameters
    ----------
    eta, beta, epsilon : as :class:`Adam`.

    Notes
    -----
    Kept exactly as Optimisers.jl writes it, including ``v*b2`` inside the square root.
    State: ``AdamState(m, v, beta_t)``.

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> st = opt.setup(opt.NAdam(0.1), np.zeros(1))
    >>> st, x = opt.update(st, np.zeros(1), np.ones(1))
    >>> float(x[0]) < 0
    True
    """
    eta: float = 1e-3
    beta: tuple = (0.9, 0.999)
    epsilon: float = 1e-8
    _complex = "moments"

    def init(self, x):
        return AdamState(zeros(x), zeros(x), _betas(self, x))

    def _compile(self, state, prog):
        T = prog.scalar
        hp = _adam_scalars(self, state.beta_t, T)
        prog.add(K.NADAM, hp + (T(1) - hp[0] * state.beta_t[0],), state.m, state.v)
        return AdamState(state.m, state.v, _next(state.beta_t, hp))


@checked
class AdamW(_AdamLike):
    r"""Adam with decoupled weight decay (Loshchilov & Hutter, 2019).

    With the Adam step at unit learning rate
    :math:`a = \frac{m/(1-\beta_1^t)}{\sqrt{v/(1-\beta_2^t)}+\epsilon}`:

    .. math::
        d = \eta\,(a + \lambda x) \quad (\text{couple=True, PyTorch}) \qquad
        d = \eta\, a + \lambda x \quad (\text{couple=False, the paper})

    Parameters
    ----------
    eta : float, default 1e-3
    beta : (float, float), default (0.9, 0.999)
    lambda_ : float, default 0.0
        Weight decay, >= 0 (``lambda`` is a Python keyword).
    epsilon : float, default 1e-8
    couple : bool, default True
        Multiply the decay by the learning rate (PyTorch's ``AdamW``), as Optimisers.jl
        does since v0.4.

    Notes
    -----
    State: ``AdamState(m, v, beta_t)``.

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> st = opt.setup(opt.AdamW(0.1, lambda_=0.5), np.ones(1))
    >>> st, x = opt.update(st, np.ones(1), np.zeros(1))   # no gradient: decay only
    >>> x
    array([0.95])
    """
    eta: float = 1e-3
    beta: tuple = (0.9, 0.999)
    lambda_: float = 0.0
    epsilon: float = 1e-8
    couple: bool = True
    _complex = "moments"

    def _check(self):
        if not isinstance(self.couple, (bool, np.bool_)):
            raise TypeError(f"AdamW: couple must be True or False, got {self.couple!r}")
        return {**super()._check(), "lambda_": nonneg(self, "lambda_", self.lambda_),
                "couple": bool(self.couple)}

    def init(self, x):
        return AdamState(zeros(x), zeros(x), _betas(self, x))

    def _compile(self, state, prog):
        T = prog.scalar
        hp = _adam_scalars(self, state.beta_t, T)
        kind = K.ADAMW_COUPLED if self.couple else K.ADAMW_DECOUPLED
        prog.add(kind, hp + (T(self.lambda_),), state.m, state.v)
        return AdamState(state.m, state.v, _next(state.beta_t, hp))


@checked
class AdaBelief(_AdamLike):
    r"""AdaBelief (Zhuang et al., 2020): Adam whose second moment tracks :math:`(g-m)^2`.

    .. math::
        m &\leftarrow \beta_1 m + (1-\beta_1) g \\
        s &\leftarrow \beta_2 s + (1-\beta_2)(g - m)^2 + \epsilon \quad (\text{new } m) \\
        d &= \frac{\eta\, m / (1-\beta_1^t)}{\sqrt{s/(1-\beta_2^t)} + \epsilon}

    Parameters
    ----------
    eta : float, default 1e-3
    beta : (float, float), default (0.9, 0.999)
    epsilon : float, default 1e-16

    Notes
    -----
    State: ``AdaBeliefState(m, s, beta_t)``.

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> st = opt.setup(opt.AdaBelief(0.1), np.zeros(1))
    >>> st, x = opt.update(st, np.zeros(1), np.ones(1))
    >>> float(x[0]) < 0
    True
    """
    eta: float = 1e-3
    beta: tuple = (0.9, 0.999)
    epsilon: float = 1e-16
    _complex = "moments"

    def init(self, x):
        return AdaBeliefState(zeros(x), zeros(x), _betas(self, x))

    def _compile(self, state, prog):
        hp = _adam_scalars(self, state.beta_t, prog.scalar)
        prog.add(K.ADABELIEF, hp, state.m, state.s)
        return AdaBeliefState(state.m, state.s, _next(state.beta_t, hp))
