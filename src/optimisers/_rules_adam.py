"""Adam and its relatives: RAdam, AdaMax, OAdam, AMSGrad, NAdam, AdamW, AdaBelief.

All keep a first moment ``m``, a second moment, and (except AMSGrad) the running products
``beta_t = [beta1^t, beta2^t]`` for the bias corrections: a 2-element array of the compute
dtype that the kernel multiplies in place once per step (a running product with rounding,
as the seed does), so a state is never rebuilt.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import numpy as np

from ._native import kernels as K
from ._program import Program, moment_zeros, state_full
from ._rule import Rule, checked, decay, flag, nonneg, number, pair
from ._rules_sgd import zeros
from ._schedule import HyperPair, Hyperparameter, value_at
from ._types import Array, RuleState

__all__ = [
    "Adam",
    "RAdam",
    "AdaMax",
    "OAdam",
    "AMSGrad",
    "NAdam",
    "AdamW",
    "AdaBelief",
    "AdamState",
    "RAdamState",
    "AdaMaxState",
    "OAdamState",
    "AMSGradState",
    "AdaBeliefState",
]


class AdamState(NamedTuple):
    m: Array
    v: Array
    beta_t: Array


class RAdamState(NamedTuple):
    m: Array
    v: Array
    beta_t: Array
    t: Array


class AdaMaxState(NamedTuple):
    m: Array
    u: Array
    beta_t: Array


class OAdamState(NamedTuple):
    m: Array
    v: Array
    beta_t: Array
    term: Array


class AMSGradState(NamedTuple):
    m: Array
    v: Array
    vhat: Array


class AdaBeliefState(NamedTuple):
    m: Array
    s: Array
    beta_t: Array


class _HasBeta(Protocol):
    """A rule with Adam's pair of decays (the Adam family, LAMB)."""

    @property
    def beta(self) -> HyperPair: ...


def _betas(rule: _HasBeta, x: Array) -> Array:
    """The running products [b1^t, b2^t] at t = 1, in float64 whatever the parameter's dtype
    (the bias corrections 1 - beta^t are formed in float64 and rounded once); a scheduled
    beta enters with its value at count 0."""
    return np.array([value_at(b, 0) for b in rule.beta], dtype=np.float64)


def _step_counter() -> Array:
    return np.ones((), np.int64)


def _adam_hp(rule: _AdamLike, **more: float) -> dict[str, float]:
    """The kernel's named hyper-parameters (its AdamHP struct), formed in float64: the
    kernel rounds each once to the parameter's dtype, and derives the bias corrections per
    step from ``beta_t``."""
    b1, b2 = number(rule.beta[0]), number(rule.beta[1])
    return {
        "b1": b1,
        "b2": b2,
        "omb1": 1 - b1,
        "omb2": 1 - b2,
        "eps": number(rule.epsilon),
        "eta": number(rule.eta),
        **more,
    }


