r"""A ``torch.optim.Optimizer`` that steps PyTorch parameters with any rule of this library.

.. code-block:: python

    from optimisers.torch import Optimizer
    optim = Optimizer(net.parameters(), opt.AdamW(1e-3, lambda_=0.01))  # was torch.optim.AdamW
    sched = torch.optim.lr_scheduler.OneCycleLR(optim, max_lr=1e-2, total_steps=1000)
    for X, y in loader:
        optim.zero_grad(); loss_fn(net(X), y).backward(); optim.step(); sched.step()

The parameters, their gradients and the optimiser's state are the tensors' own memory:
the model the engine sees is a list (one entry a parameter group) of ``{name: numpy view
of the parameter}``, set up once (:func:`optimisers.setup`) and stepped by one
:func:`optimisers.update_` call over every group.  Once a step has run, the next ones
reuse a plan of it (``_torch_plan``: every leaf's program pointed at its parameter and
state once), so that a step is the fused kernels' pass plus fetching and checking the
gradients, under half a microsecond a tensor; whatever the plan was made with
changing (an ``lr``, a rule, a Leaf, a gradient it cannot take) sends the step the general
way.  A step that fails (a sparse gradient, a shape that does not fit, a non-finite norm a
``ClipGlobalNorm`` refuses) changes no parameter and no state.

Which rule is which ``torch.optim`` optimiser: ``Adam`` -> :class:`~optimisers.Adam`,
``AdamW`` -> :class:`~optimisers.AdamW`, ``Adamax`` -> :class:`~optimisers.TorchAdamax`,
``RAdam`` -> :class:`~optimisers.TorchRAdam`, ``NAdam`` -> :class:`~optimisers.TorchNAdam`
(the seed's ``AdaMax``, ``RAdam`` and ``NAdam`` follow Optimisers.jl's formulas, not
torch's), ``SGD`` with momentum / Nesterov -> :class:`~optimisers.Momentum` /
:class:`~optimisers.Nesterov`, ``RMSprop`` -> :class:`~optimisers.RMSProp`, ``Adagrad`` ->
:class:`~optimisers.AdaGrad`, ``Adadelta`` -> :class:`~optimisers.AdaDelta`, ``Rprop`` ->
:class:`~optimisers.Rprop`; the hyper-parameters and the fine print are in
``examples/torch_interop.py``.

This module imports torch; ``import optimisers`` never imports it.

Examples
--------
>>> import torch, optimisers as opt
>>> from optimisers.torch import Optimizer
>>> w = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
>>> optim = Optimizer([w], opt.Momentum(0.1, 0.9))
>>> optim.param_groups[0]["lr"]
0.1
>>> w.grad = torch.ones(2, dtype=torch.float64)
>>> optim.step()
>>> w.detach()
tensor([0.9000, 0.9000], dtype=torch.float64)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch

from . import _torch_views as tv
from ._engine import update_
from ._rule import Rule
from ._torch_groups import Group, default_lr
from ._torch_plan import Plan

__all__ = ["Optimizer"]

# keys of a saved param group that describe it rather than set it (not restored by
# load_state_dict): the parameters, and what identifies the rule and the shapes
_DESCRIPTIVE = ("params", "param_names", "rule", "param_shapes")


class Optimizer(torch.optim.Optimizer):
    r"""A torch optimiser running an ``optimisers`` rule in the fused CPU kernels.

    Parameters
    ----------
    params : iterable
        What ``torch.optim`` optimisers take: tensors, ``(name, tensor)`` pairs (as
        ``net.named_parameters()`` gives; errors then name the parameter), or dicts of
        parameter groups, each with ``"params"`` and optionally its own ``"rule"`` and
        ``"lr"``.  Parameters must be dense, contiguous CPU tensors of float16, bfloat16
        (needs ml_dtypes), float32, float64 or a complex dtype the rule accepts.
    rule : Rule
        The rule of the groups that name none: any built-in rule, chain, ``MixedPrecision``
        or rule written in Python.
    low_precision_state : bool, default False
        As in :func:`optimisers.setup`: the state of float16 and bfloat16 parameters is
        float32 unless this is true.

    Notes
    -----
    **Learning rate.**  A group's ``"lr"`` is the ``eta`` of its rule, of every rule in a
    chain that has one: given in the group it overrides the rule's ``eta``; left out it is
    the rule's (the first ``eta`` of a chain).  Changed by a scheduler (or by hand), the
    new value is used from the next ``step()``: the rule is adjusted once per change,
    never per tensor.  A rule with no ``eta`` anywhere (``AdaDelta``, a chain of
    transforms) is followed by ``Descent(lr)``: ``lr`` multiplies its step, with 1.0 by
    default, which is exactly what torch's ``Adadelta(lr=...)`` does.  An ``eta`` given
    as a schedule of :mod:`optimisers.schedules` is refused (say ``"lr"`` and use a torch
    scheduler, or use :func:`optimisers.update_` directly).  Other keys of a group
    (``weight_decay``, ``betas``) are kept but not read: the rule holds those.

    **Steps.**  ``step()`` steps every parameter whose ``.grad`` is not ``None`` with one
    :func:`optimisers.update_` over all the groups, or with the plan of such a step made
    at the step before (the same kernels and bits, without the walk of the state tree);
    a parameter without gradient is not touched and its state does not advance.  The
    update is written through numpy views, which torch's autograd version counters do not
    see: step after ``backward()``, as with any optimiser, not between a forward pass and
    its backward.

    **State.**  The rules' state lives in the engine's state tree (:attr:`state_tree`,
    numpy arrays), not in torch's ``optim.state``, which stays empty; ``state_dict()``
    shows it in torch's layout.

    **Checkpoints.**  ``state_dict()`` is torch's layout: ``{"state": {index: {name:
    tensor}}, "param_groups": [...]}`` with only tensors and plain values (``"rule"`` is
    the rule's ``repr``), so ``torch.load(path, weights_only=True)`` reads it.
    ``load_state_dict`` checks every group's rule, the parameters' shapes and every state
    tensor's name, dtype and shape before it changes anything, then copies the values
    into the optimiser's own state and restores the groups' ``lr`` (and other plain
    values): training resumes bit for bit.

    Examples
    --------
    >>> import torch, optimisers as opt
    >>> from optimisers.torch import Optimizer
    >>> torch.manual_seed(0)                                   # doctest: +ELLIPSIS
    <torch._C.Generator object at 0x...>
    >>> net = torch.nn.Linear(3, 1)
    >>> optim = Optimizer(net.named_parameters(), opt.Lion(1e-2))
    >>> sched = torch.optim.lr_scheduler.StepLR(optim, step_size=5, gamma=0.5)
    >>> X, y = torch.randn(32, 3), torch.randn(32, 1)
    >>> losses = []
    >>> for _ in range(20):
    ...     optim.zero_grad()
    ...     loss = torch.nn.functional.mse_loss(net(X), y)
    ...     loss.backward(); optim.step(); sched.step()
    ...     losses.append(loss.item())
    >>> losses[-1] < losses[0], optim.param_groups[0]["lr"]
    (True, 0.000625)
    """

    def __init__(
        self, params: Iterable[Any], rule: Rule, *, low_precision_state: bool = False
    ) -> None:
        if not isinstance(rule, Rule):
            raise TypeError(
                f"Optimizer(params, rule): rule must be an optimisers rule "
                f"(opt.Adam(), an OptimiserChain, ...), got {rule!r}"
            )
        self._low_precision_state = low_precision_state
        # the engine's view of all the groups: a list of {name: numpy view}, its state tree,
        # and per group (params, names, rule it was given, lr applied, leaves)
        self._model: list[dict[str, Any]] = []
        self._tree: list[Any] = []
        self._groups: list[Group] = []
        self._grads: list[dict[str, Any]] = []
        # the planned step (_torch_plan): a Plan, None (plan at the next stable step) or
        # False (these groups cannot be planned); _exposed: the state tree was handed out
        self._planned: Plan | Literal[False] | None = None
        self._exposed = False
        self._changed = False  # the last step changed a group's lr or rule
        defaults = {"rule": rule, "lr": default_lr(rule)}
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group (torch's method): ``{"params": ..., "rule": ..., "lr": ...}``.

        Its parameters are checked (dense, contiguous, CPU, floating) and its state set
        up now, with its rule (the group's ``"rule"`` or the optimiser's), before the
        group is added.

        Parameters
        ----------
        param_group : dict
            As for ``torch.optim.Optimizer.add_param_group``.
        """
        index = len(self.param_groups)
        rule = param_group.get("rule", self.defaults["rule"])
        if not isinstance(rule, Rule):
            raise TypeError(f"param group {index}: 'rule' must be an optimisers rule, got {rule!r}")
        given = "lr" in param_group
        if not given:
            param_group["lr"] = default_lr(rule)
        if param_group["lr"] is None:
            raise ValueError(
                f"param group {index}: {rule!r} has a schedule as its eta and "
                f"the group no 'lr'; an optimisers.torch.Optimizer takes the "
                f"learning rate from the group's 'lr': give a number and drive "
                f"it with a torch scheduler (torch.optim.lr_scheduler)"
            )
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            entry = Group.build(group, index, given, self._low_precision_state)
        except BaseException:
            self.param_groups.pop()
            raise
        self._groups.append(entry)
        self._planned = None
        self._model.append(entry.model)
        self._tree.append(entry.tree)
        self._grads.append({})

    @property
    def state_tree(self) -> list[Any]:
        """The engine's state tree: a list with one ``{parameter name: Leaf}`` per group
        (names from ``named_parameters()``, else ``"0"``, ``"1"``, ...), for the tree
        functions, e.g. ``opt.freeze_(optim.state_tree[0]["0.weight"])``.  Changing a
        ``Leaf``'s rule by hand lasts until the group's ``lr`` or ``rule`` changes."""
        # what is done to the Leaves now goes unseen: every planned step checks them
        self._exposed = True
        if self._planned is False:  # a Leaf may be thawed, its rule made plannable
            self._planned = None
        return self._tree

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One step of every parameter that has a gradient; returns ``closure()``'s loss.

        Parameters
        ----------
        closure : callable, optional
            Re-evaluates the model and returns the loss (run with gradients enabled).

        Returns
        -------
        The closure's loss, or ``None``.

        Raises
        ------
        TypeError, ValueError
            On a sparse, non-CPU or misshapen gradient, a parameter replaced since it was
            added, or anything :func:`optimisers.update_` refuses, naming the parameter;
            nothing has been written then.
        """
        loss = None
        if closure is not None:  # the step itself runs no torch op: no no_grad needed
            with torch.enable_grad():
                loss = closure()
        planned = self._planned
        if planned and planned.step(self.param_groups, self._groups, self._tree, self._exposed):
            self._changed = False
            return loss
        self._planned = None  # while the general step runs (it may change Leaves, or raise)
        changed = self._general_step()
        # a change of lr or rule gave the Leaves new rules: plan anew, unless the step
        # before changed them too (a scheduler that moves the lr at every step)
        steady, self._changed = not (changed and self._changed), changed
        if changed:
            planned = None
        if steady and not (planned is False or (planned and planned.holds(self._tree))):
            planned = Plan.build(self._groups, self._tree) or False
        self._planned = planned
        return loss

    def _general_step(self) -> bool:
        """The step through :func:`optimisers.update_`; whether a group's ``lr`` or
        ``rule`` changed (and was applied to its Leaves) first."""
        grads = self._grads
        changed = False
        try:
            for group, entry, g in zip(self.param_groups, self._groups, grads):
                changed |= entry.refresh(group)
                tv.gradient_views(entry.params, entry.names, entry.where, g)
            update_(self._tree, self._model, grads)
        finally:
            for g in grads:  # hold no gradient past the step (zero_grad frees them)
                g.clear()
        return changed

    # ------------------------------------------------------------------------------------
    # Checkpoints

    def state_dict(self) -> dict[str, Any]:
        """torch's layout with tensors and plain values only (loads with
        ``torch.load(..., weights_only=True)``); the tensors are copies of the state.

        Returns
        -------
        dict
            ``{"state": {index: {name: tensor or value}}, "param_groups": [...]}``.
        """
        state: dict[int, dict[str, Any]] = {}
        groups = []
        index = 0
        for group, entry in zip(self.param_groups, self._groups):
            saved = {k: v for k, v in group.items() if k not in ("params", "rule")}
            saved["rule"] = repr(group["rule"])
            saved["param_shapes"] = [list(p.shape) for p in entry.params]
            saved["params"] = list(range(index, index + len(entry.params)))
            for leaf in entry.leaves:
                state[index] = tv.flatten_state(leaf.state)
                index += 1
            groups.append(saved)
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load what :meth:`state_dict` gave, after checking all of it.

        Parameters
        ----------
        state_dict : dict
            From :meth:`state_dict` of an optimiser with the same groups, rules and
            parameter shapes (possibly read by ``torch.load(..., weights_only=True)``).

        Raises
        ------
        ValueError
            When it is not such a dict, or its groups, rules, shapes or state tensors do
            not fit this optimiser, saying which; nothing has changed then.
        """
        plan = self._check_state_dict(state_dict)
        self._planned = None  # new state objects
        for entry, saved_group, states in plan:
            for leaf, saved in zip(entry.leaves, states):
                leaf.state = tv.unflatten_state(leaf.state, saved)
            group = self.param_groups[entry.index]
            group.update({k: v for k, v in saved_group.items() if k not in _DESCRIPTIVE})

    def _check_state_dict(self, sd: Any) -> list[tuple[Group, dict[str, Any], list[Any]]]:
        where = "load_state_dict"
        if not isinstance(sd, dict) or set(sd) != {"state", "param_groups"}:
            raise ValueError(
                f"{where}: expected {{'state', 'param_groups'}} as state_dict() "
                f"writes, got {sorted(sd) if isinstance(sd, dict) else type(sd)}"
            )
        saved_groups, saved_state = sd["param_groups"], sd["state"]
        if len(saved_groups) != len(self._groups):
            raise ValueError(
                f"{where}: the state dict has {len(saved_groups)} param groups, "
                f"this optimiser {len(self._groups)}"
            )
        plan, index = [], 0
        for entry, saved in zip(self._groups, saved_groups):
            at = f"{where}: param group {entry.index}"
            rule = repr(self.param_groups[entry.index]["rule"])
            if saved.get("rule") != rule:
                raise ValueError(
                    f"{at}: the state dict is for the rule {saved.get('rule')}, "
                    f"this group has {rule}"
                )
            shapes = [list(p.shape) for p in entry.params]
            if saved.get("param_shapes") != shapes:
                raise ValueError(
                    f"{at}: the state dict is for parameters of shapes "
                    f"{saved.get('param_shapes')}, this group has {shapes}"
                )
            states = []
            for i, leaf in enumerate(entry.leaves):
                got = saved_state.get(index + i, saved_state.get(str(index + i)))
                misfit = tv.state_misfit(tv.flatten_state(leaf.state), got)
                if misfit is not None:
                    raise ValueError(
                        f"{where}: the state of {entry.where(i)} does not fit its rule: {misfit}"
                    )
                states.append(got)
            plan.append((entry, saved, states))
            index += len(entry.leaves)
        return plan
