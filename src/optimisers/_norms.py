"""The p-norms of ``ClipNorm``: kernel calls and the error of a non-finite norm.

Below both the rules and the engine: ``ClipNorm`` compiles a norm stage, and the engine
(the batch's prologues, a ``Program``'s precheck and barrier) computes and reports norms.
"""

from __future__ import annotations

import math
from typing import Any

from ._native import kernels as K

__all__ = [
    "grad_norm",
    "nonfinite_norm_error",
    "clipnorm_p",
    "norm_kind",
    "combine_partials",
    "clip_scale",
]

# the kernels' own loop for the common p, the general power loop for every other p
_NORM_KINDS = {
    2.0: K.NORM_SQUARES,
    1.0: K.NORM_ABS,
    0.0: K.NORM_COUNT,
    math.inf: K.NORM_MAX,
    -math.inf: K.NORM_MIN,
}


def grad_norm(g: Any, p: float) -> float:
    """The p-norm of a C-contiguous float32/float64 (or complex) array, accumulated in float64
    in an order fixed by the data (blocks of 8192 elements, 8 lanes each), never by the
    thread count; 0 for an empty array (conventions §7, also for p < 0).

    >>> import numpy as np
    >>> grad_norm(np.array([3.0, -4.0]), 2.0), grad_norm(np.array([3.0, -4.0]), 1.0)
    (5.0, 7.0)
    """
    return K.p_norm(g, _NORM_KINDS.get(p, K.NORM_POWER), p)


def nonfinite_norm_error(where: object, p: float, n: float) -> FloatingPointError:
    """The error of a ClipNorm(throw=True) that met the non-finite norm ``n``."""
    return FloatingPointError(
        f"ClipNorm: the gradient at {where} has {p:g}-norm {n} (throw=False lets it through)"
    )


def clipnorm_p(stage: tuple[Any, ...]) -> float:
    """The ``p`` of a ClipNorm kernel stage ``(kind, hp, buffers, sc, ctr)``, whose
    hyper-parameters are named (the kernel's ClipNormHP)."""
    return stage[1]["p"]


def norm_kind(p: float) -> int:
    """The kernels' ``NormKind`` of ``p``: their own loop for the common p, else the power
    loop."""
    return _NORM_KINDS.get(p, K.NORM_POWER)


def combine_partials(partials: list[Any], p: float, n_elements: int) -> float:
    """The p-norm of many arrays from their raw partials (``K.p_partial`` of each non-empty
    array, in any order): sums are combined exactly rounded (``math.fsum``), so the result
    depends on neither the order of the arrays nor the thread count; max/min with NaN
    winning; ``n_elements`` counts every element (0 gives 0, conventions §7)."""
    how = norm_kind(p)
    if n_elements == 0 or not partials:
        return 0.0
    if how in (K.NORM_MAX, K.NORM_MIN):
        if any(t != t for t in partials):
            return math.nan
        return max(partials) if how == K.NORM_MAX else min(partials)
    try:
        total = math.fsum(partials)
    except OverflowError:  # the exact sum is beyond float64: an infinite norm
        total = math.inf
    # (fsum's ValueError, inf + -inf, cannot occur: every partial is >= 0 or NaN)
    if how == K.NORM_SQUARES:
        return math.sqrt(total) if total == total else total
    if how == K.NORM_POWER:
        return _pow(total, 1.0 / p)
    return total


def _pow(a: float, b: float) -> float:
    """libm's pow (the kernels' ClipNorm finishes with it; numpy's own power may differ in
    the last bit), with C's IEEE results where Python raises: 0 ** negative = inf,
    overflow = inf."""
    try:
        return math.pow(a, b)
    except (OverflowError, ValueError):
        return math.inf


def clip_scale(omega: float, norm: float) -> float:
    """``min(omega / norm, 1)`` in float64 as the kernels' ClipNorm computes it
    (conventions §7: a zero norm gives 1, an infinite one 0, NaN gives NaN)."""
    if norm == 0:
        return 1.0
    if math.isinf(norm):
        return 0.0
    r = omega / norm
    return 1.0 if r > 1.0 else r
