"""Every rule of the registry against the plain-numpy reference (tests/reference.py), bit
for bit, plus dtypes, convergence, NaN/edge semantics, AccumGrad, rules written in Python,
MixedPrecision and complex parameters.

Nothing here is copied from the implementation: expected values come from the reference
(written from the formulas), from the seed's documented examples, or from mathematics
(a loss that must go down).
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import optimisers as opt
from assertions import assert_arrays_same, assert_state_same, state_arrays, step_like_reference
from optimisers import (
    AccumGrad,
    AdaBelief,
    AdaDelta,
    AdaGrad,
    Adam,
    AdaMax,
    AdamW,
    AMSGrad,
    ClipGrad,
    ClipNorm,
    Descent,
    Lion,
    MixedPrecision,
    Momentum,
    NAdam,
    Nesterov,
    OAdam,
    OptimiserChain,
    RAdam,
    RMSProp,
    Rprop,
    SignDecay,
    WeightDecay,
    _native,
)
from reference import ref_apply, ref_init, ref_norm, ref_update, ref_update_tree
from registry import (
    COMPLEX_OK,
    COMPLEX_REFUSED,
    CONVERGENCE,
    MATRIX_ONLY,
    RULE_IDS,
    RULES,
    rule_classes_in,
)

RULE_VALUES = [r for _, r in RULES]
N_STEPS = 8
# with the parallel threshold lowered to 4096 (fixture small_parallel_threshold), "b" stays
# on one thread and "w" (many tiles, 2 norm blocks) is split over the threads
SHAPES = {"w": (12, 1000), "b": (1000,)}

FLOAT_IDS = {np.float16: "f16", np.float32: "f32", np.float64: "f64"}


def seed_of(*keys):
    return zlib.crc32(repr(keys).encode())


# ---------------------------------------------------------------------------------------
# helpers


def make_grad(rng, shape, dtype):
    """Normal values, about 1 in 8 exactly zero, a few large ones of both signs."""
    g = rng.standard_normal(shape)
    flat = g.reshape(-1)
    n = flat.size
    flat[rng.integers(0, n, n // 8)] = 0.0
    big = [30.0, 200.0] if np.dtype(dtype) == np.float16 else [30.0, 1e3, 2e4]
    k = min(4, n)
    flat[rng.integers(0, n, k)] = rng.choice(big, k) * rng.choice([-1.0, 1.0], k)
    if np.dtype(dtype).kind == "c":
        im = rng.standard_normal(shape)
        im.reshape(-1)[rng.integers(0, n, n // 8)] = 0.0
        return (g + 1j * im).astype(dtype)
    return g.astype(dtype)


def make_param(rng, shape, dtype):
    x = rng.standard_normal(shape)
    x.reshape(-1)[rng.integers(0, x.size, max(1, x.size // 20))] = 0.0  # sign(0) matters
    if np.dtype(dtype).kind == "c":
        return (x + 1j * rng.standard_normal(shape)).astype(dtype)
    return x.astype(dtype)


def compute_dtype(dtype):
    dtype = np.dtype(dtype)
    return np.dtype(np.float32) if dtype == np.float16 else dtype


def step_param(x, d):
    """x - d as the reference does it: in the compute dtype, rounded to x's dtype."""
    if d is None:
        return x.copy()
    C = compute_dtype(x.dtype)
    return np.array(x.astype(C) - np.asarray(d, C), dtype=x.dtype)


# ---------------------------------------------------------------------------------------
# 2a/2b: bit-exact equality with the reference, update_ / update on a model


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=FLOAT_IDS.get)
@pytest.mark.parametrize("rule", RULE_VALUES, ids=RULE_IDS)
def test_update_matches_reference(rule, dtype, n_threads, small_parallel_threshold):
    _check_update(rule, dtype)


@pytest.mark.parametrize("rule", RULE_VALUES, ids=RULE_IDS)
def test_float16_update_matches_reference(rule, small_parallel_threshold):
    """float16: the reference computes in float32 and rounds on store; states are float32.
    (tests/test_low_precision.py runs 16-bit parameters on 1 and 2 threads, and bfloat16.)"""
    with threadpool_limits(limits=1, user_api="openmp"):
        _check_update(rule, np.float16)


def _check_update(rule, dtype, shapes=SHAPES, n_steps=N_STEPS):
    rng = np.random.default_rng(seed_of(repr(rule), dtype, "update"))
    model = {k: make_param(rng, s, dtype) for k, s in shapes.items()}
    ref_x = {k: v.copy() for k, v in model.items()}
    tree = opt.setup(rule, model)
    ref_s = {k: ref_init(rule, v) for k, v in model.items()}
    for k in model:
        assert_state_same(tree[k].state, ref_s[k], f"init {k}")
    for step in range(n_steps):
        grads = {k: make_grad(rng, s, dtype) for k, s in shapes.items()}
        tree, model = step_like_reference(rule, tree, model, ref_s, ref_x, grads, step)
        for k in model:
            if not isinstance(rule, MixedPrecision):
                # element-wise states have the compute dtype (conventions §4; README:
                # float32 for a float16 parameter)
                for a in state_arrays(tree[k].state):
                    if a.shape == model[k].shape:
                        assert a.dtype == compute_dtype(dtype), f"state dtype {a.dtype}"


