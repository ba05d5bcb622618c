"""Sharded state: who owns which array, and ``setup``.

The model's trainable arrays, in the order of :func:`optimisers.trainables`, are dealt to
the ranks whole, never split: largest first, each to the rank with the fewest bytes so far
(ties to the lowest rank).  Every share then holds at most ``1/N`` of the bytes plus the
largest array, and a rule that needs a whole array (``ClipNorm``'s norm, a per-matrix rule)
sees it whole on one rank, so every rule steps exactly as in one process.
"""

from __future__ import annotations

import hashlib
import heapq
import re
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from .._functor import fmap
from .._keypath import KeyPath, getkeypath
from .._leaf import Leaf
from .._rule import Rule
from .._rules_sgd import Descent
from .._tree import _rule_chooser, trainables
from .._tree import setup as _setup
from ._comm import Communicator, wrap
from ._protocol import agree, fail

__all__ = ["DistState", "build", "partition", "setup"]

RuleArg = Rule | Callable[[KeyPath, np.ndarray], Rule | None]


def partition(nbytes: list[int], n: int) -> list[int]:
    """The owning rank of each array: largest first, each to the least-loaded rank.

    Parameters
    ----------
    nbytes : list of int
        The size of each array in bytes.
    n : int
        The number of ranks.

    Returns
    -------
    list of int
        ``owner[i]`` for each array; the load of every rank is at most
        ``sum(nbytes) / n + max(nbytes)``.

    Examples
    --------
    >>> from optimisers.distributed import partition
    >>> partition([400, 100, 100, 100, 100], 2)
    [0, 1, 1, 1, 1]
    """
    owner = [0] * len(nbytes)
    loads = [(0, r) for r in range(n)]
    for i in sorted(range(len(nbytes)), key=lambda i: (-nbytes[i], i)):
        load, r = heapq.heappop(loads)
        owner[i] = r
        heapq.heappush(loads, (load + nbytes[i], r))
    return owner


def _link(kp: KeyPath) -> tuple[Any, ...]:
    """The engine's linked path (``(parent's link, key)``) of a KeyPath."""
    link: tuple[Any, ...] = ()
    for k in kp:
        link = (link, k)
    return link


def sum_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype in which the ranks' gradients of a parameter are summed and averaged: the
    parameter's, except float16 and bfloat16, whose steps compute in float32."""
    return np.dtype(np.float32) if dtype.itemsize == 2 and dtype.kind != "c" else dtype


class DistState:
    """The state of one rank in data-parallel training: its share's optimiser state.

    Made by :func:`optimisers.distributed.setup` (or ``load_state``); pass it to
    ``update_`` and ``save_state``.  ``tree`` has the model's shape, with a
    :class:`~optimisers.Leaf` for each array this rank owns and ``None`` elsewhere: freeze,
    thaw and adjust through it on every rank (``opt.freeze_(state.tree["enc"])``; a part
    without a Leaf of this rank is ``None`` there, and freezing it is a no-op).

    Attributes
    ----------
    comm : Communicator
        The transport (mpi4py or torch.distributed).
    tree : state tree
        This rank's share, in the model's shape.
    paths : list of KeyPath
        Every trainable array's path, in the order of :func:`optimisers.trainables`.
    owner : list of int or None
        The rank that steps each array (``None``: every rank, the all-reduce mode).
    """

    def __init__(
        self,
        comm: Communicator,
        model: Any,
        tree: Any,
        params: list[tuple[KeyPath, np.ndarray]],
        rules: list[Rule | None],
        owner: list[int | None],
    ) -> None:
        self.comm = comm
        self.model = model
        self.tree = tree
        self.paths = [kp for kp, x in params]
        self.arrays = [x for kp, x in params]
        self.rules = rules
        self.owner = owner
        self.links = [_link(kp) for kp in self.paths]
        self._index = {id(x): i for i, x in enumerate(self.arrays)}
        self.mine = [o is None or o == comm.rank for o in owner]
        self.leaves: list[Leaf | None] = [
            _leaf_at(tree, kp) if m and r is not None else None
            for kp, m, r in zip(self.paths, self.mine, rules)
        ]
        self.dtypes = [sum_dtype(x.dtype) for x in self.arrays]
        # the averaged gradients of this rank's arrays are views into the buckets
        self.recv: list[np.ndarray | None] = [None] * len(self.arrays)
        self.views: list[np.ndarray | None] = [None] * len(self.arrays)
        self.buckets = [Bucket(self, dt) for dt in dict.fromkeys(self.dtypes)]
        self.global_stages = any(_global_spec(r) is not None for r in rules)
        self.probe = _probe_tree(model)  # walks the gradient with the model's checks
        self.probe_index = {id(_leaf_at(self.probe, kp)): i for i, kp in enumerate(self.paths)}

    def gradient_buffers(self) -> Any:
        """A gradient tree whose arrays are the buffers ``update_`` sends: write this rank's
        gradients into them (``g[...] = ...``) and pass the tree to ``update_``, and the
        step packs nothing (torch DDP's ``gradient_as_bucket_view``).  The step overwrites
        them; non-trainable places are None, a tied array's buffer is at each of its
        places (write its total there).

        Examples
        --------
        >>> import numpy as np, optimisers as opt
        >>> from optimisers import distributed as dist
        >>> model = {"w": np.ones(3, np.float32), "act": np.tanh}
        >>> state = dist.setup(opt.Descent(0.5), model, dist.SelfComm())
        >>> grads = state.gradient_buffers()
        >>> grads["w"][...] = 1.0
        >>> state, model = dist.update_(state, model, grads)
        >>> model["w"], grads["act"]
        (array([0.5, 0.5, 0.5], dtype=float32), None)
        """
        views = {id(x): b.views[i] for b in self.buckets for i in b.order for x in [self.arrays[i]]}
        return fmap(lambda x: views.get(id(x)), self.model)

    def index_of(self, x: np.ndarray) -> int:
        """The index of the trainable array ``x`` in :attr:`paths`."""
        return self._index[id(x)]

    @property
    def sharded(self) -> bool:
        """Whether each rank keeps only its share (False: the all-reduce mode)."""
        return any(o is not None for o in self.owner) or not self.owner

    def state_bytes(self) -> int:
        """The bytes of the optimiser state held by this rank."""
        return sum(
            a.nbytes for leaf in self.leaves if leaf is not None for a in _arrays_in(leaf.state)
        )

    def __repr__(self) -> str:
        n = sum(1 for m in self.mine if m)
        return (
            f"DistState(rank {self.comm.rank} of {self.comm.size}, "
            f"{'sharded' if self.sharded else 'replicated'}, {n} of {len(self.mine)} "
            f"arrays here, {self.state_bytes()} state bytes)"
        )


