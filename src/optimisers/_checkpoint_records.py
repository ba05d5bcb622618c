"""Namedtuples in checkpoints: the name a type is stored under, and the type a stored name
is loaded as.

A namedtuple is stored by its type's ``module.qualname`` and field names.  On load, the name
finds the state types of the built-in rules (the registry's), or a type passed in
``load_state(path, types=[...])``; any other name becomes a *record*, a namedtuple class made
on the spot with the same (unqualified) name and fields, since nothing named in a file is
ever imported.  A record trains as the original type does, pickles, and is saved again under
the original name.

Examples
--------
>>> Pair = record_type("mymodel.Pair", ("w", "b"))
>>> p = Pair(1, 2)
>>> p, p.w, qualified(Pair)
(Pair(w=1, b=2), 1, 'mymodel.Pair')
>>> record_type("mymodel.Pair", ("w", "b")) is Pair      # one class per name and fields
True
"""

from __future__ import annotations

import collections
import keyword
from collections.abc import Iterable
from typing import Any

from ._checkpoint_format import CheckpointError
from ._rule import state_types

__all__ = ["qualified", "known_types", "named_type", "record_type", "make_record"]

_RECORDS: dict[Any, type] = {}


def qualified(t):
    """The name a namedtuple type is stored under: ``module.qualname``, or for a record the
    name it stands for."""
    own = vars(t).get("_checkpoint_name")
    return own if isinstance(own, str) else f"{t.__module__}.{t.__qualname__}"


def known_types(types: Iterable[type]) -> dict[str, type]:
    """The namedtuple types a load rebuilds as themselves, by stored name: the state types
    of the built-in rules (read from the registry now, not at import, when it may be
    incomplete) and ``types``, given to ``load_state(types=...)``, which come first."""
    out = {qualified(t): t for t in state_types()}
    for t in types:
        if not (isinstance(t, type) and issubclass(t, tuple) and hasattr(t, "_fields")):
            raise TypeError(f"load_state: types= takes namedtuple classes, got {t!r}")
        out[qualified(t)] = t
    return out


def named_type(name, fields, known):
    """The class a namedtuple stored as ``name`` with ``fields`` is loaded as: a type of
    ``known`` (from :func:`known_types`), else a record.  :class:`CheckpointError` if the
    known type has other fields, or if the fields are not field names."""
    cls = known.get(name)
    if cls is None:
        return record_type(name, tuple(fields))
    if tuple(cls._fields) != tuple(fields):
        raise CheckpointError(
            f"the file's {name} has the fields {list(fields)}, the type "
            f"{cls.__qualname__} has {list(cls._fields)}"
        )
    return cls


def make_record(name, fields, values):
    """Rebuild a record made by ``load_state`` (what such records pickle as)."""
    return record_type(name, tuple(fields))._make(values)


def _record_reduce(self):
    t = type(self)
    return (make_record, (t._checkpoint_name, t._fields, tuple(self)))


def record_type(name, fields):
    """The record class standing for the namedtuple type ``name`` with these ``fields``."""
    for f in fields:
        if (
            not isinstance(f, str)
            or not f.isidentifier()
            or keyword.iskeyword(f)
            or f.startswith("_")
        ):
            raise CheckpointError(f"namedtuple {name!r}: {f!r} is not a field name")
    if len(set(fields)) != len(fields):
        raise CheckpointError(f"namedtuple {name!r}: repeated field names {list(fields)}")
    key = (name, fields)
    cls = _RECORDS.get(key)
    if cls is None:
        short = name.rpartition(".")[2]
        if not short.isidentifier() or keyword.iskeyword(short) or short.startswith("_"):
            short = "Record"
        base = collections.namedtuple(short, fields, module=__name__)  # type: ignore[misc]
        cls = type(
            short,
            (base,),
            {
                "__slots__": (),
                "__reduce__": _record_reduce,
                "_checkpoint_name": name,
                "__doc__": f"{short}{tuple(fields)}: stands for {name} (made by load_state)",
            },
        )
        if len(_RECORDS) < 4096:  # files cannot make this cache grow without end
            cls = _RECORDS.setdefault(key, cls)
    return cls
