"""Loading's half of the header: the state tree from its JSON values, every part checked.

Everything in the header is validated before it is used (the checksum only detects
accidents): keys, indices, dtypes, shapes and offsets of arrays, rules (built-in ones only,
rebuilt by their own constructors and required in the form ``save_state`` writes) and each
``Leaf``'s state against its rule.  What is wrong raises :class:`CheckpointError`, saying
where in the header.

Examples
--------
>>> import numpy as np
>>> from optimisers._checkpoint_records import known_types
>>> header = {"writer": "by hand", "tree": {"tuple": [1, {"float": "nan"}, {"array": 0}]},
...           "leaves": [], "rules": [], "data_size": 8,
...           "arrays": [{"dtype": "<i2", "shape": [2, 2], "offset": 0}]}
>>> decode(header, np.arange(8, dtype=np.uint8), known_types([]))
(1, nan, array([[ 256,  770],
       [1284, 1798]], dtype=int16))
>>> header["tree"] = {"list": [{"pickle": "gASV"}]}
>>> try:
...     decode(header, np.arange(8, dtype=np.uint8), known_types([]))
... except CheckpointError as e:
...     print(e)
tree[0]: an object with the keys ['pickle'] cannot stand here
"""

from __future__ import annotations

import json
import math
from itertools import pairwise
from typing import Any

import numpy as np

from ._checkpoint_encode import encode_rule
from ._checkpoint_format import ALIGN, CheckpointError
from ._checkpoint_records import named_type
from ._checkpoint_schema import (
    make_rule,
    parse_dtype,
    rule_classes,
    rule_field_names,
    state_problem,
)
from ._leaf import Leaf
from .schedules import SCHEDULES

__all__ = ["decode"]

_MAX_NDIM = 64 if np.lib.NumpyVersion(np.__version__) >= "2.0.0" else 32  # numpy's limit
_MAX_BYTES = np.iinfo(np.intp).max


def decode(header: dict[str, Any], data: Any, known: dict[str, type]) -> Any:
    """The state tree the header document describes, its arrays views into ``data`` (the
    data region, a uint8 array).  ``known``: the namedtuple types rebuilt as themselves
    (from ``_checkpoint_records.known_types``).  Raises :class:`CheckpointError` saying
    what is wrong and where in the header."""
    try:
        return _Decoder(header, data, known).run()
    except RecursionError:
        raise CheckpointError("the tree is nested too deeply") from None


def _check_shape(shape, dt, where):
    if (
        not isinstance(shape, list)
        or len(shape) > _MAX_NDIM
        or any(type(n) is not int or n < 0 for n in shape)
    ):
        raise CheckpointError(f"{where} {shape!r} is not a shape")
    # numpy refuses a shape whose extent overflows its index type even when a zero
    # dimension leaves the array empty, so the zeros do not count here either
    if math.prod(n for n in shape if n) * dt.itemsize > _MAX_BYTES:
        raise CheckpointError(f"{where} {shape!r} is too big for numpy to index")


def _index(i, n, what, where):
    if type(i) is not int or not 0 <= i < n:
        raise CheckpointError(f"{where}: {i!r} is not an index into {what} (there are {n})")
    return i


def _expect(obj, keys, where):
    if not isinstance(obj, dict) or set(obj) != set(keys):
        got = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{where} must be an object with the keys {sorted(keys)}, got {got}")


def _list(obj, where):
    if not isinstance(obj, list):
        raise CheckpointError(f"{where} must be a JSON list, got {type(obj).__name__}")
    return obj


_TAGS = {
    frozenset(["float"]): "float",
    frozenset(["tuple"]): "tuple",
    frozenset(["list"]): "list",
    frozenset(["dict"]): "dict",
    frozenset(["array"]): "array",
    frozenset(["leaf"]): "leaf",
    frozenset(["dtype"]): "dtype",
    frozenset(["scalar", "hex"]): "scalar",
    frozenset(["namedtuple", "fields", "values"]): "namedtuple",
    frozenset(["rule", "fields"]): "rule",
    frozenset(["schedule", "fields"]): "schedule",
}
_ALLOWED = {
    "tree": {"float", "tuple", "list", "dict", "namedtuple", "scalar", "array", "leaf"},
    "state": {"float", "tuple", "list", "dict", "namedtuple", "scalar", "array"},
    "field": {"float", "tuple", "list", "dict", "scalar", "dtype", "rule", "schedule"},
    "key": {"float", "tuple", "scalar"},
}


