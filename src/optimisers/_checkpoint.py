r"""Checkpoints: a state tree to one file and back, exactly, without pickle.

:func:`save_state` writes rules, hyper-parameters, states, frozen flags, the tree's shape and
its ties; :func:`load_state` reads them back equal to what was saved, so that training
continues bit for bit.  Loading parses JSON and reads raw bytes into numpy arrays; it never
unpickles, never imports a module named in the file, and builds only the built-in rules
(those of ``optimisers.RULES``, the registry every rule class of the package joins).  A malformed, truncated or tampered file raises
:class:`CheckpointError`, a ``ValueError``, saying what is wrong.

File format, version 1
----------------------
Integers are little-endian.  ``D`` is ``32 + H`` rounded up to a multiple of 64::

    offset          size       content
    0               14         magic b"\x89OPT-STATE\r\n\x1a\n"
    14              2          format version, uint16 (1)
    16              8          size of the whole file in bytes, uint64
    24              8          H, size of the JSON header in bytes, uint64
    32              H          the JSON header, ASCII (strict JSON: no NaN or Infinity)
    32 + H          D - 32 - H zero bytes
    D               data_size  the array buffers: array i at D + arrays[i].offset (offsets
                               are multiples of 64), zero bytes between them
    D + data_size   32         SHA-256 of every byte before it

The header is one JSON object with exactly these keys:

``"writer"``
    ``"optimisers <version>"``, for information only.
``"tree"``
    the state tree, a *value* (below).
``"leaves"``
    a list of ``{"rule": i, "state": value, "frozen": bool}``, one per distinct ``Leaf``;
    ``i`` indexes ``"rules"``.  A ``Leaf`` at several places of the tree (tied weights) is
    stored once and referred to by its index, so it comes back as one shared object.
``"rules"``
    a list of rules ``{"rule": "Adam", "fields": {"eta": 0.001, ...}}``, one per distinct rule
    object.  ``"rule"`` names a class of ``optimisers.RULES``, ``"fields"`` holds exactly the
    class's fields: a dataclass's fields, or else the public names of its ``__slots__``
    (``OptimiserChain``: ``opts``, the tuple of its rules; ``AccumGrad``: ``n``;
    ``MixedPrecision``: ``rule``, ``dtype``).
``"arrays"``
    a list of ``{"dtype": "<f4", "shape": [3, 2], "offset": 0}``: C-ordered raw bytes in the
    byte order the dtype names.  Dtypes are numpy's ``dtype.str`` of kinds ``b i u f c``
    only; object, string, void, datetime and structured dtypes are refused.  An array object
    at several places of the tree is stored once and comes back as one shared array.
``"data_size"``
    the size in bytes of the data region.

A *value* is JSON ``null``, ``true``, ``false``, an integer (a Python ``int``), a number with
a fraction or an exponent (a finite Python ``float``), a string, or an object of one of these
forms (no other keys):

* ``{"float": "inf" | "-inf" | "nan"}``: a non-finite Python ``float``;
* ``{"tuple": [v, ...]}``, ``{"list": [v, ...]}``: a ``tuple``, a ``list``;
* ``{"dict": [[k, v], ...]}``: a ``dict``, in this order; keys are ``None``, bools, numbers,
  strings, numpy scalars or tuples of those;
* ``{"namedtuple": "module.QualName", "fields": [...], "values": [...]}``: see below;
* ``{"scalar": "<f4", "hex": "0000803f"}``: a numpy scalar, its dtype and raw bytes;
* ``{"array": i}``: ``arrays[i]``, in the tree and in states;
* ``{"leaf": i}``: ``leaves[i]``, in the tree only;
* ``{"dtype": "<f4"}`` and ``{"rule": ..., "fields": ...}``: a numpy dtype and a rule, in
  rule fields only (``MixedPrecision``'s dtype and rule, a chain's members).

Namedtuples are stored by their type's ``module.qualname`` and field names.  On load, the
state types of this package (``AdamState``, ...) come back as themselves, as does any type
passed in ``load_state(path, types=[...])`` with that name and those fields; any other name
becomes a namedtuple class made on the spot with the same (unqualified) name and fields:
nothing named in a file is ever imported.  Such a class trains just as the original type
does, is picklable, and is saved again under the original name.

Checks on load, in order: the magic, the size written in the prefix against the file's
size (truncation), the SHA-256 (any changed byte), and only then what the prefix says
besides (the version, the header's size), then the header: strict JSON, exactly the keys
above, every index, dtype, shape (one numpy can index) and offset (inside the data region,
not overlapping), every rule name (a built-in rule) and its fields (validated by the rule's own
constructor, and required in the canonical form ``save_state`` writes), and every ``Leaf``'s
state against the structure its rule's ``init`` gives (containers, namedtuple types, scalar
types, array dtypes, the shapes of per-step scalar arrays, one shape for the arrays shaped
like the parameter).  The checksum detects accidents, not forgery: anyone can write a file
with a valid checksum, which is why everything after it is validated as well.

Versions: any change to the layout or to the header's keys and forms gets a new version
number, but every version keeps the magic, the version and the file's size as the first
24 bytes and the SHA-256 as the last 32, so that a file of any version is checked before its
version is believed.  A release reads every version up to its own (the reader of each old
version stays in this module) and refuses later ones with a message asking for an upgrade.
This release writes and reads version 1.

Saving writes a temporary file beside the target, flushes it to disk (``fsync``) and renames
it over the target, so an interrupted save leaves the previous checkpoint intact.

Limitations: only the built-in rules are stored (for trees with rules written in Python, use
``pickle``, and load only pickles you trust); ties are kept for ``Leaf`` objects, rule
objects and array objects, not for containers nor for distinct arrays that view the same
memory; arrays come back C-ordered; loaded arrays are writable, 64-byte aligned views into
one buffer that holds the file (a whole file is read into memory); a ``Leaf``'s scratch
buffer is not stored.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import inspect
import json
import keyword
import math
import os
import re
import secrets
import struct

import numpy as np

from ._functor import is_namedtuple
from ._leaf import Leaf
from ._rule import Rule, builtin_rules, state_types

__all__ = ["save_state", "load_state"]

MAGIC = b"\x89OPT-STATE\r\n\x1a\n"
VERSION = 1
_PREFIX = struct.Struct("<14sHQQ")      # magic, version, file size, header size
_ALIGN = 64
_DIGEST = 32                            # sha256
_MAX_NDIM = 64 if np.lib.NumpyVersion(np.__version__) >= "2.0.0" else 32   # numpy's limit
_MAX_BYTES = np.iinfo(np.intp).max

def _qualified(t):
    own = vars(t).get("_checkpoint_name")
    return own if isinstance(own, str) else f"{t.__module__}.{t.__qualname__}"


# The allow-lists are the registry of built-in rules, read at each save and load rather than
# copied at import: this module is imported before some rule modules have registered theirs.

def _rule_classes():
    """The rules a file may name: the built-in ones, by class name."""
    return {c.__name__: c for c in builtin_rules()}


def _library_state_types():
    """The namedtuple types of the built-in rules' states, by qualified name."""
    return {_qualified(t): t for t in state_types()}


