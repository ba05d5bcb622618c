"""The tree machinery end to end: setup, update/update_, validation before any write,
adjust/adjust_, freeze_/thaw_, isnumeric/maywrite.

Every expected number is computed here from the rule's formula (Descent: x -= eta*g;
Momentum: v = rho*v + eta*g, x -= v), never read back from the library."""

from __future__ import annotations

import collections
import dataclasses
import pickle
import re
import warnings
from typing import NamedTuple

import numpy as np
import pytest

import optimisers as opt
from optimisers import Leaf

# ----------------------------------------------------------------------------------------
# model classes used below


class Pair(NamedTuple):
    x: object
    y: object


class GradWB(NamedTuple):
    w: object
    b: object


@opt.functor
class Affine:
    """Registered with every attribute a child."""

    def __init__(self, w, b):
        self.w, self.b = w, b


@opt.functor(fields=("w", "b"), trainable=("w",))
class Partial:
    """Children w and b, only w trained; ``name`` and ``extra`` are not children."""

    def __init__(self, w, b, name="p"):
        self.w, self.b, self.name = w, b, name
        self.extra = np.ones(2)


class ThirdParty:
    """A class we pretend not to own: registered by a call, not a decorator."""

    def __init__(self, a, f):
        self.a, self.f = a, f


assert opt.functor(ThirdParty, fields=("a",)) is ThirdParty

INIT_CALLS = collections.Counter()


@opt.functor
@dataclasses.dataclass(frozen=True)
class FrozenDC:
    w: np.ndarray
    b: np.ndarray

    def __post_init__(self):
        INIT_CALLS["FrozenDC"] += 1


@opt.functor
class Slotted:
    __slots__ = ("w", "b")

    def __init__(self, w, b):
        INIT_CALLS["Slotted"] += 1
        self.w, self.b = w, b


@opt.functor
class ImmutableSlotted:
    """A __slots__ class whose __setattr__ refuses every assignment after __init__."""

    __slots__ = ("w", "b")

    def __init__(self, w, b):
        INIT_CALLS["ImmutableSlotted"] += 1
        object.__setattr__(self, "w", w)
        object.__setattr__(self, "b", b)

    def __setattr__(self, k, v):
        raise AttributeError("ImmutableSlotted is immutable")


@opt.functor
@dataclasses.dataclass(frozen=True, slots=True)
class FrozenSlotsDC:
    w: np.ndarray
    b: np.ndarray


def ro(a):
    """A read-only copy of ``a``."""
    a = np.array(a)
    a.flags.writeable = False
    return a


def momentum_ref(x, v, g, eta=0.01, rho=0.9):
    v = rho * v + eta * g
    return x - v, v


# ----------------------------------------------------------------------------------------
# snapshots: every array and scalar reachable from a model and a state tree


def _snap(x, out, path=""):
    if isinstance(x, np.ndarray):
        out.append((path, "array", x.dtype.str, x.shape, x.tobytes(order="A"), id(x)))
    elif isinstance(x, Leaf):
        out.append((path, "leaf", id(x), x.rule, x.frozen))
        _snap(x.state, out, path + ".state")
    elif isinstance(x, dict):
        for k, v in x.items():
            _snap(v, out, f"{path}[{k!r}]")
    elif isinstance(x, (list, tuple)):
        out.append((path, type(x).__name__, len(x)))
        for i, v in enumerate(x):
            _snap(v, out, f"{path}[{i}]")
    elif isinstance(x, (np.generic, int, float, complex, str, bool)) or x is None:
        out.append((path, "scalar", type(x).__name__, repr(x)))
    elif hasattr(x, "__dict__") or hasattr(type(x), "__slots__"):
        names = list(getattr(x, "__dict__", {})) or list(type(x).__slots__)
        for k in names:
            _snap(getattr(x, k), out, f"{path}.{k}")
    else:
        out.append((path, "other", id(x)))
    return out


def snapshot(*objs):
    return [_snap(o, []) for o in objs]


# ----------------------------------------------------------------------------------------
# setup


def test_setup_dict_shapes_and_none_for_non_trainables():
    m = {
        "x": np.zeros(3),
        "y": (True, False),
        "z": np.tanh,
        "s": "name",
        "n": None,
        "i": np.arange(3),
        "bl": np.array([True, False]),
        "f": 1.5,
    }
    st = opt.setup(opt.Momentum(), m)
    assert type(st) is dict and list(st) == list(m)
    assert isinstance(st["x"], Leaf)
    assert st["x"].rule == opt.Momentum()
    assert st["x"].state.shape == (3,) and not st["x"].state.any()
    assert st["x"].frozen is False
    assert st["y"] == (None, None) and type(st["y"]) is tuple
    for k in ("z", "s", "n", "i", "bl", "f"):
        assert st[k] is None, k


def test_setup_list_tuple_namedtuple_keep_their_types():
    a, b = np.ones(2), np.ones(3, np.float32)
    st = opt.setup(opt.Descent(), [a, (b, 3)])
    assert type(st) is list and type(st[1]) is tuple
    assert isinstance(st[0], Leaf) and isinstance(st[1][0], Leaf) and st[1][1] is None
    nt = opt.setup(opt.Descent(), Pair(a, np.sin))
    assert type(nt) is Pair
    assert isinstance(nt.x, Leaf) and nt.y is None


