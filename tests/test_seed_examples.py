"""Every worked example of the seed documentation (seeds/004_*.txt, the docs; seeds/000_*.txt,
the README), spelled the Python way.  Julia NamedTuples become namedtuples or dicts,
`nothing` becomes None, `update!` is `update_`.  Where this library departs from the seed
(see API.md, "Departures from the seed"), the test checks the chosen behaviour and says so
in a comment."""

from __future__ import annotations

import math
from collections import namedtuple

import numpy as np
import pytest

import optimisers as opt
from optimisers import KeyPath, Leaf


def ro(a, dtype=None):
    """A read-only array: the Python stand-in for the seed's immutable StaticArray."""
    a = np.array(a, dtype=dtype)
    a.flags.writeable = False
    return a


# ----------------------------------------------------------------------------------------
# README


def test_readme_usage():
    model = {"w": np.ones((3, 2), np.float32), "b": np.zeros(3, np.float32), "act": np.tanh}
    state = opt.setup(opt.Adam(), model)  # just once
    grad = {"w": np.full((3, 2), 0.5, np.float32), "b": np.ones(3, np.float32), "act": None}
    state, model = opt.update(state, model, grad)  # at every step
    # Adam's first step moves each parameter by about eta against the gradient's sign
    np.testing.assert_allclose(model["w"], 1 - 1e-3, rtol=1e-6)
    np.testing.assert_allclose(model["b"], -1e-3, rtol=1e-4)

    vector, re = opt.destructure(model)
    assert vector.shape == (9,)
    model2 = re(2 * vector)
    np.testing.assert_allclose(model2["w"], 2 * model["w"])
    np.testing.assert_allclose(model2["b"], 2 * model["b"])
    assert model2["act"] is np.tanh


# ----------------------------------------------------------------------------------------
# AccumGrad


def test_accumgrad_example():
    m = namedtuple("M", "x y")(np.array([1.0], np.float32), np.array([2.0], np.float32))
    r = opt.OptimiserChain(opt.AccumGrad(2), opt.WeightDecay(0.01), opt.Descent(0.1))
    s = opt.setup(r, m)
    s, m2 = opt.update_(s, m, {"x": np.array([33]), "y": np.array([0])})
    np.testing.assert_array_equal(m2.x, np.array([1.0], np.float32))  # not yet changed
    np.testing.assert_array_equal(m2.y, np.array([2.0], np.float32))
    s, m3 = opt.update_(s, m2, {"x": np.array([0]), "y": np.array([444])})
    # n=2 gradients applied at once: x = 1 - 0.1 * (33/2 + 0.01), y = 2 - 0.1 * (222 + 0.02)
    assert m3.x.dtype == np.float32
    np.testing.assert_allclose(m3.x, [-0.651], rtol=1e-6)
    np.testing.assert_allclose(m3.y, [-20.202002], rtol=1e-6)
    assert m3.x is m.x  # written in place


# ----------------------------------------------------------------------------------------
# OptimiserChain


def test_optimiserchain_example():
    o = opt.OptimiserChain(opt.ClipGrad(1.0), opt.Descent(0.1))
    m = (np.zeros(3),)
    s = opt.setup(o, m)
    assert type(s) is tuple and len(s) == 1
    assert s[0] == Leaf(o, (None, None))
    new = opt.update(s, m, (np.array([0.3, 1, 7]),))[1]  # clips before discounting
    assert type(new) is tuple
    np.testing.assert_allclose(new[0], [-0.03, -0.1, -0.1], rtol=1e-15)
    np.testing.assert_array_equal(m[0], [0, 0, 0])


def test_empty_chain_is_descent_1():
    x = np.array([1.0, 2.0])
    s = opt.setup(opt.OptimiserChain(), x)
    _, x2 = opt.update(s, x, np.array([0.5, 0.5]))
    np.testing.assert_array_equal(x2, [0.5, 1.5])


# ----------------------------------------------------------------------------------------
# setup


def test_setup_example():
    M = namedtuple("M", "x y z")
    m = M(np.random.default_rng(0).random(3), (True, False), np.tanh)
    st = opt.setup(opt.Momentum(), m)  # same field names as m
    assert type(st) is M
    assert st.x == Leaf(opt.Momentum(0.01, 0.9), np.zeros(3))
    # departure: non-trainable places are None, not the seed's ()
    assert st.y == (None, None) and st.z is None


