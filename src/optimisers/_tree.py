"""The tree functions: setup, update/update_, adjust/adjust_, freeze_/thaw_, trainables.

``update_`` works in phases so that bad input changes nothing:

1. *collect*: walk state tree, model and gradient together; check the gradient's structure;
   route each leaf: to the batch when its rule compiles to a plain kernel program (its
   cached plan, ``_leaf_plan``), else to the general path, which checks and casts its
   gradient at once and sums the gradients of tied arrays.
2. *prepare*: ``_kernels.Batch`` checks every batch leaf (layout, gradient dtype and shape,
   ties: those go back to the general path, a gradient to cast to one more batch) and runs
   the prologues of their programs, a leading ``ClipNorm``'s norm included, writing nothing;
   every general-path leaf gets a ``Program`` and its prechecks (a leading
   ``ClipNorm(throw=True)``'s finite norm).
3. *step*: run the batches (one kernel call each), then the programs.
4. *rebuild*: only where an array could not be written in place (read-only), rebuild the
   containers around the new array.

The walk and the batch are most of the time of a step on many small arrays: the walk's
common case (dicts of arrays) is written out inline, and every per-leaf check that can be
done in C is done by the batch.
"""

from __future__ import annotations

import copy
import numbers
import warnings
from collections.abc import Mapping

import numpy as np

from ._functor import children, fmap, is_namedtuple, rebuild, trainable_keys
from ._keypath import KeyPath
from ._leaf import Leaf
from ._native import kernels as _kernels
from ._norms import nonfinite_norm_error
from ._program import Program, gradient_dtype, template
from ._rule import Rule

__all__ = ["setup", "update", "update_", "adjust", "adjust_", "freeze_", "thaw_",
           "trainables", "isnumeric", "maywrite"]


def isnumeric(x) -> bool:
    """Whether ``x`` is something optimisers train: a numpy array of floating or complex numbers.

    Integer and boolean arrays, scalars (Python or numpy), and everything else are not
    trainable: :func:`setup` gives them no ``Leaf`` and :func:`trainables` skips them.

    Parameters
    ----------
    x : object
        Any object.

    Returns
    -------
    bool
        ``True`` for a ``numpy.ndarray`` whose dtype is of kind ``f`` or ``c``.

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> opt.isnumeric(np.zeros(2)), opt.isnumeric(np.arange(2)), opt.isnumeric(1.0)
    (True, False, False)
    """
    return isinstance(x, np.ndarray) and x.dtype.kind in "fc"


def maywrite(x) -> bool:
    """Whether :func:`update_` may write into ``x`` in place (a writable numpy array).

    Views count: writing through a view writes the array it looks into, which is how a
    model held by another framework is trained through numpy views of its tensors.  A
    read-only parameter is not written: ``update_`` puts a new array in its place in the
    model it returns.

    Parameters
    ----------
    x : object
        Any object.

    Returns
    -------
    bool
        ``True`` for a ``numpy.ndarray`` whose ``flags.writeable`` is set.

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> a = np.zeros(2); a.flags.writeable = False
    >>> opt.maywrite(np.zeros(2)), opt.maywrite(a)
    (True, False)
    """
    return isinstance(x, np.ndarray) and x.flags.writeable


# ----------------------------------------------------------------------------------------
# setup

def _state_container(x, keys, states):
    t = type(x)
    if t is list:
        return list(states)
    if t is tuple:
        return tuple(states)
    if is_namedtuple(x):
        return t._make(states)
    if isinstance(x, tuple):
        return tuple(states)
    return dict(zip(keys, states))


# what the kernels compute on (float16 via float32); not big-endian, not extended precision
_TRAINABLE_DTYPES = frozenset(np.dtype(t) for t in (np.float16, np.float32, np.float64,
                                                     np.complex64, np.complex128))