def test_setup_registered_classes():
    w, b = np.ones((2, 2)), np.zeros(2)
    st = opt.setup(opt.Momentum(), Affine(w, b))
    assert type(st) is dict and list(st) == ["w", "b"]
    assert st["w"].state.shape == (2, 2) and st["b"].state.shape == (2,)

    st = opt.setup(opt.Momentum(), Partial(w, b))
    assert list(st) == ["w", "b"]  # only the listed fields, not name/extra
    assert isinstance(st["w"], Leaf) and st["b"] is None

    st = opt.setup(opt.Momentum(), ThirdParty(np.ones(2), np.sin))
    assert list(st) == ["a"] and isinstance(st["a"], Leaf)

    st = opt.setup(opt.Momentum(), FrozenDC(w, b))
    assert list(st) == ["w", "b"] and all(isinstance(v, Leaf) for v in st.values())

    st = opt.setup(opt.Momentum(), Slotted(w, b))
    assert list(st) == ["w", "b"] and all(isinstance(v, Leaf) for v in st.values())


def test_unregistered_class_is_a_leaf():
    class Plain:
        def __init__(self):
            self.w = np.ones(2)

    with pytest.warns(UserWarning, match="no trainable parameters"):
        st = opt.setup(opt.Descent(), {"p": Plain()})
    assert st == {"p": None}


def test_functor_validates_its_arguments():
    with pytest.raises(ValueError, match="subset"):
        opt.functor(fields=("a",), trainable=("b",))(type("C", (), {}))
    with pytest.raises(TypeError):
        opt.functor(42)


def test_setup_bare_array_gives_bare_leaf():
    x = np.ones(3, np.float32)
    leaf = opt.setup(opt.Adam(), x)
    assert isinstance(leaf, Leaf)
    assert leaf.state.m.dtype == np.float32 and leaf.state.m.shape == (3,)


def test_setup_warns_without_trainable_parameters():
    for m in ({"f": np.sin, "i": np.arange(3)}, [1.0, "a", None], np.arange(4)):
        with pytest.warns(UserWarning, match="no trainable parameters"):
            opt.setup(opt.Adam(), m)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.setup(opt.Adam(), {"x": np.ones(1), "f": np.sin})


def test_setup_tied_arrays_share_one_leaf_and_rule():
    w = np.ones(3)
    inner = {"w": w}
    m = {"a": w, "b": [w, np.ones(3)], "c": inner, "d": inner}
    rule = opt.Adam()
    st = opt.setup(rule, m)
    assert st["a"] is st["b"][0] is st["c"]["w"] is st["d"]["w"]
    assert st["b"][1] is not st["a"]
    assert st["a"].rule is rule and st["b"][1].rule is rule


def test_setup_rejects_bad_arguments():
    with pytest.raises(TypeError):
        opt.setup({"x": np.ones(2)}, opt.Adam())
    # departure: complex parameters with rules that order values are refused at setup
    with pytest.raises(TypeError, match=re.escape("l.1")):
        opt.setup(opt.Rprop(), {"l": [np.ones(2), np.ones(2, complex)]})


def test_isnumeric_and_maywrite():
    assert opt.isnumeric(np.ones(2)) and opt.isnumeric(np.ones(2, np.complex64))
    assert opt.isnumeric(np.ones((), np.float16))
    for x in (np.arange(3), np.array([True]), 1.0, np.float64(1.0), [1.0], None, "s"):
        assert not opt.isnumeric(x), x
    a = np.ones(4)
    assert opt.maywrite(a) and opt.maywrite(a[::2])
    assert not opt.maywrite(ro(a)) and not opt.maywrite([1.0]) and not opt.maywrite(1.0)


# ----------------------------------------------------------------------------------------
# update vs update_


def _model():
    return {
        "a": np.array([1.0, 2.0]),
        "b": [np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)],
        "f": np.tanh,
    }


def _grad():
    return {"a": np.array([10.0, 20.0]), "b": [np.ones((2, 2), np.float32)], "f": None}


def test_update_leaves_its_inputs_untouched():
    m = _model()
    st = opt.setup(opt.Momentum(), m)
    st, m = opt.update_(st, m, _grad())  # non-zero state first
    g = _grad()
    before = snapshot(m, st, g)
    leaf_a, state_a, arr_a = st["a"], st["a"].state, m["a"]
    st2, m2 = opt.update(st, m, g)
    assert snapshot(m, st, g) == before
    assert st["a"] is leaf_a and st["a"].state is state_a and m["a"] is arr_a
    # the outputs are new objects with the step applied
    assert st2 is not st and st2["a"] is not leaf_a and st2["a"].state is not state_a
    assert m2 is not m and m2["a"] is not arr_a and m2["b"][0] is not m["b"][0]
    assert m2["f"] is np.tanh
    x, v = momentum_ref(m["a"], st["a"].state, g["a"])
    np.testing.assert_allclose(m2["a"], x, rtol=1e-15)
    np.testing.assert_allclose(st2["a"].state, v, rtol=1e-15)
    assert m2["b"][0].dtype == np.float32


def test_update_in_place_returns_same_objects():
    m = _model()
    a, b0 = m["a"], m["b"][0]
    st = opt.setup(opt.Momentum(), m)
    leaf = st["a"]
    st2, m2 = opt.update_(st, m, _grad())
    assert st2 is st and m2 is m and m2["a"] is a and m2["b"][0] is b0
    assert st["a"] is leaf
    x, v = momentum_ref(np.array([1.0, 2.0]), np.zeros(2), _grad()["a"])
    np.testing.assert_allclose(a, x, rtol=1e-15)
    np.testing.assert_allclose(leaf.state, v, rtol=1e-15)
    np.testing.assert_allclose(b0, np.array([[1, 2], [3, 4]], np.float32) - 0.01, rtol=1e-6)


def test_update_in_place_does_not_write_the_gradient():
    m = {"a": np.ones(3), "b": np.ones(3)}
    st = opt.setup(opt.OptimiserChain(opt.ClipNorm(1.0), opt.WeightDecay(0.1), opt.Adam()), m)
    g = {"a": np.array([3.0, 4.0, 0.0]), "b": np.array([1.0, 1.0, 1.0])}
    before = snapshot(g)
    opt.update_(st, m, g)
    assert snapshot(g) == before


