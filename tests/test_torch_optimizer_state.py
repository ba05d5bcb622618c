"""optimisers.torch.Optimizer: checkpoints, 16-bit parameters, bad input, no copies
(issue 18, points 4 to 6).  Skips (saying so) where torch is not installed."""

from __future__ import annotations

import copy
import io
import subprocess
import sys
import tracemalloc
import weakref

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="optimisers.torch needs PyTorch (CI stage 2)")

import optimisers as opt  # noqa: E402
from optimisers.torch import Optimizer  # noqa: E402

F = torch.nn.functional


def make_net(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 12), torch.nn.Tanh(), torch.nn.Linear(12, 1)).to(
        dtype
    )


def batches(n, dtype=torch.float32, seed=1):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        X = torch.randn(16, 5, generator=g).to(dtype)
        yield X, X[:, :1] * X[:, 1:2]


def train(net, optim, data, sched=None):
    for X, y in data:
        optim.zero_grad()
        F.mse_loss(net(X), y).backward()
        optim.step()
        if sched is not None:
            sched.step()


def weights(net):
    return [p.detach().clone() for p in net.parameters()]


RESUMABLE = [
    opt.Adam(1e-2),
    opt.RAdam(1e-2),
    opt.Rprop(1e-2),
    opt.OptimiserChain(opt.SkipNonFinite(), opt.ClipGlobalNorm(1.0), opt.AdamW(1e-2, lambda_=0.1)),
    opt.OptimiserChain(opt.AccumGrad(3), opt.Lion(1e-3)),
    opt.AdaDelta(0.9),
    opt.RMSProp(1e-3, centred=True),
    # SGD's momentum: the velocity is torch's buffer whatever the lr (a scheduler moved it)
    opt.Momentum(1e-2, 0.9),
    opt.Nesterov(1e-2, 0.9),
    opt.MixedPrecision(opt.OptimiserChain(opt.WeightDecay(1e-3), opt.Momentum(1e-2, 0.9))),
]


