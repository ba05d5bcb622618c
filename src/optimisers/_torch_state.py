"""The checkpoints of :class:`optimisers.torch.Optimizer`: ``state_dict`` in torch's layout
(tensors and plain values only) and ``load_state_dict``, which checks and converts all of
what it is given before it writes anything.

Each parameter's entry in ``"state"`` is its rule's state flattened to ``{name: tensor or
value}`` (:func:`~optimisers._torch_views.flatten_state`) and its ``"count"``: the number
of updates it has taken, a plain int as torch keeps ``"step"``, which a hyper-parameter
of the rule given as a schedule (``AdamW(lambda_=schedules.linear(...))``) is evaluated
at.  A state dict saved before the counts were saved (no ``"count"``) loads, leaving the
counts as they are, unless a rule it is loaded for has a schedule: it could not resume
exactly, and is refused.

A group's ``"rule"`` is saved as the rule's ``repr`` (:func:`describe_rule`: for a rule
written in Python whose ``repr`` holds a memory address, its class and fields instead),
and loading checks that it is the rule the group has.

Imported only by :mod:`optimisers.torch` (it imports torch).

>>> import optimisers as opt
>>> describe_rule(opt.Adam(0.01))
'Adam(eta=0.01, beta=(0.9, 0.999), epsilon=1e-08)'
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

import torch

from . import _torch_views as tv
from ._leaf import Leaf
from ._rule import Rule
from ._torch_groups import Group, check_keys

__all__ = ["COUNT", "check", "describe_rule", "load", "save"]

#: the key of a parameter's update count in its entry of ``state_dict()["state"]``
COUNT = "count"
# keys of a saved param group that describe it rather than set it (not restored by
# load_state_dict): the parameters, and what identifies the rule and the shapes
_DESCRIPTIVE = ("params", "param_names", "rule", "param_shapes")
# what object.__repr__ puts in: a memory address, another in every process
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+>")


def describe_rule(rule: Any) -> str:
    """The rule as a state dict names it: its ``repr`` (a built-in rule's, which says
    every hyper-parameter), or, when that holds a memory address (a rule written in
    Python without a ``__repr__``, or a chain holding one), ``module.Class(field=...)``
    made of its public attributes, the same in every process."""
    text = repr(rule)
    if not isinstance(rule, Rule) or not _ADDRESS.search(text):
        return text
    cls = type(rule)
    inner = ", ".join(f"{k}={_describe(getattr(rule, k))}" for k in _attributes(rule))
    return f"{cls.__module__}.{cls.__qualname__}({inner})"


def _attributes(rule: Rule) -> list[str]:
    if dataclasses.is_dataclass(rule):
        return [f.name for f in dataclasses.fields(rule)]
    names = list(getattr(rule, "__dict__", {}))
    for cls in type(rule).__mro__:
        slots = getattr(cls, "__slots__", ())
        names += [slots] if isinstance(slots, str) else list(slots)
    return [n for n in dict.fromkeys(names) if not n.startswith("_") and hasattr(rule, n)]


def _describe(value: Any) -> str:
    if isinstance(value, Rule):
        return describe_rule(value)
    if isinstance(value, list):
        return f"[{', '.join(map(_describe, value))}]"
    if isinstance(value, tuple):
        return f"({', '.join(map(_describe, value))}{',' if len(value) == 1 else ''})"
    return _ADDRESS.sub(">", repr(value))


def save(param_groups: list[dict[str, Any]], groups: Sequence[Group]) -> dict[str, Any]:
    """``{"state": {index: {name: tensor or value, "count": n}}, "param_groups": [...]}``
    of the optimiser's param groups and their entries (copies of the state)."""
    state: dict[int, dict[str, Any]] = {}
    saved_groups = []
    index = 0
    for group, entry in zip(param_groups, groups):
        saved = {k: v for k, v in group.items() if k not in ("params", "rule")}
        saved["rule"] = describe_rule(group["rule"])
        saved["param_shapes"] = [list(p.shape) for p in entry.params]
        saved["params"] = list(range(index, index + len(entry.params)))
        for i, leaf in enumerate(entry.leaves):
            flat = tv.flatten_state(leaf.state)
            if COUNT in flat:
                raise ValueError(
                    f"state_dict: the state of {entry.where(i)} has a part named "
                    f"{COUNT!r}, the name the state dict gives the update count; "
                    f"rename that field of the rule's state"
                )
            flat[COUNT] = int(leaf.count)
            state[index] = flat
            index += 1
        saved_groups.append(saved)
    return {"state": state, "param_groups": saved_groups}


