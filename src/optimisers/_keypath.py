"""KeyPath: where a node sits in a tree, as a tuple of keys."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any, SupportsIndex, overload

import numpy as np

__all__ = ["KeyPath", "getkeypath", "haskeypath"]


class KeyPath(tuple[Hashable, ...]):
    """A path of keys into a nested model: dict keys, 0-based positions, field names.

    ``KeyPath("b", 0, "c")`` reaches ``model["b"][0]["c"]`` (or ``model.b[0].c`` for
    objects).  KeyPaths given as keys are spliced in.  ``str(kp)`` is ``b.0.c``.

    A ``KeyPath`` is a ``tuple``: it compares equal to the tuple of its keys, and ``+``
    with a tuple, a ``KeyPath`` or a single key gives a ``KeyPath``; slicing gives one too.

    Parameters
    ----------
    *keys : str, int, other hashable keys, or KeyPath
        The keys, outermost first; positions are 0-based.

    Examples
    --------
    >>> import optimisers as opt
    >>> kp = opt.KeyPath("b", 0) + opt.KeyPath("c")
    >>> kp, str(kp), len(kp)
    (KeyPath('b', 0, 'c'), 'b.0.c', 3)
    """

    __slots__ = ()

    def __new__(cls, *keys: Hashable) -> KeyPath:
        flat: list[Hashable] = []
        for k in keys:
            if isinstance(k, KeyPath):
                flat.extend(k)
            else:
                flat.append(k)
        return super().__new__(cls, flat)

    # a key path plus a key, or plus a tuple of keys, is a key path (tuple's + takes tuples)
    def __add__(self, other: Hashable | tuple[Hashable, ...]) -> KeyPath:
        if isinstance(other, tuple):
            return KeyPath(*self, *KeyPath(*other))
        return KeyPath(*self, other)

    def __radd__(self, other: Hashable | tuple[Hashable, ...]) -> KeyPath:
        if isinstance(other, tuple):
            return KeyPath(*KeyPath(*other), *self)
        return KeyPath(other, *self)

    @overload
    def __getitem__(self, i: SupportsIndex) -> Hashable: ...
    @overload
    def __getitem__(self, i: slice) -> KeyPath: ...
    def __getitem__(self, i: SupportsIndex | slice) -> Hashable | KeyPath:
        r: Any = tuple.__getitem__(self, i)
        return KeyPath(*r) if isinstance(i, slice) else r

    def __repr__(self) -> str:
        return "KeyPath(" + ", ".join(repr(k) for k in self) + ")"

    def __str__(self) -> str:
        return ".".join(str(k) for k in self) if self else "(root)"

    def __getnewargs__(self) -> tuple[Hashable, ...]:
        return tuple(self)


def linked_keypath(link: tuple[Any, ...]) -> KeyPath:
    """The KeyPath of a linked path: ``()`` at the root, else ``(parent's link, key)``.

    The update walk carries such links because going one level down costs one small
    tuple; the KeyPath is built only for messages and programs.

    >>> linked_keypath(((((), "b"), 0), "c"))
    KeyPath('b', 0, 'c')
    """
    keys = []
    while link:
        link, k = link
        keys.append(k)
    return KeyPath(*reversed(keys))


def _step(x: Any, k: Hashable) -> Any:
    if isinstance(x, Mapping):
        return x[k]
    if isinstance(k, int) and isinstance(x, (list, tuple)):
        return x[k]
    if isinstance(k, str):
        return getattr(x, k)
    return x[k]


def getkeypath(x: Any, kp: Sequence[Hashable]) -> Any:
    """The node of ``x`` at ``kp``; raises ``KeyError`` naming the first missing key.

    Parameters
    ----------
    x : nested containers or objects
        A model or a state tree.
    kp : KeyPath or sequence of keys
        Dict keys, 0-based positions and attribute names, outermost first.

    Returns
    -------
    object
        The node reached (``x`` itself for an empty path).

    Raises
    ------
    KeyError
        If a key is missing, naming it and the path to where it was looked up.

    Examples
    --------
    >>> import optimisers as opt
    >>> opt.getkeypath({"a": [10, 20]}, opt.KeyPath("a", 1))
    20
    """
    for i, k in enumerate(KeyPath(*kp) if not isinstance(kp, KeyPath) else kp):
        try:
            x = _step(x, k)
        except (KeyError, IndexError, AttributeError, TypeError) as e:
            raise KeyError(f"no key {k!r} at {KeyPath(*kp[:i])}") from e
    return x


def haskeypath(x: Any, kp: Iterable[Hashable]) -> bool:
    """Whether ``getkeypath(x, kp)`` would succeed.

    Parameters
    ----------
    x : nested containers or objects
        A model or a state tree.
    kp : KeyPath or sequence of keys
        Dict keys, 0-based positions and attribute names, outermost first.

    Returns
    -------
    bool
        ``True`` when every key of ``kp`` is present on the way down.

    Examples
    --------
    >>> import optimisers as opt
    >>> opt.haskeypath({"a": [10, 20]}, opt.KeyPath("a", 2))
    False
    """
    for k in kp:
        if isinstance(x, Mapping):
            if k not in x:
                return False
        elif isinstance(k, int) and (
            isinstance(x, (list, tuple)) or (isinstance(x, np.ndarray) and x.ndim > 0)
        ):
            if not -len(x) <= k < len(x):
                return False
        elif isinstance(k, str):
            if not hasattr(x, k):
                return False
        else:
            return False
        x = _step(x, k)
    return True