@pytest.mark.parametrize("inplace", [True, False])
def test_tied_arrays_sum_gradients_once_and_stay_tied(inplace):
    w = np.array([1.0, 2.0, 3.0])
    inner = [w]
    m = {"a": w, "b": inner, "c": (w, inner)}
    st = opt.setup(opt.Adam(0.1), m)
    g1, g2, g3 = np.array([1.0, 0, 0]), np.array([0, 2.0, 0]), np.array([0, 0, 4.0])
    fn = opt.update_ if inplace else opt.update
    st2, m2 = fn(st, m, {"a": g1, "b": [g2], "c": (g3, None)})
    assert m2["a"] is m2["b"][0] is m2["c"][0] and m2["b"] is m2["c"][1]
    assert st2["a"] is st2["b"][0] is st2["c"][0]
    if inplace:
        assert m2["a"] is w
    else:
        assert m2["a"] is not w and np.array_equal(w, [1.0, 2.0, 3.0])
    s = st2["a"].state
    # applied exactly once: beta_t advanced by one step, m = (1 - beta1) * (g1 + g2 + g3)
    assert tuple(float(b) for b in s.beta_t) == pytest.approx((0.81, 0.998001))
    np.testing.assert_allclose(s.m, 0.1 * (g1 + g2 + g3), rtol=1e-12)
    # Adam's first step moves each coordinate by about eta (sign of the summed gradient)
    np.testing.assert_allclose(m2["a"], [0.9, 1.9, 2.9], rtol=1e-6)


@pytest.mark.parametrize("inplace", [True, False])
def test_tied_read_only_arrays_get_one_new_array(inplace):
    w = ro([1.0, 2.0])
    m = {"a": w, "b": [w]}
    st = opt.setup(opt.Descent(0.5), m)
    fn = opt.update_ if inplace else opt.update
    _, m2 = fn(st, m, {"a": np.array([1.0, 1.0]), "b": [np.array([1.0, 3.0])]})
    assert m2["a"] is m2["b"][0] and m2["a"] is not w
    np.testing.assert_array_equal(m2["a"], [0.0, 0.0])
    np.testing.assert_array_equal(w, [1.0, 2.0])
    assert m["a"] is w and m["b"][0] is w


@pytest.mark.parametrize("inplace", [True, False])
def test_none_gradient_skips_but_zero_is_a_step(inplace):
    fn = opt.update_ if inplace else opt.update
    m = {"x": np.ones(2), "y": np.ones(2)}
    st = opt.setup(opt.Adam(), m)
    st, m = fn(st, m, {"x": None, "y": np.zeros(2)})
    assert tuple(map(float, st["x"].state.beta_t)) == (0.9, 0.999)  # not advanced
    assert tuple(map(float, st["y"].state.beta_t)) == pytest.approx((0.81, 0.998001))
    st, m = fn(st, m, {"y": None})  # a dict may leave keys out
    assert tuple(map(float, st["x"].state.beta_t)) == (0.9, 0.999)
    assert tuple(map(float, st["y"].state.beta_t)) == pytest.approx((0.81, 0.998001))
    st, m = fn(st, m, None)  # nothing at all
    assert tuple(map(float, st["y"].state.beta_t)) == pytest.approx((0.81, 0.998001))

    x = np.ones(2)
    st = opt.setup(opt.OptimiserChain(opt.AccumGrad(3), opt.Descent(0.1)), x)
    st, x = fn(st, x, None)
    assert st.state[0].counter == 1
    st, x = fn(st, x, np.zeros(2))
    assert st.state[0].counter == 2
    np.testing.assert_array_equal(x, [1.0, 1.0])


def test_dict_gradient_may_leave_keys_out():
    m = {"a": np.ones(2), "b": np.ones(2), "c": {"d": np.ones(2)}}
    st = opt.setup(opt.Descent(0.5), m)
    st, m = opt.update_(st, m, {"b": np.array([2.0, 4.0])})
    np.testing.assert_array_equal(m["a"], [1, 1])
    np.testing.assert_array_equal(m["b"], [0, -1])
    np.testing.assert_array_equal(m["c"]["d"], [1, 1])


@pytest.mark.parametrize("kind", ["dict", "instance", "namedtuple"])
@pytest.mark.parametrize("inplace", [True, False])
def test_registered_object_gradients(kind, inplace):
    m = Affine(np.array([1.0, 2.0]), np.array([3.0]))
    st = opt.setup(opt.Descent(0.5), m)
    gw = np.array([2.0, 2.0])
    g = {
        "dict": {"w": gw, "extra": 123},
        "instance": Affine(gw, None),
        "namedtuple": GradWB(gw, None),
    }[kind]
    fn = opt.update_ if inplace else opt.update
    st, m2 = fn(st, m, g)
    assert type(m2) is Affine
    np.testing.assert_array_equal(m2.w, [0.0, 1.0])
    np.testing.assert_array_equal(m2.b, [3.0])
    assert (m2 is m) == inplace


def test_registered_object_plain_tuple_gradient_is_refused():
    m = Affine(np.array([1.0, 2.0]), np.array([3.0]))
    st = opt.setup(opt.Descent(0.5), m)
    with pytest.raises(TypeError, match="tuple"):
        opt.update_(st, m, (np.ones(2), np.ones(1)))
    np.testing.assert_array_equal(m.w, [1.0, 2.0])