def setup(rule, model):
    """Initialise ``rule`` for every trainable array of ``model``: the state tree.

    The state tree has the model's shape (a dict for a dict, a list for a list, the same
    namedtuple type for a namedtuple, a dict of fields for a registered object), with a
    :class:`Leaf` for each trainable array and ``None`` where there is nothing to train.
    An array appearing twice (tied weights) gets one shared ``Leaf``.  When ``model`` is
    itself an array, the result is a bare ``Leaf``.

    Parameters
    ----------
    rule : Rule
        The optimisation rule (a built-in rule, an ``OptimiserChain``, or a subclass of
        :class:`Rule` written in Python).
    model : nested dicts, lists, tuples, namedtuples, registered objects and arrays
        The model to train; only its trainable arrays (see :func:`isnumeric` and
        :func:`functor`) get a state.

    Returns
    -------
    Leaf, None or nested containers
        The state tree, to pass to :func:`update` / :func:`update_` with this model.

    Raises
    ------
    TypeError
        If ``rule`` is not a :class:`Rule`; for a parameter the rule cannot train (e.g. a
        complex array with ``Rprop``), or of a dtype optimisers cannot train (not one of
        float16/32/64, complex64/128 in native byte order), naming its key path.

    Warns
    -----
    UserWarning
        When ``model`` has no trainable parameter at all.

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> st = opt.setup(opt.Momentum(), {"x": np.zeros(3), "y": (True, False), "z": np.tanh})
    >>> st["x"], st["y"], st["z"]
    (Leaf(Momentum(eta=0.01, rho=0.9), array([0., 0., 0.])), (None, None), None)
    """
    if not isinstance(rule, Rule):
        raise TypeError(f"setup(rule, model) takes a rule first, got {type(rule).__name__}")
    cache = {}

    def walk(x, path):
        if isnumeric(x):
            leaf = cache.get(id(x))
            if leaf is None:
                if x.dtype not in _TRAINABLE_DTYPES:
                    raise TypeError(
                        f"setup: the parameter at {path} has dtype {x.dtype.str}, which "
                        f"optimisers cannot train; convert it to one of float16/32/64 or "
                        f"complex64/128 in native byte order (e.g. x.astype(np.float64))")
                rule.check_param(x, path)
                leaf = cache[id(x)] = Leaf(rule, rule.init(x))
            return leaf
        kv = children(x)
        if kv is None:
            return None
        keys, values = kv
        allowed = trainable_keys(x, keys)
        states = [walk(v, path + (k,)) if allowed is None or k in allowed else None
                  for k, v in zip(keys, values)]
        return _state_container(x, keys, states)

    tree = walk(model, KeyPath())
    if not cache:
        warnings.warn("setup found no trainable parameters in this model", stacklevel=2)
    return tree


# ----------------------------------------------------------------------------------------
# update

def _keypath(link):
    """A KeyPath from the linked ``(parent, key)`` pairs the walk carries (built lazily,
    only for messages and programs, so the walk itself stays cheap)."""
    keys = []
    while link:
        link, k = link
        keys.append(k)
    return KeyPath(*reversed(keys))


def _state_children(t, m, keys, link):
    if isinstance(t, dict):
        if len(t) == len(keys):
            try:
                return [t[k] for k in keys]
            except KeyError:
                pass
        raise ValueError(f"the state tree does not match the model at {_keypath(link)}: "
                         f"state keys {list(t)}, model keys {list(keys)}")
    if isinstance(t, (list, tuple)):
        if len(t) != len(keys):
            raise ValueError(f"the state tree does not match the model at {_keypath(link)}: "
                             f"{len(t)} state entries, {len(keys)} model entries")
        return t
    raise TypeError(f"the state tree has {type(t).__name__} at {_keypath(link)} where the "
                    f"model has a container ({type(m).__name__})")


