"""Built-in training problems of the quality mode, in plain numpy, made with fixed seeds.

Each :class:`Problem` makes a fresh model (a dict of arrays) and gives the loss and the
gradient of a model (full batch, so every run is deterministic).  Its ``target`` is the
loss the quality table counts steps to.

* ``rosenbrock``: the banana function of two variables (float64) from (-1.2, 1),
  minimum 0 at (1, 1); target 0.01.
* ``logistic``: logistic regression (float32), 1000 samples of 20 features with noisy
  labels; the target is the optimum's loss (found by Newton's method) plus 0.001.
* ``spirals``: an MLP 2-32-32-1 with tanh (float32) on two interleaved spirals of 1.25
  turns, 200 points; target 0.05.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["Problem", "PROBLEMS", "get"]


@dataclass(frozen=True)
class Problem:
    """``init()`` -> a fresh model; ``loss_grad(model)`` -> ``(loss, gradient)``."""

    name: str
    description: str
    steps: int
    target: float
    init: Callable
    loss_grad: Callable


def _sigmoid(z):
    """The logistic function, without overflow warnings for large ``|z|``."""
    return 0.5 * (1 + np.tanh(0.5 * z))


# ----------------------------------------------------------------------------------------
# Rosenbrock


def _rosen_init():
    return {"xy": np.array([-1.2, 1.0])}


def _rosen_loss_grad(model):
    x, y = model["xy"]
    loss = (1 - x) ** 2 + 100 * (y - x * x) ** 2
    gx = -2 * (1 - x) - 400 * x * (y - x * x)
    gy = 200 * (y - x * x)
    return float(loss), {"xy": np.array([gx, gy])}


# ----------------------------------------------------------------------------------------
# logistic regression


def _logistic_data(n=1000, d=20, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    w = rng.standard_normal(d) * 0.5
    logits = X @ w + 0.3
    y = (rng.random(n) < 1 / (1 + np.exp(-logits))).astype(np.float64)
    return X, y


def _logistic_optimum(X, y, iters=25):
    """The minimum of the mean log-loss (Newton's method in float64)."""
    A = np.hstack([X, np.ones((len(X), 1))])
    w = np.zeros(A.shape[1])
    for _ in range(iters):
        p = 1 / (1 + np.exp(-(A @ w)))
        H = (A * (p * (1 - p))[:, None]).T @ A / len(y)
        w -= np.linalg.solve(H + 1e-12 * np.eye(len(w)), A.T @ (p - y) / len(y))
    z = A @ w
    return float(np.mean(np.logaddexp(0, z) - y * z))


_LX, _LY = _logistic_data()
_LX32, _LY32 = _LX.astype(np.float32), _LY.astype(np.float32)
_LOGISTIC_BEST = _logistic_optimum(_LX, _LY)


def _logistic_init():
    return {"w": np.zeros(_LX.shape[1], np.float32), "b": np.zeros(1, np.float32)}


def _logistic_loss_grad(model):
    z = _LX32 @ model["w"] + model["b"][0]
    loss = float(np.mean(np.logaddexp(0, z) - _LY32 * z))
    r = (_sigmoid(z) - _LY32) / len(_LY32)
    return loss, {"w": _LX32.T @ r, "b": np.array([r.sum()], np.float32)}


# ----------------------------------------------------------------------------------------
# two spirals, MLP


def _spirals(n=100, seed=1, turns=1.25):
    rng = np.random.default_rng(seed)
    t = np.sqrt(rng.random(n)) * turns * 2 * np.pi
    pts = np.stack([t * np.cos(t), t * np.sin(t)], 1) / (turns * 2 * np.pi)
    X = np.concatenate([pts, -pts]) + rng.normal(0, 0.02, (2 * n, 2))
    y = np.concatenate([np.zeros(n), np.ones(n)])
    return X.astype(np.float32), y.astype(np.float32)


_SX, _SY = _spirals()


def _spirals_init(seed=2, hidden=32):
    rng = np.random.default_rng(seed)

    def glorot(i, o):
        a = np.sqrt(6 / (i + o))
        return rng.uniform(-a, a, (i, o)).astype(np.float32)

    return {
        "W1": glorot(2, hidden),
        "b1": np.zeros(hidden, np.float32),
        "W2": glorot(hidden, hidden),
        "b2": np.zeros(hidden, np.float32),
        "W3": glorot(hidden, 1),
        "b3": np.zeros(1, np.float32),
    }


def _spirals_loss_grad(m):
    X, y = _SX, _SY
    h1 = np.tanh(X @ m["W1"] + m["b1"])
    h2 = np.tanh(h1 @ m["W2"] + m["b2"])
    z = (h2 @ m["W3"] + m["b3"])[:, 0]
    loss = float(np.mean(np.logaddexp(0, z) - y * z))
    dz = ((_sigmoid(z) - y) / len(y))[:, None]
    dh2 = (dz @ m["W3"].T) * (1 - h2 * h2)
    dh1 = (dh2 @ m["W2"].T) * (1 - h1 * h1)
    return loss, {
        "W3": h2.T @ dz,
        "b3": dz.sum(0),
        "W2": h1.T @ dh2,
        "b2": dh2.sum(0),
        "W1": X.T @ dh1,
        "b1": dh1.sum(0),
    }


PROBLEMS = {
    p.name: p
    for p in [
        Problem(
            "rosenbrock",
            "Rosenbrock 2-D from (-1.2, 1), float64",
            2000,
            1e-2,
            _rosen_init,
            _rosen_loss_grad,
        ),
        Problem(
            "logistic",
            "logistic regression, 1000 x 20, float32",
            500,
            _LOGISTIC_BEST + 0.001,
            _logistic_init,
            _logistic_loss_grad,
        ),
        Problem(
            "spirals",
            "MLP 2-32-32-1 tanh on two spirals (1.25 turns), 200 points, float32",
            1000,
            0.05,
            _spirals_init,
            _spirals_loss_grad,
        ),
    ]
}


def get(name):
    """The problem called ``name``; ``KeyError`` lists them.

    >>> loss, grad = get("rosenbrock").loss_grad({"xy": np.array([1.0, 1.0])})
    >>> loss, float(np.abs(grad["xy"]).max())
    (0.0, 0.0)
    """
    if name not in PROBLEMS:
        raise KeyError(f"unknown problem {name!r}; known: {', '.join(PROBLEMS)}")
    return PROBLEMS[name]
