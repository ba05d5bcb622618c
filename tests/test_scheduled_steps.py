"""Scheduled rules on the walk's inline path (issue 16, point 6): a Leaf's plan holds the
template of its count and moves on with it, so a schedule is evaluated once per rule,
dtype and count, and every step still equals the rule adjusted by hand to the schedule's
value at the leaf's own count."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import optimisers as opt
from optimisers import schedules
from optimisers._engine import Step
from optimisers._plan import ScheduledTemplate

ETA = schedules.warmup_cosine_decay(0.0, 0.05, 3, 12)


def _model(dtype, n=4, size=5):
    rng = np.random.default_rng(7)
    return {f"p{i}": rng.standard_normal(size).astype(dtype) for i in range(n)}


def _grads(model, steps, seed=1):
    rng = np.random.default_rng(seed)
    return [
        {k: rng.standard_normal(v.shape).astype(v.dtype) for k, v in model.items()}
        for _ in range(steps)
    ]


def _start(rule, model):
    """A state tree for ``rule`` and a copy of ``model`` to step."""
    return opt.setup(rule, model), {k: v.copy() for k, v in model.items()}


def _by_hand(rule_at, model, grads):
    """Each array stepped alone by the unscheduled rule ``rule_at(count)``, adjusted to the
    array's own count before each step (a None gradient does not count)."""
    out = {}
    for k, x in model.items():
        x = x.copy()
        leaf = opt.setup(rule_at(0), x)
        count = 0
        for g in grads:
            if g.get(k) is None:
                continue
            leaf.rule = rule_at(count)  # what adjust_ does to a Leaf
            leaf, x = opt.update_(leaf, x, g[k])
            count += 1
        out[k] = x
    return out


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_counts_that_drift_apart_each_use_their_own_value(dtype, threads):
    model = _model(dtype)
    grads = _grads(model, 9)
    for i, g in enumerate(grads):  # p1 misses every other step, p2 the first three
        if i % 2:
            g["p1"] = None
        if i < 3:
            g["p2"] = None
    state = opt.setup(opt.AdamW(ETA, lambda_=0.1), {k: v.copy() for k, v in model.items()})
    ours = {k: v.copy() for k, v in model.items()}
    with threadpool_limits(threads):
        for g in grads:
            state, ours = opt.update_(state, ours, g)
        expected = _by_hand(lambda c: opt.AdamW(ETA(c), lambda_=0.1), model, grads)
    assert [state[k].count for k in sorted(model)] == [9, 5, 6, 9]
    for k in model:
        np.testing.assert_array_equal(ours[k], expected[k], err_msg=k)


def test_after_the_first_step_scheduled_leaves_are_batched_inline(monkeypatch):
    model = _model(np.float32, n=6)
    grads = _grads(model, 4)
    state = opt.setup(opt.OptimiserChain(opt.ClipGlobalNorm(1.0), opt.AdamW(ETA)), model)
    state, model = opt.update_(state, model, grads[0])
    routed = []
    original = Step.route

    def counting_route(self, leaf, x, g, link):
        routed.append(link)
        return original(self, leaf, x, g, link)

    monkeypatch.setattr(Step, "route", counting_route)
    for g in grads[1:]:
        state, model = opt.update_(state, model, g)
    assert routed == []
    plans = {id(state[k]._plan) for k in model}
    assert len(plans) == 1  # one plan object for the leaves of one count
    tpl = state["p0"]._plan[3]
    assert isinstance(tpl, ScheduledTemplate) and tpl.at == state["p0"].count == 4
    assert tpl.concrete.opts[1].eta == ETA(4)


def test_a_count_set_by_hand_is_the_count_the_schedule_is_evaluated_at():
    model = _model(np.float64, n=2)
    grads = _grads(model, 5)
    state = opt.setup(opt.Adam(ETA), {k: v.copy() for k, v in model.items()})
    ours = {k: v.copy() for k, v in model.items()}
    for g in grads[:4]:
        state, ours = opt.update_(state, ours, g)
    state["p0"].count = 1  # e.g. a resumed warm-up
    before = ours["p0"].copy()
    kept = copy.deepcopy(state["p0"].state)
    state, ours = opt.update_(state, ours, grads[4])
    # Adam's bias corrections run on the state's own products; the schedule reads the count
    reference = opt.Leaf(opt.Adam(ETA(1)), kept)
    _, expected = opt.update_(reference, before, grads[4]["p0"])
    np.testing.assert_array_equal(ours["p0"], expected)
    assert state["p0"].count == 2