def _grad_children(m, g, keys, link):
    """The gradient's children aligned with the model's ``keys``."""
    if type(g) is type(m) and isinstance(m, (list, tuple)):
        # the common case: the same list, tuple or namedtuple type (same fields)
        if len(g) != len(m):
            raise ValueError(f"the gradient at {_keypath(link)} has length {len(g)}, the "
                             f"model's {type(m).__name__} has length {len(m)}")
        return g
    if isinstance(m, dict):
        if not isinstance(g, Mapping):
            raise TypeError(f"the gradient at {_keypath(link)} is a {type(g).__name__}, the "
                            f"model has a {type(m).__name__} there")
        if not g.keys() <= m.keys():
            extra = [k for k in g if k not in m]
            raise ValueError(f"the gradient at {_keypath(link)} has key(s) {extra} that the "
                             f"model does not have (model keys: {list(keys)})")
        return [g.get(k) for k in keys]
    if isinstance(m, (list, tuple)) and not is_namedtuple(m):
        if not isinstance(g, (list, tuple)):
            raise TypeError(f"the gradient at {_keypath(link)} is a {type(g).__name__}, the "
                            f"model has a {type(m).__name__} of length {len(m)} there")
        if len(g) != len(m):
            raise ValueError(f"the gradient at {_keypath(link)} has length {len(g)}, the "
                             f"model's {type(m).__name__} has length {len(m)}")
        return g
    # namedtuples and registered objects: by field name
    if type(g) is dict or isinstance(g, Mapping):
        extra = [k for k in g if k not in keys]
        if extra and is_namedtuple(m):
            raise ValueError(f"the gradient at {_keypath(link)} has field(s) {extra} that the "
                             f"model's {type(m).__name__} does not have")
        return [g.get(k) for k in keys]
    if is_namedtuple(m) and isinstance(g, tuple) and not is_namedtuple(g):
        if len(g) != len(m):
            raise ValueError(f"the gradient at {_keypath(link)} has length {len(g)}, the "
                             f"model's {type(m).__name__} has length {len(m)}")
        return g
    if is_namedtuple(m) and is_namedtuple(g):
        extra = [k for k in g._fields if k not in keys]
        if extra:
            raise ValueError(f"the gradient at {_keypath(link)} has field(s) {extra} that the "
                             f"model's {type(m).__name__} does not have")
    if (isinstance(g, (np.ndarray, numbers.Number, str, list))
            or (isinstance(g, tuple) and not is_namedtuple(g))):
        raise TypeError(f"the gradient at {_keypath(link)} is a {type(g).__name__}, the model "
                        f"has a {type(m).__name__} there (give a dict of its fields, or an "
                        f"object with them)")
    return [getattr(g, k, None) for k in keys]


def _leaf_plan(leaf, x):
    """What does not change between steps for a Leaf and its array: the dtype its gradient
    is cast to, and the batch template of its rule (see ``_program.template``).  Cached on
    the Leaf, keyed by the identity of its rule and of the array's dtype."""
    rule = leaf.rule
    key = (id(rule), x.dtype)
    tpl = _TEMPLATES.get(key)
    if tpl is None or tpl[0] is not rule:
        if len(_TEMPLATES) > 4096:
            _TEMPLATES.clear()
        tpl = _TEMPLATES[key] = (rule, template(rule, x, leaf.state))
    plan = leaf._plan = (rule, x.dtype, gradient_dtype(rule, x.dtype), tpl[1])
    return plan


# (id(rule), parameter dtype) -> (rule, template or None); the rule is kept so its id stays
# valid, and one template object is shared by all the leaves of a group.
_TEMPLATES = {}


def _check_gradient(g, x, want, link):
    """The gradient of one array, checked and cast once to the dtype ``want``."""
    if isinstance(g, (list, tuple, Mapping, str)):
        raise TypeError(f"the gradient at {_keypath(link)} is a {type(g).__name__}, expected "
                        f"an array of shape {x.shape}")
    a = g if isinstance(g, np.ndarray) else np.asarray(g)
    kind = a.dtype.kind
    if kind not in "biufc":
        raise TypeError(f"the gradient at {_keypath(link)} has dtype {a.dtype}, which is not "
                        f"numeric")
    if kind == "c" and x.dtype.kind != "c":
        raise TypeError(f"the gradient at {_keypath(link)} is complex ({a.dtype}) but the "
                        f"parameter is real ({x.dtype})")
    if a.shape != x.shape:
        raise ValueError(f"the gradient at {_keypath(link)} has shape {a.shape}, the parameter "
                         f"has shape {x.shape} (gradients are never broadcast)")
    return np.asarray(a, dtype=want, order="C")   # keeps 0-d arrays 0-d


