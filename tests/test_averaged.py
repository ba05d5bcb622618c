"""Lookahead, EMA and ``opt.averaged``: against their peers (optax.lookahead, torch's
AveragedModel with get_ema_multi_avg_fn; skipped with a reason when not installed), against
the numpy reference, and what ``averaged`` returns for every kind of rule.  (Bit-for-bit
runs over the registry's rows, threads, checkpoints, complex and 16-bit parameters are in
test_rules, test_threads, test_checkpoint, test_complex and test_low_precision.)"""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import optimisers as opt
from assertions import assert_arrays_same, assert_state_same
from optimisers import _plan
from optimisers._native import kernels as K
from reference import ref_averaged, ref_init, ref_update


def _rel(got, want):
    return float(np.max(np.abs(got - want) / np.maximum(np.abs(want), 1e-300)))


# ---------------------------------------------------------------------------------------
# the peers


@pytest.mark.parametrize("decay", [0.9, 0.3], ids=["lerp-near", "lerp-far"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_ema_matches_torch_averaged_model(dtype, decay):
    torch = pytest.importorskip("torch", reason="the peer test needs torch")
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    rng = np.random.default_rng(1)
    x0 = rng.standard_normal((6, 4)).astype(dtype)
    lin = torch.nn.Linear(4, 6, bias=False).to(
        torch.float64 if dtype == np.float64 else torch.float32
    )
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(x0))
    ema = AveragedModel(lin, multi_avg_fn=get_ema_multi_avg_fn(decay))
    sgd = torch.optim.SGD(lin.parameters(), lr=0.1)
    x = x0.copy()
    st = opt.setup(opt.EMA(opt.Descent(0.1), decay=decay), x)
    # torch's CPU kernels fuse a multiply-add (SGD's add_, lerp): a rounding apart
    tol = 1e-12 if dtype == np.float64 else 1e-5
    for t in range(20):
        g = rng.standard_normal(x0.shape).astype(dtype)
        lin.weight.grad = torch.tensor(g)
        sgd.step()
        ema.update_parameters(lin)
        st, x = opt.update_(st, x, g)
        assert _rel(x, lin.weight.detach().numpy()) < tol, f"x at step {t + 1}"
        avg = opt.averaged(st, x)
        assert _rel(avg, ema.module.weight.detach().numpy()) < tol, f"average at step {t + 1}"


def test_lookahead_matches_optax():
    jax = pytest.importorskip("jax", reason="the peer test needs jax and optax")
    optax = pytest.importorskip("optax", reason="the peer test needs optax")
    x64 = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        rng = np.random.default_rng(2)
        x0 = rng.standard_normal((5, 3))
        tx = optax.lookahead(optax.adam(0.05), sync_period=3, slow_step_size=0.4)
        params = optax.LookaheadParams.init_synced(jax.numpy.asarray(x0))
        ost = tx.init(params)
        x = x0.copy()
        st = opt.setup(opt.Lookahead(opt.Adam(0.05), k=3, alpha=0.4), x)
        for t in range(20):
            g = rng.standard_normal(x0.shape)
            u, ost = tx.update(jax.numpy.asarray(g), ost, params)
            params = optax.apply_updates(params, u)
            st, x = opt.update_(st, x, g)
            assert _rel(x, np.asarray(params.fast)) < 1e-12, f"fast at step {t + 1}"
            slow = opt.averaged(st, x)
            assert _rel(slow, np.asarray(params.slow)) < 1e-12, f"slow at step {t + 1}"
    finally:
        jax.config.update("jax_enable_x64", x64)


# ---------------------------------------------------------------------------------------
# the reference, on arrays split over threads


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64], ids=["f16", "f32", "f64"])
@pytest.mark.parametrize(
    "rule",
    [
        opt.Lookahead(opt.AdamW(0.05, lambda_=0.1), k=3, alpha=0.4),
        opt.EMA(opt.Nesterov(0.05), decay=0.9),
        opt.EMA(opt.Lookahead(opt.Momentum(0.1), k=2), decay=0.2),
        opt.MixedPrecision(np.float64, opt.Lookahead(opt.Adam(0.05), k=2)),
        opt.OptimiserChain(opt.ClipNorm(5.0), opt.EMA(opt.ScheduleFreeAdamW(0.05), decay=0.5)),
    ],
    ids=["Lookahead", "EMA", "EMA-Lookahead", "Mixed-Lookahead", "ClipNorm-EMA-SF"],
)
def test_averaged_matches_reference(rule, dtype, threads):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((30, 1000)).astype(dtype)
    st = opt.setup(rule, x)
    ref_st, ref_x = ref_init(rule, x), x.copy()
    with threadpool_limits(threads):
        for t in range(7):
            g = rng.standard_normal(x.shape).astype(dtype)
            st, x = opt.update_(st, x, g)
            ref_st, ref_x = ref_update(rule, ref_st, ref_x, g)
            assert_arrays_same(x, ref_x, f"x at step {t + 1}")
            assert_arrays_same(
                opt.averaged(st, x), ref_averaged(rule, ref_st, ref_x), f"averaged at step {t + 1}"
            )
    assert_state_same(st.state, ref_st, "state")


