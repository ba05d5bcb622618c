"""destructure: all trainable parameters as one flat vector, and the way back."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._functor import children, fmap, rebuild, trainable_keys
from ._tree import isnumeric, trainables
from ._types import Array, Model

__all__ = ["destructure", "Restructure"]


def destructure(model: Model) -> tuple[Array, Restructure]:
    """Copy every trainable array of ``model`` into one flat vector.

    Returns ``(flat, re)``: ``flat`` is a 1-D array (C-order flattening of each array,
    each distinct array once, depth first), and ``re(v)`` rebuilds the model with the
    parameters taken from a vector ``v`` of the same length.

    Dtypes are promoted when flattening (float32 and float64 give float64; real and complex
    give complex) and restored when rebuilding (a float32 slot gets float32 back, a real slot
    takes the real part).  A model without parameters gives an empty boolean vector, which
    promotes nothing.  Tied arrays are stored once and rebuilt as one array at every place.

    Parameters
    ----------
    model : nested containers and arrays
        The model; its containers are copied into ``re``, so changing them later does not
        change what ``re`` rebuilds.

    Returns
    -------
    flat : numpy.ndarray
        A new 1-D array of all the trainable parameters (a copy: writing into it does not
        change the model).
    re : Restructure
        Rebuilds the model from a vector like ``flat``.

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> v, re = opt.destructure({"x": np.array([1.0, 2.0]), "y": (np.sin, np.array([3.0 + 4.0j]))})
    >>> v
    array([1.+0.j, 2.+0.j, 3.+4.j])
    >>> m = re(np.array([3, 5, 7 + 11j]))
    >>> m["x"], m["y"][1]
    (array([3., 5.]), array([7.+11.j]))
    """
    offsets, pieces, total = {}, [], 0
    for x in trainables(model):
        offsets[id(x)] = total
        pieces.append(x.reshape(-1, order="C") if x.flags.c_contiguous else x.ravel(order="C"))
        total += x.size
    if pieces:
        flat = np.concatenate(pieces, dtype=np.result_type(*pieces))
    else:
        flat = np.zeros(0, dtype=bool)
    return flat, Restructure(_skeleton(model), offsets, total)


def _skeleton(model: Model) -> Model:
    """The model with every container rebuilt (the arrays and other leaves kept), so that
    changing the user's containers later (``model["w"] = ...``) cannot break ``re``."""
    return fmap(lambda leaf: leaf, model)


class Restructure:
    """Rebuilds a model from a flat vector; what :func:`destructure` returns.

    ``re(v)`` rebuilds, ``re(x, v)`` calls the rebuilt model on ``x``, ``len(re)`` is the
    number of parameters.  Non-trainable parts are carried over unchanged.  A ``Restructure``
    can be copied and pickled.

    Parameters
    ----------
    model : nested containers and arrays
        The model's skeleton (its containers copied, its arrays kept as templates of shape
        and dtype).
    offsets : dict
        ``id(array)`` to the array's offset in the flat vector.
    length : int
        The number of parameters.

    Attributes
    ----------
    model, offsets, length
        As given.

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> _, re = opt.destructure([np.zeros(2), np.zeros(1)])
    >>> re, len(re), re(np.arange(3.0))
    (Restructure(list, ..., 3), 3, [array([0., 1.]), array([2.])])
    """

    def __init__(self, model: Model, offsets: dict[int, int], length: int) -> None:
        self.model = model
        self.offsets = offsets
        self.length = length

    def __len__(self) -> int:
        return self.length

    # offsets are keyed by the arrays' ids, which a copy or a pickle changes: store them in
    # traversal order and key them again by the ids of the restored model's arrays
    def __getstate__(self) -> dict[str, Any]:
        order = trainables(self.model)
        return {
            "model": self.model,
            "length": self.length,
            "offsets": [self.offsets[id(x)] for x in order],
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.model = state["model"]
        self.length = state["length"]
        order = trainables(self.model)
        self.offsets = {id(x): o for x, o in zip(order, state["offsets"])}

    def __repr__(self) -> str:
        return f"Restructure({type(self.model).__name__}, ..., {self.length})"

    def __call__(self, *args: Any) -> Any:
        """Rebuild the model from a vector: ``re(v)``; or call it on ``x``: ``re(x, v)``.

        Parameters
        ----------
        *args : (v,) or (x, v)
            ``v`` (array_like) is a 1-D vector of ``len(re)`` parameters, in the order of
            :func:`destructure`; ``x`` is an input for the rebuilt model, which must then be
            callable.

        Returns
        -------
        object
            A new model of the same structure with new arrays (each of its slot's dtype and
            shape), or with ``x`` given, the rebuilt model's result ``model(x)``.

        Raises
        ------
        ValueError
            If ``v`` is not a vector of ``len(re)`` elements.
        TypeError
            If called with other than one or two arguments.
        """
        if len(args) == 2:
            x, v = args
            return self(v)(x)
        if len(args) != 1:
            raise TypeError("re(v) rebuilds the model; re(x, v) calls the rebuilt model on x")
        v = np.asarray(args[0])
        if v.ndim != 1 or v.shape[0] != self.length:
            raise ValueError(
                f"Restructure expected a vector of length {self.length}, got shape {v.shape}"
            )
        memo: dict[int, Any] = {}

        def project(x: Array) -> Array:
            o = self.offsets[id(x)]
            piece = v[o : o + x.size]
            if np.iscomplexobj(piece) and x.dtype.kind != "c":
                piece = piece.real
            return np.array(piece, dtype=x.dtype).reshape(x.shape)

        def walk(x: Any) -> Any:
            r = memo.get(id(x))
            if r is not None:
                return r
            if isnumeric(x):
                r = memo[id(x)] = project(x)
                return r
            kv = children(x)
            if kv is None:
                return x
            keys, values = kv
            allowed = trainable_keys(x, keys)
            new = [walk(c) if allowed is None or k in allowed else c for k, c in zip(keys, values)]
            r = memo[id(x)] = rebuild(x, keys, new)
            return r

        return walk(self.model)
