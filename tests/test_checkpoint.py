"""save_state / load_state: exact round trips, bit-for-bit continuation of training, and a
clear CheckpointError (never code execution) for malformed files."""

import collections
import dataclasses
import hashlib
import json
import os
import pickle
import struct
import sys
from typing import NamedTuple

import numpy as np
import pytest

import optimisers as opt
from optimisers import _rule
from optimisers._checkpoint import CheckpointError, load_state, save_state
from optimisers._checkpoint_format import MAGIC, VERSION
from optimisers._leaf import Leaf, tree_equal
from registry import DEFAULT_RULES, MATRIX_ONLY

F16, F32, F64 = np.float16, np.float32, np.float64

Pair = collections.namedtuple("Pair", ["w", "b"])


# ----------------------------------------------------------------------------------------
# helpers


def bits_equal(a, b):
    """Equality down to the bits: types, dtypes, shapes, bytes, dict order, frozen flags."""
    if isinstance(a, Leaf) or isinstance(b, Leaf):
        return (
            type(a) is type(b)
            and a.rule == b.rule
            and type(a.rule) is type(b.rule)
            and a.frozen == b.frozen
            and bits_equal(a.state, b.state)
        )
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            type(a) is type(b)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and a.tobytes() == b.tobytes()
        )
    if isinstance(a, np.generic) or isinstance(b, np.generic):
        return type(a) is type(b) and a.tobytes() == b.tobytes()
    if isinstance(a, dict):
        return type(a) is type(b) and list(a) == list(b) and all(bits_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return (
            type(a) is type(b) and len(a) == len(b) and all(bits_equal(x, y) for x, y in zip(a, b))
        )
    if isinstance(a, float):
        return type(a) is type(b) and struct.pack("<d", a) == struct.pack("<d", b)
    return type(a) is type(b) and a == b


def copy_model(m, memo):
    """A deep copy of a model's arrays and containers that keeps ties."""
    if isinstance(m, np.ndarray):
        if id(m) not in memo:
            memo[id(m)] = m.copy()
        return memo[id(m)]
    if isinstance(m, dict):
        return {k: copy_model(v, memo) for k, v in m.items()}
    if isinstance(m, list):
        return [copy_model(v, memo) for v in m]
    if isinstance(m, tuple):
        vals = [copy_model(v, memo) for v in m]
        return type(m)(*vals) if hasattr(m, "_fields") else tuple(vals)
    return m


def grads_for(model, step):
    """A gradient for every float array of ``model`` (one per occurrence), fixed by step."""
    rng = np.random.default_rng(1000 + step)

    def walk(m):
        if isinstance(m, np.ndarray):
            return rng.standard_normal(m.shape).astype(m.dtype) if m.dtype.kind == "f" else None
        if isinstance(m, dict):
            return {k: walk(v) for k, v in m.items()}
        if isinstance(m, list):
            return [walk(v) for v in m]
        if isinstance(m, tuple):
            vals = [walk(v) for v in m]
            return type(m)(*vals) if hasattr(m, "_fields") else tuple(vals)
        return None

    return walk(model)


def make_model(dtype):
    rng = np.random.default_rng(7)

    def arr(*shape):
        return rng.standard_normal(shape).astype(dtype)

    tied = arr(5)
    return {
        "w": arr(3, 4),
        "layers": [tied, (tied, arr(3))],
        "frozen": arr(2),
        "act": np.tanh,
        "n": 3,
    }


def fresh(rule, dtype):
    model = make_model(dtype)
    state = opt.setup(rule, model)
    opt.freeze_(state["frozen"])
    return state, model


def train(state, model, start, steps):
    for s in range(start, start + steps):
        state, model = opt.update_(state, model, grads_for(model, s))
    return state, model


def split(data):
    """The documented layout, read back: (version, header document, data region)."""
    magic, version, total, hlen = struct.unpack_from("<14sHQQ", data)
    assert magic == MAGIC and total == len(data)
    assert hashlib.sha256(data[:-32]).digest() == data[-32:]
    start = -(-(32 + hlen) // 64) * 64
    assert data[32 + hlen : start] == bytes(start - 32 - hlen)
    return version, json.loads(data[32 : 32 + hlen]), data[start:-32]


def join_raw(version, header, region):
    """A file with this header text and data region and a valid size and checksum."""
    start = -(-(32 + len(header)) // 64) * 64
    body = (
        struct.pack("<14sHQQ", MAGIC, version, start + len(region) + 32, len(header))
        + header
        + bytes(start - 32 - len(header))
        + region
    )
    return body + hashlib.sha256(body).digest()


def join(version, doc, region):
    return join_raw(version, json.dumps(doc, separators=(",", ":")).encode(), region)


def rules_in(rule):
    yield rule
    for inner in getattr(rule, "opts", ()):
        yield from rules_in(inner)
    if isinstance(rule, opt.MixedPrecision):
        yield from rules_in(rule.rule)


# ----------------------------------------------------------------------------------------
# training continues bit for bit

REQUIRED = [
    (opt.Adam(), F32),
    (opt.OptimiserChain(opt.ClipNorm(1.0), opt.AdamW(lambda_=0.1)), F32),
    (opt.OptimiserChain(opt.AccumGrad(2), opt.Momentum()), F32),
    (opt.RAdam(), F32),
    (opt.MixedPrecision(opt.Adam()), F16),
    (opt.RMSProp(centred=True), F32),
]
# every rule class at its defaults (the registry's rows), and other dtypes and compositions
OTHERS = [(rule, F32) for _, rule in DEFAULT_RULES] + [
    (opt.Descent(0.1), F32),
    (opt.Momentum(0.05, 0.8), F64),
    (opt.Adam(), F64),
    (opt.Adam(), F16),
    (opt.RAdam(0.01), F64),
    (opt.AdaGrad(), F64),
    (opt.OptimiserChain(opt.WeightDecay(), opt.Descent()), F32),
    (opt.OptimiserChain(opt.SignDecay(), opt.ClipGrad(0.5), opt.Momentum()), F32),
    (
        opt.OptimiserChain(
            opt.ClipNorm(2.0, p=np.inf), opt.OptimiserChain(opt.AccumGrad(3), opt.Adam())
        ),
        F32,
    ),
    (opt.MixedPrecision(np.float64, opt.OptimiserChain(opt.ClipGrad(1.0), opt.RAdam())), F32),
    (opt.OptimiserChain(), F64),
    # the rules with a second copy (issue 17): their counters and copies resume exactly
    (opt.Lookahead(opt.Adam(0.05), k=3), F32),
    (
        opt.EMA(
            opt.OptimiserChain(opt.ClipGrad(1.0), opt.Lookahead(opt.Momentum(), k=4)), decay=0.9
        ),
        F64,
    ),
    (opt.ScheduleFreeAdamW(0.05, warmup_steps=4), F16),
]


def _id(case):
    rule, dtype = case
    return f"{rule!r}-{np.dtype(dtype).name}"


@pytest.mark.parametrize("case", REQUIRED + OTHERS, ids=[_id(c) for c in REQUIRED + OTHERS])
def test_training_continues_bit_for_bit(tmp_path, case):
    rule, dtype = case
    state_a, model_a = train(*fresh(rule, dtype), 0, 10)

    state_b, model_b = train(*fresh(rule, dtype), 0, 5)
    save_state(tmp_path / "b.ckpt", state_b)
    model_c = copy_model(model_b, {})  # as if the model had been saved and loaded
    del state_b, model_b
    state_c = load_state(tmp_path / "b.ckpt")
    assert state_c["layers"][0] is state_c["layers"][1][0]  # the tie survives
    assert state_c["frozen"].frozen and not state_c["w"].frozen
    state_c, model_c = train(state_c, model_c, 5, 5)

    assert bits_equal(model_a, model_c)
    assert bits_equal(state_a, state_c)
    assert tree_equal(state_a, state_c)
    assert model_c["layers"][0] is model_c["layers"][1][0]
    assert bits_equal(model_c["frozen"], make_model(dtype)["frozen"])


def test_the_cases_cover_every_rule():
    used = {type(r) for rule, _ in REQUIRED + OTHERS for r in rules_in(rule)}
    # the rules for matrices only resume bit for bit in tests/test_muon.py (ties, frozen)
    used |= set(MATRIX_ONLY)
    assert used == set(opt.RULES) == set(_rule.builtin_rules())


def test_a_loaded_state_loads_and_saves_to_the_same_bytes(tmp_path):
    for rule, dtype in REQUIRED + OTHERS:
        state, _ = train(*fresh(rule, dtype), 0, 3)
        save_state(tmp_path / "1", state)
        save_state(tmp_path / "2", load_state(tmp_path / "1"))
        assert (tmp_path / "1").read_bytes() == (tmp_path / "2").read_bytes(), rule


class LateState(NamedTuple):
    count: np.ndarray


def test_a_rule_added_to_the_package_is_saved_and_loaded(tmp_path, monkeypatch):
    """Checkpoints read the registry of rules when they save and load: a rule class that
    joins it (as every rule class of the package does, by being defined) and its state type
    need nothing of the checkpoint code."""
    monkeypatch.setattr(_rule, "_BUILTIN", dict(_rule._BUILTIN))  # forget Late afterwards

    @dataclasses.dataclass(frozen=True)
    class Late(opt.Rule):
        __module__ = "optimisers._rules_late"  # as if a module of the package
        eta: float = 0.1
        state_types = (LateState,)

        def init(self, x):
            return LateState(np.zeros((), np.int64))

        def apply(self, state, x, dx):
            state.count[...] += 1
            return state, self.eta * dx

    assert Late in _rule.builtin_rules()
    model = {"x": np.ones(3, F32), "y": np.ones(2, F64)}
    state = opt.setup(Late(0.5), model)
    state["y"] = opt.setup(opt.OptimiserChain(opt.ClipGrad(1.0), Late(0.25)), model["y"])
    state, model = train(state, model, 0, 2)
    save_state(tmp_path / "s", state)
    again = load_state(tmp_path / "s")
    assert bits_equal(again, state)
    assert type(again["x"].state) is LateState and again["x"].state.count == 2
    assert again["y"].rule.opts[1] == Late(0.25)


def test_a_rule_added_without_known_fields_is_refused_clearly(tmp_path, monkeypatch, small):
    monkeypatch.setattr(_rule, "_BUILTIN", dict(_rule._BUILTIN))

    class Plain(opt.Rule):  # neither a dataclass nor __slots__
        __module__ = "optimisers._rules_late"

        def __init__(self, eta=0.1):
            self.eta = eta

        def apply(self, state, x, dx):
            return state, self.eta * dx

    with pytest.raises(TypeError, match="dataclass or names its fields"):
        save_state(tmp_path / "s", opt.setup(Plain(), np.ones(2)))
    version, doc, region = split(small)
    doc["rules"][0] = {"rule": "Plain", "fields": {"eta": 0.1}}
    with pytest.raises(CheckpointError, match="dataclass or names its fields"):
        _load(tmp_path, join(version, doc, region))


# ----------------------------------------------------------------------------------------
# exact round trips


def test_containers_keys_scalars_and_ties_round_trip(tmp_path):
    w, v = np.ones(3, F32), np.arange(4.0).reshape(2, 2)
    model = {
        "a": [w, (v, 1.0)],
        0: {"deep": w},
        ("t", 1): (),
        None: [],
        "é": np.arange(3),
        "pair": Pair(np.zeros(2, F64), np.ones((), F32)),
        "c": np.ones(2, np.complex64),
    }
    state = opt.setup(opt.OptimiserChain(opt.WeightDecay(0.1), opt.Adam()), model)
    state, model = opt.update_(state, model, grads_for(model, 0))  # "c" gets no step
    shared = np.zeros(3)
    state["extra"] = [Leaf(opt.Momentum(), shared), Leaf(opt.Momentum(), shared, True)]
    state["scalars"] = (
        np.float32(1.5),
        np.int8(-3),
        np.bool_(True),
        np.complex128(1j),
        np.float16(np.inf),
        np.float64(np.nan),
        -0.0,
        float("-inf"),
        2**70,
        1e-300,
        True,
        "text",
    )

    save_state(tmp_path / "s", state)
    again = load_state(tmp_path / "s", types=[Pair])
    assert bits_equal(again, state)
    assert tree_equal(again, state)
    assert list(again) == list(state)
    assert again["a"][0] is again[0]["deep"]
    assert again["extra"][0] is not again["extra"][1]
    assert again["extra"][0].state is again["extra"][1].state  # shared array
    assert again["extra"][1].frozen

    odd = [float("nan"), float("inf"), -0.0, 0.0]
    save_state(tmp_path / "t", odd)
    assert bits_equal(load_state(tmp_path / "t"), odd)
    assert type(again["pair"]) is Pair
    leaves = [again["a"][0], again["a"][1][0], again["pair"].w, again["pair"].b]
    assert all(leaf.rule is leaves[0].rule for leaf in leaves)  # one rule object


@pytest.mark.parametrize("tree", [None, [], (), {}, [None, (None,)]])
def test_trivial_trees(tmp_path, tree):
    save_state(tmp_path / "s", tree)
    assert bits_equal(load_state(tmp_path / "s"), tree)


def test_a_bare_leaf_and_paths_of_every_kind(tmp_path):
    leaf = opt.setup(opt.Adam(), np.zeros((2, 3), F16))
    for path in (str(tmp_path / "a"), tmp_path / "b", os.fsencode(tmp_path / "c")):
        save_state(path, leaf)
        assert bits_equal(load_state(path), leaf)
    assert sorted(os.listdir(tmp_path)) == ["a", "b", "c"]  # no temporary files left


def test_loaded_arrays_are_writable_aligned_and_c_ordered(tmp_path):
    state = opt.setup(opt.OAdam(), {"x": np.asfortranarray(np.ones((3, 4))), "y": np.ones(1)})
    save_state(tmp_path / "s", state)
    again = load_state(tmp_path / "s")
    for a in (*again["x"].state[:2], again["x"].state.term, again["y"].state.m):
        assert a.flags.writeable and a.flags.c_contiguous and a.flags.aligned
        assert a.ctypes.data % 64 == 0


def test_user_namedtuples_rebuilt_by_name_or_as_given(tmp_path):
    model = Pair(np.ones(3, F32), np.zeros(2, F32))
    state = opt.setup(opt.Momentum(), model)
    save_state(tmp_path / "s", state)

    mine = load_state(tmp_path / "s", types=[Pair])
    assert type(mine) is Pair and tree_equal(mine, state)

    made = load_state(tmp_path / "s")
    assert type(made) is not Pair and type(made).__name__ == "Pair"
    assert made._fields == ("w", "b") and made.w == state.w and made.b == state.b
    assert type(load_state(tmp_path / "s")) is type(made)  # one class per name
    # it trains like the original, pickles, and saves under the original name
    made, model2 = opt.update_(made, copy_model(model, {}), grads_for(model, 0))
    state, model = opt.update_(state, model, grads_for(model, 0))
    assert bits_equal(model2, model) and bits_equal(list(made), list(state))
    assert bits_equal(list(pickle.loads(pickle.dumps(made))), list(made))
    save_state(tmp_path / "t", made)
    save_state(tmp_path / "u", state)
    assert (tmp_path / "t").read_bytes() == (tmp_path / "u").read_bytes()

    other = collections.namedtuple("Pair", ["x", "y"])
    other.__module__, other.__qualname__ = Pair.__module__, Pair.__qualname__
    with pytest.raises(CheckpointError, match="fields"):
        load_state(tmp_path / "s", types=[other])
    with pytest.raises(TypeError, match="namedtuple"):
        load_state(tmp_path / "s", types=[dict])


def test_pickle_round_trips_a_state_tree(tmp_path):
    w = np.ones(4, F32)
    model = {"a": w, "b": [w, np.ones(2, F16)], "c": (np.zeros(3),)}
    rule = opt.OptimiserChain(opt.AccumGrad(2), opt.ClipNorm(1.0), opt.RAdam())
    state = opt.setup(rule, model)
    state["b"][1] = opt.setup(opt.MixedPrecision(opt.Adam()), model["b"][1])
    opt.freeze_(state["c"])
    state, model = train(state, model, 0, 3)
    for tree in (state, load_state(_saved(tmp_path, state))):
        again = pickle.loads(pickle.dumps(tree))
        assert tree_equal(again, state) and bits_equal(again, state)
        assert again["a"] is again["b"][0] and again["c"][0].frozen


def _saved(tmp_path, tree):
    save_state(tmp_path / "s", tree)
    return tmp_path / "s"


def test_loading_unpickles_nothing(tmp_path, monkeypatch):
    state = opt.setup(opt.Adam(), {"x": np.ones(2)})
    save_state(tmp_path / "s", state)

    def boom(*a, **k):
        raise AssertionError("pickle used")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, boom)
    monkeypatch.setattr(np, "load", boom)
    assert tree_equal(load_state(tmp_path / "s"), state)


# ----------------------------------------------------------------------------------------
# what save_state refuses


class SignSGD(opt.Rule):
    def __init__(self, eta=0.01):
        self.eta = eta

    def apply(self, state, x, dx):
        return state, self.eta * np.sign(dx)

    def __eq__(self, other):
        return type(other) is SignSGD and other.eta == self.eta

    __hash__ = None


class MyAdam(opt.Adam):
    pass


@pytest.mark.parametrize(
    "rule",
    [
        SignSGD(),
        opt.OptimiserChain(opt.ClipGrad(1.0), SignSGD()),
        MyAdam(),
        opt.MixedPrecision(MyAdam()),
    ],
)
def test_save_refuses_user_rules(tmp_path, rule):
    state = opt.setup(rule, {"x": np.ones(2, F32)})
    with pytest.raises(TypeError, match="pickle"):
        save_state(tmp_path / "s", state)
    assert os.listdir(tmp_path) == []
    # pickle is the route for such trees
    again = pickle.loads(pickle.dumps(state))
    assert type(again["x"].rule) is type(rule) and again["x"].rule == rule
    assert tree_equal(again, state) and bits_equal(again, state)


@pytest.mark.parametrize(
    "tree, error, match",
    [
        ({"x": Leaf(opt.Momentum(), np.array([None, 1.0], dtype=object))}, TypeError, "object"),
        ({"x": np.array([1, "a"], dtype=object)}, TypeError, "object"),
        ({"x": np.array(["text"])}, TypeError, "dtype"),
        ({"x": np.zeros(2, [("a", F32)])}, TypeError, "dtype"),
        ({"x": np.tanh}, TypeError, "cannot store"),
        ({"x": collections.OrderedDict()}, TypeError, "cannot store"),
        ({"x": Leaf(opt.Adam(), np.zeros(3))}, ValueError, "state"),
        ({"x": Leaf(opt.Momentum(), Leaf(opt.Momentum(), np.zeros(2)))}, TypeError, "Leaf"),
        ({frozenset(): None}, TypeError, "key"),
    ],
)
def test_save_refuses_what_it_cannot_store(tmp_path, tree, error, match):
    with pytest.raises(error, match=match):
        save_state(tmp_path / "s", tree)
    assert os.listdir(tmp_path) == []


def test_save_refuses_a_tree_that_contains_itself(tmp_path):
    tree = []
    tree.append(tree)
    with pytest.raises(ValueError, match="contains itself"):
        save_state(tmp_path / "s", tree)


# ----------------------------------------------------------------------------------------
# malformed files


@pytest.fixture
def small(tmp_path):
    """The bytes of a small checkpoint: two leaves (Adam and a chain), a tie, a bool array."""
    w = np.ones(3, F32)
    state = {"w": opt.setup(opt.Adam(), w), "v": opt.setup(opt.RAdam(), np.zeros((2, 2)))}
    state["tied"] = state["w"]
    state["flags"] = np.array([True, False])
    save_state(tmp_path / "small", state)
    return (tmp_path / "small").read_bytes()


def _load(tmp_path, data):
    path = tmp_path / "bad"
    path.unlink(missing_ok=True)  # a new file: truncating one is slow on some filesystems
    path.write_bytes(data)
    return load_state(path)


def test_the_documented_layout(small):
    version, doc, region = split(small)
    assert version == VERSION == 1
    assert set(doc) == {"writer", "tree", "leaves", "rules", "arrays", "data_size"}
    assert doc["data_size"] == len(region)
    assert join(version, doc, region) == small


def test_truncated_files(tmp_path, small):
    for n in range(len(small)):
        with pytest.raises(CheckpointError, match="truncated"):
            _load(tmp_path, small[:n])
    with pytest.raises(CheckpointError, match="appended"):
        _load(tmp_path, small + b"\0")


def test_a_byte_changed_anywhere(tmp_path, small):
    for i in range(len(small)):
        for flip in (0xFF, 0x01):
            data = bytearray(small)
            data[i] ^= flip
            with pytest.raises(CheckpointError) as info:
                _load(tmp_path, bytes(data))
            msg = str(info.value)
            if i < 14:
                assert "not an optimisers checkpoint" in msg
            elif 16 <= i < 24:
                assert "truncated" in msg or "appended" in msg
            else:  # the version too: it is believed only after the checksum
                assert "checksum" in msg


@pytest.mark.parametrize("byte", [14, 15])
def test_a_changed_version_byte_is_a_checksum_error(tmp_path, small, byte):
    data = bytearray(small)
    data[byte] ^= 0xFF  # version 65281 or 254: not to be believed
    with pytest.raises(CheckpointError, match="checksum") as info:
        _load(tmp_path, bytes(data))
    path, _, what = str(info.value).partition(": ")
    assert path == str(tmp_path / "bad") and "version" not in what


@pytest.mark.parametrize(
    "data",
    [
        b"PK\x03\x04" + bytes(100),  # a zip (or .npz)
        b"\x93NUMPY\x01\x00" + bytes(100),  # a .npy
        pickle.dumps({"x": 1}, protocol=4),  # a pickle
        b"hello, world, this is text and no checkpoint at all",
        MAGIC[:-1] + b"?" + bytes(100),
    ],
)
def test_wrong_magic(tmp_path, data):
    with pytest.raises(CheckpointError, match="not an optimisers checkpoint"):
        _load(tmp_path, data)


@pytest.mark.parametrize("version, match", [(2, "newer"), (65535, "newer"), (0, "unknown")])
def test_other_format_versions(tmp_path, small, version, match):
    _, doc, region = split(small)
    pattern = f"version {version}.*{match}|{match}.*version {version}"
    with pytest.raises(CheckpointError, match=pattern):
        _load(tmp_path, join(version, doc, region))


def _leaf_index(doc, rule_name):
    return next(
        i for i, e in enumerate(doc["leaves"]) if doc["rules"][e["rule"]]["rule"] == rule_name
    )


def _set(path, value):
    """A mutation of the header document: set doc[path...] = value."""

    def mutate(doc, region):
        d = doc
        for k in path[:-1]:
            d = d[k]
        if value is _DELETE:
            del d[path[-1]]
        else:
            d[path[-1]] = value
        return doc, region

    return mutate


_DELETE = object()


def _overlap(doc, region):
    doc["arrays"][1]["offset"] = doc["arrays"][0]["offset"]
    return doc, region


def _wrong_state(doc, region):
    doc["leaves"][0]["state"] = {"array": 0}
    return doc, region


def _swap_state(doc, region):
    a, r = _leaf_index(doc, "Adam"), _leaf_index(doc, "RAdam")
    doc["leaves"][a]["state"], doc["leaves"][r]["state"] = (
        doc["leaves"][r]["state"],
        doc["leaves"][a]["state"],
    )
    return doc, region


def _other_state_type(doc, region):
    doc["leaves"][0]["state"]["namedtuple"] = "optimisers._rules_adam.AdaMaxState"
    return doc, region


def _shape(doc, region):
    a = _leaf_index(doc, "Adam")
    i = doc["leaves"][a]["state"]["values"][2]["array"]  # beta_t: 2 elements
    doc["arrays"][i]["shape"] = [1]
    return doc, region


def _bool_byte(doc, region):
    i = doc["tree"]["dict"][3][1]["array"]
    off = doc["arrays"][i]["offset"]
    region = region[:off] + b"\x02" + region[off + 1 :]
    return doc, region


def _tree(value):
    return _set(["tree"], value)


MUTATIONS = {
    "unknown rule": (_set(["rules", 0, "rule"], "Evil"), "not a rule of optimisers"),
    "module path as rule": (_set(["rules", 0, "rule"], "os.system"), "not a rule of optimisers"),
    "base class as rule": (_set(["rules", 0, "rule"], "Rule"), "not a rule of optimisers"),
    "rule name not a string": (_set(["rules", 0, "rule"], ["Adam"]), "not a rule of optimisers"),
    "object dtype": (_set(["arrays", 0, "dtype"], "|O"), "dtype '\\|O' is not allowed"),
    "object dtype 8": (_set(["arrays", 0, "dtype"], "|O8"), "object"),
    "string dtype": (_set(["arrays", 0, "dtype"], "<U3"), "not allowed"),
    "void dtype": (_set(["arrays", 0, "dtype"], "|V8"), "not allowed"),
    "datetime dtype": (_set(["arrays", 0, "dtype"], "<M8[s]"), "not allowed"),
    "non-canonical dtype": (_set(["arrays", 0, "dtype"], "<b1"), "not a dtype"),
    "negative shape": (_set(["arrays", 0, "shape"], [-1]), "shape"),
    # no element, but an extent numpy cannot index: its own ValueError must not get through
    "zero beside a huge dimension": (_set(["arrays", 0, "shape"], [0, 2**62]), "too big"),
    "zero beside a dimension past 64 bits": (_set(["arrays", 0, "shape"], [2**64, 0]), "too big"),
    "zero beside dimensions whose product overflows": (
        _set(["arrays", 0, "shape"], [2**40, 0, 2**40]),
        "too big",
    ),
    "shape not ints": (_set(["arrays", 0, "shape"], [1.5]), "shape"),
    "offset past the end": (_set(["arrays", 0, "offset"], 2**40), "past the end"),
    "unaligned offset": (_set(["arrays", 0, "offset"], 3), "multiple of 64"),
    "overlapping arrays": (_overlap, "overlap"),
    "extra array key": (_set(["arrays", 0, "order"], "F"), "keys"),
    "rule index": (_set(["leaves", 0, "rule"], 99), "not an index"),
    "leaf index": (_tree({"leaf": 99}), "not an index"),
    "array index": (_tree({"array": -1}), "cannot stand here|not an index"),
    "leaf in a state": (_set(["leaves", 0, "state"], {"leaf": 0}), "cannot stand here"),
    "rule in the tree": (_tree({"rule": "Adam", "fields": {}}), "cannot stand here"),
    "eta out of range": (_set(["rules", 0, "fields", "eta"], -1.0), "refuses"),
    "eta of the wrong type": (_set(["rules", 0, "fields", "eta"], "0.1"), "refuses"),
    "eta an int": (_set(["rules", 0, "fields", "eta"], 1), "form save_state writes"),
    "eta too large": (_set(["rules", 0, "fields", "eta"], 2**2000), "refuses"),
    "unknown field": (_set(["rules", 0, "fields", "bogus"], 1), "fields"),
    "missing field": (_set(["rules", 0, "fields", "eta"], _DELETE), "fields"),
    "frozen not a bool": (_set(["leaves", 0, "frozen"], 1), "frozen"),
    "state not the rule's": (_wrong_state, "not a state of"),
    "states swapped": (_swap_state, "not a state of"),
    "state of another type": (_other_state_type, "not a state of|fields"),
    "scalar array shape": (_shape, "not a state of"),
    "boolean byte 2": (_bool_byte, "boolean"),
    "bare JSON list": (_tree([1, 2]), "bare JSON list"),
    "unknown tag": (_tree({"pickle": "gASV"}), "cannot stand here"),
    "float text": (_tree({"float": "1e999"}), "not inf"),
    "scalar hex length": (_tree({"scalar": "<f4", "hex": "00"}), "hex"),
    "scalar hex text": (_tree({"scalar": "<f4", "hex": "zzzzzzzz"}), "hex"),
    "object scalar": (_tree({"scalar": "|O", "hex": "00"}), "not allowed"),
    "namedtuple field injection": (
        _tree(
            {"namedtuple": "os.system", "fields": ["__import__('os').system('x')"], "values": [1]}
        ),
        "not a field name",
    ),
    "namedtuple keyword field": (
        _tree({"namedtuple": "x.Y", "fields": ["def"], "values": [1]}),
        "not a field name",
    ),
    "namedtuple repeated field": (
        _tree({"namedtuple": "x.Y", "fields": ["a", "a"], "values": [1, 2]}),
        "repeated",
    ),
    "namedtuple lengths": (
        _tree({"namedtuple": "x.Y", "fields": ["a"], "values": [1, 2]}),
        "as many values",
    ),
    "dict item": (_tree({"dict": [[1]]}), "pair"),
    "dict repeated key": (_tree({"dict": [["a", 1], ["a", 2]]}), "twice"),
    "dict key a list": (_tree({"dict": [[{"list": []}, 1]]}), "cannot stand here"),
    "extra header key": (_set(["extra"], 1), "keys"),
    "missing header key": (_set(["writer"], _DELETE), "keys"),
    "data size": (_set(["data_size"], 0), "data_size"),
}


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_malformed_header_with_a_valid_checksum(tmp_path, small, name):
    mutate, match = MUTATIONS[name]
    version, doc, region = split(small)
    doc, region = mutate(doc, region)
    with pytest.raises(CheckpointError, match=match) as info:
        _load(tmp_path, join(version, doc, region))
    assert str(info.value).startswith(str(tmp_path / "bad"))


@pytest.mark.parametrize(
    "header, match",
    [
        (b'{"tree": NaN}', "not JSON"),
        (b'{"tree": 1e999}', "not finite"),
        (b'{"writer": "a", "writer": "b"}', "repeats"),
        (b'{"tree": ', "not valid JSON"),
        ('{"writer": "\u00e9"}'.encode("utf-8"), "not valid JSON"),
        (b"\x80\x81", "not valid JSON"),
    ],
)
def test_header_that_is_not_strict_json(tmp_path, small, header, match):
    version, _, region = split(small)
    with pytest.raises(CheckpointError, match=match):
        _load(tmp_path, join_raw(version, header, region))


@pytest.mark.parametrize("depth", [700, 100_000])
def test_nested_too_deeply(tmp_path, small, depth):
    version, doc, region = split(small)
    doc["tree"] = "HERE"
    text = json.dumps(doc).replace('"HERE"', '{"list":[' * depth + "0" + "]}" * depth)
    with pytest.raises(CheckpointError, match=r"nested too deeply|not valid JSON"):
        _load(tmp_path, join_raw(version, text.encode(), region))


def test_names_in_a_file_are_never_imported(tmp_path, small):
    version, doc, region = split(small)
    doc["tree"] = {"namedtuple": "evil_module_xyz.sub.Thing", "fields": ["a"], "values": [1]}
    thing = _load(tmp_path, join(version, doc, region))
    assert type(thing).__name__ == "Thing" and thing.a == 1
    assert "evil_module_xyz" not in sys.modules
    doc["tree"] = {"namedtuple": "<lambda>", "fields": [], "values": []}
    assert type(_load(tmp_path, join(version, doc, region))).__name__ == "Record"


def test_a_missing_file_is_an_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_state(tmp_path / "nothing")


@pytest.mark.parametrize("kind", [str, os.fsencode, lambda p: p])
def test_saving_into_a_missing_folder_names_the_path_given(tmp_path, kind):
    path = kind(tmp_path / "no such folder" / "s.ckpt")
    with pytest.raises(FileNotFoundError) as info:
        save_state(path, None)
    assert info.value.filename == os.fspath(path)  # not the temporary file's name
    assert ".tmp" not in str(info.value)


def test_saving_over_a_folder_names_the_path_given(tmp_path):
    (tmp_path / "folder").mkdir()
    with pytest.raises(IsADirectoryError) as info:
        save_state(tmp_path / "folder", None)
    assert info.value.filename == str(tmp_path / "folder") and ".tmp" not in str(info.value)
    assert os.listdir(tmp_path) == ["folder"]  # no temporary file left


@pytest.mark.skipif(not hasattr(os, "pathconf"), reason="no pathconf to ask the name limit")
def test_saving_to_a_name_near_the_file_system_limit(tmp_path):
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    path = tmp_path / ("s" * limit)
    save_state(path, [np.ones(2)])  # the temporary file's name must fit as well
    assert bits_equal(load_state(path), [np.ones(2)])
    assert os.listdir(tmp_path) == [path.name]


def test_empty_arrays_with_large_dimensions_round_trip(tmp_path):
    tree = [np.empty((0, 2**40), F32), np.empty((2**20, 0, 2**20), np.complex128)]
    save_state(tmp_path / "s", tree)
    assert bits_equal(load_state(tmp_path / "s"), tree)


def test_a_checkpoint_of_release_0_1_0_loads_with_its_running_products_widened():
    """tests/data/adamw-0.1.0.ckpt was written by release 0.1.0 (ClipNorm then AdamW, two
    steps, a float32 and a complex64 parameter), which kept beta_t in the parameter's real
    dtype: it loads, beta_t widened exactly to float64, and training goes on."""
    path = os.path.join(os.path.dirname(__file__), "data", "adamw-0.1.0.ckpt")
    state = load_state(path)
    for k in ("w", "z"):
        beta_t = state[k].state[1].beta_t
        assert beta_t.dtype == np.float64
        b = np.array([0.9, 0.999], np.float32)
        assert np.array_equal(beta_t, (b * b * b).astype(np.float64))  # rounded in float32
    model = {
        "w": np.array([0.9780111, -2.015992, 0.5189905], np.float32),
        "z": np.array([0.99800104 + 0.9780111j, 2.015992 - 0.99800104j], np.complex64),
    }
    state, model = opt.update_(
        state, model, {"w": np.ones(3, np.float32), "z": np.ones(2, np.complex64)}
    )
    assert np.all(np.isfinite(model["w"])) and state["w"].state[1].beta_t.dtype == np.float64
