"""The step's paths the rest of the suite left unrun (issue 21, point 3): a scheduled rule on
the general path, a Leaf shared by two arrays, the snapshot of a dict state, the bound on
cached batch templates, norms beyond float64, a scale of 0 for an infinite norm (torch's
``clip_grad_norm_`` gives the same), and the shapes a rule or ``apply_`` is given."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import optimisers as opt
from optimisers import _plan, schedules


def test_a_scheduled_rule_on_the_general_path() -> None:
    x = np.asfortranarray(np.ones((3, 2)))  # not C-contiguous: no batch
    state = opt.setup(opt.Descent(schedules.linear(1.0, 0.0, 4)), x)
    for _ in range(2):
        state, x = opt.update_(state, x, np.ones((3, 2)))
    assert np.all(x == 1.0 - 1.0 - 0.75)


def test_one_leaf_for_two_different_arrays_is_refused() -> None:
    a = np.ones(2)
    state = opt.setup(opt.Descent(), [a, a])  # a tie: one Leaf
    with pytest.raises(ValueError, match="one Leaf is shared by two different arrays"):
        opt.update_(state, [np.ones(2), np.ones(2)], [np.ones(2), np.ones(2)])


class DictState(opt.Rule):
    """A rule written in Python whose state is a dict of arrays (snapshotted each step)."""

    def init(self, x: Any) -> Any:
        return {"n": np.zeros(())}

    def apply(self, state: Any, x: Any, dx: Any) -> tuple[Any, Any]:
        state["n"][...] += 1
        return state, 0.5 * dx


def test_a_dict_state_is_restored_when_a_later_leaf_fails() -> None:
    model = {"a": np.ones(2), "b": np.ones(2)}
    state = opt.setup(DictState(), model)
    with pytest.raises(ValueError):
        opt.update_(state, model, {"a": np.ones(2), "b": np.ones(3)})
    assert int(state["a"].state["n"]) == 0 and model["a"].tolist() == [1.0, 1.0]
    state, model = opt.update_(state, model, {"a": np.ones(2), "b": np.ones(2)})
    assert int(state["a"].state["n"]) == 1 and model["a"].tolist() == [0.5, 0.5]


def test_the_cache_of_batch_templates_is_bounded() -> None:
    model = [np.ones(1, np.float32) for _ in range(4200)]
    state = opt.setup(lambda path, x: opt.Descent(1.0 + path[0]), model)  # 4200 rules
    state, model = opt.update_(state, model, [np.ones(1, np.float32)] * len(model))
    assert len(_plan._TEMPLATES) <= 4097
    assert model[4199].tolist() == [-4199.0]


def test_norms_beyond_float64() -> None:
    big = {"a": np.array([1.3e154]), "b": np.array([1.3e154])}
    # each square is finite, their sum is not: the norm is infinite (as torch's)
    assert opt.global_norm(big) == np.inf
    huge = {"a": np.array([1e308]), "b": np.array([1e308])}
    assert opt.global_norm(huge, p=0.5) == np.inf  # (sum of roots) ** 2 overflows


def test_an_infinite_norm_without_throw_scales_by_zero() -> None:
    x = np.ones(2)
    state = opt.setup(opt.OptimiserChain(opt.ClipGlobalNorm(1.0, throw=False), opt.Descent(1.0)), x)
    state, x = opt.update_(state, x, np.array([np.inf, 3.0]))
    assert np.isnan(x[0]) and x[1] == 1.0  # 0 * inf, and 0 * 3
    _, d = opt.apply_(
        opt.ClipGlobalNorm(1.0, throw=False), None, np.ones(2), np.array([np.inf, 3.0])
    )
    assert d is not None and np.isnan(d[0]) and d[1] == 0.0


def test_a_rule_that_returns_a_step_of_another_shape() -> None:
    class Wrong(opt.Rule):
        def apply(self, state: Any, x: Any, dx: Any) -> tuple[Any, Any]:
            return state, np.ones(5)

    state = opt.setup(Wrong(), {"w": np.ones(2)})
    with pytest.raises(ValueError, match=r"a step of shape \(5,\) for the parameter at w"):
        opt.update_(state, {"w": np.ones(2)}, {"w": np.ones(2)})


def test_apply_refuses_a_gradient_of_another_shape() -> None:
    with pytest.raises(ValueError, match=r"gradient of shape \(3,\) for a parameter of "):
        opt.apply_(opt.Descent(), None, np.ones(2), np.ones(3))


def test_a_zero_norm_is_not_scaled() -> None:
    _, d = opt.apply_(opt.ClipGlobalNorm(1.0), None, np.ones(2), np.zeros(2))
    assert d is not None and d.tolist() == [0.0, 0.0]