def test_gradients_for_non_trainables_are_ignored():
    m = {
        "x": np.ones(2),
        "n": 3,
        "f": np.tanh,
        "i": np.arange(3),
        "s": "str",
        "p": Partial(np.ones(2), np.ones(2)),
    }
    st = opt.setup(opt.Descent(0.5), m)
    g = {
        "x": np.ones(2),
        "n": 100.0,
        "f": np.ones(5),
        "i": np.ones(3),
        "s": "garbage",
        "p": {"w": np.ones(2), "b": np.ones(2)},
    }
    st, m2 = opt.update_(st, m, g)
    np.testing.assert_array_equal(m2["x"], [0.5, 0.5])
    np.testing.assert_array_equal(m2["i"], [0, 1, 2])
    np.testing.assert_array_equal(m2["p"].w, [0.5, 0.5])
    np.testing.assert_array_equal(m2["p"].b, [1.0, 1.0])  # not trainable
    assert m2["n"] == 3 and m2["f"] is np.tanh


def test_more_gradients_are_checked():
    m = {"x": np.ones(2)}
    st = opt.setup(opt.Descent(), m)
    with pytest.raises(ValueError, match="shape"):
        opt.update_(st, m, {"x": np.ones(2)}, {"x": np.ones(3)})
    np.testing.assert_array_equal(m["x"], [1.0, 1.0])


# ----------------------------------------------------------------------------------------
# array layouts


def test_strided_view_is_written_through_to_its_base():
    base = np.arange(12.0).reshape(3, 4)
    view = base[:, ::2]
    assert not view.flags.c_contiguous and view.flags.writeable
    m = {"v": view}
    st = opt.setup(opt.Descent(1.0), m)
    st, m2 = opt.update_(st, m, {"v": np.ones((3, 2))})
    assert m2 is m and m2["v"] is view
    np.testing.assert_array_equal(base[:, ::2], np.arange(12.0).reshape(3, 4)[:, ::2] - 1)
    np.testing.assert_array_equal(base[:, 1::2], np.arange(12.0).reshape(3, 4)[:, 1::2])


def test_strided_view_with_update_leaves_the_base_alone():
    base = np.arange(12.0).reshape(3, 4)
    view = base[:, ::2]
    st = opt.setup(opt.Descent(1.0), view)
    _, new = opt.update(st, view, np.ones((3, 2)))
    np.testing.assert_array_equal(base, np.arange(12.0).reshape(3, 4))
    np.testing.assert_array_equal(new, np.arange(12.0).reshape(3, 4)[:, ::2] - 1)


def test_fortran_ordered_array_in_place():
    f = np.asfortranarray(np.arange(6.0).reshape(2, 3))
    m = [f]
    st = opt.setup(opt.Momentum(0.1, 0.0), m)
    g = np.asfortranarray(np.arange(6.0).reshape(2, 3))
    st, m2 = opt.update_(st, m, [g])
    assert m2[0] is f and f.flags.f_contiguous
    np.testing.assert_allclose(f, np.arange(6.0).reshape(2, 3) * 0.9, rtol=1e-15)


def test_zero_d_arrays():
    x = np.array(2.0)
    st = opt.setup(opt.Descent(0.5), x)
    st, x2 = opt.update_(st, x, 1.0)
    assert x2 is x and float(x) == 1.5
    r = ro(2.0)
    st = opt.setup(opt.Momentum(0.5, 0.0), {"r": r})
    st, m2 = opt.update_(st, {"r": r}, {"r": np.array(1.0)})
    assert m2["r"].shape == () and float(m2["r"]) == 1.5 and float(r) == 2.0


def test_zero_size_arrays():
    z = np.zeros((0, 3))
    st = opt.setup(opt.OptimiserChain(opt.ClipNorm(1.0), opt.Adam()), {"z": z, "x": np.ones(1)})
    st, m2 = opt.update_(st, {"z": z, "x": np.ones(1)}, {"z": np.zeros((0, 3)), "x": np.ones(1)})
    assert m2["z"] is z and m2["z"].shape == (0, 3)


def test_read_only_arrays_get_new_arrays_and_containers_are_rebuilt():
    r = ro([1.0, 2.0])
    rw = np.array([1.0, 2.0])
    inner = {"w": rw}
    m = {"ro": [r, 7], "rw": inner}
    st = opt.setup(opt.Descent(0.5), m)
    g = {"ro": [np.ones(2), None], "rw": {"w": np.ones(2)}}
    st, m2 = opt.update_(st, m, g)
    assert m2 is not m and m2["ro"] is not m["ro"] and m2["ro"][1] == 7
    assert m2["rw"] is inner and m2["rw"]["w"] is rw  # untouched branch kept
    np.testing.assert_array_equal(m2["ro"][0], [0.5, 1.5])
    assert m2["ro"][0].flags.writeable
    np.testing.assert_array_equal(r, [1.0, 2.0])
    assert m["ro"][0] is r  # the old model not mutated
    np.testing.assert_array_equal(rw, [0.5, 1.5])  # but rw was written in place


def test_broadcast_view_is_read_only_and_replaced():
    b = np.broadcast_to(np.array([1.0, 2.0]), (2, 2))
    st = opt.setup(opt.Descent(1.0), b)
    st, b2 = opt.update_(st, b, np.ones((2, 2)))
    assert b2 is not b and b2.flags.c_contiguous
    np.testing.assert_array_equal(b2, [[0, 1], [0, 1]])


@pytest.mark.parametrize("cls", [FrozenDC, Slotted, ImmutableSlotted, FrozenSlotsDC])
@pytest.mark.parametrize("inplace", [True, False])
def test_frozen_and_slotted_objects_rebuilt_without_init(cls, inplace):
    m = cls(ro([1.0, 2.0]), np.array([5.0]))
    st = opt.setup(opt.Descent(0.5), m)
    calls = INIT_CALLS.copy()
    fn = opt.update_ if inplace else opt.update
    st, m2 = fn(st, m, {"w": np.ones(2), "b": np.ones(1)})
    assert calls == INIT_CALLS
    assert type(m2) is cls and m2 is not m
    np.testing.assert_array_equal(m2.w, [0.5, 1.5])
    np.testing.assert_array_equal(m2.b, [4.5])
    np.testing.assert_array_equal(m.w, [1.0, 2.0])


