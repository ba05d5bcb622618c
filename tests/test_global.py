"""ClipGlobalNorm, SkipNonFinite and global_norm (issue 16, points 3 and 5): the norm over
every participating leaf, against torch's clip_grad_norm_ and the independent reference;
the chain against torch's AdamW after clipping; a non-finite norm raising before anything is
written, naming a key path; a skipped step changing nothing but the skip counts; checkpoints
of the new states.

The torch comparisons skip, with a reason, where torch is not installed: CI's second stage
installs torch and must run this file (see .ci/run)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import optimisers as opt
from optimisers import AdamW, ClipGlobalNorm, Descent, Momentum, OptimiserChain, SkipNonFinite
from optimisers._engine import template
from optimisers._leaf import tree_equal
from optimisers._native import kernels as K
from reference import ref_global_norm

try:
    import torch
except ImportError:  # optional: CI's second stage installs it
    torch = None

needs_torch = pytest.mark.skipif(
    torch is None, reason="PyTorch is not installed (optional): pip install torch==2.13.0"
)

PS = [1.0, 2.0, np.inf]
# a large leaf (several norm blocks, split over the threads with the threshold lowered), a
# few small ones, an empty one
SHAPES = {"w": (40, 1000), "b": (1000,), "s": (3, 7), "e": (0,), "v": (1,)}


def _grads(seed, dtype, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    out = {}
    for k, s in shapes.items():
        g = rng.standard_normal(s) * rng.choice([1e-3, 1.0, 30.0])
        out[k] = g.astype(dtype)
    return out


def _model(dtype, shapes=SHAPES, seed=1):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}


def _torch_total_norm(grads, p):
    """torch's clip_grad_norm_ total norm, in float64 (max_norm inf: nothing clipped)."""
    params = []
    for g in (g for g in grads if g.size):  # torch has no inf-norm of an empty tensor
        t = torch.zeros(g.shape, dtype=torch.float64, requires_grad=True)
        t.grad = torch.from_numpy(np.asarray(g, np.float64).copy())
        params.append(t)
    return float(torch.nn.utils.clip_grad_norm_(params, float("inf"), norm_type=p))


# ----------------------------------------------------------------------------------------
# the norm


@needs_torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("p", PS)
def test_global_norm_equals_torch_and_the_reference(p, dtype, small_parallel_threshold):
    grads = _grads(7, dtype)
    want = _torch_total_norm(list(grads.values()), p)
    bits = set()
    for threads in (1, 2):
        with threadpool_limits(limits=threads, user_api="openmp"):
            n = opt.global_norm(grads, p)
        bits.add(np.float64(n).tobytes())
        assert abs(n - want) <= 1e-12 * want, (n, want)
        assert n == ref_global_norm(list(grads.values()), p)  # the same bits
    assert len(bits) == 1, "the thread count changed the norm"


def test_global_norm_of_a_tree():
    g = {
        "a": [np.array([3.0], np.float32), None],
        "b": (np.array([[4.0]]),),
        "f": np.tanh,
        "c": np.array([0.0 + 12j], np.complex64),
        "i": np.array([0]),
    }
    assert opt.global_norm(g) == 13.0
    assert opt.global_norm(g, 1) == 19.0 and opt.global_norm(g, np.inf) == 12.0
    assert opt.global_norm({}) == 0.0 and opt.global_norm([np.zeros(0)], -np.inf) == 0.0
    assert np.isnan(opt.global_norm([np.ones(3), np.array([np.nan])], np.inf))


def test_global_norm_counts_what_optimisers_train():
    # integer and boolean arrays and bare numbers are not trained (no Leaf, no clipping):
    # the norm for the training log is the one ClipGlobalNorm clips by
    w = {"w": np.array([3.0, 4.0]), "h": np.array([0.0], np.float16)}
    g = {**w, "steps": np.array([100]), "mask": np.array([True, True]), "lr": 2.0}
    assert opt.global_norm(g) == 5.0
    assert opt.global_norm({"h": np.array([3.0, 4.0], np.float16)}) == 5.0
    state = opt.setup(opt.ClipGlobalNorm(1.0), {"w": np.zeros(2), "steps": np.array([0])})
    model = {"w": np.zeros(2), "steps": np.array([0])}
    state, model = opt.update_(state, model, {"w": w["w"], "steps": g["steps"]})
    np.testing.assert_allclose(model["w"], [-0.6, -0.8])  # scaled by 1 / 5