class Bucket:
    """The gradients of one sum dtype, packed for one collective: the arrays ordered by
    owner (then by index), so that each rank's share is one run of the flat buffer; a
    reduce-scatter leaves each owner its share's sums (the all-reduce mode: everyone all
    of them, in place).  The owner's ``recv`` arrays are views of the result."""

    def __init__(self, state: DistState, dtype: np.dtype) -> None:
        rank, size = state.comm.rank, state.comm.size
        mine = [i for i, dt in enumerate(state.dtypes) if dt == dtype]
        self.order = sorted(mine, key=lambda i: (state.owner[i] or 0, i))
        self.offsets, at = [], 0
        for i in self.order:
            self.offsets.append(at)
            at += state.arrays[i].size
        self.send = np.empty(at, dtype)  # the packed gradients (scratch)
        self.counts = [
            sum(state.arrays[i].size for i in self.order if state.owner[i] == r)
            for r in range(size)
        ]
        sharded = any(state.owner[i] is not None for i in self.order)
        start = sum(self.counts[:rank])
        self.recv = np.empty(self.counts[rank], dtype) if sharded else self.send
        self.sharded = sharded
        # a gradient written into these views travels without being packed
        self.views = {
            i: self.send[off : off + state.arrays[i].size].reshape(state.arrays[i].shape)
            for i, off in zip(self.order, self.offsets)
        }
        for i, off in zip(self.order, self.offsets):
            state.views[i] = self.views[i]
            if state.mine[i]:
                x = state.arrays[i]
                base = off - start if sharded else off
                state.recv[i] = self.recv[base : base + x.size].reshape(x.shape)


def _arrays_in(s: Any) -> list[np.ndarray]:
    if isinstance(s, np.ndarray):
        return [s]
    if isinstance(s, dict):
        s = list(s.values())
    if isinstance(s, (list, tuple)):
        return [a for part in s for a in _arrays_in(part)]
    return []


def _global_spec(rule: Rule | None) -> Any:
    f = getattr(rule, "_global_spec", None)
    return f() if f is not None else None


def _leaf_at(tree: Any, kp: KeyPath) -> Leaf:
    # both trees are setup's over the model whose trainable arrays gave ``kp``: a Leaf
    leaf: Leaf = getkeypath(tree, kp)
    return leaf


_PROBE = Descent()


