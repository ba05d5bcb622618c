"""``update_`` of data-parallel training: average the gradients, step the local share
with the engine of :func:`optimisers.update_`, gather the parameters.

One step, on every rank:

1. walk this rank's gradient with the model (the checks of ``update_``, naming key
   paths), cast each array's gradient to its sum dtype (:func:`sum_dtype`);
2. exchange: every rank checked out, and which arrays have a gradient on some rank;
3. pack the gradients by sum dtype, ordered by owner, and reduce-scatter them (each
   owner receives the sums of its arrays; the all-reduce mode sums everywhere), then
   divide by the number of ranks;
4. the engine's step over the owned arrays, with two hooks: the global norms' partials
   exchanged over the ranks (when a rule has a ``ClipGlobalNorm`` or ``SkipNonFinite``),
   and a last exchange (``gate``) after every check and before any write;
5. broadcast each array from its owner into every rank's array, in place.

A failure anywhere before the gate is reported at the next exchange (``_protocol``): every
rank raises, none has written anything.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from .._engine import Step, check_gradient
from .._keypath import linked_keypath
from .._tree import collect
from ._protocol import agree, fail
from ._shard import DistState

__all__ = ["update_"]


class _Grads:
    """The engine's walk hands this every array's gradient (``route``): checked, cast to
    the sum dtype, the gradients of a tied array summed."""

    __slots__ = ("arrays", "dtypes", "entries", "got", "index", "views")

    def __init__(self, state: DistState) -> None:
        self.entries: list[Any] = []  # the walk's fast path appends here; probe Leaves never
        self.got: list[np.ndarray | None] = [None] * len(state.arrays)
        self.index = state.probe_index
        self.dtypes = state.dtypes
        self.views = state.views
        self.arrays = state.arrays

    def route(self, leaf: Any, x: np.ndarray, g: Any, link: Any) -> None:
        i = self.index[id(leaf)]
        if x is not self.arrays[i]:
            raise ValueError(
                f"optimisers.distributed.update_: the parameter at "
                f"{linked_keypath(link)} is not the array the state was set up "
                f"with; pass the model given to setup (it is updated in place)"
            )
        g = check_gradient(g, x, self.dtypes[i], link)
        prev = self.got[i]
        if prev is g and g is self.views[i]:  # a tied array's buffer, met again
            return
        self.got[i] = g if prev is None else prev + g


def _local_gradients(state: DistState, model: Any, grads: Any) -> list[np.ndarray | None]:
    walk = _Grads(state)
    collect(state.probe, model, grads, (), walk)
    return walk.got


def update_(state: DistState, model: Any, grads: Any) -> tuple[DistState, Any]:
    """One data-parallel step: average every rank's gradient, step, share the result.

    Collective: every rank calls it with its own gradient.  On every rank the model then
    equals what one process gets from :func:`optimisers.update_` with the averaged gradient
    (defined below): bit for bit on 1 and 2 ranks; on more ranks within the rounding of
    the order in which MPI sums (the ranks still agree with each other: each array is
    summed once, on its owner, and broadcast).

    The averaged gradient of an array is ``(g_0 + g_1 + ... + g_{N-1}) / N``, computed in
    the parameter's dtype (float32 for float16 and bfloat16 parameters), each rank's
    gradient first cast to it; a rank's ``None`` counts as zeros, and an array without a
    gradient on any rank takes no step (its state does not advance).  A tied array's
    gradients are summed on each rank before the average.

    Parameters
    ----------
    state : DistState
        From :func:`setup` or :func:`load_state`, for this model.
    model : nested containers of arrays
        This rank's model, the one the state was set up with; written in place.
    grads : nested containers of arrays, with the model's structure
        This rank's gradient, as for :func:`optimisers.update_`.

    Returns
    -------
    state : DistState
        The same object, its share advanced.
    model : model
        The same object, every trainable array updated in place.

    Raises
    ------
    TypeError, ValueError, FloatingPointError
        This rank's own error (as :func:`optimisers.update_` raises it), after telling the
        other ranks.
    RankFailed
        When another rank failed in this step.  In both cases no rank has written its
        parameters or its state.
    DistributedTimeout
        When another rank did not arrive within the state's ``timeout``.

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> from optimisers import distributed as dist
    >>> model = {"w": np.ones(3, np.float32)}
    >>> state = dist.setup(opt.Descent(0.5), model, dist.SelfComm())
    >>> state, model = dist.update_(state, model, {"w": np.ones(3, np.float32)})
    >>> model["w"]
    array([0.5, 0.5, 0.5], dtype=float32)
    """
    for _phase in phases(state, model, grads):
        pass
    return state, model


# what phases() yields, in order
PHASES = ("check", "reduce-scatter", "divide", "step", "gather")


def phases(state: DistState, model: Any, grads: Any) -> Iterator[str]:
    """The step of :func:`update_`, phase by phase: each phase's name once it has run (the
    benchmark times them apart, ``optimisers-bench distributed --phases``)."""
    active = _check(state, model, grads)
    yield "check"
    _sum(state)
    yield "reduce-scatter"
    _divide(state)
    yield "divide"
    _step_share(state, model, active)
    yield "step"
    _gather(state, active)
    yield "gather"


def _check(state: DistState, model: Any, grads: Any) -> np.ndarray:
    """Check and cast this rank's gradients into the send buffers (zeros for a None);
    agree which arrays have a gradient on some rank (those step)."""
    comm = state.comm
    n = len(state.arrays)
    try:
        got = _local_gradients(state, model, grads)
    except Exception as e:
        fail(comm, e, "update_ (checking the gradients)")
        raise
    # which arrays have a gradient on some rank: bit masks, one small exchange
    mask = np.packbits(np.array([g is not None for g in got], bool)).tobytes()
    masks = agree(comm, mask, "update_ (checking the gradients)")
    some = (
        np.bitwise_or.reduce([np.frombuffer(m, np.uint8) for m in masks], axis=0)
        if n
        else np.zeros(0, np.uint8)
    )
    _pack(state, got)
    return np.unpackbits(some, count=n).astype(bool) if n else np.zeros(0, bool)


def _pack(state: DistState, got: list[np.ndarray | None]) -> None:
    """Each bucket's gradients into its send buffer (zeros for a None); a gradient written
    into the buffer itself (``gradient_buffers``) is there already."""
    for b in state.buckets:
        send = b.send
        for i, off in zip(b.order, b.offsets):
            n = state.arrays[i].size
            g = got[i]
            if g is None:
                send[off : off + n] = 0
            elif g is not b.views[i]:  # not written in place (gradient_buffers)
                np.copyto(send[off : off + n], g.reshape(-1))


def _sum(state: DistState) -> None:
    """Sum each bucket over the ranks into its owners' shares (or everywhere)."""
    comm = state.comm
    for b in state.buckets:
        if comm.size > 1:
            if b.sharded:
                comm.reduce_scatter(b.send, b.recv, b.counts)
            else:
                comm.allreduce(b.send)
        elif b.recv is not b.send:
            np.copyto(b.recv, b.send)