@pytest.mark.parametrize("p", ["2", True, None, 2j])
def test_global_norm_refuses_a_p_that_is_no_real_number(p):
    with pytest.raises(TypeError, match="global_norm: p must be a real number"):
        opt.global_norm({"w": np.ones(2)}, p)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("p", PS + [3.0, -np.inf])
def test_the_step_is_clipped_by_the_global_norm(p, dtype, n_threads, small_parallel_threshold):
    """x = 0, Descent(1): x becomes -g * min(1, omega/norm), norm over every leaf; leaves
    on the general path (float16, complex) join the batch's leaves."""
    grads = _grads(11, dtype)
    grads["h"] = np.array([3.0, -1.0], np.float16)
    grads["c"] = np.array([1 - 2j, 0.5j], np.complex128)
    model = {k: np.zeros(g.shape, g.dtype) for k, g in grads.items()}
    omega = 0.5
    rule = OptimiserChain(ClipGlobalNorm(omega, p), Descent(1.0))
    state, model = opt.update_(opt.setup(rule, model), model, grads)
    cast = {k: g.astype(np.float32) if g.dtype == np.float16 else g for k, g in grads.items()}
    norm = ref_global_norm(list(cast.values()), p)
    scale = min(1.0, omega / norm)
    for k, g in cast.items():
        want = -(g * np.asarray(scale, g.real.dtype)).astype(g.dtype)
        np.testing.assert_array_equal(model[k], want.astype(model[k].dtype), err_msg=k)


def test_only_equal_leading_rules_share_a_norm():
    """Leaves whose rules start with equal ClipGlobalNorms share a norm; another omega is
    another group; a leaf without one is not clipped."""
    g = {"a": np.array([3.0]), "b": np.array([4.0]), "c": np.array([30.0]), "d": np.array([40.0])}
    model = {k: np.zeros(1) for k in g}
    one = OptimiserChain(ClipGlobalNorm(1.0), Descent(1.0))
    state = {
        "a": opt.setup(one, model["a"]),
        "b": opt.setup(one, model["b"]),
        "c": opt.setup(OptimiserChain(ClipGlobalNorm(2.0), Descent(1.0)), model["c"]),
        "d": opt.setup(Descent(1.0), model["d"]),
    }
    state, model = opt.update_(state, model, g)
    assert [float(model[k][0]) for k in "abcd"] == [-3 * (1 / 5), -4 * (1 / 5), -2.0, -40.0]


# ----------------------------------------------------------------------------------------
# the chain against torch


@needs_torch
def test_chain_tracks_torch_adamw_after_clipping():
    """float64, several steps: torch's total norm, the clip min(1, omega/norm), torch's
    AdamW; ours within 1e-9 relative.  (torch's own clip_grad_norm_ divides by norm + 1e-6:
    that run is recorded within 1e-6.)"""
    eta, betas, wd, eps, omega = 1e-2, (0.9, 0.99), 0.1, 1e-8, 1.0
    shapes = {"w": (30, 40), "b": (40,), "s": (5,)}
    model = _model(np.float64, shapes)
    rule = OptimiserChain(ClipGlobalNorm(omega), AdamW(eta, betas, wd, eps))
    state = opt.setup(rule, model)
    params = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in model.items()}
    params2 = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in model.items()}
    topt = torch.optim.AdamW(params.values(), lr=eta, betas=betas, eps=eps, weight_decay=wd)
    topt2 = torch.optim.AdamW(params2.values(), lr=eta, betas=betas, eps=eps, weight_decay=wd)
    for step in range(6):
        grads = _grads(100 + step, np.float64, shapes)
        state, model = opt.update_(state, model, grads)
        for k, t in params.items():
            t.grad = torch.from_numpy(grads[k].copy())
            params2[k].grad = torch.from_numpy(grads[k].copy())
        norm = float(torch.nn.utils.clip_grad_norm_(params.values(), float("inf")))
        with torch.no_grad():
            for t in params.values():
                t.grad.mul_(min(1.0, omega / norm))
        topt.step()
        torch.nn.utils.clip_grad_norm_(params2.values(), omega)
        topt2.step()
        for k in model:
            want = params[k].detach().numpy()
            np.testing.assert_allclose(model[k], want, rtol=1e-9, atol=1e-12, err_msg=k)
            np.testing.assert_allclose(
                model[k], params2[k].detach().numpy(), rtol=1e-6, atol=1e-9, err_msg=k
            )