def _probe_tree(model: Any) -> Any:
    """A state tree of stateless Leaves: the engine's walk over it checks a gradient's
    structure against the model, naming key paths, and hands over each array's gradient."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _setup(_PROBE, model)


def _fingerprint(
    params: list[tuple[KeyPath, np.ndarray]], rules: list[Rule | None], sharded: bool
) -> list[str]:
    return [f"{kp} {x.shape} {x.dtype.str} {_describe(r)}" for (kp, x), r in zip(params, rules)] + [
        f"sharded={sharded}"
    ]


def _describe(rule: Rule | None) -> str:
    """A rule as the ranks can compare it: its repr (the built-in rules show every
    hyper-parameter) without the addresses of objects that have no repr of their own (a
    rule written in Python, alone or in a chain: its address differs by rank)."""
    return _ADDRESS.sub("", repr(rule))


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _check_same(comm: Communicator, lines: list[str], what: str) -> None:
    """Every rank has the same model and rules, or every rank raises, naming the first
    difference."""
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    digests = agree(comm, digest, what)
    if all(d == digests[0] for d in digests):
        return
    every = agree(comm, lines, what)  # all ranks see the mismatch: one more exchange
    other = next(r for r, d in enumerate(digests) if d != digests[0])
    a, b = every[0], every[other]
    i = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))

    def show(v: list[str], j: int) -> str:
        return v[j] if j < len(v) else "(nothing)"

    raise ValueError(
        f"optimisers.distributed.{what}: the ranks' models or rules differ; "
        f"every rank must set up the same model with the same rule.  Trainable "
        f"array {i}: rank 0 has {show(a, i)}, rank {other} has {show(b, i)}"
    )


def build(
    rule: RuleArg,
    model: Any,
    comm: Any,
    shard: bool,
    timeout: float,
    low_precision_state: bool,
    what: str = "setup",
) -> DistState:
    """``setup``'s work, also used by ``load_state``: check every rank agrees, deal the
    arrays, set up this rank's share."""
    c = wrap(comm, timeout)
    try:
        params = trainables(model, path=True)
        for kp, x in params:
            if not (x.flags.c_contiguous and x.flags.writeable):
                raise ValueError(
                    f"optimisers.distributed: the parameter at {kp} must be a "
                    f"writable C-contiguous array (the ranks' updates are "
                    f"gathered into it in place)"
                )
        choose = _rule_chooser(rule)
        rules = [choose(kp, x) for kp, x in params]
        lines = _fingerprint(params, rules, shard)
    except Exception as e:
        fail(c, e, what)
        raise
    _check_same(c, lines, what)
    owner: list[int | None] = (
        list(partition([x.nbytes for kp, x in params], c.size)) if shard else [None] * len(params)
    )
    index = {id(x): i for i, (kp, x) in enumerate(params)}
    try:
        with warnings.catch_warnings():
            if params:  # a share without arrays is no cause for setup's warning
                warnings.simplefilter("ignore")
            tree = _setup(
                lambda kp, x: (
                    rules[index[id(x)]] if owner[index[id(x)]] in (None, c.rank) else None
                ),
                model,
                low_precision_state=low_precision_state,
            )
        state = DistState(c, model, tree, params, rules, owner)
    except Exception as e:
        fail(c, e, what)
        raise
    agree(c, None, what)
    return state


def setup(
    rule: RuleArg,
    model: Any,
    comm: Any,
    *,
    shard: bool = True,
    timeout: float = 60.0,
    low_precision_state: bool = False,
) -> DistState:
    """Set up data-parallel training: every rank keeps the optimiser state of its share.

    Collective: every rank calls it with the same model (same structure, shapes and
    dtypes; the values are the caller's to keep equal, e.g. by one seed) and the same rule.
    The trainable arrays are dealt whole to the ranks, balanced by bytes (see
    :func:`partition`); each rank sets up the state of its own arrays only (ZeRO stage 1).

    Parameters
    ----------
    rule : Rule or callable
        As for :func:`optimisers.setup`: one rule, or ``rule_for(path, x) -> Rule | None``.
    model : nested containers of arrays
        This rank's copy of the model.  Its trainable arrays must be writable and
        C-contiguous: each step writes every rank's updated parameters into them in place.
    comm : mpi4py communicator or torch.distributed process group
        ``MPI.COMM_WORLD`` or any intra-communicator; a ``torch.distributed`` group (gloo on
        the CPU), or None for torch's default group once it is initialised.
    shard : bool, default True
        False keeps the whole state on every rank and all-reduces the gradients (simpler
        traffic for small models; the same results).
    timeout : float, default 60.0
        Seconds any rank waits for the others at a control exchange before it raises
        :class:`DistributedTimeout` (a rank that died or hangs).
    low_precision_state : bool, default False
        As for :func:`optimisers.setup`.

    Returns
    -------
    DistState
        This rank's state: pass it to ``update_`` and ``save_state``.

    Raises
    ------
    ValueError
        On every rank, when the ranks' models or rules differ (naming the first array that
        differs), or a parameter is read-only or not contiguous.
    RankFailed
        When another rank failed to set up (its error is in the message).

    Examples
    --------
    The same call on every rank of ``mpiexec -n 2 python train.py``:

    >>> from mpi4py import MPI                                  # doctest: +SKIP
    >>> import numpy as np, optimisers as opt
    >>> from optimisers import distributed as dist
    >>> model = {"w": np.ones((3, 2), np.float32), "b": np.zeros(3, np.float32)}
    >>> state = dist.setup(opt.Adam(1e-3), model, MPI.COMM_WORLD)   # doctest: +SKIP
    """
    return build(rule, model, comm, shard, timeout, low_precision_state)
