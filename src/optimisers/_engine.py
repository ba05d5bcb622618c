"""The step engine: plans every leaf the walk finds, validates it once, groups leaves into
batches and calls the kernels.

``update_`` works in phases so that bad input changes nothing:

1. *collect*: the walk (``_tree.collect``) goes over state tree, model and gradient
   together and checks the gradient's structure.  A Leaf whose cached plan
   (:func:`leaf_plan`) has a batch template for its array becomes a batch entry at once
   (the walk does that inline: it is most of the time of a step on many small arrays);
   every other Leaf goes through :meth:`Step.route`, which plans it and sends it to the
   batch or to the general path, which checks and casts its gradient at once and sums the
   gradients of tied arrays.
2. *prepare*: ``_kernels.Batch`` checks every batch entry (layout, gradient dtype and
   shape, ties: those go back to the general path, a gradient to cast to one more batch)
   and runs the prologues of their programs, a leading ``ClipNorm``'s norm included,
   writing nothing; every general-path leaf gets a ``Program`` and its prechecks;
   ``_global.settle`` decides global norms and skips over all of them.
3. *step*: run the batches (one kernel call each), then the programs.
4. *rebuild*: only where an array could not be written in place (read-only), rebuild the
   containers around the new array.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from ._dtypes import is_bfloat16, is_float
from ._functor import fmap
from ._global import settle
from ._keypath import linked_keypath
from ._leaf import Leaf, copy_state
from ._native import kernels as _kernels
from ._norms import nonfinite_norm_error
from ._plan import (  # template: the tests take it from the engine
    advance_scheduled,
    check_state,
    leaf_plan,
    moved_on,
    plan_count,
    scheduled_templates,
    template,  # noqa: F401
)
from ._program import Program, run_functional
from ._rule import Rule
from ._tree import collect
from ._types import Array, Gradient, Model, RuleState, StateTree

__all__ = ["update", "update_", "apply_", "Step"]


def update_(
    tree: StateTree, model: Model, grad: Gradient, *more_grads: Gradient
) -> tuple[StateTree, Model]:
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
        On a non-finite norm met by a ``ClipNorm`` or ``ClipGlobalNorm(throw=True)``, before
        anything is written when it leads its chain; after too many ``SkipNonFinite`` skips.

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> m = {"x": np.array([1.0, 2.0], np.float32)}
    >>> st = opt.setup(opt.Momentum(1 / 30, 0.9), m)
    >>> st, m2 = opt.update_(st, m, {"x": np.array([10.0, 14.0], np.float32)})
    >>> m2["x"], m2 is m
    (array([0.6666666, 1.5333333], dtype=float32), True)
    """
    step = Step()
    collect(tree, model, grad, (), step)
    for more in more_grads:  # checked like grad, otherwise unused
        extra = Step()
        collect(tree, model, more, (), extra)
        extra.check_gradients()
    # With one Python thread nothing can race; with several, the Leaves of this step are
    # claimed first, so that two update_ calls on one state refuse instead of racing.
    claimed = _claim(step) if threading.active_count() > 1 else None
    try:
        return tree, step.run(model)
    finally:
        if claimed:
            _release(claimed)


# ids of the Leaves that update_ calls are stepping now (only while other threads exist)
_IN_FLIGHT: set[int] = set()
_IN_FLIGHT_LOCK = threading.Lock()


def _claim(step: Step) -> dict[int, Any]:
    leaves: dict[int, Any] = {id(e[4]): e for e in step.entries}
    leaves.update((id(e[0]), e) for e in step.found.values())
    with _IN_FLIGHT_LOCK:
        busy = _IN_FLIGHT.intersection(leaves)
        if busy:
            e = leaves[next(iter(busy))]
            where = linked_keypath(e[5] if len(e) > 5 else e[3])
            raise RuntimeError(
                f"update_: the state of {where} is being updated by another "
                f"thread; one state may be updated by one thread at a time "
                f"(give each thread its own state, or a lock)"
            )
        _IN_FLIGHT.update(leaves)
    return leaves


def _release(claimed: dict[int, Any]) -> None:
    with _IN_FLIGHT_LOCK:
        _IN_FLIGHT.difference_update(claimed)