def test_setup_example_custom_struct():
    class Layer:
        def __init__(self, mat, fun):
            self.mat, self.fun = mat, fun

    M = namedtuple("M", "lay vec")
    model = M(Layer(np.array([[1, 2], [3, 4]], np.float32), np.sin), np.array([5, 6], np.float32))
    with _no_warning():
        st = opt.setup(opt.Momentum(), model)  # new class is ignored
    assert st.lay is None
    assert st.vec == Leaf(opt.Momentum(0.01, 0.9), np.zeros(2, np.float32))
    v, re = opt.destructure(model)
    np.testing.assert_array_equal(v, np.array([5, 6], np.float32))
    assert v.dtype == np.float32 and repr(re) == "Restructure(M, ..., 2)"

    opt.functor(Layer)  # annotate this class as containing parameters
    st = opt.setup(opt.Momentum(), model)
    assert st.lay == {
        "mat": Leaf(opt.Momentum(0.01, 0.9), np.zeros((2, 2), np.float32)),
        "fun": None,
    }
    assert st.vec == Leaf(opt.Momentum(0.01, 0.9), np.zeros(2, np.float32))
    v, re = opt.destructure(model)
    # departure: C order (row-major), not Julia's column-major [1, 3, 2, 4, 5, 6]
    np.testing.assert_array_equal(v, [1, 2, 3, 4, 5, 6])
    assert repr(re) == "Restructure(M, ..., 6)"


class _no_warning:
    def __enter__(self):
        import warnings

        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)


# ----------------------------------------------------------------------------------------
# update


def test_update_example():
    M = namedtuple("M", "x y")
    m = M(np.array([1, 2, 3], np.float32), np.tanh)
    t = opt.setup(opt.Descent(0.1), m)
    assert t == M(Leaf(opt.Descent(0.1), None), None)
    g = M(np.array([1, 1, 1]), None)  # fake gradient
    t2, m2 = opt.update(t, m, g)
    assert t2 == M(Leaf(opt.Descent(0.1), None), None)
    assert type(m2) is M and m2.y is np.tanh and m2.x.dtype == np.float32
    np.testing.assert_allclose(m2.x, np.array([0.9, 1.9, 2.9], np.float32), rtol=1e-7)
    np.testing.assert_array_equal(m.x, [1, 2, 3])


def test_update_in_place_example():
    M = namedtuple("M", "x y")
    m = M(np.array([1.0, 2.0], np.float32), ro([4.0, 5.0], np.float32))  # partly mutable
    t = opt.setup(opt.Momentum(1 / 30, 0.9), m)  # tree of states
    assert t.x == Leaf(opt.Momentum(1 / 30, 0.9), np.zeros(2, np.float32))
    assert t.y == Leaf(opt.Momentum(1 / 30, 0.9), np.zeros(2, np.float32))
    # the structural gradient of sum(abs2.(m.x .+ m.y))
    s = m.x + m.y
    g = M(2 * s, 2 * s)
    np.testing.assert_array_equal(g.x, [10.0, 14.0])
    t2, m2 = opt.update_(t, m, g)
    # after update or update_, this is the new model
    np.testing.assert_allclose(m2.x, np.array([0.6666666, 1.5333333], np.float32), rtol=1e-6)
    np.testing.assert_allclose(m2.y, np.array([3.6666667, 4.5333333], np.float32), rtol=1e-6)
    assert m2.x.dtype == np.float32 and m2.y.dtype == np.float32
    assert m2.x is m.x  # update_ re-used this array
    # the original: x mutated, the read-only y not
    np.testing.assert_allclose(m.x, np.array([0.6666666, 1.5333333], np.float32), rtol=1e-6)
    np.testing.assert_array_equal(m.y, [4.0, 5.0])
    assert t2 is t  # the state tree is mutated
    np.testing.assert_allclose(t.x.state, [10 / 30, 14 / 30], rtol=1e-6)


# ----------------------------------------------------------------------------------------
# adjust / adjust_


def test_adjust_in_place_example():
    m = {"vec": np.random.default_rng(1).random(2).astype(np.float32), "fun": np.sin}
    st = opt.setup(opt.Nesterov(), m)  # stored momentum is initialised to zero
    assert st == {"vec": Leaf(opt.Nesterov(0.001, 0.9), np.zeros(2, np.float32)), "fun": None}
    st, m = opt.update(st, m, {"vec": np.array([16, 88]), "fun": None})  # fake gradient
    np.testing.assert_allclose(st["vec"].state, np.array([-0.016, -0.088], np.float32), rtol=1e-6)
    state = st["vec"].state
    saved = state.copy()
    assert opt.adjust_(st, 0.123) is None  # change learning rate, momentum untouched
    assert st["vec"].rule == opt.Nesterov(0.123, 0.9)
    assert st["vec"].state is state
    np.testing.assert_array_equal(state, saved)
    assert st["fun"] is None


