"""Muon: against its float64 reference (tests/reference.py) and against torch's Muon, the
matrix-only contract of setup, chains, schedules, checkpoints, atomicity, threads and the
per-step allocations of its iteration.

Muon's step runs float32 matrix products through numpy's BLAS, so the generic bit-exact
tests of test_rules.py leave it out (registry.MATRIX_ONLY); this module runs its rows
(registry.MATRIX_RULES) through the same kinds of checks at a tolerance: its momentum (an
element-wise state) bit for bit, its step to 1e-4 relative to the largest element of the
reference's step.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import optimisers as opt
from optimisers import schedules
from optimisers.bench import problems, quality, rules
from optimisers.bench.cases import Case
from optimisers.bench.speed import optimisers_step
from reference import MuonState, ref_init, ref_newton_schulz, ref_update_tree
from registry import MATRIX_CONVERGENCE, MATRIX_RULES

RULE_VALUES = [r for _, r in MATRIX_RULES]
RULE_IDS = [name for name, _ in MATRIX_RULES]
SHAPES = {"wide": (12, 40), "tall": (40, 12), "square": (16, 16)}
RTOL = 1e-4  # issue 17: the float64 evaluation of the algorithm, to 1e-4 relative
FLOATS = [np.float32, np.float64]
FLOAT_IDS = {np.float32: "f32", np.float64: "f64"}


def grads_like(rng, model, dtype=None):
    return {k: rng.standard_normal(v.shape).astype(dtype or v.dtype) for k, v in model.items()}


def fresh_model(rng, dtype):
    return {k: rng.standard_normal(s).astype(dtype) for k, s in SHAPES.items()}


def rel_err(got, want):
    """The largest difference relative to the largest element of ``want``."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = np.max(np.abs(want))
    return float(np.max(np.abs(got - want)) / scale) if scale > 0 else float(np.max(np.abs(got)))


def step_err(x_new, ref_x_new, x_old):
    """How far ``x_new`` is from the reference's, relative to the largest element of the
    reference's step, less one rounding of x itself (both round x - d to x's dtype: in
    float32 an ulp of x is 1e-4 of a step of 1e-3)."""
    if np.size(x_old) == 0:
        return 0.0
    ref_d = np.asarray(x_old, np.float64) - ref_x_new
    off = np.abs(np.asarray(x_new, np.float64) - ref_x_new) - np.spacing(np.abs(ref_x_new))
    scale = np.max(np.abs(ref_d))
    return float(np.max(np.maximum(off, 0.0)) / (scale if scale > 0 else 1.0))


def assert_close_states(got, want, rtol, where):
    """Arrays of two (nested) states equal to ``rtol`` relative; other leaves equal."""
    if isinstance(want, np.ndarray):
        assert got.dtype == want.dtype and got.shape == want.shape, where
        assert rel_err(got, want) <= rtol, f"{where}: {rel_err(got, want):.3g}"
    elif isinstance(want, tuple):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            assert_close_states(g, w, rtol, f"{where}[{i}]")
    elif want is None:
        assert got is None, where
    else:
        assert int(np.asarray(got)) == int(want), where


# ---------------------------------------------------------------------------------------
# the float64 reference, every row, float32 and float64, 1 and 2 threads


@pytest.mark.parametrize("dtype", FLOATS, ids=FLOAT_IDS.get)
@pytest.mark.parametrize("rule", RULE_VALUES, ids=RULE_IDS)
def test_matches_float64_reference(rule, dtype, n_threads, small_parallel_threshold):
    """Each step from the library's own x and state: the new x to 1e-4 relative to the
    reference's step, the states likewise; update (every third step) writes nothing."""
    rng = np.random.default_rng(17)
    model = fresh_model(rng, dtype)
    tree = opt.setup(rule, model)
    for k, v in model.items():
        assert_close_states(tree[k].state, ref_init(rule, v), 0.0, f"init {k}")
    for step in range(6):
        grads = grads_like(rng, model)
        x_before = {k: v.copy() for k, v in model.items()}
        s_before = {k: _copy_state(tree[k].state) for k in model}
        want = ref_update_tree(rule, s_before, x_before, grads)
        if step % 3 == 2:
            old_tree, old_model = tree, model
            tree, model = opt.update(tree, model, grads)
            for k in model:
                assert np.array_equal(old_model[k], x_before[k]), f"update wrote {k}"
                assert_close_states(old_tree[k].state, s_before[k], 0.0, f"update wrote {k}")
        else:
            tree, model = opt.update_(tree, model, grads)
        for k in model:
            ref_s, ref_x = want[k]
            assert model[k].dtype == np.dtype(dtype)
            err = step_err(model[k], ref_x, x_before[k])
            assert err <= RTOL, f"step {step} {k}: step differs by {err:.3g} relative"
            assert_close_states(tree[k].state, ref_s, RTOL, f"step {step} state {k}")


