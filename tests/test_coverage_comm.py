"""The transports of ``optimisers.distributed`` on paths the rest of the suite left unrun
(issue 21, point 3): the Communicator protocol's unimplemented methods, the deadline of a
control exchange, the one-process collectives, a setup refused after the ranks agreed,
a checkpoint of a model with a frozen array, and torch.distributed on a one-rank gloo
group (gather, scatter, bytes of integer arrays, its timeout, the default group)."""

from __future__ import annotations

import pathlib
import socket
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import numpy as np
import pytest

import optimisers as opt
from optimisers import distributed as dist
from optimisers.distributed._comm import Communicator, DistributedTimeout, TorchComm, wrap


def test_a_communicator_that_implements_nothing_says_so() -> None:
    c = Communicator(1.0)
    a = np.zeros(2)
    calls = [
        lambda: c.exchange(1, "x"),
        lambda: c.reduce_scatter(a, a, [2]),
        lambda: c.allreduce(a),
        lambda: c.broadcast([(a, 0)]),
        lambda: c.gather(1),
        lambda: c.scatter([1]),
    ]
    for call in calls:
        with pytest.raises(NotImplementedError):
            call()


def test_a_control_exchange_past_its_deadline_raises() -> None:
    c = dist.SelfComm(timeout=0.0)
    with pytest.raises(DistributedTimeout, match="waited 0 s for the other ranks at a test"):
        c._deadline_wait(lambda: False, "a test")


def test_the_one_process_collectives() -> None:
    c = dist.SelfComm()
    send, recv = np.arange(5.0), np.zeros(3)
    c.reduce_scatter(send, recv, [3])
    assert recv.tolist() == [0.0, 1.0, 2.0]
    buf = np.arange(3.0)
    c.allreduce(buf)  # the sum over one rank: itself
    assert buf.tolist() == [0.0, 1.0, 2.0]


def test_a_setup_the_rule_refuses_after_the_fingerprint() -> None:
    model = {"v": np.ones(3)}
    with pytest.raises(ValueError, match=r"v"):
        dist.setup(opt.Muon(), model, dist.SelfComm())


def test_a_checkpoint_of_a_model_with_a_frozen_array(tmp_path: pathlib.Path) -> None:
    model = {"a": np.ones(2), "b": np.ones(3)}
    rule = opt.Descent(0.5)
    state = dist.setup(lambda kp, x: rule if x.size == 2 else None, model, dist.SelfComm())
    state, model = dist.update_(state, model, {"a": np.ones(2), "b": np.ones(3)})
    dist.save_state(tmp_path / "s", state)
    tree = opt.load_state(tmp_path / "s")
    assert tree["a"].rule == rule and tree["b"] is None
    assert model["a"].tolist() == [0.5, 0.5] and model["b"].tolist() == [1.0, 1.0, 1.0]


# ---- torch.distributed, one rank


@pytest.fixture
def gloo() -> Iterator[Any]:
    torch = pytest.importorskip("torch", reason="torch is not installed (CI's optional stage)")
    tdist = torch.distributed
    if not tdist.is_available():
        pytest.skip("this torch has no torch.distributed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tdist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=0,
        world_size=1,
        timeout=timedelta(seconds=60),
    )
    try:
        yield tdist
    finally:
        tdist.destroy_process_group()


def test_the_default_torch_group_is_taken_when_initialised(gloo: Any) -> None:
    c = wrap(None, 5.0)
    assert isinstance(c, TorchComm) and (c.rank, c.size) == (0, 1)


def test_torch_gather_scatter_and_integer_arrays(gloo: Any) -> None:
    c = TorchComm(None, 5.0)
    assert c.gather({"k": 1}) == [{"k": 1}]
    assert c.scatter(["mine"]) == "mine"
    a = np.arange(4, dtype=np.int64)
    c.broadcast([(a, 0)])  # travels as bytes
    assert a.tolist() == [0, 1, 2, 3]


def test_a_torch_wait_past_its_deadline_raises(gloo: Any) -> None:
    class Late:
        def wait(self, timeout: Any) -> None:
            raise RuntimeError("Timed out waiting")

    c = TorchComm(None, 0.5)
    with pytest.raises(DistributedTimeout, match="at a test"):
        c._wait(Late(), "a test")


def test_a_distributed_checkpoint_over_torch(gloo: Any, tmp_path: pathlib.Path) -> None:
    model = {"w": np.ones((2, 3))}
    state = dist.setup(opt.Adam(0.1), model, None)
    state, model = dist.update_(state, model, {"w": np.ones((2, 3))})
    dist.save_state(tmp_path / "s", state)
    back = dist.load_state(tmp_path / "s", model, None)
    assert int(back.tree["w"].count) == 1


def test_a_tied_arrays_buffer_met_twice_is_one_gradient() -> None:
    w = np.ones(2)
    model = [w, w]
    state = dist.setup(opt.Descent(0.5), model, dist.SelfComm())
    grads = state.gradient_buffers()
    assert grads[0] is grads[1]  # one buffer for the one parameter
    grads[0][...] = 1.0
    state, model = dist.update_(state, model, grads)
    assert model[0] is model[1] and model[0].tolist() == [0.5, 0.5]  # not summed twice


def test_a_late_rank_is_polled_gently_past_the_first_fifth_of_a_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the wait yields the core for its first 0.2 s, then sleeps 0.1 ms between polls,
    # and returns as soon as the other ranks are done, well before the deadline
    from optimisers.distributed import _comm

    real_sleep, sleeps = _comm.time.sleep, []
    start = _comm.time.monotonic()

    def sleep(seconds: float) -> None:
        sleeps.append((_comm.time.monotonic() - start, seconds))
        real_sleep(seconds)

    monkeypatch.setattr(_comm.time, "sleep", sleep)
    c = dist.SelfComm(timeout=30.0)
    c._deadline_wait(lambda: _comm.time.monotonic() - start > 0.3, "a test")
    waited = _comm.time.monotonic() - start
    assert 0.3 < waited < 5.0
    assert sleeps, "no gentle poll after the first fifth of a second"
    assert all(seconds == 1e-4 for _, seconds in sleeps)
    assert min(at for at, _ in sleeps) >= 0.2  # none while the wait only yields
