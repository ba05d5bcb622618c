"""The checks of ``optimisers.distributed`` that need several processes, run by
tests/test_distributed.py as ``mpiexec -n N python tests/mpi/dist_check.py SCENARIO [ARG]``.

Every rank runs the scenario; each rank computes, from the seeds, every rank's gradient,
so it knows the averaged gradient and can run the one-process reference itself
(``opt.update_`` with that gradient).  A rank prints ``OK <scenario> rank <r>`` when all
its checks passed; a failed check aborts the whole job (exit code 1).
"""

from __future__ import annotations

import copy
import hashlib
import os
import sys
import time
import traceback
from typing import Any

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import optimisers as opt
from optimisers import distributed as dist
from registry import RULES

SHAPES = {"a": (37, 5), "b": (13,), "c": (3, 4, 2), "d": (1,), "e": (64,), "f": (2, 3), "g": (5, 7)}


def make_model(dtype: Any, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(dtype) for k, s in SHAPES.items()}


def grads_of(rank: int, step: int, model: dict[str, np.ndarray]) -> dict[str, Any]:
    """Rank ``rank``'s gradient at ``step``: ``d`` has none on rank 1 at step 1, ``f`` none
    on any rank at step 2."""
    rng = np.random.default_rng(1000 * step + rank + 7)
    g: dict[str, Any] = {k: rng.standard_normal(x.shape).astype(x.dtype) for k, x in model.items()}
    if step == 1 and rank == 1:
        g["d"] = None
    if step == 2:
        g["f"] = None
    return g


def averaged(
    step: int, model: dict[str, np.ndarray], size: int, grads: Any = grads_of
) -> dict[str, Any]:
    """The averaged gradient as the docs define it: the ranks' gradients summed in rank
    order in the sum dtype (a None counts as zeros), divided by the number of ranks."""
    every = [grads(r, step, model) for r in range(size)]
    out: dict[str, Any] = {}
    for k, x in model.items():
        dt = dist.sum_dtype(x.dtype)
        gs = [e.get(k) for e in every]
        if all(g is None for g in gs):
            out[k] = None
            continue
        total = None
        for g in gs:
            g = np.zeros(x.shape, dt) if g is None else np.asarray(g, dt)
            total = g if total is None else total + g
        out[k] = total / np.asarray(size, dt)
    return out