def _record(t, m, g, link, found):
    """The general path for the gradient ``g`` of Leaf ``t`` and array ``m``: check and
    cast ``g`` and record it in ``found``, id(leaf) -> [leaf, array, gradient, link, plan];
    tied arrays sum their gradients."""
    if not isinstance(m, np.ndarray) or m.dtype.kind not in "fc":
        raise TypeError(f"the state tree has a Leaf at {_keypath(link)} but the model has "
                        f"{type(m).__name__} there")
    plan = t._plan
    if plan is None or plan[0] is not t.rule or plan[1] is not m.dtype:
        plan = _leaf_plan(t, m)
    g = _check_gradient(g, m, plan[2], link)
    e = found.get(id(t))
    if e is None:
        found[id(t)] = [t, m, g, link, plan]
    elif e[1] is not m:
        raise ValueError(f"one Leaf is shared by two different arrays, at {_keypath(e[3])} "
                         f"and {_keypath(link)}: the state tree does not belong to this model")
    else:
        e[2] = e[2] + g                   # tied weights: sum the gradients


def _leaf(t, m, g, link, batch, found):
    """Route one Leaf: to ``batch`` as ``(template, state, array, gradient, leaf, link)``
    when its rule runs as a batch program on this array (the kernels' Batch checks the
    rest: layout, gradient, ties), else to the general path (:func:`_record`)."""
    plan = t._plan
    if (plan is None or plan[0] is not t.rule or type(m) is not np.ndarray
            or plan[1] is not m.dtype):
        if not isinstance(m, np.ndarray) or m.dtype.kind not in "fc":
            _record(t, m, g, link, found)          # raises
        plan = _leaf_plan(t, m)
    if plan[3] is None or t.frozen:
        _record(t, m, g, link, found)
    else:
        batch.append((plan[3], t.state, m, g, t, link))


def _collect(t, m, g, link, batch, found):
    """Walk state tree ``t``, model ``m`` and gradient ``g`` together and route every Leaf
    that has a gradient (see ``_leaf``).  Checks only, writes nothing.

    This walk is most of the time of a step on many small arrays: the children of a
    container are routed in one loop, with the common case of ``_leaf`` (a Leaf whose
    cached plan fits) inline, and dicts take a path that builds no key tuples."""
    if g is None or t is None:
        return
    if type(t) is Leaf:
        _leaf(t, m, g, link, batch, found)
        return
    if type(m) is dict and type(t) is dict and type(g) is dict:
        keys = m.keys()
        if t.keys() != keys or not g.keys() <= keys:
            _state_children(t, m, tuple(m), link)       # raise, naming what differs
            _grad_children(m, g, tuple(m), link)
        values, ts, gs = m.values(), map(t.__getitem__, keys), map(g.get, keys)
    else:
        kv = children(m)
        if kv is None:
            raise TypeError(f"the state tree has a {type(t).__name__} at {_keypath(link)} but "
                            f"the model has a {type(m).__name__} there")
        keys, values = kv
        ts = _state_children(t, m, keys, link)
        gs = _grad_children(m, g, keys, link)
    append = batch.append
    for k, tv, mv, gv in zip(keys, ts, values, gs):
        if gv is None or tv is None:
            continue
        if type(tv) is Leaf:
            plan = tv._plan
            if (plan is not None and plan[0] is tv.rule and type(mv) is np.ndarray
                    and plan[1] is mv.dtype and plan[3] is not None and not tv.frozen):
                append((plan[3], tv.state, mv, gv, tv, (link, k)))
            else:
                _leaf(tv, mv, gv, (link, k), batch, found)
        else:
            _collect(tv, mv, gv, (link, k), batch, found)


