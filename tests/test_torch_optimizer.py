"""optimisers.torch.Optimizer against torch.optim itself (issue 18, points 1 to 3).

An MLP trained by autograd, float64: two copies of one network, one stepped by a
torch.optim optimiser, one by ``Optimizer`` with the rule of the same update, each
computing its own gradients; after every step the parameters agree to 1e-9 relative.
torch is optional: the module skips (saying so) where it is not installed; CI's second
stage installs it.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="optimisers.torch needs PyTorch (CI stage 2)")

import optimisers as opt  # noqa: E402
from optimisers.torch import Optimizer  # noqa: E402

T = torch.optim
S = torch.optim.lr_scheduler


def make_net(seed=0, dtype=torch.float64):
    # drawn in float32 whatever torch's default dtype (torch_float64 below changes it), then
    # converted: the same network under either default
    torch.manual_seed(seed)
    f32 = torch.float32
    return torch.nn.Sequential(
        torch.nn.Linear(6, 16, dtype=f32),
        torch.nn.Tanh(),
        torch.nn.LayerNorm(16, dtype=f32),
        torch.nn.Linear(16, 8, dtype=f32),
        torch.nn.Tanh(),
        torch.nn.Linear(8, 1, dtype=f32),
    ).to(dtype)


def make_data(dtype=torch.float64, n=128):
    g = torch.Generator().manual_seed(7)
    X = torch.randn(n, 6, generator=g, dtype=dtype)
    y = torch.sin(2 * X[:, :1]) + X[:, 1:2] * X[:, 2:3]
    return X, y


def rel_diff(a, b):
    d = max(
        (pa.detach() - pb.detach()).abs().max().item()
        for pa, pb in zip(a.parameters(), b.parameters())
    )
    return d / max(pa.detach().abs().max().item() for pa in a.parameters())


def train_pair(
    make_torch, rule, steps=40, dtype=torch.float64, sched=None, group_lr=None, batch=32
):
    """Train two copies side by side; the largest relative difference over the steps and
    the losses of our copy."""
    net_t, net_o = make_net(dtype=dtype), make_net(dtype=dtype)
    X, y = make_data(dtype)
    opt_t = make_torch(net_t.parameters())
    params = (
        [{"params": list(net_o.parameters()), "lr": group_lr}]
        if group_lr
        else net_o.named_parameters()
    )
    opt_o = Optimizer(params, rule)
    scheds = [sched(opt_t), sched(opt_o)] if sched else []
    g = torch.Generator().manual_seed(3)
    worst, losses = 0.0, []
    for _ in range(steps):
        idx = torch.randint(0, len(X), (batch,), generator=g)
        for net, o in ((net_t, opt_t), (net_o, opt_o)):
            o.zero_grad()
            loss = torch.nn.functional.mse_loss(net(X[idx]), y[idx])
            loss.backward()
            o.step()
            if o is opt_o:
                losses.append(loss.item())
        for s in scheds:
            if isinstance(s, S.ReduceLROnPlateau):
                s.step(losses[-1] if len(losses) % 4 else 1e9)  # plateaus now and then
            else:
                s.step()
        worst = max(worst, rel_diff(net_t, net_o))
    return worst, losses


# torch.optim configuration -> the rule of the same update (derived from both formulas)
PAIRS = {
    "Adam": (
        lambda p: T.Adam(p, lr=1e-2, betas=(0.8, 0.99), eps=1e-6),
        opt.Adam(1e-2, (0.8, 0.99), 1e-6),
    ),
    "AdamW": (lambda p: T.AdamW(p, lr=1e-2, weight_decay=0.1), opt.AdamW(1e-2, lambda_=0.1)),
    "SGD-momentum": (lambda p: T.SGD(p, lr=0.05, momentum=0.9), opt.Momentum(0.05, 0.9)),
    "SGD-nesterov": (
        lambda p: T.SGD(p, lr=0.05, momentum=0.9, nesterov=True),
        opt.Nesterov(0.05, 0.9),
    ),
    "SGD-weight-decay": (
        lambda p: T.SGD(p, lr=0.05, momentum=0.9, weight_decay=0.01),
        opt.OptimiserChain(opt.WeightDecay(0.01), opt.Momentum(0.05, 0.9)),
    ),
    "RMSprop": (lambda p: T.RMSprop(p, lr=1e-3, alpha=0.9), opt.RMSProp(1e-3, 0.9)),
    "RMSprop-centred": (
        lambda p: T.RMSprop(p, lr=1e-3, alpha=0.9, centered=True),
        opt.RMSProp(1e-3, 0.9, centred=True),
    ),
    # torch starts its sum at initial_accumulator_value, AdaGrad at epsilon
    "Adagrad": (
        lambda p: T.Adagrad(p, lr=0.05, eps=1e-8, initial_accumulator_value=1e-8),
        opt.AdaGrad(0.05, 1e-8),
    ),
    # AdaDelta has no eta: the group's lr multiplies its step, as torch's lr does
    "Adadelta": (lambda p: T.Adadelta(p, lr=0.5, rho=0.9, eps=1e-6), opt.AdaDelta(0.9, 1e-6)),
    # torch adds eps inside the max, AdaMax to the denominator: equal at eps = 0
    "Adamax": (lambda p: T.Adamax(p, lr=1e-2, eps=0.0), opt.AdaMax(1e-2, epsilon=0.0)),
    # torch rectifies from rho_t > 5, RAdam (the seed) from rho_t > 4, and adds eps before
    # the bias correction: with beta2 = 0.5, rho_inf = 3, both stay in the warm-up branch
    # (bias-corrected momentum) for ever; the rectified branch has no torch twin
    "RAdam-warmup": (lambda p: T.RAdam(p, lr=1e-2, betas=(0.9, 0.5)), opt.RAdam(1e-2, (0.9, 0.5))),
    "Rprop": (lambda p: T.Rprop(p, lr=0.01), opt.Rprop(0.01, (0.5, 1.2), (1e-6, 50.0))),
    # torch's own forms of Adamax, RAdam (rectified from t = 6 here) and NAdam, at their
    # defaults and at other hyper-parameters (tests/test_torchlike.py: the rules alone)
    "Adamax-torch": (lambda p: T.Adamax(p), opt.TorchAdamax()),
    "Adamax-torch-tuned": (
        lambda p: T.Adamax(p, lr=1e-2, betas=(0.8, 0.99), eps=1e-4),
        opt.TorchAdamax(1e-2, (0.8, 0.99), 1e-4),
    ),
    "RAdam-torch": (lambda p: T.RAdam(p), opt.TorchRAdam()),
    "RAdam-torch-tuned": (
        lambda p: T.RAdam(p, lr=1e-2, betas=(0.8, 0.95), eps=1e-6),
        opt.TorchRAdam(1e-2, (0.8, 0.95), 1e-6),
    ),
    "NAdam-torch": (lambda p: T.NAdam(p), opt.TorchNAdam()),
    "NAdam-torch-tuned": (
        lambda p: T.NAdam(p, lr=1e-2, betas=(0.8, 0.99), eps=1e-6, momentum_decay=0.01),
        opt.TorchNAdam(1e-2, (0.8, 0.99), 1e-6, 0.01),
    ),
}


@pytest.fixture
def torch_float64():
    """torch's default dtype float64 while a test runs: torch keeps per-parameter scalar
    state in it (NAdam's mu_product; float32 would round it where ours is float64)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.mark.parametrize("name", list(PAIRS))
def test_tracks_torch_float64(name, n_threads, torch_float64):
    make, rule = PAIRS[name]
    group_lr = 0.5 if name == "Adadelta" else None
    worst, losses = train_pair(make, rule, group_lr=group_lr)
    assert worst < 1e-9, f"{name}: relative difference {worst:.2e} after 40 steps"
    assert losses[-1] < losses[0]


def test_adadelta_without_lr_is_torch_lr_one():
    worst, _ = train_pair(
        lambda p: T.Adadelta(p, lr=1.0, rho=0.9, eps=1e-6), opt.AdaDelta(0.9, 1e-6)
    )
    assert worst < 1e-9


def test_tracks_fused_adamw_float32(n_threads):
    worst, losses = train_pair(
        lambda p: T.AdamW(p, lr=1e-2, weight_decay=0.1, fused=True),
        opt.AdamW(1e-2, lambda_=0.1),
        dtype=torch.float32,
    )
    # torch rounds 1 - lr*wd to float32 first; the two differ by rounding only (1.2e-6
    # after 40 steps here, a few float32 ulps; a wrong step would be 1e-3 or more)
    assert worst < 5e-6, worst
    assert losses[-1] < losses[0]


SCHEDULERS = {
    "StepLR": lambda o: S.StepLR(o, step_size=7, gamma=0.5),
    "CosineAnnealingLR": lambda o: S.CosineAnnealingLR(o, T_max=30, eta_min=1e-4),
    "OneCycleLR": lambda o: S.OneCycleLR(o, max_lr=3e-2, total_steps=30, cycle_momentum=False),
    "SequentialLR": lambda o: S.SequentialLR(
        o,
        [S.LinearLR(o, start_factor=0.1, total_iters=10), S.ExponentialLR(o, gamma=0.9)],
        milestones=[10],
    ),
    "LambdaLR": lambda o: S.LambdaLR(o, lambda k: 1 / (1 + k)),
    # an lr of 0: a warm-up from it, a cosine through it (torch's momentum buffer goes on)
    "warm-up from 0": lambda o: S.LambdaLR(o, lambda k: min(1.0, k / 5)),
    "cosine through 0": lambda o: S.CosineAnnealingLR(o, T_max=10, eta_min=0.0),
    "ReduceLROnPlateau": lambda o: S.ReduceLROnPlateau(o, factor=0.5, patience=1),
}


# SGD's momentum runs in torch's form (a buffer, then the lr), so a new lr applies to the
# whole buffer, 0 included.  Rprop from an lr of 0 is left out: torch clamps a zero step
# size up to its minimum at once, the seed's Rprop grows it from 0 (which stays 0).
SCHEDULED = [
    (sched, rule)
    for sched in SCHEDULERS
    for rule in ["Adam", "AdamW", "Adadelta", "SGD-momentum", "SGD-nesterov"]
    + ["SGD-weight-decay", "RMSprop", "Adagrad", "Rprop", "NAdam-torch"]
    if (sched, rule) != ("warm-up from 0", "Rprop")
]


@pytest.mark.parametrize("sched, rule", SCHEDULED)
def test_schedulers_track_torch(sched, rule, torch_float64):
    make, r = PAIRS[rule]
    worst, _ = train_pair(
        make, r, steps=30, sched=SCHEDULERS[sched], group_lr=0.5 if rule == "Adadelta" else None
    )
    assert worst < 1e-9, f"{rule} under {sched}: {worst:.2e}"


def test_scheduler_changes_the_rule_once_per_change():
    net = make_net()
    optim = Optimizer(net.parameters(), opt.Adam(1e-2))
    sched = S.StepLR(optim, step_size=2, gamma=0.1)
    X, y = make_data()
    seen = []
    for _ in range(5):
        optim.zero_grad()
        torch.nn.functional.mse_loss(net(X), y).backward()
        optim.step()
        sched.step()
        rules = {id(leaf.rule) for leaf in optim._groups[0].leaves}
        seen.append((len(rules), next(iter(optim._groups[0].leaves)).rule.eta))
    assert [n for n, _ in seen] == [1] * 5  # one rule object shared by the group
    assert [e for _, e in seen] == pytest.approx([1e-2, 1e-2, 1e-3, 1e-3, 1e-4])


# rules torch.optim lacks (or has only under another formula): they train the network
LACKING = [
    opt.Lion(1e-3),
    opt.AdaBelief(1e-2),
    opt.OAdam(1e-2),
    opt.AMSGrad(1e-2),
    opt.NAdam(1e-2),
    opt.RAdam(1e-2),
    opt.AdaMax(1e-2),
    opt.OptimiserChain(opt.SignDecay(1e-4), opt.Lion(1e-3)),
    opt.OptimiserChain(opt.ClipGlobalNorm(1.0), opt.AdamW(1e-2, lambda_=0.01)),
    opt.OptimiserChain(opt.AccumGrad(2), opt.Adam(1e-2)),
]


@pytest.mark.parametrize("rule", LACKING, ids=lambda r: repr(r)[:40])
def test_rules_torch_lacks_train(rule):
    net = make_net()
    X, y = make_data()
    optim = Optimizer(net.parameters(), rule)
    first = torch.nn.functional.mse_loss(net(X), y).item()
    for _ in range(60):
        optim.zero_grad()
        torch.nn.functional.mse_loss(net(X), y).backward()
        optim.step()
    assert torch.nn.functional.mse_loss(net(X), y).item() < 0.9 * first


# ----------------------------------------------------------------------------------------
# The torch.optim protocol (point 1)


def test_param_groups_rules_lrs_and_names():
    net = make_net()
    decay = [p for n, p in net.named_parameters() if n.endswith("weight")]
    rest = [p for n, p in net.named_parameters() if not n.endswith("weight")]
    optim = Optimizer(
        [{"params": decay, "rule": opt.AdamW(1e-2, lambda_=0.1)}, {"params": rest, "lr": 3e-3}],
        opt.Lion(1e-3),
    )
    assert [g["lr"] for g in optim.param_groups] == [1e-2, 3e-3]
    twin = make_net()
    opt_t = T.AdamW(
        [
            {
                "params": [p for n, p in twin.named_parameters() if n.endswith("weight")],
                "weight_decay": 0.1,
                "lr": 1e-2,
            }
        ],
        lr=1e-2,
    )
    X, y = make_data()
    before = [p.detach().clone() for p in rest]
    for net_, o in ((net, optim), (twin, opt_t)):
        o.zero_grad()
        torch.nn.functional.mse_loss(net_(X), y).backward()
        o.step()
    for (n, a), b in zip(net.named_parameters(), twin.parameters()):
        if n.endswith("weight"):
            assert torch.allclose(a, b, rtol=1e-12, atol=0)
    # the other group ran Lion with eta = 3e-3: every element moved by exactly 3e-3
    for p, q in zip(rest, before):
        assert torch.allclose((p.detach() - q).abs(), torch.full_like(q, 3e-3), rtol=1e-9)


def test_add_param_group_and_named_parameters():
    a = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    b = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    optim = Optimizer([("a", a)], opt.Descent(0.1))
    optim.add_param_group({"params": [("b", b)], "rule": opt.Descent(0.5)})
    a.grad, b.grad = torch.ones(3, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    optim.step()
    assert a.detach().tolist() == [0.9] * 3 and b.detach().tolist() == [0.5] * 2
    with pytest.raises(ValueError, match="some parameters appear in more than one"):
        optim.add_param_group({"params": [("a2", a)]})
    assert len(optim.param_groups) == 2 and len(optim._groups) == 2


def test_no_grad_skips_and_state_does_not_advance():
    a = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    b = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    optim = Optimizer([a, b], opt.Adam(0.1))
    a.grad = torch.ones(2, dtype=torch.float64)
    optim.step()
    sd = optim.state_dict()["state"]
    assert b.detach().tolist() == [1.0, 1.0]
    assert sd[1]["m"].abs().max() == 0 and sd[1]["beta_t"].tolist() == [0.9, 0.999]
    assert sd[0]["beta_t"].tolist() == pytest.approx([0.81, 0.998001])


def test_step_closure_returns_its_loss():
    net = make_net()
    X, y = make_data()
    optim = Optimizer(net.parameters(), opt.Adam(1e-2))

    def closure():
        optim.zero_grad()
        loss = torch.nn.functional.mse_loss(net(X), y)
        loss.backward()
        return loss

    losses = [optim.step(closure).item() for _ in range(10)]
    assert losses[-1] < losses[0]
    assert optim.step() is None


def test_a_rule_with_a_scheduled_eta_needs_an_lr():
    w = torch.nn.Parameter(torch.ones(2))
    rule = opt.Adam(opt.schedules.constant(1e-3))
    with pytest.raises(ValueError, match="schedule as its eta"):
        Optimizer([w], rule)
    optim = Optimizer([{"params": [w], "lr": 0.1}], rule)  # lr replaces the schedule
    assert optim._groups[0].leaves[0].rule.eta == 0.1


def test_a_group_rule_changed_in_training():
    """A new rule with the same state (Adam -> AdamW) continues from that state with the
    group's lr; one whose state differs is refused before anything is written."""
    w = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    optim = Optimizer([{"params": [w], "lr": 0.1}], opt.Adam(0.5))
    w.grad = torch.ones(3, dtype=torch.float64)
    optim.step()
    optim.param_groups[0]["rule"] = opt.AdamW(0.5, lambda_=1.0)
    optim.step()
    twin = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    ref = T.AdamW([twin], lr=0.1, weight_decay=0.0)
    twin.grad = torch.ones(3, dtype=torch.float64)
    ref.step()
    ref.param_groups[0]["weight_decay"] = 1.0
    ref.step()
    assert torch.allclose(w.detach(), twin.detach(), rtol=1e-14)
    optim.param_groups[0]["rule"] = opt.Momentum(0.1)
    before = w.detach().clone()
    with pytest.raises(ValueError, match="which keeps another kind of state"):
        optim.step()
    assert torch.equal(w.detach(), before)


# torch's schedulers that cycle the momentum (their default, cycle_momentum=True) write a
# group's "momentum" (SGD) or "betas" (Adam): the rule's rho or beta, as "lr" is its eta
CYCLING = {
    "OneCycleLR": lambda o: S.OneCycleLR(o, max_lr=3e-2, total_steps=30),
    "CyclicLR": lambda o: S.CyclicLR(o, base_lr=1e-3, max_lr=3e-2, step_size_up=5),
}


@pytest.mark.parametrize("sched", list(CYCLING))
@pytest.mark.parametrize("rule", ["SGD-momentum", "SGD-nesterov", "SGD-weight-decay"])
def test_a_cycled_momentum_tracks_torch_sgd(sched, rule, torch_float64):
    make, r = PAIRS[rule]
    worst, _ = train_pair(make, r, steps=30, sched=CYCLING[sched])
    assert worst < 1e-9, f"{rule} under {sched}: {worst:.2e}"


def test_api_example_cycles_adams_beta1():
    # API.md's example: OneCycleLR at its defaults (cycle_momentum=True) over AdamW
    net = make_net(dtype=torch.float32)
    optim = Optimizer(net.parameters(), opt.AdamW(1e-3, lambda_=0.01))
    sched = S.OneCycleLR(optim, max_lr=1e-2, total_steps=1000)
    X, y = make_data(torch.float32)
    seen = set()
    for _ in range(5):
        optim.zero_grad()
        torch.nn.functional.mse_loss(net(X), y).backward()
        optim.step()
        beta = optim.param_groups[0]["betas"]
        assert optim.state_tree[0]["0"].rule.beta == beta  # the step's betas
        seen.add(beta[0])
        sched.step()
    assert len(seen) == 5 and all(0.85 <= b <= 0.95 for b in seen)
    optim.param_groups[0]["betas"] = (1.5, 0.999)  # out of range: refused, nothing written
    before = [p.detach().clone() for p in net.parameters()]
    with pytest.raises(ValueError, match=r"param group 0: its 'betas' is \(1\.5, 0\.999\)"):
        optim.step()
    assert all(torch.equal(a, p) for a, p in zip(before, net.parameters()))