def _running_products_in_float64(state):
    """A state as this release keeps it.  Release 0.1.0 kept the running products ``beta_t``
    of the Adam family in the parameter's real dtype; they are float64 now (the bias
    corrections are formed in float64), so a float32 ``beta_t`` read from such a file is
    widened, exactly."""
    if isinstance(state, tuple):
        fields = getattr(state, "_fields", None)
        parts = [_running_products_in_float64(s) for s in state]
        if fields is not None and "beta_t" in fields:
            i = fields.index("beta_t")
            b = parts[i]
            if isinstance(b, np.ndarray) and b.dtype == np.float32 and b.shape == (2,):
                parts[i] = b.astype(np.float64)
        return type(state)(*parts) if fields is not None else tuple(parts)
    return state


class _Decoder:
    def __init__(self, doc, data, known):
        self.doc, self.data, self.known = doc, data, known
        self.rule_classes = rule_classes()

    def run(self):
        doc = self.doc
        _expect(doc, ["writer", "tree", "leaves", "rules", "arrays", "data_size"], "the header")
        size = doc["data_size"]
        if type(size) is not int or size != len(self.data):
            raise CheckpointError(
                f"the header's data_size {size!r} does not match the "
                f"{len(self.data)} bytes of the data region"
            )
        self.spans = []
        self.arrays = [self.array(e, i) for i, e in enumerate(_list(doc["arrays"], "arrays"))]
        self.check_overlap()
        self.rules = [
            self.rule(r, f"rules[{i}]") for i, r in enumerate(_list(doc["rules"], "rules"))
        ]
        self.leaves = [
            self.leaf(e, f"leaves[{i}]") for i, e in enumerate(_list(doc["leaves"], "leaves"))
        ]
        return self.value(doc["tree"], "tree", "tree")

    def array(self, e, index):
        where = f"arrays[{index}]"
        _expect(e, ["dtype", "shape", "offset"], where)
        dt = parse_dtype(e["dtype"], f"{where}.dtype")
        shape, off = e["shape"], e["offset"]
        _check_shape(shape, dt, f"{where}.shape")
        if type(off) is not int or off < 0 or off % ALIGN:
            raise CheckpointError(f"{where}.offset {off!r} is not a multiple of {ALIGN}")
        nbytes = math.prod(shape) * dt.itemsize
        if off + nbytes > len(self.data):
            raise CheckpointError(
                f"{where}: {nbytes} bytes at offset {off} run past the end "
                f"of the data region ({len(self.data)} bytes)"
            )
        raw = self.data[off : off + nbytes]
        if dt.kind == "b" and nbytes and raw.max() > 1:
            raise CheckpointError(f"{where}: a boolean array holds bytes other than 0 and 1")
        if nbytes:
            self.spans.append((off, off + nbytes, index))
        a = raw.view(dt).reshape(shape)
        if not a.flags.aligned:
            a = a.copy()
        return a

    def check_overlap(self):
        spans = sorted(self.spans)
        for (_, end, i), (start, _, j) in pairwise(spans):
            if start < end:
                raise CheckpointError(f"arrays[{i}] and arrays[{j}] overlap in the data region")

    def rule(self, obj, where):
        _expect(obj, ["rule", "fields"], where)
        name, fields = obj["rule"], obj["fields"]
        cls = self.rule_classes.get(name) if isinstance(name, str) else None
        if cls is None:
            raise CheckpointError(
                f"{where}: {name!r} is not a rule of optimisers; a "
                "checkpoint may name only these: "
                f"{', '.join(self.rule_classes)}"
            )
        try:
            expected = rule_field_names(cls)
        except TypeError as e:  # no file of it can have been saved
            raise CheckpointError(f"{where}: {e}") from None
        if not isinstance(fields, dict) or set(fields) != set(expected):
            got = sorted(fields) if isinstance(fields, dict) else type(fields).__name__
            raise CheckpointError(
                f"{where}: {name} has the fields {sorted(expected)}, the file gives {got}"
            )
        kw = {k: self.value(fields[k], f"{where}.{k}", "field") for k in expected}
        try:
            rule = make_rule(cls, kw)
        except Exception as e:  # the constructor validates: whatever it raises refuses
            raise CheckpointError(f"{where}: {name} refuses the fields in the file: {e}") from e
        again = encode_rule(rule)
        if json.dumps(again, sort_keys=True) != json.dumps(obj, sort_keys=True):
            raise CheckpointError(
                f"{where}: {name}'s fields are not in the form save_state "
                f"writes ({json.dumps(obj['fields'])} is read as {rule!r})"
            )
        return rule

    def leaf(self, e, where):
        # a Leaf's count of updates (what schedules are evaluated at) is absent from files
        # written by 0.1.0: 0 then
        _expect(e, ["rule", "state", "frozen"] + (["count"] if "count" in e else []), where)
        count = e.get("count", 0)
        if type(count) is not int or count < 0:
            raise CheckpointError(f"{where}.count must be a whole number >= 0, got {count!r}")
        rule = self.rules[_index(e["rule"], len(self.rules), "rules", f"{where}.rule")]
        if type(e["frozen"]) is not bool:
            raise CheckpointError(f"{where}.frozen must be true or false")
        state = _running_products_in_float64(self.value(e["state"], f"{where}.state", "state"))
        problem = state_problem(rule, state)
        if problem is not None:
            raise CheckpointError(f"{where}: not a state of {rule!r}: {problem}")
        return Leaf(rule, state, e["frozen"], count)

    def named(self, name, fields, where):
        try:
            return named_type(name, fields, self.known)
        except CheckpointError as e:
            raise CheckpointError(f"{where}: {e}") from None

    def value(self, obj, where, mode):
        t = type(obj)
        if obj is None or t is bool or t is int or t is float or t is str:
            return obj
        if t is list:
            raise CheckpointError(
                f"{where}: a bare JSON list is not a value (lists are "
                'written {"list": [...]}, tuples {"tuple": [...]})'
            )
        tag = _TAGS.get(frozenset(obj))
        if tag is None or tag not in _ALLOWED[mode]:
            what = repr(tag) if tag else f"an object with the keys {sorted(obj)}"
            raise CheckpointError(f"{where}: {what} cannot stand here")
        body = obj.get(tag)
        if tag == "float":
            if body not in ("inf", "-inf", "nan"):
                raise CheckpointError(f"{where}: {body!r} is not inf, -inf or nan")
            return float(body)
        if tag in ("tuple", "list"):
            vals = [self.value(v, f"{where}[{i}]", mode) for i, v in enumerate(_list(body, where))]
            return tuple(vals) if tag == "tuple" else vals
        if tag == "dict":
            out = {}
            for i, kv in enumerate(_list(body, where)):
                if not isinstance(kv, list) or len(kv) != 2:
                    raise CheckpointError(f"{where}: item {i} is not a [key, value] pair")
                k = self.value(kv[0], f"{where}: key {i}", "key")
                if k in out:
                    raise CheckpointError(f"{where}: the key {k!r} appears twice")
                out[k] = self.value(kv[1], f"{where}[{k!r}]", mode)
            return out
        if tag == "namedtuple":
            fields, vals = _list(obj["fields"], where), _list(obj["values"], where)
            if not isinstance(body, str) or len(fields) != len(vals):
                raise CheckpointError(
                    f"{where}: a namedtuple needs a name and as many values as fields"
                )
            cls = self.named(body, fields, where)
            return cls._make([self.value(v, f"{where}.{k}", mode) for k, v in zip(fields, vals)])
        if tag == "scalar":
            dt = parse_dtype(body, where)
            try:
                raw = bytes.fromhex(obj["hex"])
            except (TypeError, ValueError):
                raw = None
            if raw is None or len(raw) != dt.itemsize or (dt.kind == "b" and raw[0] > 1):
                raise CheckpointError(f"{where}: {obj['hex']!r} is not the hex of one {dt}")
            return np.frombuffer(raw, dt)[0]
        if tag == "array":
            return self.arrays[_index(body, len(self.arrays), "arrays", where)]
        if tag == "leaf":
            return self.leaves[_index(body, len(self.leaves), "leaves", where)]
        if tag == "dtype":
            return parse_dtype(body, where)
        if tag == "schedule":
            return self.schedule(obj, where)
        return self.rule(obj, where)

    def schedule(self, obj, where):
        """A schedule of the table ``schedules.SCHEDULES``, rebuilt by its constructor
        (which checks its arguments); a name outside the table is refused."""
        cls = SCHEDULES.get(obj["schedule"]) if isinstance(obj["schedule"], str) else None
        fields = obj["fields"]
        if cls is None or not isinstance(fields, dict):
            raise CheckpointError(
                f"{where}: {obj['schedule']!r} is not a schedule of "
                f"optimisers ({', '.join(SCHEDULES)})"
            )
        try:
            return cls(**{k: self.value(v, f"{where}.{k}", "field") for k, v in fields.items()})
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{where}: {e}") from None
