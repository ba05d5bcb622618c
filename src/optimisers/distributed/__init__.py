"""Data-parallel training over MPI (mpi4py) or ``torch.distributed``, with the optimiser
state sharded over the ranks (ZeRO stage 1).

Every rank runs the same script on its own batches::

    from mpi4py import MPI
    from optimisers import distributed as dist
    state = dist.setup(rule, model, MPI.COMM_WORLD)     # each rank keeps its share's state
    state, model = dist.update_(state, model, grads)    # grads: this rank's; averaged
    dist.save_state(path, state)                        # collective; one file

The trainable arrays are dealt whole to the ranks, balanced by bytes (:func:`partition`);
each step reduce-scatters the gradients, packed by dtype and owner, so that each rank
receives the sum of its own arrays' gradients, averages them and steps its share with the
engine and kernels of :func:`optimisers.update_`; the owners then send the new values
straight into every rank's arrays.  On every rank the model equals what one process gets from
``opt.update_`` with the averaged gradient: bit for bit on two ranks, within the
rounding of MPI's summation order on more.  Every rank must call these functions in the
same order.  Importing this module imports neither mpi4py nor torch.

>>> import numpy as np, optimisers as opt
>>> from optimisers import distributed as dist
>>> model = {"w": np.ones(4, np.float32), "b": np.zeros(2, np.float32)}
>>> state = dist.setup(opt.Adam(0.1), model, dist.SelfComm())   # MPI.COMM_WORLD in a job
>>> state, model = dist.update_(state, model, {"w": np.ones(4, np.float32), "b": None})
>>> model["w"]
array([0.9, 0.9, 0.9, 0.9], dtype=float32)
"""

from ._checkpoint import load_state, save_state
from ._comm import Communicator, DistributedTimeout, MPIComm, SelfComm, TorchComm
from ._protocol import RankFailed
from ._shard import DistState, partition, setup, sum_dtype
from ._step import update_

__all__ = [
    "Communicator",
    "DistState",
    "DistributedTimeout",
    "MPIComm",
    "RankFailed",
    "SelfComm",
    "TorchComm",
    "load_state",
    "partition",
    "save_state",
    "setup",
    "sum_dtype",
    "update_",
]