# apply_ runs the same tile driver as update_ (storing d instead of subtracting it); to keep
# the suite fast on busy machines, its two-thread runs are float64 only
APPLY_COMBOS = [(np.float32, 1), (np.float64, 1), (np.float64, 2)]


@pytest.mark.parametrize(
    "dtype,threads", APPLY_COMBOS, ids=[f"{FLOAT_IDS[d]}-{t}thread" for d, t in APPLY_COMBOS]
)
@pytest.mark.parametrize("rule", RULE_VALUES, ids=RULE_IDS)
def test_apply_matches_reference(rule, dtype, threads, small_parallel_threshold):
    """The functional protocol: apply_ returns d (compute dtype) and never writes x."""
    with threadpool_limits(limits=threads, user_api="openmp"):
        _check_apply(rule, dtype)


@pytest.mark.parametrize("rule", RULE_VALUES, ids=RULE_IDS)
def test_float16_apply_matches_reference(rule, small_parallel_threshold):
    with threadpool_limits(limits=1, user_api="openmp"):
        _check_apply(rule, np.float16)


def _check_apply(rule, dtype, shapes=SHAPES, n_steps=N_STEPS):
    rng = np.random.default_rng(seed_of(repr(rule), dtype, "apply"))
    for shape in shapes.values():
        x = make_param(rng, shape, dtype)
        state = opt.init(rule, x)
        ref_s = ref_init(rule, x)
        assert_state_same(state, ref_s, "init")
        for step in range(n_steps):
            g = make_grad(rng, shape, dtype)
            x_before, g_before = x.copy(), g.copy()
            state, d = opt.apply_(rule, state, x, g)
            ref_s, ref_d = ref_apply(rule, ref_s, x, g)
            where = f"{shape} step {step}"
            assert_arrays_same(x, x_before, f"{where}: apply_ wrote x")
            assert_arrays_same(g, g_before, f"{where}: apply_ wrote the gradient")
            assert_state_same(state, ref_s, f"{where}: state")
            if ref_d is None:
                assert d is None, f"{where}: a step where the reference has none"
            else:
                assert_arrays_same(d, ref_d, f"{where}: d")
            x = step_param(x, ref_d)


# ---------------------------------------------------------------------------------------
# 2c: dtypes are kept; gradients of other dtypes are cast once, straight to the compute dtype

GRAD_DTYPES = [
    (np.float16, np.float64),
    (np.float16, np.float32),
    (np.float16, np.int64),
    (np.float32, np.float64),
    (np.float32, np.int64),
    (np.float32, np.int8),
    (np.float64, np.float32),
    (np.float64, np.int32),
    (np.float64, np.float16),
]


@pytest.mark.parametrize(
    "pdt,gdt", GRAD_DTYPES, ids=[f"{np.dtype(p).name}-{np.dtype(g).name}" for p, g in GRAD_DTYPES]
)
@pytest.mark.parametrize("rule", RULE_VALUES, ids=RULE_IDS)
def test_dtypes_kept_and_gradients_cast_once(rule, pdt, gdt):
    rng = np.random.default_rng(seed_of(repr(rule), pdt, gdt))
    model = {"a": make_param(rng, (3, 7), pdt), "b": make_param(rng, (40,), pdt)}
    ref_x = {k: v.copy() for k, v in model.items()}
    tree = opt.setup(rule, model)
    ref_s = {k: ref_init(rule, v) for k, v in model.items()}
    C = compute_dtype(pdt)
    for step in range(4):
        if np.dtype(gdt).kind == "f":
            # float64 values whose double rounding (via float16/32) differs from a single one
            grads = {k: (rng.standard_normal(v.shape) * 3).astype(gdt) for k, v in model.items()}
        else:
            grads = {k: rng.integers(-3, 4, v.shape).astype(gdt) for k, v in model.items()}
        tree, model = opt.update_(tree, model, grads)
        stepped = ref_update_tree(rule, ref_s, ref_x, grads)
        for k in model:
            ref_s[k], ref_x[k] = stepped[k]
            assert model[k].dtype == np.dtype(pdt)
            assert_arrays_same(model[k], ref_x[k], f"step {step}: param {k}")
            assert_state_same(tree[k].state, ref_s[k], f"step {step}: state[{k}]")
    # the running products of Adam-like rules are float64 whatever the dtype (API departures)
    if not isinstance(rule, MixedPrecision):
        for k in model:
            _check_scalar_dtypes(tree[k].state, C)


