"""Gradient transformations, usually composed in an OptimiserChain: weight decay, sign
decay, element clipping and norm clipping."""

from __future__ import annotations

import math

from ._native import kernels as K
from ._norms import _NORM_KINDS, grad_norm, nonfinite_norm_error
from ._rule import Rule, checked, flag, nonneg, real

__all__ = ["WeightDecay", "SignDecay", "ClipGrad", "ClipNorm"]


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
    lambda_: float = 5e-4

    def _check(self):
        return {"lambda_": nonneg(self, "lambda_", self.lambda_)}

    def _compile(self, state, prog):
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
    >>> st, x = opt.update(opt.setup(rule, np.array([2.0, -2.0])), np.array([2.0, -2.0]), np.zeros(2))
    >>> x
    array([ 1.95, -1.95])
    """
    lambda_: float = 1e-3

    def _check(self):
        return {"lambda_": nonneg(self, "lambda_", self.lambda_)}

    def _compile(self, state, prog):
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
    delta: float = 10.0

    def _check(self):
        return {"delta": nonneg(self, "delta", self.delta)}

    def _compile(self, state, prog):
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
    >>> st, x = opt.update(opt.setup(opt.ClipNorm(1.0), np.zeros(2)), np.zeros(2), np.array([3.0, 4.0]))
    >>> x
    array([-0.6, -0.8])
    """
    omega: float = 10.0
    p: float = 2.0
    throw: bool = True

    def _check(self):
        return {"omega": nonneg(self, "omega", self.omega),
                "p": real(self, "p", self.p, what="any real number or +-inf, not NaN"),
                "throw": flag(self, "throw", self.throw)}

    def _fails_late(self, leading):
        # after other stages its norm is that of their output, known only once they ran
        return self.throw and not leading

    def _precheck(self, prog):
        # Only for parameters the batch engine does not take (see _engine): the norm
        # of a leading ClipNorm is checked for every leaf before any leaf is written.
        if self.throw:
            n = prog.norm(self.p)
            if n is not None and not math.isfinite(n):
                raise nonfinite_norm_error(prog.where(), self.p, n)

    def _compile(self, state, prog):
        # The norm is that of the step so far: when rules before this one are pending, it
        # must be materialised first (a barrier; None: an AccumGrad before is not due).
        if prog.stages and prog.current() is None:
            return state
        # The kernel stage computes the norm and the scale min(omega/|g|_p, 1) in float64
        # (conventions §7: norm 0 -> 1, inf -> 0, NaN -> NaN), rounds the scale to the
        # dtype, and folds it into the next stage's read of g.
        # A norm the engine has already computed (the precheck of a leading ClipNorm) is
        # passed on, so that the kernel does not read g again.
        known = prog.known_norm(self.p)
        prog.add(K.CLIPNORM, {"omega": self.omega, "p": self.p,
                              "how": _NORM_KINDS.get(self.p, K.NORM_POWER),
                              "throw": float(self.throw),
                              "norm": 0.0 if known is None else known,
                              "known": float(known is not None)})
        return state