def test_a_leaf_that_took_the_general_path_comes_back_at_its_count():
    model = _model(np.float32, n=3)
    grads = _grads(model, 6)
    state, ours = _start(opt.Momentum(ETA, 0.9), model)
    for i, g in enumerate(grads):
        if i == 2:  # read-only for one step: the general path
            ours["p1"].flags.writeable = False
        state, ours = opt.update_(state, ours, g)
        if i == 2:
            ours["p1"] = ours["p1"].copy()  # the returned model holds a new array there
    expected = _by_hand(lambda c: opt.Momentum(ETA(c), 0.9), model, grads)
    for k in model:
        np.testing.assert_array_equal(ours[k], expected[k], err_msg=k)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_scheduled_global_clip_uses_the_value_at_the_count(dtype):
    model = {"a": np.ones(3, dtype), "b": np.ones(2, dtype)}
    omega = schedules.linear(1.0, 0.25, 4)
    state = opt.setup(opt.OptimiserChain(opt.ClipGlobalNorm(omega), opt.Descent(1.0)), model)
    g = {"a": np.array([3.0, 0.0, 0.0], dtype), "b": np.array([4.0, 0.0], dtype)}  # norm 5
    expected = {k: v.copy() for k, v in model.items()}
    for count in range(5):
        state, model = opt.update_(state, model, g)
        scale = omega(count) / 5.0
        for k, x in expected.items():
            expected[k] = x - (g[k] * dtype(scale)).astype(dtype)
        for k in model:
            np.testing.assert_allclose(model[k], expected[k], rtol=0, atol=4 * np.finfo(dtype).eps)


def test_one_template_moves_on_in_place_while_all_its_leaves_step():
    model = _model(np.float32, n=5)
    grads = _grads(model, 5)
    state = opt.setup(opt.AdamW(ETA), model)
    state, model = opt.update_(state, model, grads[0])
    tpl = state["p0"]._plan[3]
    for count, g in enumerate(grads[1:], start=2):
        state, model = opt.update_(state, model, g)
        assert all(state[k]._plan[3] is tpl for k in model)  # no new template, no new plan
        assert tpl.at == count and tpl.concrete.eta == ETA(count)


@pytest.mark.parametrize("threads", [1, 2])
def test_two_state_trees_of_one_rule_each_step_at_their_own_counts(threads):
    # one first step of both trees together gives all their leaves one template; then
    # each tree steps alone, so that template's leaves are only partly stepped
    model = _model(np.float32, n=3)
    grads = _grads(model, 7)
    rule = opt.AdamW(ETA, lambda_=0.1)
    trees = {w: {k: v.copy() for k, v in model.items()} for w in "ab"}
    states = {w: opt.setup(rule, trees[w]) for w in "ab"}
    used: dict[str, list[dict[str, np.ndarray]]] = {"a": [grads[0]], "b": [grads[0]]}
    with threadpool_limits(threads):
        states, trees = opt.update_(states, trees, {"a": grads[0], "b": grads[0]})
        for who in "aababbaaba":
            g = grads[len(used[who])]
            used[who].append(g)
            states[who], trees[who] = opt.update_(states[who], trees[who], g)
        for w in "ab":
            expected = _by_hand(lambda c: opt.AdamW(ETA(c), lambda_=0.1), model, used[w])
            for k in model:
                np.testing.assert_array_equal(trees[w][k], expected[k], err_msg=w + k)


def test_a_frozen_leaf_keeps_its_count_while_the_others_move_on():
    model = _model(np.float64, n=3)
    grads = _grads(model, 6)
    state, ours = _start(opt.Momentum(ETA, 0.9), model)
    for i, g in enumerate(grads):
        if i == 2:
            opt.freeze_(state["p1"])
        if i == 4:
            opt.thaw_(state["p1"])
        state, ours = opt.update_(state, ours, g)
    skipped = [dict(g) for g in grads]
    for g in skipped[2:4]:
        g["p1"] = None  # frozen: no step, no count
    expected = _by_hand(lambda c: opt.Momentum(ETA(c), 0.9), model, skipped)
    assert [state[k].count for k in sorted(model)] == [6, 4, 6]
    for k in model:
        np.testing.assert_array_equal(ours[k], expected[k], err_msg=k)


def test_a_copy_of_the_state_steps_apart_from_the_original():
    model = _model(np.float32, n=2)
    grads = _grads(model, 6)
    rule = opt.Adam(ETA)
    state = opt.setup(rule, {k: v.copy() for k, v in model.items()})
    ours = {k: v.copy() for k, v in model.items()}
    for g in grads[:2]:
        state, ours = opt.update_(state, ours, g)
    twin, twin_model = copy.deepcopy(state), {k: v.copy() for k, v in ours.items()}
    for g in grads[2:5]:  # the original moves on; the copy holds its count of 2
        state, ours = opt.update_(state, ours, g)
    twin, twin_model = opt.update_(twin, twin_model, grads[5])
    expected = _by_hand(lambda c: opt.Adam(ETA(c)), model, grads[:2] + grads[5:])
    for k in model:
        np.testing.assert_array_equal(twin_model[k], expected[k], err_msg=k)


