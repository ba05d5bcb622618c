"""The torch-facing paths the rest of the suite left unrun (issue 21, point 3): the checks
of a gradient handed to ``optimisers.torch`` (not a tensor, another shape, complex for a
real parameter, not contiguous), bfloat16 without ml_dtypes, the state_dict of states
holding numpy scalars or what cannot be written, and the benchmark's torch comparisons
for a matrix-only rule or a variant torch refuses.  (The benchmark without torch:
tests/test_coverage_bench_paths.py, which runs without the optional packages.)"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
import pytest

import optimisers as opt
from optimisers.bench import compare, torch_step
from optimisers.bench.cases import Case, Unavailable

torch = pytest.importorskip("torch", reason="torch is not installed (CI's optional stage)")
tv = importlib.import_module("optimisers._torch_views")
otorch = importlib.import_module("optimisers.torch")


def test_a_matrix_only_rule_is_not_benched_through_the_optimizer() -> None:
    with pytest.raises(Unavailable, match="muon takes matrices only"):
        torch_step.optimiser_step(Case("muon", "float32", 64, 1, 1))


def test_a_torch_variant_that_torch_refuses_is_unavailable() -> None:
    build = compare._torch_builder("torch-odd", {"no_such_option": True})
    with pytest.raises(Unavailable, match=r"torch.optim.Adam\(no_such_option=True\) is not"):
        build(Case("adam", "float32", 64, 1, 1))


def test_the_gradient_checks_name_the_parameter() -> None:
    p = torch.zeros(2, 3)
    with pytest.raises(TypeError, match=r"w: the gradient is a ndarray, not a torch\.Tensor"):
        tv._gradient_view(p, np.zeros((2, 3)), "w")
    with pytest.raises(ValueError, match=r"w: the gradient has shape \(3, 2\), the parameter"):
        tv._gradient_view(p, torch.zeros(3, 2), "w")
    with pytest.raises(TypeError, match="w: a complex gradient"):
        tv._gradient_view(p, torch.zeros(2, 3, dtype=torch.complex64), "w")


def test_a_gradient_that_is_not_contiguous_is_copied() -> None:
    p = torch.nn.Parameter(torch.zeros(3, 3, dtype=torch.float64))
    q = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))  # no gradient: the slow path
    g = torch.arange(9.0, dtype=torch.float64).reshape(3, 3)
    p.grad = g.t()
    assert not p.grad.is_contiguous()
    otorch.Optimizer([p, q], opt.Descent(0.5)).step()
    np.testing.assert_array_equal(p.detach().numpy(), -0.5 * g.numpy().T)
    assert q.detach().tolist() == [1.0, 1.0]


def test_bfloat16_without_ml_dtypes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tv, "_ml_dtypes", None)
    with pytest.raises(TypeError, match=r"w: a bfloat16 tensor .* pip install ml_dtypes"):
        tv.tensor_view(torch.zeros(2, dtype=torch.bfloat16), "w")


class Scalars(opt.Rule):
    """A rule written in Python whose state is a tuple of numpy scalars (np.int64 is no
    Python int: the state_dict holds its ``item()``)."""

    def init(self, x: Any) -> Any:
        return (np.float64(0.0), np.int64(0))

    def apply(self, state: Any, x: Any, dx: Any) -> tuple[Any, Any]:
        return (state[0] + 1.5, state[1] + 1), dx


def test_a_state_of_numpy_scalars_goes_through_the_state_dict() -> None:
    p = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    rule = Scalars()  # a rule written in Python equals itself only
    o = otorch.Optimizer([p], rule)
    p.grad = torch.ones(2, dtype=torch.float64)
    o.step()
    sd = o.state_dict()
    saved = sd["state"][0]
    assert saved["0.0"] == 1.5 and saved["0.1"] == 1 and type(saved["0.1"]) is int
    q = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    o2 = otorch.Optimizer([q], rule)
    o2.load_state_dict(sd)
    q.grad = torch.ones(2, dtype=torch.float64)
    o2.step()
    again = o2.state_dict()["state"][0]
    assert (again["0.0"], again["0.1"]) == (3.0, 2)
    restored = tv.unflatten_state((np.float64(0.0), np.int64(0)), {"0": 1.5, "1": 1})
    assert [type(s) for s in restored] == [np.float64, np.int64]


def test_a_state_that_is_no_tensor_nor_plain_value() -> None:
    with pytest.raises(TypeError, match="a state holding a dict at its top cannot be written"):
        tv.flatten_state({"n": 1})
    assert tv.state_misfit({"a": None}, {"a": torch.ones(1)}).startswith("'a' is tensor(")
