"""The p-norms of ``ClipNorm``: kernel calls and the error of a non-finite norm.

Below both the rules and the engine: ``ClipNorm`` compiles a norm stage, and the engine
(the batch's prologues, a ``Program``'s precheck and barrier) computes and reports norms.
"""

from __future__ import annotations

import math

from ._native import kernels as K

__all__ = ["grad_norm", "nonfinite_norm_error", "clipnorm_p"]

# the kernels' own loop for the common p, the general power loop for every other p
_NORM_KINDS = {2.0: K.NORM_SQUARES, 1.0: K.NORM_ABS, 0.0: K.NORM_COUNT,
               math.inf: K.NORM_MAX, -math.inf: K.NORM_MIN}


def grad_norm(g, p):
    """The p-norm of a C-contiguous float32/float64 (or complex) array, accumulated in float64
    in an order fixed by the data (blocks of 8192 elements, 8 lanes each), never by the
    thread count; 0 for an empty array (conventions §7, also for p < 0).

    >>> import numpy as np
    >>> grad_norm(np.array([3.0, -4.0]), 2.0), grad_norm(np.array([3.0, -4.0]), 1.0)
    (5.0, 7.0)
    """
    return K.p_norm(g, _NORM_KINDS.get(p, K.NORM_POWER), p)


def nonfinite_norm_error(where, p, n):
    """The error of a ClipNorm(throw=True) that met the non-finite norm ``n``."""
    return FloatingPointError(f"ClipNorm: the gradient at {where} has {p:g}-norm {n} "
                              f"(throw=False lets it through)")


def clipnorm_p(stage):
    """The ``p`` of a ClipNorm kernel stage ``(kind, hp, buffers, sc, ctr)``, whose
    hyper-parameters are named (the kernel's ClipNormHP)."""
    return stage[1]["p"]
