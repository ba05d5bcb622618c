"""The checkpoint paths the rest of the suite left unrun (issue 21, point 3: each line the
coverage report listed is tested here or was removed): malformed files that pass the
checksum, a file that shrinks while it is read, a failed save that is not an OSError, the
rebuilding of a rule whose constructor spreads a field, and the writer of a build that was
never installed."""

from __future__ import annotations

import builtins
import hashlib
import importlib
import inspect
import io
import pathlib
import struct
import sys
from collections.abc import Callable
from importlib import metadata
from typing import Any

import numpy as np
import pytest

import optimisers as opt
from optimisers import _checkpoint, _checkpoint_decode, _checkpoint_format, schedules
from optimisers._checkpoint import CheckpointError, load_state, save_state
from optimisers._checkpoint_format import MAGIC, VERSION
from optimisers._checkpoint_records import known_types
from optimisers._checkpoint_schema import make_rule, parse_dtype, state_problem
from test_checkpoint import join, split


@pytest.fixture
def saved(tmp_path: pathlib.Path) -> bytes:
    """The bytes of a checkpoint of two leaves, an Adam (float32) and a Descent."""
    tree = {
        "w": opt.setup(opt.Adam(), np.ones(3, np.float32)),
        "b": opt.setup(opt.Descent(0.1), np.zeros(2)),
    }
    save_state(tmp_path / "saved", tree)
    return (tmp_path / "saved").read_bytes()


def _load(tmp_path: pathlib.Path, data: bytes) -> Any:
    path = tmp_path / "bad"
    path.write_bytes(data)
    return load_state(path)


def _mutated(saved: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
    version, doc, region = split(saved)
    change(doc)
    return join(version, doc, region)


def test_a_leaf_count_that_is_not_a_whole_number(tmp_path: pathlib.Path, saved: bytes) -> None:
    def change(doc: dict[str, Any]) -> None:
        doc["leaves"][0]["count"] = -1

    with pytest.raises(CheckpointError, match=r"count must be a whole number >= 0, got -1"):
        _load(tmp_path, _mutated(saved, change))


def test_a_tree_list_that_is_not_a_json_list(tmp_path: pathlib.Path, saved: bytes) -> None:
    def change(doc: dict[str, Any]) -> None:
        doc["tree"] = {"list": {"a": 1}}

    with pytest.raises(CheckpointError, match="must be a JSON list, got dict"):
        _load(tmp_path, _mutated(saved, change))


@pytest.mark.parametrize(
    "schedule, match",
    [
        ({"schedule": "sawtooth", "fields": {}}, "'sawtooth' is not a schedule of optimisers"),
        ({"schedule": "linear", "fields": [1.0]}, "'linear' is not a schedule of optimisers"),
        ({"schedule": "constant", "fields": {"value": -1.0, "extra": 1.0}}, "extra"),
    ],
)
def test_a_schedule_the_loader_refuses(
    tmp_path: pathlib.Path, schedule: dict[str, Any], match: str
) -> None:
    state = opt.setup(opt.Descent(schedules.constant(0.5)), np.ones(2))
    save_state(tmp_path / "s", state)
    version, doc, region = split((tmp_path / "s").read_bytes())
    doc["rules"][0]["fields"]["eta"] = schedule
    with pytest.raises(CheckpointError, match=match):
        _load(tmp_path, join(version, doc, region))


def test_a_tree_nested_past_the_recursion_limit(saved: bytes) -> None:
    _, doc, region = split(saved)
    doc["tree"] = 0
    for _ in range(60):
        doc["tree"] = {"list": [doc["tree"]]}
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack()) + 40)
    try:
        with pytest.raises(CheckpointError, match="nested too deeply"):
            _checkpoint_decode.decode(doc, np.frombuffer(region, np.uint8), known_types(()))
    finally:
        sys.setrecursionlimit(old)