@pytest.mark.parametrize("rule", RESUMABLE, ids=lambda r: type(r).__name__)
def test_checkpoint_resumes_bit_for_bit(rule, tmp_path):
    data = list(batches(20))
    net = make_net()
    optim = Optimizer(net.parameters(), rule)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, T_max=20)
    train(net, optim, data[:9], sched)
    torch.save(
        {"model": net.state_dict(), "optim": optim.state_dict(), "sched": sched.state_dict()},
        tmp_path / "ckpt.pt",
    )
    train(net, optim, data[9:], sched)
    straight = weights(net)

    ck = torch.load(tmp_path / "ckpt.pt", weights_only=True)  # tensors and plain values
    net2 = make_net(seed=5)  # a fresh model, other values
    net2.load_state_dict(ck["model"])
    optim2 = Optimizer(net2.parameters(), rule)
    sched2 = torch.optim.lr_scheduler.CosineAnnealingLR(optim2, T_max=20)
    optim2.load_state_dict(ck["optim"])
    sched2.load_state_dict(ck["sched"])
    train(net2, optim2, data[9:], sched2)
    for a, b in zip(straight, weights(net2)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("rule", [opt.Adam(1e-2), opt.Nesterov(1e-2, 0.9)], ids=repr)
def test_checkpoint_resumes_under_a_cycled_momentum(rule, tmp_path):
    # OneCycleLR at its defaults writes the group's betas / momentum at every step: the
    # state dict keeps it, and the resumed run applies it as the straight one does
    data = list(batches(12))
    net = make_net()
    optim = Optimizer(net.parameters(), rule)
    sched = torch.optim.lr_scheduler.OneCycleLR(optim, max_lr=3e-2, total_steps=12)
    train(net, optim, data[:5], sched)
    ck = {"optim": copy.deepcopy(optim.state_dict()), "sched": sched.state_dict()}
    ck["model"] = copy.deepcopy(net.state_dict())
    train(net, optim, data[5:], sched)
    net2 = make_net(seed=5)
    net2.load_state_dict(ck["model"])
    optim2 = Optimizer(net2.parameters(), rule)
    sched2 = torch.optim.lr_scheduler.OneCycleLR(optim2, max_lr=3e-2, total_steps=12)
    optim2.load_state_dict(ck["optim"])
    sched2.load_state_dict(ck["sched"])
    train(net2, optim2, data[5:], sched2)
    assert all(torch.equal(a, b) for a, b in zip(weights(net), weights(net2)))


def test_state_dict_is_torch_layout_of_plain_values():
    net = make_net(dtype=torch.float64)
    optim = Optimizer(net.named_parameters(), opt.Adam(1e-3))
    train(net, optim, batches(2, torch.float64))
    sd = optim.state_dict()
    assert sorted(sd) == ["param_groups", "state"]
    assert sd["param_groups"][0]["params"] == [0, 1, 2, 3]
    assert sd["param_groups"][0]["rule"] == repr(opt.Adam(1e-3))
    assert sd["state"][0]["m"].shape == (12, 5) and sd["state"][0]["beta_t"].dtype == torch.float64
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    assert torch.load(buf, weights_only=True)["param_groups"][0]["lr"] == 1e-3


def _snapshot(net, optim):
    return weights(net), copy.deepcopy(optim.state_dict())


def _same(a, b):
    (wa, sa), (wb, sb) = a, b
    assert all(torch.equal(x, y) for x, y in zip(wa, wb))
    assert sa["param_groups"] == sb["param_groups"]
    for i in sa["state"]:
        for k, v in sa["state"][i].items():
            assert (
                torch.equal(v, sb["state"][i][k]) if torch.is_tensor(v) else v == sb["state"][i][k]
            )


@pytest.mark.parametrize(
    "other, match",
    [
        (lambda: Optimizer(make_net().parameters(), opt.AdamW(1e-2)), "rule"),
        (lambda: Optimizer(make_net().parameters(), opt.Adam(1e-2, (0.8, 0.9))), "rule"),
        (lambda: Optimizer(torch.nn.Linear(5, 13).parameters(), opt.Adam(1e-2)), "param group"),
        (
            lambda: Optimizer(
                [
                    {"params": list(make_net().parameters())[:2]},
                    {"params": list(make_net().parameters())[2:]},
                ],
                opt.Adam(1e-2),
            ),
            "2 param groups",
        ),
    ],
)
def test_a_state_dict_that_does_not_fit_is_refused_changing_nothing(other, match):
    target_net = make_net()
    target = Optimizer(target_net.parameters(), opt.Adam(1e-2))
    train(target_net, target, batches(3))
    src = other()
    before = _snapshot(target_net, target)
    with pytest.raises(ValueError, match=match):
        target.load_state_dict(src.state_dict())
    _same(before, _snapshot(target_net, target))


def test_a_state_tensor_of_the_wrong_shape_is_refused_changing_nothing():
    net = make_net()
    optim = Optimizer(net.parameters(), opt.Adam(1e-2))
    train(net, optim, batches(2))
    sd = copy.deepcopy(optim.state_dict())
    sd["state"][3]["v"] = torch.zeros(7)
    sd["param_groups"][0]["lr"] = 0.5
    before = _snapshot(net, optim)
    with pytest.raises(ValueError, match=r"parameter 3 does not fit its rule: 'v' is"):
        optim.load_state_dict(sd)
    _same(before, _snapshot(net, optim))


# ----------------------------------------------------------------------------------------
# 16-bit parameters (point 5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    "rule", [opt.Adam(1e-2), opt.Momentum(1e-2), opt.Lion(1e-3)], ids=lambda r: type(r).__name__
)
def test_16bit_parameters_as_the_kernels_compute_them(dtype, rule, n_threads):
    """Bit for bit what update_ gives on the same 16-bit numpy arrays (computed in float32,
    rounded once on store: test_low_precision checks that against the reference)."""
    ml = pytest.importorskip("ml_dtypes") if dtype == torch.bfloat16 else None
    npdtype = ml.bfloat16 if ml else np.float16
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(300, dtype=torch.float32).to(dtype))
    x = p.detach().float().numpy().astype(npdtype)
    optim = Optimizer([p], rule)
    state = opt.setup(rule, x)
    for k in range(5):
        g = torch.randn(300, generator=torch.Generator().manual_seed(k)).to(dtype)
        p.grad = g
        optim.step()
        state, x = opt.update_(state, x, g.float().numpy().astype(npdtype))
        assert np.array_equal(p.detach().float().numpy(), x.astype(np.float32))
    assert (
        optim.state_dict()["state"][0][next(iter(optim.state_dict()["state"][0]))].dtype
        == torch.float32
    )  # float32 state by default


