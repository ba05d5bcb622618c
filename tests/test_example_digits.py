"""examples/digits_recipe.py: the whole training recipe on scikit-learn's digits (issue 16,
point 7), run at its defaults (a few seconds), with its outcome checked.  Skipped with the
reason where scikit-learn is absent; CI installs it."""

import importlib.util
import io
from pathlib import Path

import numpy as np
import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "digits_recipe.py"


@pytest.fixture(scope="module")
def digits():
    pytest.importorskip(
        "sklearn", reason="scikit-learn is not installed (optional): pip install scikit-learn"
    )
    spec = importlib.util.spec_from_file_location("example_digits_recipe", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_backprop_matches_finite_differences(digits):
    X, y, _, _ = digits.load_digits()
    X, y = X[:20], y[:20]
    model = digits.init_mlp(X.shape[1], 5, 10, seed=2)
    _, grads = digits.loss_and_grad(model, X, y)
    for layer in ("hidden", "out"):
        for name in ("W", "b"):
            a = model[layer][name]
            for i in [0, a.size // 2, a.size - 1]:
                old = a.flat[i]
                a.flat[i] = old + 1e-6
                up = digits.loss_and_grad(model, X, y)[0]
                a.flat[i] = old - 1e-6
                down = digits.loss_and_grad(model, X, y)[0]
                a.flat[i] = old
                assert np.isclose(
                    grads[layer][name].flat[i], (up - down) / 2e-6, rtol=1e-5, atol=1e-8
                ), (layer, name, i)


def test_the_recipe_reaches_95_percent_and_skips_the_bad_batches(digits, tmp_path):
    out = io.StringIO()
    result = digits.main([], out=out)
    assert result["accuracy"] >= 0.95, out.getvalue()[-300:]
    assert result["skipped"] == 3  # the three NaN mini-batches
    etas = result["history"]["eta"]
    assert etas[0] == 0.0 and max(etas) == pytest.approx(1e-2) and etas[-1] < 2e-4
    assert "held-out accuracy" in out.getvalue()


def test_the_plot(digits, tmp_path):
    pytest.importorskip("matplotlib", reason="the plot needs matplotlib")
    png = tmp_path / "digits.png"
    digits.main(["--epochs", "2", "--plot", str(png)], out=io.StringIO())
    assert png.stat().st_size > 1000
