"""The two engines of update_ agree, and the batch engine checks before it writes.

``update_`` runs most leaves through ``_kernels.Batch`` (one kernel call for every leaf
whose rule compiles to a plain program, parameter written in place) and the rest through a
``Program`` each (read-only, strided or float16 parameters, rules with a barrier, tied
arrays).  Here: both give the reference's bits for every rule of the registry, a leading
``ClipNorm`` folded into the next stage included; a batch with many programs and both
dtypes; and the batch's contract: construction checks every entry and writes nothing, a
leaf that does not fit is listed with the reason, ``run`` writes the rest once.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

import optimisers as opt
from assertions import assert_arrays_same, assert_state_same, state_arrays
from optimisers import (
    AccumGrad,
    Adam,
    AdamW,
    ClipNorm,
    Descent,
    Momentum,
    OptimiserChain,
    WeightDecay,
)
from optimisers._native import kernels as K
from optimisers._plan import template
from reference import ref_init, ref_update, ref_update_tree
from registry import RULE_IDS, RULES

FLOATS = [np.float32, np.float64]
DTYPE_IDS = {np.float32: "f32", np.float64: "f64"}


def seed_of(*keys):
    return zlib.crc32(repr(keys).encode())


def gradient(rng, shape, dtype):
    g = rng.standard_normal(shape)
    g.reshape(-1)[rng.integers(0, g.size, 3)] *= 1e3  # norms well above omega
    return g.astype(dtype)


def read_only(a):
    a = a.copy()
    a.flags.writeable = False
    return a


# ---------------------------------------------------------------------------------------
# both engines against the reference


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS.get)
@pytest.mark.parametrize("rule", [r for _, r in RULES], ids=RULE_IDS)
def test_batch_and_general_engines_match_the_reference(
    rule, dtype, n_threads, small_parallel_threshold
):
    """One model, one rule, parameters of every layout: "big" (split over threads by
    tiles), six small ones (spread over threads whole: 6 x 1500 > the lowered threshold),
    a Fortran-ordered and a read-only one (the general engine).  Every one must be the
    reference's, bit for bit, after each of five steps."""
    rng = np.random.default_rng(seed_of(repr(rule), dtype, "engines"))
    shapes = {"big": (9, 1000), "fortran": (30, 40), "readonly": (700,)}
    shapes.update({f"small{i}": (1500,) for i in range(6)})
    model = {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
    model["fortran"] = np.asfortranarray(model["fortran"])
    model["readonly"] = read_only(model["readonly"])
    ref_x = {k: np.array(v) for k, v in model.items()}
    ref_s = {k: ref_init(rule, v) for k, v in model.items()}
    tree = opt.setup(rule, model)
    for step in range(5):
        grads = {k: gradient(rng, s, dtype) for k, s in shapes.items()}
        tree, model = opt.update_(tree, model, grads)
        stepped = ref_update_tree(rule, ref_s, ref_x, grads)  # a global norm: all leaves
        for k in shapes:
            ref_s[k], ref_x[k] = stepped[k]
            assert_arrays_same(np.asarray(model[k]), ref_x[k], f"step {step}: {k}")
            assert_state_same(tree[k].state, ref_s[k], f"step {step}: state of {k}")


def test_one_step_runs_many_programs_and_both_dtypes(small_parallel_threshold):
    """A batch holds leaves of both dtypes and more distinct programs than the kernel
    caches (one per adjusted rule): each leaf gets its own rule's step."""
    rng = np.random.default_rng(7)
    rules = [
        OptimiserChain(ClipNorm(0.5 + i), Adam(0.01 * (i + 1)))
        if i % 3 == 0
        else OptimiserChain(WeightDecay(0.01 * i), Momentum(0.02 * (i + 1), 0.5))
        if i % 3 == 1
        else Descent(0.05 * (i + 1))
        for i in range(20)
    ]
    model = {f"p{i}": rng.standard_normal(300 + 10 * i).astype(FLOATS[i % 2]) for i in range(20)}
    tree = opt.setup(Descent(), model)
    for i, r in enumerate(rules):
        tree[f"p{i}"] = opt.setup(r, model[f"p{i}"])
    ref_x = {k: v.copy() for k, v in model.items()}
    ref_s = {k: ref_init(rules[i], model[k]) for i, k in enumerate(model)}
    for step in range(4):
        grads = {k: gradient(rng, v.shape, v.dtype) for k, v in model.items()}
        tree, model = opt.update_(tree, model, grads)
        for i, k in enumerate(model):
            ref_s[k], ref_x[k] = ref_update(rules[i], ref_s[k], ref_x[k], grads[k])
            assert_arrays_same(model[k], ref_x[k], f"step {step}: {k} ({rules[i]!r})")


# ---------------------------------------------------------------------------------------
# the kernel's contract


def _entry(rule, x, g, owner=None):
    state = opt.init(rule, x)
    tpl = template(rule, x, state)
    assert tpl is not None, f"{rule!r} should compile to a batch program"
    return (tpl, state, x, g, owner if owner is not None else object())


def test_preparing_writes_nothing_and_run_writes_once():
    rule = OptimiserChain(ClipNorm(1.0), AccumGrad(1), Adam(0.1))
    xs = [np.linspace(-1, 1, 50 + i) for i in range(3)]
    entries = [_entry(rule, x, np.full_like(x, 3.0)) for x in xs]
    before = [(e[2].copy(), [np.array(a) for a in state_arrays(e[1])]) for e in entries]
    batch = K.Batch(entries)
    assert batch.problems == []
    for e, (x0, s0) in zip(entries, before):
        assert_arrays_same(e[2], x0, "x after preparing")
        for a, a0 in zip(state_arrays(e[1]), s0):
            assert_arrays_same(a, a0, "state after preparing")
    batch.run()
    after = [e[2].copy() for e in entries]
    for e, (x0, _) in zip(entries, before):
        assert not np.array_equal(e[2], x0)
        # the step is the reference's: norm of 3*ones clipped to 1, then Adam's first step
        want = ref_update(rule, ref_init(rule, x0), x0, np.full_like(x0, 3.0))[1]
        assert_arrays_same(e[2], want, "x after run")
    batch.run()  # a second run does nothing
    for e, x1 in zip(entries, after):
        assert_arrays_same(e[2], x1, "x after a second run")


def test_entries_that_do_not_fit_are_listed_and_left_alone():
    rule = Momentum(0.1, 0.9)
    ok = _entry(rule, np.ones(4), np.ones(4))
    strided = _entry(rule, np.ones(8)[::2], np.ones(4))
    frozen_x = np.ones(4)
    frozen_x.flags.writeable = False
    readonly = _entry(rule, frozen_x, np.ones(4))
    wrong_dtype = _entry(rule, np.ones(4), np.ones(4, np.float32))
    wrong_shape = _entry(rule, np.ones((3, 4)), np.ones((4, 3)))
    not_array = _entry(rule, np.ones(4), [1.0, 1.0, 1.0, 1.0])
    f_order = _entry(rule, np.ones((3, 4)), np.asfortranarray(np.ones((3, 4))))
    bad_state = (ok[0], None, np.ones(4), np.ones(4), object())
    shared_x = np.ones(4)
    shared = [_entry(rule, shared_x, np.ones(4)), _entry(rule, shared_x, np.ones(4))]
    owner = object()
    same_owner = [
        _entry(rule, np.ones(4), np.ones(4), owner),
        _entry(rule, np.ones(4), np.ones(4), owner),
    ]
    entries = (
        [ok, strided, readonly, wrong_dtype, wrong_shape, not_array, f_order, bad_state]
        + shared
        + same_owner
    )
    expected = {
        1: K.BAD_PARAMETER,
        2: K.BAD_PARAMETER,
        3: K.BAD_GRADIENT,
        4: K.BAD_GRADIENT,
        5: K.BAD_GRADIENT,
        6: K.BAD_GRADIENT,
        7: K.BAD_STATE,
        8: K.SHARED,
        9: K.SHARED,
        10: K.SHARED,
        11: K.SHARED,
    }
    before = [np.array(e[2]) for e in entries]
    batch = K.Batch(entries)
    assert {i: s for i, s, _, _ in batch.problems} == expected
    batch.run()
    assert_arrays_same(entries[0][2], np.full(4, 0.9), "the entry that fits")
    for i in expected:
        assert_arrays_same(np.asarray(entries[i][2]), before[i], f"entry {i}")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_norm_is_listed_with_its_value_and_nothing_runs_for_it(bad):
    rule = OptimiserChain(ClipNorm(1.0), Adam(0.1))
    g = np.ones(5)
    g[2] = bad
    entries = [_entry(rule, np.ones(5), np.ones(5)), _entry(rule, np.ones(5), g)]
    batch = K.Batch(entries)
    [(index, status, norm, p)] = batch.problems
    assert (index, status, p) == (1, K.NONFINITE_NORM, 2.0)
    assert (np.isnan(norm) and np.isnan(bad)) or norm == bad
    batch.run()
    assert_arrays_same(entries[1][2], np.ones(5), "the leaf with the bad norm")
    assert_state_same(entries[1][1], ref_init(rule, np.ones(5)), "its state")
    # throw=False lets it through (lam = 0 for inf: g*0 is NaN where g is inf, else 0)
    lenient = OptimiserChain(ClipNorm(1.0, throw=False), Descent(1.0))
    e = _entry(lenient, np.ones(5), g)
    b2 = K.Batch([e])
    assert b2.problems == []
    b2.run()
    assert np.isnan(e[2][2]) and (np.isnan(e[2]).sum() == (1 if bad == np.inf else 5))


# ---------------------------------------------------------------------------------------
# through update_: the check spans both engines


@pytest.mark.parametrize("bad_leaf", ["batched", "float16", "read-only"])
def test_leading_clipnorm_checks_every_engine_before_writing(bad_leaf):
    rule = OptimiserChain(ClipNorm(1.0), AdamW(0.1))
    model = {
        "batched": np.ones(6),
        "float16": np.ones(6, np.float16),
        "read-only": read_only(np.ones(6)),
        "other": np.ones(6),
    }
    tree = opt.setup(rule, model)
    grads = {k: np.full(6, 2.0) for k in model}
    grads[bad_leaf] = np.array([1.0, np.inf, 0, 0, 0, 0])
    before = {k: np.array(v) for k, v in model.items()}
    states = {k: [np.array(a) for a in state_arrays(tree[k].state)] for k in model}
    with pytest.raises(FloatingPointError, match=bad_leaf):
        opt.update_(tree, model, grads)
    for k in model:
        assert_arrays_same(np.asarray(model[k]), before[k], f"{k} after the error")
        for a, a0 in zip(state_arrays(tree[k].state), states[k]):
            assert_arrays_same(a, a0, f"state of {k} after the error")


def test_non_finite_norm_behind_an_empty_chain_names_the_path_and_p():
    rule = OptimiserChain(OptimiserChain(), ClipNorm(1.0, 3.0), Descent(0.1))
    model = {"a": np.ones(3), "b": np.ones(3)}
    tree = opt.setup(rule, model)
    with pytest.raises(FloatingPointError, match=r"gradient at b has 3-norm nan"):
        opt.update_(tree, model, {"a": np.ones(3), "b": np.array([1.0, np.nan, 0.0])})
    assert_arrays_same(model["a"], np.ones(3), "a: written before the error")


def test_a_state_that_does_not_fit_its_rule_is_an_error_naming_the_path():
    model = {"a": np.ones(3), "b": {"c": np.ones(4)}}
    tree = opt.setup(Adam(), model)
    opt.update_(tree, model, {"a": np.ones(3), "b": {"c": np.ones(4)}})
    tree["b"]["c"].state = (np.zeros(3), np.zeros(3), tree["b"]["c"].state[2])  # wrong size
    a0 = model["a"].copy()
    with pytest.raises(ValueError, match=r"b\.c"):
        opt.update_(tree, model, {"a": np.ones(3), "b": {"c": np.ones(4)}})
    assert_arrays_same(model["a"], a0, "a: written before the error")


@pytest.mark.parametrize("bad", ["list", "short tuple", "None"])
def test_a_state_of_the_wrong_shape_is_refused_not_a_crash(bad):
    model = {"a": np.ones(3), "b": np.ones(4)}
    tree = opt.setup(OptimiserChain(WeightDecay(0.1), Adam()), model)
    good = tree["b"].state
    tree["b"].state = {"list": list(good), "short tuple": good[:1], "None": None}[bad]
    a0 = model["a"].copy()
    with pytest.raises(ValueError, match=r"\bb\b"):
        opt.update_(tree, model, {"a": np.ones(3), "b": np.ones(4)})
    assert_arrays_same(model["a"], a0, "a: written before the error")
    with pytest.raises((TypeError, ValueError)):
        K.Batch([("not a tuple",)])
    with pytest.raises(ValueError):
        K.Batch([(template(Adam(), np.ones(2), opt.init(Adam(), np.ones(2))),)])