def test_a_template_met_in_two_batches_counts_the_leaves_of_both():
    # a float64 gradient for a float32 leaf is cast and stepped in a second batch: the
    # template's leaves are counted over both batches, so it still moves on in place
    model = _model(np.float32, n=3)
    grads = _grads(model, 5)
    for g in grads:
        g["p1"] = g["p1"].astype(np.float64)
    state, ours = _start(opt.AdamW(ETA, lambda_=0.1), model)
    state, ours = opt.update_(state, ours, grads[0])
    tpl = state["p0"]._plan[3]
    for count, g in enumerate(grads[1:], start=2):
        state, ours = opt.update_(state, ours, g)
        assert all(state[k]._plan[3] is tpl for k in model)
        assert tpl.at == count
    expected = _by_hand(lambda c: opt.AdamW(ETA(c), lambda_=0.1), model, grads)
    for k in model:
        np.testing.assert_array_equal(ours[k], expected[k], err_msg=k)


def test_a_full_cache_of_scheduled_plans_is_cleared_and_results_stay_right(monkeypatch):
    from optimisers import _plan

    full = {("stale", i): (None, None) for i in range(4097)}
    monkeypatch.setattr(_plan, "_SCHEDULED", full)
    model = _model(np.float64, n=3)
    grads = _grads(model, 4)
    state, ours = _start(opt.Momentum(ETA, 0.9), model)
    for g in grads:
        state, ours = opt.update_(state, ours, g)
    assert not any(k[0] == "stale" for k in full)  # cleared, then refilled as it goes
    assert 0 < len(full) < 10
    expected = _by_hand(lambda c: opt.Momentum(ETA(c), 0.9), model, grads)
    for k in model:
        np.testing.assert_array_equal(ours[k], expected[k], err_msg=k)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_schedule_after_accumgrad_runs_at_the_count_of_its_own_updates(dtype, n_threads):
    # Adam after AccumGrad(3) updates once in 3 calls: its schedule must take s(0), s(1),
    # ... at those updates (as its bias correction does), as optax's MultiSteps does
    eta = schedules.linear(0.1, 0.01, 4)
    model = _model(dtype, n=3)
    grads = _grads(model, 12)
    state, ours = _start(opt.OptimiserChain(opt.AccumGrad(3), opt.Adam(eta)), model)
    for g in grads:
        state, ours = opt.update_(state, ours, g)
    assert [state[k].count for k in sorted(model)] == [12, 12, 12]
    for k, x in model.items():  # by hand: the mean of each 3 gradients, Adam at s(k)
        x = x.copy()
        leaf = opt.setup(opt.Adam(eta(0)), x)
        for update in range(4):
            acc = grads[3 * update][k] / dtype(3)
            for g in grads[3 * update + 1 : 3 * update + 3]:
                acc = acc + g[k] / dtype(3)
            leaf.rule = opt.Adam(eta(update))
            leaf, x = opt.update_(leaf, x, acc)
        np.testing.assert_array_equal(ours[k], x, err_msg=k)
    chain = opt.OptimiserChain(
        opt.AccumGrad(2), opt.OptimiserChain(opt.AccumGrad(2), opt.Adam(eta))
    )
    assert chain._at(11).opts[1].opts[1].eta == eta(2)  # nested: 11 // 2 // 2


@pytest.mark.parametrize("kinds", [2, 20])  # a few rules, and more than the batch's 16
def test_leaves_of_many_scheduled_rules_in_turn_share_the_norm(kinds, n_threads):
    # a rule function whose rules alternate leaf by leaf (matrices and vectors, say): one
    # norm over every leaf, each stepped at its own rule's scheduled value
    def rule_for(path, x):
        k = int(path[0][1:]) % kinds
        return opt.OptimiserChain(
            opt.ClipGlobalNorm(1.0), opt.Descent(schedules.linear(0.1 * (k + 1), 0.0, 10))
        )

    model = _model(np.float64, n=2 * kinds + 1, size=3)
    grads = _grads(model, 3)
    state, ours = _start(rule_for, model)
    for g in grads:
        state, ours = opt.update_(state, ours, g)
    expected = {k: v.copy() for k, v in model.items()}
    for count, g in enumerate(grads):
        norm = np.sqrt(sum(float(np.sum(v * v)) for v in g.values()))
        scale = min(1.0, 1.0 / norm)
        for k in expected:
            eta = schedules.linear(0.1 * (int(k[1:]) % kinds + 1), 0.0, 10)(count)
            expected[k] = expected[k] - eta * (g[k] * scale)
    for k in model:
        np.testing.assert_allclose(ours[k], expected[k], rtol=1e-14, err_msg=k)
