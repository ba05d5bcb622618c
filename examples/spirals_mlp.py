"""Two interleaved spirals: a numpy MLP with hand-written backprop, trained by three rules.

The task is the classic "two spirals" problem: points on two interleaved spiral arms (two
full turns each, a little noise, a fixed seed), one class per arm.  No straight line
separates them, so a model must learn a curved decision boundary.  The model is a
multi-layer perceptron held as a plain nested structure::

    {"layers": [{"W": (2, H), "b": (H,)}, {"W": (H, H), "b": (H,)}, {"W": (H, 1), "b": (1,)}],
     "activation": "tanh"}

(the string is carried along untouched: only floating-point arrays are trained), with the
forward and backward passes written by hand in numpy.  The same initial model is trained
with three rules, and for each the script shows what a training loop with ``optimisers``
looks like:

* ``opt.setup(rule, model)`` once, ``opt.update_(state, model, grads)`` every mini-batch
  (the gradient tree leaves out the ``"activation"`` key: a missing key means "no
  gradient here");
* ``opt.adjust_(state, eta)`` every epoch, for a cosine learning-rate decay that keeps the
  rules' momenta (in a chain, only the rules with an ``eta`` change);
* ``opt.freeze_(state["layers"][0])`` for the last quarter of the epochs: the first layer
  stays as it is (the script prints how far it moved while frozen: 0) and the upper
  layers are fine-tuned.

Run it from a checkout (a few seconds at the default size)::

    python examples/spirals_mlp.py
    python examples/spirals_mlp.py --epochs 10 --points 400 --hidden 16    # quick
    python examples/spirals_mlp.py --plot curves.png                      # needs matplotlib

It prints one line per epoch and rule (a progress bar, the mean training loss of the epoch
and the learning rate), then the final loss and the accuracy of each rule on the training
points and on held-out points drawn from the same spirals.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from itertools import pairwise

import numpy as np

import optimisers as opt

# ----------------------------------------------------------------------------------------
# data


def make_spirals(n, *, turns=2.0, noise=0.03, seed=0, dtype=np.float32):
    """``n`` points (``n // 2`` per arm) on two interleaved spirals, and their 0/1 labels.

    Arm 0 is ``r (cos t, sin t)`` with ``r = t / (2 pi turns)`` in [0, 1]; arm 1 is arm 0
    turned by half a turn.  Points are spread evenly along the arms, with Gaussian noise of
    standard deviation ``noise``.
    """
    rng = np.random.default_rng(seed)
    half = n // 2
    xs, ys = [], []
    for label in (0, 1):
        t = np.sqrt(rng.uniform(0.0, 1.0, half)) * (2 * np.pi * turns)
        r = t / (2 * np.pi * turns)
        angle = t + np.pi * label
        pts = np.column_stack([r * np.cos(angle), r * np.sin(angle)])
        xs.append(pts + noise * rng.standard_normal(pts.shape))
        ys.append(np.full(half, label))
    X, y = np.concatenate(xs), np.concatenate(ys)
    order = rng.permutation(len(y))
    return X[order].astype(dtype), y[order].astype(dtype)


# ----------------------------------------------------------------------------------------
# model: a nested dict of arrays, forward and backward by hand


def init_mlp(sizes, *, seed=0, dtype=np.float32, first_scale=8.0):
    """A tanh MLP with layer sizes ``sizes`` (e.g. ``[2, 64, 64, 1]``) as a nested dict.

    Weights are Glorot-normal, except that the first layer is scaled by ``first_scale``:
    a spiral needs features that turn quickly with the input.
    """
    rng = np.random.default_rng(seed)
    layers = []
    for i, (fan_in, fan_out) in enumerate(pairwise(sizes)):
        std = math.sqrt(2.0 / (fan_in + fan_out)) * (first_scale if i == 0 else 1.0)
        layers.append(
            {
                "W": (std * rng.standard_normal((fan_in, fan_out))).astype(dtype),
                "b": np.zeros(fan_out, dtype),
            }
        )
    return {"layers": layers, "activation": "tanh"}


def forward(model, X):
    """Logits of shape ``(len(X),)``, and the hidden activations that backward needs."""
    hs = [X]
    *hidden, last = model["layers"]
    for layer in hidden:
        hs.append(np.tanh(hs[-1] @ layer["W"] + layer["b"]))
    return (hs[-1] @ last["W"] + last["b"])[:, 0], hs


def loss_and_grad(model, X, y):
    """Mean binary cross-entropy of the logits, and its gradient as a tree like ``model``.

    With ``z`` the logits and ``s = sigmoid(z)``: loss ``mean(log(1 + e^z) - y z)``,
    ``dloss/dz = (s - y) / n``; each layer then back-propagates through ``x @ W + b`` and
    ``tanh`` (whose derivative is ``1 - tanh^2``).  The gradient tree has no
    ``"activation"`` entry: nothing to train there.
    """
    z, hs = forward(model, X)
    loss = float(np.mean(np.logaddexp(0.0, z) - y * z))
    delta = ((0.5 * (1.0 + np.tanh(0.5 * z)) - y) / len(y))[:, None].astype(X.dtype)  # s - y
    grads = [None] * len(model["layers"])
    for i in reversed(range(len(model["layers"]))):
        layer, h = model["layers"][i], hs[i]
        grads[i] = {"W": h.T @ delta, "b": delta.sum(axis=0)}
        if i > 0:
            delta = (delta @ layer["W"].T) * (1.0 - h * h)
    return loss, {"layers": grads}


def accuracy(model, X, y):
    z, _ = forward(model, X)
    return float(np.mean((z > 0) == (y > 0.5)))


# ----------------------------------------------------------------------------------------
# training


def progress_bar(fraction, width=20):
    filled = int(fraction * width + 1e-9)
    return "[" + "#" * filled + "." * (width - filled) + "]"


def cosine_eta(eta0, epoch, epochs, floor=0.05):
    """The learning rate of epoch ``epoch`` (0-based): from ``eta0`` down to ``floor * eta0``."""
    return eta0 * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * epoch / epochs)))


def train(
    rule, eta0, model, X, y, *, epochs, batch=32, seed=0, freeze_from=None, label="", out=sys.stdout
):
    """Train ``model`` in place with ``rule``; returns a dict with the history.

    ``freeze_from``: the epoch from which the first layer is frozen (``None``: never).
    """
    state = opt.setup(rule, model)
    rng = np.random.default_rng(seed)  # same mini-batches for every rule
    n, steps = len(y), math.ceil(len(y) / batch)
    tty = getattr(out, "isatty", lambda: False)()
    losses, frozen_copy = [], None
    t0 = time.perf_counter()
    for epoch in range(epochs):
        eta = cosine_eta(eta0, epoch, epochs)
        opt.adjust_(state, eta)  # new learning rate, momenta kept
        if freeze_from is not None and epoch == freeze_from:
            opt.freeze_(state["layers"][0])  # fine-tune the upper layers only
            frozen_copy = model["layers"][0]["W"].copy()
        order = rng.permutation(n)
        total = 0.0
        for k in range(steps):
            idx = order[k * batch : (k + 1) * batch]
            loss, grads = loss_and_grad(model, X[idx], y[idx])
            state, model = opt.update_(state, model, grads)
            total += loss * len(idx)
            if tty and k % 8 == 0:  # animate within the epoch on a terminal
                frac = (epoch + k / steps) / epochs
                out.write(f"\r{label} {progress_bar(frac)} {epoch + 1:>3}/{epochs}")
                out.flush()
        losses.append(total / n)
        out.write(
            f"\r{label} {progress_bar((epoch + 1) / epochs)} {epoch + 1:>3}/{epochs}"
            f"  loss {losses[-1]:.4f}  eta {eta:.2e}\n"
        )
        out.flush()
    seconds = time.perf_counter() - t0
    moved = None
    if frozen_copy is not None:
        moved = float(np.max(np.abs(model["layers"][0]["W"] - frozen_copy)))
    return {
        "losses": losses,
        "seconds": seconds,
        "frozen_moved": moved,
        "model": model,
        "state": state,
    }


def rules():
    """The three rules compared: (label, rule, initial learning rate)."""
    return [
        ("Momentum", opt.Momentum(0.1, 0.9), 0.1),
        ("Adam", opt.Adam(0.02), 0.02),
        (
            "ClipNorm+AdamW",
            opt.OptimiserChain(opt.ClipNorm(1.0), opt.AdamW(0.02, lambda_=1e-4)),
            0.02,
        ),
    ]


def plot_curves(path, results, model, X, y):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    for r in results:
        ax1.plot(range(1, len(r["losses"]) + 1), r["losses"], label=r["label"])
    ax1.set(
        xlabel="epoch",
        ylabel="mean training loss",
        yscale="log",
        title="two spirals: training loss",
    )
    ax1.legend()
    g = np.linspace(-1.2, 1.2, 300, dtype=X.dtype)
    gx, gy = np.meshgrid(g, g)
    z, _ = forward(model, np.column_stack([gx.ravel(), gy.ravel()]))
    ax2.contourf(gx, gy, z.reshape(gx.shape) > 0, levels=1, cmap="coolwarm", alpha=0.3)
    ax2.scatter(X[:, 0], X[:, 1], c=y, cmap="coolwarm", s=4)
    ax2.set(aspect="equal", title=f"decision regions ({results[-1]['best']})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None, out=sys.stdout):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--epochs", type=int, default=40, help="passes over the data (default 40)")
    p.add_argument(
        "--points", type=int, default=2000, help="training points, half per arm (default 2000)"
    )
    p.add_argument("--hidden", type=int, default=64, help="width of both hidden layers (64)")
    p.add_argument("--batch", type=int, default=32, help="mini-batch size (default 32)")
    p.add_argument("--seed", type=int, default=0, help="seed of data, weights and batches")
    p.add_argument(
        "--plot", metavar="PNG", help="save the loss curves to this file (needs matplotlib)"
    )
    args = p.parse_args(argv)
    if args.epochs < 1 or args.points < 4 or args.hidden < 1 or args.batch < 1:
        p.error("--epochs, --hidden and --batch must be >= 1, --points >= 4")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            p.error(
                "--plot needs matplotlib, which is not installed: "
                "pip install matplotlib (or pip install 'optimisers[plot]')"
            )

    X, y = make_spirals(args.points, seed=args.seed)
    Xt, yt = make_spirals(1000, seed=args.seed + 1)  # held-out points
    model0 = init_mlp([2, args.hidden, args.hidden, 1], seed=args.seed)
    freeze_from = args.epochs - args.epochs // 4 if args.epochs >= 4 else None
    out.write(
        f"two spirals: {args.points} training points, MLP 2-{args.hidden}-"
        f"{args.hidden}-1 ({sum(a.size for a in opt.trainables(model0))} parameters), "
        f"{args.epochs} epochs of batches of {args.batch}; cosine learning-rate decay"
        + (f", layer 0 frozen from epoch {freeze_from + 1}" if freeze_from else "")
        + "\n"
    )

    results = []
    width = max(len(label) for label, _, _ in rules())
    for label, rule, eta0 in rules():
        out.write(f"\n{rule!r}\n")
        model = copy.deepcopy(model0)  # same start for every rule
        r = train(
            rule,
            eta0,
            model,
            X,
            y,
            epochs=args.epochs,
            batch=args.batch,
            seed=args.seed,
            freeze_from=freeze_from,
            label=f"{label:<{width}}",
            out=out,
        )
        r.update(
            label=label,
            rule=rule,
            train_acc=accuracy(r["model"], X, y),
            test_acc=accuracy(r["model"], Xt, yt),
        )
        results.append(r)

    out.write(
        f"\n{'rule':<{width}}  first loss  final loss  train acc  test acc  "
        f"layer 0 moved while frozen    time\n"
    )
    for r in results:
        moved = "-" if r["frozen_moved"] is None else f"{r['frozen_moved']:g}"
        out.write(
            f"{r['label']:<{width}}  {r['losses'][0]:>10.4f}  {r['losses'][-1]:>10.4f}"
            f"  {100 * r['train_acc']:>8.1f}%  {100 * r['test_acc']:>7.1f}%"
            f"  {moved:>26}  {r['seconds']:>5.2f} s\n"
        )
    best = max(results, key=lambda r: r["test_acc"])
    out.write(f"best: {best['label']} ({100 * best['test_acc']:.1f}% of held-out points)\n")
    if args.plot:
        results[-1]["best"] = best["label"]
        plot_curves(args.plot, results, best["model"], X, y)
        out.write(f"loss curves and decision regions saved to {args.plot}\n")
    return results


if __name__ == "__main__":
    main()
