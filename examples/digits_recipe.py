"""Handwritten digits with the whole training recipe: a numpy MLP on scikit-learn's digits.

The data set is scikit-learn's bundled 8x8 digits (1,797 images, 10 classes; read from the
package, no download). The model is a two-layer perceptron held as a nested dict,
``{"hidden": {"W", "b"}, "out": {"W", "b"}}``, with softmax cross-entropy and the backward
pass written by hand in numpy. It is trained with the recipe of a modern training script,
every piece of it from ``optimisers``:

* a learning-rate schedule as AdamW's ``eta``: a linear warm-up, then a cosine decay
  (``schedules.warmup_cosine_decay``, optax's schedule of that name; torch's
  ``LinearLR`` then ``CosineAnnealingLR``);
* gradients clipped to a global norm of 1 (``ClipGlobalNorm``: torch's
  ``clip_grad_norm_``, optax's ``clip_by_global_norm``);
* weight decay on the weight matrices only, not on the biases, by a rule per array
  (``setup(rule_for, model)``: torch's parameter groups, optax's ``multi_transform``);
* steps whose gradients hold a NaN or an infinity skipped (``SkipNonFinite``: optax's
  ``apply_if_finite``); ``--bad-batches`` plants NaNs in a few mini-batches to show it.

Run it from a checkout (needs scikit-learn; a few seconds)::

    python examples/digits_recipe.py
    python examples/digits_recipe.py --epochs 5 --plot digits.png     # plot needs matplotlib

It prints a progress bar per epoch with the mean training loss, the learning rate and the
global norm of the last gradient, then the held-out accuracy (about 99% at the defaults).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

import optimisers as opt
from optimisers import schedules


def load_digits(seed=0, held_out=0.25):
    """Standardised 64-pixel images and labels, split into training and held-out sets."""
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError:
        raise SystemExit("this example needs scikit-learn: pip install scikit-learn") from None
    data = sklearn_digits()
    X, y = data.data.astype(np.float64) / 16.0, data.target
    order = np.random.default_rng(seed).permutation(len(X))
    X, y = X[order], y[order]
    n = int(len(X) * (1 - held_out))
    mean, std = X[:n].mean(0), X[:n].std(0) + 1e-3
    return (X[:n] - mean) / std, y[:n], (X[n:] - mean) / std, y[n:]


def init_mlp(n_in, hidden, n_out, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "hidden": {"W": rng.standard_normal((n_in, hidden)) / np.sqrt(n_in), "b": np.zeros(hidden)},
        "out": {"W": rng.standard_normal((hidden, n_out)) / np.sqrt(hidden), "b": np.zeros(n_out)},
    }


def loss_and_grad(model, X, y):
    """Mean softmax cross-entropy and its gradient tree (the model's shape)."""
    h = np.tanh(X @ model["hidden"]["W"] + model["hidden"]["b"])
    logits = h @ model["out"]["W"] + model["out"]["b"]
    logits = logits - logits.max(1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(1, keepdims=True)
    loss = -np.mean(np.log(p[np.arange(len(y)), y] + 1e-12))
    dlogits = p
    dlogits[np.arange(len(y)), y] -= 1
    dlogits /= len(y)
    dh = (dlogits @ model["out"]["W"].T) * (1 - h**2)
    return loss, {
        "hidden": {"W": X.T @ dh, "b": dh.sum(0)},
        "out": {"W": h.T @ dlogits, "b": dlogits.sum(0)},
    }


def accuracy(model, X, y):
    h = np.tanh(X @ model["hidden"]["W"] + model["hidden"]["b"])
    return float(np.mean(np.argmax(h @ model["out"]["W"] + model["out"]["b"], 1) == y))


def main(argv=None, out=sys.stdout):
    ap = argparse.ArgumentParser(description="Digits with the whole training recipe.")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument(
        "--bad-batches",
        type=int,
        default=3,
        help="mini-batches whose gradient gets a NaN (skipped by SkipNonFinite)",
    )
    ap.add_argument("--plot", help="draw the loss and the learning rate into this PNG")
    args = ap.parse_args(argv)

    X, y, X_test, y_test = load_digits()
    model = init_mlp(X.shape[1], args.hidden, 10)
    steps_per_epoch = -(-len(X) // args.batch)
    total = args.epochs * steps_per_epoch
    eta = schedules.warmup_cosine_decay(
        init_value=0.0,
        peak_value=1e-2,
        warmup_steps=max(1, total // 10),
        decay_steps=total,
        end_value=1e-4,
    )
    state = opt.setup(
        lambda path, x: opt.OptimiserChain(
            opt.SkipNonFinite(),
            opt.ClipGlobalNorm(1.0),
            opt.AdamW(eta, lambda_=1e-2 if x.ndim >= 2 else 0.0),
        ),
        model,
    )

    rng = np.random.default_rng(1)
    bad = set(rng.choice(total, size=min(args.bad_batches, total), replace=False).tolist())
    history = {"loss": [], "eta": []}
    step = 0
    for epoch in range(args.epochs):
        order = rng.permutation(len(X))
        losses = []
        for k in range(steps_per_epoch):
            idx = order[k * args.batch : (k + 1) * args.batch]
            loss, grads = loss_and_grad(model, X[idx], y[idx])
            if step in bad:
                grads["out"]["b"][0] = np.nan  # a bad batch: skipped whole
            lr = opt.hyperparameters(state)["out"]["W"].opts[2].eta  # this step's eta
            state, model = opt.update_(state, model, grads)
            losses.append(loss)
            history["loss"].append(loss)
            history["eta"].append(lr)
            step += 1
            done = (k + 1) * 20 // steps_per_epoch
            print(
                f"\repoch {epoch + 1:3d}/{args.epochs} [{'#' * done}{'.' * (20 - done)}]",
                end="",
                file=out,
            )
        print(
            f" loss {np.mean(losses):.4f}  eta {lr:.2e}  |g| {opt.global_norm(grads):.3g}", file=out
        )
    skipped = int(state["out"]["W"].state[0].skipped)
    acc = accuracy(model, X_test, y_test)
    print(f"held-out accuracy {acc:.1%} ({len(y_test)} images), {skipped} steps skipped", file=out)
    if args.plot:
        _plot(history, args.plot)
    return {"accuracy": acc, "skipped": skipped, "history": history}


def _plot(history, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install matplotlib") from None
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    a.plot(history["loss"], linewidth=0.8)
    a.set_yscale("log")
    a.set_xlabel("step")
    a.set_ylabel("training loss")
    b.plot(history["eta"])
    b.set_xlabel("step")
    b.set_ylabel("eta (warm-up, cosine decay)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
