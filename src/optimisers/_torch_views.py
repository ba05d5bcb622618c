"""Zero-copy numpy views of torch tensors, and the checks that come with them, for
:mod:`optimisers.torch`.

A dense CPU tensor and ``tensor.detach().numpy()`` share memory, so the engine writes the
tensor when it writes the view.  bfloat16 has no numpy dtype of its own: such a tensor is
viewed as int16 and the numpy array re-labelled as ml_dtypes' bfloat16 (still no copy),
which the kernels compute in float32 like float16.

Imported only by :mod:`optimisers.torch` (it imports torch); ``import optimisers`` never
imports this module.

>>> import torch
>>> t = torch.ones(3, dtype=torch.float32)
>>> v = tensor_view(t, "w")
>>> v[0] = 5.0
>>> float(t[0])
5.0
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

_ml_dtypes: Any
try:  # makes numpy's bfloat16; needed only for bfloat16 tensors
    import ml_dtypes as _ml_dtypes
except ImportError:  # pragma: no cover - ml_dtypes is a test extra
    _ml_dtypes = None

__all__ = [
    "array_tensor",
    "check_parameter",
    "flatten_state",
    "gradient_views",
    "readable",
    "state_misfit",
    "tensor_view",
    "unflatten_state",
]

_FLOATS = (
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
    torch.complex64,
    torch.complex128,
)


def _check_dense_cpu(t: Any, where: str, what: str, hint: str) -> None:
    """``TypeError``/``ValueError`` naming ``where`` unless ``t`` is a dense CPU tensor."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{where}: the {what} is a {type(t).__name__}, not a torch.Tensor")
    if t.device.type != "cpu":
        raise ValueError(
            f"{where}: the {what} is on {t.device}; optimisers.torch steps CPU "
            f"tensors only (move the model with .cpu(), or use torch.optim)"
        )
    if t.layout != torch.strided:
        raise ValueError(
            f"{where}: the {what} is {t.layout}; only dense (strided) tensors "
            f"have a numpy view{hint}"
        )


def check_parameter(p: torch.Tensor, where: str) -> None:
    """``TypeError``/``ValueError`` naming ``where`` unless ``p`` can be trained through a
    numpy view: a dense, contiguous CPU tensor of a floating (or complex) dtype."""
    _check_dense_cpu(p, where, "parameter", "")
    if p.dtype not in _FLOATS:
        raise TypeError(
            f"{where}: parameters of dtype {p.dtype} cannot be trained (float16, "
            f"bfloat16, float32, float64, complex64, complex128)"
        )
    if not p.is_contiguous():
        raise ValueError(
            f"{where}: the parameter is not contiguous (stride {p.stride()}); "
            f"the optimiser writes it in place through one flat view"
        )


def tensor_view(t: torch.Tensor, where: str) -> np.ndarray:
    """The numpy array sharing ``t``'s memory (detached; bfloat16 as ml_dtypes' bfloat16)."""
    t = t.detach()
    if t.dtype == torch.bfloat16:
        if _ml_dtypes is None:
            raise TypeError(
                f"{where}: a bfloat16 tensor is viewed from numpy as ml_dtypes' "
                f"bfloat16: pip install ml_dtypes"
            )
        return t.view(torch.int16).numpy().view(_ml_dtypes.bfloat16)
    return t.numpy()


def array_tensor(a: np.ndarray) -> torch.Tensor:
    """A tensor sharing the memory of the numpy array ``a`` (bfloat16 through int16)."""
    if a.dtype.itemsize == 2 and a.dtype.name == "bfloat16":
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def _gradient_view(p: torch.Tensor, g: torch.Tensor, where: str) -> np.ndarray:
    """The view of one gradient, or an error naming ``where`` and what is wrong with it."""
    _check_dense_cpu(
        g,
        where,
        "gradient",
        " (a sparse gradient, from nn.Embedding("
        "sparse=True) say: densify it, p.grad = p.grad.to_dense(), or use "
        "torch.optim.SparseAdam)",
    )
    if g.shape != p.shape:
        raise ValueError(
            f"{where}: the gradient has shape {tuple(g.shape)}, the parameter {tuple(p.shape)}"
        )
    if g.is_complex() and not p.is_complex():
        raise TypeError(f"{where}: a complex gradient ({g.dtype}) for a real parameter ({p.dtype})")
    if g.numel() and g.data_ptr() == 0:
        raise ValueError(
            f"{where}: the gradient has no memory (its storage was freed or resized to 0)"
        )
    if not g.is_contiguous():
        g = g.contiguous()  # rare (a gradient set by hand): one copy, read only
    return tensor_view(g, where)


_NUMPY = torch.Tensor.numpy
_DATA_PTR = torch.Tensor.data_ptr
_GRAD = operator.attrgetter("grad")


