"""TorchAdamax, TorchRAdam and TorchNAdam against torch.optim's Adamax, RAdam and NAdam
(issue 18, point 3).

Each rule, stepped by ``opt.update_`` on numpy arrays, follows its torch optimiser stepped
on a tensor with the same gradients: 30 steps, float64, 1e-9 relative, at torch's defaults
and at other hyper-parameters, real and complex (torch steps a complex parameter's real
view, as these rules do).  The trajectory of ``optimisers.torch.Optimizer`` with these
rules on an autograd MLP (40 steps, float64) is in test_torch_optimizer.py's table of torch
counterparts (``PAIRS``), which this module checks holds them.  The seed's forms are
checked to differ, so that a rule that silently fell back to them would fail here.

torch is optional: the module skips (saying so) where it is not installed; CI's second
stage installs it.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the peer checks need PyTorch (CI stage 2)")

import optimisers as opt  # noqa: E402
from test_torch_optimizer import PAIRS, torch_float64  # noqa: E402, F401 (a fixture)
from test_torch_optimizer_state import test_checkpoint_resumes_bit_for_bit as resumes  # noqa: E402

STEPS = 30

# id -> (torch optimiser on a parameter list, the rule of the same algorithm)
CASES = {
    "Adamax-defaults": (lambda p: torch.optim.Adamax(p), opt.TorchAdamax()),
    "Adamax": (
        lambda p: torch.optim.Adamax(p, lr=0.05, betas=(0.8, 0.99), eps=1e-3),
        opt.TorchAdamax(0.05, (0.8, 0.99), 1e-3),
    ),
    "Adamax-far-lerp": (
        lambda p: torch.optim.Adamax(p, lr=0.05, betas=(0.3, 0.9)),
        opt.TorchAdamax(0.05, (0.3, 0.9)),
    ),
    "RAdam-defaults": (lambda p: torch.optim.RAdam(p), opt.TorchRAdam()),
    "RAdam": (
        lambda p: torch.optim.RAdam(p, lr=0.05, betas=(0.8, 0.95), eps=1e-6),
        opt.TorchRAdam(0.05, (0.8, 0.95), 1e-6),
    ),
    # rho_inf = 5.67: rho_t never passes 5, warm-up for ever (the seed's would rectify)
    "RAdam-warmup": (
        lambda p: torch.optim.RAdam(p, lr=0.05, betas=(0.9, 0.7)),
        opt.TorchRAdam(0.05, (0.9, 0.7)),
    ),
    "NAdam-defaults": (lambda p: torch.optim.NAdam(p), opt.TorchNAdam()),
    "NAdam": (
        lambda p: torch.optim.NAdam(p, lr=0.05, betas=(0.8, 0.99), eps=1e-6, momentum_decay=0.05),
        opt.TorchNAdam(0.05, (0.8, 0.99), 1e-6, 0.05),
    ),
}

# the seed's rule of each family, at the same hyper-parameters
SEED = {opt.TorchAdamax: opt.AdaMax, opt.TorchRAdam: opt.RAdam, opt.TorchNAdam: opt.NAdam}


def _gradients(complex_, shape=(7, 5), seed=0):
    rng = np.random.default_rng(seed)
    draw = (
        (lambda: rng.standard_normal(shape) + 1j * rng.standard_normal(shape))
        if complex_
        else (lambda: rng.standard_normal(shape))
    )
    return draw(), [draw() for _ in range(STEPS)]


def _worst_difference(make_torch, rule, x0, grads):
    """The largest relative difference between the two trajectories over the steps."""
    p = torch.tensor(x0.copy(), requires_grad=True)
    optim = make_torch([p])
    x = x0.copy()
    state = opt.setup(rule, x)
    worst = 0.0
    for g in grads:
        p.grad = torch.tensor(g)
        optim.step()
        state, x = opt.update_(state, x, g)
        ours, theirs = x, p.detach().numpy()
        worst = max(worst, float(np.abs(ours - theirs).max() / np.abs(theirs).max()))
    return worst


@pytest.mark.usefixtures("torch_float64")
@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
@pytest.mark.parametrize("name", list(CASES))
def test_rule_tracks_torch(name, complex_, n_threads):
    make, rule = CASES[name]
    x0, grads = _gradients(complex_)
    worst = _worst_difference(make, rule, x0, grads)
    assert worst < 1e-9, f"{name}: relative difference {worst:.2e} over {STEPS} steps"


@pytest.mark.usefixtures("torch_float64")
@pytest.mark.parametrize("name", ["Adamax", "RAdam", "NAdam"])
def test_seed_rule_does_not(name):
    """The seed's rule of the family departs from torch at once (here: by far more than the
    tolerance), so the check above tells the two apart."""
    make, rule = CASES[name]
    seed = SEED[type(rule)](rule.eta, rule.beta, rule.epsilon)
    x0, grads = _gradients(False)
    assert _worst_difference(make, seed, x0, grads) > 1e-6


def test_nadam_float32_default_dtype_is_rounding_only():
    """Under torch's float32 default dtype, torch's mu_product is a float32 scalar; ours
    stays float64, and the two trajectories differ by that rounding only."""
    make, rule = CASES["NAdam"]
    x0, grads = _gradients(False)
    worst = _worst_difference(make, rule, x0, grads)
    assert worst < 1e-7, worst


def test_optimizer_trajectory_table_holds_them():
    """The MLP trajectory test of optimisers.torch.Optimizer (test_torch_optimizer.py,
    40 steps float64, 1e-9) runs each of the three against its torch class."""
    rules = {type(rule) for _, rule in PAIRS.values()}
    assert {opt.TorchAdamax, opt.TorchRAdam, opt.TorchNAdam} <= rules


@pytest.mark.parametrize(
    "rule",
    [opt.TorchAdamax(1e-2), opt.TorchRAdam(1e-2), opt.TorchNAdam(1e-2)],
    ids=lambda r: type(r).__name__,
)
def test_optimizer_state_dict_resumes_bit_for_bit(rule, tmp_path):
    """Their step counter and NAdam's mu_product go through the Optimizer's state_dict
    (torch.save, weights_only load) and a resumed run ends where the straight one does."""
    resumes(rule, tmp_path)
