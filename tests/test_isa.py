"""Every build of the kernels (baseline, AVX2, AVX-512) gives the same bits, and the widest
one this processor runs is the one in use."""

import os
import subprocess
import sys

import numpy as np
import pytest

import optimisers as opt
from builds import BUILDS, WIDER_ISAS, build_or_skip
from optimisers import _engine, _native, _program
from optimisers import _kernels as baseline
from registry import COMPLEX_OK, rule_classes_in

WIDER = list(BUILDS)[1:]

RULES = [
    opt.Adam(0.1),
    opt.RAdam(),
    opt.NAdam(),
    opt.AdamW(0.1, lambda_=0.1),
    opt.AdamW(0.1, lambda_=0.1, couple=False),
    opt.Lion(0.1),
    opt.Rprop(),
    opt.AdaMax(),
    opt.AMSGrad(),
    opt.OAdam(),
    opt.AdaBelief(),
    opt.RMSProp(centred=True),
    opt.AdaDelta(),
    opt.OptimiserChain(opt.ClipNorm(1.0), opt.SignDecay(0.1), opt.ClipGrad(0.5), opt.Nesterov(0.1)),
    opt.OptimiserChain(opt.AccumGrad(2), opt.AdaBelief(0.1)),
    opt.OptimiserChain(opt.WeightDecay(0.1), opt.Adam(0.1)),
]


def test_the_widest_build_this_processor_runs_is_in_use():
    expected = WIDER[-1] if WIDER else "baseline"
    assert opt.kernel_isa() == expected
    assert baseline.isa() == "baseline"
    for isa, module in BUILDS.items():
        assert module.isa() == isa


@pytest.mark.parametrize("cap", ["baseline", "avx2"])
def test_the_environment_caps_the_build(cap):
    code = "import optimisers as opt; print(opt.kernel_isa())"
    env = dict(os.environ, OPTIMISERS_ISA=cap)
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    allowed = _native.ISAS[: _native.ISAS.index(cap) + 1]
    assert out == ([isa for isa in WIDER if isa in allowed] or ["baseline"])[-1]


def test_a_processor_runs_the_baseline_and_not_an_unknown_build():
    assert baseline.cpu_runs("baseline")
    assert not baseline.cpu_runs("avx1024")


def _run(module, rule, dtype, rng, scale):
    """Four steps of `rule` on a parameter of 5003 elements (tiles and a tail) and one of 3,
    with the kernels of `module`."""
    model = {"a": rng.standard_normal(5003).astype(dtype), "b": np.ones(3, dtype)}
    state = opt.setup(rule, model)
    for _ in range(4):
        grad = {k: (rng.standard_normal(v.shape) * scale).astype(dtype) for k, v in model.items()}
        state, model = opt.update_(state, model, grad)
    return model, state


# complex64 only with the rules defined for complex parameters
CASES = [
    (rule, dtype)
    for rule in RULES
    for dtype in (np.float32, np.float64, np.complex64)
    if dtype != np.complex64 or rule_classes_in(rule) <= set(COMPLEX_OK)
]


@pytest.mark.parametrize("isa", WIDER_ISAS)
@pytest.mark.parametrize(
    "rule, dtype", CASES, ids=[f"{r!r:.40}-{np.dtype(d).name}" for r, d in CASES]
)
def test_every_build_agrees_with_the_baseline_bit_for_bit(rule, dtype, isa, monkeypatch):
    results = []
    for module in (baseline, build_or_skip(isa)):
        monkeypatch.setattr(_program, "_kernels", module)
        monkeypatch.setattr(_engine, "_kernels", module)
        results.append(_run(module, rule, dtype, np.random.default_rng(7), 1.0))
    (m1, s1), (m2, s2) = results
    for k in m1:
        assert np.array_equal(m1[k], m2[k]) and m1[k].dtype == m2[k].dtype
        assert s1[k] == s2[k]
