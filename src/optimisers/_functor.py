"""Which objects are containers, what their children are, and how to rebuild them.

``dict``, ``list``, ``tuple`` and namedtuples are containers by default.  Any other class
becomes one when registered with :func:`functor`; every other object is a leaf of the tree.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from typing import Any, TypeVar, overload

_T = TypeVar("_T", bound=type)

__all__ = ["functor", "children", "trainable", "rebuild", "is_namedtuple", "fmap"]


class _Spec:
    __slots__ = ("fields", "trainable")

    def __init__(self, fields: tuple[str, ...] | None, trainable: tuple[str, ...] | None) -> None:
        self.fields = fields  # tuple of names, or None: every attribute
        self.trainable = trainable  # tuple of names, or None: every field


_REGISTRY: dict[type, _Spec] = {}


@overload
def functor(
    cls: _T, *, fields: Iterable[str] | None = None, trainable: Iterable[str] | None = None
) -> _T: ...
@overload
def functor(
    cls: None = None, *, fields: Iterable[str] | None = None, trainable: Iterable[str] | None = None
) -> Callable[[_T], _T]: ...
def functor(
    cls: _T | None = None,
    *,
    fields: Iterable[str] | None = None,
    trainable: Iterable[str] | None = None,
) -> _T | Callable[[_T], _T]:
    """Register a class as a container whose fields are the children of the tree.

    Use as a decorator, ``@functor``, ``@functor(fields=("w", "b"), trainable=("w",))``, or
    call ``functor(SomeClass, ...)`` for a class you do not own.

    Parameters
    ----------
    cls : type
        The class to register.
    fields : sequence of str, optional
        The attributes that are children, in this order.  By default: the dataclass fields,
        else the ``__slots__``, else the instance's attributes (``vars``) in their order.
    trainable : sequence of str, optional
        The subset of ``fields`` that optimisers train; the others are carried along
        unchanged (``None`` in the state tree).  By default every field.

    Returns
    -------
    type or callable
        The class itself, so that ``functor`` works as a decorator; called with keywords
        only (``@functor(fields=...)``), the decorator that registers the class.

    Raises
    ------
    TypeError
        If what is registered is not a class.
    ValueError
        If ``trainable`` names a field that is not in ``fields``.

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> @opt.functor(trainable=("w",))
    ... class Affine:
    ...     def __init__(self, w, b):
    ...         self.w, self.b = w, b
    >>> st = opt.setup(opt.Descent(), Affine(np.ones(2), np.zeros(2)))
    >>> sorted(st), st["b"] is None
    (['b', 'w'], True)
    """

    def register(c: _T) -> _T:
        if not isinstance(c, type):
            raise TypeError(f"functor registers a class, got {c!r}")
        f = None if fields is None else tuple(fields)
        t = None if trainable is None else tuple(trainable)
        if f is not None and t is not None and not set(t) <= set(f):
            raise ValueError(f"trainable={t} must be a subset of fields={f}")
        _REGISTRY[c] = _Spec(f, t)
        return c

    if cls is None:
        return register
    return register(cls)


def is_namedtuple(x: object) -> bool:
    return isinstance(x, tuple) and hasattr(type(x), "_fields")


def _spec(t: type) -> _Spec | None:
    spec = _REGISTRY.get(t)
    if spec is None:
        for base in t.__mro__[1:]:
            spec = _REGISTRY.get(base)
            if spec is not None:
                break
    return spec


# type -> its dataclass field names (they depend on the class only; looked up every step)
_DATACLASS_FIELDS: dict[type, tuple[str, ...]] = {}


def _default_fields(x: Any) -> tuple[str, ...]:
    t = type(x)
    names = _DATACLASS_FIELDS.get(t)
    if names is not None:
        return names
    if dataclasses.is_dataclass(x):
        names = _DATACLASS_FIELDS[t] = tuple(f.name for f in dataclasses.fields(x))
        return names
    slots: list[str] = []
    for klass in type(x).__mro__:
        s = klass.__dict__.get("__slots__", ())
        slots.extend([s] if isinstance(s, str) else s)
    slots = [s for s in slots if s not in ("__dict__", "__weakref__") and hasattr(x, s)]
    if slots:
        return tuple(slots)
    return tuple(vars(x))


def children(x: Any) -> tuple[tuple[Hashable, ...], tuple[Any, ...]] | None:
    """The ``(keys, values)`` of a container, or ``None`` when ``x`` is a leaf.

    Keys are dict keys, 0-based positions for lists and tuples, and field names for
    namedtuples and registered classes."""
    t = type(x)
    if t is dict or isinstance(x, dict):
        return tuple(x.keys()), tuple(x.values())
    if t is list or t is tuple:
        return tuple(range(len(x))), tuple(x)
    if isinstance(x, tuple):
        if is_namedtuple(x):
            return tuple(t._fields), tuple(x)
        return tuple(range(len(x))), tuple(x)
    spec = _spec(t)
    if spec is None:
        return None
    names = spec.fields if spec.fields is not None else _default_fields(x)
    return names, tuple([getattr(x, f) for f in names])


def trainable(x: Any) -> dict[Hashable, Any]:
    """The trainable children of a container, as a ``dict`` from key to child.

    For a registered class these are the ``trainable=`` fields given to :func:`functor`
    (every field by default); for the built-in containers, every child.  A leaf has none.

    Parameters
    ----------
    x : object
        A container (dict, list, tuple, namedtuple, registered class) or a leaf.

    Returns
    -------
    dict
        Key (dict key, 0-based position or field name) to child, in the container's order;
        empty for a leaf.

    Examples
    --------
    >>> import optimisers as opt
    >>> opt.trainable({"a": 1, "b": 2})
    {'a': 1, 'b': 2}
    """
    kv = children(x)
    if kv is None:
        return {}
    keys, values = kv
    allowed = trainable_keys(x, keys)
    return {k: v for k, v in zip(keys, values) if allowed is None or k in allowed}


def trainable_keys(x: Any, keys: Sequence[Hashable]) -> frozenset[Hashable] | None:
    """The set of trainable keys of a container, or ``None`` when all are trainable."""
    t = type(x)
    if t is dict or t is list or t is tuple:
        return None
    spec = _spec(t)
    if spec is None or spec.trainable is None:
        return None
    return frozenset(spec.trainable)


def rebuild(x: Any, keys: Sequence[Hashable], values: Sequence[Any]) -> Any:
    """A container like ``x`` whose children are ``values``.

    Registered classes are shallow-copied without running their code (no ``__init__``,
    ``__setattr__`` or ``__copy__``) and the fields set with ``object.__setattr__``, so
    frozen dataclasses and immutable ``__slots__`` classes rebuild too.  Dict subclasses
    keep their extras (a ``defaultdict`` its ``default_factory``)."""
    t = type(x)
    if t is dict:
        return dict(zip(keys, values))
    if t is list:
        return list(values)
    if t is tuple:
        return tuple(values)
    if isinstance(x, dict):
        # a copy keeps what the subclass adds (defaultdict's default_factory, ...)
        new = copy.copy(x)
        new.clear()
        new.update(zip(keys, values))
        return new
    if isinstance(x, tuple):
        if is_namedtuple(x):
            return t._make(values)
        return t(values)
    new = _shallow_copy(x)
    for k, v in zip(keys, values):
        object.__setattr__(new, k, v)  # type: ignore[arg-type]  # (field names: str)
    return new


def _slot_names(t: type) -> Iterator[str]:
    for klass in t.__mro__:
        s = klass.__dict__.get("__slots__", ())
        for name in [s] if isinstance(s, str) else s:
            if name in ("__dict__", "__weakref__"):
                continue
            if name.startswith("__") and not name.endswith("__"):
                name = f"_{klass.__name__.lstrip('_')}{name}"  # name mangling
            yield name


def _shallow_copy(x: Any) -> Any:
    """A shallow copy of a plain Python object that runs none of its code: no
    ``__init__``, ``__setattr__``, ``__copy__`` or ``__setstate__`` (which may refuse, as
    in immutable ``__slots__`` classes).  Other objects go through ``copy.copy``."""
    t = type(x)
    if t.__new__ is not object.__new__:  # type: ignore[comparison-overlap]
        return copy.copy(x)
    new = object.__new__(t)
    d = getattr(x, "__dict__", None)
    if d is not None:
        object.__getattribute__(new, "__dict__").update(d)
    for name in _slot_names(t):
        try:
            v = object.__getattribute__(x, name)
        except AttributeError:
            continue  # an unset slot stays unset
        object.__setattr__(new, name, v)
    return new


def fmap(
    f: Callable[[Any], Any],
    x: Any,
    *,
    keep_unchanged: bool = False,
    memo: dict[int, Any] | None = None,
) -> Any:
    """Apply ``f`` to every leaf of ``x`` and rebuild the containers around the results.

    A node met twice (tied arrays, a shared container) is mapped once and the result is
    placed at every occurrence, so ties survive.  With ``keep_unchanged``, a container
    whose children all come back as the same objects is returned itself, not rebuilt.
    """
    if memo is None:
        memo = {}
    hit = memo.get(id(x))
    if hit is not None:
        return hit[1]
    kv = children(x)
    if kv is None:
        r = f(x)
    else:
        keys, values = kv
        new = [fmap(f, v, keep_unchanged=keep_unchanged, memo=memo) for v in values]
        if keep_unchanged and all(a is b for a, b in zip(new, values)):
            r = x
        else:
            r = rebuild(x, keys, new)
    memo[id(x)] = (x, r)  # x is kept alive so that its id stays its own
    return r
