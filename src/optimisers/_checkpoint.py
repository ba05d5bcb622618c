"""Checkpoints: :func:`save_state` writes a state tree to one file, :func:`load_state`
reads it back exactly, without pickle.

The format and the checks on load are documented in ``_checkpoint_format``.  Saving encodes
the tree (``_checkpoint_encode``) and writes the file; loading reads the file, checking its
layout and checksum (``_checkpoint_format``), and decodes the tree, checking every part of
the header (``_checkpoint_decode``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from importlib import metadata

from ._checkpoint_decode import decode
from ._checkpoint_encode import encode
from ._checkpoint_format import CheckpointError, read_checkpoint, write_checkpoint

# pickles of records (namedtuples that load_state made on the spot) written before the
# checkpoint modules were split name their rebuilder here
from ._checkpoint_records import known_types
from ._checkpoint_records import make_record as _make_record  # noqa: F401
from ._types import StateTree

__all__ = ["save_state", "load_state", "CheckpointError"]


def _writer() -> str:
    """The header's ``"writer"``: this release, for information only."""
    try:
        return f"optimisers {metadata.version('optimisers')}"
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        return "optimisers (version unknown)"


def save_state(path: str | os.PathLike[str], tree: StateTree) -> None:
    """Write a state tree to one file, which :func:`load_state` reads back exactly.

    Stored: the tree's containers (dict, list, tuple, namedtuple; their order and kinds),
    every ``Leaf`` with its rule and hyper-parameters, its state (arrays with their dtype
    and shape, numpy scalars with their type, Python numbers) and its frozen flag, and the
    ties: a ``Leaf`` (or an array) at several places comes back as one shared object.  No
    pickle: the format (a JSON header, raw array bytes and a SHA-256) is described in
    ``optimisers._checkpoint_format``.  The file is written to a temporary name beside
    ``path`` and renamed over it when complete, so an interrupted save leaves any previous
    checkpoint intact.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write (replaced if it exists).
    tree : state tree
        From :func:`optimisers.setup` (a bare ``Leaf``, ``None`` or nested containers).

    Returns
    -------
    None
        The tree is not changed; read it back with :func:`load_state`.

    Raises
    ------
    TypeError
        For what the format cannot store: a rule that is not one of the built-in rules (a
        rule written in Python: use ``pickle`` for such trees, and load only pickles you
        trust), arrays of object, string or structured dtypes, other Python objects.
    ValueError
        For a ``Leaf`` whose state does not have the structure its rule's ``init`` gives
        (it could not be loaded back), or a tree that contains itself.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np, optimisers as opt
    >>> model = {"w": np.ones((2, 2), np.float32), "b": np.zeros(2, np.float32)}
    >>> state = opt.setup(opt.OptimiserChain(opt.ClipNorm(1.0), opt.Adam(0.01)), model)
    >>> state, model = opt.update_(state, model, {"w": np.ones((2, 2)), "b": np.ones(2)})
    >>> with tempfile.TemporaryDirectory() as d:
    ...     opt.save_state(os.path.join(d, "state.ckpt"), state)
    ...     again = opt.load_state(os.path.join(d, "state.ckpt"))
    >>> again == state
    True
    >>> again["b"].rule.opts
    (ClipNorm(omega=1.0, p=2.0, throw=True), Adam(eta=0.01, beta=(0.9, 0.999), epsilon=1e-08))
    """
    header, arrays = encode(tree, _writer())
    write_checkpoint(path, header, arrays)


def load_state(path: str | os.PathLike[str], *, types: Iterable[type] = ()) -> StateTree:
    """Read a state tree written by :func:`save_state`.

    The tree comes back equal to what was saved: containers and their kinds, rules and
    hyper-parameters, every state array with its dtype and shape, numpy scalar types, frozen
    flags, and ties (a ``Leaf`` or array at several places is one shared object).  Training
    continues bit for bit.  Loading never unpickles, imports or runs anything named in the
    file: rules are built only from the built-in rules, and every part of the file is
    checked first (see ``optimisers._checkpoint_format`` for the format and the checks).

    Parameters
    ----------
    path : str or os.PathLike
        The file written by :func:`save_state`.
    types : iterable of namedtuple classes, optional
        Namedtuple types of your model to rebuild as themselves (matched by
        ``module.qualname`` and field names).  Namedtuples of other types come back as
        namedtuple classes made on the spot with the same name and fields, which train the
        same; the library's own state types always come back as themselves.

    Returns
    -------
    state tree
        Equal to the tree that was saved.  Its arrays are writable, aligned, C-ordered views
        into one buffer that holds the file.

    Raises
    ------
    CheckpointError (a ValueError)
        If the file is not a checkpoint, is truncated or corrupted, has a format version this
        release cannot read, or describes anything not allowed (a rule that is not built in,
        an object array, a state that does not fit its rule, ...); the message says which.
    TypeError
        If ``types`` holds something that is not a namedtuple class.
    OSError
        If the file cannot be read.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np, optimisers as opt
    >>> w = np.ones(3, np.float32)
    >>> state = opt.setup(opt.RAdam(), {"a": w, "b": [w, np.tanh]})   # w is tied
    >>> with tempfile.TemporaryDirectory() as d:
    ...     opt.save_state(os.path.join(d, "state.ckpt"), state)
    ...     again = opt.load_state(os.path.join(d, "state.ckpt"))
    >>> again["a"] is again["b"][0], again["b"][1]
    (True, None)
    >>> again["a"].rule, again["a"].state.m.dtype, again["a"].state.beta_t.dtype
    (RAdam(eta=0.001, beta=(0.9, 0.999), epsilon=1e-08), dtype('float32'), dtype('float64'))
    """
    known = known_types(types)
    header, data = read_checkpoint(path)
    try:
        return decode(header, data, known)
    except CheckpointError as e:
        raise CheckpointError(f"{path!s}: {e}") from None
