"""PyTorch's own forms of Adamax, RAdam and NAdam: TorchAdamax, TorchRAdam, TorchNAdam.

The seed's :class:`~optimisers.AdaMax`, :class:`~optimisers.RAdam` and
:class:`~optimisers.NAdam` follow Optimisers.jl, whose formulas differ from
``torch.optim``'s in where epsilon goes, when RAdam rectifies and NAdam's momentum
schedule.  These three reproduce ``torch.optim.Adamax``, ``RAdam`` and ``NAdam`` (their
single-tensor algorithms with ``weight_decay=0``, no ``maximize``, no decoupled decay), so
that :class:`optimisers.torch.Optimizer` with one of them tracks its torch counterpart.

Each keeps a step counter ``t`` (a 0-d int64 array, starting at 1) and forms its per-step
scalars from it in float64 (``beta ** t``, as torch does), not from running products.
torch runs all three on the real views of a complex parameter, and so do these.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ._native import kernels as K
from ._program import Program
from ._rule import checked, nonneg, number
from ._rules_adam import _AdamLike, _step_counter
from ._rules_sgd import zeros
from ._schedule import HyperPair, Hyperparameter
from ._types import Array, RuleState

__all__ = [
    "TorchAdamax",
    "TorchRAdam",
    "TorchNAdam",
    "TorchAdamaxState",
    "TorchRAdamState",
    "TorchNAdamState",
]


class TorchAdamaxState(NamedTuple):
    m: Array
    u: Array
    t: Array


class TorchRAdamState(NamedTuple):
    m: Array
    v: Array
    t: Array


class TorchNAdamState(NamedTuple):
    m: Array
    v: Array
    t: Array
    mu_product: Array


def _moments_hp(rule: _AdamLike) -> dict[str, float]:
    """The kernel's constants shared by the three, formed in float64 (the kernel rounds
    each once to the parameter's dtype)."""
    b1, b2 = number(rule.beta[0]), number(rule.beta[1])
    return {
        "b1": b1,
        "omb1": 1 - b1,
        "b2": b2,
        "eps": number(rule.epsilon),
        "eta": number(rule.eta),
    }


class _TorchLike(_AdamLike):
    """The three's shared state: a first moment, a second one (both of the parameter's
    dtype: torch steps a complex parameter's real view) and the step counter ``t``."""

    def init(self, x: Array) -> RuleState:
        state: RuleState = self.state_types[0](zeros(x), zeros(x), _step_counter())
        return state


@checked
class TorchAdamax(_TorchLike):
    r"""AdaMax as ``torch.optim.Adamax`` computes it (epsilon inside the max).

    .. math::
        m &\leftarrow m + (1-\beta_1)(g - m) \\
        u &\leftarrow \max(\beta_2 u,\ |g| + \epsilon) \\
        d &= \frac{\eta}{1-\beta_1^t}\, \frac{m}{u}

    Parameters
    ----------
    eta : float, default 2e-3
        Learning rate (torch's ``lr``).
    beta : (float, float), default (0.9, 0.999)
        torch's ``betas``, each in [0, 1).
    epsilon : float, default 1e-8
        torch's ``eps``, added to :math:`|g|` inside the max.

    Notes
    -----
    Matches ``torch.optim.Adamax(lr=eta, betas=beta, eps=epsilon)``.  The seed's
    :class:`~optimisers.AdaMax` takes :math:`\max(\beta_2 u, |g|)` and adds epsilon to the
    denominator instead; the two agree only at ``epsilon = 0``.  The first moment is
    torch's ``lerp``; :math:`\beta_1^t` is ``pow(beta1, t)`` in float64.  State:
    ``TorchAdamaxState(m, u, t)``; a complex parameter is stepped component by component.

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> st = opt.setup(opt.TorchAdamax(0.1), np.zeros(2))
    >>> st, x = opt.update(st, np.zeros(2), np.array([1.0, -2.0]))
    >>> np.round(x, 6), int(st.state.t)
    (array([-0.1,  0.1]), 2)
    """

    eta: Hyperparameter = 2e-3
    beta: HyperPair = (0.9, 0.999)
    epsilon: Hyperparameter = 1e-8

    state_types = (TorchAdamaxState,)

    def _compile(self, state: RuleState, prog: Program) -> RuleState:
        # clr = eta / (1 - b1^t) is formed per step by the kernel from t
        prog.add(K.TORCH_ADAMAX, _moments_hp(self), state.m, state.u, ctr=state.t)
        return state