def test_adjust_keywords_example():
    m = {"vec": np.zeros(2, np.float32), "fun": np.sin}
    st = opt.setup(opt.Nesterov(0.123), m)
    st2 = opt.setup(opt.OptimiserChain(opt.ClipGrad(), opt.Adam()), m)
    assert st2["vec"].rule == opt.OptimiserChain(
        opt.ClipGrad(10.0), opt.Adam(0.001, (0.9, 0.999), 1e-8)
    )
    st3 = opt.adjust(st2, beta=(0.777, 0.909), delta=11.1)  # delta acts on ClipGrad
    assert st3["vec"].rule == opt.OptimiserChain(
        opt.ClipGrad(11.1), opt.Adam(0.001, (0.777, 0.909), 1e-8)
    )
    none, adam = st3["vec"].state
    assert none is None
    np.testing.assert_array_equal(adam.m, np.zeros(2, np.float32))
    np.testing.assert_array_equal(adam.v, np.zeros(2, np.float32))
    assert tuple(map(float, adam.beta_t)) == pytest.approx((0.9, 0.999))  # state kept
    assert st3["fun"] is None
    assert st2["vec"].rule == opt.OptimiserChain(opt.ClipGrad(), opt.Adam())  # a copy
    # departure: the seed silently ignores a name no rule has; here it is a TypeError
    # listing the names that exist
    with pytest.raises(TypeError, match=r"eta.*rho"):
        opt.adjust(st, beta="no such field")
    assert st["vec"].rule == opt.Nesterov(0.123)


def test_adjust_rule_example():
    assert opt.adjust(opt.Adam(), 0.5) == opt.Adam(0.5)
    assert opt.adjust(opt.Adam(), eta=0.5, epsilon=1e-6) == opt.Adam(0.5, epsilon=1e-6)
    # fieldnames(Adam) == (:eta, :beta, :epsilon)
    assert opt.Adam()._fields() == ("eta", "beta", "epsilon")


# ----------------------------------------------------------------------------------------
# freeze_ / thaw_


def test_freeze_example():
    m = {"x": (np.array([1.0]), 2.0), "y": np.array([3.0])}
    s = opt.setup(opt.Momentum(), m)
    opt.freeze_(s["x"])
    s, m = opt.update_(
        s, m, {"x": (np.array([math.pi]), 10 * math.pi), "y": np.array([100 * math.pi])}
    )  # with fake gradient
    np.testing.assert_array_equal(m["x"][0], [1.0])
    assert m["x"][1] == 2.0
    np.testing.assert_allclose(m["y"], [-0.14159265358979312], rtol=1e-14)
    assert s["x"][0] == Leaf(opt.Momentum(0.01, 0.9), np.array([0.0]), frozen=True)
    assert s["x"][1] is None  # departure: None, not ()
    np.testing.assert_allclose(s["y"].state, [math.pi], rtol=1e-14)
    assert not s["y"].frozen
    opt.thaw_(s)
    assert s["x"] == (Leaf(opt.Momentum(0.01, 0.9), np.array([0.0])), None)


def test_freeze_spec_example_with_adjust():
    # Optimisers.jl's test: freeze st.y, adjust, thaw
    m = {"x": np.array([1.0, 2.0]), "y": (np.array([3.0, 4.0]), np.sin)}
    st = opt.setup(opt.Descent(0.1), m)
    opt.freeze_(st["y"])
    g = {"x": np.array([1.0, 10.0]), "y": (np.array([100.0, 1000.0]), None)}
    st, m = opt.update_(st, m, g)
    np.testing.assert_allclose(m["x"], [0.9, 1.0])
    np.testing.assert_array_equal(m["y"][0], [3.0, 4.0])
    st = opt.adjust(st, 0.2)
    assert st["y"][0].frozen  # adjust keeps the flag
    opt.thaw_(st)
    st, m = opt.update_(st, m, g)
    np.testing.assert_allclose(m["y"][0], [-17.0, -196.0])
    np.testing.assert_allclose(m["x"], [0.7, -1.0])


# ----------------------------------------------------------------------------------------
# trainable / trainables


def test_trainables_examples():
    @opt.functor(trainable=("w",))  # only w is trainable in this example
    class MyLayer:
        def __init__(self, w, b):
            self.w, self.b = w, b

    x = MyLayer(np.array([1.0, 2.0, 3.0]), np.array([4.0, 5.0, 6.0]))
    t = opt.trainables(x)
    assert len(t) == 1 and t[0] is x.w
    x = MyLayer({"a": np.array([1.0, 2.0]), "b": np.array([3.0])}, np.array([4.0, 5.0, 6.0]))
    t = opt.trainables(x)  # collects nested parameters
    assert len(t) == 2 and t[0] is x.w["a"] and t[1] is x.w["b"]
    assert opt.trainable(x) == {"w": x.w}


