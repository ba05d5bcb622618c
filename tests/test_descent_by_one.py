"""Descent(1.0) after another stage adds no stage (x -= 1 * d is x -= d, bit for bit), so
that a rule without eta that optimisers.torch chains with Descent(lr) at torch's default
lr = 1 stays one fused pass.  The same bits as the rule alone, and as Descent(1.0) run as
a stage of its own; a Descent(1.0) first, or with another eta, keeps its stage."""

from __future__ import annotations

import numpy as np
import pytest

import optimisers as opt
from optimisers import _plan, schedules
from reference import ref_init, ref_update

RULES = [opt.AdaDelta(), opt.Momentum(0.05), opt.Adam(1e-2), opt.RMSProp(1e-2), opt.AccumGrad(2)]


def _steps(rule, x, grads):
    state = opt.setup(rule, x)
    for g in grads:
        state, x = opt.update_(state, x, g)
    return x


@pytest.mark.parametrize("rule", RULES, ids=lambda r: type(r).__name__)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_chain_ending_in_descent_by_one_steps_as_the_rule_alone(rule, dtype, n_threads):
    rng = np.random.default_rng(5)
    x0 = rng.standard_normal(300).astype(dtype)
    grads = [rng.standard_normal(300).astype(dtype) for _ in range(5)]
    chained = _steps(opt.OptimiserChain(rule, opt.Descent(1.0)), x0.copy(), grads)
    alone = _steps(rule, x0.copy(), grads)
    assert chained.tobytes() == alone.tobytes()
    # and the reference, where Descent(1.0) multiplies every step by one
    chain = opt.OptimiserChain(rule, opt.Descent(1.0))
    st, xr = ref_init(chain, x0), x0.copy()
    for g in grads:
        st, xr = ref_update(chain, st, xr, g)
    np.testing.assert_array_equal(chained, xr)


def _stages(rule, x):
    return _plan.template(rule, x, opt.setup(rule, x).state)


def test_descent_by_one_is_a_stage_where_nothing_comes_before_or_eta_differs():
    x = np.zeros(4)
    alone = _stages(opt.AdaDelta(), x)
    assert len(_stages(opt.OptimiserChain(opt.AdaDelta(), opt.Descent(1.0)), x)) == len(alone)
    assert len(_stages(opt.OptimiserChain(opt.AdaDelta(), opt.Descent(0.5)), x)) == 2
    assert len(_stages(opt.Descent(1.0), x)) == 1  # a batch program of its own
    assert len(_stages(opt.OptimiserChain(opt.Descent(1.0), opt.Momentum()), x)) == 2
    assert _steps(opt.Descent(1.0), np.ones(2), [np.array([0.5, -2.0])]).tolist() == [0.5, 3.0]


def test_a_scheduled_eta_passing_through_one(n_threads):
    # the template of the count where eta is 1 has one stage less than the others
    eta = schedules.linear(2.0, 0.0, 4)  # 2, 1.5, 1, 0.5, 0
    rng = np.random.default_rng(7)
    model = [rng.standard_normal(50) for _ in range(3)]
    grads = [[rng.standard_normal(50) for _ in model] for _ in range(6)]
    state = opt.setup(opt.OptimiserChain(opt.AdaDelta(), opt.Descent(eta)), model)
    by_hand = [a.copy() for a in model]
    hand_state = opt.setup(opt.OptimiserChain(opt.AdaDelta(), opt.Descent(2.0)), by_hand)
    for count, g in enumerate(grads):
        state, model = opt.update_(state, model, g)
        opt.adjust_(hand_state, eta=eta(count))
        hand_state, by_hand = opt.update_(hand_state, by_hand, g)
        for a, b in zip(model, by_hand):
            assert a.tobytes() == b.tobytes()