@checked
class TorchRAdam(_TorchLike):
    r"""Rectified Adam as ``torch.optim.RAdam`` computes it (rectified from
    :math:`\rho_t > 5`).

    With :math:`\rho_\infty = 2/(1-\beta_2) - 1` and
    :math:`\rho_t = \rho_\infty - 2 t \beta_2^t / (1-\beta_2^t)`:

    .. math::
        m &\leftarrow m + (1-\beta_1)(g - m), \qquad
        v \leftarrow \beta_2 v + (1-\beta_2)\, g^2 \\
        d &= \begin{cases}
        \frac{m}{1-\beta_1^t}\,\eta\, \frac{\sqrt{1-\beta_2^t}}{\sqrt{v}+\epsilon}\, r_t,\quad
        r_t = \sqrt{\frac{(\rho_t-4)(\rho_t-2)\rho_\infty}{(\rho_\infty-4)(\rho_\infty-2)\rho_t}}
        & \rho_t > 5 \\
        \frac{m}{1-\beta_1^t}\,\eta & \text{otherwise (warm-up)}
        \end{cases}

    Parameters
    ----------
    eta : float, default 1e-3
        Learning rate (torch's ``lr``).
    beta : as :class:`TorchAdamax`.
    epsilon : float, default 1e-8
        torch's ``eps``, added to :math:`\sqrt{v}` before the bias correction.

    Notes
    -----
    Matches ``torch.optim.RAdam(lr=eta, betas=beta, eps=epsilon)``.  The seed's
    :class:`~optimisers.RAdam` rectifies from :math:`\rho_t > 4` and adds epsilon after
    the bias correction (:math:`\sqrt{v/(1-\beta_2^t)} + \epsilon`).  Operation order as
    torch's: ``(((m/bc1) * eta) * ((1/(sqrt(v) + eps)) * bc2 ** 0.5)) * r``.  State:
    ``TorchRAdamState(m, v, t)``; a complex parameter is stepped component by component.

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> st, x, steps = opt.setup(opt.TorchRAdam(0.1), np.zeros(1)), np.zeros(1), []
    >>> for _ in range(6):
    ...     st, new = opt.update(st, x, np.ones(1))
    ...     steps.append(float(x[0] - new[0]))
    ...     x = new
    >>> np.round(steps, 4)     # warm-up, then rectified from t = 6 (rho_6 = 5.98 > 5)
    array([0.1   , 0.1   , 0.1   , 0.1   , 0.1   , 0.0026])
    """

    eta: Hyperparameter = 1e-3
    beta: HyperPair = (0.9, 0.999)
    epsilon: Hyperparameter = 1e-8

    state_types = (TorchRAdamState,)

    def _compile(self, state: RuleState, prog: Program) -> RuleState:
        # rho_t, r_t and the branch are formed per step by the kernel from t
        prog.add(
            K.TORCH_RADAM,
            {**_moments_hp(self), "omb2": 1 - number(self.beta[1])},
            state.m,
            state.v,
            ctr=state.t,
        )
        return state


@checked
class TorchNAdam(_TorchLike):
    r"""NAdam as ``torch.optim.NAdam`` computes it (Dozat's momentum schedule).

    With :math:`\mu_t = \beta_1 (1 - \tfrac12\, 0.96^{t\,\psi})` (:math:`\psi` the
    momentum decay) and their running product :math:`\Pi_t = \prod_{i \le t} \mu_i`:

    .. math::
        m &\leftarrow m + (1-\beta_1)(g - m), \qquad
        v \leftarrow \beta_2 v + (1-\beta_2)\, g^2 \\
        D &= \sqrt{v / (1-\beta_2^t)} + \epsilon \\
        d &= \frac{\eta (1-\mu_t)}{1-\Pi_t} \frac{g}{D}
           + \frac{\eta\, \mu_{t+1}}{1-\Pi_t\, \mu_{t+1}} \frac{m}{D}

    Parameters
    ----------
    eta, beta : as :class:`TorchAdamax`.
    epsilon : float, default 1e-8
        torch's ``eps``, added to :math:`\sqrt{v/(1-\beta_2^t)}`.
    momentum_decay : float, default 4e-3
        torch's ``momentum_decay`` (:math:`\psi`), >= 0.

    Notes
    -----
    Matches ``torch.optim.NAdam(lr=eta, betas=beta, eps=epsilon,
    momentum_decay=momentum_decay)``.  The seed's :class:`~optimisers.NAdam` uses a
    constant :math:`\beta_1` in place of the schedule :math:`\mu_t` and
    :math:`\beta_2 v` inside the square root.  State: ``TorchNAdamState(m, v, t,
    mu_product)``, ``mu_product`` a float64 array ``[Pi_{t-1}, 0]``: torch's per-parameter
    ``mu_product``, kept in float64 here whatever torch's default dtype, in the kernels'
    two-slot per-step scalar buffer (the second slot unused).  A complex parameter is
    stepped component by component.

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> st = opt.setup(opt.TorchNAdam(0.1), np.zeros(1))
    >>> st, x = opt.update(st, np.zeros(1), np.ones(1))
    >>> float(x[0]) < 0, st.state.mu_product.round(6)
    (True, array([0.450073, 0.      ]))
    """

    eta: Hyperparameter = 2e-3
    beta: HyperPair = (0.9, 0.999)
    epsilon: Hyperparameter = 1e-8
    momentum_decay: Hyperparameter = 4e-3

    def _check(self) -> dict[str, Any]:
        return {
            **super()._check(),
            "momentum_decay": nonneg(self, "momentum_decay", self.momentum_decay),
        }

    state_types = (TorchNAdamState,)

    def init(self, x: Array) -> TorchNAdamState:
        return TorchNAdamState(zeros(x), zeros(x), _step_counter(), np.array([1.0, 0.0]))

    def _compile(self, state: RuleState, prog: Program) -> RuleState:
        # mu_t, mu_{t+1}, the product and both coefficients are formed per step by the
        # kernel; the product is stored back after the step
        prog.add(
            K.TORCH_NADAM,
            {
                **_moments_hp(self),
                "omb2": 1 - number(self.beta[1]),
                "momentum_decay": number(self.momentum_decay),
            },
            state.m,
            state.v,
            sc=state.mu_product,
            ctr=state.t,
        )
        return state