def _prepare_batches(entries, found):
    """Check and prepare the batch entries (``_kernels.Batch``): returns the prepared
    batches.  Entries the batch leaves out go to the general path (``found``) or, with a
    gradient to cast, to one more batch; a non-finite norm met by a leading
    ``ClipNorm(throw=True)`` raises here, before anything is written."""
    batches, first = [], True
    while entries:
        batch = _kernels.Batch(entries)
        batches.append(batch)
        retry = []
        for index, status, norm, p in batch.problems:
            tpl, state, x, g, leaf, link = entries[index]
            if status == _kernels.NONFINITE_NORM:
                raise nonfinite_norm_error(_keypath(link), p, norm)
            if status == _kernels.BAD_GRADIENT and first:
                g = _check_gradient(g, x, leaf._plan[2], link)      # raises, or casts
                retry.append((tpl, state, x, g, leaf, link))
            elif status == _kernels.BAD_STATE:
                raise ValueError(f"the state of the Leaf at {_keypath(link)} does not have "
                                 f"the arrays its rule {leaf.rule!r} needs: the state tree "
                                 f"was changed by hand, or belongs to another rule")
            elif status == _kernels.NO_MEMORY:
                raise MemoryError(f"out of memory preparing the step of {_keypath(link)}")
            else:                             # layout, ties: the general path sorts it out
                _record(leaf, x, g, link, found)
        entries, first = retry, False
    return batches


def update_(tree, model, grad, *more_grads):
    """One optimisation step, in place: returns ``(tree, model)``.

    Writes into every writable parameter array and every ``Leaf``'s state; a read-only
    parameter is replaced by a new array in the returned model (so always use the returned
    model).  Containers are rebuilt only around replaced arrays, so a model of writable
    arrays comes back as the same object.

    Parameters
    ----------
    tree : state tree
        From :func:`setup`, for this model.
    model : nested containers and arrays
        The model the state tree was made for.
    grad : nested containers and arrays, with the model's structure
        The gradient.  Arrays of exactly the parameters' shapes (never broadcast; any real
        dtype is cast once to the parameter's).  ``None`` anywhere, or a key left out of a
        dict, means no gradient there: the rule is not called and its state does not
        advance.  Gradients of tied arrays are summed.
    *more_grads
        Accepted for compatibility with the seed's higher-order interface; they are checked
        like ``grad`` and otherwise unused by the built-in rules.

    Returns
    -------
    tree : state tree
        The same state tree object, its leaves' states advanced.
    model : model
        The updated model: the same object when every parameter was written in place, else
        a copy of the containers around each replaced (read-only) array.

    Raises
    ------
    TypeError, ValueError
        On a gradient of the wrong structure, shape or dtype, or a state tree that does not
        match the model, naming its key path, before anything is written.
    FloatingPointError
        On a non-finite norm met by a ``ClipNorm(throw=True)``; before anything is written
        when that ``ClipNorm`` leads its chain.

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> m = {"x": np.array([1.0, 2.0], np.float32)}
    >>> st = opt.setup(opt.Momentum(1 / 30, 0.9), m)
    >>> st, m2 = opt.update_(st, m, {"x": np.array([10.0, 14.0], np.float32)})
    >>> m2["x"], m2 is m
    (array([0.6666666, 1.5333333], dtype=float32), True)
    """
    batch, found = [], {}
    _collect(tree, model, grad, (), batch, found)
    for more in more_grads:          # checked like grad, otherwise unused
        more_batch = []
        _collect(tree, model, more, (), more_batch, {})
        for tpl, state, x, g, leaf, link in more_batch:
            _check_gradient(g, x, leaf._plan[2], link)

    # Plan every leaf before writing anything.  Leaves whose rule compiles to a kernel
    # program without a barrier, on a parameter written in place, run as batches (one
    # kernel call each, which checks every leaf and computes every leading ClipNorm's norm
    # before it is run); the rest get a Program each, prechecked here.
    batches = _prepare_batches(batch, found)
    programs = []
    for leaf, x, g, link, plan in found.values():
        if leaf.frozen:
            continue
        flags = x.flags
        work = x if flags.c_contiguous and flags.writeable else np.array(x, order="C")
        prog = Program(work, g, leaf, _keypath(link))
        pre = getattr(leaf.rule, "_precheck", None)
        if pre is not None:
            pre(prog)
        programs.append((leaf, x, work, prog))

    for b in batches:
        b.run()

    replaced = {}
    for leaf, x, work, prog in programs:
        new_state = leaf.rule._compile(leaf.state, prog)
        prog.finish()
        leaf.state = new_state
        if work is not x:
            if x.flags.writeable:
                np.copyto(x, work)
            else:
                replaced[id(x)] = work

    if replaced:
        # only the containers around a replaced (read-only) array are rebuilt
        model = fmap(lambda a: replaced.get(id(a), a), model, keep_unchanged=True)
    return tree, model


