"""OpenMP is really compiled in, visible to threadpoolctl, and obeys its limits."""

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

import optimisers as opt
from optimisers._norms import grad_norm


def test_openmp_is_compiled_in():
    # Without the meson `openmp` dependency on the extension, prange silently runs serially.
    assert opt.openmp_enabled() is True


def test_threadpoolctl_sees_the_openmp_runtime():
    apis = {info["user_api"] for info in threadpool_info()}
    assert "openmp" in apis


def test_threadpool_limits_makes_kernels_single_threaded():
    with threadpool_limits(limits=1, user_api="openmp"):
        assert opt.max_threads() == 1
    with threadpool_limits(limits=2, user_api="openmp"):
        assert opt.max_threads() == 2


def test_parallel_threshold_is_settable_and_validated():
    old = opt.get_parallel_threshold()
    try:
        opt.set_parallel_threshold(123)
        assert opt.get_parallel_threshold() == 123
        with pytest.raises(ValueError):
            opt.set_parallel_threshold(-1)
    finally:
        opt.set_parallel_threshold(old)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_parallel_and_serial_paths_agree_bit_for_bit(dtype, small_parallel_threshold):
    # Element-wise programs must not depend on how tiles are spread over threads; sizes
    # straddle the tile of this chain (512 float32 or 256 float64 elements) and the
    # lowered threshold (4096).
    rng = np.random.default_rng(0)
    for n in (1, 255, 257, 511, 513, 2049, 4095, 50_001):
        g = rng.standard_normal(n).astype(dtype)
        results = []
        for threads in (1, 2):
            x = np.linspace(-1, 1, n).astype(dtype)
            st = opt.setup(opt.OptimiserChain(opt.ClipGrad(1.0), opt.AdamW(0.1, lambda_=0.1)), x)
            with threadpool_limits(limits=threads, user_api="openmp"):
                for _ in range(3):
                    st, x = opt.update_(st, x, g)
            results.append((x, st.state[1].m, st.state[1].v))
        for a, b in zip(*results):
            assert np.array_equal(a, b)


@pytest.mark.parametrize("p", [2.0, 1.0, np.inf, -np.inf, 0.0, 3.0])
def test_norm_does_not_depend_on_thread_count(p, small_parallel_threshold):
    g = np.random.default_rng(1).standard_normal(100_003)
    values = []
    for threads in (1, 2):
        with threadpool_limits(limits=threads, user_api="openmp"):
            values.append(grad_norm(g, p))
    assert values[0] == values[1]
    assert values[0] != 0.0


class _Gate(opt.Rule):
    """A rule written in Python that waits, inside the step, until it is let through."""

    def __init__(self, inside, go):
        self._inside, self._go = inside, go

    def apply(self, state, x, dx):
        self._inside.set()
        assert self._go.wait(10)
        return state, 0.1 * dx


def test_one_state_updated_from_two_threads_refuses_instead_of_racing():
    import threading

    inside, go = threading.Event(), threading.Event()
    model = {"gate": np.zeros(3), "w": np.ones(5)}
    rules = {"gate": _Gate(inside, go), "w": opt.Descent(0.1)}
    state = {
        "gate": opt.setup(rules["gate"], model["gate"]),
        "w": opt.setup(rules["w"], model["w"]),
    }
    grads = {"gate": np.ones(3), "w": np.ones(5)}
    errors = []

    def first():
        try:
            opt.update_(state, model, grads)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    t = threading.Thread(target=first)
    t.start()
    try:
        assert inside.wait(10)  # the first update_ is stepping `gate` now
        with pytest.raises(RuntimeError, match="another thread"):
            opt.update_(state, model, grads)
        # nothing of the refused call was written: w was stepped by no one yet
        assert np.array_equal(model["w"], np.ones(5))
        # a separate state goes on in parallel meanwhile
        other = {"w": np.ones(5)}
        other_state = opt.setup(opt.Descent(0.1), other)
        opt.update_(other_state, other, {"w": np.ones(5)})
        assert np.allclose(other["w"], 0.9)
    finally:
        go.set()
        t.join(10)
    assert not errors, errors
    assert np.allclose(model["w"], 0.9) and np.allclose(model["gate"], -0.1)
    opt.update_(state, model, grads)  # claims are released: the next step runs
    assert np.allclose(model["w"], 0.8)