def test_registered_object_rebuild_keeps_non_child_attributes():
    p = Partial(ro([1.0, 2.0]), np.array([3.0]), name="layer")
    st = opt.setup(opt.Descent(1.0), p)
    st, p2 = opt.update_(st, p, {"w": np.ones(2)})
    assert p2 is not p and p2.name == "layer" and p2.extra is p.extra and p2.b is p.b
    np.testing.assert_array_equal(p2.w, [0.0, 1.0])


def test_dict_subclasses_are_rebuilt_as_themselves():
    m = collections.defaultdict(list, {"a": np.ones(2)})
    o = collections.OrderedDict([("a", ro([1.0])), ("b", np.ones(1))])
    st = opt.setup(opt.Descent(0.5), [m, o])
    st, (m2, o2) = opt.update(st, [m, o], [{"a": np.ones(2)}, {"a": np.ones(1)}])
    assert type(m2) is collections.defaultdict and m2.default_factory is list
    assert type(o2) is collections.OrderedDict and list(o2) == ["a", "b"]
    np.testing.assert_array_equal(m2["a"], [0.5, 0.5])
    np.testing.assert_array_equal(o2["a"], [0.5])
    np.testing.assert_array_equal(m["a"], [1.0, 1.0])


def test_float16_parameter_keeps_its_dtype():
    """... written in place; its state is float32 (README, Numbers)."""
    x = np.array([1.0, 2.0], np.float16)
    st = opt.setup(opt.Momentum(0.25, 0.0), x)
    st, x2 = opt.update_(st, x, np.array([1.0, 1.0], np.float16))
    assert x2 is x and x.dtype == np.float16 and st.state.dtype == np.float32
    np.testing.assert_array_equal(x, np.array([0.75, 1.75], np.float16))


def test_update_copies_user_rule_states():
    class Box:
        def __init__(self, x):
            self.acc = np.zeros_like(x)

    class Summing(opt.Rule):
        def init(self, x):
            return Box(x)

        def apply(self, state, x, dx):
            state.acc += dx
            return state, 0.1 * state.acc

    x = np.ones(2)
    st = opt.setup(Summing(), x)
    st2, x2 = opt.update(st, x, np.ones(2))
    np.testing.assert_array_equal(st.state.acc, [0.0, 0.0])  # the input tree untouched
    np.testing.assert_array_equal(st2.state.acc, [1.0, 1.0])
    np.testing.assert_allclose(x2, [0.9, 0.9])


# ----------------------------------------------------------------------------------------
# freeze_ / thaw_


@pytest.mark.parametrize("inplace", [True, False])
def test_freeze_and_thaw_sub_trees(inplace):
    fn = opt.update_ if inplace else opt.update
    m = {"a": np.array([1.0]), "b": [np.array([2.0]), np.array([3.0])]}
    st = opt.setup(opt.Momentum(0.1, 0.5), m)
    opt.freeze_(st["b"])
    assert [st["a"].frozen, st["b"][0].frozen, st["b"][1].frozen] == [False, True, True]
    g = {"a": np.array([1.0]), "b": [np.array([1.0]), np.array([1.0])]}
    st, m = fn(st, m, g)
    np.testing.assert_allclose(m["a"], [0.9])
    np.testing.assert_array_equal(m["b"][0], [2.0])
    np.testing.assert_array_equal(m["b"][1], [3.0])
    np.testing.assert_array_equal(st["b"][0].state, [0.0])
    assert st["b"][0].frozen  # the flag survives update
    assert "frozen=True" in repr(st["b"][0])
    opt.thaw_(st)
    st, m = fn(st, m, g)
    np.testing.assert_allclose(m["a"], [0.9 - 0.15])
    np.testing.assert_allclose(m["b"][0], [1.9])


def test_freeze_a_leaf_and_a_tied_leaf():
    w = np.ones(2)
    st = opt.setup(opt.Descent(), {"a": w, "b": (w,)})
    opt.freeze_(st["b"])
    assert st["a"].frozen  # the same Leaf
    opt.thaw_(st["a"])
    assert not st["b"][0].frozen


@pytest.mark.parametrize("model", [{"x": np.ones(2)}, np.ones(2), [1.0], {"a": (np.ones(1), "s")}])
@pytest.mark.parametrize("fn", [opt.freeze_, opt.thaw_])
def test_freeze_thaw_on_a_model_is_a_type_error(model, fn):
    with pytest.raises(TypeError, match="model"):
        fn(model)


# ----------------------------------------------------------------------------------------
# validation before any write


def _validation_setup(rule=None):
    m = {
        "a": np.array([1.0, 2.0, 3.0], np.float32),
        "b": {"c": np.ones((2, 2))},
        "l": [np.array([1.0, 2.0]), np.array([[1.0], [2.0]])],
        "p": Affine(np.ones(2), ro([0.5])),
        "f": np.sin,
    }
    st = opt.setup(rule or opt.Adam(0.1), m)
    st, m = opt.update_(st, m, _valid_grad(m))  # a first step: states are non-zero
    return st, m


def _valid_grad(m):
    return {
        "a": np.array([1.0, -1.0, 2.0], np.float32),
        "b": {"c": np.full((2, 2), 0.5)},
        "l": [np.array([1.0, 1.0]), np.array([[3.0], [-2.0]])],
        "p": {"w": np.ones(2), "b": np.ones(1)},
        "f": None,
    }


