"""optimisers.torch.Optimizer: what an audit of it (a user's view, black-box) found, fixed.

Update counts in the state dict, a load that checks and converts everything before it
writes, torch.optim's keys refused in a group, torch's state-dict hooks, copy.deepcopy and
pickle, a state made at the lr of the first step, a rule of another kind refused, a
parameter given twice refused, rules written in Python in checkpoints.  Skips where torch
is not installed."""

from __future__ import annotations

import collections
import copy
import dataclasses
import io
import pickle
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="optimisers.torch needs PyTorch (CI stage 2)")

import optimisers as opt  # noqa: E402
from optimisers import schedules  # noqa: E402
from optimisers.torch import Optimizer  # noqa: E402
from test_torch_optimizer_state import _same, train, weights  # noqa: E402
from test_torch_optimizer_state import _snapshot as snapshot  # noqa: E402

F = torch.nn.functional
LRS = torch.optim.lr_scheduler
D = torch.float64


def make_net(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 1)).to(D)


def data(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        X = torch.randn(16, 4, generator=g, dtype=D)
        out.append((X, X[:, :1] * X[:, 1:2]))
    return out


def same(a, b):
    """test_torch_optimizer_state's comparison, with the same parameters in the state."""
    _same(a, b)
    assert a[1]["state"].keys() == b[1]["state"].keys()


def roundtrip(sd):
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


# ----------------------------------------------------------------------------------------
# 1. the update count of every parameter is saved, and restored


SCHEDULED = opt.AdamW(0.05, lambda_=schedules.linear(1.0, 0.0, 10))


def test_a_schedule_in_another_field_than_eta_resumes_bit_for_bit():
    net = make_net()
    optim = Optimizer(net.parameters(), SCHEDULED)
    batches = data(10)
    train(net, optim, batches[:5])
    sd = roundtrip(optim.state_dict())
    assert [sd["state"][i]["count"] for i in range(4)] == [5] * 4
    assert type(sd["state"][0]["count"]) is int
    halfway = weights(net)
    train(net, optim, batches[5:])
    resumed = make_net(seed=7)
    with torch.no_grad():
        for p, q in zip(resumed.parameters(), halfway):
            p.copy_(q)
    fresh = Optimizer(resumed.parameters(), SCHEDULED)
    fresh.load_state_dict(sd)
    assert [leaf.count for leaf in fresh.state_tree[0].values()] == [5] * 4
    train(resumed, fresh, batches[5:])
    assert all(torch.equal(a, b) for a, b in zip(weights(net), weights(resumed)))


def _without_counts(sd):
    sd = copy.deepcopy(sd)
    for entry in sd["state"].values():
        del entry["count"]
    return sd


def test_a_state_dict_without_counts_loads_unless_a_rule_has_a_schedule():
    net = make_net()
    optim = Optimizer(net.parameters(), opt.Adam(1e-2))
    train(net, optim, data(3))
    old = _without_counts(optim.state_dict())
    target = Optimizer(make_net().parameters(), opt.Adam(1e-2))
    target.load_state_dict(old)  # no schedule: the counts stay as they are
    assert [leaf.count for leaf in target.state_tree[0].values()] == [0] * 4
    assert torch.equal(target.state_dict()["state"][2]["m"], optim.state_dict()["state"][2]["m"])

    optim = Optimizer(net.parameters(), SCHEDULED)
    train(net, optim, data(3))
    old = _without_counts(optim.state_dict())
    target_net = make_net()
    target = Optimizer(target_net.parameters(), SCHEDULED)
    before = snapshot(target_net, target)
    with pytest.raises(ValueError, match=r"parameter 0 has no 'count' .* has a schedule"):
        target.load_state_dict(old)
    same(before, snapshot(target_net, target))
    for entry in old["state"].values():
        entry["count"] = 3
    target.load_state_dict(old)
    assert [leaf.count for leaf in target.state_tree[0].values()] == [3] * 4


@pytest.mark.parametrize("count", [-1, 1.5, True, "3"])
def test_a_count_that_is_no_whole_number_is_refused(count):
    net = make_net()
    optim = Optimizer(net.parameters(), opt.Adam(1e-2))
    train(net, optim, data(2))
    sd = copy.deepcopy(optim.state_dict())
    sd["state"][1]["count"] = count
    before = snapshot(net, optim)
    with pytest.raises(ValueError, match=r"parameter 1: its 'count' is .*not a whole number"):
        optim.load_state_dict(sd)
    same(before, snapshot(net, optim))


def test_a_state_with_a_part_named_count_cannot_be_saved():
    w = torch.zeros(2, dtype=D, requires_grad=True)
    optim = Optimizer([w], opt.Descent(0.1))
    optim._groups[0].leaves[0].state = (np.zeros(2),)
    assert "0" in optim.state_dict()["state"][0]
    State = collections.namedtuple("State", "count")
    optim._groups[0].leaves[0].state = State(np.zeros(2))
    with pytest.raises(ValueError, match="has a part named 'count'"):
        optim.state_dict()


# ----------------------------------------------------------------------------------------
# 2. load_state_dict converts what it can, and changes nothing when one part fails


@pytest.mark.parametrize(
    "edit",
    [
        lambda t: t.clone().requires_grad_(),
        lambda t: t.to_sparse(),
        lambda t: torch.stack([t, t], -1)[..., 0],
    ],
    ids=["requires_grad", "sparse", "strided"],
)
def test_a_state_tensor_is_converted_before_anything_is_written(edit):
    net = make_net()
    optim = Optimizer(net.parameters(), opt.Adam(0.1))
    train(net, optim, data(5))
    sd = copy.deepcopy(optim.state_dict())
    sd["state"][1]["m"] = edit(sd["state"][1]["m"])
    target = Optimizer(make_net().parameters(), opt.Adam(0.1))
    target.load_state_dict(sd)
    assert torch.equal(target.state_dict()["state"][1]["m"], optim.state_dict()["state"][1]["m"])


@pytest.mark.parametrize(
    "edit",
    [lambda t: t.conj_physical().conj(), lambda t: torch._neg_view(-t)],
    ids=["conj", "neg"],
)
def test_a_complex_state_tensor_with_a_conj_or_neg_bit_is_resolved(edit):
    w, v = (torch.ones(3, dtype=torch.complex128, requires_grad=True) for _ in range(2))
    optim = Optimizer([w], opt.Adam(0.1))
    w.grad = torch.tensor([1 + 2j, -1j, 3.0], dtype=torch.complex128)
    optim.step()
    sd = copy.deepcopy(optim.state_dict())
    sd["state"][0]["m"] = edit(sd["state"][0]["m"])
    assert sd["state"][0]["m"].is_conj() or sd["state"][0]["m"].is_neg()
    target = Optimizer([v], opt.Adam(0.1))
    target.load_state_dict(sd)
    assert torch.equal(target.state_dict()["state"][0]["m"], optim.state_dict()["state"][0]["m"])


@pytest.mark.parametrize(
    "edit, match",
    [
        (
            lambda sd: sd["state"][3].update(m=torch.empty(1, device="meta", dtype=D)),
            "cannot be read",
        ),
        (lambda sd: sd["param_groups"][0].update(lr="x"), "its 'lr' is 'x', not a number"),
        (lambda sd: sd["param_groups"].__setitem__(0, 7), "not a param group of"),
    ],
)
def test_a_load_that_fails_late_changes_nothing(edit, match):
    net = make_net()
    optim = Optimizer(net.parameters(), opt.Adam(0.1))
    train(net, optim, data(2))
    sd = copy.deepcopy(optim.state_dict())
    train(net, optim, data(3, seed=5))
    edit(sd)
    before = snapshot(net, optim)
    with pytest.raises(ValueError, match=match):
        optim.load_state_dict(sd)
    same(before, snapshot(net, optim))


class Scalar(opt.Rule):
    """A rule written in Python whose state is a numpy scalar."""

    def init(self, x):
        return (np.float64(0.0),)

    def apply(self, state, x, dx):
        return (state[0] + 1,), dx


def test_a_plain_value_of_another_kind_is_refused():
    w = torch.zeros(2, dtype=D, requires_grad=True)
    optim = Optimizer([w], Scalar())
    sd = optim.state_dict()
    sd["state"][0]["0.0"] = "x"  # the rule has no eta: it is chained with Descent(lr)
    with pytest.raises(ValueError, match=r"'0.0' is 'x', this state holds"):
        optim.load_state_dict(sd)


# ----------------------------------------------------------------------------------------
# 3. torch.optim's hyper-parameters in a group are refused; what schedulers add is not


@pytest.mark.parametrize(
    "key, value, hint, rule",
    [
        ("weight_decay", 0.0, "opt.AdamW", opt.Adam(1e-3)),
        # a group's betas / momentum set its rule's (for torch's schedulers): refused
        # where the rule has none
        ("betas", (0.9, 0.99), "its rule has no beta pair", opt.RMSProp(1e-3)),
        ("momentum", 0.9, "no Momentum or Nesterov for it to set (its rule's key is 'betas')",
         opt.Adam(1e-3)),
        ("eps", 1e-6, "epsilon=", opt.Adam(1e-3)),
        ("nesterov", True, "opt.Nesterov", opt.Adam(1e-3)),
        ("amsgrad", False, "lambda_=0.0", opt.Adam(1e-3)),
        ("foreach", None, "always runs its own fused", opt.Adam(1e-3)),
        ("maximize", False, "negated loss", opt.Adam(1e-3)),
    ],
)  # fmt: skip
def test_torch_hyperparameters_in_a_group_are_refused(key, value, hint, rule):
    a, b = make_net().parameters(), make_net(1).parameters()
    with pytest.raises(ValueError, match=rf"param group 0: '{key}' is a torch.optim hyper") as e:
        Optimizer([{"params": a, key: value}], rule)
    assert hint in str(e.value)
    optim = Optimizer(make_net().parameters(), rule)
    with pytest.raises(ValueError, match=rf"param group 1: '{key}'"):
        optim.add_param_group({"params": b, key: value, "rule": rule})
    assert len(optim.param_groups) == len(optim._groups) == 1


def test_several_torch_keys_are_all_named():
    # (betas set the Adam rule's: allowed)
    with pytest.raises(ValueError, match=r"'maximize' .* the group also has \['weight_decay'\]"):
        Optimizer([{"params": make_net().parameters(), "weight_decay": 0.1, "betas": (0.9, 0.99),
                    "maximize": False}], opt.Adam(1e-3))  # fmt: skip


SCHEDULERS = {
    "StepLR": lambda o: LRS.StepLR(o, step_size=2, gamma=0.5),
    "CosineAnnealingLR": lambda o: LRS.CosineAnnealingLR(o, T_max=6),
    "OneCycleLR": lambda o: LRS.OneCycleLR(o, max_lr=0.1, total_steps=8, cycle_momentum=False),
    "SequentialLR": lambda o: LRS.SequentialLR(
        o, [LRS.LinearLR(o, 0.1, total_iters=3), LRS.ExponentialLR(o, 0.9)], milestones=[3]
    ),
    "LambdaLR": lambda o: LRS.LambdaLR(o, lambda k: 0.5**k),
    "ReduceLROnPlateau": lambda o: LRS.ReduceLROnPlateau(o, patience=0, factor=0.5),
}


@pytest.mark.parametrize("name", SCHEDULERS)
def test_the_keys_schedulers_write_are_kept(name):
    nets = make_net(), make_net()
    optims = [Optimizer([{"params": net.parameters(), "lr": 0.01}], opt.Adam(0.01)) for net in nets]
    scheds = [SCHEDULERS[name](o) for o in optims]
    for net, o, s in zip(nets, optims, scheds):
        for X, y in data(3):
            o.zero_grad()
            loss = F.mse_loss(net(X), y)
            loss.backward()
            o.step()
            s.step(loss.item()) if name == "ReduceLROnPlateau" else s.step()
    optims[0].add_param_group({"params": [torch.zeros(2, dtype=D, requires_grad=True)],
                               "initial_lr": 0.01, "max_lr": 0.1, "min_lr": 0.0})  # fmt: skip
    sd = roundtrip(optims[1].state_dict())
    fresh = Optimizer([{"params": make_net().parameters(), "lr": 0.01}], opt.Adam(0.01))
    fresh.load_state_dict(sd)
    assert fresh.param_groups[0]["lr"] == optims[1].param_groups[0]["lr"]
    if name == "OneCycleLR":
        assert {"initial_lr", "max_lr", "min_lr"} <= set(fresh.param_groups[0])


def test_a_saved_group_with_a_torch_key_is_refused():
    net = make_net()
    optim = Optimizer(net.parameters(), opt.Adam(1e-2))
    sd = optim.state_dict()
    sd["param_groups"][0]["weight_decay"] = 0.1
    with pytest.raises(ValueError, match=r"param group 0: 'weight_decay' is a torch.*delete it"):
        optim.load_state_dict(sd)
    assert "weight_decay" not in optim.param_groups[0]


# ----------------------------------------------------------------------------------------
# 4. torch's state-dict hooks


def test_the_state_dict_hooks_run_as_torch_runs_them():
    calls = []
    w = torch.zeros(2, dtype=D, requires_grad=True)
    optim = Optimizer([w], opt.Adam(0.1))
    optim.register_state_dict_pre_hook(lambda o: calls.append(("sd_pre", o is optim)))

    def post(o, sd):
        calls.append(("sd_post", o is optim))
        return {**sd, "extra": 1}

    optim.register_state_dict_post_hook(post)
    optim.register_state_dict_post_hook(lambda o, sd: calls.append(("first", "extra" in sd)),
                                        prepend=True)  # fmt: skip

    def load_pre(o, sd):
        calls.append(("load_pre", sd.pop("extra")))
        sd["param_groups"] = copy.deepcopy(sd["param_groups"])
        sd["param_groups"][0]["lr"] = 0.5

    optim.register_load_state_dict_pre_hook(load_pre)
    optim.register_load_state_dict_post_hook(
        lambda o: calls.append(("load_post", o.param_groups[0]["lr"]))
    )
    w.grad = torch.ones(2, dtype=D)
    optim.step()
    sd = optim.state_dict()
    assert sd["extra"] == 1
    optim.load_state_dict(sd)
    assert "extra" in sd  # the pre-hook had a shallow copy
    assert calls == [
        ("sd_pre", True),
        ("first", False),
        ("sd_post", True),
        ("load_pre", 1),
        ("load_post", 0.5),
    ]
    optim.register_load_state_dict_pre_hook(lambda o, sd: {"state": {}, "param_groups": []})
    with pytest.raises(ValueError, match="the state dict has 0 param groups"):
        optim.load_state_dict(sd)


# ----------------------------------------------------------------------------------------
# 5. copy.deepcopy and pickle give a working, equal optimiser


def _two_groups(net):
    params = list(net.parameters())
    optim = Optimizer(
        [{"params": params[:2]}, {"params": params[2:], "rule": opt.Rprop(1e-3)}], opt.Adam(0.05)
    )
    return optim, LRS.StepLR(optim, step_size=1, gamma=0.7)


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copied_optimiser_steps_as_the_original(how):
    net = make_net()
    optim, sched = _two_groups(net)
    batches = data(6)
    train(net, optim, batches[:3], sched)
    optim.state_tree  # noqa: B018 - handed out: the copy is planned afresh all the same
    if how == "deepcopy":
        net2, optim2 = copy.deepcopy((net, optim))
    else:
        net2, optim2 = pickle.loads(pickle.dumps((net, optim)))
    ps = optim2.param_groups[0]["params"] + optim2.param_groups[1]["params"]
    assert all(p is q for p, q in zip(ps, net2.parameters()))
    same(snapshot(net, optim), snapshot(net2, optim2))
    assert "differentiable" not in optim2.defaults
    sched2 = LRS.StepLR(optim2, step_size=1, gamma=0.7)
    sched2.load_state_dict(sched.state_dict())
    train(net, optim, batches[3:], sched)
    train(net2, optim2, batches[3:], sched2)
    same(snapshot(net, optim), snapshot(net2, optim2))
    optim2.add_param_group({"params": [torch.zeros(2, dtype=D, requires_grad=True)]})
    # the default rule's momentum key (for torch's schedulers), none for Rprop's group
    assert set(optim2.param_groups[2]) == {"params", "rule", "lr", "betas"}
    assert "betas" not in optim2.param_groups[1]


def test_a_deepcopy_of_the_optimiser_alone_steps_copies_of_the_tensors():
    net = make_net()
    optim, sched = _two_groups(net)
    train(net, optim, data(3), sched)
    optim2 = copy.deepcopy(optim)
    ps = optim2.param_groups[0]["params"] + optim2.param_groups[1]["params"]
    assert all(p is not q and torch.equal(p, q) for p, q in zip(ps, net.parameters()))
    for p, q in zip(ps, net.parameters()):
        p.grad = q.grad = torch.ones_like(q)
    optim.step()
    optim2.step()
    assert all(torch.equal(p, q) for p, q in zip(ps, net.parameters()))
    assert optim2.state_dict()["state"][3]["count"] == 4


def test_a_copy_steps_its_own_tensors_only():
    net = make_net()
    optim = Optimizer(net.parameters(), opt.Adam(0.05))
    train(net, optim, data(2))
    net2, optim2 = copy.deepcopy((net, optim))
    before = snapshot(net, optim)
    train(net2, optim2, data(2))
    same(before, snapshot(net, optim))


def test_an_optimiser_pickled_without_its_groups_is_refused():
    optim = Optimizer([torch.zeros(2, requires_grad=True)], opt.Adam(0.1))
    state = torch.optim.Optimizer.__getstate__(optim)
    with pytest.raises(TypeError, match=r"use optim.state_dict\(\)|save and load optim"):
        Optimizer.__new__(Optimizer).__setstate__(state)


# ----------------------------------------------------------------------------------------
# 6. a parameter's state is made at the lr of its first step, as torch makes it


def _rprop_pair(sched, no_grad_first=0):
    torch.manual_seed(0)
    nets = make_net(), make_net()
    mine = Optimizer(nets[0].parameters(), opt.Rprop(0.01))
    ref = torch.optim.Rprop(nets[1].parameters(), lr=0.01)
    scheds = sched(mine), sched(ref)
    for k, (X, y) in enumerate(data(12)):
        for net, o, s in zip(nets, (mine, ref), scheds):
            o.zero_grad()
            F.mse_loss(net(X), y).backward()
            if k < no_grad_first:
                net[2].bias.grad = None  # steps later, at the lr then
            o.step()
            s.step()
    return nets


@pytest.mark.parametrize(
    "sched",
    [
        lambda o: LRS.LinearLR(o, start_factor=0.1, total_iters=5),
        lambda o: LRS.OneCycleLR(o, max_lr=0.05, total_steps=12, cycle_momentum=False),
    ],
    ids=["LinearLR", "OneCycleLR"],
)
@pytest.mark.parametrize("no_grad_first", [0, 4])
def test_rprop_takes_the_lr_of_its_first_step(sched, no_grad_first):
    a, b = _rprop_pair(sched, no_grad_first)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.allclose(p, q, rtol=1e-9, atol=0)


def test_a_planned_step_makes_the_state_of_a_parameter_not_stepped_at_the_new_lr():
    w, u, v, z = (torch.zeros(3, dtype=D, requires_grad=True) for _ in range(4))
    mine, ref = Optimizer([w, u], opt.Rprop(0.1)), torch.optim.Rprop([v, z], lr=0.1)
    for k in range(6):
        if k == 3:  # planned by now, u not stepped: it starts at the new lr
            assert type(mine._planned).__name__ == "Plan"
            for o in (mine, ref):
                o.param_groups[0]["lr"] = 0.01
        for p, q in ((w, v), (u, z)):
            p.grad = torch.full((3,), 1.0 + k, dtype=D) if k >= 3 or p is w else None
            q.grad = None if p.grad is None else p.grad.clone()
        mine.step()
        ref.step()
    assert torch.equal(w, v) and torch.equal(u, z) and u[0].item() < -0.01
    assert type(mine._planned).__name__ == "Plan"


class ProbeRefused(opt.Rule):
    """A rule written in Python whose init takes arrays of 2 elements or more only."""

    def init(self, x):
        if x.size == 1:
            raise ValueError("too small")
        return np.zeros_like(x)

    def apply(self, state, x, dx):
        return state + 1, state + dx


def test_a_rule_whose_init_refuses_the_probe_is_taken_as_reading_its_eta():
    w = torch.zeros(2, dtype=D, requires_grad=True)
    optim = Optimizer([w], ProbeRefused())
    assert optim._groups[0].eta_init
    with pytest.warns(UserWarning, match="no trainable parameters"):
        empty = Optimizer([{"params": []}, {"params": [torch.zeros(2)]}], opt.Rprop())
    assert not empty._groups[0].eta_init and empty._groups[1].eta_init
    assert not Optimizer([{"params": torch.zeros(2)}], opt.Adam())._groups[0].eta_init


def test_an_lr_set_by_hand_before_the_first_step():
    w, v = (torch.zeros(3, dtype=D, requires_grad=True) for _ in range(2))
    mine, ref = Optimizer([w], opt.Rprop(0.03)), torch.optim.Rprop([v], lr=0.03)
    for o in (mine, ref):
        o.param_groups[0]["lr"] = 0.003
    for _ in range(3):
        for p, o in ((w, mine), (v, ref)):
            p.grad = torch.ones(3, dtype=D)
            o.step()
        for o in (mine, ref):
            o.param_groups[0]["lr"] = 1.0  # stepped: the lr no longer matters to Rprop
    assert torch.equal(w, v) and w[0].item() == pytest.approx(-0.003 * (1 + 1.2 + 1.44))


def test_a_loaded_state_of_a_parameter_not_stepped_is_made_at_the_lr_of_its_first_step():
    w, u = (torch.zeros(2, dtype=D, requires_grad=True) for _ in range(2))
    source = Optimizer([w, u], opt.Rprop(0.1))
    w.grad = torch.ones(2, dtype=D)
    source.step()  # u has not stepped
    sd = source.state_dict()
    assert (sd["state"][0]["count"], sd["state"][1]["count"]) == (1, 0)
    x, z = (torch.zeros(2, dtype=D, requires_grad=True) for _ in range(2))
    target = Optimizer([{"params": [x, z], "lr": 0.01}], opt.Rprop(0.1))
    target.load_state_dict(sd)  # lr 0.1 restored: z's first step is at 0.1, as u's would be
    z.grad = torch.ones(2, dtype=D)
    target.step()
    assert z.tolist() == [-0.1, -0.1]
    no_counts = _without_counts(sd)
    target = Optimizer([torch.zeros(2, dtype=D), torch.zeros(2, dtype=D)], opt.Rprop(0.1))
    target.load_state_dict(no_counts)  # counts unknown: the loaded states are kept
    target.param_groups[0]["lr"] = 0.5
    target.param_groups[0]["params"][1].grad = torch.ones(2, dtype=D)
    target.step()
    assert target.param_groups[0]["params"][1].tolist() == [-0.1, -0.1]


# ----------------------------------------------------------------------------------------
# 7. a rule of another kind assigned to a group is refused, changing nothing


KIND_CHANGED = (
    r"param group 0: its 'rule' was changed from Adam.* to Momentum.*parameter '0.weight'"
    r".*Put the old rule back"
)


def test_a_rule_of_another_kind_is_refused_and_the_old_one_continues():
    nets = make_net(), make_net()
    optims = [Optimizer(net.named_parameters(), opt.Adam(0.01)) for net in nets]
    batches = data(6)
    for net, o in zip(nets, optims):
        train(net, o, batches[:3])
    before = snapshot(nets[1], optims[1])
    rules = [leaf.rule for leaf in optims[1].state_tree[0].values()]
    optims[1].param_groups[0]["rule"] = opt.Momentum(0.01)
    for _ in range(2):
        with pytest.raises(ValueError, match=KIND_CHANGED):
            train(nets[1], optims[1], batches[3:4])
    assert [leaf.rule for leaf in optims[1].state_tree[0].values()] == rules
    after = snapshot(nets[1], optims[1])
    after[1]["param_groups"][0]["rule"] = before[1]["param_groups"][0]["rule"]
    same(before, after)
    optims[1].param_groups[0]["rule"] = optims[0].param_groups[0]["rule"]
    for net, o in zip(nets, optims):
        train(net, o, batches[3:])
    same(snapshot(nets[0], optims[0]), snapshot(nets[1], optims[1]))


def test_an_lr_that_is_not_a_number_names_the_group():
    w = torch.zeros(2, dtype=D, requires_grad=True)
    optim = Optimizer([w], opt.Adam(0.1))
    optim.param_groups[0]["lr"] = "x"
    w.grad = torch.ones(2, dtype=D)
    with pytest.raises(ValueError, match="param group 0: its 'lr' is 'x', not a number"):
        optim.step()


class EmptyRefused(opt.Rule):
    """A rule written in Python whose init refuses an empty array."""

    def __init__(self):
        self.eta = 0.5

    def init(self, x):
        if x.size == 0:
            raise ValueError("no empty arrays")
        return None

    def apply(self, state, x, dx):
        return state, self.eta * dx


def test_a_python_rule_whose_init_refuses_an_empty_array_can_be_assigned():
    w = torch.ones(2, dtype=D, requires_grad=True)
    optim = Optimizer([w], opt.Descent(0.1))
    w.grad = torch.ones(2, dtype=D)
    optim.step()
    optim.param_groups[0]["rule"] = EmptyRefused()
    optim.step()
    assert w.tolist() == [0.8, 0.8]  # the new rule takes the group's lr


# ----------------------------------------------------------------------------------------
# 8. a parameter given twice is refused


def test_a_parameter_given_twice_is_refused():
    a, b = (torch.zeros(2, requires_grad=True) for _ in range(2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # before torch's own warning
        with pytest.raises(ValueError, match=r"param group 0: the same tensor is given twice "
                           r"\(parameters 0 and 2\)"):  # fmt: skip
            Optimizer([a, b, a], opt.Adam(0.1))
        with pytest.raises(ValueError, match=r"parameters 'a' and 'c'"):
            Optimizer([("a", a), ("b", b), ("c", a)], opt.Adam(0.1))
        optim = Optimizer(iter([a]), opt.Adam(0.1))
        with pytest.raises(ValueError, match=r"param group 1: the same tensor is given twice"):
            optim.add_param_group({"params": (t for t in (b, b))})
        with pytest.raises(ValueError, match="some parameters appear in more than one"):
            optim.add_param_group({"params": [b, a]})
        with pytest.raises(TypeError, match="param_group must be a dict"):
            optim.add_param_group([b])  # type: ignore[arg-type]
    assert len(optim.param_groups) == len(optim._groups) == 1


# ----------------------------------------------------------------------------------------
# 9. a rule written in Python resumes in a new optimiser


class SignSGD(opt.Rule):
    def __init__(self, eta=0.01, mode=None):
        self.eta = eta
        self.mode = mode or object()  # a field whose own repr holds an address
        self.sizes = [1, (2,)]

    def apply(self, state, x, dx):
        return state, self.eta * np.sign(dx)


@pytest.mark.parametrize(
    "make",
    [lambda: SignSGD(0.01), lambda: opt.OptimiserChain(opt.ClipGrad(1.0), SignSGD(0.01))],
    ids=["rule", "chain"],
)
def test_a_rule_written_in_python_resumes_in_a_new_optimiser(make):
    w = torch.zeros(2, dtype=D, requires_grad=True)
    optim = Optimizer([w], make())
    w.grad = torch.ones(2, dtype=D)
    optim.step()
    sd = roundtrip(optim.state_dict())
    assert " at 0x" not in sd["param_groups"][0]["rule"]
    described = (
        "test_torch_optimizer_audit.SignSGD(eta=0.01, mode=<object object>, sizes=[1, (2,)])"
    )
    assert described in sd["param_groups"][0]["rule"]
    Optimizer([torch.zeros(2, dtype=D)], make()).load_state_dict(sd)
    other = Optimizer([torch.zeros(2, dtype=D)], SignSGD(0.02))
    with pytest.raises(ValueError, match=r"for the rule .*SignSGD\(eta=0.01.*this group has"):
        other.load_state_dict(sd)


class Slotted(opt.Rule):
    __slots__ = "eta"

    def __init__(self, eta):
        self.eta = eta

    def apply(self, state, x, dx):
        return state, self.eta * dx


@dataclasses.dataclass(frozen=True, repr=False)
class Unnamed(opt.Rule):
    eta: float = 0.1

    def apply(self, state, x, dx):
        return state, self.eta * dx


def test_a_rule_with_slots_or_dataclass_fields_is_named_by_them():
    optim = Optimizer([torch.zeros(2, requires_grad=True)], Slotted(0.5))
    assert optim.state_dict()["param_groups"][0]["rule"].endswith("Slotted(eta=0.5)")
    optim = Optimizer([torch.zeros(2, requires_grad=True)], Unnamed(0.5))
    assert optim.state_dict()["param_groups"][0]["rule"].endswith("Unnamed(eta=0.5)")


def test_a_library_rule_is_still_named_by_its_repr():
    optim = Optimizer([torch.zeros(2, requires_grad=True)], opt.Adam(1e-3))
    assert optim.state_dict()["param_groups"][0]["rule"] == repr(opt.Adam(1e-3))
    with pytest.raises(ValueError, match="the state dict is for the rule Adam"):
        Optimizer([torch.zeros(2, requires_grad=True)], opt.Adam(2e-3)).load_state_dict(
            optim.state_dict()
        )


def test_a_leaf_given_to_the_state_tree_is_the_one_saved_and_given_the_lr():
    # resetting one parameter's state by hand: the steps, state_dict and a new lr all take
    # the Leaf the tree holds now
    w = torch.zeros(2, dtype=D)
    optim = Optimizer([w], opt.Adam(0.1))
    for _ in range(3):
        w.grad = torch.ones(2, dtype=D)
        optim.step()
    fresh = opt.Leaf(opt.Adam(0.1), opt.init(opt.Adam(0.1), w.numpy()))
    optim.state_tree[0]["0"] = fresh
    w.grad = torch.ones(2, dtype=D)
    optim.step()
    assert fresh.count == 1
    np.testing.assert_array_equal(optim.state_dict()["state"][0]["m"].numpy(), fresh.state.m)
    optim.param_groups[0]["lr"] = 0.05
    optim.step()
    assert fresh.rule == opt.Adam(0.05) and fresh.count == 2
    optim.state_tree[0]["0"] = "not a leaf"
    with pytest.raises(ValueError, match="parameter 0: the state tree holds 'not a leaf'"):
        optim.state_dict()


def test_a_torch_key_set_in_a_group_later_is_refused_at_the_next_step():
    # a weight-decay schedule written into the groups (as DINO's loop does) would be
    # ignored: the step refuses it, naming the group and key, before anything is written
    w = torch.ones(3, dtype=D)
    optim = Optimizer([w], opt.AdamW(0.1, lambda_=0.0))
    w.grad = torch.ones(3, dtype=D)
    optim.step()
    before = w.clone()
    optim.param_groups[0]["weight_decay"] = 0.5
    with pytest.raises(ValueError, match=r"step: param group 0: 'weight_decay' is a torch\.optim"):
        optim.step()
    assert torch.equal(w, before)
    del optim.param_groups[0]["weight_decay"]
    optim.step()
    assert not torch.equal(w, before)
