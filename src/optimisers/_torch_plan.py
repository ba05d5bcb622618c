"""The planned step of :class:`optimisers.torch.Optimizer`: what the step of a fixed set
of parameters needs, prepared once and reused while nothing it depends on changes.

The general step (:func:`optimisers.update_` over the groups' models of numpy views) walks
the state tree, views every gradient as a numpy array and prepares a kernel batch, every
step: about 1.3 us a tensor on top of the kernels' pass.  Between two steps of a torch
training loop, though, only the gradients change: the parameters, the state arrays and
the rules' programs stay.  A :class:`Plan` holds them, prepared once in a
``_kernels.Replay`` (each leaf's stages pointed at its parameter and state), and a step
is then: fetch the ``.grad`` of every parameter, check them in bulk (C-level ``map`` over
the list; gradients that are the very tensors of the step before, at the same address,
are not checked again), and run the replay with their data addresses.

What a plan depends on, and what makes the optimiser give it up (the step then takes the
general path, which also raises the errors, writing nothing):

* the groups: their number, each group's ``rule`` and its parameters' addresses
  (:meth:`Plan.step` declines; the general step applies the change, and the optimiser
  plans again).  A new ``lr`` (a scheduler, by hand) is applied by the plan itself, as the
  general step would: the group's Leaves get the rule at that ``lr`` and the replay its
  programs' new hyper-parameters (``Replay.refill``), once per change, unless the group
  has parameters not stepped yet whose rule's state is made from its ``lr`` (``Rprop``):
  their state is made again, and the general step runs;
* the Leaves' rules, states and frozen flags: the optimiser drops its plan on
  ``add_param_group`` and ``load_state_dict``, and once its :attr:`state_tree` has been
  handed out (``adjust_``, ``freeze_`` and the like can change a Leaf then), every step
  checks that the tree still holds the planned Leaves, and each Leaf's rule and state
  objects and flag, before running.  The arrays inside a state are not checked again
  (one resized in place, or made read-only, goes unseen): give the Leaf a new state;
* the gradients: one that is not a dense, C-contiguous tensor of its parameter's dtype
  and size declines the step (a ``None`` gradient only leaves its parameter out, as the
  general step does).  torch keeps a CPU parameter's gradient on the CPU and of its
  shape; only an in-place change (``.data =``, ``resize_``) can reshape one, and one
  reshaped to its parameter's size is then taken element by element, as torch's fused
  step does (the general step refuses its shape).  Gradients that persist from one step
  to the next (``zero_grad(set_to_none=False)``) are held weakly and not checked again
  while they stay at their addresses; fresh ones (torch's default) cost four attribute
  reads each a step.

Not planned at all (the general step every time): a frozen Leaf, a rule with a schedule
or that the kernels cannot batch (a barrier, a rule written in Python, complex
parameters), a chain led by ``ClipGlobalNorm`` or ``SkipNonFinite`` (a whole-step sum),
tied parameters.  Results are the general step's bits: the same kernels, stages and
prologues, run by the same driver.

Imported only by :mod:`optimisers.torch`.

>>> import torch, optimisers as opt
>>> from optimisers.torch import Optimizer
>>> w = torch.zeros(3)
>>> optim = Optimizer([w], opt.Adam(0.1))
>>> w.grad = torch.ones(3)
>>> optim.step(); optim.step()           # the first step plans, the second runs the plan
>>> type(optim._planned).__name__, w
('Plan', tensor([-0.2000, -0.2000, -0.2000]))
"""

from __future__ import annotations

import operator
import weakref
from collections.abc import Sequence
from itertools import compress
from typing import Any

import torch

from ._leaf import Leaf
from ._native import kernels as _kernels
from ._plan import leaf_plan

__all__ = ["Plan"]

_GRAD = operator.attrgetter("grad")
_DTYPE = operator.attrgetter("dtype")
_RULE = operator.attrgetter("rule")
_STATE = operator.attrgetter("state")
_FROZEN = operator.attrgetter("frozen")
_IS_CONTIGUOUS = torch.Tensor.is_contiguous
_DATA_PTR = torch.Tensor.data_ptr
_NUMEL = torch.Tensor.numel
_IS = operator.is_
_DEREF = weakref.ref.__call__  # what a weak reference refers to, or None