def update(
    tree: StateTree, model: Model, grad: Gradient, *more_grads: Gradient
) -> tuple[StateTree, Model]:
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
        On a non-finite norm met by a ``ClipNorm`` or ``ClipGlobalNorm(throw=True)``.

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> m = {"x": np.array([1, 2, 3], np.float32), "y": np.tanh}
    >>> t = opt.setup(opt.Descent(0.1), m)
    >>> t2, m2 = opt.update(t, m, {"x": np.array([1, 1, 1]), "y": None})
    >>> m2["x"], m["x"]
    (array([0.9, 1.9, 2.9], dtype=float32), array([1., 2., 3.], dtype=float32))
    """
    return update_(copy_state(tree, {}), fmap(_copy_writable, model), grad, *more_grads)


def _copy_writable(a: Any) -> Any:
    return a.copy() if isinstance(a, np.ndarray) and a.flags.writeable else a


def apply_(
    rule: Rule, state: RuleState, x: npt.ArrayLike, dx: npt.ArrayLike
) -> tuple[RuleState, Array | None]:
    """One step of ``rule`` without touching ``x``: returns ``(state, d)``.

    ``x - d`` is the updated parameter.  State arrays are updated in place (hence the
    underscore); the seed's ``apply!``.

    Parameters
    ----------
    rule : Rule
        The rule.
    state : object
        Its state for ``x``, from :func:`init` or a previous ``apply_``.
    x : array_like
        The parameter; not written.
    dx : array_like
        The gradient, of ``x``'s shape (cast to the dtype the rule computes in).

    Returns
    -------
    state : object
        The new state.
    d : numpy.ndarray or None
        The step, of ``x``'s shape and dtype (``None`` when the rule takes no step, e.g.
        an ``AccumGrad`` that is not due).

    Raises
    ------
    ValueError
        If ``dx`` does not have ``x``'s shape.

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> opt.apply_(opt.Descent(0.1), None, np.ones(3, np.float32), np.array([4, 5, 6]))
    (None, array([0.4, 0.5, 0.6], dtype=float32))
    """
    return run_functional(rule, state, np.asarray(x), dx)


# ----------------------------------------------------------------------------------------
# Planning and running one step.


class Step:
    """One ``update_`` in the making: the leaves the walk found, as batch entries
    ``(template, state, x, g, leaf, link)`` (:attr:`entries`) and general-path leaves
    (:attr:`found`: ``id(leaf) -> [leaf, x, g, link, plan]``).

    The walk appends to ``entries`` itself when a Leaf's cached plan fits (``plan[3]``,
    the template, is not None; the Leaf is not frozen; the plan is for this rule and this
    array's dtype), and calls :meth:`route` for every other Leaf.

    A rule with a scheduled hyper-parameter has a template per count: the Leaf's plan
    holds the one of its count (``_plan.scheduled_plan``) and the step moves it on with the
    count (:meth:`run`), so the walk batches those leaves inline too."""

    __slots__ = ("entries", "found", "stepped", "_concrete")

    def __init__(self) -> None:
        self.entries: list[tuple[Any, ...]] = []
        self.found: dict[int, list[Any]] = {}
        # lists of the batch entries the step ran (counts advance)
        self.stepped: list[list[tuple[Any, ...]]] = []
        # (id(rule), count) -> the rule at count (general path)
        self._concrete: dict[tuple[int, int], Rule] = {}

    def rule_of(self, leaf: Leaf) -> Rule:
        """The rule ``leaf`` steps with now: its own, or (scheduled hyper-parameters) the
        same rule with every schedule replaced by its value at the leaf's count."""
        if not leaf._plan[4]:
            return leaf.rule
        key = (id(leaf.rule), leaf._count)
        got = self._concrete.get(key)
        if got is None:
            got = self._concrete[key] = leaf.rule._at(leaf._count)
        return got

    def route(self, leaf: Leaf, x: Any, g: Any, link: tuple[Any, ...]) -> None:
        """Plan one Leaf and send it to the batch (the kernels' Batch checks the rest:
        layout, gradient, ties) or to the general path (:meth:`record`)."""
        plan = leaf._plan
        if (
            plan is None
            or plan[0] is not leaf.rule
            or type(x) is not np.ndarray
            or plan[1] is not x.dtype
            or (plan[4] and plan_count(plan) != leaf._count)
        ):
            if not isinstance(x, np.ndarray) or not is_float(x.dtype):
                self.record(leaf, x, g, link)  # raises
            plan = leaf_plan(leaf, x, link)
        tpl = plan[3]
        if tpl is None or leaf.frozen:
            self.record(leaf, x, g, link)
        else:
            self.entries.append((tpl, leaf.state, x, g, leaf, link))

    def record(self, leaf: Leaf, x: Any, g: Any, link: tuple[Any, ...]) -> None:
        """The general path for the gradient ``g`` of ``leaf`` and array ``x``: check and
        cast ``g`` and keep it; tied arrays sum their gradients."""
        if not isinstance(x, np.ndarray) or not is_float(x.dtype):
            raise TypeError(
                f"the state tree has a Leaf at {linked_keypath(link)} but the "
                f"model has {type(x).__name__} there"
            )
        plan = leaf._plan  # route() planned this leaf for this rule and array
        g = check_gradient(g, x, plan[2], link)
        e = self.found.get(id(leaf))
        if e is None:
            self.found[id(leaf)] = [leaf, x, g, link, plan]
        elif e[1] is not x:
            raise ValueError(
                f"one Leaf is shared by two different arrays, at "
                f"{linked_keypath(e[3])} and {linked_keypath(link)}: the state "
                f"tree does not belong to this model"
            )
        else:  # tied weights: sum the gradients (an overflow to inf is the verdict's
            with np.errstate(over="ignore"):  # to give: a skip or a clear error)
                e[2] = e[2] + g

    def check_gradients(self) -> None:
        """Check the gradients of the batch entries (the general path checks its own as it
        records them); for the gradients ``update_`` checks and does not use."""
        for _tpl, _state, x, g, leaf, link in self.entries:
            check_gradient(g, x, leaf._plan[2], link)

    def run(self, model: Model, across: Any = None, gate: Any = None) -> Model:
        """Prepare (check everything, write nothing), step, write back: the new model.

        ``across`` and ``gate`` are the hooks of ``optimisers.distributed`` (None in one
        process): ``across`` combines the global norms' partials over the ranks (see
        ``_global.settle``); ``gate()`` is called once everything that can fail has been
        checked and before anything but the snapshotted late programs is written, and
        raises when another rank failed (the late programs are then put back)."""
        # Every leaf is checked before anything is written, so that a failed step changes
        # nothing: the batches (which check every entry and compute every leading
        # ClipNorm's norm), then a Program per general-path leaf, with its prechecks.
        batches = self._prepare_batches()
        programs = []
        for leaf, x, g, link, _plan in self.found.values():
            if leaf.frozen:
                continue
            work = x if x.flags.c_contiguous and x.flags.writeable else np.array(x, order="C")
            prog = Program(work, g, leaf, linked_keypath(link))
            rule = self.rule_of(leaf)
            pre = getattr(rule, "_precheck", None)
            if pre is not None:
                pre(prog)
            programs.append((leaf, x, work, prog, rule))
        if settle(batches, programs, across, gate):  # a SkipNonFinite skipped the step
            return model
        # A program whose rule may fail after its first stages wrote (a ClipNorm(throw=True)
        # after other rules, a rule written in Python) runs first, after a snapshot of the
        # arrays it writes: if one fails, every one of them is put back as it was, and the
        # batches and other programs have not run yet.
        late: list[tuple[Any, ...]] = []
        others: list[tuple[Any, ...]] = []
        for program in programs:
            (late if program[4]._fails_late(True) else others).append(program)
        snapshots = [pair for leaf, x, work, prog, rule in late for pair in _snapshot(leaf, work)]
        replaced: dict[int, Array] = {}  # id(read-only parameter) -> its new array
        try:
            for program in late:
                _run_program(program, replaced)
            if gate is not None:  # distributed: every rank got this far, or none writes
                gate()
        except BaseException:
            for a, copy in snapshots:
                np.copyto(a, copy)
            raise
        # the next count's template of each scheduled rule, made before the kernels' pass
        # through memory evicts the rules from the caches
        scheduled = scheduled_templates(batches)
        for b in batches:  # the step: one kernel call per batch
            b.run()
        for program in others:
            _run_program(program, replaced)
        for entries in self.stepped:
            for e in entries:
                e[4]._count += 1
        if scheduled:  # the plans of the scheduled leaves move on with their count
            advance_scheduled(scheduled, self.stepped)
        for program in programs:
            leaf = program[0]
            leaf._count += 1
            if leaf._plan[4]:  # its template is for the count before
                leaf._plan = moved_on(leaf._plan)
        if replaced:
            # only the containers around a replaced (read-only) array are rebuilt
            model = fmap(lambda a: replaced.get(id(a), a), model, keep_unchanged=True)
        return model

    def _prepare_batches(self) -> list[Any]:
        """Check and prepare the batch entries (``_kernels.Batch``).  Entries a batch
        leaves out go to the general path or, with a gradient to cast, to one more batch;
        a non-finite norm met by a leading ``ClipNorm(throw=True)`` raises here, before
        anything is written."""
        entries, batches, first = self.entries, [], True
        while entries:
            batch = _kernels.Batch(entries)
            batches.append(batch)
            retry = []
            if batch.problems:
                left_out = {problem[0] for problem in batch.problems}
                self.stepped.append([e for j, e in enumerate(entries) if j not in left_out])
            else:
                self.stepped.append(entries)
            for index, status, norm, p in batch.problems:
                tpl, state, x, g, leaf, link = entries[index]
                if status == _kernels.NONFINITE_NORM:
                    raise nonfinite_norm_error(linked_keypath(link), p, norm)
                if status == _kernels.BAD_GRADIENT and first:
                    g = check_gradient(g, x, leaf._plan[2], link)  # raises, or casts
                    retry.append((tpl, state, x, g, leaf, link))
                elif status == _kernels.BAD_STATE:
                    check_state(leaf.rule, state, x, link, "its arrays do not fit")
                elif status == _kernels.NO_MEMORY:
                    raise MemoryError(f"out of memory preparing the step of {linked_keypath(link)}")
                else:  # layout, ties: the general path sorts it out
                    self.record(leaf, x, g, link)
            entries, first = retry, False
        return batches


