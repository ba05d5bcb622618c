"""Data-parallel training with sharded optimiser state: the same MLP on 1 and on N ranks.

A small regression MLP (8 inputs, a tanh hidden layer, 1 output) with hand-written
backprop is trained by AdamW after a global-norm clip.  Each step takes a global batch of
``--batch`` points; every rank computes the mean gradient of its own slice of that batch,
and ``dist.update_`` averages the ranks' gradients, steps each rank's share of the
parameters and gives every rank the new parameters.  The mean of the ranks' slice means
is the mean over the whole batch, so 1 rank and N ranks follow the same loss curve (to
the rounding of the sums).

Run it in one process, then on two::

    python examples/distributed_mlp.py
    mpiexec -n 2 python examples/distributed_mlp.py        # pip install mpi4py mpich

Rank 0 prints the loss over the whole training set every few steps, the number of ranks
and the optimiser state it holds (about half of one process's on 2 ranks).  Without
mpi4py, or outside ``mpiexec``, it runs on one rank (``dist.SelfComm``).
"""

from __future__ import annotations

import argparse
import importlib.util
import os

import numpy as np

import optimisers as opt
from optimisers import distributed as dist


def communicator() -> object:
    """MPI.COMM_WORLD under a launcher with mpi4py installed, else one process."""
    launched = any(
        k in os.environ for k in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID")
    )
    if launched and importlib.util.find_spec("mpi4py") is not None:
        mpi = importlib.import_module("mpi4py.MPI")
        return mpi.COMM_WORLD
    return dist.SelfComm()


def make_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points in 8 dimensions and a smooth target of them."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 8))
    y = np.sin(x @ rng.standard_normal(8) / 2) + 0.1 * x[:, :1].ravel() ** 2
    return x, y[:, None]


def init_model(hidden: int, seed: int = 1) -> dict[str, np.ndarray]:
    """The same initial model on every rank (one seed)."""
    rng = np.random.default_rng(seed)
    return {
        "W1": rng.standard_normal((8, hidden)) / np.sqrt(8),
        "b1": np.zeros(hidden),
        "W2": rng.standard_normal((hidden, 1)) / np.sqrt(hidden),
        "b2": np.zeros(1),
    }


def loss_and_grads(
    m: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray
) -> tuple[float, dict[str, np.ndarray]]:
    """Mean squared error over ``x`` and its gradient (backprop by hand)."""
    h = np.tanh(x @ m["W1"] + m["b1"])
    err = h @ m["W2"] + m["b2"] - y
    loss = float(np.mean(err**2))
    d = 2 * err / len(x)
    dh = (d @ m["W2"].T) * (1 - h**2)
    return loss, {"W1": x.T @ dh, "b1": dh.sum(0), "W2": h.T @ d, "b2": d.sum(0)}


def train(comm: object, steps: int, batch: int, hidden: int, every: int) -> list[float]:
    """Train; returns the whole-set loss every ``every`` steps (the same on every rank)."""
    x, y = make_data(4096)
    model = init_model(hidden)
    rule = opt.OptimiserChain(opt.ClipGlobalNorm(1.0), opt.AdamW(3e-3, lambda_=1e-4))
    state = dist.setup(rule, model, comm)
    rank, size = state.comm.rank, state.comm.size
    order = np.random.default_rng(2).permutation(len(x))
    curve = []
    for step in range(steps):
        idx = order[(step * batch + np.arange(batch)) % len(x)]
        mine = np.array_split(idx, size)[rank]  # this rank's slice of the batch
        _, grads = loss_and_grads(model, x[mine], y[mine])
        state, model = dist.update_(state, model, grads)
        if step % every == 0 or step == steps - 1:
            curve.append(loss_and_grads(model, x, y)[0])
            if rank == 0:
                print(f"step {step:4d}  loss {curve[-1]:.6f}", flush=True)
    if rank == 0:
        print(f"ranks {size}  state bytes on rank 0: {state.state_bytes()}", flush=True)
    return curve


def main(argv: list[str] | None = None) -> list[float]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--every", type=int, default=50)
    ns = p.parse_args(argv)
    return train(communicator(), ns.steps, ns.batch, ns.hidden, ns.every)


if __name__ == "__main__":
    main()
