"""ScheduleFreeAdamW against the authors' package (``schedulefree.AdamWScheduleFree``, the
peer: skipped with a reason when it or torch is not installed) and against the numpy
reference, for the trained parameters y and the evaluation ones x; its checks and its
refusals.  (Bit-for-bit runs over the registry's rows, threads, checkpoints and 16-bit
parameters are in test_rules, test_threads, test_checkpoint and test_low_precision.)"""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import optimisers as opt
from assertions import assert_arrays_same
from reference import ref_averaged, ref_init, ref_update

SHAPES = [(13,), (7, 5), (3, 4, 6)]
CASES = [
    {},
    {"warmup_steps": 10},  # warm-up inside the 30 steps
    {"warmup_steps": 4, "lambda_": 0.1, "r": 0.5, "weight_lr_power": 1.5},
    {"beta": (0.8, 0.95), "epsilon": 1e-6, "lambda_": 0.3},
]


def _package():
    torch = pytest.importorskip("torch", reason="the peer test needs torch")
    sf = pytest.importorskip(
        "schedulefree",
        reason="the peer test needs the schedulefree package (pip install schedulefree)",
    )
    return torch, sf


def _run_package(torch, sf, x0, grads, eta, kw, foreach):
    """y after every step and x (eval mode) at the end, from the package."""
    p = torch.nn.Parameter(torch.tensor(x0.copy()))
    o = sf.AdamWScheduleFree(
        [p],
        lr=eta,
        betas=kw.get("beta", (0.9, 0.999)),
        eps=kw.get("epsilon", 1e-8),
        weight_decay=kw.get("lambda_", 0.0),
        warmup_steps=kw.get("warmup_steps", 0),
        r=kw.get("r", 0.0),
        weight_lr_power=kw.get("weight_lr_power", 2.0),
        foreach=foreach,
    )
    o.train()
    ys = []
    for g in grads:
        p.grad = torch.tensor(g.copy())
        o.step()
        ys.append(p.detach().numpy().copy())
    o.eval()
    return ys, p.detach().numpy().copy()


def _assert_close(got, want, rtol, where):
    scale = np.maximum(np.abs(want), 1e-300)
    err = float(np.max(np.abs(got - want) / scale))
    assert err <= rtol, f"{where}: relative error {err:.3g} > {rtol:g}"


@pytest.mark.parametrize("foreach", [False, True], ids=["single", "foreach"])
@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_schedulefree_package(shape, case, foreach):
    torch, sf = _package()
    kw = CASES[case]
    rng = np.random.default_rng(case)
    x0 = rng.standard_normal(shape)
    grads = [rng.standard_normal(shape) * (1 + t % 3) for t in range(30)]
    ys, x_eval = _run_package(torch, sf, x0, grads, 0.05, kw, foreach)
    y = x0.copy()
    st = opt.setup(opt.ScheduleFreeAdamW(0.05, **kw), y)
    for t, g in enumerate(grads):
        st, y = opt.update_(st, y, g)
        _assert_close(y, ys[t], 1e-10, f"y at step {t + 1}")
    _assert_close(opt.averaged(st, y), x_eval, 1e-10, "x (eval) after 30 steps")


def test_scheduled_eta_matches_package_with_lr_set_each_step():
    torch, sf = _package()
    eta = opt.schedules.cosine_decay(0.05, 30, alpha=0.1)
    rng = np.random.default_rng(7)
    x0 = rng.standard_normal((9, 4))
    p = torch.nn.Parameter(torch.tensor(x0.copy()))
    o = sf.AdamWScheduleFree([p], lr=0.05, warmup_steps=5, foreach=False)
    o.train()
    y = x0.copy()
    st = opt.setup(opt.ScheduleFreeAdamW(eta, warmup_steps=5), y)
    for t in range(30):
        g = rng.standard_normal(x0.shape)
        o.param_groups[0]["lr"] = eta(t)
        p.grad = torch.tensor(g.copy())
        o.step()
        st, y = opt.update_(st, y, g)
    _assert_close(y, p.detach().numpy(), 1e-10, "y")


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_averaged_point_matches_reference(dtype, threads):
    rule = opt.ScheduleFreeAdamW(0.05, warmup_steps=3, lambda_=0.1)
    rng = np.random.default_rng(3)
    y = rng.standard_normal((40, 1000)).astype(dtype)
    st = opt.setup(rule, y)
    ref_st, ref_y = ref_init(rule, y), y.copy()
    with threadpool_limits(threads):
        for _ in range(6):
            g = rng.standard_normal(y.shape).astype(dtype)
            st, y = opt.update_(st, y, g)
            ref_st, ref_y = ref_update(rule, ref_st, ref_y, g)
    assert_arrays_same(y, ref_y, "y")
    x = opt.averaged(st, y)
    assert_arrays_same(x, ref_averaged(rule, ref_st, ref_y), "x")
    # x is neither y nor z: the three points differ after a few steps
    assert not np.array_equal(x, y) and not np.array_equal(x, st.state.z)


def test_checks_and_refusals():
    with pytest.raises(ValueError, match=r"beta\[0\]"):
        opt.ScheduleFreeAdamW(beta=(0.0, 0.999))  # x unrecoverable from y and z
    with pytest.raises(ValueError, match="warmup_steps"):
        opt.ScheduleFreeAdamW(warmup_steps=-1)
    with pytest.raises(TypeError, match="warmup_steps"):
        opt.ScheduleFreeAdamW(warmup_steps=2.5)
    with pytest.raises(ValueError, match="weight_lr_power"):
        opt.ScheduleFreeAdamW(weight_lr_power=-1.0)


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128], ids=["c64", "c128"])
def test_complex_parameters_match_the_reference(dtype):
    # the package's addcmul(g, g) would square a complex g; here v holds |g|^2, as in Adam
    rule = opt.ScheduleFreeAdamW(0.05, warmup_steps=2, lambda_=0.1)
    rng = np.random.default_rng(11)
    y = (rng.standard_normal((5, 300)) + 1j * rng.standard_normal((5, 300))).astype(dtype)
    st = opt.setup(rule, y)
    assert st.state.v.dtype == np.real(y).dtype
    ref_st, ref_y = ref_init(rule, y), y.copy()
    for _ in range(5):
        g = (rng.standard_normal(y.shape) + 1j * rng.standard_normal(y.shape)).astype(dtype)
        st, y = opt.update_(st, y, g)
        ref_st, ref_y = ref_update(rule, ref_st, ref_y, g)
    assert_arrays_same(y, ref_y, "y")
    assert_arrays_same(opt.averaged(st, y), ref_averaged(rule, ref_st, ref_y), "x")


def test_state_is_z_and_one_moment():
    x = np.arange(6.0).reshape(2, 3)
    st = opt.setup(opt.ScheduleFreeAdamW(), x).state
    assert_arrays_same(st.z, x, "z starts at the parameter")
    assert st.z is not x
    assert st.v.shape == x.shape and not st.v.any()
    assert st.sc.tolist() == [-1.0, 0.0] and int(st.k) == 0