# what load writes, all of it checked and converted: per group its entry, the values to
# restore in the param group, and per parameter its flat state (tensors made numpy arrays)
# and count (None: not saved)
Loaded = list[tuple[Group, dict[str, Any], list[tuple[dict[str, Any], int | None]]]]


def check(param_groups: list[dict[str, Any]], groups: Sequence[Group], sd: Any) -> Loaded:
    """Everything :func:`load` writes, checked against the optimiser and converted; a
    ``ValueError`` saying what does not fit, where, before anything is written."""
    where = "load_state_dict"
    if not isinstance(sd, dict) or not {"state", "param_groups"} <= set(sd):
        raise ValueError(
            f"{where}: expected {{'state', 'param_groups'}} as state_dict() "
            f"writes, got {sorted(sd) if isinstance(sd, dict) else type(sd)}"
        )
    saved_groups, saved_state = sd["param_groups"], sd["state"]
    if len(saved_groups) != len(groups):
        raise ValueError(
            f"{where}: the state dict has {len(saved_groups)} param groups, "
            f"this optimiser {len(groups)}"
        )
    loaded: Loaded = []
    index = 0
    for entry, saved in zip(groups, saved_groups):
        at = f"{where}: param group {entry.index}"
        if not isinstance(saved, dict) or "rule" not in saved:
            raise ValueError(f"{at}: not a param group of optimisers.torch.Optimizer: {saved!r}")
        rule = describe_rule(param_groups[entry.index]["rule"])
        if saved["rule"] != rule:
            raise ValueError(
                f"{at}: the state dict is for the rule {saved['rule']}, this group has {rule}"
            )
        shapes = [list(p.shape) for p in entry.params]
        if saved.get("param_shapes") != shapes:
            raise ValueError(
                f"{at}: the state dict is for parameters of shapes "
                f"{saved.get('param_shapes')}, this group has {shapes}"
            )
        check_keys(saved, at, saved=True, allowed=entry.mom_key)
        try:
            float(saved.get("lr", 0.0))
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"{at}: its 'lr' is {saved['lr']!r}, not a number") from None
        values = {k: v for k, v in saved.items() if k not in _DESCRIPTIVE}
        leaves = entry.leaves
        states = [
            _leaf_state(entry, i, leaf, saved_state.get(index + i, saved_state.get(str(index + i))))
            for i, leaf in enumerate(leaves)
        ]
        loaded.append((entry, values, states))
        index += len(leaves)
    return loaded


def _leaf_state(entry: Group, i: int, leaf: Leaf, got: Any) -> tuple[dict[str, Any], int | None]:
    """The saved state of the ``i``-th parameter of ``entry`` (its Leaf ``leaf``), checked
    and converted."""
    where = f"load_state_dict: the state of {entry.where(i)}"
    count = None
    if isinstance(got, dict) and COUNT in got:
        got = dict(got)
        count = got.pop(COUNT)
        if type(count) is not int or count < 0:
            raise ValueError(f"{where}: its {COUNT!r} is {count!r}, not a whole number >= 0")
    misfit = tv.state_misfit(tv.flatten_state(leaf.state), got)
    if misfit is not None:
        raise ValueError(f"{where} does not fit its rule: {misfit}")
    if count is None and leaf.rule._scheduled():
        raise ValueError(
            f"{where} has no {COUNT!r} (a state dict saved by an older version of "
            f"optimisers), and its rule {leaf.rule!r} has a schedule, evaluated at that "
            f"count of updates: it would not resume exactly.  Add the number of steps "
            f"the parameter took, state_dict['state'][i][{COUNT!r}] = n, to load it"
        )
    converted = dict(got)
    for k, v in got.items():
        if isinstance(v, torch.Tensor):
            try:
                converted[k] = tv.readable(v)
            except (RuntimeError, TypeError, ValueError, NotImplementedError) as e:
                raise ValueError(f"{where}: its {k!r} cannot be read: {e}") from None
    return converted, count


def load(param_groups: list[dict[str, Any]], loaded: Loaded) -> None:
    """Write what :func:`check` returned: the states (arrays in place), the counts, and
    the groups' values."""
    for entry, values, states in loaded:
        for leaf, (saved, count) in zip(entry.leaves, states):
            leaf.state = tv.unflatten_state(leaf.state, saved)
            if count is not None:
                leaf.count = count
        entry.loaded([count for _saved, count in states])
        param_groups[entry.index].update(values)