class _AdamLike(Rule):
    """Shared fields and checks: eta >= 0, betas in [0, 1), epsilon >= 0."""

    # the fields every subclass declares (this base is no dataclass: no fields of its own)
    eta: Hyperparameter
    beta: HyperPair
    epsilon: Hyperparameter

    def _check(self) -> dict[str, Any]:
        return {
            "eta": nonneg(self, "eta", self.eta),
            "beta": pair(self, "beta", self.beta, decay),
            "epsilon": nonneg(self, "epsilon", self.epsilon),
        }


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
    >>> st.state.m, st.state.v, st.state.beta_t
    (array([0.1, 0.1]), array([0.001, 0.001]), array([0.81    , 0.998001]))
    """

    eta: Hyperparameter = 1e-3
    beta: HyperPair = (0.9, 0.999)
    epsilon: Hyperparameter = 1e-8

    state_types = (AdamState,)

    def init(self, x: Array) -> AdamState:
        return AdamState(zeros(x), moment_zeros(x), _betas(self, x))

    def _compile(self, state: RuleState, prog: Program) -> RuleState:
        prog.add(K.ADAM, _adam_hp(self), state.m, state.v, sc=state.beta_t)
        return state


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
    State: ``RAdamState(m, v, beta_t, t)`` with the step counter ``t`` (a 0-d int64 array)
    starting at 1.  :math:`\rho_t` and :math:`r_t` are computed once per step in the
    compute dtype.

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> st = opt.setup(opt.RAdam(0.1), np.zeros(2))
    >>> st, x = opt.update(st, np.zeros(2), np.ones(2))   # warm-up: d = (m/(1-b1)) * eta
    >>> x, int(st.state.t)
    (array([-0.1, -0.1]), 2)
    """

    eta: Hyperparameter = 1e-3
    beta: HyperPair = (0.9, 0.999)
    epsilon: Hyperparameter = 1e-8

    state_types = (RAdamState,)

    def init(self, x: Array) -> RAdamState:
        return RAdamState(zeros(x), moment_zeros(x), _betas(self, x), _step_counter())

    def _compile(self, state: RuleState, prog: Program) -> RuleState:
        # rho_t, r_t and the branch are computed per step by the kernel from beta_t and t
        prog.add(K.RADAM, _adam_hp(self), state.m, state.v, sc=state.beta_t, ctr=state.t)
        return state


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

    eta: Hyperparameter = 1e-3
    beta: HyperPair = (0.9, 0.999)
    epsilon: Hyperparameter = 1e-8

    state_types = (AdaMaxState,)

    def init(self, x: Array) -> AdaMaxState:
        return AdaMaxState(zeros(x), zeros(x), _betas(self, x))

    def _compile(self, state: RuleState, prog: Program) -> RuleState:
        prog.add(K.ADAMAX, _adam_hp(self), state.m, state.u, sc=state.beta_t)
        return state


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

    eta: Hyperparameter = 1e-3
    beta: HyperPair = (0.5, 0.9)
    epsilon: Hyperparameter = 1e-8

    state_types = (OAdamState,)

    def init(self, x: Array) -> OAdamState:
        return OAdamState(zeros(x), moment_zeros(x), _betas(self, x), zeros(x))

    def _compile(self, state: RuleState, prog: Program) -> RuleState:
        prog.add(K.OADAM, _adam_hp(self), state.m, state.v, state.term, sc=state.beta_t)
        return state


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

    eta: Hyperparameter = 1e-3
    beta: HyperPair = (0.9, 0.999)
    epsilon: Hyperparameter = 1e-8

    state_types = (AMSGradState,)

    def init(self, x: Array) -> AMSGradState:
        # m, v and vhat start at epsilon (the seed's choice): its value at count 0
        return AMSGradState(*(state_full(x, value_at(self.epsilon, 0)) for _ in range(3)))

    def _compile(self, state: RuleState, prog: Program) -> RuleState:
        prog.add(K.AMSGRAD, _adam_hp(self), state.m, state.v, state.vhat)
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

    eta: Hyperparameter = 1e-3
    beta: HyperPair = (0.9, 0.999)
    epsilon: Hyperparameter = 1e-8

    state_types = (AdamState,)

    def init(self, x: Array) -> AdamState:
        return AdamState(zeros(x), moment_zeros(x), _betas(self, x))

    def _compile(self, state: RuleState, prog: Program) -> RuleState:
        prog.add(K.NADAM, _adam_hp(self), state.m, state.v, sc=state.beta_t)
        return state


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

    eta: Hyperparameter = 1e-3
    beta: HyperPair = (0.9, 0.999)
    lambda_: Hyperparameter = 0.0
    epsilon: Hyperparameter = 1e-8
    couple: bool = True

    def _check(self) -> dict[str, Any]:
        return {
            **super()._check(),
            "lambda_": nonneg(self, "lambda_", self.lambda_),
            "couple": flag(self, "couple", self.couple),
        }

    state_types = (AdamState,)

    def init(self, x: Array) -> AdamState:
        return AdamState(zeros(x), moment_zeros(x), _betas(self, x))

    def _compile(self, state: RuleState, prog: Program) -> RuleState:
        kind = K.ADAMW_COUPLED if self.couple else K.ADAMW_DECOUPLED
        prog.add(kind, _adam_hp(self, lam=number(self.lambda_)), state.m, state.v, sc=state.beta_t)
        return state


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

    eta: Hyperparameter = 1e-3
    beta: HyperPair = (0.9, 0.999)
    epsilon: Hyperparameter = 1e-16

    state_types = (AdaBeliefState,)

    def init(self, x: Array) -> AdaBeliefState:
        return AdaBeliefState(zeros(x), moment_zeros(x), _betas(self, x))

    def _compile(self, state: RuleState, prog: Program) -> RuleState:
        prog.add(K.ADABELIEF, _adam_hp(self), state.m, state.s, sc=state.beta_t)
        return state