def _bad(path, value):
    def make(m):
        g = _valid_grad(m)
        node = g
        for k in path[:-1]:
            node = node[k]
        if value is _DELETE:
            del node[path[-1]]
        else:
            node[path[-1]] = value
        return g

    return make


_DELETE = object()

BAD_GRADIENTS = {
    "wrong shape": (_bad(("l", 1), np.ones((1, 2))), ValueError, "l.1"),
    "wrong shape scalar": (_bad(("b", "c"), 1.0), ValueError, "b.c"),
    "unknown dict key": (_bad(("b", "zz"), np.ones(2)), ValueError, "zz"),
    "list too short": (_bad(("l",), [np.ones(2)]), ValueError, "l"),
    "list too long": (_bad(("l",), [np.ones(2), np.ones((2, 1)), np.ones(1)]), ValueError, "l"),
    "array for a dict": (_bad(("b",), np.ones((2, 2))), TypeError, "b"),
    "array for a list": (_bad(("l",), np.ones(2)), TypeError, "l"),
    "dict for an array": (_bad(("l", 1), {"x": np.ones((2, 1))}), TypeError, "l.1"),
    "list for a dict": (_bad(("b",), [np.ones((2, 2))]), TypeError, "b"),
    "array for an object": (_bad(("p",), np.ones(2)), TypeError, "p"),
    "complex for real": (_bad(("l", 1), np.ones((2, 1), complex)), TypeError, "l.1"),
    "strings": (_bad(("l", 1), np.array([["a"], ["b"]])), TypeError, "l.1"),
    "objects": (_bad(("l", 1), np.array([[None], [None]], dtype=object)), TypeError, "l.1"),
}


@pytest.mark.parametrize("case", list(BAD_GRADIENTS))
def test_bad_gradient_changes_nothing(case):
    make, exc, where = BAD_GRADIENTS[case]
    st, m = _validation_setup()
    g = make(m)
    before = snapshot(m, st)
    with pytest.raises(exc) as info:
        opt.update_(st, m, g)
    assert re.search(rf"\b{re.escape(where)}\b", str(info.value)), str(info.value)
    assert snapshot(m, st) == before
    # and a correct update still works afterwards
    a0 = m["a"].copy()
    st, m2 = opt.update_(st, m, _valid_grad(m))
    assert not np.array_equal(m2["a"], a0)


def test_non_finite_gradient_met_by_leading_clipnorm_changes_nothing():
    rule = opt.OptimiserChain(opt.ClipNorm(1.0, throw=True), opt.Momentum(0.1, 0.9))
    m = {"first": np.array([1.0, 2.0]), "second": np.array([3.0, 4.0])}
    st = opt.setup(rule, m)
    st, m = opt.update_(st, m, {"first": np.array([1.0, 0.0]), "second": np.array([0.0, 1.0])})
    before = snapshot(m, st)
    for bad in (np.nan, np.inf, -np.inf):
        with pytest.raises(FloatingPointError, match="second"):
            opt.update_(st, m, {"first": np.array([0.5, 0.5]), "second": np.array([bad, 1.0])})
        assert snapshot(m, st) == before
    st, m = opt.update_(st, m, {"first": np.array([0.5, 0.5]), "second": np.array([1.0, 1.0])})
    assert snapshot(m, st) != before
    # ClipNorm(throw=False) lets it through
    st = opt.setup(opt.ClipNorm(1.0, throw=False), np.ones(2))
    opt.update_(st, np.ones(2), np.array([np.inf, 1.0]))


def test_validation_with_a_tied_array_and_a_frozen_leaf():
    w = np.ones(2)
    m = {"a": w, "b": [w], "c": np.ones(3)}
    st = opt.setup(opt.Adam(), m)
    opt.freeze_(st["c"])
    before = snapshot(m, st)
    with pytest.raises(ValueError, match=re.escape("b.0")):
        opt.update_(st, m, {"a": np.ones(2), "b": [np.ones(3)]})
    with pytest.raises(ValueError, match=r"\bc\b"):  # frozen leaves are validated too
        opt.update_(st, m, {"a": np.ones(2), "c": np.ones(2)})
    assert snapshot(m, st) == before


def test_state_tree_for_another_model_is_refused():
    st = opt.setup(opt.Descent(), {"a": np.ones(2)})
    with pytest.raises(ValueError, match="state"):
        opt.update_(st, {"b": np.ones(2)}, {"b": np.ones(2)})
    with pytest.raises(ValueError, match="does not match"):
        opt.update_(st, [np.ones(2)], [np.ones(2)])
    with pytest.raises(TypeError, match="Leaf"):
        opt.update_(opt.setup(opt.Descent(), np.ones(2)), {"a": np.ones(2)}, {"a": np.ones(2)})


# ----------------------------------------------------------------------------------------
# adjust / adjust_


def test_adjust_eta_positional_and_keyword_keeps_state():
    m = {"x": np.ones(2), "y": np.sin}
    st = opt.setup(opt.Momentum(0.1, 0.9), m)
    st, m = opt.update_(st, m, {"x": np.ones(2)})
    v = st["x"].state.copy()
    st2 = opt.adjust(st, 0.2)
    assert st2["x"].rule == opt.Momentum(0.2, 0.9)
    np.testing.assert_array_equal(st2["x"].state, v)
    assert st2["x"].state is not st["x"].state  # copied
    assert st["x"].rule == opt.Momentum(0.1, 0.9)  # old tree untouched
    st3 = opt.adjust(st, eta=0.3, rho=0.7)
    assert st3["x"].rule == opt.Momentum(0.3, 0.7)
    assert opt.adjust(st, 0.4, rho=0.1)["x"].rule == opt.Momentum(0.4, 0.1)
    assert st3["y"] is None