# ---------------------------------------------------------------------------------------
# averaged(state, model)


def test_averaged_returns_a_new_model_and_leaves_the_trained_one():
    w, b = np.ones((2, 3)), np.zeros(3)
    model = {"layers": [w, w], "b": b, "act": np.tanh, "n": 3, "fixed": np.arange(3)}
    st = opt.setup(opt.EMA(opt.Descent(0.5), decay=0.5), model)
    grads = {"layers": [np.ones((2, 3)), None], "b": np.ones(3)}
    st, model = opt.update_(st, model, grads)
    st, model = opt.update_(st, model, grads)
    before = {k: np.copy(model[k]) for k in ("b",)}
    ev = opt.averaged(st, model)
    assert ev is not model and ev["layers"][0] is not w
    assert ev["layers"][0] is ev["layers"][1]  # the tie survives
    assert_arrays_same(ev["layers"][0], np.full((2, 3), 0.25), "EMA of w: 0.5, then 0.25")
    assert_arrays_same(ev["b"], np.full(3, -0.75), "EMA of b: -0.5, then -0.75")
    assert_arrays_same(model["b"], before["b"], "the trained model is untouched")
    assert ev["act"] is np.tanh and ev["n"] == 3
    assert_arrays_same(ev["fixed"], np.arange(3), "an array that is not trained")
    ev["b"][:] = 7.0  # a copy: the state is not touched
    assert_arrays_same(opt.averaged(st, model)["b"], np.full(3, -0.75), "state after write")


def test_averaged_of_plain_rules_is_a_copy_of_the_model():
    model = {"w": np.ones(3, np.float32)}
    st = opt.setup(opt.Adam(0.1), model)
    st, model = opt.update_(st, model, {"w": np.ones(3, np.float32)})
    ev = opt.averaged(st, model)
    assert ev["w"] is not model["w"]
    assert_arrays_same(ev["w"], model["w"], "plain rule")


def test_averaged_finds_the_copy_in_chains_and_mixed_precision():
    x = np.ones(4, np.float16)
    rule = opt.MixedPrecision(
        opt.OptimiserChain(opt.ClipGrad(1.0), opt.EMA(opt.Descent(0.1), decay=0.5))
    )
    st = opt.setup(rule, x)
    for _ in range(3):
        st, x = opt.update_(st, x, np.ones(4, np.float16))
    ev = opt.averaged(st, x)
    assert ev.dtype == np.float16
    assert_arrays_same(ev, st.state.inner[1].ema.astype(np.float16), "EMA in the chain")
    # the outer wrapper's copy comes first: EMA of Lookahead gives the EMA
    rule = opt.EMA(opt.Lookahead(opt.Descent(1.0), k=2), decay=0.5)
    y = np.zeros(1)
    st = opt.setup(rule, y)
    for _ in range(3):  # x: -1, -2 then synchronised to -1, -2; slow -1; EMA -1.5
        st, y = opt.update_(st, y, np.ones(1))
    assert_arrays_same(opt.averaged(st, y), np.array([-1.5]), "EMA outside Lookahead")
    assert not np.array_equal(st.state.ema, st.state.inner.slow)