def _check_scalar_dtypes(state, C):
    if isinstance(state, np.generic) and isinstance(state, np.floating):
        assert state.dtype == C
    elif isinstance(state, tuple):
        fields = getattr(state, "_fields", ())
        for name, s in zip(fields or [None] * len(state), state):
            if name == "beta_t":
                assert np.asarray(s).dtype == np.float64, np.asarray(s).dtype
            else:
                _check_scalar_dtypes(s, C)


@pytest.mark.parametrize("pdt", [np.float16, np.float32, np.float64], ids=FLOAT_IDS.get)
def test_gradient_cast_once_is_visible(pdt):
    """Descent(1) makes d = C(g) exactly: a float64 gradient on a float16 parameter must be
    rounded once to float32, never through float16."""
    g = np.array([0.1, 1 / 3, np.pi, -2.0009765625, 1e-5, 65519.0, 7], np.float64)
    x = np.zeros(g.shape, pdt)
    state, d = opt.apply_(Descent(1.0), None, x, g)
    assert d.dtype == compute_dtype(pdt)
    assert_arrays_same(d, g.astype(compute_dtype(pdt)), "d")


# ---------------------------------------------------------------------------------------
# 2d: convergence on a quadratic and on Rosenbrock's function

CURV = np.linspace(0.5, 2.0, 64)
X0_QUAD = np.random.default_rng(7).uniform(-2.0, 2.0, 64)
X0_ROSEN = np.array([-1.2, 1.0, -0.5, 1.5, 0.0, 0.0, 1.5, 2.0])


def quad_loss(x):
    return 0.5 * float(np.sum(CURV * x.astype(np.float64) ** 2))


def quad_grad(x):
    return CURV * x.astype(np.float64)


def rosen_loss(z):
    z = z.astype(np.float64)
    x, y = z[0::2], z[1::2]
    return float(np.mean((1 - x) ** 2 + 100 * (y - x * x) ** 2))


def rosen_grad(z):
    z = z.astype(np.float64)
    x, y = z[0::2], z[1::2]
    g = np.empty_like(z)
    g[0::2] = -2 * (1 - x) - 400 * x * (y - x * x)
    g[1::2] = 200 * (y - x * x)
    return g


QUAD_STEPS = 500


def _minimise(rule, loss, grad, x0, steps, dtype):
    x = x0.astype(dtype)
    tree = opt.setup(rule, x)
    for _ in range(steps):
        tree, x = opt.update_(tree, x, grad(x))
    assert np.all(np.isfinite(x))
    return loss(x0.astype(dtype)), loss(x)


@pytest.mark.parametrize("name", list(CONVERGENCE))
def test_convergence(name):
    rq, rr, steps = CONVERGENCE[name]
    dtype = np.float32 if name == "MixedPrecision" else np.float64
    q0, q1 = _minimise(rq, quad_loss, quad_grad, X0_QUAD, QUAD_STEPS, dtype)
    assert q0 > 40
    assert q1 < 2e-3 * q0, f"quadratic: {q0} -> {q1}"
    r0, r1 = _minimise(rr, rosen_loss, rosen_grad, X0_ROSEN, steps, dtype)
    assert r0 > 40
    assert r1 < 0.05, f"Rosenbrock: {r0} -> {r1}"


def test_convergence_covers_every_rule_class():
    covered = set()
    for rq, rr, _ in CONVERGENCE.values():
        covered |= rule_classes_in(rq) | rule_classes_in(rr) | {type(rq), type(rr)}
    # the rules for matrices only train registry.MATRIX_CONVERGENCE in tests/test_muon.py
    assert covered | set(MATRIX_ONLY) == set(opt.RULES)


# ---------------------------------------------------------------------------------------
# 2e: NaN and edge semantics


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64], ids=FLOAT_IDS.get)
def test_clipgrad_passes_nan_through(dtype):
    g = np.array([np.nan, 3.0, -3.0, 0.25, -0.0, np.inf, -np.inf, 1.0, -1.0], dtype)
    x = np.zeros(g.shape, dtype)
    _, d = opt.apply_(ClipGrad(1.0), None, x, g)
    want = np.array([np.nan, 1.0, -1.0, 0.25, -0.0, 1.0, -1.0, 1.0, -1.0], compute_dtype(dtype))
    assert_arrays_same(d, want, "d")
    rule = OptimiserChain(ClipGrad(1.0), Descent(0.5))
    tree, x2 = opt.update(opt.setup(rule, x), x, g)
    assert_arrays_same(x2, ref_update(rule, ref_init(rule, x), x, g)[1], "x")
    assert np.isnan(x2[0]) and not np.isnan(x2[1:]).any()


