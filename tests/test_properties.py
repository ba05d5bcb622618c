"""Property-based tests: random nested models and random rules.

For any model (dicts, lists, tuples, namedtuples, registered classes, ties, non-trainable
leaves, read-only, strided and Fortran-ordered arrays, float16/32/64) and any rule or chain:
``update`` leaves its inputs untouched, ``update_`` and ``update`` agree bit for bit,
``destructure`` round-trips, and ``save_state``/``load_state`` round-trip.
Complex arrays appear when the drawn rule is defined for complex parameters.
"""

import os
import tempfile
from collections import namedtuple
from dataclasses import dataclass

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import optimisers as opt
from optimisers._leaf import tree_equal
from registry import COMPLEX_OK


@opt.functor(trainable=("w",))
class Layer:
    def __init__(self, w, b, act):
        self.w, self.b, self.act = w, b, act


@opt.functor
@dataclass(frozen=True)
class Frozen:
    a: object
    b: object


Pair = namedtuple("Pair", ["first", "second"])

RULES = [
    opt.Descent(0.1),
    opt.Momentum(0.05),
    opt.Nesterov(0.05),
    opt.Rprop(),
    opt.Adam(0.05),
    opt.RAdam(),
    opt.AdaMax(),
    opt.OAdam(),
    opt.AdaGrad(),
    opt.AdaDelta(),
    opt.AMSGrad(),
    opt.NAdam(),
    opt.AdamW(0.05, lambda_=0.1),
    opt.AdamW(couple=False, lambda_=0.1),
    opt.AdaBelief(),
    opt.Lion(0.01),
    opt.RMSProp(centred=True),
    opt.OptimiserChain(opt.ClipNorm(1.0), opt.Adam(0.1)),
    opt.OptimiserChain(opt.WeightDecay(0.1), opt.ClipNorm(2.0), opt.Momentum()),
    opt.OptimiserChain(opt.AccumGrad(2), opt.SignDecay(0.01), opt.Descent(0.1)),
    opt.OptimiserChain(opt.ClipGrad(0.5), opt.OptimiserChain(opt.WeightDecay(), opt.Lion())),
    opt.MixedPrecision(opt.Adam(0.01)),
    opt.MixedPrecision(np.float64, opt.OptimiserChain(opt.ClipGrad(1.0), opt.Nesterov())),
]

SHAPES = [(), (0,), (1,), (5,), (3, 4), (2, 3, 2)]
REAL = [np.float16, np.float32, np.float64]
COMPLEX = [np.complex64, np.complex128]


def _complex_ok(rule):
    """Whether every rule inside ``rule`` is defined for complex parameters."""
    inner = getattr(rule, "opts", None)
    if inner is not None:
        return all(_complex_ok(r) for r in inner)
    if isinstance(rule, opt.MixedPrecision):
        return _complex_ok(rule.rule)
    return isinstance(rule, COMPLEX_OK)


@st.composite
def models(draw):
    """A random model, and for each trainable array a random gradient (or None)."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    rule = draw(st.sampled_from(RULES))
    dtypes = REAL + (COMPLEX if _complex_ok(rule) else [])
    made = []  # arrays made so far, to tie to

    def array():
        if made and draw(st.integers(0, 5)) == 0:
            return made[draw(st.integers(0, len(made) - 1))]  # a tied weight
        shape = SHAPES[draw(st.integers(0, len(SHAPES) - 1))]
        dtype = dtypes[draw(st.integers(0, len(dtypes) - 1))]
        layout = draw(st.sampled_from(["plain", "readonly", "strided", "fortran"]))
        values = rng.standard_normal(shape)
        if np.dtype(dtype).kind == "c":
            values = values + 1j * rng.standard_normal(shape)
        base = np.array(values, dtype=dtype)  # an array, also for shape ()
        if layout == "strided" and base.ndim >= 1:
            big = np.zeros((2 * base.shape[0],) + base.shape[1:], dtype)
            big[::2] = base
            a = big[::2]
        elif layout == "fortran":
            a = np.asfortranarray(base)
        else:
            a = base
            if layout == "readonly":
                a.flags.writeable = False
        made.append(a)
        return a

    def node(depth):
        kind = draw(st.integers(0, 9 if depth < 3 else 2))
        if kind <= 1:
            return array()
        if kind == 2:
            return draw(st.sampled_from([np.tanh, "relu", 3, 2.5, None, np.arange(3)]))
        n = draw(st.integers(0, 3))
        if kind in (3, 4):
            return {f"k{i}": node(depth + 1) for i in range(n)}
        if kind == 5:
            return [node(depth + 1) for _ in range(n)]
        if kind == 6:
            return tuple(node(depth + 1) for _ in range(n))
        if kind == 7:
            return Pair(node(depth + 1), node(depth + 1))
        if kind == 8:
            return Layer(node(depth + 1), node(depth + 1), np.tanh)
        return Frozen(node(depth + 1), node(depth + 1))

    model = {"root": node(0), "extra": array()}
    grads = {}
    for kp, x in opt.trainables(model, path=True):
        if draw(st.integers(0, 6)) == 0:
            grads[kp] = None
        else:
            grads[kp] = rng.standard_normal(x.shape).astype(
                draw(st.sampled_from([x.dtype, np.float64, np.int64]))
            )
    return model, grads, rule


def _gradient(model, grads, path=opt.KeyPath()):
    """A gradient with the model's structure, from per-path arrays (ties: the first path)."""
    if opt.isnumeric(model):
        return grads.get(path)
    if isinstance(model, dict):
        return {k: _gradient(v, grads, path + (k,)) for k, v in model.items()}
    if isinstance(model, Pair):
        return Pair(*(_gradient(v, grads, path + (f,)) for f, v in zip(Pair._fields, model)))
    if isinstance(model, (list, tuple)):
        return type(model)(_gradient(v, grads, path + (i,)) for i, v in enumerate(model))
    if isinstance(model, Layer):
        return {"w": _gradient(model.w, grads, path + ("w",))}
    if isinstance(model, Frozen):
        return {
            "a": _gradient(model.a, grads, path + ("a",)),
            "b": _gradient(model.b, grads, path + ("b",)),
        }
    return None


