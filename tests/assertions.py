"""Bit-exact comparisons shared by the rule tests (library against tests/reference.py)."""

import numpy as np

import optimisers as opt
from reference import ref_update_tree


def bits_equal(a, b):
    """Equal values and equal signs (so -0.0 != +0.0); any NaN equals any NaN."""
    if a.dtype.kind == "c":
        return bits_equal(a.real, b.real) & bits_equal(a.imag, b.imag)
    both_nan = np.isnan(a) & np.isnan(b)
    return both_nan | ((a == b) & (np.signbit(a) == np.signbit(b)))


def assert_arrays_same(got, want, where):
    assert isinstance(got, np.ndarray), f"{where}: got {type(got).__name__}, want an array"
    assert got.dtype == want.dtype, f"{where}: dtype {got.dtype}, want {want.dtype}"
    assert got.shape == want.shape, f"{where}: shape {got.shape}, want {want.shape}"
    if want.dtype.kind in "fc":
        same = bits_equal(got, want)
    else:
        same = got == want
    if not np.all(same):
        bad = np.flatnonzero(~np.asarray(same))
        i = bad[:4]
        raise AssertionError(
            f"{where}: {bad.size} of {want.size} elements differ, e.g. at {i.tolist()}: "
            f"got {got.ravel()[i].tolist()}, want {want.ravel()[i].tolist()}"
        )


def assert_state_same(got, want, where="state"):
    """The library's state equals the reference's, arrays bit for bit, dtypes included.

    Representation may differ where conventions leave it open: running products may be a
    tuple of numpy scalars or a 2-element array of the same dtype; counters a Python int
    or a 0-d integer array."""
    if want is None:
        assert got is None, f"{where}: got {got!r}, want None"
    elif isinstance(want, np.ndarray):
        assert_arrays_same(got, want, where)
    elif isinstance(want, tuple) and want and all(isinstance(w, np.floating) for w in want):
        # beta_t: a tuple of numpy scalars of the compute dtype
        dt = np.dtype(type(want[0]))
        if isinstance(got, np.ndarray):
            assert got.dtype == dt, f"{where}: dtype {got.dtype}, want {dt}"
            got_vals = list(got.reshape(-1))
        else:
            assert isinstance(got, tuple), f"{where}: got {type(got).__name__}"
            for i, v in enumerate(got):
                assert type(v) is type(want[i]), f"{where}[{i}]: {type(v)} != {type(want[i])}"
            got_vals = list(got)
        assert len(got_vals) == len(want), f"{where}: {got_vals} vs {want}"
        assert_arrays_same(np.array(got_vals, dt), np.array(want, dt), where)
    elif isinstance(want, tuple):
        assert isinstance(got, tuple), f"{where}: got {type(got).__name__}, want a tuple"
        assert len(got) == len(want), f"{where}: {len(got)} entries, want {len(want)}"
        fields = getattr(want, "_fields", None)
        if fields is not None:
            assert type(got).__name__ == type(want).__name__, (
                f"{where}: {type(got).__name__}, want {type(want).__name__}"
            )
            assert tuple(got._fields) == tuple(fields), f"{where}: fields {got._fields}"
        names = fields or range(len(want))
        for name, g, w in zip(names, got, want):
            assert_state_same(g, w, f"{where}.{name}")
    elif isinstance(want, (int, np.integer)):
        if isinstance(got, np.ndarray):
            assert got.dtype.kind in "iu" and got.size == 1, f"{where}: {got!r}"
            got = got.reshape(-1)[0]
        assert isinstance(got, (int, np.integer)) and not isinstance(got, bool), (
            f"{where}: {got!r} is not an integer"
        )
        assert int(got) == int(want), f"{where}: {got} != {want}"
    else:
        raise AssertionError(f"{where}: reference has unexpected {type(want).__name__}")


def state_arrays(state):
    """Every ndarray of a (nested) state."""
    if isinstance(state, np.ndarray):
        return [state]
    if isinstance(state, tuple):
        return [a for s in state for a in state_arrays(s)]
    return []


def step_like_reference(rule, tree, model, ref_s, ref_x, grads, step):
    """One step of a dict model: ``update`` on every third step (checking that it writes
    neither model nor state), ``update_`` otherwise; then every parameter and state against
    ``ref_update_tree`` (``ref_s`` and ``ref_x`` advanced in place) and every gradient unwritten.
    Returns the new ``(tree, model)``."""
    grads_copy = {k: g.copy() for k, g in grads.items()}
    if step % 3 == 2:
        before = {k: v.copy() for k, v in model.items()}
        new_tree, new_model = opt.update(tree, model, grads)
        for k in model:
            assert_arrays_same(model[k], before[k], f"step {step}: update wrote {k}")
            assert_state_same(tree[k].state, ref_s[k], f"step {step}: update wrote {k}")
        tree, model = new_tree, new_model
    else:
        tree, model = opt.update_(tree, model, grads)
    # one call for every leaf: a global norm is that of all the gradients
    stepped = ref_update_tree(rule, ref_s, ref_x, grads)
    for k in model:
        ref_s[k], ref_x[k] = stepped[k]
        assert_arrays_same(model[k], ref_x[k], f"step {step}: param {k}")
        assert_state_same(tree[k].state, ref_s[k], f"step {step}: state[{k}]")
        assert_arrays_same(grads[k], grads_copy[k], f"step {step}: gradient {k} written")
    return tree, model
