"""destructure / Restructure."""

from __future__ import annotations

import dataclasses
import pickle
from typing import NamedTuple

import numpy as np
import pytest

import optimisers as opt


class NT(NamedTuple):
    x: object
    y: object


@opt.functor(trainable=("w",))
class Layer:
    def __init__(self, w, b, act=np.tanh):
        self.w, self.b, self.act = w, b, act

    def __call__(self, x):
        return self.act(self.w @ x + self.b)


@opt.functor
@dataclasses.dataclass(frozen=True)
class Frozen:
    w: np.ndarray

    def __post_init__(self):
        raise AssertionError("rebuilding must not call __init__/__post_init__")


def test_c_order_flattening_and_rebuild():
    w = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    m = {"w": w, "b": [np.array([7.0]), np.array(8.0)]}
    v, re = opt.destructure(m)
    np.testing.assert_array_equal(v, [1, 2, 3, 4, 5, 6, 7, 8])
    assert v.ndim == 1 and v.dtype == np.float64
    assert not np.shares_memory(v, w)
    v[0] = 100.0
    assert w[0, 0] == 1.0  # flat is a copy
    m2 = re(np.arange(8.0))
    assert type(m2) is dict and type(m2["b"]) is list
    np.testing.assert_array_equal(m2["w"], [[0, 1, 2], [3, 4, 5]])
    np.testing.assert_array_equal(m2["b"][0], [6.0])
    assert m2["b"][1].shape == () and float(m2["b"][1]) == 7.0
    assert m2["w"] is not w and np.array_equal(w, [[1, 2, 3], [4, 5, 6]])


def test_non_contiguous_arrays_flatten_in_c_order():
    f = np.asfortranarray(np.arange(6.0).reshape(2, 3))
    s = np.arange(10.0)[::3]
    v, re = opt.destructure([f, s])
    np.testing.assert_array_equal(v, [0, 1, 2, 3, 4, 5, 0, 3, 6, 9])
    m2 = re(v)
    np.testing.assert_array_equal(m2[0], f)
    np.testing.assert_array_equal(m2[1], s)


def test_dtype_promotion_and_restoration():
    m = {"a": np.array([1.5, 2.5], np.float32), "b": np.array([3.0])}
    v, re = opt.destructure(m)
    assert v.dtype == np.float64
    m2 = re(np.array([0.1, 0.2, 0.3]))
    assert m2["a"].dtype == np.float32 and m2["b"].dtype == np.float64
    np.testing.assert_array_equal(m2["a"], np.array([0.1, 0.2], np.float32))

    v, _ = opt.destructure([np.ones(1, np.float32), np.ones(1, np.float32)])
    assert v.dtype == np.float32
    v, _ = opt.destructure([np.ones(1, np.float16)])
    assert v.dtype == np.float16

    m = {"r": np.array([1.0, 2.0]), "c": np.array([3.0 + 4.0j], np.complex64)}
    v, re = opt.destructure(m)
    assert v.dtype == np.complex128
    np.testing.assert_array_equal(v, [1, 2, 3 + 4j])
    m2 = re(np.array([1 + 9j, 2 - 9j, 5 + 6j]))
    assert m2["r"].dtype == np.float64 and m2["c"].dtype == np.complex64
    np.testing.assert_array_equal(m2["r"], [1.0, 2.0])  # the real part
    np.testing.assert_array_equal(m2["c"], [5 + 6j])
    m3 = re([1, 2, 3])  # any numeric sequence
    assert m3["r"].dtype == np.float64 and m3["c"].dtype == np.complex64


def test_ties_stored_once_and_rebuilt_as_one_array():
    w = np.array([1.0, 2.0])
    inner = [w]
    m = {"a": w, "b": inner, "c": (inner, np.array([3.0]))}
    v, re = opt.destructure(m)
    np.testing.assert_array_equal(v, [1, 2, 3])
    assert len(re) == 3
    m2 = re(np.array([10.0, 20.0, 30.0]))
    assert m2["a"] is m2["b"][0] is m2["c"][0][0]
    assert m2["b"] is m2["c"][0]  # shared containers stay shared
    np.testing.assert_array_equal(m2["a"], [10, 20])
    np.testing.assert_array_equal(m2["c"][1], [30])


def test_length_errors():
    v, re = opt.destructure({"a": np.ones(2), "b": np.ones(3)})
    assert len(re) == 5 == v.size
    for bad in (np.ones(4), np.ones(6), np.ones((5, 1)), np.ones(0)):
        with pytest.raises(ValueError, match="5"):
            re(bad)


def test_re_x_v_calls_the_rebuilt_model():
    layer = Layer(np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([0.5, -0.5]))
    v, re = opt.destructure(layer)
    np.testing.assert_array_equal(v, [1, 2, 3, 4])  # only w is trainable
    x = np.array([0.2, 0.3])
    v2 = np.array([-4.0, -3.0, -2.0, -1.0])
    np.testing.assert_allclose(re(x, v2), re(v2)(x), rtol=1e-15)
    np.testing.assert_allclose(re(x, v2), np.tanh(v2.reshape(2, 2) @ x + layer.b))
    with pytest.raises(TypeError):
        re()
    with pytest.raises(TypeError):
        re(x, v2, 3)


