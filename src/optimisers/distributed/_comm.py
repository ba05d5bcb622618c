"""The small communicator interface of ``optimisers.distributed``, and its two
implementations: an mpi4py communicator (:class:`MPIComm`) and a ``torch.distributed``
process group (:class:`TorchComm`).

Neither mpi4py nor torch is imported here: the caller's communicator object already
belongs to one of them, and its module is reached through it (``type(comm).__module__``),
so that ``import optimisers.distributed`` imports neither.

Data collectives move numpy arrays without copies (a torch tensor made by
``torch.from_numpy`` shares the array's memory).  The small control
exchanges (:meth:`Communicator.exchange`) are non-blocking collectives polled against a
deadline, so that a rank that never arrives makes the others raise
:class:`DistributedTimeout` instead of waiting forever.
"""

from __future__ import annotations

import os
import pickle
import sys
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import numpy as np

__all__ = ["Communicator", "DistributedTimeout", "MPIComm", "SelfComm", "TorchComm", "wrap"]


_YIELD = getattr(os, "sched_yield", None)  # Windows has none: a waiting rank sleeps there


class DistributedTimeout(TimeoutError):
    """The other ranks did not join a collective within the time limit (a rank died, hangs,
    or called the functions in another order).  The communicator cannot be used again:
    MPI cannot cancel a collective that some ranks entered."""


class Communicator:
    """What ``optimisers.distributed`` needs of a transport: the rank, the number of
    ranks, a bounded control exchange, three data collectives over numpy arrays
    (reduce-scatter, all-reduce, broadcast) and the gather and scatter of checkpoints.

    Parameters
    ----------
    timeout : float
        Seconds a control exchange waits for every rank before it raises
        :class:`DistributedTimeout`.
    """

    rank: int
    size: int
    name: str = "communicator"

    def __init__(self, timeout: float) -> None:
        self.timeout = float(timeout)

    def exchange(self, obj: Any, what: str) -> list[Any]:
        """Every rank's ``obj`` (picklable, small), in rank order, on every rank; raises
        :class:`DistributedTimeout` naming ``what`` after :attr:`timeout` seconds."""
        raise NotImplementedError

    def reduce_scatter(self, send: np.ndarray, recv: np.ndarray, counts: list[int]) -> None:
        """The sum over the ranks of the 1-D ``send``, rank ``r`` receiving the ``counts[r]``
        elements that follow those of the ranks before it into ``recv``.  ``send`` may be
        overwritten (it is the caller's scratch buffer)."""
        raise NotImplementedError

    def allreduce(self, buf: np.ndarray) -> None:
        """The sum over the ranks of the 1-D ``buf``, in place."""
        raise NotImplementedError

    def broadcast(self, jobs: Sequence[tuple[np.ndarray, int]]) -> None:
        """For each ``(array, root)``: root's array into every rank's, in place (any dtype;
        the array must be C-contiguous)."""
        raise NotImplementedError

    def gather(self, obj: Any, root: int = 0) -> list[Any] | None:
        """Every rank's ``obj`` (picklable, maybe large) on ``root``, None elsewhere."""
        raise NotImplementedError

    def scatter(self, objs: list[Any] | None, root: int = 0) -> Any:
        """``objs[r]`` of ``root`` on each rank ``r``."""
        raise NotImplementedError

    def _deadline_wait(self, done: Any, what: str) -> None:
        """Poll ``done()`` until it is true or the deadline passes (then raise)."""
        start = time.monotonic()
        deadline = start + self.timeout
        spins = 0
        while not done():
            spins += 1
            if spins > 100:
                # the other ranks are late: give the core to whoever is ready (ranks may
                # share cores; a sleep here cost a scheduler's time slice to come back
                # from on a loaded machine), and past the first fifth of a second, when
                # the others are late anyway, poll gently
                now = time.monotonic()
                if now > deadline:
                    raise DistributedTimeout(
                        f"optimisers.distributed: rank {self.rank} of {self.size} waited "
                        f"{self.timeout:g} s for the other ranks at {what}: a rank died, "
                        f"hangs, or called the distributed functions in another order "
                        f"({self.name})"
                    )
                if now - start < 0.2 and _YIELD is not None:
                    _YIELD()
                else:
                    time.sleep(1e-4)


def _flat(a: np.ndarray) -> np.ndarray:
    """The array as a 1-D view of itself (it must be C-contiguous)."""
    return a.reshape(-1)