def _copy_state(s):
    if isinstance(s, np.ndarray):
        return s.copy()
    if isinstance(s, tuple):
        parts = [_copy_state(p) for p in s]
        return type(s)(*parts) if hasattr(s, "_fields") else tuple(parts)
    return s


@pytest.mark.parametrize("dtype", FLOATS, ids=FLOAT_IDS.get)
@pytest.mark.parametrize("nesterov", [True, False])
def test_momentum_is_bit_for_bit_and_update_pure(dtype, nesterov, n_threads):
    """The momentum is element-wise (the kernels' order): equal to the reference's bit for
    bit; ``update`` touches neither the model nor the state it was given."""
    rule = opt.Muon(0.03, mu=0.9, nesterov=nesterov)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((24, 10)).astype(dtype)
    tree = opt.setup(rule, x)
    ref_m = ref_init(rule, x).m
    for _ in range(5):
        g = rng.standard_normal(x.shape).astype(dtype)
        x0, m0 = x.copy(), tree.state.m.copy()
        new_tree, new_x = opt.update(tree, x, g)
        assert np.array_equal(x, x0) and np.array_equal(tree.state.m, m0)
        ref_m = ref_m + np.asarray(1 - 0.9, dtype) * (g - ref_m)
        assert np.array_equal(new_tree.state.m, ref_m)
        tree, x = new_tree, new_x


def test_float64_step_agrees_to_1e4_and_the_figure():
    """The float32 iteration against the float64 one on a larger matrix (the figure in
    the docstring): well under 1e-4, and not exact (it is float32)."""
    rng = np.random.default_rng(5)
    for shape in [(128, 384), (384, 128)]:
        x = rng.standard_normal(shape)
        g = rng.standard_normal(shape)
        rule = opt.Muon(0.02)
        _, d = opt.apply_(rule, opt.init(rule, x), x, g)
        want = ref_update_tree(rule, {"x": ref_init(rule, x)}, {"x": x}, {"x": g})["x"][1]
        err = rel_err(d, x - want)
        assert 1e-9 < err < RTOL / 10, err


@pytest.mark.parametrize("steps", [0, 1, 9])
def test_other_step_counts_match_the_reference(steps):
    rng = np.random.default_rng(steps)
    x, g = rng.standard_normal((20, 30)), rng.standard_normal((20, 30))
    rule = opt.Muon(0.05, ns_steps=steps)
    _, d = opt.apply_(rule, opt.init(rule, x), x, g)
    want = ref_update_tree(rule, {"x": ref_init(rule, x)}, {"x": x}, {"x": g})["x"][1]
    assert rel_err(d, x - want) <= RTOL


def test_a_zero_gradient_decays_only():
    """u = 0: its norm is floored at epsilon, so the orthogonalised matrix is 0 (not NaN)
    and the step is the decoupled decay eta*lambda*x alone."""
    x = np.random.default_rng(1).standard_normal((5, 7))
    tree = opt.setup(opt.Muon(0.5, lambda_=0.2), x)
    tree, x2 = opt.update(tree, x, np.zeros_like(x))
    assert np.allclose(x2, x - 0.5 * 0.2 * x, rtol=1e-15, atol=0)


@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (0, 0), (1, 1), (1, 7)])
def test_empty_and_thin_matrices(shape):
    """Degenerate shapes step like the reference (an empty one: nothing, no error)."""
    x = np.random.default_rng(2).standard_normal(shape)
    g = np.random.default_rng(3).standard_normal(shape)
    rule = opt.Muon(0.1)
    _, x2 = opt.update(opt.setup(rule, x), x, g)
    want = ref_update_tree(rule, {"x": ref_init(rule, x)}, {"x": x}, {"x": g})["x"][1]
    assert x2.shape == shape and step_err(x2, want, x) <= RTOL