def _clipnorm_model():
    return {"layer": [np.ones(3), {"w": np.full(4, 2.0), "b": np.zeros(2)}], "act": np.tanh}


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize(
    "rule",
    [
        ClipNorm(1.0),
        OptimiserChain(ClipNorm(5.0, 1.0), Adam(0.1)),
        OptimiserChain(ClipNorm(5.0, np.inf), AccumGrad(2)),
    ],
    ids=["ClipNorm", "ClipNorm-Adam", "ClipNorm-AccumGrad"],
)
def test_clipnorm_throw_names_the_key_path_and_writes_nothing(rule, bad):
    model = _clipnorm_model()
    tree = opt.setup(rule, model)
    grads = {"layer": [np.ones(3), {"w": np.array([1.0, bad, 0.0, 2.0]), "b": np.ones(2)}]}
    before_model = [model["layer"][0].copy(), model["layer"][1]["w"].copy()]
    before_state = ref_init(rule, model["layer"][0])
    with pytest.raises(FloatingPointError) as info:
        opt.update_(tree, model, grads)
    assert "layer.1.w" in str(info.value)
    # a leading ClipNorm(throw=True) checks every leaf before anything is written
    assert_arrays_same(model["layer"][0], before_model[0], "x[layer.0]")
    assert_arrays_same(model["layer"][1]["w"], before_model[1], "x[layer.1.w]")
    assert_state_same(tree["layer"][0].state, before_state, "state[layer.0]")
    with pytest.raises(FloatingPointError, match=r"layer\.1\.w"):
        opt.update(tree, model, grads)
    with pytest.raises(FloatingPointError):
        opt.apply_(
            rule,
            opt.init(rule, model["layer"][1]["w"]),
            model["layer"][1]["w"],
            grads["layer"][1]["w"],
        )


def test_clipnorm_throw_false_inf_and_nan():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    rule = ClipNorm(1.0, throw=False)
    # an infinite norm: lam = 0, so d = g*0 -- NaN where g is inf, 0 elsewhere
    _, d = opt.apply_(rule, None, x, np.array([1.0, np.inf, -2.0, 0.0]))
    assert_arrays_same(d, np.array([0.0, np.nan, -0.0, 0.0]), "d (inf)")
    _, x2 = opt.update(opt.setup(rule, x), x, np.array([1.0, np.inf, -2.0, 0.0]))
    assert_arrays_same(x2, np.array([1.0, np.nan, 3.0, 4.0]), "x (inf)")
    # a NaN norm: lam = NaN, every element NaN
    _, d = opt.apply_(rule, None, x, np.array([1.0, np.nan, -2.0, 0.0]))
    assert np.isnan(d).all()
    # a zero norm: lam = 1, even with omega = 0
    _, d = opt.apply_(ClipNorm(0.0), None, x, np.zeros(4))
    assert_arrays_same(d, np.zeros(4), "d (zero)")
    # omega = inf and an infinite norm: still lam = 0 (conventions §7)
    _, d = opt.apply_(ClipNorm(np.inf, throw=False), None, x, np.array([1.0, np.inf, 0, 0]))
    assert_arrays_same(d, np.array([0.0, np.nan, 0.0, 0.0]), "d (omega=inf)")


NORM_PS = [1.0, 2.0, np.inf, -np.inf, 0.0, 3.0, 0.5, -1.5]