def test_adjust_applies_to_leaves_without_gradients_and_keeps_ties_and_frozen():
    w = np.ones(2)
    st = opt.setup(opt.Descent(0.1), {"a": w, "b": [w], "c": np.ones(1)})
    opt.freeze_(st["c"])
    st2 = opt.adjust(st, 0.5)
    assert st2["a"] is st2["b"][0] and st2["a"] is not st["a"]
    assert st2["a"].rule == opt.Descent(0.5) and st2["c"].rule == opt.Descent(0.5)
    assert st2["c"].frozen


def test_adjust_chains_change_only_members_with_the_field():
    chain = opt.OptimiserChain(opt.ClipGrad(2.0), opt.Adam())
    st = opt.setup(chain, np.ones(2))
    a = opt.adjust(st, 0.2)
    assert a.rule == opt.OptimiserChain(opt.ClipGrad(2.0), opt.Adam(0.2))
    b = opt.adjust(st, delta=2.5)
    assert b.rule == opt.OptimiserChain(opt.ClipGrad(2.5), opt.Adam())
    with pytest.raises(TypeError, match="lambda_"):  # no member has lambda_
        opt.adjust(chain, lambda_=0.5)
    both = opt.OptimiserChain(opt.WeightDecay(0.1), opt.AdamW(lambda_=0.2))
    assert opt.adjust(both, lambda_=0.3) == opt.OptimiserChain(
        opt.WeightDecay(0.3), opt.AdamW(lambda_=0.3)
    )
    nested = opt.OptimiserChain(opt.OptimiserChain(opt.Descent(0.1)), opt.Momentum())
    assert opt.adjust(nested, 0.5) == opt.OptimiserChain(
        opt.OptimiserChain(opt.Descent(0.5)), opt.Momentum(0.5)
    )
    mp = opt.MixedPrecision(np.float64, opt.Adam())
    assert opt.adjust(mp, 0.5) == opt.MixedPrecision(np.float64, opt.Adam(0.5))


def test_adjust_unknown_name_is_a_type_error_listing_names():
    st = opt.setup(opt.Nesterov(), {"x": np.ones(2)})
    with pytest.raises(TypeError, match=r"beta.*eta.*rho"):
        opt.adjust(st, beta=(0.5, 0.5))
    with pytest.raises(TypeError, match="eta"):
        opt.adjust_(st, zeta=1.0)
    assert st["x"].rule == opt.Nesterov()
    # AdaDelta has no eta
    with pytest.raises(TypeError, match="rho"):
        opt.adjust(opt.AdaDelta(), 0.1)
    with pytest.raises(TypeError):
        opt.adjust_(opt.setup(opt.AdaDelta(), np.ones(1)), 0.1)
    assert opt.adjust(opt.AdaDelta(), rho=0.5) == opt.AdaDelta(0.5)
    with pytest.raises(TypeError):
        opt.adjust(st)  # nothing to change


@pytest.mark.parametrize(
    "kw", [{"eta": -1.0}, {"beta": (1.0, 0.5)}, {"epsilon": -1e-8}, {"delta": -1.0}]
)
def test_adjust_invalid_value_is_a_value_error_and_changes_nothing(kw):
    chain = opt.OptimiserChain(opt.ClipGrad(2.0), opt.Adam())
    st = opt.setup(chain, {"a": np.ones(2), "b": np.ones(3)})
    before = snapshot(st)
    with pytest.raises(ValueError, match=next(iter(kw))):
        opt.adjust_(st, **kw)
    assert snapshot(st) == before
    with pytest.raises(ValueError):
        opt.adjust(st, **kw)
    assert snapshot(st) == before


def test_adjust_in_place_keeps_leaf_and_state_objects():
    st = opt.setup(opt.Adam(), {"x": np.ones(2)})
    leaf, state = st["x"], st["x"].state
    assert opt.adjust_(st, 0.01, beta=(0.8, 0.9)) is None
    assert st["x"] is leaf and leaf.state is state
    assert leaf.rule == opt.Adam(0.01, (0.8, 0.9))


def test_adjust_on_a_model_or_rule_in_place_is_a_type_error():
    with pytest.raises(TypeError):
        opt.adjust_({"x": np.ones(2)}, 0.1)
    with pytest.raises(TypeError):
        opt.adjust_(opt.Adam(), 0.1)
    with pytest.raises(TypeError):
        opt.adjust({"x": np.ones(2)}, 0.1)


def test_adjust_a_leaf_and_a_rule():
    leaf = opt.setup(opt.Momentum(), np.ones(2))
    new = opt.adjust(leaf, 0.5)
    assert isinstance(new, Leaf) and new is not leaf and new.rule == opt.Momentum(0.5)
    assert leaf.rule == opt.Momentum()
    r = opt.Adam()
    assert opt.adjust(r, 0.5) == opt.Adam(0.5) and r == opt.Adam()
    assert opt.adjust(opt.RMSProp(), rho=0.5) == opt.RMSProp(rho=0.5)
    with pytest.raises(ValueError, match="centred"):
        opt.adjust(opt.RMSProp(), centred=True)


# ----------------------------------------------------------------------------------------
# Leaf


def test_leaf_equality_repr_and_pickle():
    a = Leaf(opt.Momentum(), np.zeros(2))
    b = Leaf(opt.Momentum(), np.zeros(2))
    assert a == b and a is not b
    assert a != Leaf(opt.Momentum(), np.zeros(2, np.float32))  # dtype matters
    assert a != Leaf(opt.Momentum(), np.ones(2))
    assert a != Leaf(opt.Momentum(), np.zeros(2), frozen=True)
    assert a != Leaf(opt.Momentum(0.1), np.zeros(2))
    assert repr(a) == "Leaf(Momentum(eta=0.01, rho=0.9), array([0., 0.]))"
    w = np.ones(2)
    st = opt.setup(opt.Adam(), {"a": w, "b": [w]})
    st2 = pickle.loads(pickle.dumps(st))
    assert st2 == st and st2["a"] is st2["b"][0]