def digest(model: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for k in sorted(model):
        h.update(np.ascontiguousarray(model[k]).tobytes())
    return h.hexdigest()


def same(
    comm: Any, model: dict[str, np.ndarray], ref: dict[str, np.ndarray], what: str, rtol: float
) -> None:
    """Every rank holds the same model; bit for bit the reference on 1 and 2 ranks, within
    ``rtol`` on more."""
    hashes = comm.allgather(digest(model))
    assert len(set(hashes)) == 1, f"{what}: the ranks' models differ: {hashes}"
    for k, want in ref.items():
        if comm.size <= 2:
            assert np.array_equal(model[k], want), (
                f"{what}: {k} differs from one process: {model[k].ravel()[:4]} vs "
                f"{want.ravel()[:4]}"
            )
        else:
            np.testing.assert_allclose(model[k], want, rtol=rtol, atol=rtol, err_msg=f"{what}: {k}")


def rtol_of(dtype: Any) -> float:
    return 2e-4 if dtype == np.float32 else 1e-9


def into_buffers(state: Any, g: dict[str, Any]) -> dict[str, Any]:
    """``g`` written into the state's gradient buffers (None stays None)."""
    buffers = state.gradient_buffers()
    out: dict[str, Any] = {}
    for k, v in g.items():
        if v is None:
            out[k] = None
        else:
            buffers[k][...] = v
            out[k] = buffers[k]
    return out


def train_pair(
    comm: Any,
    rule: Any,
    dtype: Any,
    steps: int,
    what: str,
    freeze: str | None = "c",
    shard: bool = True,
    buffers: bool = False,
) -> None:
    """Train the distributed model and the one-process reference side by side."""
    model = make_model(dtype)
    ref = copy.deepcopy(model)
    state = dist.setup(rule, model, comm, shard=shard)
    ref_state = opt.setup(rule, ref)
    if freeze:
        if state.tree[freeze] is not None:
            opt.freeze_(state.tree[freeze])
        opt.freeze_(ref_state[freeze])
    for step in range(steps):
        g = grads_of(comm.rank, step, model)
        if buffers:
            g = into_buffers(state, g)
        state, model = dist.update_(state, model, g)
        ref_state, ref = opt.update_(ref_state, ref, averaged(step, ref, comm.size))
        same(comm, model, ref, f"{what} step {step}", rtol_of(dtype))
    if freeze:
        assert np.array_equal(model[freeze], make_model(dtype)[freeze]), f"{what}: frozen moved"
    # state bytes: this rank's share only (for states that grow with the parameters)
    per_leaf = [sum(a.nbytes for a in _arrays(lf.state)) for lf in _leaves(ref_state)]
    params = sum(x.nbytes for x in ref.values())
    if shard and comm.size > 1 and sum(per_leaf) >= params:
        mine = state.state_bytes()
        assert mine <= sum(per_leaf) / comm.size + max(per_leaf), (
            f"{what}: rank {comm.rank} holds {mine} state bytes of {sum(per_leaf)}"
        )


def _leaves(tree: Any) -> list[Any]:
    if isinstance(tree, opt.Leaf):
        return [tree]
    if isinstance(tree, dict):
        return [lf for v in tree.values() for lf in _leaves(v)]
    return []


def _arrays(s: Any) -> list[np.ndarray]:
    if isinstance(s, np.ndarray):
        return [s]
    if isinstance(s, (tuple, list)):
        return [a for p in s for a in _arrays(p)]
    return []


EXTRA = [
    ("ClipGlobalNorm-Adam", opt.OptimiserChain(opt.ClipGlobalNorm(0.5), opt.Adam(0.05))),
    ("ClipGlobalNorm-inf", opt.OptimiserChain(opt.ClipGlobalNorm(0.3, np.inf), opt.Momentum(0.1))),
    ("ClipNorm-Adam", opt.OptimiserChain(opt.ClipNorm(0.5), opt.Adam(0.05))),
]


def scenario_rules(comm: Any, which: str) -> None:
    """Every rule of tests/registry.py (``which``: all, or a comma-separated list of ids),
    float32 and float64, 3 steps, a frozen array, None gradients, uneven shares."""
    rules = RULES + EXTRA
    if which != "all":
        keep = which.split(",")
        rules = [(n, r) for n, r in rules if n in keep]
    for name, rule in rules:
        for dtype in (np.float32, np.float64):
            train_pair(comm, rule, dtype, 3, f"{name} {np.dtype(dtype).name}")


def scenario_replicated(comm: Any) -> None:
    """The all-reduce mode: the same results, the whole state on every rank."""
    for name, rule in EXTRA + [("Adam", opt.Adam(0.05)), ("Lion", opt.Lion(0.01))]:
        train_pair(comm, rule, np.float32, 3, f"replicated {name}", shard=False)
        train_pair(
            comm, rule, np.float64, 3, f"replicated buffers {name}", shard=False, buffers=True
        )
        train_pair(comm, rule, np.float32, 3, f"sharded buffers {name}", buffers=True)


def scenario_mixed(comm: Any) -> None:
    """One model of float16, float32, float64 and complex arrays: one bucket per sum dtype
    (float16 sums in float32), each bit for bit one process on 2 ranks."""
    rng = np.random.default_rng(3)
    dtypes = {
        "h": np.float16,
        "s": np.float32,
        "d": np.float64,
        "z": np.complex64,
        "s2": np.float32,
    }
    base = {
        k: (
            rng.standard_normal(9 + len(k))
            + (1j if np.dtype(t).kind == "c" else 0) * rng.standard_normal(9 + len(k))
        ).astype(t)
        for k, t in dtypes.items()
    }

    def grads(rank: int, step: int, model: Any) -> Any:
        r = np.random.default_rng(100 * step + rank)
        return {
            k: (
                r.standard_normal(x.shape)
                + (1j if x.dtype.kind == "c" else 0) * r.standard_normal(x.shape)
            ).astype(x.dtype)
            for k, x in model.items()
        }

    for rule in (opt.Adam(0.05), opt.OptimiserChain(opt.ClipGlobalNorm(0.5), opt.Momentum())):
        model, ref = copy.deepcopy(base), copy.deepcopy(base)
        state, ref_state = dist.setup(rule, model, comm), opt.setup(rule, ref)
        assert len(state.buckets) == 3  # float32 (h, s, s2), float64, complex64
        for step in range(3):
            state, model = dist.update_(state, model, grads(comm.rank, step, model))
            ref_state, ref = opt.update_(ref_state, ref, averaged(step, ref, comm.size, grads))
            same(comm, model, ref, f"mixed {rule!r} step {step}", 2e-3)


def scenario_skip(comm: Any) -> None:
    """A NaN in one rank's gradient skips the step on every rank, as in one process."""
    rule = opt.OptimiserChain(opt.SkipNonFinite(2), opt.ClipGlobalNorm(1.0), opt.Adam(0.05))

    def grads(rank: int, step: int, model: Any) -> Any:
        g = grads_of(rank, step, model)
        if step == 1 and rank == comm.size - 1:
            g["b"] = g["b"].copy()
            g["b"][3] = np.nan
        return g

    model = make_model(np.float32)
    ref = copy.deepcopy(model)
    state, ref_state = dist.setup(rule, model, comm), opt.setup(rule, ref)
    for step in range(3):
        before = digest(model)
        state, model = dist.update_(state, model, grads(comm.rank, step, model))
        ref_state, ref = opt.update_(ref_state, ref, averaged(step, ref, comm.size, grads))
        same(comm, model, ref, f"skip step {step}", 2e-4)
        if step == 1:
            assert digest(model) == before, "the skipped step moved the model"
    skipped = [
        int(lf.state[0].skipped)
        for lf in _leaves(state.tree)
        if isinstance(lf.state, tuple) and hasattr(lf.state[0], "skipped")
    ]
    assert all(s == 1 for s in skipped), skipped


class Boom(opt.Rule):
    """A rule written in Python that fails on demand (the fault of a rank's own step)."""

    armed = False

    def init(self, x: np.ndarray) -> None:
        return None

    def apply(self, state: Any, x: np.ndarray, dx: np.ndarray) -> tuple[Any, np.ndarray]:
        if Boom.armed:
            raise RuntimeError("Boom: this rule failed on purpose")
        return state, 0.1 * dx


def expect_failure(
    comm: Any,
    state: Any,
    model: Any,
    grads: Any,
    own: type,
    what: str,
    owner_fails: int | None = None,
) -> None:
    """The step raises on every rank (``own`` on a failing rank, RankFailed on the others,
    in bounded time) and writes nothing anywhere."""
    before = digest(model)
    leaves = {id(lf): copy.deepcopy(lf.state) for lf in state.leaves if lf is not None}
    counts = [lf.count for lf in state.leaves if lf is not None]
    t0 = time.monotonic()
    try:
        dist.update_(state, model, grads)
    except dist.RankFailed as e:
        assert owner_fails is None or comm.rank != owner_fails, f"{what}: {e}"
        assert "rank" in str(e), e
        got = "RankFailed"
    except own as e:
        got = type(e).__name__
        print(f"rank {comm.rank} {what}: {got}: {e}", flush=True)
    else:
        raise AssertionError(f"{what}: no error on rank {comm.rank}")
    assert time.monotonic() - t0 < 20, f"{what}: took too long"
    assert digest(model) == before, f"{what}: rank {comm.rank} wrote its parameters"
    assert [lf.count for lf in state.leaves if lf is not None] == counts
    for lf in state.leaves:
        if lf is not None:
            a, b = _arrays(lf.state), _arrays(leaves[id(lf)])
            assert all(np.array_equal(x, y) for x, y in zip(a, b)), (
                f"{what}: rank {comm.rank} wrote its state"
            )
    kinds = comm.allgather(got)
    assert any(k != "RankFailed" for k in kinds), f"{what}: {kinds}"


def check_exchange(comm: Any) -> None:
    """The control exchange returns every rank's object, whether its pickle fits the first
    collective's slot, no rank's does, or only some ranks' do (then a second one)."""
    c = dist.MPIComm(comm, 10.0)
    for length in (0, 200, 240, 250, 1000):
        for longer in range(comm.size + 1):  # the ranks from ``longer`` on send 3x as much
            mine = (comm.rank, "x" * (length * (3 if comm.rank >= longer else 1)))
            got = c.exchange(mine, "a test")
            assert got == [
                (r, "x" * (length * (3 if r >= longer else 1))) for r in range(comm.size)
            ], (length, longer)


def scenario_faults(comm: Any) -> None:
    """A bad gradient, a failing rule, a non-finite global norm, mismatched models and
    rules: every rank raises, nothing is written, training goes on."""
    check_exchange(comm)
    last = comm.size - 1

    def rule_for(kp, x):
        return Boom() if kp == opt.KeyPath("e") else opt.Adam(0.05)

    model = make_model(np.float32)
    ref = copy.deepcopy(model)
    state, ref_state = dist.setup(rule_for, model, comm), opt.setup(rule_for, ref)
    step = 0

    def good() -> None:
        nonlocal state, model, ref_state, ref, step
        state, model = dist.update_(state, model, grads_of(comm.rank, step, model))
        ref_state, ref = opt.update_(ref_state, ref, averaged(step, ref, comm.size))
        same(comm, model, ref, f"faults, good step {step}", 2e-4)
        step += 1

    good()
    g = grads_of(comm.rank, step, model)
    if comm.rank == last:
        g["b"] = np.ones(14, np.float32)
    expect_failure(comm, state, model, g, ValueError, "wrong shape", None)
    g = grads_of(comm.rank, step, model)
    if comm.rank == last:
        g["zz"] = np.ones(3, np.float32)
    expect_failure(comm, state, model, g, (TypeError, ValueError, KeyError), "wrong structure")
    good()
    owner = state.owner[state.paths.index(opt.KeyPath("e"))]
    Boom.armed = True
    expect_failure(
        comm, state, model, grads_of(comm.rank, step, model), RuntimeError, "a rule raising", None
    )
    Boom.armed = False
    good()
    # a state that does not fit its array on the owner rank only (as a checkpoint of other
    # arrays would leave it): found while routing, told to the other ranks, no hang
    # (a new Leaf, planned afresh: its state is checked while routing)
    i = state.paths.index(opt.KeyPath("a"))
    kept = state.leaves[i]
    if kept is not None:
        misfit = opt.init(opt.Adam(0.05), np.zeros(3, np.float32))
        state.leaves[i] = opt.Leaf(kept.rule, misfit)
    expect_failure(
        comm, state, model, grads_of(comm.rank, step, model), ValueError, "a misfit state"
    )
    state.leaves[i] = kept
    good()
    # a rule that fails after the global norm was agreed (a late program), on one rank only
    late = opt.OptimiserChain(opt.ClipGlobalNorm(1.0), Boom())
    m3 = make_model(np.float32)
    s3 = dist.setup(
        lambda kp, x: (
            late
            if kp == opt.KeyPath("e")
            else opt.OptimiserChain(opt.ClipGlobalNorm(1.0), opt.Adam(0.05))
        ),
        m3,
        comm,
    )
    Boom.armed = True
    expect_failure(
        comm,
        s3,
        m3,
        grads_of(comm.rank, 0, m3),
        RuntimeError,
        "a rule raising after the global norm",
    )
    Boom.armed = False
    s3, m3 = dist.update_(s3, m3, grads_of(comm.rank, 0, m3))
    # a non-finite global norm with throw=True: every rank raises FloatingPointError
    clip = opt.OptimiserChain(opt.ClipGlobalNorm(1.0), opt.Adam(0.05))
    m2 = make_model(np.float32)
    s2 = dist.setup(clip, m2, comm)
    g = grads_of(comm.rank, 0, m2)
    if comm.rank == last:
        g["a"] = g["a"].copy()
        g["a"][0, 0] = np.inf
    expect_failure(comm, s2, m2, g, FloatingPointError, "non-finite global norm")
    # mismatched models and rules at setup
    bad = make_model(np.float32)
    if comm.rank == last:
        bad["g"] = np.zeros((5, 8), np.float32)
    try:
        dist.setup(opt.Adam(), bad, comm)
        raise AssertionError("a mismatched model was accepted")
    except ValueError as e:
        assert "g" in str(e) and "differ" in str(e), e
    r = opt.Adam(0.1 if comm.rank == 0 else 0.2)
    try:
        dist.setup(r, make_model(np.float32), comm)
        raise AssertionError("mismatched rules were accepted")
    except ValueError as e:
        assert "Adam" in str(e), e
    del owner
    good()


def scenario_timeout(comm: Any) -> None:
    """A rank that never arrives: the others raise DistributedTimeout within the limit."""
    model = make_model(np.float32)
    state = dist.setup(opt.Adam(), model, comm, timeout=2.0)
    if comm.rank == comm.size - 1:  # the late rank: nothing to check here
        print(f"OK timeout rank {comm.rank}", flush=True)
        time.sleep(6)
        os._exit(0)
    t0 = time.monotonic()
    try:
        dist.update_(state, model, grads_of(comm.rank, 0, model))
        raise AssertionError("no timeout")
    except dist.DistributedTimeout as e:
        waited = time.monotonic() - t0
        assert 1.5 < waited < 5.0, waited
        assert "2 s" in str(e), e
    print(f"OK timeout rank {comm.rank}", flush=True)
    os._exit(0)  # the abandoned collective cannot be finalised


def scenario_save(comm: Any, path: str) -> None:
    """Train 2 steps on this many ranks, save; one process must read the state it would
    have had; then 2 more steps, kept for the resumed runs to match."""
    rule = opt.OptimiserChain(opt.ClipGlobalNorm(1.0), opt.AdamW(0.05, lambda_=0.1))
    model = make_model(np.float32)
    ref = copy.deepcopy(model)
    state, ref_state = dist.setup(rule, model, comm), opt.setup(rule, ref)
    if state.tree["c"] is not None:
        opt.freeze_(state.tree["c"])
    opt.freeze_(ref_state["c"])
    for step in range(2):
        state, model = dist.update_(state, model, grads_of(comm.rank, step, model))
        ref_state, ref = opt.update_(ref_state, ref, averaged(step, ref, comm.size))
    dist.save_state(path, state)
    if comm.rank == 0:
        np.savez(path + ".model.npz", **model)
        loaded = opt.load_state(path)
        if comm.size <= 2:
            assert loaded == ref_state, "the checkpoint is not the state of one process"
        assert loaded["c"].frozen and loaded["a"].count == 2
    for step in range(2, 4):
        state, model = dist.update_(state, model, grads_of(comm.rank, step, model))
    if comm.rank == 0:
        np.savez(path + f".final{comm.size}.npz", **model)


def scenario_load(comm: Any, path: str) -> None:
    """Resume the checkpoint on this many ranks: equal to one process that loads it and
    steps with this many ranks' averaged gradients; bit for bit the run that saved it when
    the number of ranks is the same."""
    with np.load(path + ".model.npz") as f:
        model = {k: f[k].copy() for k in SHAPES}
    ref = copy.deepcopy(model)
    state = dist.load_state(path, model, comm)
    ref_state = opt.load_state(path)
    assert (state.tree["c"] is None) or state.tree["c"].frozen
    for step in range(2, 4):
        state, model = dist.update_(state, model, grads_of(comm.rank, step, model))
        ref_state, ref = opt.update_(ref_state, ref, averaged(step, ref, comm.size))
        same(comm, model, ref, f"resumed step {step}", 2e-4)
    final = path + f".final{comm.size}.npz"
    if os.path.exists(final):
        with np.load(final) as f:
            for k in SHAPES:
                assert np.array_equal(f[k], model[k]), f"resumed {k} differs from the run"


def scenario_torch(comm: Any, port: str) -> None:
    """The same API over a torch.distributed gloo group."""
    import torch.distributed as tdist

    tdist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=comm.rank, world_size=comm.size
    )
    group = tdist.new_group(list(range(comm.size)), backend="gloo")
    for name, rule in EXTRA + [
        ("Adam", opt.Adam(0.05)),
        ("Skip", opt.OptimiserChain(opt.SkipNonFinite(), opt.Lion())),
    ]:
        train_pair(comm, rule, np.float32, 3, f"torch {name}", freeze=None)
        model = make_model(np.float64)
        ref = copy.deepcopy(model)
        state, ref_state = dist.setup(rule, model, group), opt.setup(rule, ref)
        for step in range(3):
            state, model = dist.update_(state, model, grads_of(comm.rank, step, model))
            ref_state, ref = opt.update_(ref_state, ref, averaged(step, ref, comm.size))
            same(comm, model, ref, f"torch-gloo {name} step {step}", 1e-9)
    g = grads_of(comm.rank, 3, model)
    if comm.rank == 0:
        g["a"] = np.ones(3)
    expect_failure(comm, state, model, g, ValueError, "torch: wrong shape")
    tdist.destroy_process_group()


def main() -> None:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    name, arg = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else "all")
    try:
        if name == "rules":
            scenario_rules(comm, arg)
        elif name == "replicated":
            scenario_replicated(comm)
        elif name == "mixed":
            scenario_mixed(comm)
        elif name == "skip":
            scenario_skip(comm)
        elif name == "faults":
            scenario_faults(comm)
        elif name == "timeout":
            scenario_timeout(comm)
        elif name == "save":
            scenario_save(comm, arg)
        elif name == "load":
            scenario_load(comm, arg)
        elif name == "torch":
            scenario_torch(comm, arg)
        else:
            raise SystemExit(f"unknown scenario {name}")
    except BaseException:  # any failure must abort every rank, not hang them
        traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        comm.Abort(1)
        os._exit(1)
    print(f"OK {name} rank {comm.rank}", flush=True)


if __name__ == "__main__":
    main()