def _norm_gradient(rng, n, dtype, special):
    g = rng.standard_normal(n) * rng.choice([1e-3, 1.0, 50.0], n)
    if special != "nozeros":  # zeros make the p < 0 norms 0
        g[rng.integers(0, n, n // 10)] = 0.0
    if special == "nan":
        g[n // 2 + 17] = np.nan
    elif special == "inf":
        g[n - 5] = -np.inf
    return g.astype(dtype)


@pytest.mark.parametrize("special", ["plain", "nozeros", "nan", "inf"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=FLOAT_IDS.get)
def test_norm_is_the_blocked_reference(dtype, special, n_threads, small_parallel_threshold):
    from optimisers._norms import grad_norm

    rng = np.random.default_rng(seed_of(dtype, special, "norm"))
    for n in (8192 * 3 + 123, 8192 * 2, 9):
        g = _norm_gradient(rng, n, dtype, special if n > 100 else "plain")
        for p in NORM_PS:
            got, want = grad_norm(g, p), ref_norm(g, p)
            assert type(got) is float
            assert (np.isnan(got) and np.isnan(want)) or got == want, (n, p, got, want)


@pytest.mark.parametrize("p", NORM_PS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=FLOAT_IDS.get)
def test_clipnorm_matches_reference(p, dtype, n_threads, small_parallel_threshold):
    rng = np.random.default_rng(seed_of(p, dtype, "clipnorm"))
    n = 8192 * 3 + 123  # several norm blocks, split over threads
    x = make_param(rng, (n,), dtype)
    for omega_scale, kind in [(0.3, "plain"), (0.3, "nozeros"), (3.0, "plain")]:
        g = _norm_gradient(rng, n, dtype, kind)
        nrm = ref_norm(g, p)
        rule = ClipNorm(omega_scale * nrm if np.isfinite(nrm) and nrm > 0 else 1.0, p)
        where = f"p={p} {kind} omega=norm*{omega_scale}"
        tree = opt.setup(rule, {"x": x})
        tree, m = opt.update(tree, {"x": x}, {"x": g})
        assert_arrays_same(m["x"], ref_update(rule, None, x, g)[1], where)
        if kind == "plain" and omega_scale < 1:
            _, d = opt.apply_(rule, None, x, g)
            assert_arrays_same(d, ref_apply(rule, None, x, g)[1], f"{where}: d")
        if kind == "nozeros":
            # mid-chain: the norm of the step so far
            chain = OptimiserChain(Momentum(0.3), rule)
            _, d = opt.apply_(chain, opt.init(chain, x), x, g)
            assert_arrays_same(
                d, ref_apply(chain, ref_init(chain, x), x, g)[1], f"{where}: chain d"
            )


@pytest.mark.parametrize("p", NORM_PS)
def test_clipnorm_empty_array(p):
    x = np.zeros((0, 3), np.float32)
    tree = opt.setup(ClipNorm(1.0, p), {"x": x})
    tree, m = opt.update(tree, {"x": x}, {"x": np.zeros((0, 3), np.float32)})
    assert m["x"].shape == (0, 3) and m["x"].dtype == np.float32
    from optimisers._norms import grad_norm

    assert grad_norm(np.zeros(0), p) == ref_norm(np.zeros(0), p) == 0.0


def test_clipnorm_norm_independent_of_threads(small_parallel_threshold):
    from optimisers._norms import grad_norm

    g = np.random.default_rng(3).standard_normal(8192 * 5 + 1) * 1e3
    results = []
    for nt in (1, 2):
        with threadpool_limits(limits=nt, user_api="openmp"):
            results.append([grad_norm(g, p) for p in NORM_PS])
    assert results[0] == results[1]


# ---------------------------------------------------------------------------------------
# 2f: AccumGrad


def test_accumgrad_docstring_example():
    m = {"x": np.array([1.0], np.float32), "y": np.array([2.0], np.float32)}
    rule = OptimiserChain(AccumGrad(2), WeightDecay(0.01), Descent(0.1))
    s = opt.setup(rule, m)
    s, m = opt.update_(s, m, {"x": np.array([33]), "y": np.array([0])})
    assert m["x"][0] == np.float32(1.0) and m["y"][0] == np.float32(2.0)
    s, m = opt.update_(s, m, {"x": np.array([0]), "y": np.array([444])})
    assert m["x"].dtype == np.float32 and m["y"].dtype == np.float32
    assert m["x"][0] == np.float32(-0.651)
    assert m["y"][0] == np.float32(-20.202002)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64], ids=FLOAT_IDS.get)
def test_accumgrad_in_a_chain_skips_later_rules(dtype):
    n = 3
    rule = OptimiserChain(WeightDecay(0.1), AccumGrad(n), Adam(0.05), Momentum(0.1))
    rng = np.random.default_rng(11)
    x0 = make_param(rng, (20,), dtype)
    model = {"p": x0.copy()}
    tree = opt.setup(rule, model)
    ref_s, ref_x = ref_init(rule, x0), x0.copy()
    fresh = ref_init(rule, x0)
    for cycle in range(3):
        for k in range(1, n + 1):
            g = make_grad(rng, (20,), dtype)
            x_before = model["p"].copy()
            tree, model = opt.update_(tree, model, {"p": g})
            ref_s, ref_x = ref_update(rule, ref_s, ref_x, g)
            st = tree["p"].state
            assert_state_same(st, ref_s, f"cycle {cycle} micro-step {k}")
            assert_arrays_same(model["p"], ref_x, f"cycle {cycle} micro-step {k}")
            if k < n:
                # no step: x unchanged, Adam and Momentum untouched
                assert_arrays_same(model["p"], x_before, "x before the n-th gradient")
                if cycle == 0:
                    assert_state_same(st[2], fresh[2], "Adam before its first step")
                    assert_state_same(st[3], fresh[3], "Momentum before its first step")
                assert_state_same(st[1].counter, k + 1, "counter")
            else:
                assert not np.array_equal(model["p"], x_before)
                assert_state_same(st[1].counter, 1, "counter after the n-th")
                # Adam has advanced exactly once per cycle (its running products are
                # float64 whatever the parameter's dtype)
                bt = 0.9
                for _ in range(cycle + 1):
                    bt = bt * 0.9
                assert np.asarray(st[2].beta_t).reshape(-1)[0] == bt


def test_accumgrad_alone_and_functional():
    rule = AccumGrad(2)
    x = np.zeros(3)
    st = opt.init(rule, x)
    st, d = opt.apply_(rule, st, x, np.array([1.0, 2.0, 3.0]))
    assert d is None
    st, d = opt.apply_(rule, st, x, np.array([3.0, 2.0, -1.0]))
    assert_arrays_same(d, np.array([2.0, 2.0, 1.0]), "mean of two")


def test_none_gradient_does_not_advance():
    rule = OptimiserChain(AccumGrad(2), Adam(0.1))
    model = {"a": np.ones(3), "b": np.ones(4)}
    tree = opt.setup(rule, model)
    tree, model = opt.update_(tree, model, {"a": np.ones(3), "b": None})
    assert_state_same(tree["b"].state, ref_init(rule, np.ones(4)), "b untouched")
    assert_state_same(tree["a"].state[0].counter, 2, "a counted")


# ---------------------------------------------------------------------------------------
# 2g: a rule written by a user in Python, between kernel rules


class DampedSum(opt.Rule):
    """s <- rho*s + dx (a fresh array), d = c*s + lam*x: uses its state, the step and x."""

    def __init__(self, rho=0.5, c=0.3, lam=0.05):
        self.rho, self.c, self.lam = rho, c, lam

    def init(self, x):
        return np.zeros(x.shape, x.dtype)

    def apply(self, state, x, dx):
        T = dx.dtype.type
        s = (T(self.rho) * state.astype(dx.dtype)) + dx
        return s.astype(state.dtype), (T(self.c) * s) + (T(self.lam) * x.astype(dx.dtype))


class KeepLast(opt.Rule):
    """Keeps the incoming step itself (no copy) and returns dx + 0.5 * previous dx."""

    def init(self, x):
        return None

    def apply(self, state, x, dx):
        if state is None:
            return dx, dx.copy()
        return dx, dx + dx.dtype.type(0.5) * state


class EverySecond(opt.Rule):
    """Passes the step on every second call only (returns None otherwise)."""

    def init(self, x):
        return 0

    def apply(self, state, x, dx):
        return state + 1, (dx if state % 2 == 1 else None)


USER_RULES = (DampedSum, KeepLast, EverySecond)


def _ref_chain(rules, states, x, g):
    """Reference composition: kernel rules through the reference, Python rules by their own
    apply on copies.  Returns (states, d)."""
    C = compute_dtype(x.dtype)
    d = np.array(g, dtype=C)
    new = []
    for r, s in zip(rules, states):
        if d is None:
            new.append(s)
        elif isinstance(r, USER_RULES):
            s2, d = r.apply(s.copy() if isinstance(s, np.ndarray) else s, x, d.copy())
            new.append(s2.copy() if isinstance(s2, np.ndarray) else s2)
            d = None if d is None else np.array(d, dtype=C)
        else:
            s2, d = ref_apply(r, s, x, d)
            new.append(s2)
    return new, d


USER_CHAINS = {
    "ClipGrad-user-Adam": lambda: (ClipGrad(0.8), DampedSum(), Adam(0.05)),
    "Adam-user-WeightDecay": lambda: (Adam(0.05), DampedSum(0.7, 1.5, 0.1), WeightDecay(0.1)),
    "Momentum-keeplast-Nesterov": lambda: (Momentum(0.2), KeepLast(), Nesterov(0.05)),
    "Momentum-keeplast-ClipNorm": lambda: (Momentum(0.2), KeepLast(), ClipNorm(3.0)),
    "user-first": lambda: (KeepLast(), Momentum(0.3)),
    "WeightDecay-everysecond-Adam": lambda: (WeightDecay(0.1), EverySecond(), Adam(0.05)),
    "AccumGrad-user-Descent": lambda: (AccumGrad(2), DampedSum(), Descent(0.5)),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=FLOAT_IDS.get)
@pytest.mark.parametrize("name", list(USER_CHAINS))
def test_user_rule_in_a_chain(name, dtype, small_parallel_threshold):
    rules = USER_CHAINS[name]()
    chain = OptimiserChain(*rules)
    rng = np.random.default_rng(seed_of(name, dtype))
    model = {"w": make_param(rng, (6000,), dtype), "b": make_param(rng, (30,), dtype)}
    ref_x = {k: v.copy() for k, v in model.items()}
    tree = opt.setup(chain, model)
    ref_s = {
        k: [(r.init(v) if isinstance(r, USER_RULES) else ref_init(r, v)) for r in rules]
        for k, v in model.items()
    }
    for step in range(6):
        grads = {k: make_grad(rng, v.shape, dtype) for k, v in model.items()}
        tree, model = opt.update_(tree, model, grads)
        for k in model:
            ref_s[k], d = _ref_chain(rules, ref_s[k], ref_x[k], grads[k])
            ref_x[k] = step_param(ref_x[k], d)
            assert_arrays_same(model[k], ref_x[k], f"{name} step {step} x[{k}]")
            for i, (got, want) in enumerate(zip(tree[k].state, ref_s[k])):
                where = f"{name} step {step} state[{k}][{i}]"
                if isinstance(want, np.ndarray) or not isinstance(rules[i], USER_RULES):
                    assert_state_same(got, want, where)
                else:
                    assert got == want, where


# ---------------------------------------------------------------------------------------
# 2h: MixedPrecision


@pytest.mark.parametrize(
    "low,high",
    [(np.float16, np.float32), (np.float16, np.float64), (np.float32, np.float64)],
    ids=["f16-f32", "f16-f64", "f32-f64"],
)
def test_mixed_precision_master_copy(low, high):
    inner = OptimiserChain(ClipGrad(1.0), Adam(0.01))
    rule = MixedPrecision(high, inner) if high is not np.float32 else MixedPrecision(inner)
    rng = np.random.default_rng(5)
    x = make_param(rng, (300,), low)
    tree = opt.setup(rule, x)
    assert tree.state.xT.dtype == np.dtype(high)
    assert_arrays_same(tree.state.xT, x.astype(high), "xT at setup")
    ref_s, ref_x = ref_init(rule, x), x.copy()
    for step in range(5):
        g = make_grad(rng, x.shape, low)
        tree, x = opt.update_(tree, x, g)
        ref_s, ref_x = ref_update(rule, ref_s, ref_x, g)
        assert x.dtype == np.dtype(low)
        assert_state_same(tree.state, ref_s, f"step {step}")
        assert_arrays_same(x, ref_x, f"step {step}")
        # the parameter is the rounded master copy, the inner state is high precision
        # (Adam's running products beta_t are float64 whatever the precision)
        assert_arrays_same(x, tree.state.xT.astype(low), "x = round(xT)")
        for a in state_arrays(tree.state.inner):
            assert a.dtype == np.dtype(high) or a is tree.state.inner[1].beta_t


def test_mixed_precision_takes_steps_float16_alone_cannot():
    x = np.ones(4, np.float16)
    tree = opt.setup(MixedPrecision(Descent(1e-4)), x)
    for _ in range(10):
        tree, x = opt.update_(tree, x, np.ones(4, np.float16))
    # float16 spacing at 1 is ~1e-3: plain float16 descent would stay at 1.0
    assert np.all(x == np.float16(0.999))
    assert np.all(np.abs(tree.state.xT - np.float32(0.999)) < 1e-6)


def test_mixed_precision_refuses_to_sit_in_a_chain():
    with pytest.raises(ValueError, match="MixedPrecision"):
        OptimiserChain(Adam(), MixedPrecision(Adam()))
    with pytest.raises(ValueError):
        OptimiserChain(MixedPrecision(np.float64, Descent()))
    with pytest.raises(ValueError):
        OptimiserChain(ClipGrad(), OptimiserChain(MixedPrecision(Descent())))
    with pytest.raises(ValueError):
        MixedPrecision(MixedPrecision(Descent()))
    # wrapping a whole chain is the way
    MixedPrecision(OptimiserChain(ClipGrad(), Adam()))


def test_mixed_precision_read_only_param():
    """A read-only parameter gets a new array holding round(xT)."""
    x = np.linspace(-1, 1, 7).astype(np.float16)
    x.flags.writeable = False
    rule = MixedPrecision(np.float64, Momentum(0.1))
    tree = opt.setup(rule, x)
    tree, x2 = opt.update_(tree, x, np.ones(7, np.float16))
    _, ref_x = ref_update(rule, ref_init(rule, x), x, np.ones(7, np.float16))
    assert_arrays_same(x2, ref_x, "x")
    assert_arrays_same(x, np.linspace(-1, 1, 7).astype(np.float16), "original untouched")


# ---------------------------------------------------------------------------------------
# 5: complex parameters


def _complex_ok(rule):
    return rule_classes_in(rule) <= set(COMPLEX_OK)


COMPLEX_CASES = [(i, r) for i, r in RULES if _complex_ok(r)]
COMPLEX_REFUSED_CASES = [(i, r) for i, r in RULES if not _complex_ok(r)]


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128], ids=["c64", "c128"])
@pytest.mark.parametrize("rule", [r for _, r in COMPLEX_CASES], ids=[i for i, _ in COMPLEX_CASES])
def test_complex_update_matches_reference(rule, dtype, small_parallel_threshold):
    rng = np.random.default_rng(seed_of(repr(rule), dtype, "complex"))
    model = {"w": make_param(rng, (5000,), dtype), "b": make_param(rng, (7,), dtype)}
    ref_x = {k: v.copy() for k, v in model.items()}
    tree = opt.setup(rule, model)
    ref_s = {k: ref_init(rule, v) for k, v in model.items()}
    for step in range(4):
        grads = {k: make_grad(rng, v.shape, dtype) for k, v in model.items()}
        tree, model = opt.update_(tree, model, grads)
        # one call for every leaf: a global norm is that of all the gradients
        stepped = ref_update_tree(rule, ref_s, ref_x, grads)
        for k in model:
            ref_s[k], ref_x[k] = stepped[k]
            assert_arrays_same(model[k], ref_x[k], f"step {step}: param {k}")
            assert_state_same(tree[k].state, ref_s[k], f"step {step}: state[{k}]")
        x = model["b"]
        st, d = opt.apply_(rule, opt.init(rule, x), x, grads["b"])
        d_ref = ref_apply(rule, ref_init(rule, x), x, grads["b"])[1]
        if d_ref is None:  # AccumGrad not due yet: no step from either
            assert d is None
        else:
            assert_arrays_same(d, d_ref, "d")


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128], ids=["c64", "c128"])
@pytest.mark.parametrize(
    "rule", [r for _, r in COMPLEX_REFUSED_CASES], ids=[i for i, _ in COMPLEX_REFUSED_CASES]
)
def test_complex_refused_at_setup(rule, dtype):
    model = {"ok": np.zeros(3), "z": np.zeros(4, dtype)}
    with pytest.raises(TypeError) as info:
        opt.setup(rule, model)
    msg = str(info.value)
    assert "complex" in msg
    assert any(c.__name__ in msg for c in rule_classes_in(rule) & set(COMPLEX_REFUSED)), msg
    with pytest.raises(TypeError):
        opt.init(rule, np.zeros(4, dtype))


