"""The batch's per-leaf cache of a state's buffers (``Leaf._fill``, src/_kernels/leafcache.pxi):
a step with a warm cache gives the bits of a step without one, and everything that changes a
leaf's state or arrays misses it (each test below fails if the cache is used where it must
not be: a write into a read-only or retyped array, out of bounds, or into an old state)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import optimisers as opt
from optimisers._leaf import tree_equal

SIZES = (7, 300, 1000)


def _model(dtype: type, n: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {f"p{i}": rng.standard_normal(SIZES[i % len(SIZES)]).astype(dtype) for i in range(n)}


def _grads(model: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(v.shape).astype(v.dtype) for k, v in model.items()}


def _recipe(path: object, x: np.ndarray) -> opt.Rule:
    return opt.OptimiserChain(
        opt.SkipNonFinite(),
        opt.ClipGlobalNorm(1.0),
        opt.AdamW(opt.schedules.warmup_cosine_decay(0.0, 1e-2, 3, 100), lambda_=0.1),
    )


RULES = {
    "adam": lambda: opt.Adam(1e-2),
    "recipe": lambda: _recipe,
    "clipnorm+momentum": lambda: opt.OptimiserChain(opt.ClipNorm(1.0), opt.Momentum(0.1)),
}


def _leaves(tree: dict[str, opt.Leaf]) -> list[opt.Leaf]:
    return [tree[k] for k in sorted(tree)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rule", sorted(RULES))
def test_a_warm_cache_steps_as_a_cold_one(rule, dtype, n_threads):
    warm_model, cold_model = _model(dtype), _model(dtype)
    warm = opt.setup(RULES[rule](), warm_model)
    cold = opt.setup(RULES[rule](), cold_model)
    fills = None
    for step in range(6):
        for leaf in _leaves(cold):
            leaf._fill = None  # every step of `cold` fills its stages afresh
        g = _grads(warm_model, step)
        opt.update_(warm, warm_model, g)
        opt.update_(cold, cold_model, g)
        for k in warm_model:
            np.testing.assert_array_equal(warm_model[k], cold_model[k], err_msg=f"{k} {step}")
        assert tree_equal(warm, cold)
        now = [leaf._fill for leaf in _leaves(warm)]
        assert all(f is not None for f in now)
        if fills is not None:  # the cache was used, not made again
            assert all(a is b for a, b in zip(now, fills))
        fills = now


def _warm(rule: opt.Rule, dtype: type = np.float32) -> tuple[dict, dict]:
    model = _model(dtype)
    tree = opt.setup(rule, model)
    for step in range(2):
        opt.update_(tree, model, _grads(model, step))
    assert all(leaf._fill is not None for leaf in tree.values())
    return tree, model


def _snapshot(tree: dict, model: dict) -> tuple[dict, dict]:
    return opt.update(tree, model, {k: None for k in model})  # copies, no step


def _unchanged(tree: dict, model: dict, before: tuple[dict, dict]) -> None:
    assert tree_equal(tree, before[0])
    for k in model:
        np.testing.assert_array_equal(model[k], before[1][k])


def _refused(tree: dict, model: dict, key: str) -> None:
    """A step refused with an error naming ``key``, which writes no parameter."""
    before = {k: v.copy() for k, v in model.items()}
    with pytest.raises(ValueError, match=key):
        opt.update_(tree, model, _grads(model, 5))
    for k in model:
        np.testing.assert_array_equal(model[k], before[k])


def test_a_new_state_object_is_stepped_and_the_old_one_is_not():
    tree, model = _warm(opt.Adam(1e-2))
    leaf = tree["p1"]
    old = leaf.state
    kept = [a.copy() for a in old]
    leaf.state = type(old)(*(a.copy() for a in old))  # as a hand-made or loaded state
    opt.update_(tree, model, _grads(model, 5))
    for a, k in zip(old, kept):
        np.testing.assert_array_equal(a, k)  # the old arrays were not written
    assert not np.array_equal(leaf.state.m, old.m)  # the new ones were


@pytest.mark.parametrize("field", ["m", "beta_t"])
def test_a_state_array_made_read_only_is_refused(field):
    tree, model = _warm(opt.Adam(1e-2))
    getattr(tree["p2"].state, field).flags.writeable = False
    before = _snapshot(tree, model)
    _refused(tree, model, "p2")
    _unchanged(tree, model, before)


def test_a_state_array_given_another_dtype_in_place_is_refused():
    tree, model = _warm(opt.Adam(1e-2))
    v = tree["p0"].state.v
    before = _snapshot(tree, model)
    v.dtype = np.int32  # the same memory, read as int32
    _refused(tree, model, "p0")
    v.dtype = np.float32
    _unchanged(tree, model, before)


def test_a_state_array_resized_in_place_is_refused():
    tree, model = _warm(opt.Momentum(0.1))
    tree["p1"].state.resize(100, refcheck=False)  # fewer elements, maybe new memory
    _refused(tree, model, "p1")


def test_a_larger_parameter_with_the_old_state_is_refused():
    # the cached pointers are for 300 elements: a hit would write 1000 (out of bounds)
    tree, model = _warm(opt.Adam(1e-2))
    model["p1"] = np.zeros(1000, np.float32)
    before = _snapshot(tree, model)
    _refused(tree, model, "p1")
    _unchanged(tree, model, before)


def test_another_parameter_array_is_the_one_written():
    tree, model = _warm(opt.Adam(1e-2))
    old = model["p1"]
    kept = old.copy()
    model["p1"] = old.copy()
    opt.update_(tree, model, _grads(model, 5))
    np.testing.assert_array_equal(old, kept)
    assert not np.array_equal(model["p1"], kept)


def test_values_written_into_the_state_arrays_are_read():
    # in place, the same memory: a hit is right, and the new values are what it steps from
    tree, model = _warm(opt.Momentum(0.1, 0.5))
    fill = tree["p0"]._fill
    tree["p0"].state[:] = 100.0
    x = model["p0"].copy()
    g = _grads(model, 5)
    opt.update_(tree, model, g)
    assert tree["p0"]._fill is fill
    np.testing.assert_allclose(tree["p0"].state, 0.5 * 100.0 + 0.1 * g["p0"], rtol=1e-6)
    np.testing.assert_allclose(model["p0"], x - tree["p0"].state, rtol=1e-6)


def test_adjust_freeze_thaw_pickle_and_update_step_as_without_the_cache():
    tree, model = _warm(_recipe)
    cold_tree, cold_model = _snapshot(tree, model)
    for leaf in _leaves(cold_tree):
        assert leaf._fill is None  # copies start cold
    for t in (tree, cold_tree):
        opt.adjust_(t, 5e-3)
        opt.freeze_(t["p1"])
    for step in range(3):
        if step == 2:
            for t in (tree, cold_tree):
                opt.thaw_(t)
        for leaf in _leaves(cold_tree):
            leaf._fill = None
        g = _grads(model, 10 + step)
        opt.update_(tree, model, g)
        opt.update_(cold_tree, cold_model, g)
        for k in model:
            np.testing.assert_array_equal(model[k], cold_model[k], err_msg=f"{k} {step}")
    # a pickled tree has new arrays: stepping it leaves the original alone
    loaded = pickle.loads(pickle.dumps(tree))
    assert all(leaf._fill is None for leaf in loaded.values())
    before = _snapshot(tree, model)
    opt.update_(loaded, {k: v.copy() for k, v in model.items()}, _grads(model, 20))
    _unchanged(tree, model, before)
    # so does update, with a warm cache
    new_tree, new_model = opt.update(tree, model, _grads(model, 21))
    _unchanged(tree, model, before)
    assert not tree_equal(new_tree, tree)


def test_a_failed_step_with_a_warm_cache_writes_nothing():
    tree, model = _warm(_recipe)
    before = _snapshot(tree, model)
    g = _grads(model, 5)
    g["p2"] = np.zeros(3, np.float32)  # the wrong shape, on the last leaf
    with pytest.raises(ValueError, match="p2"):
        opt.update_(tree, model, g)
    _unchanged(tree, model, before)
