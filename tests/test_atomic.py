"""A failed update changes nothing (issue 20, point 1): every rule and chain of the test
registry, with a NaN planted in the gradient of the last leaf, either steps or raises; when
it raises, every parameter and every state array is as it was, whichever leaf was stepped
first and wherever in a chain the failing check sits."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import optimisers as opt
from optimisers import (
    AccumGrad,
    ClipGlobalNorm,
    ClipNorm,
    MixedPrecision,
    OptimiserChain,
    SkipNonFinite,
)
from optimisers._leaf import tree_equal
from registry import RULE_IDS, RULES


def _members(rule):
    """The leaf rules of a rule in the order its program runs them."""
    if isinstance(rule, OptimiserChain):
        return [m for r in rule.opts for m in _members(r)]
    if isinstance(rule, (MixedPrecision, opt.Lookahead, opt.EMA)):
        return _members(rule.rule)
    return [rule]


def _must_raise(rule):
    """A ClipNorm(throw=True) or ClipGlobalNorm(throw=True) that a first step reaches (no
    AccumGrad still collecting before it, no SkipNonFinite skipping the step) meets the
    NaN."""
    for r in _members(rule):
        if (isinstance(r, AccumGrad) and r.n > 1) or isinstance(r, SkipNonFinite):
            return False
        if isinstance(r, (ClipNorm, ClipGlobalNorm)) and r.throw:
            return True
    return False


@pytest.mark.parametrize("rule", [r for _, r in RULES], ids=RULE_IDS)
def test_a_nan_in_the_last_leaf_changes_nothing_when_it_raises(rule):
    rng = np.random.default_rng(3)
    model = {
        "a": rng.standard_normal(40).astype(np.float32),
        "b": rng.standard_normal((3, 5)),
        "z": rng.standard_normal(7).astype(np.float32),
    }
    grads = {k: rng.standard_normal(v.shape).astype(v.dtype) for k, v in model.items()}
    grads["z"][3] = np.nan
    state = opt.setup(rule, model)
    state_before, model_before = copy.deepcopy(state), copy.deepcopy(model)
    try:
        opt.update_(state, model, grads)
    except FloatingPointError as e:
        assert "at z" in str(e), e
        assert tree_equal(state, state_before), "the state changed"
        for k in model:
            np.testing.assert_array_equal(model[k], model_before[k], err_msg=k)
        assert _must_raise(rule), f"{rule!r} raised: {e}"
    else:
        assert not _must_raise(rule), f"{rule!r} let a NaN through its ClipNorm(throw=True)"


def test_a_check_in_the_middle_of_a_chain_is_undone():
    """The case of the issue: WeightDecay, then ClipNorm, then Adam; w is stepped before b's
    NaN is met, and is put back."""
    rule = OptimiserChain(opt.WeightDecay(1e-3), ClipNorm(1.0), opt.Adam(0.1))
    model = {"w": np.ones(3), "b": np.ones(3)}
    state = opt.setup(rule, model)
    with pytest.raises(FloatingPointError, match="at b"):
        opt.update_(state, model, {"w": np.ones(3), "b": np.array([1.0, np.nan, 1.0])})
    assert np.array_equal(model["w"], np.ones(3)) and np.array_equal(model["b"], np.ones(3))
    assert tree_equal(state, opt.setup(rule, {"w": np.ones(3), "b": np.ones(3)}))