def test_newton_schulz_orthogonalises():
    """The reference's iteration itself: the singular values of its output lie in the band
    the quintic leaves them in (0.5 to 1.5, Jordan's post), whatever the input's scale."""
    rng = np.random.default_rng(2)
    u = rng.standard_normal((20, 50)) * np.logspace(-3, 2, 50)
    s = np.linalg.svd(ref_newton_schulz(u, (3.4445, -4.775, 2.0315), 5, 1e-7), compute_uv=False)
    assert s.min() > 0.5 and s.max() < 1.5, s


# ---------------------------------------------------------------------------------------
# torch.optim.Muon, the peer


def _torch():
    return pytest.importorskip(
        "torch", reason="torch is not installed (CI's optional stage installs torch==2.13.0)"
    )


@pytest.mark.parametrize("shape", [(24, 64), (64, 24)], ids=["wide", "tall"])
@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"nesterov": False, "adjust_lr_fn": "match_rms_adamw"},
        {"ns_steps": 3, "ns_coefficients": (3.0, -3.2, 1.2)},
    ],
    ids=["defaults", "plain-rms", "coefficients"],
)
def test_matches_torch_muon(shape, kw):
    """torch 2.13's Muon (its iteration in bfloat16) over 10 steps from the same start,
    float32: the displacement agrees to 2e-2 relative in the Frobenius norm (measured: about
    5e-3), where a wrong adjustment, decay or momentum form would be off by 10% or more."""
    torch = _torch()
    if not hasattr(torch.optim, "Muon"):
        pytest.skip(f"torch {torch.__version__} has no torch.optim.Muon")
    rng = np.random.default_rng(11)
    x0 = rng.standard_normal(shape).astype(np.float32)
    grads = [rng.standard_normal(shape).astype(np.float32) for _ in range(10)]
    eta, lam = 0.02, 0.1
    ours = opt.Muon(eta, lam, **kw)
    x, tree = x0.copy(), opt.setup(ours, x0.copy())
    p = torch.nn.Parameter(torch.tensor(x0))
    peer = torch.optim.Muon(
        [p], lr=eta, weight_decay=lam, **{k.replace("epsilon", "eps"): v for k, v in kw.items()}
    )
    for g in grads:
        tree, x = opt.update_(tree, x, g)
        p.grad = torch.tensor(g)
        peer.step()
    theirs = p.detach().numpy()
    err = np.linalg.norm(x - theirs) / np.linalg.norm(theirs - x0)
    assert err < 2e-2, err


# ---------------------------------------------------------------------------------------
# setup: matrices only, real only; setup(rule_for) for the rest


@pytest.mark.parametrize("shape", [(), (5,), (2, 3, 4)], ids=["0d", "1d", "3d"])
def test_setup_refuses_other_ranks_pointing_to_rule_for(shape):
    model = {"layer": {"w": np.ones((3, 4)), "b": np.ones(shape)}}
    with pytest.raises(ValueError) as e:
        opt.setup(opt.Muon(), model)
    msg = str(e.value)
    assert "setup(rule_for, model)" in msg and "AdamW" in msg, msg
    assert "layer" in msg and "b" in msg and str(shape) in msg, msg


def test_setup_refuses_complex():
    with pytest.raises(TypeError, match="Muon is not defined for complex"):
        opt.setup(opt.Muon(), {"w": np.ones((3, 4), np.complex128)})


def test_rule_for_trains_matrices_with_muon_and_the_rest_with_adamw():
    rng = np.random.default_rng(0)
    model = {"w": rng.standard_normal((6, 8)), "b": np.zeros(6), "k": np.ones((2, 2, 2))}
    st = opt.setup(lambda path, x: opt.Muon(0.1) if x.ndim == 2 else opt.AdamW(0.1), model)
    assert isinstance(st["w"].rule, opt.Muon) and isinstance(st["b"].rule, opt.AdamW)
    st, model = opt.update_(st, model, grads_like(rng, model))
    assert np.all(model["b"] != 0)


# ---------------------------------------------------------------------------------------
# bad input: a clear error before anything is written


def _snapshot(tree, model):
    return ({k: v.copy() for k, v in model.items()}, {k: _copy_state(tree[k].state) for k in model})


@pytest.mark.parametrize("rule", RULE_VALUES, ids=RULE_IDS)
def test_a_failed_update_writes_nothing(rule):
    rng = np.random.default_rng(4)
    model = fresh_model(rng, np.float32)
    tree = opt.setup(rule, model)
    tree, model = opt.update_(tree, model, grads_like(rng, model))
    xs, ss = _snapshot(tree, model)
    bad = grads_like(rng, model)
    bad["square"] = np.ones((16, 15), np.float32)  # the last leaf's shape is wrong
    with pytest.raises(ValueError, match="square"):
        opt.update_(tree, model, bad)
    for k in model:
        assert np.array_equal(model[k], xs[k]), k
        assert_close_states(tree[k].state, ss[k], 0.0, k)


