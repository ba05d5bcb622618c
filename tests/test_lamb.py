"""LAMB: against a numpy evaluation of optax.lamb's formula (real and complex; and optax
itself, when installed), its trust ratio's handling of zero norms, its norm pass
(thread-count invariant) and its refusals.  The bit-for-bit checks against tests/reference.py in
float32/float64 on 1 and 2 threads, checkpoints, schedules and atomicity run for every
rule of the registry (tests/registry.py rows LAMB-*, Chain-ClipNorm-LAMB-ClipGrad)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import optimisers as opt
from assertions import assert_arrays_same, assert_state_same
from optimisers._native import kernels as K
from reference import ref_init, ref_update

HAVE_OPTAX = importlib.util.find_spec("optax") is not None
needs_optax = pytest.mark.skipif(
    not HAVE_OPTAX, reason="optax is not installed (CI's optional stage installs it)"
)


def optax_lamb_numpy(x, grads, lr, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.0):
    """optax.lamb's chain, transform by transform, in float64 numpy: scale_by_adam
    (eps_root 0, bias corrections 1 - b^count), add_decayed_weights, scale_by_trust_ratio
    (min_norm 0, trust_coefficient 1, eps 0), scale_by_learning_rate."""
    mu, nu, x = np.zeros_like(x), np.zeros(x.shape), x.copy()
    for count, g in enumerate(grads, start=1):
        mu = (1 - b1) * g + b1 * mu
        nu = (1 - b2) * (g * np.conj(g)).real + b2 * nu  # optax's abs_sq
        mu_hat = mu / (1 - b1**count)
        nu_hat = nu / (1 - b2**count)
        u = mu_hat / (np.sqrt(nu_hat + 0.0) + eps)
        u = u + weight_decay * x
        param_norm, update_norm = np.linalg.norm(x), np.linalg.norm(u)
        ratio = param_norm / (update_norm + 0.0)
        u = u * (1.0 if param_norm == 0.0 or update_norm == 0.0 else ratio)
        x = x + (-lr) * u
    return x


def _problem(shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape), [rng.standard_normal(shape) for _ in range(20)]


SETTINGS = [dict(eta=1e-3), dict(eta=0.05, beta=(0.8, 0.95), epsilon=1e-8, lambda_=0.1)]


@pytest.mark.parametrize("shape", [(11,), (6, 7), (2, 3, 50_000)], ids=str)
@pytest.mark.parametrize("settings", SETTINGS, ids=["defaults", "tuned"])
def test_matches_optax_formula_float64(shape, settings):
    x, grads = _problem(shape)
    want = optax_lamb_numpy(
        x,
        grads,
        settings["eta"],
        *settings.get("beta", (0.9, 0.999)),
        eps=settings.get("epsilon", 1e-6),
        weight_decay=settings.get("lambda_", 0.0),
    )
    y = x.copy()
    st = opt.setup(opt.LAMB(**settings), y)
    for g in grads:
        st, y = opt.update_(st, y, g)
    np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-15)


@pytest.mark.skipif(
    not HAVE_OPTAX, reason="optax is not installed (CI's optional stage installs it)"
)
def test_matches_optax_itself_float64():
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import optax

    x, grads = _problem((5, 8), seed=2)
    tx = optax.lamb(0.05, weight_decay=0.1)
    params = jnp.asarray(x)
    state = tx.init(params)
    for g in grads:
        upd, state = tx.update(jnp.asarray(g), state, params)
        params = optax.apply_updates(params, upd)
    y = x.copy()
    st = opt.setup(opt.LAMB(0.05, lambda_=0.1), y)
    for g in grads:
        st, y = opt.update_(st, y, g)
    np.testing.assert_allclose(y, np.asarray(params), rtol=1e-12, atol=1e-15)


def test_zero_norms_give_a_trust_ratio_of_one():
    # x = 0: |x| = 0, the step is Adam's direction times eta (ratio 1, not 0)
    st = opt.setup(opt.LAMB(0.1, epsilon=0.0), np.zeros(3))
    st, x = opt.update_(st, np.zeros(3), np.array([2.0, -3.0, 0.5]))
    np.testing.assert_allclose(x, [-0.1, 0.1, -0.1], rtol=1e-15)
    # g = 0 with zero moments: u = 0, the step is 0 and x stays
    st = opt.setup(opt.LAMB(0.1), np.ones(3))
    st, x = opt.update_(st, np.ones(3), np.zeros(3))
    assert np.array_equal(x, np.ones(3))


def test_the_ratio_scales_each_array_by_its_own_norms():
    model = {"big": np.full(4, 100.0), "small": np.full(4, 0.01)}
    st = opt.setup(opt.LAMB(0.1), model)
    before = {k: v.copy() for k, v in model.items()}
    st, model = opt.update_(st, model, {"big": np.ones(4), "small": np.ones(4)})
    # u is about 1 everywhere: each array moves by eta times its own RMS
    for k in model:
        np.testing.assert_allclose(before[k] - model[k], 0.1 * before[k], rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_norm_pass_does_not_depend_on_thread_count(dtype, small_parallel_threshold):
    rng = np.random.default_rng(4)
    n = 70_001
    g, m, v, x = (rng.standard_normal(n).astype(dtype) for _ in range(4))
    v = np.abs(v)
    hp = {
        "b1": 0.9,
        "b2": 0.999,
        "omb1": 0.1,
        "omb2": 1 - 0.999,
        "eps": 1e-6,
        "lam": 0.1,
        "bc1": 0.1,
        "bc2": 1 - 0.999,
        "eta": 1e-3,
        "y1": 1 / float(np.float32(0.1)),
        "y2": 1 / float(np.float32(1 - 0.999)),
    }
    got = []
    for threads in (1, 2):
        with threadpool_limits(limits=threads, user_api="openmp"):
            got.append(K.lamb_norms(g, m, v, x, hp))
    assert got[0] == got[1]
    assert got[0][0] == pytest.approx(float(np.sum(x.astype(np.float64) ** 2)), rel=1e-12)


def test_complex_parameters_follow_the_formula():
    # optax's formula on complex arrays: m complex, v real |g|^2, complex norms
    rng = np.random.default_rng(9)
    x = rng.standard_normal((4, 5)) + 1j * rng.standard_normal((4, 5))
    grads = [rng.standard_normal((4, 5)) + 1j * rng.standard_normal((4, 5)) for _ in range(20)]
    want = optax_lamb_numpy(x, grads, 0.05, eps=1e-8, weight_decay=0.1)
    y = x.copy()
    st = opt.setup(opt.LAMB(0.05, epsilon=1e-8, lambda_=0.1), y)
    assert st.state.v.dtype == np.float64
    for g in grads:
        st, y = opt.update_(st, y, g)
    np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(
    "field, value", [("beta", (0.9, 1.0)), ("eta", -1.0), ("epsilon", -1e-6), ("lambda_", -0.1)]
)
def test_refuses_bad_hyperparameters(field, value):
    with pytest.raises(ValueError, match=f"LAMB: {field}"):
        opt.LAMB(**{field: value})


def test_checkpoint_resumes_bit_for_bit(tmp_path):
    x, grads = _problem((4, 6), seed=7)
    rule = opt.OptimiserChain(opt.ClipGrad(1.0), opt.LAMB(0.05, lambda_=0.1))
    st, y = opt.setup(rule, x.copy()), x.copy()
    for g in grads[:5]:
        st, y = opt.update_(st, y, g)
    opt.save_state(tmp_path / "ck", st)
    st2, y2 = opt.load_state(tmp_path / "ck"), y.copy()
    for g in grads[5:]:
        st, y = opt.update_(st, y, g)
        st2, y2 = opt.update_(st2, y2, g)
    assert np.array_equal(y, y2)


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
@pytest.mark.parametrize(
    "rule",
    [opt.LAMB(0.05, (0.8, 0.95), 1e-8, 0.1), opt.OptimiserChain(opt.ClipNorm(1.0), opt.LAMB(0.05))],
    ids=["LAMB", "ClipNorm-LAMB"],
)
def test_complex_matches_the_reference_bit_for_bit(
    rule, dtype, n_threads, small_parallel_threshold
):
    rng = np.random.default_rng(11)

    def make(shape):
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)

    shapes = {"b": (7,), "m": (3, 1000), "w": (10001,)}  # "w" split over the threads
    model = {k: make(s) for k, s in shapes.items()}
    ref_x = {k: v.copy() for k, v in model.items()}
    ref_s = {k: ref_init(rule, v) for k, v in model.items()}
    tree = opt.setup(rule, model)
    for step in range(4):
        grads = {k: make(s) for k, s in shapes.items()}
        tree, model = opt.update_(tree, model, grads)
        for k in model:
            ref_s[k], ref_x[k] = ref_update(rule, ref_s[k], ref_x[k], grads[k])
            assert np.array_equal(model[k], ref_x[k]), f"step {step}: {k}"
            assert_state_same(tree[k].state, ref_s[k], f"step {step}: state[{k}]")


def _float32_bits(rng, n, lo, hi):
    """n float32 values of random bit patterns with |value| in [lo, hi) or 0 (subnormals
    included where lo is), signs random."""
    a = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32).view(np.float32)
    a = np.where((np.abs(a) >= lo) & (np.abs(a) < hi), a, np.float32(0))
    return a


# running products of beta: bias corrections from 1 (bt = 0) to 2^-24 (the last above 0 in
# float32 near 1: bt = 1 - 2^-24), through values whose reciprocal is inexact
@pytest.mark.parametrize("bt", [0.0, 0.9, 0.9**7, 0.5, 0.999**3, 1 - 2.0**-20, 1 - 2.0**-24])
def test_float32_divisions_by_the_bias_corrections_keep_their_bits(bt, n_threads):
    """float32 LAMB divides m and v by 1 - beta^t as a product in float64 (rules_lamb.pxi,
    `_by_bias`): on moments of random bit patterns (subnormals, tiny and huge values,
    zeros of both signs) a step keeps the bits of the divisions (tests/reference.py)."""
    rng = np.random.default_rng(int(bt * 1000))
    n = 40_000
    rule = opt.LAMB(0.01, (0.9, 0.99), 1e-6, 0.01)
    x = rng.standard_normal(n).astype(np.float32)
    g = rng.standard_normal(n).astype(np.float32)
    tiny = float(np.finfo(np.float32).smallest_subnormal)
    m = _float32_bits(rng, n, tiny, 1e30)
    v = np.abs(_float32_bits(rng, n, tiny, 1e30))
    state = opt.LAMBState(m, v, np.array([bt, bt]))
    tree = opt.setup(rule, x)
    tree.state = opt.LAMBState(m.copy(), v.copy(), state.beta_t.copy())
    ref_s, ref_x = ref_update(rule, state, x.copy(), g)
    tree, got = opt.update_(tree, x.copy(), g)
    assert_arrays_same(got, ref_x, f"bt {bt}: x")
    assert_state_same(tree.state, ref_s, f"bt {bt}: state")