def _divide(state: DistState) -> None:
    """The sums of this rank's share divided by the number of ranks: the average."""
    if state.comm.size > 1:
        for b in state.buckets:
            np.divide(b.recv, state.comm.size, out=b.recv)  # IEEE division in the sum dtype


def _gather(state: DistState, active: np.ndarray) -> None:
    """Each stepped array from its owner into every rank's array, in place."""
    if state.sharded:
        state.comm.broadcast(
            [(state.arrays[i], o) for i, o in enumerate(state.owner) if active[i] and o is not None]
        )


def _step_share(state: DistState, model: Any, active: np.ndarray) -> None:
    """The engine's step over this rank's arrays, every rank agreeing before any write."""
    comm = state.comm
    step = Step()

    def across(mine: dict[Any, Any]) -> dict[Any, list[Any]]:
        totals: dict[Any, list[Any]] = {}
        for theirs in agree(comm, mine, "update_ (the global norm)"):
            for key, (parts, size, skips, where_skip, where) in theirs.items():
                t = totals.setdefault(key, [[], 0, False, None, None])
                t[0].extend(parts)
                t[1] += size
                t[2] = t[2] or skips
                t[3] = t[3] or where_skip
                t[4] = t[4] or where
        return totals

    def gate() -> None:
        agree(comm, None, "update_ (before writing)")

    try:
        # routing checks each leaf's state against its rule: a misfit on one rank (a state
        # loaded for other arrays) is told to the others like any failure of the step
        for i, leaf in enumerate(state.leaves):
            if leaf is not None and active[i]:
                step.route(leaf, state.arrays[i], state.recv[i], state.links[i])
        # replicated state: every rank sees every leaf, its own verdict is the global one
        step.run(model, across if state.global_stages and state.sharded else None, gate)
    except BaseException as e:
        fail(comm, e, "update_")
        raise