def test_a_state_for_another_shape_is_refused_before_writing():
    rng = np.random.default_rng(6)
    model = {"a": rng.standard_normal((4, 5)), "b": rng.standard_normal((4, 5))}
    tree = opt.setup(opt.Muon(0.1), model)
    tree["b"].state = MuonState(np.zeros(20))  # as if made for a vector
    xs, ss = _snapshot(tree, model)
    with pytest.raises(ValueError, match="b"):
        opt.update_(tree, model, grads_like(rng, model))
    assert np.array_equal(model["a"], xs["a"]) and np.array_equal(tree["a"].state.m, ss["a"].m)


def test_non_finite_gradients_skipped_or_refused_before_writing():
    rng = np.random.default_rng(8)
    model = fresh_model(rng, np.float64)
    g = grads_like(rng, model)
    g["tall"][3, 4] = np.nan
    tree = opt.setup(opt.OptimiserChain(opt.SkipNonFinite(), opt.Muon(0.1)), model)
    xs, _ = _snapshot(tree, model)
    tree, model = opt.update_(tree, model, g)
    assert all(np.array_equal(model[k], xs[k]) for k in model)
    assert all(not np.any(tree[k].state[1].m) for k in model)
    tree = opt.setup(opt.OptimiserChain(opt.ClipGlobalNorm(1.0), opt.Muon(0.1)), model)
    with pytest.raises(FloatingPointError):
        opt.update_(tree, model, g)
    assert all(np.array_equal(model[k], xs[k]) for k in model)
    assert all(not np.any(tree[k].state[1].m) for k in model)


# ---------------------------------------------------------------------------------------
# hyper-parameters, schedules, adjust_, checkpoints


@pytest.mark.parametrize(
    "kw, err",
    [
        ({"eta": -1.0}, ValueError),
        ({"mu": 1.0}, ValueError),
        ({"epsilon": 0.0}, ValueError),
        ({"lambda_": -0.1}, ValueError),
        ({"ns_steps": 100}, ValueError),
        ({"ns_steps": 2.0}, TypeError),
        ({"ns_steps": True}, TypeError),
        ({"adjust_lr_fn": "rms"}, ValueError),
        ({"ns_coefficients": (1.0, 2.0)}, TypeError),
        ({"ns_coefficients": (1.0, float("nan"), 2.0)}, ValueError),
        ({"nesterov": 1}, TypeError),
    ],
)
def test_bad_hyperparameters_are_refused(kw, err):
    name = next(iter(kw))
    with pytest.raises(err, match=name):
        opt.Muon(**kw)
    with pytest.raises(err, match=name):
        opt.adjust(opt.Muon(), **kw)


def test_schedules_and_adjust_give_the_rule_at_each_value():
    """A scheduled eta and lambda_ step as the rule with those values would."""
    eta = schedules.cosine_decay(0.05, 6)
    lam = schedules.linear(0.0, 0.2, 6)
    rng = np.random.default_rng(9)
    x = rng.standard_normal((10, 14)).astype(np.float32)
    a = opt.setup(opt.Muon(eta, lam), x.copy())
    b = opt.setup(opt.Muon(eta(0), lam(0)), x.copy())
    xa, xb = x.copy(), x.copy()
    for t in range(6):
        g = rng.standard_normal(x.shape).astype(np.float32)
        opt.adjust_(b, eta=eta(t), lambda_=lam(t))
        a, xa = opt.update_(a, xa, g)
        b, xb = opt.update_(b, xb, g)
        assert np.array_equal(xa, xb) and np.array_equal(a.state.m, b.state.m), t


def _resume_model(rng):
    """Three matrices, one of them tied (twice in the model), one to be frozen."""
    tied = rng.standard_normal((12, 40)).astype(np.float32)
    return {
        "tied": [tied, tied],
        "tall": rng.standard_normal((40, 12)).astype(np.float32),
        "frozen": rng.standard_normal((4, 4)).astype(np.float32),
    }


def _resume_grads(rng, model):
    return {
        "tied": [rng.standard_normal((12, 40)).astype(np.float32) for _ in range(2)],
        "tall": rng.standard_normal((40, 12)).astype(np.float32),
        "frozen": rng.standard_normal((4, 4)).astype(np.float32),
    }


