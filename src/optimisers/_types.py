"""The names of the types that the public functions take and return.

A model, a gradient and a state tree are nested containers of any depth (dicts, lists,
tuples, namedtuples, objects registered with :func:`optimisers.functor`), so, as in optax
(``optax.Params``) and JAX (``PyTree``), they are ``Any`` to a type checker: the aliases
name what a value *is*, for the reader and the docs, without making every use of a
returned model a type error.  What a checker can know is typed precisely: a rule's fields
(``Hyperparameter``, a number or a ``Schedule``, defined with ``Schedule``), an array
(``Array``), the pair that ``update_`` returns (``tuple[StateTree, Model]``).

Examples
--------
>>> import numpy as np, optimisers as opt
>>> from optimisers._types import Model, StateTree
>>> model: Model = {"w": np.ones(2)}
>>> state: StateTree = opt.setup(opt.Descent(0.5), model)
>>> state, model = opt.update_(state, model, {"w": np.ones(2)})
>>> model["w"]
array([0.5, 0.5])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import numpy.typing as npt

T = TypeVar("T")

if TYPE_CHECKING:
    # Python 3.11's typing.dataclass_transform, for the type checker only (its package,
    # typing_extensions, is installed with mypy): it tells the checker that a class
    # decorated with `checked` or `schedule_class` is a frozen dataclass.
    from typing_extensions import dataclass_transform
else:

    def dataclass_transform(**_: object) -> Callable[[T], T]:
        """At run time, nothing: the decorator is returned unchanged."""
        return lambda decorator: decorator


__all__ = [
    "Array",
    "Model",
    "Gradient",
    "StateTree",
    "RuleState",
    "Key",
    "DTypeLike",
    "dataclass_transform",
]

#: a parameter, gradient or state array
Array: TypeAlias = npt.NDArray[Any]
#: a nested structure of arrays and containers, and anything else it holds (functions,
#: strings, numbers): what :func:`optimisers.setup` and :func:`optimisers.update_` take
Model: TypeAlias = Any
#: a gradient: the model's structure with arrays (or ``None`` for "no gradient here")
Gradient: TypeAlias = Any
#: the tree :func:`optimisers.setup` builds: the model's structure with a ``Leaf`` for each
#: trainable array and ``None`` where there is nothing to train (a bare ``Leaf`` for an array)
StateTree: TypeAlias = Any
#: one leaf's state, as a rule's ``init`` builds it: a NamedTuple of arrays, a tuple of
#: such states (a chain), or ``None``
RuleState: TypeAlias = Any
#: one step of a key path: a dict key or field name, or a 0-based position
Key: TypeAlias = str | int
#: a dtype as numpy takes it (``np.float32``, ``"float64"``, ``np.dtype(...)``)
DTypeLike: TypeAlias = npt.DTypeLike