def _copy_state(s, memo):
    if isinstance(s, np.ndarray):
        c = memo.get(id(s))
        if c is None:
            c = memo[id(s)] = s.copy()
        return c
    if isinstance(s, Leaf):
        c = memo.get(id(s))
        if c is None:
            c = memo[id(s)] = Leaf(s.rule, _copy_state(s.state, memo), s.frozen)
        return c
    if isinstance(s, dict):
        return {k: _copy_state(v, memo) for k, v in s.items()}
    if is_namedtuple(s):
        return type(s)._make(_copy_state(v, memo) for v in s)
    if isinstance(s, (list, tuple)):
        return type(s)(_copy_state(v, memo) for v in s)
    if s is None or isinstance(s, (numbers.Number, np.generic, str, bytes, Rule)):
        return s
    return copy.deepcopy(s, memo)      # a user rule's own state object (memo keeps ties)


def _copy_writable(a):
    return a.copy() if isinstance(a, np.ndarray) and a.flags.writeable else a


def update(tree, model, grad, *more_grads):
    """One optimisation step that touches nothing it was given: returns new ``(tree, model)``.

    Copies the state tree and every writable array of the model (keeping ties), then runs
    :func:`update_` on the copies.  Read-only arrays are not copied (they are never
    written).

    Parameters
    ----------
    tree : state tree
        From :func:`setup`, for this model.
    model : nested containers and arrays
        The model the state tree was made for.
    grad : nested containers and arrays, with the model's structure
        As for :func:`update_`: arrays of the parameters' shapes; ``None`` (or a key left
        out of a dict) means no gradient there; gradients of tied arrays are summed.
    *more_grads
        As for :func:`update_`.

    Returns
    -------
    tree : state tree
        A new state tree with the states advanced; ``tree`` is unchanged.
    model : model
        A new model with the parameters updated; ``model`` is unchanged.

    Raises
    ------
    TypeError, ValueError
        On a gradient of the wrong structure, shape or dtype, or a state tree that does not
        match the model, naming its key path.
    FloatingPointError
        On a non-finite norm met by a ``ClipNorm(throw=True)``.

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> m = {"x": np.array([1, 2, 3], np.float32), "y": np.tanh}
    >>> t = opt.setup(opt.Descent(0.1), m)
    >>> t2, m2 = opt.update(t, m, {"x": np.array([1, 1, 1]), "y": None})
    >>> m2["x"], m["x"]
    (array([0.9, 1.9, 2.9], dtype=float32), array([1., 2., 3.], dtype=float32))
    """
    return update_(_copy_state(tree, {}), fmap(_copy_writable, model), grad, *more_grads)


# ----------------------------------------------------------------------------------------
# adjust, freeze