def _leaves(tree):
    return [tree["tied"][0], tree["tall"], tree["frozen"]]


SCHEDULED = opt.Muon(
    schedules.warmup_cosine_decay(0.0, 0.05, 2, 6), lambda_=0.1, mu=schedules.linear(0.9, 0.95, 4)
)


@pytest.mark.parametrize("rule", RULE_VALUES + [SCHEDULED], ids=RULE_IDS + ["scheduled"])
def test_training_resumes_bit_for_bit(tmp_path, rule):
    """Six steps straight, or three, save_state, load_state and three more: the same bits,
    the tie and the frozen flag kept."""
    rng = np.random.default_rng(10)
    grads = [_resume_grads(rng, None) for _ in range(6)]
    runs = []
    for split in (None, 3):
        model = _resume_model(np.random.default_rng(1))
        tree = opt.setup(rule, model)
        opt.freeze_(tree["frozen"])
        for i, g in enumerate(grads):
            if i == split:
                opt.save_state(tmp_path / "muon.ckpt", tree)
                tree = opt.load_state(tmp_path / "muon.ckpt")
                assert tree["tied"][0] is tree["tied"][1] and tree["frozen"].frozen
                assert tree["tall"].rule == rule
            tree, model = opt.update_(tree, model, g)
        runs.append((tree, model))
    (tree_a, model_a), (tree_b, model_b) = runs
    assert model_b["tied"][0] is model_b["tied"][1]
    for a, b in zip(_leaves(model_a), _leaves(model_b)):
        assert np.array_equal(a, b)
    for la, lb in zip(_leaves(tree_a), _leaves(tree_b)):
        assert_close_states(lb.state, la.state, 0.0, "state")


# ---------------------------------------------------------------------------------------
# threads, 16-bit parameters, apply_, allocations, convergence


@pytest.mark.parametrize("dtype", FLOATS, ids=FLOAT_IDS.get)
def test_thread_count_invariant(dtype, small_parallel_threshold):
    """The same bits on 1 and 2 OpenMP threads and on 1 and 2 BLAS threads."""
    rule = opt.OptimiserChain(opt.ClipGlobalNorm(5.0), opt.Muon(0.05))
    results = []
    for omp, blas in [(1, 1), (2, 1), (1, 2), (2, 2)]:
        rng = np.random.default_rng(12)
        model = {
            "a": rng.standard_normal((96, 160)).astype(dtype),
            "b": rng.standard_normal((160, 96)).astype(dtype),
        }
        tree = opt.setup(rule, model)
        with (
            threadpool_limits(limits=omp, user_api="openmp"),
            threadpool_limits(limits=blas, user_api="blas"),
        ):
            for _ in range(3):
                tree, model = opt.update_(tree, model, grads_like(rng, model))
        results.append(model)
    for r in results[1:]:
        for k in r:
            assert np.array_equal(r[k], results[0][k]), k


@pytest.mark.parametrize("dtype", [np.float16, "bfloat16"])
def test_low_precision_parameters(dtype):
    """A 16-bit parameter computes in float32 (a float32 momentum) and rounds once: its
    step equals the float32 parameter's within the 16-bit rounding of x."""
    if dtype == "bfloat16":
        dtype = pytest.importorskip("ml_dtypes").bfloat16
    rng = np.random.default_rng(13)
    x32 = rng.standard_normal((12, 20)).astype(np.float32)
    x16 = x32.astype(dtype)
    t16 = opt.setup(opt.Muon(0.05), x16)
    t32 = opt.setup(opt.Muon(0.05), x16.astype(np.float32))
    x16_32 = x16.astype(np.float32)
    for _ in range(3):
        g = rng.standard_normal(x32.shape).astype(np.float32)
        t16, x16 = opt.update_(t16, x16, g.astype(dtype))
        t32, x16_32 = opt.update_(t32, x16_32, g.astype(dtype).astype(np.float32))
        assert x16.dtype == np.dtype(dtype) and t16.state.m.dtype == np.float32
        assert np.array_equal(t16.state.m, t32.state.m)
        eps = float(np.finfo(np.float16).eps) if dtype == np.float16 else 2.0**-7
        assert np.allclose(x16.astype(np.float32), x16_32, rtol=eps, atol=1e-3)
        x16_32 = x16.astype(np.float32)


