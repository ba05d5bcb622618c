"""Checkpoints of sharded state: one file in the library's format.

``save_state`` gathers every rank's Leaves on rank 0, which writes the state tree one
process would have (:func:`optimisers.save_state`); ``load_state`` reads such a file on
rank 0 (:func:`optimisers.load_state`, so a file written by one process loads too) and
sends each rank the Leaves of its share under the partition of the new number of ranks.
Rank 0 holds the whole state for the time of the call.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

from .._checkpoint import load_state as _load_state
from .._checkpoint import save_state as _save_state
from .._checkpoint_format import CheckpointError
from .._functor import children
from .._keypath import KeyPath, getkeypath
from .._leaf import Leaf
from .._plan import rule_state_misfit
from .._tree import setup as _setup
from .._tree import trainables
from ._comm import wrap
from ._protocol import agree, fail
from ._shard import _PROBE, DistState, build

__all__ = ["load_state", "save_state"]


def _full_tree(state: DistState, leaves: dict[int, Leaf]) -> Any:
    """The state tree of one process, from every rank's Leaves (by array index)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tree = _setup(
            lambda kp, x: _PROBE if state.rules[state.index_of(x)] is not None else None,
            state.model,
        )
    for i, kp in enumerate(state.paths):
        got = leaves.get(i)
        if got is None:
            continue
        leaf = getkeypath(tree, kp)
        leaf.rule, leaf.state, leaf.frozen, leaf.count = got.rule, got.state, got.frozen, got.count
        leaf._plan = None
    return tree


def save_state(path: str | os.PathLike[str], state: DistState) -> None:
    """Write the sharded state to one checkpoint file (collective).

    The file is the one :func:`optimisers.save_state` writes for the state tree of one
    process (the same rules, states, frozen flags, counts and ties), so
    :func:`optimisers.load_state` reads it in one process, and :func:`load_state` reads it
    on any number of ranks.  Rank 0 writes it; every rank returns once it is written, or
    raises if it could not be.

    Parameters
    ----------
    path : str or os.PathLike
        Where rank 0 writes the file.
    state : DistState
        This rank's state.

    Raises
    ------
    OSError, CheckpointError
        On rank 0 when it cannot write the file; :class:`RankFailed` on the other ranks.

    Examples
    --------
    >>> import os, tempfile, numpy as np, optimisers as opt
    >>> from optimisers import distributed as dist
    >>> model = {"w": np.ones(2, np.float32)}
    >>> state = dist.setup(opt.Adam(0.1), model, dist.SelfComm())
    >>> state, model = dist.update_(state, model, {"w": np.ones(2, np.float32)})
    >>> path = os.path.join(tempfile.mkdtemp(), "state.opt")
    >>> dist.save_state(path, state)
    >>> opt.load_state(path)["w"].count
    1
    """
    comm = state.comm
    mine = {
        i: leaf
        for i, leaf in enumerate(state.leaves)
        if leaf is not None and (state.owner[i] is not None or comm.rank == 0)
    }
    every = comm.gather(mine, 0)
    try:
        if comm.rank == 0 and every is not None:
            leaves: dict[int, Leaf] = {}
            for part in every:
                leaves.update(part)
            _save_state(path, _full_tree(state, leaves))
    except Exception as e:
        fail(comm, e, "save_state")
        raise
    agree(comm, None, "save_state")