def test_mixed_precision_keeps_a_float32_master():
    p = torch.nn.Parameter(torch.ones(4, dtype=torch.float16))
    optim = Optimizer([p], opt.MixedPrecision(opt.Descent(1e-4)))
    for _ in range(10):
        p.grad = torch.ones(4, dtype=torch.float16)
        optim.step()
    master = optim.state_dict()["state"][0]["xT"]
    assert master.dtype == torch.float32
    assert master.tolist() == pytest.approx([0.999] * 4, abs=1e-6)
    assert p.detach().tolist() == [0.9990234375] * 4  # float16 alone would stay at 1


def test_adadelta_in_mixed_precision_takes_lr():
    p = torch.nn.Parameter(torch.ones(3, dtype=torch.float16))
    optim = Optimizer([{"params": [p], "lr": 0.0}], opt.MixedPrecision(opt.AdaDelta()))
    p.grad = torch.ones(3, dtype=torch.float16)
    optim.step()
    assert p.detach().tolist() == [1.0] * 3  # lr = 0 multiplies the step


# ----------------------------------------------------------------------------------------
# Bad input: clear errors, raised before anything is written (point 5)


def test_a_sparse_gradient_is_refused_before_anything_is_written():
    emb = torch.nn.Embedding(10, 3, sparse=True)
    lin = torch.nn.Linear(3, 1)
    optim = Optimizer(
        [("lin." + n, p) for n, p in lin.named_parameters()]
        + [("emb." + n, p) for n, p in emb.named_parameters()],
        opt.Adam(1e-2),
    )
    F.mse_loss(lin(emb(torch.tensor([1, 2]))), torch.zeros(2, 1)).backward()
    before = [p.detach().clone() for p in (*lin.parameters(), emb.weight)]
    state = copy.deepcopy(optim.state_dict())
    with pytest.raises(ValueError, match=r"parameter 'emb.weight'.*sparse"):
        optim.step()
    assert all(torch.equal(a, b.detach()) for a, b in zip(before, (*lin.parameters(), emb.weight)))
    assert torch.equal(state["state"][0]["beta_t"], optim.state_dict()["state"][0]["beta_t"])


@pytest.mark.filterwarnings("ignore:Using backward")
def test_a_gradient_that_requires_grad_is_stepped():
    p = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    optim = Optimizer([p], opt.Descent(0.5))
    (p**3).sum().backward(create_graph=True)  # p.grad = 3 p^2, in the graph
    assert p.grad.requires_grad
    optim.step()
    assert p.detach().tolist() == [-0.5] * 3


def test_names_must_be_unique_in_a_group():
    a, b = torch.zeros(2), torch.zeros(2)
    with pytest.raises(ValueError, match="names repeat"):
        Optimizer([("w", a), ("w", b)], opt.Adam())


def test_non_cpu_and_unsupported_parameters_are_refused_at_construction():
    with pytest.raises(ValueError, match="CPU tensors only"):
        Optimizer([torch.empty(3, device="meta")], opt.Adam())
    with pytest.raises(TypeError, match="int64"):
        Optimizer([torch.zeros(3, dtype=torch.int64)], opt.Adam())
    with pytest.raises(ValueError, match="not contiguous"):
        Optimizer([torch.zeros(4, 4).t()], opt.Adam())
    with pytest.raises(TypeError, match="not defined for complex"):
        Optimizer([torch.zeros(3, dtype=torch.complex64)], opt.AdaMax())
    with pytest.raises(TypeError, match="optimisers rule"):
        Optimizer([torch.zeros(3)], torch.optim.Adam)


def test_complex_parameters_with_a_rule_defined_for_them():
    p = torch.nn.Parameter(torch.ones(3, dtype=torch.complex128))
    optim = Optimizer([p], opt.Descent(0.5))
    p.grad = torch.full((3,), 1 + 2j, dtype=torch.complex128)
    optim.step()
    assert p.detach().tolist() == [0.5 - 1j] * 3


def test_a_replaced_parameter_is_refused():
    net = make_net()
    optim = Optimizer(net.named_parameters(), opt.Adam())
    net[0].weight.data = torch.zeros(12, 5)
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    with pytest.raises(RuntimeError, match="replaced or moved"):
        optim.step()


