"""The gradient pass of ClipGlobalNorm and SkipNonFinite in a batch (issue 16, point 6): each
leaf's partial is reduced in an order fixed by the data (blocks, lanes), small leaves are
spread over the threads whole and large ones split by blocks, and the partials are combined
exactly; so the norm, and with it every step, is the same to the bit for any thread count,
and equal to the blocked float64 sums of the reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import optimisers as opt
from optimisers import _engine, _tree
from reference import _blocked_sum, ref_global_norm

# a model the prologue spreads over the threads (many small leaves: at the parallel
# threshold of the fixture, 4096, these are 100 leaves below it) and splits by blocks
# (leaves of several 8192-element blocks above it: blocks k and k + n/2 are reduced together,
# the last alone when their count is odd)
SIZES = [37, 1, 513, 4095, 0, 8191] * 16 + [3 * 8192 + 5, 8192 * 2, 5 * 8192 + 7, 5 * 8192]


def _model_and_grads(dtype, seed=0):
    rng = np.random.default_rng(seed)
    model = {f"p{i:03d}": rng.standard_normal(n).astype(dtype) for i, n in enumerate(SIZES)}
    # magnitudes over many decades, so that another order of the adds gives other bits
    grads = {
        k: (rng.standard_normal(v.shape) * 10.0 ** rng.integers(-6, 7, v.shape)).astype(dtype)
        for k, v in model.items()
    }
    return model, grads


def _recipe(p):
    return opt.OptimiserChain(
        opt.SkipNonFinite(), opt.ClipGlobalNorm(1e-3, p), opt.AdamW(1e-2, lambda_=0.1)
    )


def _partials(rule, model, grads):
    """Each leaf's partial as the prepared batch holds it, by key."""
    state = opt.setup(rule, model)
    step = _engine.Step()
    _tree.collect(state, model, grads, (), step)
    (batch,) = step._prepare_batches()
    (group,) = batch.global_groups()
    js, parts = batch.global_members(group[0])
    return {step.entries[j][5][1]: part for j, part in zip(js, parts)}


@pytest.mark.parametrize("p", [2.0, 1.0, math.inf])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_partials_are_the_same_for_any_thread_count(dtype, p, small_parallel_threshold):
    model, grads = _model_and_grads(dtype)
    got = {}
    for threads in (1, 2, 3, 4):
        with threadpool_limits(threads, user_api="openmp"):
            got[threads] = _partials(_recipe(p), model, grads)
    assert len(got[1]) == len(SIZES)
    for threads in (2, 3, 4):
        assert got[threads] == got[1], threads  # every float, to the bit
    for k, part in got[1].items():  # and each is the reference's blocked float64 sum
        assert part == _reference_partial(grads[k], p), k


def _reference_partial(g, p):
    a = np.abs(g.astype(np.float64))
    if p == math.inf:
        return float(np.max(a)) if a.size else 0.0
    return float(_blocked_sum(a * a if p == 2.0 else a, a.size)) if a.size else 0.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_recipe_steps_to_the_same_bits_for_any_thread_count(dtype, small_parallel_threshold):
    model, grads = _model_and_grads(dtype, seed=1)
    results = []
    for threads in (1, 2, 4):
        ours = {k: v.copy() for k, v in model.items()}
        state = opt.setup(_recipe(2.0), ours)
        with threadpool_limits(threads, user_api="openmp"):
            for _ in range(3):
                state, ours = opt.update_(state, ours, grads)
        results.append(ours)
    assert opt.global_norm(grads) == ref_global_norm(list(grads.values()), 2.0)
    for other in results[1:]:
        for k in model:
            np.testing.assert_array_equal(other[k], results[0][k], err_msg=k)
