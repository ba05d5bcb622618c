"""The AVX2 build of the kernels gives the same bits as the baseline build."""

import numpy as np
import pytest

import optimisers as opt
from optimisers import _kernels as baseline
from optimisers import _program, _tree

try:
    from optimisers import _kernels_avx2 as avx2
except ImportError:             # not built on this platform
    avx2 = None

RULES = [opt.Adam(0.1), opt.RAdam(), opt.NAdam(), opt.AdamW(0.1, lambda_=0.1), opt.Lion(0.1),
         opt.Rprop(), opt.AdaMax(), opt.AMSGrad(), opt.RMSProp(centred=True), opt.AdaDelta(),
         opt.OptimiserChain(opt.ClipNorm(1.0), opt.SignDecay(0.1), opt.ClipGrad(0.5),
                            opt.Nesterov(0.1)),
         opt.OptimiserChain(opt.AccumGrad(2), opt.AdaBelief(0.1))]


def test_the_widest_available_build_is_in_use():
    expected = "avx2" if (avx2 is not None and baseline.cpu_has_avx2()) else "baseline"
    assert opt.kernel_isa() == expected
    assert baseline.isa() == "baseline"


@pytest.mark.skipif(avx2 is None or not baseline.cpu_has_avx2(),
                    reason="no AVX2 build or no AVX2 processor here")
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64])
@pytest.mark.parametrize("rule", RULES, ids=lambda r: type(r).__name__)
def test_avx2_and_baseline_agree_bit_for_bit(rule, dtype, monkeypatch):
    if dtype == np.complex64 and not all(c._complex for c in _classes(rule)):
        pytest.skip("rule not defined for complex parameters")
    results = []
    for module in (baseline, avx2):
        monkeypatch.setattr(_program, "_kernels", module)
        monkeypatch.setattr(_tree, "_kernels", module)
        rng = np.random.default_rng(7)
        model = {"a": rng.standard_normal(5003).astype(dtype), "b": np.ones(3, dtype)}
        state = opt.setup(rule, model)
        for _ in range(4):
            grad = {k: rng.standard_normal(v.shape).astype(dtype) for k, v in model.items()}
            state, model = opt.update_(state, model, grad)
        results.append((model, state))
    (m1, s1), (m2, s2) = results
    for k in m1:
        assert np.array_equal(m1[k], m2[k]) and m1[k].dtype == m2[k].dtype
        assert s1[k] == s2[k]


def _classes(rule):
    inner = getattr(rule, "opts", None)
    return [c for r in inner for c in _classes(r)] if inner is not None else [rule]