def load_state(
    path: str | os.PathLike[str],
    model: Any,
    comm: Any,
    *,
    shard: bool = True,
    timeout: float = 60.0,
) -> DistState:
    """Read a checkpoint onto the ranks, each keeping its share (collective).

    The file may come from :func:`save_state` on any number of ranks or from
    :func:`optimisers.save_state` in one process: the arrays are dealt to this number of
    ranks anew, and training resumes bit for bit.

    Parameters
    ----------
    path : str or os.PathLike
        The checkpoint; rank 0 reads it.
    model : nested containers of arrays
        This rank's model, the one the checkpoint's state was made for.
    comm : mpi4py communicator or torch.distributed process group
        As for :func:`setup`.
    shard, timeout
        As for :func:`setup`.

    Returns
    -------
    DistState
        This rank's share of the saved state.

    Raises
    ------
    OSError, CheckpointError, KeyError
        On rank 0, when the file cannot be read or does not fit the model (a state of
        another shape or dtype than its array included);
        :class:`RankFailed` on the other ranks.

    Examples
    --------
    >>> import os, tempfile, numpy as np, optimisers as opt
    >>> from optimisers import distributed as dist
    >>> model = {"w": np.ones(2, np.float32)}
    >>> path = os.path.join(tempfile.mkdtemp(), "state.opt")
    >>> opt.save_state(path, opt.setup(opt.Adam(0.1), model))
    >>> dist.load_state(path, model, dist.SelfComm()).tree["w"].rule
    Adam(eta=0.1, beta=(0.9, 0.999), epsilon=1e-08)
    """
    c = wrap(comm, timeout)
    rules: list[Any] = []
    saved: list[Leaf | None] = []
    try:
        if c.rank == 0:
            tree = _load_state(path)
            for kp, x in _trainable_paths(model):
                leaf = getkeypath(tree, kp)
                if leaf is not None and not isinstance(leaf, Leaf):
                    raise TypeError(
                        f"load_state: the checkpoint {os.fspath(path)!r} has a "
                        f"{type(leaf).__name__} at {kp}, where the model has "
                        f"an array"
                    )
                # a state for another array (shape, dtype) would fail at the first step
                misfit = None if leaf is None else rule_state_misfit(leaf.rule, leaf.state, x)
                if misfit is not None:
                    raise CheckpointError(
                        f"load_state: the checkpoint {os.fspath(path)!r} has, at {kp}, a "
                        f"state that does not fit the model's array of {x.dtype} and "
                        f"shape {x.shape}: {misfit}"
                    )
                saved.append(leaf)
                rules.append(None if leaf is None else leaf.rule)
            # a state for an array this model lacks would be dropped unseen (a tied
            # array's Leaf is found at its first path, and stands at the others too)
            found = {id(leaf) for leaf in saved}
            extra = [kp for kp, leaf in _leaf_paths(tree) if id(leaf) not in found]
            if extra:
                raise CheckpointError(
                    f"load_state: the checkpoint {os.fspath(path)!r} has a state at "
                    f"{extra[0]}, where the model has no trainable array"
                    f"{f' (and {len(extra) - 1} more)' if len(extra) > 1 else ''}"
                )
    except Exception as e:
        fail(c, e, "load_state")
        raise
    rules = agree(c, rules, "load_state")[0]
    state = build(_chooser(model, rules), model, c, shard, timeout, False, "load_state")
    # each rank gets the saved Leaves of its share
    parts = (
        [
            {
                i: saved[i]
                for i, o in enumerate(state.owner)
                if saved[i] is not None and o in (None, r)
            }
            for r in range(c.size)
        ]
        if c.rank == 0
        else None
    )
    got = c.scatter(parts, 0)
    for i, leaf in got.items():
        mine = state.leaves[i]
        if mine is not None:
            mine.state, mine.frozen, mine.count = leaf.state, leaf.frozen, leaf.count
            mine._plan = None
    return state


def _leaf_paths(tree: Any, path: tuple[Any, ...] = ()) -> list[tuple[KeyPath, Leaf]]:
    """``(key path, Leaf)`` of every Leaf in a state tree, in its order."""
    if isinstance(tree, Leaf):
        return [(KeyPath(*path), tree)]
    kids = children(tree) if tree is not None else None
    found: list[tuple[KeyPath, Leaf]] = []
    for k, v in zip(*kids) if kids is not None else ():
        found += _leaf_paths(v, (*path, k))
    return found


def _trainable_paths(model: Any) -> list[Any]:
    out: list[Any] = trainables(model, path=True)
    return out


def _chooser(model: Any, rules: list[Any]) -> Any:
    index = {id(x): i for i, (kp, x) in enumerate(_trainable_paths(model))}
    return lambda kp, x: rules[index[id(x)]]
