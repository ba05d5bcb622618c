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

import numpy as np

from ._functor import children
from ._keypath import linked_keypath
from ._native import kernels as K
from ._norms import clip_scale, combine_partials, norm_kind

__all__ = ["global_norm", "settle"]


def global_norm(grads, p=2.0):
    """The p-norm of a whole gradient tree, computed by the kernels.

    Every array of ``grads`` (nested containers; ``None`` and non-arrays are skipped) is
    reduced in float64 (blocks of 8192 elements, 8 lanes, an order fixed by the data), and
    the partials are added exactly rounded, so the result does not depend on the number of
    threads.  Equal to torch's ``clip_grad_norm_`` total norm.

    Parameters
    ----------
    grads : nested containers of arrays
        The gradients (any real or complex dtype; others than float32/float64 and complex64/
        complex128 are read as float64).
    p : float, default 2.0
        Any real or ``inf``/``-inf``; ``p=0`` counts non-zeros.

    Returns
    -------
    float
        The norm; 0.0 for a tree without elements.

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> opt.global_norm({"a": np.array([3.0], np.float32), "b": (np.array([4.0]), None)})
    5.0
    """
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


def _arrays(x):
    if isinstance(x, np.ndarray) or np.isscalar(x) and isinstance(x, (int, float, complex)):
        a = np.asarray(x)
        if a.dtype not in (np.float32, np.float64, np.complex64, np.complex128):
            a = a.astype(np.complex128 if a.dtype.kind == "c" else np.float64)
        yield np.ascontiguousarray(a)
        return
    kids = children(x) if x is not None else None
    for c in (kids[1] if kids is not None else ()):
        yield from _arrays(c)


def settle(batches, programs):
    """Decide the step for the leaves led by a ClipGlobalNorm or SkipNonFinite, before
    anything is written.  ``batches``: the prepared ``_kernels.Batch`` objects (their
    ``entries``); ``programs``: the general-path ``(leaf, x, work, prog)``.  Returns True when
    the step is skipped (only the skip counts advanced); raises ``FloatingPointError`` for a
    non-finite norm with ``throw`` or too many skips in a row; else sets every participating
    leaf's scale."""
    members = []                 # (spec, partial, n, gradient, where, set_scale, leaf)
    specs = {}
    for b in batches:
        for j, e in enumerate(b.entries):
            if e[0][0][0] != K.GLOBALNORM:
                continue
            part = b.partial(j)
            if part is None:                  # left out: another batch or a Program has it
                continue
            spec = _spec(e[4].rule, specs)
            members.append((spec, part, e[3].size, e[3], e[5], _batch_setter(b, j), e[4]))
    for leaf, x, work, prog in programs:
        spec = _spec(leaf.rule, specs)
        if spec is None:
            continue
        part = K.p_partial(prog.src, norm_kind(spec["p"]), spec["p"])
        members.append((spec, part, prog.src.size, prog.src, prog.where(),
                        _program_setter(prog), leaf))
    if not members:
        return False
    skippers = [m for m in members if m[0]["skip"]]
    bad = [m for m in skippers if not _finite(m)]
    if bad:
        _skip(skippers, bad[0])
        return True
    groups = {}
    for m in members:
        if m[0]["clip"]:
            key = (m[0]["omega"], m[0]["p"], m[0]["throw"])
            groups.setdefault(key, []).append(m)
        else:
            m[5](1.0)
    for (omega, p, throw), group in groups.items():
        norm = combine_partials([m[1] for m in group if m[2]], p, sum(m[2] for m in group))
        if throw and not math.isfinite(norm):
            culprit = next((m for m in group if not _finite(m)), None)
            why = (f"a non-finite gradient is at {_where(culprit[4])}" if culprit else
                   "the gradients are finite, their norm overflows float64")
            raise FloatingPointError(f"ClipGlobalNorm: the global {p:g}-norm of the gradients "
                                     f"is {norm}: {why} (throw=False lets it through)")
        scale = clip_scale(omega, norm)
        for m in group:
            m[5](scale)
    for m in skippers:                        # a good step ends a run of skips
        s = m[6].rule._skip_state(m[6].state)
        if s.consecutive:
            s.consecutive[...] = 0
    return False


def _spec(rule, specs):
    spec = specs.get(id(rule), False)
    if spec is False:
        f = getattr(rule, "_global_spec", None)
        spec = specs[id(rule)] = f() if f is not None else None
    return spec


def _finite(member):
    """Whether a member's gradient holds only finite values: its partial tells, but for an
    infinite sum of finite values (an overflow), which a second look tells apart."""
    part = member[1]
    if math.isfinite(part):
        return True
    return part == part and bool(np.isfinite(member[3]).all())


def _skip(skippers, culprit):
    # every limit is checked before any count moves: a raise changes nothing
    where = _where(culprit[4])
    states = [(m[6].rule, m[6].rule._skip_state(m[6].state)) for m in skippers]
    for rule, s in states:
        limit = rule._global_spec()["max"]
        if limit is not None and s.consecutive >= limit:
            raise FloatingPointError(f"SkipNonFinite: a non-finite gradient (at {where}) "
                                     f"after {int(s.consecutive)} steps skipped in a row "
                                     f"(max_consecutive={limit})")
    for rule, s in states:
        s.skipped[...] += 1
        s.consecutive[...] += 1


def _where(link):
    return link if isinstance(link, str) else str(linked_keypath(link))


def _batch_setter(b, j):
    return lambda scale: b.set_scale(j, scale)


def _program_setter(prog):
    def set_scale(scale):
        prog.global_scale = scale
    return set_scale