def test_averaged_names_the_key_path_of_a_misfit():
    st = opt.setup(opt.EMA(opt.Descent()), {"a": {"b": np.zeros(2)}})
    with pytest.raises(ValueError, match="a"):
        opt.averaged(st, {"a": {"c": np.zeros(2)}})
    with pytest.raises(TypeError, match=r"a\.b"):
        opt.averaged(st, {"a": {"b": 1.0}})


# ---------------------------------------------------------------------------------------
# the rules as values; fusion; placement


def test_the_averaging_is_one_stage_of_the_inner_rules_batch_program():
    x = np.zeros(8, np.float32)
    for rule, kinds in [
        (opt.Lookahead(opt.Adam()), [K.ADAM, K.LOOKAHEAD]),
        (
            opt.EMA(opt.OptimiserChain(opt.ClipGrad(1.0), opt.Momentum())),
            [K.CLIPGRAD, K.MOMENTUM, K.EMA],
        ),
    ]:
        tpl = _plan.template(rule, x, opt.init(rule, x))
        assert tpl is not None, f"{rule!r} runs in the batch, in one kernel pass"
        assert [stage[0] for stage in tpl] == kinds


def test_placement_and_wrapping_are_checked():
    with pytest.raises(ValueError, match="Lookahead must be the last rule"):
        opt.OptimiserChain(opt.Lookahead(opt.Adam()), opt.ClipGrad(1.0))
    with pytest.raises(ValueError, match="must be the last rule"):
        opt.OptimiserChain(opt.OptimiserChain(opt.EMA(opt.Adam())), opt.Descent())
    with pytest.raises(ValueError, match=r"MixedPrecision\(EMA\(rule\)\)"):
        opt.EMA(opt.MixedPrecision(opt.Adam()))
    with pytest.raises(TypeError, match="wraps a rule"):
        opt.Lookahead(0.1)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: opt.Lookahead(opt.Adam(), k=0), "k=0"),
        (lambda: opt.Lookahead(opt.Adam(), k=2.0), "k must be an integer"),
        (lambda: opt.Lookahead(opt.Adam(), alpha=1.5), "alpha=1.5"),
        (lambda: opt.EMA(opt.Adam(), decay=-0.1), "decay=-0.1"),
        (lambda: opt.EMA(opt.Adam(), decay=float("nan")), "decay=nan"),
    ],
)
def test_hyperparameters_are_validated(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make()


def test_values_repr_equality_and_adjust():
    la = opt.Lookahead(opt.Adam(0.01), k=3, alpha=0.25)
    assert la == opt.Lookahead(opt.Adam(0.01), k=3, alpha=0.25) != opt.Lookahead(opt.Adam())
    assert hash(la) == hash(opt.Lookahead(opt.Adam(0.01), k=3, alpha=0.25))
    assert repr(la) == "Lookahead(Adam(eta=0.01, beta=(0.9, 0.999), epsilon=1e-08), 3, 0.25)"
    with pytest.raises(AttributeError):
        la.k = 4
    assert opt.adjust(la, k=2, eta=0.5) == opt.Lookahead(opt.Adam(0.5), k=2, alpha=0.25)
    with pytest.raises(ValueError, match="k=0"):
        opt.adjust(la, k=0)
    x = np.zeros(3)
    st = opt.setup(opt.EMA(opt.Descent(1.0), decay=0.5), x)
    st, x = opt.update_(st, x, np.ones(3))
    opt.adjust_(st, decay=0.0)  # the average follows x now
    st, x = opt.update_(st, x, np.ones(3))
    assert_arrays_same(opt.averaged(st, x), x, "decay 0")


def test_schedules_for_the_wrappers_fields():
    alpha = opt.schedules.linear(1.0, 0.0, 4)  # 1, 0.75, 0.5 ...
    decay = opt.schedules.linear(0.0, 0.8, 4)
    rule = opt.EMA(opt.Lookahead(opt.Descent(1.0), k=1, alpha=alpha), decay=decay)
    x = np.zeros(2)
    st = opt.setup(rule, x)
    ref_st, ref_x = ref_init(rule, x), x.copy()
    for t in range(5):
        g = np.full(2, float(t + 1))
        st, x = opt.update_(st, x, g)
        ref_st, ref_x = ref_update(rule._at(t), ref_st, ref_x, g)
        assert_arrays_same(x, ref_x, f"x at step {t + 1}")
        assert_arrays_same(st.state.ema, ref_st.ema, f"ema at step {t + 1}")
    assert opt.hyperparameters(st).decay == decay(5)


def test_accumgrad_inside_lookahead_counts_only_real_steps():
    x = np.zeros(1)
    st = opt.setup(
        opt.Lookahead(opt.OptimiserChain(opt.AccumGrad(2), opt.Descent(1.0)), k=2, alpha=0.5), x
    )
    for _ in range(3):  # steps 1 (no step), 2, 3 (no step)
        st, x = opt.update_(st, x, np.ones(1))
    assert int(st.state.since) == 1 and x[0] == -1.0
    st, x = opt.update_(st, x, np.ones(1))  # the second real step: sync
    assert int(st.state.since) == 0
    assert_arrays_same(x, np.array([-1.0]), "slow = 0 + 0.5*(-2 - 0)")


def test_a_failed_step_writes_nothing():
    model = {"a": np.ones(3), "b": np.ones(3)}
    st = opt.setup(opt.Lookahead(opt.Adam(0.1), k=1), model)
    before = (model["a"].copy(), st["a"].state.slow.copy(), int(st["a"].state.since))
    with pytest.raises(ValueError, match="b"):
        opt.update_(st, model, {"a": np.ones(3), "b": np.ones(4)})
    assert_arrays_same(model["a"], before[0], "x")
    assert_arrays_same(st["a"].state.slow, before[1], "slow")
    assert int(st["a"].state.since) == before[2]


def test_checkpoint_of_nested_wrappers_with_schedules_resumes_bit_for_bit(tmp_path):
    sf = opt.ScheduleFreeAdamW(opt.schedules.linear(0.1, 0.01, 10), warmup_steps=2)
    rule = opt.MixedPrecision(
        np.float64,
        opt.EMA(opt.Lookahead(sf, k=2, alpha=opt.schedules.linear(0.5, 0.9, 5)), decay=0.7),
    )
    rng = np.random.default_rng(0)
    model = {"w": np.ones((3, 4), np.float32)}
    st = opt.setup(rule, model)
    for _ in range(3):
        st, model = opt.update_(st, model, {"w": rng.standard_normal((3, 4), np.float32)})
    opt.save_state(tmp_path / "c.ckpt", st)
    st2, model2 = opt.load_state(tmp_path / "c.ckpt"), {"w": model["w"].copy()}
    assert st2["w"].rule == rule
    for t in range(4):
        g = {"w": rng.standard_normal((3, 4), np.float32)}
        st, model = opt.update_(st, model, g)
        st2, model2 = opt.update_(st2, model2, g)
        assert_arrays_same(model2["w"], model["w"], f"x {t}")
        assert_arrays_same(
            opt.averaged(st2, model2)["w"], opt.averaged(st, model)["w"], f"averaged {t}"
        )