def test_non_trainable_parts_carried_over():
    b = np.array([9.0, 9.0])
    m = {
        "l": Layer(np.ones((1, 2)), b, act=np.sin),
        "i": np.arange(3),
        "s": "name",
        "n": 7,
        "f": np.cos,
        "t": NT(np.ones(1), None),
    }
    v, re = opt.destructure(m)
    assert len(re) == 3
    m2 = re(np.array([1.0, 2.0, 3.0]))
    assert type(m2["l"]) is Layer and m2["l"].b is b and m2["l"].act is np.sin
    np.testing.assert_array_equal(m2["l"].w, [[1.0, 2.0]])
    assert m2["i"] is m["i"] and m2["s"] == "name" and m2["n"] == 7 and m2["f"] is np.cos
    assert type(m2["t"]) is NT and m2["t"].y is None
    np.testing.assert_array_equal(m2["t"].x, [3.0])
    np.testing.assert_array_equal(m["l"].w, [[1.0, 1.0]])  # the original untouched


def test_frozen_dataclass_rebuilt_without_init():
    m = Frozen.__new__(Frozen)
    object.__setattr__(m, "w", np.ones(2))
    v, re = opt.destructure(m)
    m2 = re(np.array([3.0, 4.0]))
    assert type(m2) is Frozen
    np.testing.assert_array_equal(m2.w, [3.0, 4.0])


def test_empty_model_gives_empty_bool_vector():
    for m in ({"f": np.sin, "i": np.arange(2)}, [], None, "s"):
        v, re = opt.destructure(m)
        assert v.dtype == np.bool_ and v.shape == (0,) and len(re) == 0
        m2 = re(np.zeros(0))
        assert m2 is m or m2 == m
        # and it promotes nothing it is joined with
        for dtype in (np.float16, np.float32, np.complex64):
            assert np.concatenate([v, np.ones(1, dtype)]).dtype == dtype


def test_bare_array_and_zero_size_arrays():
    x = np.arange(4.0, dtype=np.float32).reshape(2, 2)
    v, re = opt.destructure(x)
    np.testing.assert_array_equal(v, [0, 1, 2, 3])
    r = re(np.array([4.0, 5.0, 6.0, 7.0]))
    assert r.dtype == np.float32 and r.shape == (2, 2)
    v, re = opt.destructure([np.zeros((0, 3)), np.ones(2)])
    assert len(re) == 2
    m2 = re(np.array([1.0, 2.0]))
    assert m2[0].shape == (0, 3)
    np.testing.assert_array_equal(m2[1], [1.0, 2.0])


def test_restructure_repr_len_and_pickle():
    v, re = opt.destructure(NT(np.ones(2), np.ones(3)))
    assert repr(re) == "Restructure(NT, ..., 5)"
    assert len(re) == 5
    _, re2 = opt.destructure([np.ones(1)])
    assert repr(re2) == "Restructure(list, ..., 1)"


def test_rebuilt_arrays_do_not_alias_the_input_vector():
    v, re = opt.destructure({"a": np.ones(2), "b": np.ones(2)})
    new = np.arange(4.0)
    m2 = re(new)
    new[:] = -1
    np.testing.assert_array_equal(m2["a"], [0, 1])
    np.testing.assert_array_equal(m2["b"], [2, 3])
    m3 = re(new)
    assert not np.shares_memory(m3["a"], m3["b"])


def test_restructure_survives_pickle_and_deepcopy():
    import copy

    w = np.array([1.0, 2.0])
    m = {"a": w, "b": [w, np.array([3.0], np.float32)], "f": np.sin}
    _, re = opt.destructure(m)
    for re2 in (pickle.loads(pickle.dumps(re)), copy.deepcopy(re), copy.copy(re)):
        assert len(re2) == 3 and repr(re2) == repr(re)
        m2 = re2(np.array([4.0, 5.0, 6.0]))
        assert m2["a"] is m2["b"][0]
        np.testing.assert_array_equal(m2["a"], [4.0, 5.0])
        assert m2["b"][1].dtype == np.float32 and m2["b"][1][0] == 6.0
        assert m2["f"] is np.sin


def test_restructure_is_not_broken_by_later_changes_to_the_model():
    m = {"a": np.ones(2), "b": [np.ones(1)]}
    _, re = opt.destructure(m)
    m["a"] = np.zeros(5)  # the user reuses their containers
    m["b"].append(np.ones(3))
    del m["b"][0]
    m2 = re(np.array([1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(m2["a"], [1.0, 2.0])
    assert len(m2["b"]) == 1
    np.testing.assert_array_equal(m2["b"][0], [3.0])