def _state_leaves(tree, fname):
    """Every distinct Leaf of a state tree; ``TypeError`` if the tree is a model."""
    leaves, seen = [], set()

    def walk(s, path):
        if isinstance(s, Leaf):
            if id(s) not in seen:
                seen.add(id(s))
                leaves.append(s)
        elif s is None:
            pass
        elif isinstance(s, dict):
            for k, v in s.items():
                walk(v, path + (k,))
        elif isinstance(s, (list, tuple)) and not isinstance(s, str):
            keys = s._fields if is_namedtuple(s) else range(len(s))
            for k, v in zip(keys, s):
                walk(v, path + (k,))
        else:
            raise TypeError(f"{fname} must be applied to a state tree from setup, not to a "
                            f"model: found a {type(s).__name__} at {path}")

    walk(tree, KeyPath())
    return leaves


def freeze_(tree):
    """Freeze every ``Leaf`` of ``tree`` in place, until :func:`thaw_`.

    ``tree`` may be any sub-tree of a state tree (``state["layer"]``, one ``Leaf``).  A
    frozen ``Leaf``'s parameter and state stop changing: :func:`update_` skips it even when
    it has a gradient.  Other leaves of the full tree are not affected.

    Parameters
    ----------
    tree : state tree or sub-tree
        From :func:`setup`.

    Returns
    -------
    None

    Raises
    ------
    TypeError
        If ``tree`` is (or contains) a model rather than a state tree (an array or another
        object is reached), naming where.

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> m = {"x": (np.array([1.0]), 2.0), "y": np.array([3.0])}
    >>> s = opt.setup(opt.Momentum(), m)
    >>> opt.freeze_(s["x"])
    >>> s, m = opt.update_(s, m, {"x": (np.array([np.pi]), None), "y": np.array([100 * np.pi])})
    >>> m["x"][0], m["y"]
    (array([1.]), array([-0.14159265]))
    """
    for leaf in _state_leaves(tree, "freeze_"):
        leaf.frozen = True


def thaw_(tree):
    """Undo :func:`freeze_` in place on every ``Leaf`` of ``tree``.

    Parameters
    ----------
    tree : state tree or sub-tree
        From :func:`setup`.

    Returns
    -------
    None

    Raises
    ------
    TypeError
        If ``tree`` is (or contains) a model rather than a state tree, naming where.

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> s = opt.setup(opt.Descent(), [np.zeros(1)]); opt.freeze_(s); opt.thaw_(s)
    >>> s[0].frozen
    False
    """
    for leaf in _state_leaves(tree, "thaw_"):
        leaf.frozen = False


def _changes(eta, fields):
    kw = dict(fields)
    if eta is not None:
        kw["eta"] = eta
    if "centered" in kw:
        kw["centred"] = kw.pop("centered")
    if not kw:
        raise TypeError("adjust must be given something to change, e.g. adjust(tree, 0.01) "
                        "or adjust(tree, beta=(0.9, 0.99))")
    return kw


def _adjusted(rules, kw):
    """New rules for ``rules`` (all checked first); ``TypeError`` for names no rule has."""
    used, known, out = set(), set(), {}
    for r in rules:
        if id(r) not in out:
            out[id(r)] = r._adjust(kw, used, known)
    unknown = sorted(set(kw) - used)
    if unknown:
        raise TypeError(f"adjust: no rule here has field(s) {unknown}; the fields that exist "
                        f"are {sorted(known)}")
    return out