def _places(tree):
    """The array at every place of a model or state tree, in walk order: a tied array once
    per place (``trainables`` lists it once), non-trainable places too."""
    out = []

    def walk(x):
        if isinstance(x, np.ndarray):
            out.append(x)
        elif isinstance(x, opt.Leaf):
            walk(x.state)
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v)
        elif isinstance(x, (Layer, Frozen)):
            for v in vars(x).values():
                walk(v)

    walk(tree)
    return out


def _snapshot(tree):
    """Every array reachable in a model or state tree, copied, in walk order."""
    return [a.copy() for a in _places(tree)]


def _same(a, b):
    return len(a) == len(b) and all(tree_equal(x, y) for x, y in zip(a, b))


def _ties(model):
    """Which places of a model hold one array: for each place, the first place holding the
    same object."""
    first = {}
    return [first.setdefault(id(a), i) for i, a in enumerate(_places(model))]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(models())
def test_update_is_pure_and_agrees_with_update_(case):
    model, grads, rule = case
    state = opt.setup(rule, model)
    grad = _gradient(model, grads)
    model_before, state_before = _snapshot(model), _snapshot(state)
    ties = _ties(model)

    state1, model1 = opt.update(state, model, grad)
    state1, model1 = opt.update(state1, model1, grad)  # two steps, from copies

    assert _same(_snapshot(model), model_before)  # inputs untouched
    assert _same(_snapshot(state), state_before)

    state2, model2 = opt.update_(state, model, grad)
    state2, model2 = opt.update_(state2, model2, grad)
    # tied arrays stay tied, and untied ones apart, in both results: the same places hold
    # one array as in the model
    assert _ties(model1) == ties, "update: ties differ from the model's"
    assert _ties(model2) == ties, "update_: ties differ from the model's"
    assert _same(_snapshot(model1), _snapshot(model2))
    assert _same(_snapshot(state1), _snapshot(state2))


@settings(max_examples=60, deadline=None)
@given(models())
def test_destructure_round_trips(case):
    model, _, _ = case
    flat, re = opt.destructure(model)
    assert flat.ndim == 1 and len(flat) == len(re)
    rebuilt = re(flat)
    before = opt.trainables(model)
    after = opt.trainables(rebuilt)
    assert len(before) == len(after)
    for a, b in zip(before, after):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert np.array_equal(a, b)
    flat2, _ = opt.destructure(rebuilt)
    assert flat2.dtype == flat.dtype and np.array_equal(flat2, flat)
    # flat is the arrays in order, promoted to one dtype (an empty bool vector for none)
    if before:
        np.testing.assert_array_equal(
            flat, np.concatenate([a.ravel() for a in before], dtype=flat.dtype)
        )
        assert flat.dtype == np.result_type(*before)
    else:
        assert flat.dtype == np.bool_ and flat.shape == (0,)
    # ... and a copy: it shares memory with no array of the model or of the rebuilt one,
    # and writing into it changes neither
    for a in before + after:
        assert not np.shares_memory(flat, a)
    values = [a.copy() for a in before + after]
    flat[...] = 0
    for a, v in zip(before + after, values):
        assert tree_equal(a, v)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(models())
def test_save_and_load_round_trip_and_training_continues(case):
    model, grads, rule = case
    state = opt.setup(rule, model)
    grad = _gradient(model, grads)
    state, model = opt.update_(state, model, grad)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "state.opt")
        opt.save_state(path, state)
        loaded = opt.load_state(path, types=[Pair])
    assert tree_equal(loaded, state)
    # the loaded tree trains exactly as the original (on copies of the same model)
    s1, m1 = opt.update(state, model, grad)
    s2, m2 = opt.update(loaded, model, grad)
    assert _same(_snapshot(m1), _snapshot(m2))
    assert _same(_snapshot(s1), _snapshot(s2))
