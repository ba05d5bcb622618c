"""The paths of ``optimisers.distributed`` that one process can run and the rest of the
suite left unrun (issue 21, point 3), on the one-process communicator: a step skipped or
refused by the global rules, a tied array, a dict state, a failed save and a checkpoint
that is no state tree, the state's ``repr``, and a failure that the ranks already know.
(The paths of two ranks and more run under ``mpiexec``, in CI's stage with mpi4py.)"""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np
import pytest

import optimisers as opt
from optimisers import distributed as dist
from optimisers.distributed._comm import DistributedTimeout
from optimisers.distributed._protocol import fail


def _one(rule: opt.Rule, model: Any) -> Any:
    return dist.setup(rule, model, dist.SelfComm())


def test_a_non_finite_gradient_skips_the_step_on_every_rank() -> None:
    model = {"a": np.ones(2), "b": np.ones(3)}
    state = _one(opt.OptimiserChain(opt.SkipNonFinite(), opt.Descent(0.5)), model)
    state, model = dist.update_(state, model, {"a": np.ones(2), "b": np.array([1.0, np.nan, 1.0])})
    assert model["a"].tolist() == [1.0, 1.0] and model["b"].tolist() == [1.0, 1.0, 1.0]
    state, model = dist.update_(state, model, {"a": np.ones(2), "b": np.ones(3)})
    assert model["a"].tolist() == [0.5, 0.5]


def test_a_non_finite_global_norm_raises_over_the_ranks() -> None:
    model = {"a": np.ones(2)}
    state = _one(opt.OptimiserChain(opt.ClipGlobalNorm(1.0), opt.Descent(0.5)), model)
    with pytest.raises(
        FloatingPointError, match="over all ranks is inf: a non-finite gradient is at a"
    ):
        dist.update_(state, model, {"a": np.array([np.inf, 1.0])})
    assert model["a"].tolist() == [1.0, 1.0]


def test_a_tied_array_is_one_parameter() -> None:
    w = np.ones(2)
    model = [w, w]
    state = _one(opt.Descent(0.5), model)
    state, model = dist.update_(state, model, [np.ones(2), np.ones(2)])
    assert model[0] is model[1] and model[0].tolist() == [0.0, 0.0]  # summed: 2 * 0.5


class Counted(opt.Rule):
    """A rule written in Python whose state is a dict."""

    def init(self, x: Any) -> Any:
        return {"n": np.zeros(())}

    def apply(self, state: Any, x: Any, dx: Any) -> tuple[Any, Any]:
        state["n"][...] += 1
        return state, dx


def test_a_dict_state_and_the_states_repr() -> None:
    model = {"a": np.ones(2)}
    state = _one(Counted(), model)
    state, model = dist.update_(state, model, {"a": np.ones(2)})
    assert int(state.tree["a"].state["n"]) == 1
    assert repr(state).startswith("DistState(rank 0 of 1")


def test_a_failed_save_and_a_checkpoint_that_is_not_a_state(tmp_path: pathlib.Path) -> None:
    model = {"a": np.ones(2)}
    state = _one(opt.Adam(), model)
    with pytest.raises(FileNotFoundError):
        dist.save_state(tmp_path / "no such folder" / "s", state)
    opt.save_state(tmp_path / "other", {"a": np.zeros(2)})  # an array where a Leaf goes
    with pytest.raises(TypeError, match="load_state: the checkpoint"):
        dist.load_state(tmp_path / "other", model, dist.SelfComm())


def test_a_failure_the_ranks_already_know_is_not_sent_again() -> None:
    assert fail(dist.SelfComm(), DistributedTimeout("a rank is gone"), "update_") is None
