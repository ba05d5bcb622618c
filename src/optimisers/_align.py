"""How a state tree and a gradient line up with a model, one container at a time: the
children of each aligned with the model's children, or an error naming the key path
(for the update walk, ``_tree.collect``)."""

from __future__ import annotations

import numbers
from collections.abc import Collection, Mapping
from typing import Any

import numpy as np

from ._functor import is_namedtuple
from ._keypath import linked_keypath

__all__ = ["state_children", "grad_children"]


def state_children(t: Any, m: Any, keys: Collection[Any], link: tuple[Any, ...]) -> Any:
    """The state tree's children at the container ``m`` (children ``keys``), aligned with
    them; an error naming the key path where the two differ.

    >>> state_children({"b": None, "a": 1}, {"a": 0, "b": 0}, ("a", "b"), ((), "x"))
    [1, None]
    """
    if isinstance(t, dict):
        if len(t) == len(keys):
            try:
                return [t[k] for k in keys]
            except KeyError:
                pass
        raise ValueError(
            f"the state tree does not match the model at {linked_keypath(link)}: "
            f"state keys {list(t)}, model keys {list(keys)}"
        )
    if isinstance(t, (list, tuple)):
        if len(t) != len(keys):
            raise ValueError(
                f"the state tree does not match the model at {linked_keypath(link)}: "
                f"{len(t)} state entries, {len(keys)} model entries"
            )
        return t
    raise TypeError(
        f"the state tree has {type(t).__name__} at {linked_keypath(link)} where the "
        f"model has a container ({type(m).__name__})"
    )


def grad_children(m: Any, g: Any, keys: Collection[Any], link: tuple[Any, ...]) -> Any:
    """The gradient's children at the container ``m``, aligned with the model's ``keys``
    (``None`` where the gradient has nothing); an error naming the key path when the
    gradient's structure does not fit.

    >>> grad_children({"a": 0, "b": 0}, {"b": 2}, ("a", "b"), ())
    [None, 2]
    """
    if type(g) is type(m) and isinstance(m, (list, tuple)):
        # the common case: the same list, tuple or namedtuple type (same fields)
        if len(g) != len(m):
            raise ValueError(
                f"the gradient at {linked_keypath(link)} has length {len(g)}, the "
                f"model's {type(m).__name__} has length {len(m)}"
            )
        return g
    if isinstance(m, dict):
        if not isinstance(g, Mapping):
            raise TypeError(
                f"the gradient at {linked_keypath(link)} is a {type(g).__name__}, the "
                f"model has a {type(m).__name__} there"
            )
        if not g.keys() <= m.keys():
            extra = [k for k in g if k not in m]
            raise ValueError(
                f"the gradient at {linked_keypath(link)} has key(s) {extra} that the "
                f"model does not have (model keys: {list(keys)})"
            )
        return [g.get(k) for k in keys]
    if isinstance(m, (list, tuple)) and not is_namedtuple(m):
        if not isinstance(g, (list, tuple)):
            raise TypeError(
                f"the gradient at {linked_keypath(link)} is a {type(g).__name__}, the "
                f"model has a {type(m).__name__} of length {len(m)} there"
            )
        if len(g) != len(m):
            raise ValueError(
                f"the gradient at {linked_keypath(link)} has length {len(g)}, the "
                f"model's {type(m).__name__} has length {len(m)}"
            )
        return g
    # namedtuples and registered objects: by field name
    if type(g) is dict or isinstance(g, Mapping):
        extra = [k for k in g if k not in keys]
        if extra and is_namedtuple(m):
            raise ValueError(
                f"the gradient at {linked_keypath(link)} has field(s) {extra} "
                f"that the model's {type(m).__name__} does not have"
            )
        return [g.get(k) for k in keys]
    if is_namedtuple(m) and isinstance(g, tuple) and not is_namedtuple(g):
        if len(g) != len(m):
            raise ValueError(
                f"the gradient at {linked_keypath(link)} has length {len(g)}, the "
                f"model's {type(m).__name__} has length {len(m)}"
            )
        return g
    if is_namedtuple(m) and is_namedtuple(g):
        extra = [k for k in g._fields if k not in keys]
        if extra:
            raise ValueError(
                f"the gradient at {linked_keypath(link)} has field(s) {extra} "
                f"that the model's {type(m).__name__} does not have"
            )
    if isinstance(g, (np.ndarray, numbers.Number, str, list)) or (
        isinstance(g, tuple) and not is_namedtuple(g)
    ):
        raise TypeError(
            f"the gradient at {linked_keypath(link)} is a {type(g).__name__}, the "
            f"model has a {type(m).__name__} there (give a dict of its fields, or "
            f"an object with them)"
        )
    return [getattr(g, k, None) for k in keys]
