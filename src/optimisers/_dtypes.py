"""Low-precision dtypes: float16, and bfloat16 where ml_dtypes defines it.

Parameters of either are computed in float32 inside the kernels and rounded once on store.
Their state arrays are float32 by default (``setup(..., low_precision_state=True)`` keeps
them in the parameter's dtype, for memory).  bfloat16 is known by its name and size, so
ml_dtypes is never imported here: it is needed only by whoever makes a bfloat16 array.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["is_bfloat16", "is_low_precision", "is_float", "lower_state"]

_F16 = np.dtype(np.float16)
_F32 = np.dtype(np.float32)


def is_bfloat16(dtype: np.dtype[Any]) -> bool:
    """Whether ``dtype`` is bfloat16 (ml_dtypes' dtype, known by name and size)."""
    return dtype.itemsize == 2 and dtype.name == "bfloat16"


def is_low_precision(dtype: np.dtype[Any]) -> bool:
    """Whether parameters of ``dtype`` are stored in 16 bits and computed in float32.

    >>> import numpy as np
    >>> is_low_precision(np.dtype(np.float16)), is_low_precision(np.dtype(np.float32))
    (True, False)
    """
    return dtype == _F16 or is_bfloat16(dtype)


def is_float(dtype: np.dtype[Any]) -> bool:
    """A real or complex floating dtype (numpy's kinds ``f`` and ``c``, or bfloat16)."""
    return dtype.kind in "fc" or is_bfloat16(dtype)


def lower_state(state: Any, x: np.ndarray[Any, Any]) -> Any:
    """``state`` with every float32 array of ``x``'s shape rounded to ``x``'s 16-bit dtype
    (new arrays; tuples and namedtuples rebuilt, anything else kept): the state a built-in
    rule keeps with ``low_precision_state=True``.

    >>> import numpy as np
    >>> x = np.ones(2, np.float16)
    >>> lower_state((np.zeros(2, np.float32), np.ones(2)), x)
    (array([0., 0.], dtype=float16), array([1., 1.]))
    """
    if isinstance(state, np.ndarray):
        if state.dtype == _F32 and state.shape == x.shape:
            return state.astype(x.dtype)
        return state
    if isinstance(state, tuple):
        parts = [lower_state(s, x) for s in state]
        return type(state)(*parts) if hasattr(state, "_fields") else tuple(parts)
    return state