_DTYPE_RE = re.compile(r"[<>|][biufc][0-9]{1,2}")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be loaded.

    The file is not a checkpoint, is truncated, corrupted, from a later format version, or
    describes something that is not allowed.  Raised by :func:`load_state`; the message
    starts with the file's path and says what is wrong.  A subclass of ``ValueError``, so
    ``except ValueError`` catches it too.

    Examples
    --------
    >>> import os, tempfile
    >>> import optimisers as opt
    >>> with tempfile.TemporaryDirectory() as d:
    ...     path = os.path.join(d, "garbage.ckpt")
    ...     with open(path, "wb") as f:
    ...         _ = f.write(b"these bytes are not a checkpoint")
    ...     try:
    ...         opt.load_state(path)
    ...     except opt.CheckpointError as e:
    ...         print(type(e).__name__, isinstance(e, ValueError))
    ...         print("not an optimisers checkpoint" in str(e))
    CheckpointError True
    True
    """


# ----------------------------------------------------------------------------------------
# pieces shared by saving and loading

def _align(n):
    return -(-n // _ALIGN) * _ALIGN


def _rule_field_names(cls):
    """A rule's fields: a dataclass's fields, or else the public names of its ``__slots__``
    (``OptimiserChain``: ``opts``; ``AccumGrad``: ``n``; ``MixedPrecision``: ``rule``,
    ``dtype``)."""
    if dataclasses.is_dataclass(cls):
        return tuple(f.name for f in dataclasses.fields(cls))
    return tuple(name for name in cls.__slots__ if not name.startswith("_"))


def _make_rule(cls, fields):
    """The rule ``cls`` with these fields, from its own constructor, which validates them.

    The constructor takes each field by name, except a field it has no parameter for, which
    is its ``*args`` (``OptimiserChain(*rules)`` stores its rules as ``opts``)."""
    if dataclasses.is_dataclass(cls):
        return cls(**fields)
    params = inspect.signature(cls).parameters
    by_name = {k: v for k, v in fields.items()
               if k in params and params[k].kind in (params[k].POSITIONAL_OR_KEYWORD,
                                                      params[k].KEYWORD_ONLY)}
    rest = [k for k in fields if k not in by_name]
    if not rest:
        return cls(**by_name)
    star = [p for p in params.values() if p.kind is p.VAR_POSITIONAL]
    if len(rest) > 1 or not star:
        raise TypeError(f"{cls.__name__}() takes no parameter for the fields {rest}")
    spread = fields[rest[0]]
    if type(spread) is not tuple:
        raise TypeError(f"{rest[0]} must be a tuple, got {type(spread).__name__}")
    return cls(*spread, **by_name)


def _arrays(s, out):
    if isinstance(s, np.ndarray):
        out.append(s)
    elif isinstance(s, (tuple, list)):
        for v in s:
            _arrays(v, out)
    return out


def _describe(x):
    if isinstance(x, np.ndarray):
        return f"an array of {x.dtype} and shape {x.shape}"
    if x is None:
        return "None"
    return f"a {type(x).__name__}"


def _skeleton_diff(a, b, where, like_x):
    """Where ``a`` (a stored state) differs in structure from ``b`` (what ``init`` gives for
    an empty parameter); the shapes of the arrays shaped like the parameter go to
    ``like_x``."""
    if isinstance(b, np.ndarray):
        if isinstance(a, np.ndarray) and a.dtype == b.dtype:
            if b.shape == (0,):
                like_x.append((where, a.shape))
                return None
            if a.shape == b.shape:
                return None
    elif isinstance(b, (tuple, list)):
        if type(a) is type(b) and len(a) == len(b):
            named = is_namedtuple(b)
            keys = b._fields if named else range(len(b))
            for k, x, y in zip(keys, a, b):
                d = _skeleton_diff(x, y, f"{where}.{k}" if named else f"{where}[{k}]", like_x)
                if d is not None:
                    return d
            return None
    elif type(a) is type(b):
        return None
    what = _describe(b).replace("shape (0,)", "the parameter's shape")
    if isinstance(b, (tuple, list)) and type(a) is type(b):
        what += f" of length {len(b)}"
    return f"{where} is {_describe(a)} where the rule keeps {what}"


def _state_problem(rule, state):
    """``None`` if ``state`` has the structure ``rule.init`` gives, else what differs.

    The parameter's dtype is not stored: each dtype of the state's arrays is tried."""
    dtypes = list(dict.fromkeys(a.dtype for a in _arrays(state, []))) or [np.dtype(np.float64)]
    first = None
    for dtype in dtypes:
        try:
            ref = rule.init(np.empty(0, dtype))
        except Exception as e:          # a built-in rule's init on an empty array: no fit
            problem = f"{type(rule).__name__} keeps no state for arrays of {dtype} ({e})"
        else:
            like_x = []
            problem = _skeleton_diff(state, ref, "state", like_x)
            if problem is None:
                shapes = {shape for _, shape in like_x}
                if len(shapes) <= 1:
                    return None
                problem = ("the arrays shaped like the parameter differ in shape: "
                           + ", ".join(f"{w} {shape}" for w, shape in like_x))
        first = first or problem
    return first


def _dtype_str(dt, where):
    dt = np.dtype(dt)
    if dt.kind not in "biufc" or dt.fields is not None or dt.subdtype is not None:
        raise TypeError(f"save_state cannot store dtype {dt} (at {where}): only booleans, "
                        "integers, floats and complex numbers are stored (never objects)")
    return dt.str


def _parse_dtype(s, where):
    if not isinstance(s, str) or not _DTYPE_RE.fullmatch(s):
        raise CheckpointError(f"{where}: dtype {s!r} is not allowed: only booleans, "
                              "integers, floats and complex numbers are stored (object, "
                              "string, void and structured dtypes are refused)")
    try:
        dt = np.dtype(s)
    except (TypeError, ValueError):
        dt = None
    if dt is None or dt.str != s or dt.kind not in "biufc":
        raise CheckpointError(f"{where}: {s!r} is not a dtype numpy knows in this form")
    return dt


# ----------------------------------------------------------------------------------------
# namedtuples that are not the library's own: made on the spot, by name and fields

_RECORDS = {}


def _make_record(name, fields, values):
    """Rebuild a record made by ``load_state`` (what such records pickle as)."""
    return _record_type(name, tuple(fields))._make(values)


def _record_reduce(self):
    t = type(self)
    return (_make_record, (t._checkpoint_name, t._fields, tuple(self)))


def _record_type(name, fields):
    for f in fields:
        if (not isinstance(f, str) or not f.isidentifier() or keyword.iskeyword(f)
                or f.startswith("_")):
            raise CheckpointError(f"namedtuple {name!r}: {f!r} is not a field name")
    if len(set(fields)) != len(fields):
        raise CheckpointError(f"namedtuple {name!r}: repeated field names {list(fields)}")
    key = (name, fields)
    cls = _RECORDS.get(key)
    if cls is None:
        short = name.rpartition(".")[2]
        if not short.isidentifier() or keyword.iskeyword(short) or short.startswith("_"):
            short = "Record"
        base = collections.namedtuple(short, fields, module=__name__)
        cls = type(short, (base,), {
            "__slots__": (), "__reduce__": _record_reduce, "_checkpoint_name": name,
            "__doc__": f"{short}{tuple(fields)}: stands for {name} (made by load_state)"})
        if len(_RECORDS) < 4096:          # files cannot make this cache grow without end
            cls = _RECORDS.setdefault(key, cls)
    return cls


# ----------------------------------------------------------------------------------------
# saving

class _Encoder:
    def __init__(self):
        self.arrays, self.entries, self.array_ids = [], [], {}
        self.leaves, self.leaf_ids = [], {}
        self.rules, self.rule_ids = [], {}
        self.size = 0
        self.active = set()
        self.keep = []        # rules encoded for the table stay alive while ids are used
        self.rule_classes = _rule_classes()

    def value(self, x, where, mode):
        """mode: "tree", "state", "field" (of a rule) or "key" (of a dict)."""
        t = type(x)
        if x is None or t is bool or t is int or t is str:
            return x
        if t is float:
            return x if math.isfinite(x) else {"float": repr(x)}
        if isinstance(x, np.generic):
            return {"scalar": _dtype_str(x.dtype, where), "hex": x.tobytes().hex()}
        if t is tuple or (mode != "key" and (t is list or t is dict or is_namedtuple(x))):
            if id(x) in self.active:
                raise ValueError(f"save_state: the tree contains itself at {where}")
            self.active.add(id(x))
            try:
                return self._container(x, where, mode)
            finally:
                self.active.discard(id(x))
        if mode == "key":
            raise TypeError(f"save_state cannot store the dict key {x!r} at {where}: keys "
                            "are None, bools, numbers, strings or tuples of those")
        if isinstance(x, np.ndarray) and mode != "field":
            return {"array": self.array(x, where)}
        if isinstance(x, Leaf) and mode == "tree":
            return {"leaf": self.leaf(x, where)}
        if isinstance(x, Rule) and mode == "field":
            return self.rule(x, where)
        if isinstance(x, np.dtype) and mode == "field":
            return {"dtype": _dtype_str(x, where)}
        if isinstance(x, Leaf):
            raise TypeError(f"save_state: a Leaf inside a Leaf's state at {where}")
        raise TypeError(f"save_state cannot store a {t.__module__}.{t.__qualname__} (at "
                        f"{where}): a state tree holds dicts, lists, tuples, namedtuples, "
                        "Leafs, numeric arrays, numbers and None")

    def _container(self, x, where, mode):
        t = type(x)
        if t is dict:
            items = []
            for k, v in x.items():
                items.append([self.value(k, where, "key"),
                              self.value(v, f"{where}[{k!r}]", mode)])
            return {"dict": items}
        if is_namedtuple(x):
            return {"namedtuple": _qualified(t), "fields": list(t._fields),
                    "values": [self.value(v, f"{where}.{k}", mode)
                               for k, v in zip(t._fields, x)]}
        vals = [self.value(v, f"{where}[{i}]", mode) for i, v in enumerate(x)]
        return {"tuple" if t is tuple else "list": vals}

    def array(self, a, where):
        i = self.array_ids.get(id(a))
        if i is None:
            dt = _dtype_str(a.dtype, where)
            off = _align(self.size)
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
                "with such rules with pickle instead (and load only pickles you trust).")
        return {"rule": cls.__name__,
                "fields": {name: self.value(getattr(r, name), f"{where}.{name}", "field")
                           for name in _rule_field_names(cls)}}

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
        problem = _state_problem(leaf.rule, leaf.state)
        if problem is not None:
            raise ValueError(f"save_state: the Leaf at {where} does not hold a state of its "
                             f"rule {leaf.rule!r}: {problem}, so it could not be loaded back")
        i = self.leaf_ids[id(leaf)] = len(self.leaves)
        self.leaves.append({"rule": ri, "state": state, "frozen": bool(leaf.frozen)})
        return i


def _raw(a):
    c = a if a.flags.c_contiguous else np.ascontiguousarray(a)
    return c.reshape(-1).view(np.uint8)


def save_state(path, tree):
    """Write a state tree to one file, which :func:`load_state` reads back exactly.

    Stored: the tree's containers (dict, list, tuple, namedtuple; their order and kinds),
    every ``Leaf`` with its rule and hyper-parameters, its state (arrays with their dtype and
    shape, numpy scalars with their type, Python numbers) and its frozen flag, and the ties:
    a ``Leaf`` (or an array) at several places comes back as one shared object.  No pickle:
    the format (a JSON header, raw array bytes and a SHA-256) is described in this module's
    documentation.  The file is written to a temporary name beside ``path`` and renamed over
    it when complete, so an interrupted save leaves any previous checkpoint intact.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write (replaced if it exists).
    tree : state tree
        From :func:`optimisers.setup` (a bare ``Leaf``, ``None`` or nested containers).

    Returns
    -------
    None
        The tree is not changed; read it back with :func:`load_state`.

    Raises
    ------
    TypeError
        For what the format cannot store: a rule that is not one of the built-in rules (a
        rule written in Python: use ``pickle`` for such trees, and load only pickles you
        trust), arrays of object, string or structured dtypes, other Python objects.
    ValueError
        For a ``Leaf`` whose state does not have the structure its rule's ``init`` gives
        (it could not be loaded back), or a tree that contains itself.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np, optimisers as opt
    >>> model = {"w": np.ones((2, 2), np.float32), "b": np.zeros(2, np.float32)}
    >>> state = opt.setup(opt.OptimiserChain(opt.ClipNorm(1.0), opt.Adam(0.01)), model)
    >>> state, model = opt.update_(state, model, {"w": np.ones((2, 2)), "b": np.ones(2)})
    >>> with tempfile.TemporaryDirectory() as d:
    ...     opt.save_state(os.path.join(d, "state.ckpt"), state)
    ...     again = opt.load_state(os.path.join(d, "state.ckpt"))
    >>> again == state
    True
    >>> again["b"].rule.opts
    (ClipNorm(omega=1.0, p=2.0, throw=True), Adam(eta=0.01, beta=(0.9, 0.999), epsilon=1e-08))
    """
    enc = _Encoder()
    doc_tree = enc.value(tree, "tree", "tree")
    try:
        from . import __version__ as version
    except ImportError:         # the package is still being imported
        version = "unknown"
    doc = {"writer": f"optimisers {version}", "tree": doc_tree, "leaves": enc.leaves,
           "rules": enc.rules, "arrays": enc.entries, "data_size": enc.size}
    header = json.dumps(doc, ensure_ascii=True, allow_nan=False,
                        separators=(",", ":")).encode("ascii")
    data_start = _align(_PREFIX.size + len(header))
    total = data_start + enc.size + _DIGEST
    path = os.fspath(path)
    suffix = f".{secrets.token_hex(6)}.tmp"
    tmp = path + (os.fsencode(suffix) if isinstance(path, bytes) else suffix)
    h = hashlib.sha256()
    try:
        with open(tmp, "xb") as f:
            def put(b):
                h.update(b)
                f.write(b)
            put(_PREFIX.pack(MAGIC, VERSION, total, len(header)))
            put(header)
            put(bytes(data_start - _PREFIX.size - len(header)))
            pos = 0
            for a, e in zip(enc.arrays, enc.entries):
                put(bytes(e["offset"] - pos))
                put(_raw(a))
                pos = e["offset"] + a.nbytes
            f.write(h.digest())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError) and e.errno is not None:
            # the temporary file's name means nothing to the caller: name the path given
            raise type(e)(e.errno, e.strerror, path) from None
        raise


# ----------------------------------------------------------------------------------------
# loading

def _no_duplicates(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise CheckpointError(f"the header repeats the key {k!r} in one object")
        d[k] = v
    return d


def _finite(s):
    v = float(s)
    if not math.isfinite(v):
        raise CheckpointError(f"the header has the number {s}, which is not finite")
    return v


def _no_constant(s):
    raise CheckpointError(f"the header has {s}, which is not JSON (non-finite floats are "
                          'written {"float": "inf"})')


def _index(i, n, what, where):
    if type(i) is not int or not 0 <= i < n:
        raise CheckpointError(f"{where}: {i!r} is not an index into {what} (there are {n})")
    return i


def _expect(obj, keys, where):
    if not isinstance(obj, dict) or set(obj) != set(keys):
        got = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{where} must be an object with the keys {sorted(keys)}, "
                              f"got {got}")


def _list(obj, where):
    if not isinstance(obj, list):
        raise CheckpointError(f"{where} must be a JSON list, got {type(obj).__name__}")
    return obj


_TAGS = {
    frozenset(["float"]): "float", frozenset(["tuple"]): "tuple", frozenset(["list"]): "list",
    frozenset(["dict"]): "dict", frozenset(["array"]): "array", frozenset(["leaf"]): "leaf",
    frozenset(["dtype"]): "dtype", frozenset(["scalar", "hex"]): "scalar",
    frozenset(["namedtuple", "fields", "values"]): "namedtuple",
    frozenset(["rule", "fields"]): "rule",
}
_ALLOWED = {
    "tree": {"float", "tuple", "list", "dict", "namedtuple", "scalar", "array", "leaf"},
    "state": {"float", "tuple", "list", "dict", "namedtuple", "scalar", "array"},
    "field": {"float", "tuple", "list", "scalar", "dtype", "rule"},
    "key": {"float", "tuple", "scalar"},
}


class _Decoder:
    def __init__(self, doc, data, types):
        self.doc, self.data, self.types = doc, data, types
        self.rule_classes, self.state_types = _rule_classes(), _library_state_types()

    def run(self):
        doc = self.doc
        _expect(doc, ["writer", "tree", "leaves", "rules", "arrays", "data_size"], "the header")
        size = doc["data_size"]
        if type(size) is not int or size != len(self.data):
            raise CheckpointError(f"the header's data_size {size!r} does not match the "
                                  f"{len(self.data)} bytes of the data region")
        self.spans = []
        self.arrays = [self.array(e, i)
                       for i, e in enumerate(_list(doc["arrays"], "arrays"))]
        self.check_overlap()
        self.rules = [self.rule(r, f"rules[{i}]")
                      for i, r in enumerate(_list(doc["rules"], "rules"))]
        self.leaves = [self.leaf(e, f"leaves[{i}]")
                       for i, e in enumerate(_list(doc["leaves"], "leaves"))]
        return self.value(doc["tree"], "tree", "tree")

    def array(self, e, index):
        where = f"arrays[{index}]"
        _expect(e, ["dtype", "shape", "offset"], where)
        dt = _parse_dtype(e["dtype"], f"{where}.dtype")
        shape, off = e["shape"], e["offset"]
        if (not isinstance(shape, list) or len(shape) > _MAX_NDIM
                or any(type(n) is not int or n < 0 for n in shape)):
            raise CheckpointError(f"{where}.shape {shape!r} is not a shape")
        # numpy refuses a shape whose extent overflows its index type even when a zero
        # dimension leaves the array empty, so the zeros do not count here either
        if math.prod(n for n in shape if n) * dt.itemsize > _MAX_BYTES:
            raise CheckpointError(f"{where}.shape {shape!r} is too big for numpy to index")
        if type(off) is not int or off < 0 or off % _ALIGN:
            raise CheckpointError(f"{where}.offset {off!r} is not a multiple of {_ALIGN}")
        nbytes = math.prod(shape) * dt.itemsize
        if off + nbytes > len(self.data):
            raise CheckpointError(f"{where}: {nbytes} bytes at offset {off} run past the end "
                                  f"of the data region ({len(self.data)} bytes)")
        raw = self.data[off:off + nbytes]
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
        for (_, end, i), (start, _, j) in zip(spans, spans[1:]):
            if start < end:
                raise CheckpointError(f"arrays[{i}] and arrays[{j}] overlap in the data region")

    def rule(self, obj, where):
        _expect(obj, ["rule", "fields"], where)
        name, fields = obj["rule"], obj["fields"]
        cls = self.rule_classes.get(name) if isinstance(name, str) else None
        if cls is None:
            raise CheckpointError(f"{where}: {name!r} is not a rule of optimisers; a "
                                  "checkpoint may name only these: "
                                  f"{', '.join(self.rule_classes)}")
        expected = _rule_field_names(cls)
        if not isinstance(fields, dict) or set(fields) != set(expected):
            got = sorted(fields) if isinstance(fields, dict) else type(fields).__name__
            raise CheckpointError(f"{where}: {name} has the fields {sorted(expected)}, the "
                                  f"file gives {got}")
        kw = {k: self.value(fields[k], f"{where}.{k}", "field") for k in expected}
        try:
            rule = _make_rule(cls, kw)
        except Exception as e:      # the constructor validates: whatever it raises refuses
            raise CheckpointError(f"{where}: {name} refuses the fields in the file: {e}") from e
        again = _Encoder().rule(rule, where)
        if json.dumps(again, sort_keys=True) != json.dumps(obj, sort_keys=True):
            raise CheckpointError(f"{where}: {name}'s fields are not in the form save_state "
                                  f"writes ({json.dumps(obj['fields'])} is read as {rule!r})")
        return rule

    def leaf(self, e, where):
        _expect(e, ["rule", "state", "frozen"], where)
        rule = self.rules[_index(e["rule"], len(self.rules), "rules", f"{where}.rule")]
        if type(e["frozen"]) is not bool:
            raise CheckpointError(f"{where}.frozen must be true or false")
        state = self.value(e["state"], f"{where}.state", "state")
        problem = _state_problem(rule, state)
        if problem is not None:
            raise CheckpointError(f"{where}: not a state of {rule!r}: {problem}")
        return Leaf(rule, state, e["frozen"])

    def named(self, name, fields, where):
        cls = self.types.get(name) or self.state_types.get(name)
        if cls is not None:
            if tuple(cls._fields) != tuple(fields):
                raise CheckpointError(f"{where}: the file's {name} has the fields "
                                      f"{list(fields)}, the type {cls.__qualname__} has "
                                      f"{list(cls._fields)}")
            return cls
        try:
            return _record_type(name, tuple(fields))
        except CheckpointError as e:
            raise CheckpointError(f"{where}: {e}") from None

    def value(self, obj, where, mode):
        t = type(obj)
        if obj is None or t is bool or t is int or t is float or t is str:
            return obj
        if t is list:
            raise CheckpointError(f"{where}: a bare JSON list is not a value (lists are "
                                  'written {"list": [...]}, tuples {"tuple": [...]})')
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
            vals = [self.value(v, f"{where}[{i}]", mode)
                    for i, v in enumerate(_list(body, where))]
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
                raise CheckpointError(f"{where}: a namedtuple needs a name and as many values "
                                      "as fields")
            cls = self.named(body, fields, where)
            return cls._make([self.value(v, f"{where}.{k}", mode)
                              for k, v in zip(fields, vals)])
        if tag == "scalar":
            dt = _parse_dtype(body, where)
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
            return _parse_dtype(body, where)
        return self.rule(obj, where)


def _user_types(types):
    out = {}
    for t in types:
        if not (isinstance(t, type) and issubclass(t, tuple) and hasattr(t, "_fields")):
            raise TypeError(f"load_state: types= takes namedtuple classes, got {t!r}")
        out[_qualified(t)] = t
    return out


def _read_checked(path):
    """The file's bytes in an aligned buffer, after the prefix and checksum checks."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(_PREFIX.size)
        if len(head) < len(MAGIC):
            if not head:
                raise CheckpointError(f"{path!s}: the file is empty (truncated, or not a "
                                      "checkpoint)")
            if MAGIC.startswith(head):
                raise CheckpointError(f"{path!s}: the file is truncated ({len(head)} bytes)")
        if head[:len(MAGIC)] != MAGIC:
            raise CheckpointError(f"{path!s}: not an optimisers checkpoint (it starts with "
                                  f"{head[:len(MAGIC)]!r}, a checkpoint with {MAGIC!r})")
        if len(head) < _PREFIX.size:
            raise CheckpointError(f"{path!s}: the file is truncated ({len(head)} bytes)")
        # Only the size is read before the checksum is verified, because it locates the
        # checksum; the version and the header size are believed only after it.
        _, _, total, _ = _PREFIX.unpack(head)
        if total != size:
            if total > size:
                raise CheckpointError(f"{path!s}: the file is truncated (or damaged): it "
                                      f"has {size} bytes, its prefix says {total}")
            raise CheckpointError(f"{path!s}: the file has {size} bytes, its prefix says "
                                  f"{total}: damaged, or something was appended")
        if size < _PREFIX.size + _DIGEST:
            raise CheckpointError(f"{path!s}: the file is truncated (or damaged): its "
                                  f"{size} bytes cannot hold a prefix and a checksum")
        raw = np.empty(size + _ALIGN, np.uint8)
        start = -raw.ctypes.data % _ALIGN
        buf = raw[start:start + size]
        buf[:_PREFIX.size] = np.frombuffer(head, np.uint8)
        view, got = memoryview(buf), _PREFIX.size
        while got < size:
            n = f.readinto(view[got:])
            if not n:
                raise CheckpointError(f"{path!s}: the file is truncated (it shrank while "
                                      "being read)")
            got += n
    if hashlib.sha256(view[:size - _DIGEST]).digest() != bytes(view[size - _DIGEST:]):
        raise CheckpointError(f"{path!s}: checksum mismatch: the file is corrupted (a byte "
                              "differs from what was written)")
    _, version, _, hlen = _PREFIX.unpack_from(buf)
    if version > VERSION:
        raise CheckpointError(f"{path!s}: checkpoint format version {version} is newer "
                              f"than this release of optimisers reads (up to {VERSION}); "
                              "upgrade optimisers to load it")
    if version != VERSION:
        raise CheckpointError(f"{path!s}: unknown checkpoint format version {version}")
    if _align(_PREFIX.size + hlen) + _DIGEST > size:
        raise CheckpointError(f"{path!s}: the header size {hlen} runs past the end")
    return buf, hlen


