"""The partials of a global norm are summed exactly in the kernels (Shewchuk's expansion per
template, math.fsum over templates): the same bits as math.fsum of every leaf's partial,
however the leaves are grouped."""

from __future__ import annotations

import math

import numpy as np
import pytest

import optimisers as opt


def _clipped(model, grads, rule_for):
    state = opt.setup(rule_for, model)
    state, model = opt.update_(state, model, grads)
    return model


@pytest.mark.parametrize("p", [2.0, 1.0, math.inf, -math.inf])
def test_the_norm_of_partials_a_naive_sum_rounds_away(p):
    # partials 1e16, then many 1.0: added left to right each 1.0 is lost, exactly they count
    grads = {"big": np.array([1e8])} | {f"s{i}": np.array([1.0]) for i in range(6)}
    grads["empty"] = np.zeros(0)
    model = {k: np.zeros_like(g) for k, g in grads.items()}
    omega = 1.0
    norm = opt.global_norm(grads, p)  # math.fsum of the kernels' partials
    if p == 2.0:
        assert norm == math.sqrt(1e16 + 6) != 1e8
    # two chains whose equal ClipGlobalNorm shares one norm: two templates, one group
    got = _clipped(
        model,
        grads,
        lambda path, x: opt.OptimiserChain(
            opt.ClipGlobalNorm(omega, p), opt.Descent(1.0 if str(path) < "s3" else 0.5)
        ),
    )
    scale = min(1.0, omega / norm) if norm else 1.0
    for k, g in grads.items():
        eta = 1.0 if k < "s3" else 0.5
        np.testing.assert_array_equal(got[k], -(g * scale) * eta, err_msg=k)


def test_a_nan_partial_wins_and_an_infinite_one_clips_to_zero():
    grads = {"a": np.array([3.0]), "b": np.array([np.inf]), "c": np.array([4.0])}
    model = {k: np.ones(1) for k in grads}
    got = _clipped(
        model,
        grads,
        lambda path, x: opt.OptimiserChain(opt.ClipGlobalNorm(1.0, throw=False), opt.Descent(1.0)),
    )
    assert got["a"][0] == 1.0 and got["c"][0] == 1.0  # scale 0
    grads["b"] = np.array([np.nan])
    got = _clipped(
        {k: np.ones(1) for k in grads},
        grads,
        lambda path, x: opt.OptimiserChain(opt.ClipGlobalNorm(1.0, throw=False), opt.Descent(1.0)),
    )
    assert np.isnan(got["a"][0]) and np.isnan(got["c"][0])  # scale NaN
