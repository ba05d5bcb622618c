"""Complex parameters (complex64, complex128) against the plain-numpy reference, bit for bit.

Conventions §1 and §4: real hyper-parameters act on each component; second moments and
accumulators are REAL arrays holding |g|^2 = re*re + im*im; ClipNorm's norm of a complex
gradient uses |z| = hypot(re, im).  Expected values come from tests/reference.py (written
from the formulas), or from mathematics (a complex least-squares problem converges).
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import optimisers as opt
from assertions import assert_arrays_same as assert_same
from assertions import assert_state_same
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
)
from optimisers._native import kernels as _kernels
from optimisers._norms import grad_norm
from reference import ref_apply, ref_init, ref_norm, ref_update, ref_update_tree

N_STEPS = 8
DTYPES = [np.complex64, np.complex128]
DTYPE_IDS = ["c64", "c128"]
# with the small_parallel_threshold fixture (4096 elements): "b" is one tile, "m" several
# tiles on one thread, "w" is split over the threads
SHAPES = {"b": (7,), "m": (3, 1000), "w": (10001,)}

RULES = [
    ("Descent", Descent(0.37)),
    ("Momentum", Momentum(0.05, 0.7)),
    ("Nesterov", Nesterov(0.02, 0.8)),
    ("WeightDecay", WeightDecay(0.3)),
    ("AccumGrad3", AccumGrad(3)),
    ("ClipNorm-p2", ClipNorm(1.5)),
    ("ClipNorm-p1", ClipNorm(3.0, 1.0)),
    ("ClipNorm-pinf", ClipNorm(0.5, np.inf)),
    ("ClipNorm-pneginf", ClipNorm(0.01, -np.inf)),
    ("ClipNorm-p0", ClipNorm(100.0, 0.0)),
    ("ClipNorm-p3", ClipNorm(2.0, 3.0)),
    ("Adam", Adam()),
    ("Adam-tuned", Adam(0.05, (0.8, 0.99), 1e-6)),
    ("RAdam", RAdam(0.05, (0.8, 0.95), 1e-6)),  # rectified from t = 3
    ("OAdam", OAdam(0.05, (0.6, 0.95), 1e-6)),
    ("NAdam", NAdam(0.05, (0.8, 0.99), 1e-6)),
    ("AdamW-coupled", AdamW(0.05, (0.8, 0.99), 0.3, 1e-6)),
    ("AdamW-decoupled", AdamW(couple=False, lambda_=0.1)),
    ("AdaBelief", AdaBelief(0.05, (0.8, 0.99), 1e-10)),
    ("RMSProp", RMSProp(0.01, 0.8, 1e-6)),
    ("RMSProp-centred", RMSProp(0.01, 0.85, 1e-7, centred=True)),
    ("AdaGrad", AdaGrad(0.5, 1e-6)),
    ("AdaDelta", AdaDelta(0.5, 1e-4)),
    ("Chain-ClipNorm-Adam", OptimiserChain(ClipNorm(1.0), Adam())),
    (
        "Chain-WeightDecay-AccumGrad-AdamW",
        OptimiserChain(WeightDecay(0.1), AccumGrad(2), AdamW(0.1)),
    ),
    (
        "Chain-Momentum-ClipNorm-RMSProp",  # a norm mid-chain (a barrier)
        OptimiserChain(Momentum(0.1), ClipNorm(0.5), RMSProp(0.01, centred=True)),
    ),
    (
        "Chain-nested",
        OptimiserChain(
            WeightDecay(0.01),
            OptimiserChain(AccumGrad(2), Nesterov(0.05)),
            OptimiserChain(ClipNorm(3.0, 1.0), OptimiserChain()),
        ),
    ),
    ("Mixed-c128-Adam", MixedPrecision(np.complex128, Adam())),
    ("Mixed-f64-AdaBelief", MixedPrecision(np.float64, AdaBelief())),  # master complex128
    ("Mixed-f32-Momentum", MixedPrecision(Momentum(0.1))),  # master complex64
]
RULE_IDS = [i for i, _ in RULES]

REFUSED = [Rprop, AdaMax, AMSGrad, ClipGrad, Lion, SignDecay]


def seed_of(*keys):
    return zlib.crc32(repr(keys).encode())


# ---------------------------------------------------------------------------------------
# helpers


def make_complex(rng, shape, dtype, zeros=True):
    re = rng.standard_normal(shape)
    im = rng.standard_normal(shape)
    if zeros and re.size:  # exact zeros in each component, and whole zero elements
        n = re.size
        re.reshape(-1)[rng.integers(0, n, n // 8)] = 0.0
        im.reshape(-1)[rng.integers(0, n, n // 8)] = 0.0
        k = max(1, n // 50)
        idx = rng.integers(0, n, k)
        re.reshape(-1)[idx] = 0.0
        im.reshape(-1)[idx] = 0.0
        big = min(3, n)
        idx = rng.integers(0, n, big)
        re.reshape(-1)[idx] *= 1e3
    return (re + 1j * im).astype(dtype)


# ---------------------------------------------------------------------------------------
# every complex-capable rule against the reference


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("rule", [r for _, r in RULES], ids=RULE_IDS)
def test_complex_matches_reference(rule, dtype, n_threads, small_parallel_threshold):
    _check_complex(rule, dtype, SHAPES, N_STEPS)


# 2 threads x 16 long tiles of 16384 components, and a partial one
LONG, PER_THREAD = _kernels.long_tiles(4)
BIG_ELEMENTS = PER_THREAD * LONG + 2049


@pytest.mark.parametrize(
    "rule", [Momentum(0.01), Adam(0.01), AccumGrad(2)], ids=["Momentum", "Adam", "AccumGrad"]
)
def test_big_complex_arrays_match_reference(rule, n_threads):
    """complex64 on a big array: Momentum runs component-wise on the real view, on long
    tiles (never splitting a pair), Adam as a pair stage on short ones (its stack buffer),
    AccumGrad on the tile buffer, then long tiles."""
    _check_complex(rule, np.complex64, {"big": (BIG_ELEMENTS,)}, 3)


def _check_complex(rule, dtype, shapes, n_steps):
    rng = np.random.default_rng(seed_of(repr(rule), np.dtype(dtype).name))
    model = {k: make_complex(rng, s, dtype) for k, s in shapes.items()}
    ref_x = {k: v.copy() for k, v in model.items()}
    tree = opt.setup(rule, model)
    ref_s = {k: ref_init(rule, v) for k, v in model.items()}
    for k in model:
        assert_state_same(tree[k].state, ref_s[k], f"init: state[{k}]")
    for step in range(n_steps):
        grads = {k: make_complex(rng, v.shape, dtype) for k, v in model.items()}
        tree, model = opt.update_(tree, model, grads)
        stepped = ref_update_tree(rule, ref_s, ref_x, grads)  # a global norm: all leaves
        for k in model:
            ref_s[k], ref_x[k] = stepped[k]
            assert_same(model[k], ref_x[k], f"step {step}: param {k}")
            assert_state_same(tree[k].state, ref_s[k], f"step {step}: state[{k}]")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("rule", [r for _, r in RULES], ids=RULE_IDS)
def test_complex_apply_matches_reference(rule, dtype):
    """The functional apply_ (d stored, x untouched) over a few steps."""
    rng = np.random.default_rng(seed_of(repr(rule), np.dtype(dtype).name, "apply"))
    x = make_complex(rng, (5, 4), dtype)
    x0 = x.copy()
    st, ref_st = opt.init(rule, x), ref_init(rule, x)
    for step in range(3):
        g = make_complex(rng, x.shape, dtype)
        st, d = opt.apply_(rule, st, x, g)
        ref_st, ref_d = ref_apply(rule, ref_st, x, g)
        if ref_d is None:
            assert d is None, f"step {step}"
        else:
            assert_same(d, ref_d, f"step {step}: d")
        assert_state_same(st, ref_st, f"step {step}: state")
        assert_same(x, x0, "x untouched")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_complex_update_copies_and_real_gradients(dtype):
    """update() leaves its inputs alone; a real (or integer) gradient is cast to complex."""
    rule = OptimiserChain(ClipNorm(2.0), Adam(0.1))
    rng = np.random.default_rng(3)
    x = make_complex(rng, (9,), dtype)
    x0 = x.copy()
    tree = opt.setup(rule, x)
    ref_s = ref_init(rule, x)
    for g in (rng.standard_normal(9), np.arange(9) - 4, make_complex(rng, (9,), np.complex128)):
        tree, x1 = opt.update(tree, x, g)
        ref_s, ref_x = ref_update(rule, ref_s, x, np.asarray(g).astype(dtype))
        assert_same(x1, ref_x, "x")
        assert_state_same(tree.state, ref_s, "state")
        assert_same(x, x0, "input untouched")
        x = x1
        x0 = x.copy()


def test_complex_states_layout():
    x = np.zeros((2, 3), np.complex64)
    s = opt.init(Adam(), x)
    assert (s.m.dtype, s.v.dtype, s.beta_t.dtype) == (np.complex64, np.float32, np.float64)
    s = opt.init(RMSProp(centred=True), x.astype(np.complex128))
    assert (s.q.dtype, s.l.dtype) == (np.float64, np.complex128)
    assert opt.init(AdaGrad(epsilon=0.5), x).dtype == np.float32
    assert np.all(opt.init(AdaGrad(epsilon=0.5), x) == np.float32(0.5))
    s = opt.init(OAdam(), x)
    assert (s.m.dtype, s.v.dtype, s.term.dtype) == (np.complex64, np.float32, np.complex64)
    s = opt.init(AdaDelta(), x)
    assert (s.acc.dtype, s.dacc.dtype) == (np.float32, np.float32)
    s = opt.init(MixedPrecision(np.float64, AdaBelief()), x)
    assert (s.xT.dtype, s.inner.m.dtype, s.inner.s.dtype) == (
        np.complex128,
        np.complex128,
        np.float64,
    )


# ---------------------------------------------------------------------------------------
# the norm of complex gradients (conventions §7 with |z| = hypot(re, im))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("p", [2.0, 1.0, 0.0, np.inf, -np.inf, 3.0, 0.5, -1.5])
def test_complex_norm_matches_reference(p, dtype, n_threads, small_parallel_threshold):
    rng = np.random.default_rng(seed_of(p, np.dtype(dtype).name, "norm"))
    for n in (0, 1, 7, 8191, 8193, 20011):  # across blocks of 8192 elements
        g = make_complex(rng, (n,), dtype)
        want = ref_norm(g, p)
        got = grad_norm(g, p)
        assert got == want or (np.isnan(got) and np.isnan(want)), (n, got, want)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("p", [2.0, 1.0, 0.0, np.inf, -np.inf, 3.0])
def test_complex_norm_special_values(p, dtype):
    nan, inf = np.nan, np.inf
    for vals in (
        [1 + 1j, complex(nan, 0.0), 2j],
        [complex(inf, nan), 1.0, 0.0],
        [complex(0.0, -inf), 3 + 4j],
        [0j, 0j],
        [complex(-0.0, 0.0), 5 - 12j],
        [complex(3e38, 3e38), 1.0],
    ):
        g = np.array(vals, dtype)
        want = ref_norm(g, p)
        got = grad_norm(g, p)
        assert got == want or (np.isnan(got) and np.isnan(want)), (vals, got, want)


@pytest.mark.parametrize("p", [2.0, 1.0, np.inf, -np.inf, 0.0, 3.0])
def test_complex_norm_does_not_depend_on_thread_count(p, small_parallel_threshold):
    rng = np.random.default_rng(11)
    g = make_complex(rng, (100_003,), np.complex128)
    values = []
    for threads in (1, 2):
        with threadpool_limits(limits=threads, user_api="openmp"):
            values.append(grad_norm(g, p))
    assert values[0] == values[1]


def test_clipnorm_throw_names_the_complex_leaf():
    g = np.array([1 + 1j, complex(np.inf, 0.0)], np.complex64)
    tree = opt.setup(ClipNorm(1.0), {"layer": {"z": np.zeros(2, np.complex64)}})
    with pytest.raises(FloatingPointError, match="layer"):
        opt.update_(tree, {"layer": {"z": np.zeros(2, np.complex64)}}, {"layer": {"z": g}})


# ---------------------------------------------------------------------------------------
# a complex problem converges


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize(
    "rule",
    [Adam(0.05), OptimiserChain(ClipNorm(10.0), AdamW(0.05)), RMSProp(0.01), Momentum(0.02, 0.9)],
    ids=["Adam", "ClipNorm-AdamW", "RMSProp", "Momentum"],
)
def test_complex_least_squares_converges(rule, dtype):
    """min_z sum |A z - b|^2; the steepest-descent direction of a real loss of a complex
    variable is dL/dre + i dL/dim = 2 A^H (A z - b)."""
    rng = np.random.default_rng(5)
    m, n = 40, 8
    A = (rng.standard_normal((m, n)) + 1j * rng.standard_normal((m, n))) / np.sqrt(m)
    z_true = rng.standard_normal(n) + 1j * rng.standard_normal(n)
    b = A @ z_true
    A, b = A.astype(dtype), b.astype(dtype)

    def loss(z):
        r = A @ z - b
        return float(np.real(np.vdot(r, r)))

    z = np.zeros(n, dtype)
    tree = opt.setup(rule, z)
    start = loss(z)
    for _ in range(1500):
        g = 2 * (A.conj().T @ (A @ z - b))
        tree, z = opt.update_(tree, z, g)
    assert z.dtype == np.dtype(dtype)
    assert loss(z) < 1e-4 * start
    assert np.max(np.abs(z - z_true)) < 1e-2


# ---------------------------------------------------------------------------------------
# refused rules


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("cls", REFUSED, ids=lambda c: c.__name__)
def test_refused_rules_raise_at_setup_naming_the_path(cls, dtype):
    model = {"name": "text", "layer": [np.tanh, np.zeros(4, dtype)]}
    for rule in (
        cls(),
        OptimiserChain(WeightDecay(), cls()),
        MixedPrecision(np.float64, cls()),
        MixedPrecision(np.complex128, OptimiserChain(cls(), Adam())),
    ):
        with pytest.raises(TypeError) as info:
            opt.setup(rule, model)
        msg = str(info.value)
        assert cls.__name__ in msg and "complex" in msg, msg
        assert "layer" in msg and "1" in msg, msg
        with pytest.raises(TypeError, match=cls.__name__):
            opt.init(rule, np.zeros(4, dtype))
    # the same rules train real parameters
    opt.setup(OptimiserChain(WeightDecay(), cls()), {"ok": np.zeros(3)})
    opt.setup(MixedPrecision(np.float64, cls()), {"ok": np.zeros(3, np.float32)})


def test_kernel_refuses_complex_for_ordering_kinds():
    x = np.zeros(4, np.complex64)
    g = np.ones(4, np.complex64)
    with pytest.raises(TypeError, match="complex"):
        _kernels.run_program([(_kernels.CLIPGRAD, {"delta": 1.0}, (), None, None)], x, g)
    # a second moment of the wrong kind (complex where the kernel wants real) is refused
    m, v = np.zeros(4, np.complex64), np.zeros(4, np.complex64)
    bt = np.array([0.9, 0.999])
    hp = {"b1": 0.9, "b2": 0.999, "omb1": 0.1, "omb2": 0.001, "eps": 1e-8, "eta": 1e-3}
    with pytest.raises(TypeError):
        _kernels.run_program([(_kernels.ADAM, hp, (m, v), bt, None)], x, g)
    assert np.all(x == 0) and np.all(bt == np.array([0.9, 0.999]))
