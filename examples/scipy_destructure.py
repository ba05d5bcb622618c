"""``destructure``: hand a nested model to ``scipy.optimize.minimize`` as one flat vector.

SciPy's optimisers work on a 1-D vector; models are nested structures.  ``destructure``
joins the two worlds::

    flat, re = opt.destructure(model)     # every trainable array, copied into one vector
    model2 = re(v)                        # the model again, parameters taken from v

``re`` keeps everything that is not a parameter (strings, functions, integer arrays) and
gives each array its shape and dtype back.  Here a small MLP classifier for two
interleaved half-moons, held as a nested dict, is fitted by L-BFGS-B: ``fun(v)`` rebuilds
the model with ``re(v)``, computes the loss and its gradient tree by hand, and flattens the
gradient in the same order with ``destructure`` (a tree with the same keys in the same
order flattens in the same order).  After the fit, ``re(result.x)`` is the trained model,
and a float32 template's ``re`` turns the same vector into a float32 model for deployment.

Run it::

    python examples/scipy_destructure.py [--hidden 4] [--points 200] [--l2 1e-3]

It needs SciPy (``pip install scipy``; not a dependency of optimisers).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

import optimisers as opt


def make_moons(n, *, noise=0.1, seed=0):
    """``n`` points on two interleaved half circles (labels 0 and 1), a fixed seed."""
    rng = np.random.default_rng(seed)
    half = n // 2
    t0, t1 = rng.uniform(0, np.pi, half), rng.uniform(0, np.pi, n - half)
    X = np.concatenate(
        [
            np.column_stack([np.cos(t0), np.sin(t0)]),
            np.column_stack([1 - np.cos(t1), 0.5 - np.sin(t1)]),
        ]
    )
    X = X + noise * rng.standard_normal(X.shape)
    y = np.concatenate([np.zeros(half), np.ones(n - half)])
    return X - X.mean(axis=0), y


def init_model(hidden, *, seed=0, dtype=np.float64):
    """A 2-``hidden``-1 tanh classifier as a nested dict; the output bias is 0-d."""
    rng = np.random.default_rng(seed)
    return {
        "hidden": {
            "W": rng.standard_normal((2, hidden)).astype(dtype),
            "b": np.zeros(hidden, dtype),
        },
        "out": {
            "w": (rng.standard_normal(hidden) / np.sqrt(hidden)).astype(dtype),
            "b": np.zeros((), dtype),
        },
        "activation": "tanh",  # not trainable: carried along by re
        "classes": np.array([0, 1]),  # an integer array: not trainable either
    }


def predict_logits(model, X):
    h = np.tanh(X @ model["hidden"]["W"] + model["hidden"]["b"])
    return h @ model["out"]["w"] + model["out"]["b"], h


def loss_and_grad(model, X, y, l2):
    """Mean binary cross-entropy plus ``l2/2 * (|W|^2 + |w|^2)``, and its gradient tree.

    The gradient has the model's trainable keys in the model's order, so that
    ``destructure`` flattens it like the model.
    """
    z, h = predict_logits(model, X)
    W, w = model["hidden"]["W"], model["out"]["w"]
    loss = np.mean(np.logaddexp(0.0, z) - y * z) + 0.5 * l2 * (np.sum(W * W) + np.sum(w * w))
    dz = (0.5 * (1.0 + np.tanh(0.5 * z)) - y) / len(y)  # sigmoid(z) - y, over n
    dh = np.outer(dz, w) * (1.0 - h * h)
    grad = {
        "hidden": {"W": X.T @ dh + l2 * W, "b": dh.sum(axis=0)},
        "out": {"w": h.T @ dz + l2 * w, "b": np.array(dz.sum())},
    }
    return float(loss), grad


def fit(model, X, y, *, l2=1e-3, maxiter=1000):
    """Fit ``model`` with L-BFGS-B; returns ``(trained model, scipy result, first loss)``."""
    from scipy.optimize import minimize

    flat, re = opt.destructure(model)

    def fun(v):
        loss, grad = loss_and_grad(re(v), X, y, l2)
        g, _ = opt.destructure(grad)
        assert len(g) == len(re), "the gradient tree must have the model's trainable arrays"
        return loss, g

    f0 = fun(flat)[0]
    result = minimize(
        fun, flat, jac=True, method="L-BFGS-B", options={"maxiter": maxiter, "gtol": 1e-9}
    )
    return re(result.x), result, f0


def main(argv=None, out=sys.stdout):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hidden", type=int, default=4, help="hidden units (default 4)")
    p.add_argument("--points", type=int, default=200, help="training points (default 200)")
    p.add_argument("--l2", type=float, default=1e-3, help="weight penalty (default 1e-3)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        import scipy
    except ImportError:
        sys.exit(
            "this example needs SciPy: pip install scipy (it is not a dependency of optimisers)"
        )

    X, y = make_moons(args.points, seed=args.seed)
    model = init_model(args.hidden, seed=args.seed)
    flat, re = opt.destructure(model)
    out.write(
        f"two moons, {args.points} points; MLP 2-{args.hidden}-1 as a nested dict; "
        f"destructure: {len(re)} parameters in one {flat.dtype} vector "
        f"(scipy {scipy.__version__})\n"
    )

    trained, result, f0 = fit(model, X, y, l2=args.l2)
    acc = float(np.mean((predict_logits(trained, X)[0] > 0) == (y > 0.5)))
    out.write(
        f"L-BFGS-B: loss {f0:.4f} -> {result.fun:.4f} in {result.nit} iterations "
        f"({result.nfev} evaluations): {result.message}\n"
    )
    out.write(f"training accuracy {100 * acc:.1f}%\n\nthe trained model, re(result.x):\n")
    with np.printoptions(precision=3, suppress=True):
        for part in ("hidden", "out"):
            for k, v in trained[part].items():
                out.write(
                    f"  [{part!r}][{k!r}]  {v.dtype} {v.shape}\n    "
                    + repr(v).replace("\n", "\n    ")
                    + "\n"
                )
    out.write(
        f"  ['activation'] {trained['activation']!r}, ['classes'] "
        f"{trained['classes']!r} (carried along)\n"
    )

    # the same vector, rebuilt on a float32 template: each slot gets its dtype back
    _, re32 = opt.destructure(init_model(args.hidden, dtype=np.float32))
    model32 = re32(result.x)
    err = max(
        float(np.max(np.abs(a - b)))
        for a, b in zip(opt.trainables(model32), opt.trainables(trained))
    )
    out.write(
        f"\nfloat32 copy for deployment, re32(result.x): dtypes "
        f"{sorted({str(a.dtype) for a in opt.trainables(model32)})}, "
        f"max |float32 - float64| {err:.1e}\n"
    )
    return {
        "first_loss": f0,
        "result": result,
        "model": trained,
        "model32": model32,
        "initial_model": model,
        "re": re,
        "accuracy": acc,
        "X": X,
        "y": y,
        "l2": args.l2,
    }


if __name__ == "__main__":
    main()
