"""The tree functions' paths the rest of the suite left unrun (issue 21, point 3): the
shapes of state trees ``hyperparameters`` walks, the mismatches of state, model and gradient
that the walk names, tuple subclasses and registered classes with unusual ``__slots__`` or
``__new__``, key paths added to keys, and a ``Leaf``'s printing and equality."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import pytest

import optimisers as opt
from optimisers import schedules


class Pair(NamedTuple):
    w: Any
    b: Any


class Row(tuple):  # type: ignore[type-arg]
    """A tuple subclass that is not a namedtuple: a tuple to the tree functions."""


def test_hyperparameters_walks_every_kind_of_state_tree() -> None:
    eta = schedules.linear(1.0, 0.0, 10)
    model = {"p": Pair(np.ones(2), np.ones(2)), "l": [np.ones(2), "act"], "n": None}
    state = opt.setup(opt.Descent(eta), model)
    hp = opt.hyperparameters(state)
    assert type(hp["p"]) is Pair and hp["p"].w == opt.Descent(1.0)
    assert hp["l"] == [opt.Descent(1.0), None] and hp["n"] is None
    with pytest.raises(TypeError, match="takes a state tree from setup, not a ndarray"):
        opt.hyperparameters({"w": np.ones(2)})


def test_a_tuple_subclass_is_a_tuple_of_the_tree() -> None:
    model = Row((np.ones(2), np.zeros(2)))
    state = opt.setup(opt.Descent(0.5), model)
    assert type(state) is tuple and len(state) == 2
    state, new = opt.update(state, model, (np.ones(2), np.ones(2)))
    assert type(new) is Row and new[0].tolist() == [0.5, 0.5]


@pytest.mark.parametrize(
    "state, model, grads, error, match",
    [
        ([None, None], [np.ones(2)], [np.ones(2)], ValueError, "2 state entries, 1 model entries"),
        ("leaf?", [np.ones(2)], [np.ones(2)], TypeError, "the state tree has str at"),
        ([None], [np.ones(2)], [np.ones(2), np.ones(2)], ValueError, "has length 2, the model's"),
        ([None], [np.ones(2)], (np.ones(2), np.ones(2)), ValueError, "has length 2, the model's"),
        (
            {"w": None},
            3.0,
            1.0,
            TypeError,
            "the state tree has a dict at .* but the model has a float there",
        ),
    ],
)
def test_the_walk_names_what_does_not_match(
    state: Any, model: Any, grads: Any, error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        opt.update_(state, model, grads)


def test_a_registered_objects_state_with_other_fields() -> None:
    @opt.functor(fields=("w",))
    class Layer:
        def __init__(self) -> None:
            self.w = np.ones(2)

    with pytest.raises(ValueError, match=r"state keys .* model keys"):
        opt.update_({"v": None}, Layer(), {"w": np.ones(2)})


def test_a_rule_chosen_per_array_that_is_not_hashable() -> None:
    class Scale(opt.Rule):
        __hash__ = None  # type: ignore[assignment]

        def __init__(self, eta: float) -> None:
            self.eta = eta

        def __eq__(self, other: object) -> bool:
            return isinstance(other, Scale) and other.eta == self.eta

        def apply(self, state: Any, x: Any, dx: Any) -> tuple[Any, Any]:
            return state, self.eta * dx

    state = opt.setup(lambda path, x: Scale(0.5), [np.ones(2), np.ones(2)])
    assert state[0].rule == Scale(0.5) and state[0].rule is not state[1].rule


def test_a_subclass_of_a_registered_class_is_registered() -> None:
    @opt.functor(fields=("w", "b"), trainable=("w",))
    class Base:
        def __init__(self) -> None:
            self.w, self.b = np.ones(2), np.zeros(2)

    class Child(Base):
        pass

    assert [a.tolist() for a in opt.trainables(Child())] == [[1.0, 1.0]]


def test_a_leaf_has_no_trainable_children() -> None:
    assert opt.trainable(3.0) == {}


def test_rebuilding_objects_with_slots_and_their_own_new() -> None:
    @opt.functor
    class Slotted:
        __slots__ = ("__dict__", "__w", "unset")

        def __init__(self, w: Any) -> None:
            self.__w = w  # a private slot: stored as _Slotted__w

        @property
        def w(self) -> Any:
            return self.__w

    opt.functor(Slotted, fields=("_Slotted__w",))
    s = Slotted(np.ones(2))
    state = opt.setup(opt.Descent(0.5), s)
    _, new = opt.update(state, s, {"_Slotted__w": np.ones(2)})
    assert new.w.tolist() == [0.5, 0.5] and s.w.tolist() == [1.0, 1.0]
    assert not hasattr(new, "unset")  # an unset slot stays unset

    @opt.functor(fields=("w",))
    class Interned:
        def __new__(cls, *args: Any) -> Interned:
            return super().__new__(cls)

        def __init__(self, w: Any = None) -> None:
            self.w = w

    i = Interned(np.ones(2))
    _, new_i = opt.update(opt.setup(opt.Descent(0.5), i), i, {"w": np.ones(2)})
    assert type(new_i) is Interned and new_i.w.tolist() == [0.5, 0.5]


def test_a_key_before_a_key_path() -> None:
    assert "a" + opt.KeyPath("b", 0) == opt.KeyPath("a", "b", 0)
    assert 1 + opt.KeyPath("b") == opt.KeyPath(1, "b")


def test_a_key_of_no_kind_the_path_knows() -> None:
    assert not opt.haskeypath([1, 2], opt.KeyPath(0.5))


def test_a_leaf_prints_the_containers_of_its_state() -> None:
    leaf = opt.Leaf(opt.Descent(), [np.zeros(200), {"a": np.ones(2)}, (np.ones(1),), 7])
    text = repr(leaf)
    assert text.startswith("Leaf(Descent(eta=0.1), [")
    assert "shape=(200,)" in text or "(200,)" in text
    assert "{'a': array([1., 1.])}" in text and "(array([1.]),), 7]" in text
    tup = repr(opt.Leaf(opt.Descent(), (np.ones(1), np.ones(1))))
    assert "(array([1.]), array([1.]))" in tup


def test_a_leaf_is_never_equal_to_what_is_not_a_leaf() -> None:
    leaf = opt.Leaf(opt.Descent(), None)
    assert leaf != 3 and leaf.__eq__(3) is NotImplemented


def test_the_norm_of_no_order() -> None:
    with pytest.raises(ValueError, match="p must be a real number or"):
        opt.global_norm({"w": np.ones(2)}, p=float("nan"))