def adjust(tree_or_rule, eta=None, **fields):
    """A copy of a rule, ``Leaf`` or state tree with hyper-parameters changed.

    States are kept (copied for trees).  ``adjust(x, 0.01)`` changes every ``eta``;
    keywords change the fields of that name in every rule that has one (in chains too).
    Values are validated as at construction; a name that no rule has is a ``TypeError``.

    Parameters
    ----------
    tree_or_rule : Rule, Leaf or state tree
        What to adjust; it is not changed.
    eta : float, optional
        The new learning rate of every rule that has an ``eta``.
    **fields
        New values of other hyper-parameters by name (``beta=(0.9, 0.99)``,
        ``lambda_=1e-4``; ``centered=`` is read as ``centred=``).

    Returns
    -------
    Rule, Leaf or state tree
        The same kind as ``tree_or_rule``, with the new hyper-parameters.

    Raises
    ------
    TypeError
        If nothing is to change, or a field name is not a field of any rule here (the
        message lists the fields that exist).
    ValueError
        For a value out of range (as at construction), or for a change of ``RMSProp``'s
        ``centred`` (its two variants keep different states).

    Examples
    --------
    >>> import optimisers as opt
    >>> opt.adjust(opt.OptimiserChain(opt.ClipGrad(2.0), opt.Adam()), 0.2)
    OptimiserChain(ClipGrad(delta=2.0), Adam(eta=0.2, beta=(0.9, 0.999), epsilon=1e-08))
    """
    kw = _changes(eta, fields)
    if isinstance(tree_or_rule, Rule):
        return _adjusted([tree_or_rule], kw)[id(tree_or_rule)]
    tree = _copy_state(tree_or_rule, {})
    adjust_(tree, **kw)
    return tree


def adjust_(tree, eta=None, **fields):
    """Change hyper-parameters in place in a state tree (any sub-tree), keeping states.

    Every new rule is built and validated before any ``Leaf`` changes, so a failed
    ``adjust_`` leaves the tree as it was.  Each ``Leaf``'s ``.rule`` is replaced by the
    adjusted rule; rules are immutable, so use :func:`adjust` for a rule itself.

    Parameters
    ----------
    tree : state tree or sub-tree
        From :func:`setup`; changed in place.
    eta : float, optional
        The new learning rate of every rule that has an ``eta``.
    **fields
        New values of other hyper-parameters by name, as for :func:`adjust`.

    Returns
    -------
    None

    Raises
    ------
    TypeError
        If ``tree`` is a rule or a model, if nothing is to change, or a field name is not a
        field of any rule here.
    ValueError
        For a value out of range, or for a change of ``RMSProp``'s ``centred``.

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> st = opt.setup(opt.Nesterov(), {"vec": np.zeros(2, np.float32)})
    >>> opt.adjust_(st, 0.123)
    >>> st["vec"].rule
    Nesterov(eta=0.123, rho=0.9)
    """
    if isinstance(tree, Rule):
        raise TypeError("adjust_ changes a state tree in place; use adjust(rule, ...) for a rule")
    kw = _changes(eta, fields)
    leaves = _state_leaves(tree, "adjust_")
    new = _adjusted([leaf.rule for leaf in leaves], kw)
    for leaf in leaves:
        leaf.rule = new[id(leaf.rule)]


# ----------------------------------------------------------------------------------------
# trainables

def trainables(model, path=False):
    """Every trainable array of ``model``, each distinct array once, depth first.

    The arrays themselves, not copies: writing into them changes the model.  Fields of a
    registered class that are not ``trainable`` (see :func:`functor`) are skipped, and a
    tied array is listed once, at its first place.

    Parameters
    ----------
    model : nested containers and arrays
        The model.
    path : bool, default False
        Whether to pair each array with its :class:`KeyPath`.

    Returns
    -------
    list
        The arrays, or with ``path=True`` a list of ``(KeyPath, array)`` pairs.

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> x = {"a": np.array([1.0, 2.0]), "b": ({"c": np.array([3.0, 4.0]), "d": 5.0}, np.array([6.0, 7.0]))}
    >>> for kp, y in opt.trainables(x, path=True):
    ...     print(kp, y)
    a [1. 2.]
    b.0.c [3. 4.]
    b.1 [6. 7.]
    """
    out, seen = [], set()

    def walk(x, kp):
        if isnumeric(x):
            if id(x) not in seen:
                seen.add(id(x))
                out.append((kp, x) if path else x)
            return
        kv = children(x)
        if kv is None:
            return
        keys, values = kv
        allowed = trainable_keys(x, keys)
        for k, v in zip(keys, values):
            if allowed is None or k in allowed:
                walk(v, kp + (k,))

    walk(model, KeyPath())
    return out