@pytest.mark.parametrize("inplace", [True, False])
@pytest.mark.parametrize(
    "g",
    [Pair(np.ones(2), None), {"x": np.ones(2)}, (np.ones(2), None), {"x": np.ones(2), "y": None}],
    ids=["namedtuple", "dict", "tuple", "dict-with-none"],
)
def test_namedtuple_model_gradients(inplace, g):
    fn = opt.update_ if inplace else opt.update
    m = Pair(np.array([1.0, 2.0]), np.array([3.0]))
    st = opt.setup(opt.Descent(0.5), m)
    _, m2 = fn(st, m, g)
    assert type(m2) is Pair
    np.testing.assert_array_equal(m2.x, [0.5, 1.5])
    np.testing.assert_array_equal(m2.y, [3.0])


def test_namedtuple_model_bad_gradients_change_nothing():
    m = Pair(np.array([1.0, 2.0]), np.array([3.0]))
    st = opt.setup(opt.Descent(0.5), m)
    before = snapshot(m, st)
    with pytest.raises(ValueError, match=r"\bw\b"):  # fields the model lacks
        opt.update_(st, m, GradWB(np.ones(2), None))
    with pytest.raises(ValueError, match="z"):
        opt.update_(st, m, {"x": np.ones(2), "z": np.ones(1)})
    with pytest.raises(ValueError, match="length"):
        opt.update_(st, m, (np.ones(2),))
    with pytest.raises(TypeError):
        opt.update_(st, m, np.ones(2))
    assert snapshot(m, st) == before


# ----------------------------------------------------------------------------------------
# array types and dtypes


class SubArray(np.ndarray):
    pass


@pytest.mark.parametrize("inplace", [True, False])
def test_ndarray_subclasses_and_memmaps_are_trained(inplace, tmp_path):
    fn = opt.update_ if inplace else opt.update
    sub = np.array([1.0, 2.0]).view(SubArray)
    mm = np.memmap(tmp_path / "w.dat", dtype=np.float32, mode="w+", shape=(2,))
    mm[:] = [3.0, 4.0]
    m = {"sub": sub, "mm": mm}
    st = opt.setup(opt.Descent(0.5), m)
    assert isinstance(st["sub"], Leaf) and isinstance(st["mm"], Leaf)
    st, m2 = fn(st, m, {"sub": np.ones(2), "mm": np.ones(2, np.float32)})
    np.testing.assert_array_equal(m2["sub"], [0.5, 1.5])
    np.testing.assert_array_equal(m2["mm"], [2.5, 3.5])
    if inplace:
        assert m2["mm"] is mm
        mm.flush()
        np.testing.assert_array_equal(np.fromfile(tmp_path / "w.dat", np.float32), [2.5, 3.5])
    else:
        np.testing.assert_array_equal(mm, [3.0, 4.0])


@pytest.mark.parametrize(
    "dtype",
    [
        ">f8" if np.little_endian else "<f8",
        ">f4" if np.little_endian else "<f4",
        np.longdouble,
        np.clongdouble,
    ],
)
def test_untrainable_float_dtypes_are_refused_at_setup(dtype):
    if np.dtype(dtype) in (np.dtype(np.float64), np.dtype(np.complex128)):
        pytest.skip("long double is double on this platform")
    x = np.ones(3, dtype)
    with pytest.raises(TypeError, match=r"l\.1"):
        opt.setup(opt.Momentum(), {"l": [np.ones(2), x]})


@pytest.mark.parametrize("inplace", [True, False])
def test_complex_parameters(inplace):
    fn = opt.update_ if inplace else opt.update
    m = {"r": np.array([1.0, 2.0]), "c": np.array([1 + 1j, 2 - 1j], np.complex64)}
    st = opt.setup(opt.Momentum(0.5, 0.0), m)
    st, m2 = fn(st, m, {"r": np.ones(2), "c": np.array([1j, 2.0], np.complex64)})
    assert m2["c"].dtype == np.complex64
    np.testing.assert_allclose(m2["c"], [1 + 0.5j, 1 - 1j], rtol=1e-6)
    np.testing.assert_array_equal(m2["r"], [0.5, 1.5])


@pytest.mark.parametrize("inplace", [True, False])
def test_adjusted_rule_is_used_by_the_next_step(inplace):
    fn = opt.update_ if inplace else opt.update
    m = {"a": np.array([1.0, 2.0]), "b": np.array([3.0], np.float32)}
    st = opt.setup(opt.Momentum(0.1, 0.5), m)
    g = {"a": np.ones(2), "b": np.ones(1, np.float32)}
    st, m = fn(st, m, g)  # v = 0.1
    opt.adjust_(st["a"], 0.3)  # only a's rule changes
    st, m = fn(st, m, g)  # a: v = 0.05 + 0.3, b: v = 0.05 + 0.1
    np.testing.assert_allclose(m["a"], [1.0 - 0.1 - 0.35, 2.0 - 0.1 - 0.35], rtol=1e-15)
    np.testing.assert_allclose(m["b"], [3.0 - 0.1 - 0.15], rtol=1e-6)
    st = opt.adjust(st, rho=0.0)
    st, m = fn(st, m, g)
    np.testing.assert_allclose(m["a"], [1.0 - 0.1 - 0.35 - 0.3, 2.0 - 0.1 - 0.35 - 0.3], rtol=1e-15)
