"""How the ranks agree, so that a failure on one rank never leaves another waiting.

Every collective of a distributed call that can follow a local failure is a control
exchange (:meth:`Communicator.exchange`) carrying either ``("ok", payload)`` or
``("fail", rank, message)``.  A rank that fails sends its failure in place of its next
exchange and raises its own error; every rank that receives a failure raises
:class:`RankFailed` at that same exchange.  So all ranks stop after the same exchange, and
none has entered a data collective that another will not reach: nothing hangs, and since
the last exchange of a step comes before any write (the engine's ``gate``), no rank writes
anything for a failed step.
"""

from __future__ import annotations

from typing import Any

from ._comm import Communicator, DistributedTimeout

__all__ = ["RankFailed", "agree", "fail"]


class RankFailed(RuntimeError):
    """Another rank failed in the same distributed call: this rank raises too, and has
    written nothing for it.  The message names each failed rank and its error.

    Attributes
    ----------
    failures : list of (int, str)
        ``(rank, "ExceptionType: message")`` of every rank that failed.
    """

    def __init__(self, message: str, failures: list[tuple[int, str]]) -> None:
        super().__init__(message)
        self.failures = failures


def _describe(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def agree(comm: Communicator, payload: Any, what: str) -> list[Any]:
    """One exchange of a step that went well here: every rank's payload, in rank order;
    raises :class:`RankFailed` when a rank sent a failure instead.

    >>> from optimisers.distributed import SelfComm
    >>> agree(SelfComm(), 42, "an example")
    [42]
    """
    got = comm.exchange(("ok", payload), what)
    failures = [(g[1], g[2]) for g in got if g[0] == "fail"]
    if failures:
        lines = "; ".join(f"rank {r}: {m}" for r, m in failures)
        raise RankFailed(
            f"optimisers.distributed: {what} failed on "
            f"{'rank' if len(failures) == 1 else 'ranks'} "
            f"{', '.join(str(r) for r, m in failures)} of {comm.size}, so "
            f"rank {comm.rank} stops too, having written nothing ({lines})",
            failures,
        )
    return [g[1] for g in got]


def fail(comm: Communicator, error: BaseException, what: str) -> None:
    """Tell the other ranks that this one failed (in place of its next exchange), unless
    the error came from the exchanges themselves (a failure another rank reported, or a
    timeout, after which no exchange can be trusted).  The caller then re-raises."""
    if isinstance(error, (RankFailed, DistributedTimeout)):
        return
    comm.exchange(("fail", comm.rank, _describe(error)), what)
