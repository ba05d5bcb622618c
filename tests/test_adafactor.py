"""Adafactor: against torch.optim.Adafactor (its peer, when installed), its O(n+m) state,
its row/column reductions (thread-count invariant, in the reference's order), and its
refusals.  The bit-for-bit checks against tests/reference.py in float32/float64 and on 1
and 2 threads, checkpoints, schedules and atomicity run for every rule of the registry
(tests/registry.py rows Adafactor-*, Chain-ClipGrad-Adafactor)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import optimisers as opt
from optimisers._native import kernels as K
from reference import _factored_sums, ref_init, ref_update

HAVE_TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(
    not HAVE_TORCH, reason="torch is not installed (CI's optional stage installs it)"
)

SHAPES = [(7,), (5, 9), (3, 4, 6), (40, 1100)]  # the last: 3 column chunks of 512
SETTINGS = [
    dict(),
    dict(eta=0.05, beta2_decay=-0.5, epsilon=(1e-20, 1e-2), d=2.0, lambda_=0.1),
    dict(eta=0.5, epsilon=(1e-6, 0.5), d=1.0, lambda_=0.3),
]  # RMS clipping active


def _problem(shape, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    grads = [rng.standard_normal(shape) * rng.uniform(0.1, 3.0) for _ in range(20)]
    return x, grads


def _torch_run(x, grads, settings):
    import torch

    kw = {
        "lr": settings.get("eta", 1e-2),
        "beta2_decay": settings.get("beta2_decay", -0.8),
        "eps": settings.get("epsilon", (None, 1e-3)),
        "d": settings.get("d", 1.0),
        "weight_decay": settings.get("lambda_", 0.0),
    }
    p = torch.nn.Parameter(torch.tensor(x, dtype=torch.float64))
    o = torch.optim.Adafactor([p], **kw)
    for g in grads:
        p.grad = torch.tensor(g, dtype=torch.float64)
        o.step()
    return p.detach().numpy(), o.state[p]


@needs_torch
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("settings", SETTINGS, ids=["defaults", "tuned", "clipped"])
def test_matches_torch_adafactor_float64(shape, settings):
    x, grads = _problem(shape)
    want, tstate = _torch_run(x, grads, settings)
    y = x.copy()
    st = opt.setup(opt.Adafactor(**settings), y)
    for g in grads:
        st, y = opt.update_(st, y, g)
    np.testing.assert_allclose(y, want, rtol=1e-10, atol=0)
    assert int(st.state.t) == int(tstate["step"]) == 20
    if len(shape) >= 2:
        np.testing.assert_allclose(st.state.row, tstate["row_var"].numpy()[..., 0], rtol=1e-10)
        np.testing.assert_allclose(st.state.col, tstate["col_var"].numpy()[..., 0, :], rtol=1e-10)
    else:
        np.testing.assert_allclose(st.state.v, tstate["variance"].numpy(), rtol=1e-10)


@pytest.mark.parametrize("shape", [(30, 50), (2, 3, 700)], ids=str)
def test_state_is_rows_plus_columns(shape):
    x = np.zeros(shape, np.float32)
    state = opt.init(opt.Adafactor(), x)
    arrays = [a for a in state if isinstance(a, np.ndarray)]
    *batch, n, m = shape
    assert sum(a.size for a in arrays) == int(np.prod(batch, dtype=int)) * (n + m) + 1
    assert state.v is None and state.row.shape == x.shape[:-1]
    assert state.col.shape == tuple(batch) + (m,)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(3, 1100), (2, 5, 17), (1, 8), (9, 1)], ids=str)
def test_factored_sums_follow_the_reference_order(dtype, shape, small_parallel_threshold):
    rng = np.random.default_rng(1)
    g = (rng.standard_normal(shape) * 10.0 ** rng.uniform(-3, 3, shape)).astype(dtype)
    rows, cols = shape[-2], shape[-1]
    want_r, want_c = _factored_sums(g, rows, cols)
    for threads in (1, 2):
        rs, cs = np.empty(g.size // cols), np.empty(g.size // rows)
        with threadpool_limits(limits=threads, user_api="openmp"):
            K.factored_sums(g, rows, cols, rs, cs)
        assert np.array_equal(rs, want_r.ravel()) and np.array_equal(cs, want_c.ravel())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(64, 700), (30_000,)], ids=str)
def test_steps_do_not_depend_on_thread_count(dtype, shape, small_parallel_threshold):
    x0, grads = _problem(shape, seed=3)
    out = []
    for threads in (1, 2):
        x = x0.astype(dtype)
        st = opt.setup(opt.Adafactor(0.05, lambda_=0.1), x)
        with threadpool_limits(limits=threads, user_api="openmp"):
            for g in grads[:4]:
                st, x = opt.update_(st, x, g.astype(dtype))
        out.append((x, *[a for a in st.state if a is not None]))
    for a, b in zip(*out):
        assert np.array_equal(a, b)


def test_reference_step_on_a_batch_of_matrices():
    # the leading dimensions are a batch: each matrix has its own row mean
    x, grads = _problem((3, 4, 6), seed=5)
    x[1] *= 100.0
    rule = opt.Adafactor(0.05)
    st, y = opt.setup(rule, x.copy()), x.copy()
    ref_st, ref_y = ref_init(rule, x), x.copy()
    for g in grads[:5]:
        st, y = opt.update_(st, y, g)
        ref_st, ref_y = ref_update(rule, ref_st, ref_y, g)
    assert np.array_equal(y, ref_y)
    assert np.array_equal(st.state.row, ref_st.row) and np.array_equal(st.state.col, ref_st.col)


def test_refuses_complex_parameters():
    with pytest.raises(TypeError, match=r"Adafactor is not defined for complex.*at .*w"):
        opt.setup(opt.Adafactor(), {"w": np.zeros((2, 2), np.complex128)})


@pytest.mark.parametrize(
    "field, value",
    [
        ("beta2_decay", 0.1),
        ("d", 0.5),
        ("eta", -1.0),
        ("epsilon", (-1.0, 1e-3)),
        ("epsilon", (None, -1)),
        ("lambda_", -0.1),
    ],
)
def test_refuses_bad_hyperparameters(field, value):
    with pytest.raises(ValueError, match=f"Adafactor: {field}"):
        opt.Adafactor(**{field: value})


def test_state_of_another_shape_is_refused_with_its_path():
    model = {"w": np.ones((3, 4))}
    st = opt.setup(opt.Adafactor(), model)
    with pytest.raises(
        ValueError,
        match=r"Leaf at w .*state.row has shape \(3,\) where the "
        r"rule keeps shape \(4,\)",
    ):
        opt.update_(st, {"w": np.ones((4, 3))}, {"w": np.ones((4, 3))})


def test_a_bad_gradient_changes_nothing():
    model = {"a": np.ones((3, 4)), "b": np.ones(5)}
    st = opt.setup(opt.Adafactor(lambda_=0.1), model)
    before = [
        model["a"].copy(),
        model["b"].copy(),
        st["a"].state.row.copy(),
        st["b"].state.v.copy(),
    ]
    with pytest.raises(ValueError, match=r"gradient at b "):
        opt.update_(st, model, {"a": np.ones((3, 4)), "b": np.ones(4)})
    after = [model["a"], model["b"], st["a"].state.row, st["b"].state.v]
    assert all(np.array_equal(p, q) for p, q in zip(before, after))
    assert int(st["a"].state.t) == 0


def test_schedule_and_adjust():
    x = np.ones((4, 5))
    rule = opt.Adafactor(eta=opt.schedules.linear(0.1, 0.0, 2))
    st = opt.setup(rule, x)
    st, x = opt.update_(st, x, np.ones((4, 5)))
    assert np.allclose(x, 0.9)  # alpha = RMS(x) * min(0.1, 1)
    st, x2 = opt.update_(st, x.copy(), np.ones((4, 5)))
    assert np.allclose(x2, 0.9 - 0.9 * 0.05)  # eta(1) = 0.05 < 1/sqrt(2)
    opt.adjust_(st, eta=0.0)
    st, x3 = opt.update_(st, x2.copy(), np.ones((4, 5)))
    assert np.array_equal(x3, x2)