def load_state(path, *, types=()):
    """Read a state tree written by :func:`save_state`.

    The tree comes back equal to what was saved: containers and their kinds, rules and
    hyper-parameters, every state array with its dtype and shape, numpy scalar types, frozen
    flags, and ties (a ``Leaf`` or array at several places is one shared object).  Training
    continues bit for bit.  Loading never unpickles, imports or runs anything named in the
    file: rules are built only from the built-in rules, and every part of the file is
    checked first (see the module documentation for the format and the checks).

    Parameters
    ----------
    path : str or os.PathLike
        The file written by :func:`save_state`.
    types : iterable of namedtuple classes, optional
        Namedtuple types of your model to rebuild as themselves (matched by
        ``module.qualname`` and field names).  Namedtuples of other types come back as
        namedtuple classes made on the spot with the same name and fields, which train the
        same; the library's own state types always come back as themselves.

    Returns
    -------
    state tree
        Equal to the tree that was saved.  Its arrays are writable, aligned, C-ordered views
        into one buffer that holds the file.

    Raises
    ------
    CheckpointError (a ValueError)
        If the file is not a checkpoint, is truncated or corrupted, has a format version this
        release cannot read, or describes anything not allowed (a rule that is not built in,
        an object array, a state that does not fit its rule, ...); the message says which.
    TypeError
        If ``types`` holds something that is not a namedtuple class.
    OSError
        If the file cannot be read.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np, optimisers as opt
    >>> w = np.ones(3, np.float32)
    >>> state = opt.setup(opt.RAdam(), {"a": w, "b": [w, np.tanh]})   # w is tied
    >>> with tempfile.TemporaryDirectory() as d:
    ...     opt.save_state(os.path.join(d, "state.ckpt"), state)
    ...     again = opt.load_state(os.path.join(d, "state.ckpt"))
    >>> again["a"] is again["b"][0], again["b"][1]
    (True, None)
    >>> again["a"].rule, again["a"].state.m.dtype, again["a"].state.beta_t.dtype
    (RAdam(eta=0.001, beta=(0.9, 0.999), epsilon=1e-08), dtype('float32'), dtype('float32'))
    """
    named = _user_types(types)
    buf, hlen = _read_checked(path)
    try:
        text = buf[_PREFIX.size:_PREFIX.size + hlen].tobytes().decode("ascii")
        doc = json.loads(text, object_pairs_hook=_no_duplicates, parse_float=_finite,
                         parse_constant=_no_constant)
    except CheckpointError as e:
        raise CheckpointError(f"{path!s}: {e}") from None
    except (ValueError, RecursionError) as e:
        raise CheckpointError(f"{path!s}: the header is not valid JSON ({e})") from None
    data_start = _align(_PREFIX.size + hlen)
    data = buf[data_start:len(buf) - _DIGEST] if data_start <= len(buf) - _DIGEST else buf[:0]
    try:
        return _Decoder(doc, data, named).run()
    except CheckpointError as e:
        raise CheckpointError(f"{path!s}: {e}") from None
    except RecursionError:
        raise CheckpointError(f"{path!s}: the tree is nested too deeply") from None
