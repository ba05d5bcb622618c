"""The examples in examples/, run at small sizes, with their outcomes checked.

The PyTorch and SciPy parts are skipped, with a reason, where those optional packages are
absent (they are not dependencies of optimisers); CI installs them and runs them.
"""

import importlib.util
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import optimisers as opt

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TORCH_REASON = (
    "PyTorch is not installed (optional): pip install torch==2.13.0 "
    "to test examples/torch_interop.py"
)
SCIPY_REASON = "SciPy is not installed (optional): pip install scipy"


def load(name):
    """Import examples/<name>.py as a fresh module (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------------------
# spirals_mlp.py


@pytest.fixture(scope="module")
def spirals():
    return load("spirals_mlp")


def test_spirals_backprop_matches_finite_differences(spirals):
    X, y = spirals.make_spirals(20, dtype=np.float64)
    model = spirals.init_mlp([2, 5, 4, 1], dtype=np.float64, seed=3)
    for layer in model["layers"]:
        layer["b"][...] = np.random.default_rng(1).standard_normal(layer["b"].shape)
    _, grads = spirals.loss_and_grad(model, X, y)
    h = 1e-6
    for layer, glayer in zip(model["layers"], grads["layers"]):
        for key in ("W", "b"):
            x, g = layer[key], glayer[key]
            assert g.shape == x.shape and g.dtype == x.dtype
            for i in np.ndindex(x.shape):
                old = x[i]
                x[i] = old + h
                up = spirals.loss_and_grad(model, X, y)[0]
                x[i] = old - h
                down = spirals.loss_and_grad(model, X, y)[0]
                x[i] = old
                assert abs((up - down) / (2 * h) - g[i]) < 1e-7, (key, i)


def _eta(rule):
    return rule.opts[-1].eta if isinstance(rule, opt.OptimiserChain) else rule.eta


def test_spirals_trains_and_compares_three_rules(spirals):
    out = io.StringIO()
    epochs = 30
    results = spirals.main(["--epochs", str(epochs), "--points", "1000", "--hidden", "32"], out=out)
    text = out.getvalue()
    assert len(results) == 3
    assert len({repr(r["rule"]) for r in results}) == 3
    for r in results:
        assert len(r["losses"]) == epochs and np.all(np.isfinite(r["losses"]))
        assert r["losses"][-1] < r["losses"][0], r["label"]
        assert r["frozen_moved"] == 0.0, "freeze_ left the first layer to move"
        assert r["state"]["layers"][0]["W"].frozen
        # the decayed learning rate was set with adjust_
        assert _eta(r["state"]["layers"][1]["W"].rule) < _eta(r["rule"])
    best = max(results, key=lambda r: r["test_acc"])
    assert best["test_acc"] >= 0.85, [(r["label"], r["test_acc"]) for r in results]
    assert best["losses"][-1] < 0.5 * best["losses"][0]
    # one progress line per epoch and rule, then the summary
    assert text.count("  loss ") == 3 * epochs
    assert f"{epochs:>3}/{epochs}" in text and "[####################]" in text
    assert "best:" in text and "test acc" in text


def test_spirals_command_line(spirals):
    proc = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "spirals_mlp.py"),
            "--epochs",
            "2",
            "--points",
            "64",
            "--hidden",
            "4",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "best:" in proc.stdout and "Momentum(eta=0.1, rho=0.9)" in proc.stdout


def test_spirals_plot(spirals, tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed (optional)")
    png = tmp_path / "curves.png"
    spirals.main(
        ["--epochs", "2", "--points", "64", "--hidden", "4", "--plot", str(png)], out=io.StringIO()
    )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_spirals_plot_without_matplotlib(spirals, monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib fails
    with pytest.raises(SystemExit) as e:
        spirals.main(["--epochs", "1", "--plot", str(tmp_path / "c.png")], out=io.StringIO())
    assert e.value.code == 2
    assert "pip install matplotlib" in capsys.readouterr().err
    assert not (tmp_path / "c.png").exists()


# ----------------------------------------------------------------------------------------
# torch_interop.py


@pytest.fixture(scope="module")
def interop():
    pytest.importorskip("torch", reason=TORCH_REASON)
    return load("torch_interop")


def test_torch_optimizer_updates_the_tensors_in_place(interop):
    import torch

    net = interop.make_net(0)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    ptrs = {n: p.data_ptr() for n, p in net.named_parameters()}
    o = interop.Optimizer(net.named_parameters(), opt.Adam(0.01))
    X, y = interop.make_data(64)
    losses = []
    for _ in range(20):
        o.zero_grad()
        loss = torch.nn.functional.mse_loss(net(X), y)
        loss.backward()
        o.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    for n, p in net.named_parameters():
        assert p.data_ptr() == ptrs[n]  # the same tensors...
        assert not torch.equal(p.detach(), before[n])  # ...trained
    opt.freeze_(o.state_tree[0]["0.weight"])  # the tree functions apply
    w = net[0].weight.detach().clone()
    o.zero_grad()
    torch.nn.functional.mse_loss(net(X), y).backward()
    o.step()
    assert torch.equal(net[0].weight.detach(), w)


def test_torch_checkpoint_demo_resumes_bit_for_bit(interop):
    same, losses = interop.checkpoint_demo(steps=20, save_at=9)
    assert same and losses[-1] > 0
    same, _ = interop.checkpoint_demo(steps=20, save_at=9, rule=opt.Lion(1e-3))
    assert same


def _pairs():
    # labels only, so that collection needs no torch; the pairs are built in the tests
    return [
        "SGD(lr=0.05)",
        "SGD(lr=0.05, momentum=0.9)",
        "SGD(lr=0.05, momentum=0.9, nesterov=True)",
        "SGD(lr=0.05, momentum=0.9, weight_decay=0.01)",
        "Adam(lr=0.01)",
        "Adam(lr=0.01, betas=(0.8, 0.99), eps=1e-6)",
        "Adam(lr=0.01, weight_decay=0.01)",
        "AdamW(lr=0.01, weight_decay=0.1)",
        "RMSprop(lr=0.001, alpha=0.9)",
        "RMSprop(lr=0.001, alpha=0.9, centered=True)",
        "RMSprop(lr=0.001, alpha=0.9, momentum=0.5)",
        "Adagrad(lr=0.05, eps=1e-8, initial_accumulator_value=1e-8)",
        "Adadelta(lr=1.0, rho=0.9, eps=1e-6)",
        "Rprop(lr=0.01)",
    ]


def _pair(interop, label):
    pairs = {lbl: (make, rule) for lbl, make, rule in interop.torch_equivalents()}
    assert set(pairs) == set(_pairs())
    return pairs[label]


@pytest.mark.parametrize("label", _pairs())
def test_torch_optim_tracked_step_by_step_float32(interop, label):
    make, rule = _pair(interop, label)
    for same_grads in (True, False):
        rel, losses = interop.compare(make, rule, steps=20, same_grads=same_grads)
        assert len(rel) == 20 and all(np.isfinite(losses))
        assert max(rel) <= 1e-6, (label, same_grads, max(rel))


@pytest.mark.parametrize("label", _pairs())
def test_torch_optim_tracked_step_by_step_float64(interop, label):
    import torch

    make, rule = _pair(interop, label)
    for same_grads in (True, False):
        rel, _ = interop.compare(make, rule, steps=50, same_grads=same_grads, dtype=torch.float64)
        assert max(rel) <= 1e-12, (label, same_grads, max(rel))


def test_torch_lookalikes_really_differ(interop):
    import torch

    lookalikes = interop.torch_lookalikes()
    assert [label for label, _, _ in lookalikes] == [
        "Adamax(lr=0.01, eps=0.01)",
        "Adam(lr=0.01, amsgrad=True)",
        "NAdam(lr=0.01)",
        "RAdam(lr=0.01)",
    ]  # not a loop over nothing
    for label, make, rule in lookalikes:
        rel, _ = interop.compare(make, rule, steps=50, same_grads=True, dtype=torch.float64)
        assert len(rel) == 50 and max(rel) > 1e-5, label


def test_torch_example_main(interop):
    out = io.StringIO()
    results = interop.main(["--steps", "3"], out=out)
    assert set(_pairs()) <= set(results)
    assert "same update" in out.getvalue() and "same name, different update" in out.getvalue()
    assert results["checkpoint"] is True and "bit for bit" in out.getvalue()


def test_torch_example_without_torch(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch fails
    module = load("torch_interop")
    assert module.torch is None
    with pytest.raises(SystemExit) as e:
        module.main([])
    assert "pip install torch" in str(e.value.code)


# ----------------------------------------------------------------------------------------
# scipy_destructure.py


@pytest.fixture(scope="module")
def scipy_example():
    pytest.importorskip("scipy", reason=SCIPY_REASON)
    return load("scipy_destructure")


def test_scipy_gradient_is_right(scipy_example):
    from scipy.optimize import check_grad

    X, y = scipy_example.make_moons(50)
    flat, re = opt.destructure(scipy_example.init_model(3))

    def f(v):
        return scipy_example.loss_and_grad(re(v), X, y, 1e-3)[0]

    def g(v):
        return opt.destructure(scipy_example.loss_and_grad(re(v), X, y, 1e-3)[1])[0]

    assert check_grad(f, g, flat) < 1e-6 * max(1.0, np.linalg.norm(g(flat)))


def test_scipy_minimize_through_destructure(scipy_example):
    out = io.StringIO()
    r = scipy_example.main(["--points", "100", "--hidden", "3"], out=out)
    res, model, model0 = r["result"], r["model"], r["initial_model"]
    assert res.success, res.message
    assert res.fun < 0.5 * r["first_loss"]
    assert r["accuracy"] >= 0.95
    # re(v) gives back the model's structure, shapes and dtypes; non-trainables carried
    assert set(model) == set(model0)
    for (kp, a), (kp0, a0) in zip(
        opt.trainables(model, path=True), opt.trainables(model0, path=True)
    ):
        assert kp == kp0 and a.shape == a0.shape and a.dtype == a0.dtype
    assert model["out"]["b"].shape == ()
    assert model["activation"] == "tanh" and model["classes"] is model0["classes"]
    np.testing.assert_array_equal(opt.destructure(model)[0], res.x)
    # the float32 template rebuilds float32 arrays with the same values, rounded
    for a32, a in zip(opt.trainables(r["model32"]), opt.trainables(model)):
        assert a32.dtype == np.float32 and a32.shape == a.shape
        np.testing.assert_allclose(a32, a, rtol=1e-6, atol=1e-6)
    assert "L-BFGS-B: loss" in out.getvalue() and "re(result.x)" in out.getvalue()


def test_scipy_example_without_scipy(monkeypatch):
    module = load("scipy_destructure")
    monkeypatch.setitem(sys.modules, "scipy", None)  # import scipy fails
    with pytest.raises(SystemExit) as e:
        module.main([])
    assert "pip install scipy" in str(e.value.code)
