"""examples/torch_digits.py (issue 18, point 7): a torch network on scikit-learn's bundled
digits trained by optimisers.torch.Optimizer with rules torch.optim lacks, held-out
accuracy checked; and the bench case of the torch optimiser.  Skipped with the reason
where torch or scikit-learn is absent; CI's second stage installs them."""

import contextlib
import importlib
import importlib.util
import io
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "torch_digits.py"


def load():
    spec = importlib.util.spec_from_file_location("example_torch_digits", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def digits():
    pytest.importorskip("torch", reason="PyTorch is not installed (optional): pip install torch")
    pytest.importorskip(
        "sklearn", reason="scikit-learn is not installed (optional): pip install scikit-learn"
    )
    return load()


def test_lion_reaches_95_percent_held_out(digits):
    out = io.StringIO()
    result = digits.main([], out=out)
    assert result["accuracy"] >= 0.95, out.getvalue()
    assert result["losses"][-1] < 0.2 * result["losses"][0]
    assert "held-out accuracy" in out.getvalue()


@pytest.mark.parametrize("rule", ["adabelief", "amsgrad"])
def test_other_rules_torch_lacks_learn_too(digits, rule):
    result = digits.main(["--rule", rule, "--epochs", "5"], out=io.StringIO())
    assert result["accuracy"] >= 0.9


def test_one_global_norm_over_both_groups(digits):
    """With Descent(1) and no decay the step is the clipped gradient: torch's
    gradient scaled by one norm over the whole network, not by a norm per group."""
    import torch

    import optimisers as opt

    net = digits.make_net()
    optim = digits.make_optimiser(net, opt.Descent(1.0), decay=0.0)
    assert len(optim.param_groups) == 2
    g = torch.Generator().manual_seed(0)
    grads = [torch.randn(p.shape, generator=g) for p in net.parameters()]
    for p, gr in zip(net.parameters(), grads):
        p.grad = gr.clone()
    before = [p.detach().clone() for p in net.parameters()]
    optim.step()
    norm = torch.sqrt(sum((gr.double() ** 2).sum() for gr in grads)).item()
    assert norm > 10  # so the clip matters
    for p, b, gr in zip(net.parameters(), before, grads):
        assert torch.allclose(b - p.detach(), gr / norm, rtol=1e-4, atol=1e-7)


def test_without_torch_it_says_what_to_install(monkeypatch):
    # scikit-learn first, if it is there: SciPy's array-API helpers it loads look into
    # sys.modules["torch"] and trip over the None that blocks torch here
    with contextlib.suppress(ImportError):
        importlib.import_module("sklearn.datasets")
    monkeypatch.setitem(sys.modules, "torch", None)
    module = load()
    with pytest.raises(SystemExit) as e:
        module.main([])
    assert "pip install torch" in str(e.value.code)


def test_the_torch_bench_case(digits):
    from optimisers.bench import torch_step
    from optimisers.bench.cases import Case
    from optimisers.bench.timing import Budget

    step = torch_step.optimiser_step(Case("adamw", "float32", 2000, 4, 1))
    before = [x.copy() for x in step.params]
    step()
    assert all((x != b).any() for x, b in zip(step.params, before))  # it steps the arrays
    rows = torch_step.torch_table(4000, 4, [1], Budget(warmup=1, min_steps=2, min_time=0, rounds=2))
    assert [r["torch"] for r in rows][:2] == ["AdamW(fused=True)", "RAdam(foreach=True)"]
    assert all(r["ratio"] > 0 for r in rows) and rows[-1]["case"].startswith("adam float32 1e6")
    assert [r["case"].endswith(" fresh") for r in rows[-2:]] == [False, True]


def test_the_bench_command_runs_the_torch_table(digits, capsys):
    from optimisers.bench import main
    from optimisers.bench.cases import Case
    from optimisers.bench.speed import implementations

    assert (
        main(
            [
                "torch-step",
                "--size",
                "4000",
                "--tensors",
                "4",
                "--threads",
                "1",
                "--rounds",
                "2",
                "--min-time",
                "0",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "AdamW(fused=True)" in out and "Adadelta(foreach=True)" in out
    names = [n for n, _ in implementations(Case("adamw", "float32", 1000, 2, 1), True)]
    assert "optimisers.torch" in names and "torch-fused" in names  # --compare's rows