def _as_bytes(a: np.ndarray) -> np.ndarray:
    """A 1-D byte view: any dtype (bfloat16 included) travels as bytes."""
    return a.reshape(-1).view(np.uint8)


_SLOT = 256  # bytes a rank sends in the first collective of an exchange (8: its length)


class MPIComm(Communicator):
    """An mpi4py communicator (``MPI.COMM_WORLD`` or any intra-communicator)."""

    name = "mpi4py"

    def __init__(self, comm: Any, timeout: float) -> None:
        super().__init__(timeout)
        self.comm = comm
        self.MPI = sys.modules[type(comm).__module__.rsplit(".", 1)[0] + ".MPI"]
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()

    def exchange(self, obj: Any, what: str) -> list[Any]:
        # one collective when every rank's pickle fits a slot (the step's exchanges: a
        # mask, None, the norms' partials); the lengths come with it, and a longer
        # pickle (a failure's message, setup's fingerprint) goes in a second one
        data = np.frombuffer(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL), np.uint8)
        slot = np.zeros(_SLOT, np.uint8)
        slot[:8] = np.frombuffer(np.int64(data.size).tobytes(), np.uint8)
        fits = data.size <= _SLOT - 8
        if fits:
            slot[8 : 8 + data.size] = data
        slots = np.empty((self.size, _SLOT), np.uint8)
        self._deadline_wait(self.comm.Iallgather(slot, slots).Test, what)
        counts = slots[:, :8].copy().view(np.int64).reshape(-1)
        if counts.max() <= _SLOT - 8:
            return [pickle.loads(s[8 : 8 + c].tobytes()) for s, c in zip(slots, counts)]
        displs = np.concatenate(([0], np.cumsum(counts[:-1])))
        out = np.empty(int(counts.sum()), np.uint8)
        req = self.comm.Iallgatherv(data, [out, counts, displs, self.MPI.BYTE])
        self._deadline_wait(req.Test, what)
        return [pickle.loads(out[d : d + c].tobytes()) for d, c in zip(displs, counts)]

    def reduce_scatter(self, send: np.ndarray, recv: np.ndarray, counts: list[int]) -> None:
        self.comm.Reduce_scatter(send, recv, recvcounts=counts, op=self.MPI.SUM)

    def allreduce(self, buf: np.ndarray) -> None:
        self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)

    def broadcast(self, jobs: Sequence[tuple[np.ndarray, int]]) -> None:
        # the owner sends each array straight to every other rank: the bytes of a ring
        # all-gather, with no packing (one Ibcast per array was twice as slow here,
        # bench/RESULTS.md); messages of one pair with one tag arrive in order
        reqs = []
        for j, (a, root) in enumerate(jobs):
            buf, tag = _as_bytes(a), j % 32000
            if root == self.rank:
                reqs += [
                    self.comm.Isend(buf, dest=d, tag=tag) for d in range(self.size) if d != root
                ]
            else:
                reqs.append(self.comm.Irecv(buf, source=root, tag=tag))
        self.MPI.Request.Waitall(reqs)

    def gather(self, obj: Any, root: int = 0) -> list[Any] | None:
        out: list[Any] | None = self.comm.gather(obj, root=root)
        return out

    def scatter(self, objs: list[Any] | None, root: int = 0) -> Any:
        return self.comm.scatter(objs, root=root)