def test_skip_and_clip_share_one_stage_and_the_scale_is_folded():
    x = np.zeros(4, np.float32)
    rule = OptimiserChain(SkipNonFinite(), ClipGlobalNorm(1.0), AdamW())
    tpl = template(rule, x, rule.init(x))
    assert [s[0] for s in tpl] == [K.GLOBALNORM, K.ADAMW_COUPLED]
    assert tpl[0][1]["clip"] == 1.0 and tpl[0][1]["skip"] == 1.0


def test_clip_global_norm_must_lead():
    # refused when the chain is built, naming what comes first ...
    for rules, before in (
        ((Descent(0.1), ClipGlobalNorm()), "Descent"),
        ((ClipGlobalNorm(), SkipNonFinite(), Descent(0.1)), "ClipGlobalNorm"),
        ((Momentum(), SkipNonFinite()), "Momentum"),
        ((SkipNonFinite(), Descent(0.1), ClipGlobalNorm()), "Descent"),
    ):
        with pytest.raises(ValueError, match=f"must lead its chain.*after {before}"):
            OptimiserChain(*rules)
    OptimiserChain(SkipNonFinite(), ClipGlobalNorm(), Descent(0.1))  # the recipe's order
    # ... and, nested out of sight of the chain, by the engine before anything is written
    x = {"x": np.zeros(3)}
    rule = OptimiserChain(Descent(0.1), OptimiserChain(ClipGlobalNorm(), Descent(0.1)))
    with pytest.raises(ValueError, match="must lead its chain"):
        opt.update_(opt.setup(rule, x), x, {"x": np.ones(3)})
    assert x["x"].tolist() == [0.0, 0.0, 0.0]


def test_apply_alone_clips_by_its_own_norm():
    st, d = opt.apply_(ClipGlobalNorm(1.0), None, np.zeros(2), np.array([3.0, 4.0]))
    np.testing.assert_array_equal(d, [3 * 0.2, 4 * 0.2])
    with pytest.raises(FloatingPointError, match="norm"):
        opt.apply_(ClipGlobalNorm(1.0), None, np.zeros(2), np.array([3.0, np.nan]))
    rule = SkipNonFinite()
    st, d = opt.apply_(rule, rule.init(np.zeros(2)), np.zeros(2), np.array([np.inf, 1.0]))
    assert d is None and int(st.skipped) == 1 and int(st.consecutive) == 1


# ----------------------------------------------------------------------------------------
# non-finite norms: throw before anything is written

BAD_LEAVES = {"batch": ("inner", "w"), "float16": ("h",), "complex": ("c",)}


def _mixed_model_and_grads(seed=5):
    """Batch leaves (float32, float64) and general-path ones (float16, complex)."""
    rng = np.random.default_rng(seed)
    model = {
        "inner": {
            "w": rng.standard_normal((50, 50)).astype(np.float32),
            "b": rng.standard_normal(50),
        },
        "h": rng.standard_normal(6).astype(np.float16),
        "c": (rng.standard_normal(4) + 1j * rng.standard_normal(4)),
    }
    grads = {
        "inner": {
            k: rng.standard_normal(v.shape).astype(v.dtype) for k, v in model["inner"].items()
        },
        "h": rng.standard_normal(6).astype(np.float16),
        "c": rng.standard_normal(4) + 1j * rng.standard_normal(4),
    }
    return model, grads


def _plant(grads, where, value):
    g = grads
    for k in where[:-1]:
        g = g[k]
    g[where[-1]].reshape(-1)[3] = value