class Plan:
    """One optimiser's step prepared for its parameters as they are: the kernels' replay
    of every leaf, and what the step checks the groups and gradients against.

    Make one with :meth:`build` (``None`` when the parameters cannot be planned); run a
    step with :meth:`step`, which declines (returns False, nothing written) whenever the
    general step must run instead.
    """

    __slots__ = (
        "_addresses",
        "_dtypes",
        "_first",
        "_leaves",
        "_names",
        "_refs",
        "_replay",
        "_rules",
        "_runs",
        "_sizes",
        "_states",
        "_trees",
    )

    def __init__(
        self,
        replay: Any,
        leaves: list[Leaf],
        params: list[torch.Tensor],
        trees: list[Any],
        names: list[list[str]],
        runs: list[list[list[Any]]],
    ) -> None:
        self._replay = replay
        self._leaves = leaves
        # where the Leaves were found: each group's tree, and the names in it
        self._trees, self._names = list(trees), names
        # per group, its entries by template: [first, end, template, x of the first, link]
        self._runs = runs
        # what each Leaf was planned with: checked at each step once the tree is handed out
        self._rules = list(map(_RULE, leaves))
        self._states = list(map(_STATE, leaves))
        # what every gradient must be: its parameter's dtype and size
        self._dtypes = list(map(_DTYPE, params))
        self._sizes = list(map(_NUMEL, params))
        # the gradients of the last step (weakly: zero_grad must free them) and addresses
        self._refs: list[Any] | None = None
        self._addresses: list[int | None] = []
        self._first: Any = None  # the first gradient of the last step, weakly

    @classmethod
    def build(cls, groups: Sequence[Any], trees: list[Any]) -> Plan | None:
        """The plan of the optimiser's groups (its ``Group`` entries) and state tree (one
        ``{name: Leaf}`` per group), or ``None`` when some leaf cannot be planned (see the
        module's docstring)."""
        entries: list[tuple[Any, ...]] = []
        leaves: list[Leaf] = []
        params: list[torch.Tensor] = []
        runs: list[list[list[Any]]] = []
        for entry, tree in zip(groups, trees):
            runs.append([])
            for name, p in zip(entry.names, entry.params):
                x = entry.model[name]
                leaf = tree.get(name) if isinstance(tree, dict) else None
                if not isinstance(leaf, Leaf) or leaf.frozen:
                    return None
                link = (((), entry.index), name)
                plan = leaf._plan
                if plan is None or plan[0] is not leaf.rule or plan[1] is not x.dtype:
                    try:
                        plan = leaf_plan(leaf, x, link)
                    except ValueError:  # a state that does not fit: the general step says so
                        return None
                if plan[3] is None or plan[4]:  # no batch program, or a scheduled one
                    return None
                if runs[-1] and runs[-1][-1][2] is plan[3]:
                    runs[-1][-1][1] += 1
                else:
                    runs[-1].append([len(entries), len(entries) + 1, plan[3], x, link])
                # the parameter stands for its gradients to come (same dtype, shape, layout)
                entries.append((plan[3], leaf.state, x, x, leaf))
                leaves.append(leaf)
                params.append(p)
        try:
            replay = _kernels.Replay(entries)
        except ValueError:  # a global stage or a scheduled template
            return None
        if replay.problems:  # a parameter or state that does not fit, tied parameters
            return None
        return cls(replay, leaves, params, trees, [entry.names for entry in groups], runs)

    def _new_lr(self, index: int, group: dict[str, Any], entry: Any) -> bool:
        """Apply the new ``lr`` of group ``index`` as the general step does (its Leaves get
        the rule at that ``lr``) and give the replay the new programs' hyper-parameters;
        False when the new programs are not the old ones at other hyper-parameters."""
        runs = self._runs[index]
        start, end = (runs[0][0], runs[-1][1]) if runs else (0, 0)
        mine = self._leaves[start:end]
        if len(entry.leaves) != len(mine) or not all(map(_IS, entry.leaves, mine)):
            return False  # Leaves replaced in the tree: the general step sorts it out
        states = list(map(_STATE, mine))
        entry.refresh(group)
        if not all(map(_IS, map(_STATE, mine), states)):  # made again (a first step's)
            return False  # new state objects: the general step runs, and plans again
        news = []
        for first, _end, old, x, link in runs:
            new = leaf_plan(self._leaves[first], x, link)[3]
            if new is None or _layout(new) != _layout(old):
                return False
            news.append(new)
        for run, new in zip(runs, news):
            self._replay.refill(run[0], run[1], new)
            run[2] = new
        self._rules[start:end] = map(_RULE, mine)
        return True

    def holds(self, trees: list[Any]) -> bool:
        """Whether the state tree still holds the planned Leaves, each with the rule and
        state it was planned with, unfrozen."""
        leaves = self._leaves
        if len(trees) != len(self._trees) or not all(map(_IS, trees, self._trees)):
            return False
        found: list[Any] = []
        try:
            for tree, names in zip(trees, self._names):
                found += map(tree.__getitem__, names)
        except KeyError:
            return False
        return (
            all(map(_IS, found, leaves))
            and all(map(_IS, map(_RULE, leaves), self._rules))
            and all(map(_IS, map(_STATE, leaves), self._states))
            and not any(map(_FROZEN, leaves))
        )

    def step(
        self,
        param_groups: list[dict[str, Any]],
        groups: Sequence[Any],
        trees: list[Any],
        exposed: bool,
    ) -> bool:
        """Run one step with the gradients the parameters hold now; False (nothing
        written) when the general step must run instead: a group's ``lr``, ``rule`` or
        parameters changed, a gradient the plan cannot take (the general step takes it or
        raises), a leading ClipNorm's non-finite norm, or (``exposed``: the state tree was
        handed out) a Leaf changed."""
        if len(param_groups) != len(groups):
            return False
        grads: list[Any] = []
        for index, (group, entry) in enumerate(zip(param_groups, groups)):
            params = group["params"]
            if group["rule"] is not entry.rule or list(map(_DATA_PTR, params)) != entry.ptrs:
                return False
            moved = group["lr"] != entry.lr or (
                entry.mom_key is not None and group.get(entry.mom_key) != entry.mom
            )
            if moved and not self._new_lr(index, group, entry):
                return False
            grads += map(_GRAD, params)
        if exposed and not self.holds(trees):
            return False
        addresses = self._gradient_addresses(grads)
        if addresses is None or self._replay.run_with(addresses):
            return False
        for leaf, address in zip(self._leaves, addresses):  # count the updates
            if address is not None:
                leaf._count += 1
        return True

    def _gradient_addresses(self, grads: list[Any]) -> list[int | None] | None:
        """The data address of each gradient (``None`` for none; an empty one's may be 0),
        or ``None`` when one is not a dense C-contiguous tensor of its parameter's dtype
        and size (see the module's docstring)."""
        refs = self._refs
        if refs is not None and all(map(_IS, grads, map(_DEREF, refs))):
            # the tensors of the last step: checked then; still at the same addresses?
            addresses: list[int | None] = list(map(_DATA_PTR, grads))
            if addresses == self._addresses:
                return addresses
        present = [g is not None for g in grads]
        given = grads if all(present) else list(compress(grads, present))
        dtypes, sizes = self._dtypes, self._sizes
        if given is not grads:
            dtypes, sizes = list(compress(dtypes, present)), list(compress(sizes, present))
        # A CPU parameter's gradient is on the CPU (torch refuses another device, by
        # assignment and through .data), and the address of a sparse or mkldnn tensor
        # raises RuntimeError: what is left to check is its dtype, size and layout.
        try:
            fits = (
                list(map(_DTYPE, given)) == dtypes
                and list(map(_NUMEL, given)) == sizes
                and all(map(_IS_CONTIGUOUS, given))
            )
            if not fits:
                return None
            found: list[int | None] = list(map(_DATA_PTR, given))
        except (AttributeError, RuntimeError, TypeError):  # not a tensor, no storage
            return None
        if 0 in found and any(a == 0 and n for a, n in zip(found, sizes)):
            return None  # a gradient without memory (storage freed): the general step says so
        if given is not grads:
            self._refs = None
            it = iter(found)
            return [next(it) if here else None for here in present]
        # Weak references to the gradients (zero_grad must free them) are made once they
        # persist from one step to the next, as with zero_grad(set_to_none=False); fresh
        # ones each step (torch's default) are only followed by their first.
        first = self._first
        if first is not None and first() is grads[0]:
            self._refs, self._addresses = list(map(weakref.ref, grads)), found
        else:
            self._refs, self._first = None, weakref.ref(grads[0]) if grads else None
        return found


def _layout(template: list[Any]) -> list[tuple[Any, ...]]:
    """A template without its hyper-parameters: kinds, buffer paths, scalars, counter."""
    return [(kind, paths, sc, ctr) for kind, _hp, paths, sc, ctr in template]
