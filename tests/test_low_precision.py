"""float16 and bfloat16 parameters: computed in float32 inside the kernels, rounded once on
store, their state arrays float32 by default (``low_precision_state=True`` keeps them in
the parameter's dtype).  Every rule of the registry against tests/reference.py bit for
bit, on 1 and 2 threads, over several steps; the conversions themselves over every 16-bit
value; the batch taking 16-bit leaves; a failed update writing nothing.

bfloat16 is ml_dtypes' dtype; its tests are skipped where ml_dtypes is not installed (the
library never needs it)."""

from __future__ import annotations

import subprocess
import sys
import zlib

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import optimisers as opt
from assertions import assert_arrays_same, assert_state_same, state_arrays, step_like_reference
from builds import WIDER_ISAS, build_or_skip
from optimisers import (
    AccumGrad,
    Adam,
    AdamW,
    ClipNorm,
    Descent,
    MixedPrecision,
    Momentum,
    OptimiserChain,
    _engine,
    _program,
)
from optimisers import _kernels as baseline
from reference import ref_apply, ref_init, ref_update
from registry import RULE_IDS, RULES

try:
    import ml_dtypes

    BF16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:
    BF16 = None

F16 = np.dtype(np.float16)
F32 = np.dtype(np.float32)
needs_bf16 = pytest.mark.skipif(BF16 is None, reason="ml_dtypes (bfloat16) is not installed")
LOW = [pytest.param(F16, id="f16"), pytest.param(BF16, id="bf16", marks=needs_bf16)]
RULE_VALUES = [r for _, r in RULES]
# "w" is split over the threads (fixture small_parallel_threshold), "b" and "s" are not;
# 12,003 elements end in a partial tile
SHAPES = {"w": (12, 1000, 1), "b": (12003,), "s": (5, 3)}
N_STEPS = 6


def seed_of(*keys):
    return zlib.crc32(repr(keys).encode())