@pytest.mark.parametrize("cls", COMPLEX_REFUSED, ids=lambda c: c.__name__)
def test_complex_refused_inside_mixed_precision(cls):
    for rule in (MixedPrecision(cls()), MixedPrecision(np.float64, OptimiserChain(cls()))):
        with pytest.raises(TypeError, match=cls.__name__):
            opt.setup(rule, np.zeros(4, np.complex64))


def test_complex_refused_list_is_the_api():
    # API.md's list, Muon (issue 17: refuses complex as torch's Muon does) and Adafactor
    # (issue 17: it clamps, and torch refuses complex too)
    assert set(COMPLEX_REFUSED) == {
        Rprop,
        AdaMax,
        AMSGrad,
        ClipGrad,
        Lion,
        SignDecay,
        opt.Muon,
        opt.Adafactor,
    }
    assert {
        Adam,
        RMSProp,
        RAdam,
        OAdam,
        AdaGrad,
        AdaDelta,
        NAdam,
        AdaBelief,
        Descent,
        Momentum,
        Nesterov,
        AdamW,
    } <= set(COMPLEX_OK)


# ---------------------------------------------------------------------------------------
# Big arrays: most programs of one loop run there on long tiles (LONG_TILE_BYTES in
# _kernels.pyx, from 16 long tiles a thread on; the float64 quotient rules, Adam and AdamW
# here, in chunks of TILE elements); chains and AccumGrad's gathering steps (the tile
# buffer) on short ones.  The bits must not depend on which.

