"""optimisers.distributed: the partition, the one-process communicator, the hooks of the
engine (in this process), and the multi-process checks under ``mpiexec -n 2, 3, 4``
(tests/mpi/dist_check.py, each run a subprocess with a time limit).

The multi-process tests skip, with the reason, where mpi4py or an ``mpiexec`` is missing;
CI's optional stage installs ``mpi4py mpich`` (wheels) and runs them.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import optimisers as opt
from optimisers import distributed as dist
from optimisers.bench import distributed as bench_distributed
from registry import RULES

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "mpi" / "dist_check.py"


# ----------------------------------------------------------------------------------------
# in this process


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7])
def test_partition_balanced_whole_arrays(n: int) -> None:
    rng = np.random.default_rng(n)
    sizes = [int(s) for s in rng.integers(1, 10_000, 40)] + [50_000]
    owner = dist.partition(sizes, n)
    assert len(owner) == len(sizes) and set(owner) <= set(range(n))
    loads = [sum(s for s, o in zip(sizes, owner) if o == r) for r in range(n)]
    assert max(loads) <= sum(sizes) / n + max(sizes)
    if n > 1:  # the big array alone on a rank, the rest spread
        assert loads[owner[-1]] == 50_000 or max(loads) - min(loads) <= max(sizes)
    assert dist.partition(sizes, n) == owner  # the same on every rank


def test_partition_uneven_and_empty() -> None:
    assert dist.partition([], 3) == []
    assert dist.partition([8, 8], 4) == [0, 1]  # ranks 2 and 3 own nothing


def test_sum_dtype() -> None:
    assert dist.sum_dtype(np.dtype(np.float16)) == np.float32
    assert dist.sum_dtype(np.dtype(np.float64)) == np.float64
    assert dist.sum_dtype(np.dtype(np.complex64)) == np.complex64


def _model(dtype: Any) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    return {
        "a": rng.standard_normal((6, 5)).astype(dtype),
        "b": (rng.standard_normal(7).astype(dtype), np.tanh),
        "c": rng.standard_normal(3).astype(dtype),
    }


def _grads(step: int, dtype: Any) -> dict[str, Any]:
    rng = np.random.default_rng(step + 10)
    return {
        "a": rng.standard_normal((6, 5)).astype(dtype),
        "b": (rng.standard_normal(7).astype(dtype), None),
        "c": None if step == 1 else rng.standard_normal(3).astype(dtype),
    }


@pytest.mark.parametrize("name,rule", RULES, ids=[n for n, _ in RULES])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_rank_is_update_(name: str, rule: opt.Rule, dtype: Any) -> None:
    """On one rank (SelfComm) the distributed step is update_'s, bit for bit."""
    model, ref = _model(dtype), _model(dtype)
    state, ref_state = dist.setup(rule, model, dist.SelfComm()), opt.setup(rule, ref)
    for step in range(3):
        state, model = dist.update_(state, model, _grads(step, dtype))
        ref_state, ref = opt.update_(ref_state, ref, _grads(step, dtype))
        for k in ("a", "c"):
            assert np.array_equal(model[k], ref[k]), (name, step, k)
        assert np.array_equal(model["b"][0], ref["b"][0])


def test_bad_gradient_names_the_path_and_writes_nothing() -> None:
    model = _model(np.float32)
    state = dist.setup(opt.Adam(), model, dist.SelfComm())
    before = copy.deepcopy(model)
    g = _grads(0, np.float32)
    g["b"] = (np.ones(8, np.float32), None)
    with pytest.raises(ValueError, match=r"b\.0"):
        dist.update_(state, model, g)
    assert np.array_equal(model["a"], before["a"])
    assert state.tree["a"].count == 0


def test_another_model_refused() -> None:
    model = _model(np.float32)
    state = dist.setup(opt.Adam(), model, dist.SelfComm())
    with pytest.raises(ValueError, match="not the array the state was set up with"):
        dist.update_(state, _model(np.float32), _grads(0, np.float32))


def test_read_only_parameter_refused() -> None:
    model = _model(np.float32)
    model["c"].flags.writeable = False
    with pytest.raises(ValueError, match="c"):
        dist.setup(opt.Adam(), model, dist.SelfComm())


def test_not_a_communicator() -> None:
    with pytest.raises(TypeError, match="mpi4py"):
        dist.setup(opt.Adam(), _model(np.float32), object())