def test_trainables_path_example():
    x = {
        "a": np.array([1.0, 2.0]),
        "b": ({"c": np.array([3.0, 4.0]), "d": 5.0}, np.array([6.0, 7.0])),
    }
    lines = [f"{kp!r} => {y.tolist()}" for kp, y in opt.trainables(x, path=True)]
    # departure: 0-based positions (the seed prints KeyPath(:b, 1, "c") and KeyPath(:b, 2))
    assert lines == [
        "KeyPath('a') => [1.0, 2.0]",
        "KeyPath('b', 0, 'c') => [3.0, 4.0]",
        "KeyPath('b', 1) => [6.0, 7.0]",
    ]
    got = opt.getkeypath(x, KeyPath("b", 0, "c"))
    assert got is x["b"][0]["c"]
    np.testing.assert_array_equal(got, [3.0, 4.0])


# ----------------------------------------------------------------------------------------
# destructure / Restructure


def test_destructure_example():
    v, re = opt.destructure({"x": np.array([1.0, 2.0]), "y": (np.sin, np.array([3.0 + 4.0j]))})
    assert v.dtype == np.complex128
    np.testing.assert_array_equal(v, [1 + 0j, 2 + 0j, 3 + 4j])
    assert repr(re) == "Restructure(dict, ..., 3)"
    m = re(np.array([3, 5, 7 + 11j]))
    assert m["x"].dtype == np.float64
    np.testing.assert_array_equal(m["x"], [3.0, 5.0])
    assert m["y"][0] is np.sin
    assert m["y"][1].dtype == np.complex128
    np.testing.assert_array_equal(m["y"][1], [7 + 11j])


def test_restructure_dense_example():
    @opt.functor(fields=("weight", "bias"))
    class Dense:
        def __init__(self, weight, bias, act):
            self.weight, self.bias, self.act = weight, bias, act

        def __call__(self, x):
            return self.act(self.weight @ x + self.bias)

    def sigmoid(z):
        return 1 / (1 + np.exp(-z))

    # departure: integer arrays are not trainable (the seed's docstring shows Int arrays
    # flattened; Optimisers.jl's own isnumeric excludes them too)
    _, re = opt.destructure(Dense(np.array([[1, 2], [3, 4]]), np.array([0, 0]), sigmoid))
    assert len(re) == 0

    v, re = opt.destructure(Dense(np.array([[1.0, 2.0], [3.0, 4.0]]), np.zeros(2), sigmoid))
    np.testing.assert_array_equal(v, [1, 2, 3, 4, 0, 0])  # C order
    assert repr(re) == "Restructure(Dense, ..., 6)"
    m = re(np.arange(-4.0, 2.0))
    assert type(m) is Dense and m.act is sigmoid
    np.testing.assert_array_equal(m.weight, [[-4, -3], [-2, -1]])
    np.testing.assert_array_equal(m.bias, [0, 1])
    x = np.array([0.2, 0.3])
    np.testing.assert_allclose(m(x), re(x, np.arange(-4.0, 2.0)), rtol=1e-15)


# ----------------------------------------------------------------------------------------
# init / apply_


def test_init_and_apply_examples():
    assert opt.init(opt.Descent(0.1), np.array([1, 2, 3], np.float32)) is None
    state, d = opt.apply_(
        opt.Descent(0.1), None, np.array([1, 2, 3], np.float32), np.array([4, 5, 6])
    )
    assert state is None
    # departure: apply_ returns the materialised step, not a lazy Broadcasted
    np.testing.assert_allclose(d, [0.4, 0.5, 0.6], rtol=1e-6)
    assert opt.init(opt.Descent(), np.array([1, 2, 3], np.float32)) is None
    s = opt.init(opt.Momentum(), np.array([1.0, 2.0]))
    assert s.dtype == np.float64
    np.testing.assert_array_equal(s, [0.0, 0.0])


# ----------------------------------------------------------------------------------------
# KeyPath (Functors docs re-exported by the seed)


def test_keypath_examples():
    kp = KeyPath("b", 3)
    assert repr(kp) == "KeyPath('b', 3)"
    assert KeyPath("a", kp, "c", 4) == KeyPath("a", "b", 3, "c", 4)  # mixing keys and paths

    class T:
        def __init__(self, a, b):
            self.a, self.b = a, b

        @property
        def ab(self):
            return "ab"

    x = T(3, {"c": 4, "d": 5})
    assert opt.getkeypath(x, KeyPath("ab")) == "ab"  # equivalent to x.ab
    assert opt.getkeypath(x, KeyPath("b", "c")) == 4  # equivalent to x.b["c"]


def test_haskeypath_getkeypath_examples():
    x = {"a": 3, "b": {"c": 4, "d": [5, 6, 7]}}
    assert opt.haskeypath(x, KeyPath("a"))
    # departure: 0-based positions (the seed's KeyPath(:b, "d", 1) / (:b, "d", 4))
    assert opt.haskeypath(x, KeyPath("b", "d", 0))
    assert not opt.haskeypath(x, KeyPath("b", "d", 3))
    assert opt.getkeypath(x, KeyPath("b", "d", 1)) == 6  # the seed's index 2