# ----------------------------------------------------------------------------------------
# No copies per step (point 6); torch stays optional (point 7)


def test_the_step_writes_the_tensors_memory_and_allocates_no_copies():
    net = torch.nn.Linear(1000, 500)
    optim = Optimizer(net.named_parameters(), opt.Adam(1e-3))
    for p in net.parameters():
        p.grad = torch.randn_like(p)
    optim.step()
    model = optim._model[0]
    assert np.shares_memory(model["weight"], net.weight.detach().numpy())
    tracemalloc.start()
    optim.step()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 100_000, peak  # a copy of the weight or its gradient is 2 MB


def test_no_gradient_is_held_past_the_step():
    p = torch.nn.Parameter(torch.ones(1000))
    optim = Optimizer([p], opt.Adam())
    p.grad = torch.ones(1000)
    grad = weakref.ref(p.grad)
    optim.step()
    optim.zero_grad()  # set_to_none: the gradient's memory goes
    assert grad() is None


def test_import_optimisers_does_not_import_torch():
    code = "import sys, optimisers; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bfloat16_state_kept_low_resumes_bit_for_bit():
    pytest.importorskip("ml_dtypes")
    data = list(batches(8, torch.bfloat16))
    net = make_net(dtype=torch.bfloat16)
    optim = Optimizer(net.parameters(), opt.Adam(1e-2), low_precision_state=True)
    train(net, optim, data[:4])
    saved = copy.deepcopy((net.state_dict(), optim.state_dict()))
    assert saved[1]["state"][0]["m"].dtype == torch.bfloat16  # kept in 16 bits
    train(net, optim, data[4:])
    net2 = make_net(dtype=torch.bfloat16, seed=3)
    net2.load_state_dict(saved[0])
    optim2 = Optimizer(net2.parameters(), opt.Adam(1e-2), low_precision_state=True)
    optim2.load_state_dict(saved[1])
    train(net2, optim2, data[4:])
    assert all(torch.equal(a, b) for a, b in zip(weights(net), weights(net2)))


def _without_v(sd):
    del sd["state"][0]["v"]
    return sd


def _v_a_number(sd):
    sd["state"][0]["v"] = 0.5
    return sd


def _state_a_list(sd):
    sd["state"][0] = [1]
    return sd


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda sd: 42, "expected"),
        (_without_v, "it holds"),
        (_v_a_number, "not a tensor"),
        (_state_a_list, "not a dict"),
    ],
)
def test_a_tampered_state_dict_is_refused(change, match):
    net = make_net()
    optim = Optimizer(net.parameters(), opt.Adam(1e-2))
    train(net, optim, batches(2))
    before = _snapshot(net, optim)
    with pytest.raises(ValueError, match=match):
        optim.load_state_dict(change(copy.deepcopy(optim.state_dict())))
    _same(before, _snapshot(net, optim))


def test_mixed_precision_follows_the_scheduler():
    p = torch.nn.Parameter(torch.ones(4, dtype=torch.float16))
    optim = Optimizer([p], opt.MixedPrecision(opt.Descent(1e-2)))
    sched = torch.optim.lr_scheduler.StepLR(optim, step_size=1, gamma=0.5)
    for _ in range(3):
        p.grad = torch.ones(4, dtype=torch.float16)
        optim.step()
        sched.step()
    master = optim.state_dict()["state"][0]["xT"]
    assert master.tolist() == pytest.approx([1 - 0.01 - 0.005 - 0.0025] * 4, abs=1e-7)


def test_what_is_not_a_rule_or_the_same_parameters_is_refused():
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    optim = Optimizer([a], opt.Descent(0.1))
    with pytest.raises(TypeError, match="'rule' must be an optimisers rule"):
        optim.add_param_group({"params": [b], "rule": "adam"})
    assert len(optim.param_groups) == 1
    a.grad = torch.ones(2)
    optim.param_groups[0]["params"].append(b)
    with pytest.raises(RuntimeError, match="list of parameters changed"):
        optim.step()
    optim.param_groups[0]["params"].pop()
    optim.param_groups[0]["rule"] = "adam"
    with pytest.raises(TypeError, match="'rule' must be an optimisers rule"):
        optim.step()
    assert a.detach().tolist() == [1.0, 1.0]
