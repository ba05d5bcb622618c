"""Training recipes (issue 16): a rule per part of the model (``setup(rule_for, model)``)."""

from __future__ import annotations

import numpy as np
import pytest

import optimisers as opt


def _decay_matrices(path, x):
    return opt.AdamW(1e-2, lambda_=0.1 if x.ndim >= 2 else 0.0)


def test_rule_for_is_called_once_per_array_and_once_for_a_tie():
    model = {"w": np.ones((2, 3)), "b": np.zeros(3), "n": 4, "s": "text"}
    model["w_again"] = model["w"]
    calls = []

    def rule_for(path, x):
        calls.append((str(path), x.shape))
        return opt.Adam()

    state = opt.setup(rule_for, model)
    assert calls == [("w", (2, 3)), ("b", (3,))]
    assert state["w_again"] is state["w"] and state["n"] is None


def test_none_leaves_an_array_untrained():
    model = {"w": np.ones((2, 2)), "frozen": np.ones(3)}
    state = opt.setup(
        lambda path, x: None if path == opt.KeyPath("frozen") else opt.Descent(1.0), model
    )
    assert state["frozen"] is None
    state, model = opt.update_(state, model, {"w": np.ones((2, 2)), "frozen": np.ones(3)})
    assert np.array_equal(model["frozen"], np.ones(3))
    assert np.array_equal(model["w"], 0 * model["w"])


def test_equal_rules_become_one_object_and_run_as_one_batch():
    model = {
        f"layer{i}": {"w": np.ones((3, 3), np.float32), "b": np.ones(3, np.float32)}
        for i in range(4)
    }
    state = opt.setup(_decay_matrices, model)
    rules = {id(state[k][p].rule) for k in model for p in ("w", "b")}
    assert len(rules) == 2
    assert state["layer0"]["w"].rule is state["layer3"]["w"].rule


def test_a_rule_function_that_gives_something_else_is_refused_naming_the_path():
    with pytest.raises(TypeError, match=r"at b.*Rule or None"):
        opt.setup(
            lambda path, x: 0.1 if path == opt.KeyPath("b") else opt.Adam(),
            {"a": np.ones(2), "b": np.ones(2)},
        )
    with pytest.raises(TypeError, match="a rule, or a function"):
        opt.setup(0.1, {"a": np.ones(2)})


def test_tracks_torch_adamw_with_two_parameter_groups():
    """AdamW decaying only the matrices = torch's AdamW with two param groups (weight decay
    0.1 and 0), float64, on an MLP trained with autograd."""
    torch = pytest.importorskip("torch", reason="torch is the peer (pip install torch)")
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)
    ).double()
    twin = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)
    ).double()
    twin.load_state_dict(net.state_dict())
    decay = [p for p in twin.parameters() if p.ndim >= 2]
    other = [p for p in twin.parameters() if p.ndim < 2]
    peer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}], lr=1e-2
    )
    params = dict(net.named_parameters())
    model = {k: p.detach().numpy() for k, p in params.items()}
    state = opt.setup(_decay_matrices, model)
    X, y = torch.randn(32, 4, dtype=torch.float64), torch.randn(32, 1, dtype=torch.float64)
    for _ in range(20):
        for module in (net, twin):
            module.zero_grad()
            torch.nn.functional.mse_loss(module(X), y).backward()
        state, _ = opt.update_(state, model, {k: p.grad.numpy() for k, p in params.items()})
        peer.step()
    for (name, ours), theirs in zip(net.named_parameters(), twin.parameters()):
        np.testing.assert_allclose(
            ours.detach().numpy(), theirs.detach().numpy(), rtol=1e-10, atol=1e-13, err_msg=name
        )


def test_adam_with_cosine_decay_tracks_torch_under_cosine_annealing():
    """Issue 16, point 2: Adam with schedules.cosine_decay as its eta = torch's Adam under
    CosineAnnealingLR (float64, 30 steps, 1e-9 relative)."""
    torch = pytest.importorskip("torch", reason="torch is the peer (pip install torch)")
    from optimisers import schedules

    rng = np.random.default_rng(1)
    x = rng.standard_normal(50)
    p = torch.tensor(x.copy(), requires_grad=True)
    peer = torch.optim.Adam([p], lr=0.1)
    # (T_max = the schedule's decay steps: past it torch's cosine rises again, optax's stays)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(peer, T_max=30, eta_min=0.01)
    state = opt.setup(opt.Adam(schedules.cosine_decay(0.1, 30, alpha=0.1)), x)
    for _ in range(30):
        g = rng.standard_normal(50)
        p.grad = torch.tensor(g)
        peer.step()
        sched.step()
        state, x = opt.update_(state, x, g)
    np.testing.assert_allclose(x, p.detach().numpy(), rtol=1e-9, atol=1e-12)