@pytest.mark.parametrize("bad", list(BAD_LEAVES), ids=list(BAD_LEAVES))
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_throw_names_the_key_path_and_writes_nothing(bad, value):
    model, grads = _mixed_model_and_grads()
    _plant(grads, BAD_LEAVES[bad], value)
    rule = OptimiserChain(ClipGlobalNorm(1.0), AdamW(0.1))
    state = opt.setup(rule, model)
    state_before, model_before = copy.deepcopy(state), copy.deepcopy(model)
    with pytest.raises(FloatingPointError, match="at " + ".".join(BAD_LEAVES[bad])):
        opt.update_(state, model, grads)
    assert tree_equal(state, state_before)
    assert tree_equal(model, model_before)


def test_a_finite_overflow_is_not_a_non_finite_gradient():
    g = {"a": np.array([1e200, 1e200]), "b": np.array([1.0])}
    model = {k: np.zeros(v.shape) for k, v in g.items()}
    with pytest.raises(FloatingPointError, match="finite, their norm overflows"):
        opt.update_(opt.setup(OptimiserChain(ClipGlobalNorm(1.0), Descent(1.0)), model), model, g)
    # not skipped: an infinite norm zeroes the gradients (throw=False)
    rule = OptimiserChain(SkipNonFinite(), ClipGlobalNorm(1.0, throw=False), Descent(1.0))
    state = opt.setup(rule, model)
    state, model = opt.update_(state, model, g)
    assert int(state["a"].state[0].skipped) == 0
    assert not np.any(model["a"]) and not np.any(model["b"])


# ----------------------------------------------------------------------------------------
# SkipNonFinite

SKIP_RULES = [
    OptimiserChain(SkipNonFinite(), ClipGlobalNorm(1.0), AdamW(0.05, lambda_=0.1)),
    OptimiserChain(SkipNonFinite(), AdamW(0.05)),
]


@pytest.mark.parametrize("bad", list(BAD_LEAVES), ids=list(BAD_LEAVES))
@pytest.mark.parametrize("rule", SKIP_RULES, ids=["skip-clip-adamw", "skip-adamw"])
def test_a_skipped_step_changes_nothing_and_training_resumes(rule, bad, n_threads):
    model, _ = _mixed_model_and_grads()
    steps = [_mixed_model_and_grads(10 + i)[1] for i in range(4)]
    bad_step = copy.deepcopy(steps[1])
    _plant(bad_step, BAD_LEAVES[bad], np.nan)
    clean_state, clean = opt.setup(rule, model), copy.deepcopy(model)
    state, m = opt.setup(rule, model), copy.deepcopy(model)
    for i, g in enumerate(steps):
        if i == 1:
            before_s, before_m = copy.deepcopy(state), copy.deepcopy(m)
            state, m = opt.update_(state, m, bad_step)
            assert tree_equal(m, before_m)
            assert int(state["h"].state[0].skipped) == 1
            assert int(state["inner"]["w"].state[0].consecutive) == 1
            for k in ("h", "c"):  # but for the counts, the state is as it was
                state[k].state[0].skipped[...] = 0
                state[k].state[0].consecutive[...] = 0
            for k in ("w", "b"):
                state["inner"][k].state[0].skipped[...] = 0
                state["inner"][k].state[0].consecutive[...] = 0
            assert tree_equal(state, before_s)
            for k in ("h", "c"):
                state[k].state[0].skipped[...] = 1
            for k in ("w", "b"):
                state["inner"][k].state[0].skipped[...] = 1
        state, m = opt.update_(state, m, g)
        clean_state, clean = opt.update_(clean_state, clean, g)
    assert tree_equal(m, clean)
    assert int(state["c"].state[0].skipped) == 1 and int(state["c"].state[0].consecutive) == 0
    for k in ("h", "c"):
        state[k].state[0].skipped[...] = 0
    for k in ("w", "b"):
        state["inner"][k].state[0].skipped[...] = 0
    assert tree_equal(state, clean_state)