# 2 threads x 16 long tiles of 16384 float32 (as many twice over in float64), and a
# partial tile
LONG, PER_THREAD = _native.kernels.long_tiles(4)
BIG = 2 * PER_THREAD * LONG + 4099
BIG_RULES = [
    Adam(0.01),
    AdamW(0.01, lambda_=0.1),
    Momentum(0.01),
    Lion(0.001),
    OptimiserChain(ClipNorm(100.0), AdamW(0.01, lambda_=0.1)),
    OptimiserChain(WeightDecay(0.1), Adam(0.01)),
    AccumGrad(2),
]
BIG_DTYPES = [np.float32, np.float64]


@pytest.mark.parametrize("dtype", BIG_DTYPES, ids=[FLOAT_IDS[d] for d in BIG_DTYPES])
@pytest.mark.parametrize("rule", BIG_RULES, ids=[repr(r) for r in BIG_RULES])
def test_big_arrays_match_reference(rule, dtype, n_threads):
    _check_update(rule, dtype, {"big": (BIG,)}, n_steps=4)


@pytest.mark.parametrize("dtype", BIG_DTYPES, ids=[FLOAT_IDS[d] for d in BIG_DTYPES])
@pytest.mark.parametrize("rule", BIG_RULES, ids=[repr(r) for r in BIG_RULES])
def test_big_arrays_apply_matches_reference(rule, dtype, n_threads):
    """apply_ stores d (mode STORE), or keeps it to itself (SINK, AccumGrad gathering)."""
    _check_apply(rule, dtype, {"big": (BIG,)}, n_steps=4)