def test_checkpoint_one_rank_round_trip(tmp_path: Path) -> None:
    rule = opt.OptimiserChain(opt.ClipGlobalNorm(1.0), opt.Adam(0.05))
    model, ref = _model(np.float32), _model(np.float32)
    state, ref_state = dist.setup(rule, model, dist.SelfComm()), opt.setup(rule, ref)
    for step in range(2):
        state, model = dist.update_(state, model, _grads(step, np.float32))
        ref_state, ref = opt.update_(ref_state, ref, _grads(step, np.float32))
    path = tmp_path / "s.opt"
    dist.save_state(path, state)
    assert opt.load_state(path) == ref_state
    again = dist.load_state(path, model, dist.SelfComm())
    again, model = dist.update_(again, model, _grads(2, np.float32))
    ref_state, ref = opt.update_(ref_state, ref, _grads(2, np.float32))
    assert np.array_equal(model["a"], ref["a"])


def test_checkpoint_for_other_arrays_refused_at_load(tmp_path: Path) -> None:
    # refused where it is read, naming the path, not at the first step (where only the
    # ranks holding the array would see it)
    model = {"a": np.ones((4, 4), np.float32), "b": np.ones(3, np.float32)}
    path = tmp_path / "s.opt"
    dist.save_state(path, dist.setup(opt.Adam(0.1), model, dist.SelfComm()))
    other = {"a": np.ones((4, 5), np.float32), "b": np.ones(3, np.float32)}
    with pytest.raises(opt.CheckpointError, match=r"has, at a, a state .* shape \(4, 5\)"):
        dist.load_state(path, other, dist.SelfComm())
    # and a state for an array the model lacks, which would be dropped unseen
    with pytest.raises(opt.CheckpointError, match="has a state at b, where the model has no"):
        dist.load_state(path, {"a": model["a"]}, dist.SelfComm())
    # a tied array's one Leaf stands at both its paths: not a state the model lacks
    tied = {"a": model["b"], "b": model["b"]}
    dist.save_state(path, dist.setup(opt.Adam(0.1), tied, dist.SelfComm()))
    assert dist.load_state(path, tied, dist.SelfComm()).tree["b"] is not None


def test_import_brings_no_transport() -> None:
    code = (
        "import sys, optimisers.distributed; "
        "assert 'mpi4py' not in sys.modules and 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ----------------------------------------------------------------------------------------
# several processes: mpiexec


def _mpiexec() -> str | None:
    exe = shutil.which(
        "mpiexec", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    )
    return exe


def _needs_mpi() -> None:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        pytest.skip("mpi4py is not installed (pip install mpi4py mpich)")
    if _mpiexec() is None:
        pytest.skip("no mpiexec on PATH (pip install mpich)")


def run_mpi(n: int, *args: str, timeout: float = 300) -> str:
    """``mpiexec -n n python dist_check.py args``: every rank must print OK."""
    _needs_mpi()
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="passive")
    cmd = [_mpiexec(), "-n", str(n), sys.executable, str(SCRIPT), *args]
    try:
        p = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
    except subprocess.TimeoutExpired as e:
        raise AssertionError(
            f"{' '.join(cmd)} took over {timeout} s (a hang?):\n{e.stdout}\n{e.stderr}"
        ) from None
    out = p.stdout + p.stderr
    assert p.returncode == 0, f"{' '.join(cmd)} failed ({p.returncode}):\n{out}"
    # the ranks' lines may interleave: find each rank's mark anywhere
    oks = {int(r) for r in re.findall(rf"OK {args[0]} rank (\d+)", p.stdout)}
    assert oks == set(range(n)), out
    return out


@pytest.mark.parametrize("n", [2, 3, 4])
def test_every_rule_on_ranks(n: int) -> None:
    """Every rule and chain of the registry, float32 and float64: bit for bit one process
    on 2 ranks, the ranks identical and within rounding on 3 and 4."""
    run_mpi(n, "rules", "all", timeout=600)


@pytest.mark.parametrize("n", [2, 3])
def test_replicated_mode(n: int) -> None:
    run_mpi(n, "replicated")


@pytest.mark.parametrize("n", [2, 3])
def test_mixed_dtypes(n: int) -> None:
    run_mpi(n, "mixed")


@pytest.mark.parametrize("n", [2, 4])
def test_skip_non_finite_over_ranks(n: int) -> None:
    run_mpi(n, "skip")


@pytest.mark.parametrize("n", [2, 3])
def test_faults(n: int) -> None:
    out = run_mpi(n, "faults")
    assert "ValueError" in out and "Boom" in out and "FloatingPointError" in out


