"""Global norms and non-finite steps: ``global_norm``, and the engine's verdict for the
leaves whose rule leads with ``ClipGlobalNorm`` or ``SkipNonFinite``.

The kernels reduce each leaf's gradient to a raw partial (a batch leaf in the ``before``
hook of its leading stage, while the batch is prepared; a general-path leaf here, by
``p_partial``): one read of the gradients.  :func:`settle` then combines the partials of
every participating leaf in one place, whichever batch or path each took, and decides the
whole step before anything is written: skip it (``SkipNonFinite``), raise (a non-finite norm
with ``throw``), or give each leaf its scale, which the kernels fold into the next rule's
read of the gradient.  Partials are combined exactly rounded (``math.fsum``), so the norm
depends neither on the thread count nor on how the leaves were split into batches.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from ._functor import children
from ._keypath import linked_keypath
from ._native import kernels as K
from ._norms import clip_scale, combine_partials, norm_kind
from ._plan import global_omega
from ._tree import isnumeric
from ._types import Array, Gradient

__all__ = ["global_norm", "settle", "settle_across"]


def global_norm(grads: Gradient, p: float = 2.0) -> float:
    """The p-norm of a whole gradient tree, computed by the kernels.

    Every array of ``grads`` that optimisers would train (floating or complex: see
    :func:`isnumeric`; ``None``, integer and boolean arrays, scalars and everything else
    are skipped, as ``ClipGlobalNorm`` skips the leaves it does not update) is reduced in
    float64 (blocks of 8192 elements, 8 lanes, an order fixed by the data), and the
    partials are added exactly rounded, so the result does not depend on the number of
    threads.  Equal to torch's ``clip_grad_norm_`` total norm.  Each array counts as given:
    for a parameter tied at two places of a model, ``ClipGlobalNorm`` clips by the norm of
    its summed gradient, which the gradients alone do not tell.

    Parameters
    ----------
    grads : nested containers of arrays
        The gradients (any real or complex dtype; others than float32/float64 and complex64/
        complex128 are read as float64).
    p : float, default 2.0
        Any real number or ``inf``/``-inf`` (not a bool or a string); ``p=0`` counts
        non-zeros.

    Returns
    -------
    float
        The norm; 0.0 for a tree without elements.

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> opt.global_norm({"a": np.array([3.0], np.float32), "b": (np.array([4.0]), None)})
    5.0
    >>> opt.global_norm({"w": np.array([3.0, 4.0]), "steps": np.array([100])})  # not trained
    5.0
    """
    if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)):
        raise TypeError(f"global_norm: p must be a real number or +-inf, not {p!r}")
    p = float(p)
    if math.isnan(p):
        raise ValueError("global_norm: p must be a real number or +-inf, not NaN")
    how = norm_kind(p)
    partials, n = [], 0
    for a in _arrays(grads):
        if a.size:
            partials.append(K.p_partial(a, how, p))
            n += a.size
    return combine_partials(partials, p, n)


def _arrays(x: Any) -> Iterator[Array]:
    """The trainable arrays of a gradient tree, in a dtype the kernels reduce (16-bit
    floats widened to float64)."""
    if isinstance(x, np.ndarray):
        if isnumeric(x):
            if x.dtype not in (np.float32, np.float64, np.complex64, np.complex128):
                x = x.astype(np.float64)
            yield np.ascontiguousarray(x)
        return
    kids = children(x) if x is not None else None
    for c in kids[1] if kids is not None else ():
        yield from _arrays(c)


def settle(batches: list[Any], programs: list[Any], across: Any = None, gate: Any = None) -> bool:
    """Decide the step for the leaves led by a ClipGlobalNorm or SkipNonFinite, before
    anything is written.  ``batches``: the prepared ``_kernels.Batch`` objects;
    ``programs``: the general-path ``(leaf, x, work, prog, rule)``.  Returns True when the step is
    skipped (only the skip counts advanced); raises ``FloatingPointError`` for a non-finite
    norm with ``throw`` or too many skips in a row; else sets every participating leaf's
    scale.  The batches hand their leaves over by template (one rule each), so the work
    here is per template, not per leaf: the kernels reduced the gradients.

    ``across`` and ``gate`` are ``optimisers.distributed``'s hooks (see ``settle_across``):
    with them the verdict is taken over the partials of every rank."""
    # (clip, p, omega as the rule holds it, throw) -> [sums, elements, units]: leaves
    # whose rules are equal share a norm, also when a scheduled omega has other values at
    # their counts (each unit is clipped by its own value)
    groups: dict[Any, list[Any]] = {}
    keys: dict[int, Any] = {}  # id(template or rule) -> (group key, skip, omega) or None
    for b in batches:
        if not b.n_global:
            continue
        # the kernels sum each template's partials exactly (a few floats per template)
        for tpl, sums, size, _empties, _first, spec in b.global_groups():
            key = keys.get(id(tpl))
            if key is None:  # from the kernels' stage, which holds the rule's values
                clip, skip, omega, p, throw = spec
                held = getattr(tpl, "global_omega", None)  # a scheduled template's
                key = keys[id(tpl)] = _spec_key(
                    clip, skip, omega, p, throw, omega if held is None else held
                )
            _join(groups, key, sums, size, (b, tpl))
    for program in programs:
        prog, rule = program[3], program[4]  # the rule at the leaf's count
        key = keys.get(id(rule), False)
        if key is False:
            key = keys[id(rule)] = _key(rule, program[0].rule)
        if key is not None:
            p, n = key[0][1], prog.src.size
            part = K.p_partial(prog.src, norm_kind(p), p)
            _join(groups, key, [part] if n else [], n, prog)
    if across is not None:
        return settle_across(groups, across, gate)
    if not groups:
        return False
    # a skip first: any non-finite gradient among the leaves a SkipNonFinite leads
    skipping = [u for g in groups.values() for u, k, _o in g[2] if k]
    if skipping and not all(math.isfinite(sum(g[0])) for g in groups.values()):
        culprit = _culprit(skipping)
        if culprit is not None:
            _skip(skipping, culprit)
            return True
    for (clip, p, _held, throw), (parts, size, units) in groups.items():
        if not clip:  # a batch's scale is 1 already
            _set_scales([u for u, _k, _o in units if not isinstance(u, tuple)], 1.0)
            continue
        norm = combine_partials(parts, p, size)
        if throw and not math.isfinite(norm):
            culprit = _culprit([u for u, _k, _o in units])
            why = (
                f"a non-finite gradient is at {_where(culprit)}"
                if culprit
                else "the gradients are finite, their norm overflows float64"
            )
            raise FloatingPointError(
                f"ClipGlobalNorm: the global {p:g}-norm of the gradients "
                f"is {norm}: {why} (throw=False lets it through)"
            )
        _clip_units(units, norm)
    return False


def settle_across(groups: dict[Any, Any], across: Any, gate: Any) -> bool:
    """The verdict of :func:`settle` over several ranks (``optimisers.distributed``), each
    holding the leaves of its share.  ``across(mine)`` is a collective: it takes this
    rank's ``{key: (partials, elements, skips, where_skip, where)}`` (``where_*``: the key
    path of a non-finite gradient found here, or None) and returns the same over every
    rank, in one order on all of them.  The partials are combined as in one process
    (exactly rounded), so every rank takes the one-process verdict; ``gate()`` runs before
    skip counts move, so that a rank that fails first leaves them all unchanged."""
    mine = {}
    for key, (parts, size, units) in groups.items():
        finite = math.isfinite(sum(parts))
        skips = [u for u, k, _o in units if k]
        mine[key] = (
            parts,
            size,
            bool(skips),
            None if finite else _where_or_none(_culprit(skips)),
            None if finite else _where_or_none(_culprit([u for u, _k, _o in units])),
        )
    totals = across(mine)
    if any(t[2] for t in totals.values()) and not all(
        math.isfinite(sum(t[0])) for t in totals.values()
    ):
        where = next((t[3] for t in totals.values() if t[3] is not None), None)
        if where is not None:
            _skip([u for g in groups.values() for u, k, _o in g[2] if k], where, gate)
            return True
    for key, (parts, size, _skips, _where_skip, where) in totals.items():
        clip, p, _held, throw = key
        units = groups[key][2] if key in groups else []
        if not clip:
            _set_scales([u for u, _k, _o in units if not isinstance(u, tuple)], 1.0)
            continue
        norm = combine_partials(parts, p, size)
        if throw and not math.isfinite(norm):
            why = (
                f"a non-finite gradient is at {where}"
                if where
                else "the gradients are finite, their norm overflows float64"
            )
            raise FloatingPointError(
                f"ClipGlobalNorm: the global {p:g}-norm of the gradients "
                f"over all ranks is {norm}: {why} (throw=False lets it "
                f"through)"
            )
        _clip_units(units, norm)
    return False


def _where_or_none(member: Any) -> str | None:
    return None if member is None else _where(member)


def _key(rule: Any, held: Any) -> Any:
    """``((clip, p, omega held, throw), skip, omega)`` of a leaf's leading ClipGlobalNorm
    and/or SkipNonFinite, ``rule`` at the leaf's count and ``held`` as its Leaf holds it
    (equal ClipGlobalNorms share a norm, with or without a SkipNonFinite before them), or
    None."""
    f = getattr(rule, "_global_spec", None)
    spec = f() if f is not None else None
    if spec is None:
        return None
    omega, held_omega = spec["omega"], global_omega(held)
    return _spec_key(
        spec["clip"],
        spec["skip"],
        omega,
        spec["p"],
        spec["throw"],
        omega if held_omega is None else held_omega,
    )


def _spec_key(clip: float, skip: float, omega: float, p: float, throw: float, held: Any) -> Any:
    """``_key`` from the values of the leading stage (a batch's, or a rule's spec) and the
    omega the rule holds (``held``: a schedule, or the value)."""
    if not clip:
        return (False, 1.0, math.inf, False), bool(skip), math.inf
    return (True, p, held, bool(throw)), bool(skip), omega


def _join(
    groups: dict[Any, Any], key: tuple[Any, ...], parts: list[Any], size: int, unit: Any
) -> None:
    g = groups.get(key[0])
    if g is None:
        g = groups[key[0]] = [[], 0, []]
    g[0].extend(parts)
    g[1] += size
    g[2].append((unit, key[1], key[2]))


def _clip_units(units: list[Any], norm: float) -> None:
    """Scale each of ``units`` by ``min(1, omega / norm)`` at its own omega (one value
    unless a scheduled omega is at other counts in other leaves)."""
    for omega in dict.fromkeys(o for _u, _k, o in units):
        _set_scales([u for u, _k, o in units if o == omega], clip_scale(omega, norm))


def _set_scales(units: list[Any], scale: float) -> None:
    """Give the leaves of ``units`` (``(batch, template)`` or a Program) their scale."""
    for u in units:
        if isinstance(u, tuple):
            u[0].set_template_scale(u[1], scale)
        else:
            u.global_scale = scale


def _members(units: list[Any]) -> Iterator[tuple[Any, Any]]:
    """``(partial, member)`` for each leaf of ``units``: a member is ``(batch, index)`` or a
    general-path Program."""
    for u in units:
        if isinstance(u, tuple):
            js, parts = u[0].global_members(u[1])
            yield from ((t, (u[0], j)) for t, j in zip(parts, js))
        else:
            yield math.nan if u.src.size else 0.0, u


def _culprit(units: list[Any]) -> Any:
    """A member of ``units`` whose gradient holds a NaN or an infinity, or None: a partial
    tells, but for an infinite sum of finite values (an overflow), which a second look
    tells apart (and a Program, whose partial is not kept, always gets one)."""
    for part, m in _members(units):
        if not math.isfinite(part):
            g = m[0].entries[m[1]][3] if isinstance(m, tuple) else m.src
            if not np.isfinite(g).all():
                return m
    return None


def _leaf(member: Any) -> Any:
    return member[0].entries[member[1]][4] if isinstance(member, tuple) else member._leaf


def _where(member: Any) -> str:
    if isinstance(member, tuple):
        return str(linked_keypath(member[0].entries[member[1]][5]))
    return str(member.where())


def _skip(units: list[Any], culprit: Any, gate: Any = None) -> None:
    # every limit is checked before any count moves: a raise changes nothing (and over
    # several ranks, ``gate`` lets none move them until every rank has checked its own)
    where = culprit if isinstance(culprit, str) else _where(culprit)
    states = []
    for _part, m in _members(units):
        leaf = _leaf(m)
        states.append((leaf.rule._global_spec()["max"], leaf.rule._skip_state(leaf.state)))
    # The run of skips is the shortest of the leaves': a leaf's count is reset only by a
    # good step it takes part in, so one that had no gradient in the last good step holds
    # a count from before it (every leaf takes part: all counts are the run's length).
    # (a rank of optimisers.distributed may hold none of them)
    run = min((int(s.consecutive) for _limit, s in states), default=0)
    limits = [limit for limit, _s in states if limit is not None]
    if limits and run >= min(limits):
        raise FloatingPointError(
            f"SkipNonFinite: a non-finite gradient (at {where}) after {run} steps "
            f"skipped in a row (max_consecutive={min(limits)})"
        )
    if gate is not None:
        gate()
    for _limit, s in states:
        s.skipped[...] += 1
        s.consecutive[...] += 1
