"""A state used with a model it was not set up for (issue 20, point 5): every mismatch
names the key path and what differs, and nothing is written."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import optimisers as opt
from optimisers._leaf import tree_equal


def _refused(state, model, grads, *needles):
    state_before, model_before = copy.deepcopy(state), copy.deepcopy(model)
    with pytest.raises(ValueError) as info:
        opt.update_(state, model, grads)
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))
    assert tree_equal(state, state_before)
    for k in model:
        np.testing.assert_array_equal(model[k]["w"], model_before[k]["w"])
    return str(info.value)


@pytest.mark.parametrize(
    "rule",
    [
        opt.Adam(),
        opt.Momentum(),
        opt.RAdam(),
        opt.AdaGrad(),
        opt.OptimiserChain(opt.ClipNorm(1.0), opt.AdamW()),
        opt.OptimiserChain(opt.Momentum(), opt.ClipNorm(1.0)),
    ],
    ids=repr,
)
def test_a_float64_state_with_a_float32_model(rule):
    state = opt.setup(rule, {"a": {"w": np.ones(4)}, "b": {"w": np.ones(3)}})
    model = {"a": {"w": np.ones(4, np.float32)}, "b": {"w": np.ones(3, np.float32)}}
    grads = {k: {"w": np.ones_like(v["w"])} for k, v in model.items()}
    _refused(state, model, grads, "a.w", "float64", "float32")


def test_a_state_of_another_shape():
    state = opt.setup(opt.Adam(), {"a": {"w": np.ones(5)}})
    model = {"a": {"w": np.ones(4)}}
    _refused(state, model, {"a": {"w": np.ones(4)}}, "a.w", "state.m has shape (5,)", "(4,)")


def test_a_master_copy_of_another_shape():
    state = opt.setup(opt.MixedPrecision(opt.Adam()), {"a": {"w": np.ones(4, np.float16)}})
    model = {"a": {"w": np.ones(5, np.float16)}}
    _refused(state, model, {"a": {"w": np.ones(5)}}, "a.w", "state.xT has shape (4,)")


def test_a_state_of_another_rule():
    state = opt.setup(opt.Momentum(), {"a": {"w": np.ones(4)}})
    state["a"]["w"].rule = opt.Adam()  # by hand: the Momentum state stays
    model = {"a": {"w": np.ones(4)}}
    _refused(state, model, {"a": {"w": np.ones(4)}}, "a.w", "AdamState")


def test_a_state_tree_prints_in_a_log():
    """Issue 20, point 8: large state arrays print as a few values, shape and dtype on one
    line; small ones in full."""
    big = np.arange(1e6, dtype=np.float32).reshape(1000, 1000)
    state = opt.setup(opt.Adam(), {"w": big, "b": np.array([1.0, 2.0])})
    state["w"].state.m[...] = big
    text = repr(state)
    assert len(text) < 600 and "\n" not in text, text
    assert "9.99999e+05]" in text  # the last of m's values
    assert text.count("shape=(1000, 1000), dtype=float32") == 2
    assert "v=array([0., 0.])" in text  # the bias, in full
