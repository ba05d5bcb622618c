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

from . import _torch_state
from . import _torch_views as tv
from ._engine import update_
from ._rule import Rule
from ._torch_groups import REFUSED_KEYS, Group, check_keys, check_new_group, default_lr
from ._torch_momentum import momentum_key
from ._torch_plan import Plan

__all__ = ["Optimizer"]


class Optimizer(torch.optim.Optimizer):
    r"""A torch optimiser running an ``optimisers`` rule in the fused CPU kernels.

    Parameters
    ----------
    params : iterable
        What ``torch.optim`` optimisers take: tensors, ``(name, tensor)`` pairs (as
        ``net.named_parameters()`` gives; errors then name the parameter), or dicts of
        parameter groups, each with ``"params"`` and optionally its own ``"rule"`` and
        ``"lr"``.  Parameters must be dense, contiguous CPU tensors of float16, bfloat16
        (needs ml_dtypes), float32, float64 or a complex dtype the rule accepts, each
        given once.  A group with a key of a ``torch.optim`` hyper-parameter
        (``weight_decay``, ``eps``, ``maximize``, ``foreach``, ...; ``betas`` or
        ``momentum`` where its rule has none to set) is refused with a ``ValueError``: the
        rule holds the hyper-parameters (give the group a ``"rule"``, e.g.
        ``opt.AdamW(1e-3, lambda_=0.0)``).
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
    never per tensor.  A chain with two ``eta`` has both moved (the second in proportion),
    so that its step scales as ``lr**2``: ``OptimiserChain(RMSProp(1.0), Momentum(lr))``
    is torch's ``RMSprop(momentum=...)`` at a constant ``lr`` only; under a scheduler use
    a chain with one ``eta``.  A parameter that has not stepped yet gets its state from
    the rule at the ``lr`` of its first step, as torch makes it then (``Rprop``'s step
    sizes start at a warm-up scheduler's first ``lr``).  A rule with no ``eta`` anywhere
    (``AdaDelta``, a chain of transforms) is followed by ``Descent(lr)``: ``lr``
    multiplies its step, with 1.0 by default, which is exactly what torch's
    ``Adadelta(lr=...)`` does.  An ``eta`` given as a schedule of
    :mod:`optimisers.schedules` is refused (say ``"lr"`` and use a torch scheduler, or use
    :func:`optimisers.update_` directly).  A group's ``"rule"`` may be
    replaced by a rule that keeps the same kind of state (``Adam`` -> ``AdamW``), which
    goes on from that state at the group's ``lr``; one of another kind (``Adam`` ->
    ``Momentum``) is refused at the next step with a ``ValueError``, the Leaves as they
    were.  A group's ``"betas"`` is the ``beta`` pair of its rule and its ``"momentum"``
    the ``rho`` of its ``Momentum`` or ``Nesterov``, as ``"lr"`` is its ``eta``
    (``optimisers._torch_momentum``): torch's schedulers that cycle the momentum
    (``OneCycleLR``, ``CyclicLR`` at their defaults) drive them.

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
    the rule's ``repr``; for a rule written in Python without a ``__repr__``, its class
    and fields), so ``torch.load(path, weights_only=True)`` reads it.
    ``load_state_dict`` checks every group's rule, the parameters' shapes and every state
    tensor's name, dtype and shape, and converts every tensor (a sparse one, one that
    requires grad), before it changes anything, then copies the values into the
    optimiser's own state, restores each parameter's ``"count"`` (its number of updates,
    at which a hyper-parameter given as a schedule is evaluated) and the groups' ``lr``
    (and other plain values): training resumes bit for bit.  torch's state-dict hooks
    (``register_state_dict_pre_hook`` and the like) run as torch runs them.
    ``copy.deepcopy`` and ``pickle`` give a working copy with the same state
    (``copy.deepcopy((net, optim))``: the copy steps the copied net's parameters).

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
        key = momentum_key(rule)  # what torch's schedulers cycle (cycle_momentum=True)
        if key is not None:
            defaults[key[0]] = key[1]
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
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group)}")
        index = len(self.param_groups)
        rule = param_group.get("rule", self.defaults["rule"])
        if not isinstance(rule, Rule):
            raise TypeError(f"param group {index}: 'rule' must be an optimisers rule, got {rule!r}")
        key = momentum_key(rule)
        check_new_group(param_group, index, None if key is None else key[0])
        mine = set(param_group)  # the keys given, before torch adds the defaults
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
        for k in ("betas", "momentum"):  # the group's momentum is its own rule's
            if key is None or k != key[0]:
                group.pop(k, None)  # a default of another rule
            elif k not in mine:
                group[k] = key[1]
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

    # pickle and copy.deepcopy: torch keeps "defaults", "state" and "param_groups"; the
    # groups' entries (rules, Leaves) go with them, and the numpy views are made again of
    # the tensors the copy holds (copy.deepcopy((net, optim)) gives the net's copies)
    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_groups"] = self._groups
        state["_low_precision_state"] = self._low_precision_state
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "_groups" not in state:
            raise TypeError(
                "this optimisers.torch.Optimizer was pickled without its rules' state "
                "(by an older version of optimisers); save and load optim.state_dict() "
                "instead"
            )
        differentiable = "differentiable" in state["defaults"]
        super().__setstate__(state)
        if not differentiable:  # torch adds it; it would go into the groups added later
            self.defaults.pop("differentiable", None)
        self._model = [entry.model for entry in self._groups]
        self._tree = [entry.tree for entry in self._groups]
        self._grads = [{} for _ in self._groups]
        self._planned, self._exposed, self._changed = None, False, False

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
            On a sparse, non-CPU or misshapen gradient, or anything
            :func:`optimisers.update_` refuses, naming the parameter; nothing has been
            written then.
        RuntimeError
            On a parameter replaced (another tensor, or its memory) since it was added.
        FloatingPointError
            On a non-finite norm that a ``ClipNorm`` or ``ClipGlobalNorm`` with ``throw``
            refuses, or too many steps in a row skipped by a ``SkipNonFinite``.
        """
        loss = None
        if closure is not None:  # the step itself runs no torch op: no no_grad needed
            with torch.enable_grad():
                loss = closure()
        for index, (group, entry) in enumerate(zip(self.param_groups, self._groups)):
            # a torch.optim key set since the group was added (a weight-decay schedule),
            # which nothing would read
            if not REFUSED_KEYS[entry.mom_key].isdisjoint(group):
                check_keys(group, f"step: param group {index}", allowed=entry.mom_key)
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
        torch's state-dict hooks run as in ``torch.optim.Optimizer.state_dict``.

        Returns
        -------
        dict
            ``{"state": {index: {name: tensor or value, "count": n}}, "param_groups":
            [...]}``.
        """
        for pre_hook in self._optimizer_state_dict_pre_hooks.values():
            pre_hook(self)
        state_dict = _torch_state.save(self.param_groups, self._groups)
        for post_hook in self._optimizer_state_dict_post_hooks.values():
            hook_result = post_hook(self, state_dict)
            if hook_result is not None:
                state_dict = hook_result
        return state_dict

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load what :meth:`state_dict` gave, after checking and converting all of it.
        torch's load-state-dict hooks run as in ``torch.optim.Optimizer.load_state_dict``
        (the pre-hooks on a shallow copy of ``state_dict``, before the checks).

        Parameters
        ----------
        state_dict : dict
            From :meth:`state_dict` of an optimiser with the same groups, rules and
            parameter shapes (possibly read by ``torch.load(..., weights_only=True)``).
            One without update counts (saved by an older version) loads unless a rule
            has a hyper-parameter given as a schedule.

        Raises
        ------
        ValueError
            When it is not such a dict, or its groups, rules, shapes or state tensors do
            not fit this optimiser (or cannot be read), saying which; nothing has changed
            then.
        """
        state_dict = state_dict.copy() if isinstance(state_dict, dict) else state_dict
        for pre_hook in self._optimizer_load_state_dict_pre_hooks.values():
            hook_result = pre_hook(self, state_dict)
            if hook_result is not None:
                state_dict = hook_result
        loaded = _torch_state.check(self.param_groups, self._groups, state_dict)
        self._planned = None  # new state objects
        _torch_state.load(self.param_groups, loaded)
        for post_hook in self._optimizer_load_state_dict_post_hooks.values():
            post_hook(self)
