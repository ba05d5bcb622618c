r"""Checkpoints: a state tree to one file and back, exactly, without pickle.

:func:`save_state` writes rules, hyper-parameters, states, frozen flags, the tree's shape and
its ties; :func:`load_state` reads them back equal to what was saved, so that training
continues bit for bit.  Loading parses JSON and reads raw bytes into numpy arrays; it never
unpickles, never imports a module named in the file, and builds only the built-in rules
(those of ``optimisers.RULES``, the registry every rule class of the package joins).  A
malformed, truncated or tampered file raises :class:`CheckpointError`, a ``ValueError``,
saying what is wrong.

This module writes and reads the file: the prefix, the header's JSON text, the layout and
the checksum.  What the header holds is encoded by ``_checkpoint_encode`` and validated by
``_checkpoint_decode``.

File format, version 1
----------------------
Integers are little-endian.  ``D`` is ``32 + H`` rounded up to a multiple of 64::

    offset          size       content
    0               14         magic b"\x89OPT-STATE\r\n\x1a\n"
    14              2          format version, uint16 (1)
    16              8          size of the whole file in bytes, uint64
    24              8          H, size of the JSON header in bytes, uint64
    32              H          the JSON header, ASCII (strict JSON: no NaN or Infinity)
    32 + H          D - 32 - H zero bytes
    D               data_size  the array buffers: array i at D + arrays[i].offset (offsets
                               are multiples of 64), zero bytes between them
    D + data_size   32         SHA-256 of every byte before it

The header is one JSON object with exactly these keys:

``"writer"``
    ``"optimisers <version>"``, for information only.
``"tree"``
    the state tree, a *value* (below).
``"leaves"``
    a list of ``{"rule": i, "state": value, "frozen": bool, "count": n}``, one per distinct
    ``Leaf``; ``i`` indexes ``"rules"``, ``n`` is its count of updates (what its rule's
    schedules are evaluated at; files of release 0.1.0 have no ``"count"``: 0).  A ``Leaf``
    at several places of the tree (tied weights) is stored once and referred to by its
    index, so it comes back as one shared object.
``"rules"``
    a list of rules ``{"rule": "Adam", "fields": {"eta": 0.001, ...}}``, one per distinct rule
    object.  ``"rule"`` names a class of ``optimisers.RULES``, ``"fields"`` holds exactly the
    class's fields: a dataclass's fields, or else the public names of its ``__slots__``
    (``OptimiserChain``: ``opts``, the tuple of its rules; ``AccumGrad``: ``n``;
    ``MixedPrecision``: ``rule``, ``dtype``).
``"arrays"``
    a list of ``{"dtype": "<f4", "shape": [3, 2], "offset": 0}``: C-ordered raw bytes in the
    byte order the dtype names.  Dtypes are numpy's ``dtype.str`` of kinds ``b i u f c``
    only; object, string, void, datetime and structured dtypes are refused.  An array object
    at several places of the tree is stored once and comes back as one shared array.
``"data_size"``
    the size in bytes of the data region.

A *value* is JSON ``null``, ``true``, ``false``, an integer (a Python ``int``), a number with
a fraction or an exponent (a finite Python ``float``), a string, or an object of one of these
forms (no other keys):

* ``{"float": "inf" | "-inf" | "nan"}``: a non-finite Python ``float``;
* ``{"tuple": [v, ...]}``, ``{"list": [v, ...]}``: a ``tuple``, a ``list``;
* ``{"dict": [[k, v], ...]}``: a ``dict``, in this order; keys are ``None``, bools, numbers,
  strings, numpy scalars or tuples of those;
* ``{"namedtuple": "module.QualName", "fields": [...], "values": [...]}``: see below;
* ``{"scalar": "<f4", "hex": "0000803f"}``: a numpy scalar, its dtype and raw bytes;
* ``{"array": i}``: ``arrays[i]``, in the tree and in states;
* ``{"leaf": i}``: ``leaves[i]``, in the tree only;
* ``{"dtype": "<f4"}`` and ``{"rule": ..., "fields": ...}``: a numpy dtype and a rule, in
  rule fields only (``MixedPrecision``'s dtype and rule, a chain's members);
* ``{"schedule": "cosine_decay", "fields": {"init_value": 0.001, ...}}``: a schedule of
  ``optimisers.schedules.SCHEDULES``, rebuilt by its constructor from its fields, in rule
  fields only (a scheduled hyper-parameter); dicts are allowed in rule fields for them.

Namedtuples are stored by their type's ``module.qualname`` and field names.  On load, the
state types of this package (``AdamState``, ...) come back as themselves, as does any type
passed in ``load_state(path, types=[...])`` with that name and those fields; any other name
becomes a namedtuple class made on the spot with the same (unqualified) name and fields:
nothing named in a file is ever imported.  Such a class trains just as the original type
does, is picklable, and is saved again under the original name.

Checks on load, in order: the magic, the size written in the prefix against the file's size
(truncation), the SHA-256 (any changed byte), and only then what the prefix says besides
(the version, the header's size), then the header: strict JSON, exactly the keys above,
every index, dtype, shape (one numpy can index) and offset (inside the data region, not
overlapping), every rule name (a built-in rule) and its fields (validated by the rule's own
constructor, and required in the canonical form ``save_state`` writes), and every ``Leaf``'s
state against the structure its rule's ``init`` gives (containers, namedtuple types, scalar
types, array dtypes, the shapes of per-step scalar arrays, one shape for the arrays shaped
like the parameter).  The checksum detects accidents, not forgery: anyone can write a file
with a valid checksum, which is why everything after it is validated as well.

Versions: any change to the layout or to the header's keys and forms gets a new version
number, but every version keeps the magic, the version and the file's size as the first
24 bytes and the SHA-256 as the last 32, so that a file of any version is checked before its
version is believed.  A release reads every version up to its own (the reader of each old
version stays in these modules) and refuses later ones with a message asking for an upgrade.
This release writes and reads version 1.

Saving writes a temporary file beside the target, flushes it to disk (``fsync``) and renames
it over the target, so an interrupted save leaves the previous checkpoint intact.

Limitations: only the built-in rules are stored (for trees with rules written in Python, use
``pickle``, and load only pickles you trust); ties are kept for ``Leaf`` objects, rule
objects and array objects, not for containers nor for distinct arrays that view the same
memory; arrays come back C-ordered; loaded arrays are writable, 64-byte aligned views into
one buffer that holds the file (a whole file is read into memory); a ``Leaf``'s scratch
buffer is not stored.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import secrets
import struct
from typing import Any

import numpy as np

__all__ = [
    "CheckpointError",
    "MAGIC",
    "VERSION",
    "ALIGN",
    "align",
    "write_checkpoint",
    "read_checkpoint",
]

MAGIC = b"\x89OPT-STATE\r\n\x1a\n"
VERSION = 1
ALIGN = 64
_PREFIX = struct.Struct("<14sHQQ")  # magic, version, file size, header size
_DIGEST = 32  # sha256


class CheckpointError(ValueError):
    """A checkpoint file that cannot be loaded.

    The file is not a checkpoint, is truncated, corrupted, from a later format version, or
    describes something that is not allowed.  Raised by :func:`load_state`; the message
    starts with the file's path and says what is wrong.  A subclass of ``ValueError``, so
    ``except ValueError`` catches it too.

    Examples
    --------
    >>> import os, tempfile
    >>> import optimisers as opt
    >>> with tempfile.TemporaryDirectory() as d:
    ...     path = os.path.join(d, "garbage.ckpt")
    ...     with open(path, "wb") as f:
    ...         _ = f.write(b"these bytes are not a checkpoint")
    ...     try:
    ...         opt.load_state(path)
    ...     except opt.CheckpointError as e:
    ...         print(type(e).__name__, isinstance(e, ValueError))
    ...         print("not an optimisers checkpoint" in str(e))
    CheckpointError True
    True
    """


def align(n):
    """``n`` rounded up to a multiple of :data:`ALIGN`: where a header or array may end."""
    return -(-n // ALIGN) * ALIGN


# ----------------------------------------------------------------------------------------
# writing


def _raw(a):
    c = a if a.flags.c_contiguous else np.ascontiguousarray(a)
    return c.reshape(-1).view(np.uint8)


def write_checkpoint(path: Any, header: dict[str, Any], arrays: list[Any]) -> None:
    """Write a checkpoint file: ``header`` (the header document) and ``arrays`` (the arrays
    of ``header["arrays"]``, each written at its entry's offset).

    The file is written to a temporary name beside ``path``, flushed to disk and renamed
    over ``path``, so an interrupted save leaves the previous file intact.  An ``OSError``
    names ``path``, not the temporary file."""
    text = json.dumps(header, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode(
        "ascii"
    )
    data_start = align(_PREFIX.size + len(text))
    total = data_start + header["data_size"] + _DIGEST
    path = os.fspath(path)
    # a short name of its own, not the target's name plus a suffix, which would be too long
    # for the file system where the target's name is close to its limit
    name = f".optimisers-{secrets.token_hex(6)}.tmp"
    tmp = os.path.join(
        os.path.dirname(path), os.fsencode(name) if isinstance(path, bytes) else name
    )
    h = hashlib.sha256()
    try:
        with open(tmp, "xb") as f:

            def put(b):
                h.update(b)
                f.write(b)

            put(_PREFIX.pack(MAGIC, VERSION, total, len(text)))
            put(text)
            put(bytes(data_start - _PREFIX.size - len(text)))
            pos = 0
            for a, e in zip(arrays, header["arrays"]):
                put(bytes(e["offset"] - pos))
                put(_raw(a))
                pos = e["offset"] + a.nbytes
            f.write(h.digest())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno is not None:
            # the temporary file's name means nothing to the caller: name the path given
            raise type(e)(e.errno, e.strerror, path) from None
        raise


# ----------------------------------------------------------------------------------------
# reading


def _read_checked(path):
    """The file's bytes in an aligned buffer, once its checksum matches."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(_PREFIX.size)
        if len(head) < len(MAGIC):
            if not head:
                raise CheckpointError(
                    f"{path!s}: the file is empty (truncated, or not a checkpoint)"
                )
            if MAGIC.startswith(head):
                raise CheckpointError(f"{path!s}: the file is truncated ({len(head)} bytes)")
        if head[: len(MAGIC)] != MAGIC:
            raise CheckpointError(
                f"{path!s}: not an optimisers checkpoint (it starts with "
                f"{head[: len(MAGIC)]!r}, a checkpoint with {MAGIC!r})"
            )
        if len(head) < _PREFIX.size:
            raise CheckpointError(f"{path!s}: the file is truncated ({len(head)} bytes)")
        # Only the size is read before the checksum is verified, because it locates the
        # checksum; the version and the header size are believed only after it.
        _, _, total, _ = _PREFIX.unpack(head)
        if total != size:
            if total > size:
                raise CheckpointError(
                    f"{path!s}: the file is truncated (or damaged): it "
                    f"has {size} bytes, its prefix says {total}"
                )
            raise CheckpointError(
                f"{path!s}: the file has {size} bytes, its prefix says "
                f"{total}: damaged, or something was appended"
            )
        if size < _PREFIX.size + _DIGEST:
            raise CheckpointError(
                f"{path!s}: the file is truncated (or damaged): its "
                f"{size} bytes cannot hold a prefix and a checksum"
            )
        raw = np.empty(size + ALIGN, np.uint8)
        start = -raw.ctypes.data % ALIGN
        buf = raw[start : start + size]
        buf[: _PREFIX.size] = np.frombuffer(head, np.uint8)
        view, got = memoryview(buf.data), _PREFIX.size
        while got < size:
            n = f.readinto(view[got:])
            if not n:
                raise CheckpointError(
                    f"{path!s}: the file is truncated (it shrank while being read)"
                )
            got += n
    if hashlib.sha256(view[: size - _DIGEST]).digest() != bytes(view[size - _DIGEST :]):
        raise CheckpointError(
            f"{path!s}: checksum mismatch: the file is corrupted (a byte "
            "differs from what was written)"
        )
    return buf


def _no_duplicates(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise CheckpointError(f"the header repeats the key {k!r} in one object")
        d[k] = v
    return d


def _finite(s):
    v = float(s)
    if not math.isfinite(v):
        raise CheckpointError(f"the header has the number {s}, which is not finite")
    return v


def _no_constant(s):
    raise CheckpointError(
        f'the header has {s}, which is not JSON (non-finite floats are written {{"float": "inf"}})'
    )


def read_checkpoint(path: Any) -> tuple[dict[str, Any], Any]:
    """The header document and the data region (a uint8 array) of a checkpoint file.

    Checks the magic, the size, the checksum, the version, the layout and that the header
    is strict JSON; what the header says is the caller's to validate.  Raises
    :class:`CheckpointError`, its message starting with ``path``."""
    buf = _read_checked(path)
    _, version, _, hlen = _PREFIX.unpack_from(buf)
    if version > VERSION:
        raise CheckpointError(
            f"{path!s}: checkpoint format version {version} is newer "
            f"than this release of optimisers reads (up to {VERSION}); "
            "upgrade optimisers to load it"
        )
    if version != VERSION:
        raise CheckpointError(f"{path!s}: unknown checkpoint format version {version}")
    data_start = align(_PREFIX.size + hlen)
    if data_start + _DIGEST > len(buf):
        raise CheckpointError(f"{path!s}: the header size {hlen} runs past the end")
    try:
        text = buf[_PREFIX.size : _PREFIX.size + hlen].tobytes().decode("ascii")
        header = json.loads(
            text, object_pairs_hook=_no_duplicates, parse_float=_finite, parse_constant=_no_constant
        )
    except CheckpointError as e:
        raise CheckpointError(f"{path!s}: {e}") from None
    except (ValueError, RecursionError) as e:
        raise CheckpointError(f"{path!s}: the header is not valid JSON ({e})") from None
    return header, buf[data_start : len(buf) - _DIGEST]
