"""KeyPath, getkeypath, haskeypath, and trainables(path=True) with 0-based KeyPaths."""

from __future__ import annotations

import pickle
from typing import NamedTuple

import numpy as np
import pytest

import optimisers as opt
from optimisers import KeyPath, getkeypath, haskeypath


class NT(NamedTuple):
    u: object
    v: object


@opt.functor(trainable=("w",))
class Layer:
    def __init__(self, w, b):
        self.w, self.b = w, b


@opt.functor
class Wrap:
    def __init__(self, inner, scale):
        self.inner, self.scale = inner, scale


# ----------------------------------------------------------------------------------------
# KeyPath itself


def test_keypath_splicing_and_equality():
    kp = KeyPath("b", 3)
    assert KeyPath("a", kp, "c", 4) == KeyPath("a", "b", 3, "c", 4)
    assert KeyPath(KeyPath(), "x", KeyPath()) == KeyPath("x")
    assert kp + KeyPath("c") == KeyPath("b", 3, "c")
    assert kp + ("c", 0) == KeyPath("b", 3, "c", 0)
    assert kp + "c" == KeyPath("b", 3, "c")
    assert isinstance(kp + "c", KeyPath)
    assert ("a",) + kp == KeyPath("a", "b", 3) and isinstance(("a",) + kp, KeyPath)
    assert KeyPath("a", 0) != KeyPath(0, "a")
    assert len(KeyPath()) == 0 and len(KeyPath("a", 1, "b")) == 3


def test_keypath_indexing_and_iteration():
    kp = KeyPath("a", 1, "b")
    assert kp[0] == "a" and kp[-1] == "b"
    assert kp[1:] == KeyPath(1, "b") and isinstance(kp[1:], KeyPath)
    assert list(kp) == ["a", 1, "b"]


def test_keypath_repr_and_str():
    kp = KeyPath("b", 0, "c")
    assert repr(kp) == "KeyPath('b', 0, 'c')"
    assert str(kp) == "b.0.c"
    assert repr(KeyPath()) == "KeyPath()"
    assert str(KeyPath()) == "(root)"
    assert eval(repr(kp), {"KeyPath": KeyPath}) == kp


def test_keypath_pickles():
    for kp in (KeyPath(), KeyPath("a"), KeyPath("b", 0, "c", 7)):
        back = pickle.loads(pickle.dumps(kp))
        assert back == kp and type(back) is KeyPath and repr(back) == repr(kp)


# ----------------------------------------------------------------------------------------
# getkeypath / haskeypath


def test_getkeypath_on_containers_and_objects():
    x = {
        "a": 3,
        "b": {"c": 4, "d": [5, 6, 7]},
        "t": NT(10, (20, 30)),
        "l": Layer(np.array([1.0]), "bee"),
    }
    assert getkeypath(x, KeyPath("a")) == 3
    assert getkeypath(x, KeyPath("b", "d", 1)) == 6
    assert getkeypath(x, KeyPath("t", "v", 0)) == 20
    assert getkeypath(x, KeyPath("t", 1, 1)) == 30
    assert getkeypath(x, KeyPath("l", "b")) == "bee"
    assert getkeypath(x, KeyPath()) is x
    assert getkeypath(x, ("b", "c")) == 4  # a plain tuple works too
    with pytest.raises(KeyError, match="zz"):
        getkeypath(x, KeyPath("b", "zz"))
    with pytest.raises(KeyError, match="5"):
        getkeypath(x, KeyPath("b", "d", 5))


def test_haskeypath():
    x = {"a": 3, "b": {"c": 4, "d": [5, 6, 7]}, "t": NT(1, 2), "arr": np.array([10, 20])}
    assert haskeypath(x, KeyPath("a"))
    assert haskeypath(x, KeyPath("b", "d", 0))
    assert haskeypath(x, KeyPath("b", "d", 2))
    assert not haskeypath(x, KeyPath("b", "d", 3))
    assert not haskeypath(x, KeyPath("b", "e"))
    assert not haskeypath(x, KeyPath("a", "deeper"))
    assert haskeypath(x, KeyPath("t", "u")) and not haskeypath(x, KeyPath("t", "w"))
    assert haskeypath(x, KeyPath())
    # haskeypath agrees with getkeypath on arrays
    assert haskeypath(x, KeyPath("arr", 1)) and getkeypath(x, KeyPath("arr", 1)) == 20
    assert not haskeypath(x, KeyPath("arr", 2))


def test_haskeypath_agrees_with_getkeypath():
    x = {"a": [np.ones(2), (3, {"k": "v"})], "o": Layer(np.ones(1), None)}
    paths = [
        KeyPath("a"),
        KeyPath("a", 0),
        KeyPath("a", 0, 1),
        KeyPath("a", 0, 2),
        KeyPath("a", 1, 1, "k"),
        KeyPath("a", 1, 1, "j"),
        KeyPath("a", 2),
        KeyPath("o", "w"),
        KeyPath("o", "q"),
        KeyPath("zz"),
    ]
    for kp in paths:
        try:
            getkeypath(x, kp)
            ok = True
        except KeyError:
            ok = False
        assert haskeypath(x, kp) == ok, kp


# ----------------------------------------------------------------------------------------
# trainables


def test_trainables_path_true_is_zero_based():
    x = {
        "a": np.array([1.0, 2.0]),
        "b": ({"c": np.array([3.0, 4.0]), "d": 5.0}, np.array([6.0, 7.0])),
    }
    got = opt.trainables(x, path=True)
    assert [kp for kp, _ in got] == [KeyPath("a"), KeyPath("b", 0, "c"), KeyPath("b", 1)]
    assert all(type(kp) is KeyPath for kp, _ in got)
    for kp, arr in got:
        assert getkeypath(x, kp) is arr
    assert [a is b for (_, a), b in zip(got, opt.trainables(x))] == [True] * 3


def test_trainables_order_ties_and_non_trainables():
    w = np.ones(2)
    x = [
        w,
        {"i": np.arange(3), "f": np.sin, "w": w, "n": NT(np.zeros(1), 1.0)},
        Layer(np.ones(3), np.ones(4)),
        Wrap(Layer(np.ones(5), None), 2.0),
    ]
    arrs = opt.trainables(x)
    assert [a.size for a in arrs] == [2, 1, 3, 5]
    assert arrs[0] is w
    paths = [kp for kp, _ in opt.trainables(x, path=True)]
    assert paths == [KeyPath(0), KeyPath(1, "n", "u"), KeyPath(2, "w"), KeyPath(3, "inner", "w")]
    assert opt.trainables({"f": np.sin}) == []
    assert opt.trainables(np.ones(2), path=True)[0][0] == KeyPath()


def test_trainables_returns_the_original_arrays():
    x = {"a": np.ones(2)}
    (a,) = opt.trainables(x)
    assert a is x["a"]