def make_grad(rng, shape, dtype):
    """Normal values, some zeros, a few large ones and some small enough (1e-4) that a
    16-bit second moment would underflow."""
    g = rng.standard_normal(shape)
    flat = g.reshape(-1)
    n = flat.size
    flat[rng.integers(0, n, n // 8)] = 0.0
    flat[rng.integers(0, n, n // 8)] *= 1e-4
    k = min(4, n)
    flat[rng.integers(0, n, k)] = rng.choice([30.0, 200.0], k) * rng.choice([-1.0, 1.0], k)
    return g.astype(dtype)


def make_param(rng, shape, dtype):
    x = rng.standard_normal(shape)
    x.reshape(-1)[rng.integers(0, x.size, max(1, x.size // 20))] = 0.0
    return x.astype(dtype)


def check_update(rule, dtype, low_state=False, n_steps=N_STEPS):
    """update_ (and update, every third step) against the reference.  Gradients alternate
    between the parameter's dtype (read by the kernels as they are) and float64 (cast once
    to float32)."""
    rng = np.random.default_rng(seed_of(repr(rule), dtype.name, low_state))
    model = {k: make_param(rng, s, dtype) for k, s in SHAPES.items()}
    ref_x = {k: v.copy() for k, v in model.items()}
    tree = opt.setup(rule, model, low_precision_state=low_state)
    ref_s = {k: ref_init(rule, v, low_state) for k, v in model.items()}
    for k in model:
        assert_state_same(tree[k].state, ref_s[k], f"init {k}")
    for step in range(n_steps):
        gdt = dtype if step % 2 == 0 else np.float64
        grads = {k: make_grad(rng, s, gdt) for k, s in SHAPES.items()}
        tree, model = step_like_reference(rule, tree, model, ref_s, ref_x, grads, step)
    return tree, model


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("rule", RULE_VALUES, ids=RULE_IDS)
def test_update_matches_reference(rule, dtype, n_threads, small_parallel_threshold):
    tree, model = check_update(rule, dtype)
    if not isinstance(rule, MixedPrecision):
        for k in model:
            for a in state_arrays(tree[k].state):
                if a.shape == model[k].shape:  # element-wise: float32 by default
                    assert a.dtype == F32, f"{k}: state dtype {a.dtype}"


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("rule", RULE_VALUES, ids=RULE_IDS)
def test_low_precision_state_matches_reference(rule, dtype, small_parallel_threshold):
    """``low_precision_state=True``: the built-in rules' state arrays of the parameter's
    dtype, staged through float32 by the kernels and rounded once on store."""
    with threadpool_limits(limits=2, user_api="openmp"):
        tree, model = check_update(rule, dtype, low_state=True)
    if not isinstance(rule, MixedPrecision):
        for k in model:
            for a in state_arrays(tree[k].state):
                if a.shape == model[k].shape:
                    assert a.dtype == dtype, f"{k}: state dtype {a.dtype}"


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("rule", RULE_VALUES, ids=RULE_IDS)
def test_apply_matches_reference(rule, dtype, small_parallel_threshold):
    """apply_ returns d in float32 (unrounded) and never writes x."""
    rng = np.random.default_rng(seed_of(repr(rule), dtype.name, "apply"))
    x = make_param(rng, (6000,), dtype)
    state, ref_s = opt.init(rule, x), ref_init(rule, x)
    for step in range(4):
        g = make_grad(rng, x.shape, dtype)
        x0 = x.copy()
        state, d = opt.apply_(rule, state, x, g)
        ref_s, ref_d = ref_apply(rule, ref_s, x, g)
        assert_arrays_same(x, x0, f"step {step}: apply_ wrote x")
        assert_state_same(state, ref_s, f"step {step}: state")
        if ref_d is None:
            assert d is None
        else:
            assert_arrays_same(d, ref_d, f"step {step}: d")
            x = (x.astype(F32) - ref_d).astype(dtype)


# ---------------------------------------------------------------------------------------
# the conversions, over every 16-bit value


@pytest.mark.parametrize("dtype", LOW)
def test_every_16_bit_value_loads_exactly_and_stores_unchanged(dtype, n_threads):
    """x - 0 for every bit pattern: loaded exactly to float32, rounded back to itself (NaN
    stays NaN, -0 stays -0)."""
    x = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(dtype)
    want = x.copy()
    st = opt.setup(Descent(1.0), x)
    opt.update_(st, x, np.zeros(x.shape, F32))
    assert_arrays_same(x.astype(F32), want.astype(F32), "x - 0")


@pytest.mark.parametrize("dtype", LOW)
def test_stores_round_to_nearest_even_as_numpy_casts(dtype, n_threads):
    """0 - g for float32 g of every kind (normal, subnormal, halfway cases, overflowing,
    infinite, NaN) rounds as numpy's (ml_dtypes') cast of the float32 0 - g does."""
    rng = np.random.default_rng(5)
    bits = np.concatenate(
        [
            rng.integers(0, 1 << 32, 400_000, dtype=np.uint64),
            np.arange(0, 1 << 32, 65537, dtype=np.uint64),
        ]
    ).astype(np.uint32)
    # every halfway case between neighbouring 16-bit values of one binade, both ways
    halfway = (np.arange(1 << 16, dtype=np.uint32) << 16) | 0x8000
    if dtype == F16:
        halfway = (
            np.arange(0x3C00, 0x3D00, dtype=np.uint32)
            .astype(np.uint16)
            .view(F16)
            .astype(F32)
            .view(np.uint32)
            | 0x1000
        )
    g = np.concatenate([bits, halfway, halfway ^ 0x80000000]).view(F32)
    x = np.zeros(g.shape, dtype)
    st = opt.setup(Descent(1.0), x)
    with np.errstate(all="ignore"):
        want = (np.float32(0) - g).astype(dtype)
    opt.update_(st, x, g)
    got_bits, want_bits = x.view(np.uint16), want.view(np.uint16)
    nan = np.isnan(want.astype(F32))
    assert np.array_equal(np.isnan(x.astype(F32)), nan)
    assert np.array_equal(got_bits[~nan], want_bits[~nan])


@pytest.mark.parametrize("isa", WIDER_ISAS)
@pytest.mark.parametrize("dtype", LOW)
def test_every_build_converts_alike(dtype, isa, monkeypatch):
    """The AVX2 and AVX-512 builds convert float16 with F16C instructions, the baseline
    build with integer selects: the same bits, for every 16-bit value and float32 values of
    every kind, through a few steps of Adam kept in 16 bits."""
    bits = np.random.default_rng(11).integers(0, 1 << 32, 300_000, dtype=np.uint64)
    g = bits.astype(np.uint32).view(F32)
    x0 = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(dtype)
    x0 = np.concatenate([x0, x0, x0, x0, x0][: len(g) // len(x0)])
    g = g[: x0.size]
    results = []
    for module in (baseline, build_or_skip(isa)):
        monkeypatch.setattr(_program, "_kernels", module)
        monkeypatch.setattr(_engine, "_kernels", module)
        x = x0.copy()
        st = opt.setup(Adam(0.5), x, low_precision_state=True)
        with np.errstate(all="ignore"):
            for step in range(3):
                st, x = opt.update_(st, x, g if step % 2 else g.astype(dtype))
        results.append([x] + state_arrays(st.state))
    for a, b in zip(*results):
        assert_arrays_same(
            b.view(np.uint16) if b.dtype == dtype else b,
            a.view(np.uint16) if a.dtype == dtype else a,
            f"{isa}",
        )


# ---------------------------------------------------------------------------------------
# the state's dtype, and why


@pytest.mark.parametrize("dtype", LOW)
def test_adam_v_of_a_small_gradient_does_not_underflow(dtype):
    """|g| = 1e-3: (1 - beta2) g^2 = 1e-9 is below float16's smallest subnormal, so a
    float16 v would stay 0 (and the step be g/eps-sized); the float32 v keeps it."""
    x = np.ones(4096, dtype)
    g = np.full(x.shape, 1e-3, dtype)
    st = opt.setup(Adam(1e-2), x)
    st, x = opt.update_(st, x, g)
    assert st.state.v.dtype == F32 and np.all(st.state.v > 0)
    assert np.all(x.astype(F32) < 1) and np.all(x.astype(F32) > 0.98)
    low = opt.setup(Adam(1e-2), np.ones(4096, F16), low_precision_state=True)
    assert low.state.m.dtype == F16 and low.state.v.dtype == F16
    low, _ = opt.update_(low, np.ones(4096, F16), np.full(4096, 1e-3, F16))
    assert np.all(low.state.v == 0)  # what float32 moments avoid


def test_low_precision_state_leaves_other_states_alone():
    """The keyword touches 16-bit parameters only, and not MixedPrecision's master copy."""
    rule = MixedPrecision(Adam())
    st = opt.setup(rule, {"h": np.ones(3, F16), "f": np.ones(3, F32)}, low_precision_state=True)
    assert st["h"].state.xT.dtype == F32 and st["h"].state.inner.m.dtype == F32
    st = opt.setup(Adam(), {"f": np.ones(3, F32)}, low_precision_state=True)
    assert st["f"].state.m.dtype == F32
    assert opt.init(Momentum(), np.ones(3, F16), low_precision_state=True).dtype == F16
    assert opt.init(Momentum(), np.ones(3, F16)).dtype == F32


@pytest.mark.parametrize("dtype", LOW)
def test_a_rule_written_in_python_sees_x_in_float32(dtype):
    """In a chain with the built-in rules: x as a float32 copy, d in float32, and the step
    rounded once on store."""
    seen = []

    class Decay(opt.Rule):
        def apply(self, state, x, dx):
            seen.append(x.dtype)
            return state, dx + np.float32(0.1) * x

    x = np.linspace(-3, 3, 5000).astype(dtype)
    g = np.linspace(1, 2, 5000).astype(dtype)
    want = (
        x.astype(F32) - ((g.astype(F32) + np.float32(0.1) * x.astype(F32)) * np.float32(0.5))
    ).astype(dtype)
    st = opt.setup(OptimiserChain(Decay(), Descent(0.5)), x)
    st, x = opt.update_(st, x, g)
    assert seen == [F32]
    assert_arrays_same(x.view(np.uint16), want.view(np.uint16), "x")


# ---------------------------------------------------------------------------------------
# the batch takes 16-bit leaves; a failed update writes nothing


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("grad_dtype", ["same", "float32"])
def test_a_model_of_many_16_bit_arrays_runs_in_the_batch(dtype, grad_dtype, monkeypatch):
    """No leaf falls back to the per-leaf Program (which is made to fail here)."""
    rng = np.random.default_rng(3)
    model = [make_param(rng, (n,), dtype) for n in (1, 7, 300, 5000, 40000)]
    gdt = dtype if grad_dtype == "same" else F32
    grads = [make_grad(rng, x.shape, gdt) for x in model]
    rule = OptimiserChain(AdamW(0.01, lambda_=0.1), AccumGrad(1))
    ref = [(ref_init(rule, x), x.copy()) for x in model]
    tree = opt.setup(rule, model)

    def no_program(*args, **kwargs):
        raise AssertionError("a 16-bit leaf left the batch")

    monkeypatch.setattr(_engine, "Program", no_program)
    with threadpool_limits(limits=2, user_api="openmp"):
        tree, model = opt.update_(tree, model, grads)
    for i, (x, g) in enumerate(zip(model, grads)):
        s, want = ref_update(rule, ref[i][0], ref[i][1], g)
        assert_arrays_same(x, want, f"leaf {i}")
        assert_state_same(tree[i].state, s, f"state {i}")


@pytest.mark.parametrize("dtype", LOW)
def test_a_non_finite_norm_writes_nothing(dtype):
    rule = OptimiserChain(ClipNorm(1.0), Adam(0.1))
    model = {"a": np.ones(70000, dtype), "b": np.ones(6, dtype), "c": np.ones(6, F32)}
    tree = opt.setup(rule, model, low_precision_state=True)
    grads = {k: np.full(v.shape, 2.0, v.dtype) for k, v in model.items()}
    grads["b"] = np.array([1, np.inf, 0, 0, 0, 0], dtype)
    before = {k: v.copy() for k, v in model.items()}
    states = {k: [a.copy() for a in state_arrays(tree[k].state)] for k in model}
    with pytest.raises(FloatingPointError, match=r"\bb\b"):
        opt.update_(tree, model, grads)
    for k in model:
        assert_arrays_same(model[k], before[k], f"{k} after the error")
        for a, a0 in zip(state_arrays(tree[k].state), states[k]):
            assert_arrays_same(a, a0, f"state of {k} after the error")


def test_the_kernels_read_a_leading_norm_in_float32_only():
    """A 16-bit gradient with a leading ClipNorm is refused by the kernel entry (the engine
    casts it to float32 first, which is exact)."""
    from optimisers._native import kernels as K

    x = np.ones(8, F16)
    prog = [
        (K.CLIPNORM, {"omega": 1.0, "p": 2.0, "how": K.NORM_SQUARES, "throw": 1.0}, (), None, None)
    ]
    with pytest.raises(TypeError, match="float32 gradient"):
        K.run_program(prog, x, np.ones(8, F16))
    assert K.run_program(prog, x, np.ones(8, F32)) == K.OK


# ---------------------------------------------------------------------------------------
# checkpoints, and ml_dtypes stays optional


@pytest.mark.parametrize("low_state", [False, True])
def test_checkpoints_of_float16_states(tmp_path, low_state):
    model = {"w": np.linspace(-1, 1, 50).astype(F16)}
    tree = opt.setup(OptimiserChain(Momentum(), Adam()), model, low_precision_state=low_state)
    tree, model = opt.update_(tree, model, {"w": np.ones(50, F16)})
    opt.save_state(tmp_path / "t.ckpt", tree)
    back = opt.load_state(tmp_path / "t.ckpt")
    assert_state_same(back["w"].state, tree["w"].state, "loaded state")


def test_import_does_not_import_ml_dtypes():
    code = "import sys, optimisers; print('ml_dtypes' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