class TorchComm(Communicator):
    """A ``torch.distributed`` process group (gloo on the CPU), or None for the default
    group.  Arrays travel as tensors sharing their memory (``torch.from_numpy``)."""

    name = "torch.distributed"

    def __init__(self, group: Any, timeout: float) -> None:
        super().__init__(timeout)
        self.dist = sys.modules["torch.distributed"]
        self.torch = sys.modules["torch"]
        self.group = group
        self.rank = self.dist.get_rank(group)
        self.size = self.dist.get_world_size(group)
        # torch's collectives name their root by its rank in the default group
        self._global = [
            r if group is None else self.dist.get_global_rank(group, r) for r in range(self.size)
        ]

    def _tensor(self, a: np.ndarray) -> Any:
        if a.dtype.kind not in "fc" or (a.dtype.itemsize == 2 and a.dtype != np.float16):
            a = a.view(np.uint8)  # bfloat16 and the like travel as bytes
        return self.torch.from_numpy(_flat(a))

    def _wait(self, work: Any, what: str) -> None:
        try:
            work.wait(timedelta(seconds=self.timeout))
        except RuntimeError as e:  # gloo reports its timeout as a RuntimeError
            raise DistributedTimeout(
                f"optimisers.distributed: rank {self.rank} of {self.size} waited "
                f"{self.timeout:g} s for the other ranks at {what} ({self.name}: {e})"
            ) from e

    def exchange(self, obj: Any, what: str) -> list[Any]:
        torch, dist = self.torch, self.dist
        data = np.frombuffer(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL), np.uint8)
        counts = [torch.zeros(1, dtype=torch.int64) for _ in range(self.size)]
        self._wait(
            dist.all_gather(counts, torch.tensor([data.size]), group=self.group, async_op=True),
            what,
        )
        n = [int(c) for c in counts]
        # gloo gathers equal sizes only: every rank's bytes padded to the longest
        mine = torch.zeros(max(n), dtype=torch.uint8)
        mine[: data.size] = torch.from_numpy(data.copy())
        out = [torch.empty(max(n), dtype=torch.uint8) for _ in range(self.size)]
        self._wait(dist.all_gather(out, mine, group=self.group, async_op=True), what)
        return [pickle.loads(o[:c].numpy().tobytes()) for o, c in zip(out, n)]

    def reduce_scatter(self, send: np.ndarray, recv: np.ndarray, counts: list[int]) -> None:
        # gloo has no reduce-scatter (and refuses uneven ones): all-reduce the scratch
        # buffer in place, keep this rank's slice
        self.allreduce(send)
        start = sum(counts[: self.rank])
        np.copyto(recv, send[start : start + counts[self.rank]])

    def allreduce(self, buf: np.ndarray) -> None:
        self.dist.all_reduce(self._tensor(buf), group=self.group)

    def broadcast(self, jobs: Sequence[tuple[np.ndarray, int]]) -> None:
        works = [
            self.dist.broadcast(
                self._tensor(a), self._global[root], group=self.group, async_op=True
            )
            for a, root in jobs
        ]
        for w in works:
            w.wait()

    def gather(self, obj: Any, root: int = 0) -> list[Any] | None:
        out = [None] * self.size if self.rank == root else None
        self.dist.gather_object(obj, out, dst=self._global[root], group=self.group)
        return out

    def scatter(self, objs: list[Any] | None, root: int = 0) -> Any:
        out = [None]
        self.dist.scatter_object_list(out, objs, src=self._global[root], group=self.group)
        return out[0]


class SelfComm(Communicator):
    """One process on its own (``size == 1``): for examples, tests and a script that runs
    with and without ``mpiexec`` unchanged.

    Examples
    --------
    >>> from optimisers.distributed import SelfComm
    >>> SelfComm().exchange("hello", "a test")
    ['hello']
    """

    name = "one process"

    def __init__(self, timeout: float = 60.0) -> None:
        super().__init__(timeout)
        self.rank, self.size = 0, 1

    def exchange(self, obj: Any, what: str) -> list[Any]:
        return [pickle.loads(pickle.dumps(obj))]

    def reduce_scatter(self, send: np.ndarray, recv: np.ndarray, counts: list[int]) -> None:
        np.copyto(recv, send[: counts[0]])

    def allreduce(self, buf: np.ndarray) -> None:
        pass

    def broadcast(self, jobs: Sequence[tuple[np.ndarray, int]]) -> None:
        pass

    def gather(self, obj: Any, root: int = 0) -> list[Any] | None:
        return [obj]

    def scatter(self, objs: list[Any] | None, root: int = 0) -> Any:
        return None if objs is None else objs[0]


def wrap(comm: Any, timeout: float) -> Communicator:
    """The :class:`Communicator` for ``comm``: an mpi4py communicator, a torch.distributed
    process group (``None`` means torch's default group, when one is initialised), or a
    Communicator already."""
    if isinstance(comm, Communicator):
        return comm
    module = type(comm).__module__
    if module.startswith("mpi4py"):
        return MPIComm(comm, timeout)
    if module.startswith("torch") or (comm is None and _torch_ready()):
        return TorchComm(comm, timeout)
    raise TypeError(
        f"optimisers.distributed: comm must be an mpi4py communicator (e.g. "
        f"MPI.COMM_WORLD) or a torch.distributed process group, not "
        f"{type(comm).__name__}"
    )


def _torch_ready() -> bool:
    dist = sys.modules.get("torch.distributed")
    return dist is not None and dist.is_available() and dist.is_initialized()
