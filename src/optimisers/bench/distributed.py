"""``optimisers-bench distributed``: the sharded step against its collectives, on ranks of
this machine, and what it would cost on a cluster.

Run without a launcher, it starts itself under ``mpiexec -n RANKS`` (mpi4py and an MPI,
e.g. ``pip install mpi4py mpich``) with one OpenMP thread per rank; rank 0 prints the
table.  For each size (float32 elements, dealt over ``--arrays`` equal arrays) it times,
as the median of ``--rounds`` rounds of the slowest rank's time, every case once in each
round (so that a shared machine's load weighs on all of them alike):

* ``reduce-scatter`` (``Reduce_scatter_block``), ``all-gather`` (``Allgather``) and
  ``all-reduce`` (``Allreduce`` in place) of the model's bytes;
* ``single``: ``opt.update_`` of Adam over the whole model in one process (rank 0 alone,
  the others waiting), and ``single/N``;
* ``sharded``: ``dist.update_`` (the ZeRO-1 step) with the gradients written into the
  state's buffers (``state.gradient_buffers()``), ``packed``: the same from separate
  gradient arrays (one more copy of the gradients), and ``bound = 1.2 x (reduce-scatter
  + all-gather + single/N)``, the issue's target (``x sum``: sharded over that sum);
* ``replicated``: ``dist.update_(shard=False)``: all-reduce, then every rank's full step;
* the optimiser state held per rank, sharded and replicated.

Then the cluster model: a ring collective of ``S`` bytes over ``N`` ranks moves
``(N-1)/N x S`` per link, so with link bandwidth ``B`` and latency ``a`` per hop the
sharded step costs ``2 ((N-1)/N S / B + (N-1) a) + single/N`` and the replicated one
``2 (N-1)/N S / B + 2 (N-1) a + single``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Any

import numpy as np

import optimisers as opt
from optimisers import distributed as dist
from optimisers.distributed import _step

__all__ = ["cluster_table", "main"]

_LAUNCHED = "OPTIMISERS_BENCH_DIST_LAUNCHED"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="optimisers-bench distributed",
        description="Time the sharded (ZeRO-1) Adam step against its collectives on ranks "
        "of this machine (launches itself under mpiexec), and model a cluster.",
    )
    a = p.add_argument
    a("--ranks", type=int, default=2, help="processes to launch (default 2)")
    a("--sizes", default="1e7,1e8", help="float32 elements of the model (default 1e7,1e8)")
    a("--arrays", type=int, default=16, help="equal arrays the model is dealt into (16)")
    a("--rounds", type=int, default=7, help="timed rounds; the median is shown (7)")
    a(
        "--bandwidth",
        type=float,
        default=12.5e9,
        help="cluster link bandwidth in bytes/s for the model (default 12.5e9: 100 Gb/s)",
    )
    a("--latency", type=float, default=5e-6, help="cluster latency per hop, s (5e-6)")
    a("--json", action="store_true", help="print JSON instead of a table")
    a(
        "--phases",
        action="store_true",
        help="also time each phase of the sharded step on each rank",
    )
    return p


def _interleaved(cases: dict[str, Any], comm: Any, rounds: int) -> dict[str, float]:
    """The median over rounds of the slowest rank's time of each case.

    Every case is warmed up once (first touch, plans, buffers), then each round times
    every case once, one after the other, each behind a barrier: on a shared machine the
    load then weighs on the collectives, the single-process step and the sharded step
    alike, and the ratios of the medians compare steps taken under the same conditions.
    """
    for fn in cases.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(rounds):
        mine = []
        for fn in cases.values():
            comm.Barrier()
            t0 = time.perf_counter()
            fn()
            mine.append(time.perf_counter() - t0)
        slowest = np.empty(len(mine))
        comm.Allreduce(np.array(mine), slowest, op=_mpi().MAX)
        for k, dt in zip(cases, slowest):
            times[k].append(float(dt))
    return {k: float(np.median(v)) for k, v in times.items()}


def _mpi() -> Any:
    return importlib.import_module("mpi4py.MPI")


def _model(size: int, arrays: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = size // arrays
    return {f"w{i}": rng.standard_normal(n, dtype=np.float32) for i in range(arrays)}


def measure(size: int, arrays: int, rounds: int) -> dict[str, Any]:
    """Every rank: the times of one size (rank 0's dict is the row), every case timed in
    each round (:func:`_interleaved`)."""
    MPI = _mpi()
    comm = MPI.COMM_WORLD
    n = comm.size
    per = size // arrays * arrays // n
    row: dict[str, Any] = {"size": size, "ranks": n, "arrays": arrays}
    rule = opt.Adam(1e-6)
    grads = _model(size, arrays, 1 + comm.rank)
    # the collectives of the model's bytes, ``per`` float32 elements a rank
    flat = np.ones(per * n, np.float32)
    part = np.empty(per, np.float32)
    cases: dict[str, Any] = {
        "reduce_scatter": lambda: comm.Reduce_scatter_block(flat, part),
        "all_gather": lambda: comm.Allgather(part, flat),
        "all_reduce": lambda: comm.Allreduce(MPI.IN_PLACE, flat),
    }
    # one process: rank 0 alone steps the whole model, the others wait at the next barrier
    if comm.rank == 0:
        single_model = _model(size, arrays, 0)
        single_state = opt.setup(rule, single_model)
        cases["single"] = lambda: opt.update_(single_state, single_model, grads)
        row["state_single"] = sum(a.nbytes for a in _state_arrays(single_state))
    else:
        cases["single"] = lambda: None
    model = _model(size, arrays, 0)
    sharded = dist.setup(rule, model, comm)
    buffers = _filled(sharded, grads)
    cases["sharded"] = lambda: dist.update_(sharded, model, buffers)
    cases["sharded_packed"] = lambda: dist.update_(sharded, model, grads)
    replicated = dist.setup(rule, model, comm, shard=False)
    replicated_buffers = _filled(replicated, grads)
    cases["replicated"] = lambda: dist.update_(replicated, model, replicated_buffers)
    row.update(_interleaved(cases, comm, rounds))
    row["state_sharded"] = comm.allreduce(sharded.state_bytes(), op=MPI.MAX)
    row["state_replicated"] = comm.allreduce(replicated.state_bytes(), op=MPI.MAX)
    row["bound"] = 1.2 * (row["reduce_scatter"] + row["all_gather"] + row["single"] / n)
    return row


PHASES = _step.PHASES


def phases(size: int, arrays: int, rounds: int) -> list[list[float]]:
    """Every rank: the median time of each phase of the sharded step (:data:`PHASES`, as
    ``dist.update_`` runs them) and of the whole step, both timed in each round; rank 0
    gets every rank's row, the others an empty list."""
    comm = _mpi().COMM_WORLD
    grads = _model(size, arrays, 1 + comm.rank)
    model = _model(size, arrays, 0)
    state = dist.setup(opt.Adam(1e-6), model, comm)
    buffers = _filled(state, grads)

    def phased() -> list[float]:
        t = [time.perf_counter()]
        for _phase in _step.phases(state, model, buffers):
            t.append(time.perf_counter())
        return list(np.diff(t))

    phased()
    dist.update_(state, model, buffers)
    rows = []
    for _ in range(rounds):
        comm.Barrier()
        times = phased()
        comm.Barrier()
        t0 = time.perf_counter()
        dist.update_(state, model, buffers)
        rows.append([*times, time.perf_counter() - t0])
    mine = [float(x) for x in np.median(rows, axis=0)]
    every = comm.gather(mine, root=0)
    return every if every is not None else []


def _phase_text(size: int, every: list[list[float]]) -> str:
    head = " ".join(f"{p:>14}" for p in (*PHASES, "sum", "update_"))
    lines = [f"phases of the sharded step at {size:.0e}, median per rank (ms):", f"rank {head}"]
    for r, t in enumerate(every):
        cells = [*t[:-1], sum(t[:-1]), t[-1]]
        lines.append(f"{r:4d} " + " ".join(f"{1e3 * c:14.2f}" for c in cells))
    return "\n".join(lines) + "\n"


def _filled(state: Any, grads: dict[str, np.ndarray]) -> Any:
    """The state's gradient buffers holding ``grads`` (the step then packs nothing)."""
    buffers = state.gradient_buffers()
    for k, g in grads.items():
        buffers[k][...] = g
    return buffers


def _state_arrays(tree: Any) -> list[np.ndarray]:
    out: list[np.ndarray] = []

    def walk(s: Any) -> None:
        if isinstance(s, np.ndarray):
            out.append(s)
        elif isinstance(s, opt.Leaf):
            walk(s.state)
        elif isinstance(s, dict):
            for v in s.values():
                walk(v)
        elif isinstance(s, (list, tuple)):
            for v in s:
                walk(v)

    walk(tree)
    return out


def cluster_table(
    row: dict[str, Any], bandwidth: float, latency: float, ranks: tuple[int, ...] = (8, 64, 512)
) -> list[dict[str, float]]:
    """The modelled step on a cluster from one measured row: ring collectives of the
    model's bytes at ``bandwidth`` bytes/s and ``latency`` s per hop, the local update at
    the measured single-process speed divided by N.

    Examples
    --------
    >>> from optimisers.bench.distributed import cluster_table
    >>> t = cluster_table({"size": 10**8, "single": 0.2}, 12.5e9, 5e-6, (8,))
    >>> round(t[0]["sharded"], 4), round(t[0]["replicated"], 4)
    (0.0811, 0.2561)
    """
    nbytes = 4 * row["size"]
    out = []
    for n in ranks:
        wire = (n - 1) / n * nbytes / bandwidth + (n - 1) * latency
        out.append(
            {
                "ranks": n,
                "reduce_scatter": wire,
                "all_gather": wire,
                "update": row["single"] / n,
                "sharded": 2 * wire + row["single"] / n,
                "replicated": 2 * wire + row["single"],
                "comm_share": 2 * wire / (2 * wire + row["single"] / n),
            }
        )
    return out


def _text(rows: list[dict[str, Any]], ns: argparse.Namespace) -> str:
    def ms(t: float) -> str:
        return f"{1e3 * t:9.2f}"

    title = (
        f"optimisers {opt.__version__}, kernels {opt.kernel_isa()}, {rows[0]['ranks']} "
        f"ranks of this machine, 1 OpenMP thread each, float32 Adam, median of "
        f"{ns.rounds} rounds (ms)"
    )
    head = (
        f"{'size':>8} {'red-scat':>9} {'all-gath':>9} {'all-red':>9} {'single':>9} "
        f"{'single/N':>9} {'sharded':>9} {'bound':>9} {'x sum':>6} {'packed':>9} {'replic.':>9} "
        f"{'ok':>3} {'state/rank MB':>14} {'replic. MB':>10}"
    )
    lines = [title, "", head]
    for r in rows:
        ok = r["sharded"] <= r["bound"] and r["sharded"] < r["replicated"]
        parts = r["reduce_scatter"] + r["all_gather"] + r["single"] / r["ranks"]
        lines.append(
            f"{r['size']:8.0e} {ms(r['reduce_scatter'])} {ms(r['all_gather'])} "
            f"{ms(r['all_reduce'])} {ms(r['single'])} {ms(r['single'] / r['ranks'])} "
            f"{ms(r['sharded'])} {ms(r['bound'])} {r['sharded'] / parts:6.2f} "
            f"{ms(r['sharded_packed'])} "
            f"{ms(r['replicated'])} "
            f"{'yes' if ok else 'NO':>3} {r['state_sharded'] / 1e6:14.1f} "
            f"{r['state_replicated'] / 1e6:10.1f}"
        )
    model = (
        f"cluster model: links of {ns.bandwidth / 1e9:g} GB/s, {ns.latency * 1e6:g} "
        f"us per hop, the local update at this machine's single-process speed / N"
    )
    lines += ["", model]
    for r in rows:
        lines.append(f"  size {r['size']:.0e}:")
        for c in cluster_table(r, ns.bandwidth, ns.latency):
            lines.append(
                f"    N={c['ranks']:4d}: sharded {1e3 * c['sharded']:8.2f} ms "
                f"(collectives {1e3 * 2 * c['reduce_scatter']:7.2f}, update "
                f"{1e3 * c['update']:7.3f}; {100 * c['comm_share']:4.1f}% "
                f"communication), replicated {1e3 * c['replicated']:8.2f} ms"
            )
    return "\n".join(lines) + "\n"


def _launch(argv: list[str], ranks: int) -> int:
    exe = shutil.which(
        "mpiexec", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    )
    if exe is None:
        print(
            "optimisers-bench distributed: no mpiexec found (pip install mpi4py mpich)",
            file=sys.stderr,
        )
        return 2
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="passive")
    env[_LAUNCHED] = "1"
    cmd = [exe, "-n", str(ranks), sys.executable, "-m", "optimisers.bench", "distributed", *argv]
    return subprocess.call(cmd, env=env)


def main(argv: list[str]) -> int:
    """The ``distributed`` mode of ``optimisers-bench``; returns the exit status."""
    ns = _parser().parse_args(argv)
    if not os.environ.get(_LAUNCHED):
        return _launch(argv, ns.ranks)
    comm = _mpi().COMM_WORLD
    sizes = [int(float(s)) for s in ns.sizes.split(",")]
    rows = [measure(size, ns.arrays, ns.rounds) for size in sizes]
    split = [(size, phases(size, ns.arrays, ns.rounds)) for size in sizes] if ns.phases else []
    if comm.rank == 0:
        if ns.json:
            out = json.dumps(
                {
                    "rows": rows,
                    "cluster": {
                        str(r["size"]): cluster_table(r, ns.bandwidth, ns.latency) for r in rows
                    },
                    "phases": {
                        str(size): [dict(zip((*PHASES, "update_"), t)) for t in every]
                        for size, every in split
                    },
                },
                indent=1,
            )
            sys.stdout.write(out + "\n")
        else:
            sys.stdout.write(_text(rows, ns))
            for size, every in split:
                sys.stdout.write("\n" + _phase_text(size, every))
        sys.stdout.flush()
    return 0
