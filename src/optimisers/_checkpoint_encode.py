"""Saving's half of the header: a state tree as JSON values, its arrays listed apart.

The forms of the values are documented in ``_checkpoint_format``.  A ``Leaf``, a rule or an
array at several places of the tree is encoded once and referred to by its index (ties).

Examples
--------
>>> import numpy as np, optimisers as opt
>>> w = np.ones(2, np.float32)
>>> header, arrays = encode({"a": opt.setup(opt.Descent(0.1), w), "b": w}, "doc")
>>> header["tree"]
{'dict': [['a', {'leaf': 0}], ['b', {'array': 0}]]}
>>> header["leaves"]
[{'rule': 0, 'state': None, 'frozen': False, 'count': 0}]
>>> header["rules"]
[{'rule': 'Descent', 'fields': {'eta': 0.1}}]
>>> header["arrays"], header["data_size"], arrays[0] is w
([{'dtype': '<f4', 'shape': [2], 'offset': 0}], 8, True)
>>> encode_rule(opt.AccumGrad(4))
{'rule': 'AccumGrad', 'fields': {'n': 4}}
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._checkpoint_format import align
from ._checkpoint_records import qualified
from ._checkpoint_schema import dtype_str, rule_classes, rule_field_names, state_problem
from ._functor import is_namedtuple
from ._leaf import Leaf
from ._rule import Rule
from ._schedule import Schedule

__all__ = ["encode", "encode_rule"]


def encode(tree: Any, writer: str) -> tuple[dict[str, Any], list[Any]]:
    """The header document of ``tree`` and the arrays it lists, in the order of its
    ``"arrays"``.  ``writer`` is the header's ``"writer"``: who wrote the file.

    Raises ``TypeError`` for what the format cannot store and ``ValueError`` for a state
    that does not fit its rule or a tree that contains itself, naming the place."""
    enc = _Encoder()
    encoded = enc.value(tree, "tree", "tree")
    header = {
        "writer": writer,
        "tree": encoded,
        "leaves": enc.leaves,
        "rules": enc.rules,
        "arrays": enc.entries,
        "data_size": enc.size,
    }
    return header, enc.arrays


def encode_rule(rule):
    """The JSON form of ``rule``: ``{"rule": name, "fields": {...}}``."""
    return _Encoder().rule(rule, "rule")


class _Encoder:
    def __init__(self):
        self.arrays, self.entries, self.array_ids = [], [], {}
        self.leaves, self.leaf_ids = [], {}
        self.rules, self.rule_ids = [], {}
        self.size = 0
        self.active = set()
        self.keep = []  # rules encoded for the table stay alive while ids are used
        self.rule_classes = rule_classes()

    def value(self, x, where, mode):
        """mode: "tree", "state", "field" (of a rule) or "key" (of a dict)."""
        t = type(x)
        if x is None or t is bool or t is int or t is str:
            return x
        if t is float:
            return x if math.isfinite(x) else {"float": repr(x)}
        if isinstance(x, np.generic):
            return {"scalar": dtype_str(x.dtype, where), "hex": x.tobytes().hex()}
        if t is tuple or (mode != "key" and (t is list or t is dict or is_namedtuple(x))):
            if id(x) in self.active:
                raise ValueError(f"save_state: the tree contains itself at {where}")
            self.active.add(id(x))
            try:
                return self._container(x, where, mode)
            finally:
                self.active.discard(id(x))
        if mode == "key":
            raise TypeError(
                f"save_state cannot store the dict key {x!r} at {where}: keys "
                "are None, bools, numbers, strings or tuples of those"
            )
        if isinstance(x, np.ndarray) and mode != "field":
            return {"array": self.array(x, where)}
        if isinstance(x, Leaf) and mode == "tree":
            return {"leaf": self.leaf(x, where)}
        if isinstance(x, Rule) and mode == "field":
            return self.rule(x, where)
        if isinstance(x, Schedule) and mode == "field":
            return {
                "schedule": type(x).__name__,
                "fields": {k: self.value(v, f"{where}.{k}", mode) for k, v in x.fields().items()},
            }
        if isinstance(x, np.dtype) and mode == "field":
            return {"dtype": dtype_str(x, where)}
        if isinstance(x, Leaf):
            raise TypeError(f"save_state: a Leaf inside a Leaf's state at {where}")
        raise TypeError(
            f"save_state cannot store a {t.__module__}.{t.__qualname__} (at "
            f"{where}): a state tree holds dicts, lists, tuples, namedtuples, "
            "Leafs, numeric arrays, numbers and None"
        )

    def _container(self, x, where, mode):
        t = type(x)
        if t is dict:
            items = []
            for k, v in x.items():
                items.append([self.value(k, where, "key"), self.value(v, f"{where}[{k!r}]", mode)])
            return {"dict": items}
        if is_namedtuple(x):
            return {
                "namedtuple": qualified(t),
                "fields": list(t._fields),
                "values": [self.value(v, f"{where}.{k}", mode) for k, v in zip(t._fields, x)],
            }
        vals = [self.value(v, f"{where}[{i}]", mode) for i, v in enumerate(x)]
        return {"tuple" if t is tuple else "list": vals}

    def array(self, a, where):
        i = self.array_ids.get(id(a))
        if i is None:
            dt = dtype_str(a.dtype, where)
            off = align(self.size)
            self.size = off + a.nbytes
            i = self.array_ids[id(a)] = len(self.arrays)
            self.arrays.append(a)
            self.entries.append({"dtype": dt, "shape": list(a.shape), "offset": off})
        return i

    def rule(self, r, where):
        cls = type(r)
        if self.rule_classes.get(cls.__name__) is not cls:
            raise TypeError(
                f"save_state stores only the built-in rules of optimisers, and "
                f"{cls.__module__}.{cls.__qualname__} (at {where}) is not one of them: a rule "
                "written in Python cannot be loaded back safely by its name.  Save a tree "
                "with such rules with pickle instead (and load only pickles you trust)."
            )
        return {
            "rule": cls.__name__,
            "fields": {
                name: self.value(getattr(r, name), f"{where}.{name}", "field")
                for name in rule_field_names(cls)
            },
        }

    def leaf(self, leaf, where):
        i = self.leaf_ids.get(id(leaf))
        if i is not None:
            return i
        ri = self.rule_ids.get(id(leaf.rule))
        if ri is None:
            encoded = self.rule(leaf.rule, f"{where}.rule")
            ri = self.rule_ids[id(leaf.rule)] = len(self.rules)
            self.rules.append(encoded)
            self.keep.append(leaf.rule)
        state = self.value(leaf.state, f"{where}.state", "state")
        problem = state_problem(leaf.rule, leaf.state)
        if problem is not None:
            raise ValueError(
                f"save_state: the Leaf at {where} does not hold a state of its "
                f"rule {leaf.rule!r}: {problem}, so it could not be loaded back"
            )
        i = self.leaf_ids[id(leaf)] = len(self.leaves)
        self.leaves.append(
            {"rule": ri, "state": state, "frozen": bool(leaf.frozen), "count": int(leaf.count)}
        )
        return i