def test_max_consecutive_raises_and_a_good_step_resets():
    rule = OptimiserChain(SkipNonFinite(2), Descent(0.5))
    model = {"a": np.ones(2), "b": np.ones(3, np.float32)}
    state = opt.setup(rule, model)
    bad = {"a": np.array([1.0, np.inf]), "b": np.ones(3, np.float32)}
    good = {"a": np.ones(2), "b": np.ones(3, np.float32)}
    for _ in range(2):
        state, model = opt.update_(state, model, bad)
    before = copy.deepcopy(state)
    with pytest.raises(FloatingPointError, match=r"2 steps skipped in a row.*max_consecutive=2"):
        opt.update_(state, model, bad)
    assert tree_equal(state, before) and np.array_equal(model["a"], np.ones(2))
    state, model = opt.update_(state, model, good)
    s = state["a"].state[0]
    assert (int(s.skipped), int(s.consecutive)) == (2, 0)
    np.testing.assert_array_equal(model["a"], [0.5, 0.5])
    state, model = opt.update_(state, model, bad)  # a new run of skips
    assert int(state["b"].state[0].consecutive) == 1
    with pytest.raises(FloatingPointError):
        opt.update_(opt.setup(OptimiserChain(SkipNonFinite(0), Descent(0.5)), model), model, bad)


def test_a_good_step_ends_the_run_of_skips_for_a_leaf_without_a_gradient_in_it():
    # b has no gradient in the good step, so its own count is not reset there: the run of
    # skips is the shortest count, and two skips in a row stay allowed
    model = {"a": np.ones(2), "b": np.ones(2)}
    state = opt.setup(OptimiserChain(SkipNonFinite(2), Descent(0.1)), model)
    bad = {"a": np.array([np.nan, 1.0]), "b": np.ones(2)}
    for g in (bad, {"a": np.ones(2), "b": None}, bad, bad):
        state, model = opt.update_(state, model, g)
    before = copy.deepcopy(state)
    with pytest.raises(FloatingPointError, match=r"at a\) after 2 steps skipped in a row"):
        opt.update_(state, model, bad)
    assert tree_equal(state, before)


def test_skip_fields():
    with pytest.raises(ValueError, match="max_consecutive"):
        SkipNonFinite(-1)
    with pytest.raises(TypeError, match="max_consecutive"):
        SkipNonFinite(1.5)
    assert SkipNonFinite(3) == SkipNonFinite(3) != SkipNonFinite()
    assert opt.adjust(SkipNonFinite(3), max_consecutive=5) == SkipNonFinite(5)


def test_checkpoint_keeps_the_skip_counts(tmp_path):
    rule = OptimiserChain(SkipNonFinite(4), ClipGlobalNorm(1.0), AdamW(0.05))
    model = {"a": np.ones(3, np.float32), "b": np.ones(2)}
    state = opt.setup(rule, model)
    state, model = opt.update_(
        state, model, {"a": np.ones(3, np.float32), "b": np.array([np.nan, 1.0])}
    )
    opt.save_state(tmp_path / "s.ckpt", state)
    loaded = opt.load_state(tmp_path / "s.ckpt")
    assert tree_equal(loaded, state)
    assert type(loaded["a"].state[0]).__name__ == "SkipNonFiniteState"
    g = {"a": np.full(3, 2.0, np.float32), "b": np.array([3.0, 1.0])}
    m1, m2 = copy.deepcopy(model), copy.deepcopy(model)
    state, m1 = opt.update_(state, m1, g)
    loaded, m2 = opt.update_(loaded, m2, g)
    assert tree_equal(loaded, state) and tree_equal(m1, m2)


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])  # a batch, a Program each
def test_a_scheduled_omega_at_other_counts_shares_the_norm(dtype):
    # equal rules share one global norm; a scheduled omega has its value at each leaf's
    # count: a (no gradient for 5 steps) clips with omega(0) = 1, b with omega(5) = 0.55
    omega = opt.schedules.piecewise_constant(1.0, {3: 0.55})
    rule = OptimiserChain(SkipNonFinite(), ClipGlobalNorm(omega), Descent(1.0))
    model = {"a": np.zeros(1, dtype), "b": np.zeros(1, dtype)}
    state = opt.setup(rule, model)
    for _ in range(5):
        state, model = opt.update_(state, model, {"a": None, "b": np.full(1, 100.0, dtype)})
    b0 = model["b"].copy()
    g = {"a": np.full(1, 100.0, dtype), "b": np.full(1, 100.0, dtype)}
    state, model = opt.update_(state, model, g)
    norm = 100.0 * np.sqrt(2.0)  # over both leaves
    np.testing.assert_allclose(-model["a"], [100.0 * 1.0 / norm], rtol=1e-15)
    np.testing.assert_allclose(b0 - model["b"], [100.0 * 0.55 / norm], rtol=1e-13)