def test_timeout_instead_of_hang() -> None:
    run_mpi(2, "timeout", timeout=60)


@pytest.mark.parametrize("saved,loaded", [(2, [2, 3, 1]), (3, [2, 4])])
def test_checkpoint_across_rank_counts(tmp_path: Path, saved: int, loaded: list[int]) -> None:
    path = str(tmp_path / "state.opt")
    run_mpi(saved, "save", path)
    for m in loaded:
        run_mpi(m, "load", path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_torch_distributed_gloo() -> None:
    pytest.importorskip("torch", reason="torch is not installed (CI's optional stage)")
    run_mpi(2, "torch", str(_free_port()), timeout=300)


def _curve(out: str) -> list[float]:
    return [float(v) for v in re.findall(r"step +\d+  loss ([0-9.]+)", out)]


def test_example_same_curve_on_1_and_2_ranks() -> None:
    """examples/distributed_mlp.py: the loss curve on 2 ranks is the one of 1 process."""
    script = HERE.parent / "examples" / "distributed_mlp.py"
    args = ["--steps", "61", "--every", "20"]
    one = subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    assert "ranks 1" in one and len(_curve(one)) == 4
    assert _curve(one)[-1] < 0.8 * _curve(one)[0]  # it trains
    _needs_mpi()
    two = subprocess.run(
        [_mpiexec(), "-n", "2", sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    assert "ranks 2" in two
    np.testing.assert_allclose(_curve(two), _curve(one), rtol=1e-5)


def test_bench_distributed_mode() -> None:
    """optimisers-bench distributed launches itself under mpiexec; each rank holds half
    the state on 2 ranks, all of it replicated; --phases times each phase of the sharded
    step on every rank, and the whole step in the same rounds."""
    _needs_mpi()
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "optimisers.bench",
            "distributed",
            "--sizes",
            "1e4",
            "--rounds",
            "1",
            "--arrays",
            "4",
            "--json",
            "--phases",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    got = json.loads(p.stdout)
    row = got["rows"][0]
    assert row["ranks"] == 2 and row["size"] == 10**4
    # Adam's two float32 moments, half the elements on each rank (and a few scalars)
    assert 4 * 10**4 <= row["state_sharded"] < 4 * 10**4 + 1000
    assert 8 * 10**4 <= row["state_replicated"] < 8 * 10**4 + 1000
    assert all(row[k] > 0 for k in ("reduce_scatter", "all_gather", "sharded", "single"))
    assert [c["ranks"] for c in got["cluster"]["10000"]] == [8, 64, 512]
    every = got["phases"]["10000"]
    assert len(every) == 2
    for rank in every:
        assert list(rank) == [*bench_distributed.PHASES, "update_"]
        assert all(t > 0 for t in rank.values())


def test_bench_distributed_phase_text() -> None:
    text = bench_distributed._phase_text(10**7, [[1e-3, 2e-3, 3e-3, 4e-3, 5e-3, 16e-3]] * 2)
    assert "phases of the sharded step at 1e+07" in text
    # the phases, their sum and the whole step, in ms
    assert "   1           1.00           2.00           3.00           4.00           5.00" in text
    assert text.rstrip().endswith("15.00          16.00")


def test_bench_distributed_text_with_phases(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The text report prints each size's phase table under the main one."""
    keys = ("reduce_scatter", "all_gather", "all_reduce", "single", "sharded", "bound")
    row = {k: 2e-3 for k in (*keys, "sharded_packed", "replicated")}
    row.update(size=10**6, ranks=2, state_sharded=4e6, state_replicated=8e6)
    world = type("World", (), {"rank": 0})
    monkeypatch.setenv(bench_distributed._LAUNCHED, "1")
    monkeypatch.setattr(bench_distributed, "_mpi", lambda: type("MPI", (), {"COMM_WORLD": world}))
    monkeypatch.setattr(bench_distributed, "measure", lambda size, arrays, rounds: dict(row))
    every = [[1e-3] * 5 + [6e-3]] * 2
    monkeypatch.setattr(bench_distributed, "phases", lambda size, arrays, rounds: every)
    assert bench_distributed.main(["--sizes", "1e6", "--phases"]) == 0
    text = capsys.readouterr().out
    assert "   1e+06      2.00      2.00" in text  # the main table first
    assert text.endswith(bench_distributed._phase_text(10**6, every))