def _run_program(program: tuple[Any, ...], replaced: dict[int, Array]) -> None:
    """Step one general-path leaf; a read-only parameter's new array goes to ``replaced``."""
    leaf, x, work, prog, rule = program
    new_state = rule._compile(leaf.state, prog)
    prog.finish()
    leaf.state = new_state
    if work is not x:
        if x.flags.writeable:
            np.copyto(x, work)
        else:
            replaced[id(x)] = work


def _snapshot(leaf: Leaf, work: Array) -> Iterator[tuple[Array, Array]]:
    """``(array, copy)`` for the parameter ``work`` and every state array of ``leaf``: the
    copies live on the Leaf (made once, refreshed each step), so a step allocates nothing."""
    arrays = _arrays_in((work, leaf.state))
    kept = leaf._backup
    if kept is None or [(k.shape, k.dtype) for k in kept] != [(a.shape, a.dtype) for a in arrays]:
        kept = leaf._backup = [np.empty_like(a) for a in arrays]
    for k, a in zip(kept, arrays):
        np.copyto(k, a)
    return zip(arrays, kept)


def _arrays_in(s: Any) -> list[Array]:
    """Every array in a state (nested tuples, lists and dicts of arrays), once each."""
    if isinstance(s, np.ndarray):
        return [s]
    if isinstance(s, dict):
        s = s.values()
    elif not isinstance(s, (list, tuple)):
        return []
    return list({id(a): a for part in s for a in _arrays_in(part)}.values())


def check_gradient(g: Any, x: Array, want: Any, link: tuple[Any, ...]) -> Any:
    """The gradient of one array, checked and cast once to the dtype ``want``."""
    if isinstance(g, (list, tuple, Mapping, str)):
        raise TypeError(
            f"the gradient at {linked_keypath(link)} is a {type(g).__name__}, "
            f"expected an array of shape {x.shape}"
        )
    a = g if isinstance(g, np.ndarray) else np.asarray(g)
    kind = a.dtype.kind
    if kind not in "biufc" and not is_bfloat16(a.dtype):
        raise TypeError(
            f"the gradient at {linked_keypath(link)} has dtype {a.dtype}, which is not numeric"
        )
    if kind == "c" and x.dtype.kind != "c":
        raise TypeError(
            f"the gradient at {linked_keypath(link)} is complex ({a.dtype}) but "
            f"the parameter is real ({x.dtype})"
        )
    if a.shape != x.shape:
        raise ValueError(
            f"the gradient at {linked_keypath(link)} has shape {a.shape}, the "
            f"parameter has shape {x.shape} (gradients are never broadcast)"
        )
    return np.asarray(a, dtype=want, order="C")  # keeps 0-d arrays 0-d