def test_an_unaligned_data_region_gives_aligned_arrays(saved: bytes) -> None:
    _, doc, region = split(saved)
    shifted = np.frombuffer(b"\0" + region, np.uint8)[1:]  # off by one byte
    tree = _checkpoint_decode.decode(doc, shifted, known_types(()))
    assert tree["w"].state.m.flags.aligned and tree["w"].state.m.dtype == np.float32


def _prefix(total: int, hlen: int) -> bytes:
    return struct.pack("<14sHQQ", MAGIC, VERSION, total, hlen)


def test_a_file_too_short_for_its_prefix_and_checksum(tmp_path: pathlib.Path) -> None:
    data = _prefix(40, 0) + bytes(8)  # size 40 as it says, under 32 + 32
    with pytest.raises(CheckpointError, match="cannot hold a prefix and a checksum"):
        _load(tmp_path, data)


def test_a_header_size_past_the_end(tmp_path: pathlib.Path) -> None:
    body = _prefix(96, 1000) + bytes(32)
    with pytest.raises(CheckpointError, match="the header size 1000 runs past the end"):
        _load(tmp_path, body + hashlib.sha256(body).digest())


class _Shrinking(io.BytesIO):
    """A file whose reads stop short of the size it had when opened."""

    def readinto(self, b: Any) -> int:  # type: ignore[override]
        return 0


def test_a_file_that_shrinks_while_it_is_read(
    tmp_path: pathlib.Path, saved: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "s"
    path.write_bytes(saved)
    real_open = builtins.open

    def fake_open(p: Any, mode: str = "r", *args: Any, **kw: Any) -> Any:
        if pathlib.Path(p) == path and "r" in mode:
            f = _Shrinking(saved)
            f.fileno = real_open(p, mode).fileno  # type: ignore[method-assign]
            return f
        return real_open(p, mode, *args, **kw)

    monkeypatch.setattr(_checkpoint_format, "open", fake_open, raising=False)
    with pytest.raises(CheckpointError, match="shrank while being read"):
        load_state(path)


def test_a_failed_save_that_is_no_os_error_leaves_no_file(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(src: Any, dst: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(_checkpoint_format.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_state(tmp_path / "s", opt.setup(opt.Descent(), np.ones(2)))
    assert list(tmp_path.iterdir()) == []  # the temporary file is gone too


def test_the_writer_of_a_build_that_was_never_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(_checkpoint.metadata, "version", missing)
    assert _checkpoint._writer() == "optimisers (version unknown)"


def test_the_version_of_a_build_that_was_never_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", missing)
    try:
        assert importlib.reload(opt).__version__ == "0+unknown"
    finally:
        monkeypatch.undo()
        importlib.reload(opt)
    assert opt.__version__ != "0+unknown"


class _Spread:
    """A rule-like class whose constructor spreads one field (as OptimiserChain does)."""

    def __init__(self, *parts: int, scale: float = 1.0) -> None:
        self.parts, self.scale = parts, scale


class _Plain:
    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale


def test_rebuilding_a_rule_by_its_constructor() -> None:
    r = make_rule(_Spread, {"parts": (1, 2), "scale": 2.0})
    assert r.parts == (1, 2) and r.scale == 2.0
    with pytest.raises(TypeError, match=r"parts must be a tuple, got list"):
        make_rule(_Spread, {"parts": [1, 2]})
    with pytest.raises(TypeError, match=r"_Plain\(\) takes no parameter for the fields"):
        make_rule(_Plain, {"parts": (1,)})


def test_a_state_that_does_not_fit_its_rule() -> None:
    class Broken(opt.Rule):
        def init(self, x: Any) -> Any:
            raise ValueError("no state for this")

    assert "keeps no state for arrays of float64 (no state for this)" in str(
        state_problem(Broken(), np.zeros(2))
    )
    # two arrays shaped like the parameter that differ in shape
    odd = opt.AdamState(np.zeros(2), np.zeros(3), np.ones(2))
    assert "differ in shape" in str(state_problem(opt.Adam(), odd))


def test_a_dtype_numpy_cannot_parse() -> None:
    with pytest.raises(CheckpointError, match="not a dtype"):
        parse_dtype("<f3", "arrays[0]")
