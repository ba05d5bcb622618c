"""What a checkpoint may hold: the built-in rules (read from the registry), a rule's fields
and how the rule is rebuilt from them, the dtypes stored, and whether a state fits its rule.

Examples
--------
>>> import numpy as np, optimisers as opt
>>> rule_classes()["Adam"] is opt.Adam
True
>>> rule_field_names(opt.Adam), rule_field_names(opt.OptimiserChain)
(('eta', 'beta', 'epsilon'), ('opts',))
>>> make_rule(opt.OptimiserChain, {"opts": (opt.ClipGrad(1.0), opt.Descent(0.1))})
OptimiserChain(ClipGrad(delta=1.0), Descent(eta=0.1))
>>> print(state_problem(opt.Momentum(), np.zeros(3)))
None
>>> print(state_problem(opt.Momentum(), (np.zeros(3),)))
state is a tuple where the rule keeps an array of float64 and the parameter's shape
>>> dtype_str(np.float32, "x"), parse_dtype("<f4", "x")
('<f4', dtype('float32'))
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from typing import Any

import numpy as np

from ._checkpoint_format import CheckpointError
from ._dtypes import is_low_precision
from ._leaf import state_difference
from ._rule import builtin_rules

__all__ = [
    "rule_classes",
    "rule_field_names",
    "make_rule",
    "state_problem",
    "dtype_str",
    "parse_dtype",
]

_DTYPE_RE = re.compile(r"[<>|][biufc][0-9]{1,2}")


def rule_classes():
    """The rules a file may name: the built-in ones, by class name.

    Read from the registry at each save and load rather than copied at import: the
    checkpoint modules may be imported before every rule module has registered its rules."""
    return {c.__name__: c for c in builtin_rules()}


def rule_field_names(cls):
    """A rule's fields: a dataclass's fields, or else the public names of its ``__slots__``
    (``OptimiserChain``: ``opts``; ``AccumGrad``: ``n``; ``MixedPrecision``: ``rule``,
    ``dtype``)."""
    if dataclasses.is_dataclass(cls):
        return tuple(f.name for f in dataclasses.fields(cls))
    slots = getattr(cls, "__slots__", None)
    if not isinstance(slots, tuple):
        # what a rule of the package must be for checkpoints to store it without code of
        # its own: said to whoever adds one, at the first save
        raise TypeError(
            f"checkpoints cannot tell the fields of {cls.__name__}: a rule "
            "class is a dataclass or names its fields in a tuple __slots__"
        )
    return tuple(name for name in slots if not name.startswith("_"))


def make_rule(cls: type[Any], fields: dict[str, Any]) -> Any:
    """The rule ``cls`` with these fields, from its own constructor, which validates them.

    The constructor takes each field by name, except a field it has no parameter for, which
    is its ``*args`` (``OptimiserChain(*rules)`` stores its rules as ``opts``)."""
    if dataclasses.is_dataclass(cls):
        return cls(**fields)
    params = inspect.signature(cls).parameters
    by_name = {
        k: v
        for k, v in fields.items()
        if k in params
        and params[k].kind in (params[k].POSITIONAL_OR_KEYWORD, params[k].KEYWORD_ONLY)
    }
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


def state_problem(rule, state):
    """``None`` if ``state`` has the structure ``rule.init`` gives, else what differs.

    The parameter's dtype is not stored: each dtype of the state's arrays is tried (a
    float16 one both ways: the float32 state of a float16 parameter, rounded by
    ``low_precision_state``, is float16)."""
    dtypes = list(dict.fromkeys(a.dtype for a in _arrays(state, []))) or [np.dtype(np.float64)]
    first = None
    for dtype in dtypes:
        try:
            x = np.empty(0, dtype)
            ref = rule.init(x)
            if is_low_precision(dtype):
                ref = rule._lower_state(ref, x)
        except Exception as e:  # a built-in rule's init on an empty array: no fit
            problem: str | None = (
                f"{type(rule).__name__} keeps no state for arrays of {dtype} ({e})"
            )
        else:
            like_x: list[tuple[str, tuple[int, ...]]] = []
            problem = state_difference(state, ref, "state", like_x)
            if problem is None:
                # (an entry with a shape function, Adafactor's factors, is checked against
                # the parameter when the state is next used)
                shapes = {e[1] for e in like_x if len(e) == 2}
                if len(shapes) <= 1:
                    return None
                problem = "the arrays shaped like the parameter differ in shape: " + ", ".join(
                    f"{w} {shape}" for w, shape, *_ in like_x
                )
        first = first or problem
    return first


def dtype_str(dt, where):
    dt = np.dtype(dt)
    if dt.kind not in "biufc" or dt.fields is not None or dt.subdtype is not None:
        raise TypeError(
            f"save_state cannot store dtype {dt} (at {where}): only booleans, "
            "integers, floats and complex numbers are stored (never objects)"
        )
    return dt.str


def parse_dtype(s, where):
    if not isinstance(s, str) or not _DTYPE_RE.fullmatch(s):
        raise CheckpointError(
            f"{where}: dtype {s!r} is not allowed: only booleans, "
            "integers, floats and complex numbers are stored (object, "
            "string, void and structured dtypes are refused)"
        )
    try:
        dt = np.dtype(s)
    except (TypeError, ValueError):
        dt = None
    if dt is None or dt.str != s or dt.kind not in "biufc":
        raise CheckpointError(f"{where}: {s!r} is not a dtype numpy knows in this form")
    return dt