def gradient_views(
    params: list[torch.Tensor],
    names: list[str],
    where: Callable[[int], str],
    out: dict[str, np.ndarray],
) -> None:
    """Fill ``out`` with ``{name: view of p.grad}`` for the parameters that have one.

    The common case (every gradient there, dense CPU float32/float64/float16) is one
    ``.numpy()`` a tensor mapped in C, no Python loop; anything else goes tensor by tensor
    through :func:`_gradient_view`, which views it (bfloat16, a gradient that requires
    grad) or raises naming the parameter.  Nothing is written.
    """
    grads = list(map(_GRAD, params))
    if not any(g is None for g in grads):
        try:
            # a gradient at address 0 is empty or has no memory: the checks below say which
            if 0 not in map(_DATA_PTR, grads):
                out.update(zip(names, map(_NUMPY, grads)))
                return
        except (TypeError, RuntimeError):  # not plainly viewable: say which and why
            out.clear()
    for i, (p, g) in enumerate(zip(params, grads)):
        if g is not None:
            out[names[i]] = _gradient_view(p, g, where(i))


# ----------------------------------------------------------------------------------------
# A Leaf's state as a flat dict of tensors and plain values (the state_dict format), and
# back: the arrays are copied into the state that exists, so the views stay the memory.


def flatten_state(
    state: Any, prefix: str = "", out: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``{dotted name: value}`` for a Leaf's state: arrays become tensors (copies), named
    fields keep their names, tuple positions their indices, ``None`` and numbers stay.

    >>> import optimisers as opt
    >>> st = opt.init(opt.Adam(), np.zeros(2))
    >>> sorted(flatten_state(st))
    ['beta_t', 'm', 'v']
    """
    out = {} if out is None else out
    if isinstance(state, np.ndarray):
        out[prefix] = array_tensor(state).clone()
    elif isinstance(state, tuple):
        fields = getattr(state, "_fields", None)
        for i, s in enumerate(state):
            key = fields[i] if fields else str(i)
            flatten_state(s, f"{prefix}.{key}" if prefix else key, out)
    elif state is None or isinstance(state, (bool, int, float, str)):
        out[prefix] = state
    elif isinstance(state, np.generic):
        out[prefix] = state.item()
    else:
        raise TypeError(
            f"state_dict: a state holding a {type(state).__name__} at "
            f"{prefix or 'its top'} cannot be written as tensors and plain values"
        )
    return out


def state_misfit(mine: dict[str, Any], saved: Any) -> str | None:
    """Why the flattened ``saved`` state cannot be loaded over ``mine``, or ``None``."""
    if not isinstance(saved, dict):
        return f"its state is a {type(saved).__name__}, not a dict"
    if set(saved) != set(mine):
        return f"it holds {sorted(saved)}, this rule keeps {sorted(mine)}"
    for k, v in mine.items():
        s = saved[k]
        if isinstance(v, torch.Tensor):
            if not isinstance(s, torch.Tensor):
                return f"{k!r} is a {type(s).__name__}, not a tensor"
            if s.shape != v.shape or s.dtype != v.dtype:
                return (
                    f"{k!r} is {s.dtype} of shape {tuple(s.shape)}, this state "
                    f"{v.dtype} of shape {tuple(v.shape)}"
                )
        elif (
            isinstance(s, torch.Tensor)
            or (s is None) != (v is None)
            or (isinstance(v, _NUMBERS) and not isinstance(s, _NUMBERS))
        ):
            return f"{k!r} is {s!r}, this state holds {v!r}"
    return None


_NUMBERS = (bool, int, float, complex)


def readable(t: torch.Tensor) -> np.ndarray:
    """The values of the saved state tensor ``t`` as a numpy array that
    :func:`unflatten_state` copies from (bfloat16 as int16): detached, dense, on the CPU,
    with no conj or neg bit; a view when it already is one.  Raises what torch raises for
    a tensor that cannot be read so (``load_state_dict`` calls it before writing)."""
    t = t.detach()
    if t.layout != torch.strided:
        t = t.to_dense()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.resolve_conj().resolve_neg()
    return (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy()


def unflatten_state(state: Any, saved: dict[str, Any], prefix: str = "") -> Any:
    """``state`` with the values of ``saved`` (checked by :func:`state_misfit`, its tensors
    made numpy arrays by :func:`readable`): arrays are written in place (the same memory),
    tuples rebuilt around them."""
    if isinstance(state, np.ndarray):
        np.copyto(state.view(np.int16) if state.dtype.name == "bfloat16" else state, saved[prefix])
        return state
    if isinstance(state, tuple):
        fields = getattr(state, "_fields", None)
        parts = [
            unflatten_state(s, saved, f"{prefix}.{k}" if prefix else k)
            for s, k in zip(state, fields or map(str, range(len(state))))
        ]
        return type(state)(*parts) if fields else tuple(parts)
    if isinstance(state, np.generic):
        return type(state)(saved[prefix])
    return saved[prefix]