def test_apply_writes_neither_x_nor_the_gradient():
    rng = np.random.default_rng(14)
    x = rng.standard_normal((8, 6))
    g = rng.standard_normal((8, 6))
    x0, g0 = x.copy(), g.copy()
    rule = opt.Muon(0.1)
    _, d = opt.apply_(rule, opt.init(rule, x), x, g)
    assert np.array_equal(x, x0) and np.array_equal(g, g0)
    want = ref_update_tree(rule, {"x": ref_init(rule, x)}, {"x": x}, {"x": g})["x"][1]
    assert rel_err(d, x - want) <= RTOL


def test_a_step_allocates_no_matrix():
    """After the first step (which makes the per-shape workspace), a step allocates no
    array of the matrix's size: the iteration writes into its buffers."""
    rng = np.random.default_rng(15)
    x = rng.standard_normal((512, 768)).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    tree = opt.setup(opt.Muon(0.01), x)
    tree, x = opt.update_(tree, x, g)
    tracemalloc.start()
    try:
        tree, x = opt.update_(tree, x, g)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # numpy's fixed casting buffers (128 KiB) at most: a quarter of the Gram matrix
    assert peak < 512 * 512 * 4 // 4, peak


def _least_squares(seed=21):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((24, 64)) / 8
    W_true = rng.standard_normal((16, 24))
    B = W_true @ A

    def loss_grad(W):
        R = W @ A - B
        return 0.5 * float(np.sum(R * R)), R @ A.T

    return np.zeros((16, 24)), loss_grad


@pytest.mark.parametrize("name", list(MATRIX_CONVERGENCE))
def test_convergence(name):
    rule, steps = MATRIX_CONVERGENCE[name]
    W, loss_grad = _least_squares()
    tree = opt.setup(rule, W)
    l0 = loss_grad(W)[0]
    for _ in range(steps):
        tree, W = opt.update_(tree, W, loss_grad(W)[1])
    l1 = loss_grad(W)[0]
    assert l0 > 10 and l1 < 1e-2 * l0, (l0, l1)


# ---------------------------------------------------------------------------------------
# the benchmark command: speed cases of matrices, quality problems with AdamW for the rest


def test_benchmark_speed_cases_are_matrices():
    step = optimisers_step(Case("muon", "float32", 10**4, 2, 1))
    before = [p.copy() for p in step.params]
    step()
    for p, b in zip(step.params, before):
        assert p.shape == (50, 100) and not np.array_equal(p, b)
    assert "AdamW on the rest" in rules.get("muon").doc
    assert not rules.get("adam").matrix_only and rules.get("clipglobalnorm+muon").matrix_only


@pytest.mark.parametrize("problem", ["rosenbrock", "spirals"])
def test_benchmark_quality_trains_matrices_with_muon(problem):
    """Rosenbrock has no matrix (AdamW trains it all); the MLP's weights get Muon."""
    spec, prob = rules.get("muon"), problems.get(problem)
    curve = quality.train(spec, prob, 60)
    assert np.all(np.isfinite(curve)) and curve[-1] < curve[0]
    rule_for = spec.for_model(0.03)
    kinds = (
        {k: type(rule_for(None, v)).__name__ for k, v in prob.init().items()}
        if isinstance(prob.init(), dict)
        else {}
    )
    if problem == "spirals":
        assert kinds["W2"] == "Muon" and kinds["b2"] == "AdamW", kinds


# ---------------------------------------------------------------------------------------
# distributed: a rank steps whole arrays, so Muon sees whole matrices


def test_one_rank_of_distributed_is_update_():
    """On one rank (SelfComm) the sharded step with Muon on the matrices is update_'s,
    bit for bit (the multi-rank runs share the arrays out whole: tests/test_distributed)."""
    dist = pytest.importorskip("optimisers.distributed")
    rng = np.random.default_rng(30)
    model = {
        "w": rng.standard_normal((12, 20)),
        "v": rng.standard_normal((20, 6)),
        "b": rng.standard_normal(12),
    }
    ref = {k: v.copy() for k, v in model.items()}

    def rule_for(path, x):
        return opt.Muon(0.05) if x.ndim == 2 else opt.AdamW(0.05)

    state, ref_state = dist.setup(rule_for, model, dist.SelfComm()), opt.setup(rule_for, ref)
    for _ in range(3):
        g = grads_like(rng, model)
        state, model = dist.update_(state, model, g)
        ref_state, ref = opt.update_(ref_state, ref, g)
        for k in model:
            assert np.array_equal(model[k], ref[k]), k
