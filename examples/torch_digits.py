"""Handwritten digits with a PyTorch network trained by a rule torch does not have.

The data set is scikit-learn's bundled 8x8 digits (1,797 images, 10 classes, read from the
package: no download), standardised and split into training and held-out sets.  The model
is a torch MLP (64 -> 128 -> 10, GELU) trained with cross-entropy by autograd, stepped by
:class:`optimisers.torch.Optimizer` with ``Lion`` (Chen et al., 2023: the sign of an
interpolated momentum; ``torch.optim`` has no Lion), the gradients clipped to a global
norm of 1 in the same step, weight decay on the weight matrices only (a param group of
their own), and torch's ``CosineAnnealingLR`` driving the learning rate::

    clip = opt.ClipGlobalNorm(1.0)
    optim = Optimizer([{"params": weights,
                        "rule": opt.OptimiserChain(clip, opt.Lion(1e-3), opt.WeightDecay(1e-4))},
                       {"params": biases}], opt.OptimiserChain(clip, opt.Lion(1e-3)))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, T_max=steps)

Run it from a checkout (needs torch and scikit-learn; a few seconds)::

    python examples/torch_digits.py
    python examples/torch_digits.py --rule adabelief --epochs 10

It prints the mean training loss and the learning rate of each epoch, then the held-out
accuracy (about 97% at the defaults).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

import optimisers as opt

try:
    import torch

    from optimisers.torch import Optimizer
except ImportError:  # main() says what to install
    torch = Optimizer = None
try:
    from sklearn.datasets import load_digits as sklearn_digits
except ImportError:
    sklearn_digits = None

# rules torch.optim lacks, with learning rates that train this network
RULES = {
    "lion": lambda: opt.Lion(1e-3),
    "adabelief": lambda: opt.AdaBelief(3e-3),
    "oadam": lambda: opt.OAdam(3e-3),
    "amsgrad": lambda: opt.AMSGrad(3e-3),
}


def _need():
    if torch is None or sklearn_digits is None:
        sys.exit(
            "this example needs PyTorch and scikit-learn: pip install torch "
            "scikit-learn (neither is a dependency of optimisers)"
        )


def load_digits(seed=0, held_out=0.25):
    """Standardised float32 images and int64 labels as tensors: train and held-out."""
    _need()
    data = sklearn_digits()
    X, y = data.data.astype(np.float32) / 16.0, data.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(X))
    X, y = X[order], y[order]
    n = int(len(X) * (1 - held_out))
    mean, std = X[:n].mean(0), X[:n].std(0) + 1e-3
    X = (X - mean) / std
    return (
        torch.from_numpy(X[:n]),
        torch.from_numpy(y[:n]),
        torch.from_numpy(X[n:]),
        torch.from_numpy(y[n:]),
    )


def make_net(seed=0, hidden=128):
    _need()
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(64, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, 10)
    )


def make_optimiser(net, rule, decay=1e-4):
    """Two param groups: the weight matrices with a decoupled decay (``x -= step +
    decay*x``), the biases without; the gradients of both clipped to a global norm of 1
    (one norm over the whole network: every group's rule starts with the same clip)."""
    weights = [p for p in net.parameters() if p.ndim >= 2]
    biases = [p for p in net.parameters() if p.ndim < 2]
    clipped = opt.OptimiserChain(opt.ClipGlobalNorm(1.0), rule)
    decayed = opt.OptimiserChain(opt.ClipGlobalNorm(1.0), rule, opt.WeightDecay(decay))
    return Optimizer([{"params": weights, "rule": decayed}, {"params": biases}], clipped)


def accuracy(net, X, y):
    with torch.no_grad():
        return (net(X).argmax(1) == y).float().mean().item()


def main(argv=None, out=sys.stdout):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rule", choices=sorted(RULES), default="lion")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    _need()
    Xtr, ytr, Xte, yte = load_digits(args.seed)
    net = make_net(args.seed)
    optim = make_optimiser(net, RULES[args.rule]())
    per_epoch = -(-len(Xtr) // args.batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, T_max=args.epochs * per_epoch)
    g = torch.Generator().manual_seed(args.seed)
    history = []
    for epoch in range(args.epochs):
        order = torch.randperm(len(Xtr), generator=g)
        total = 0.0
        for i in range(per_epoch):
            idx = order[i * args.batch : (i + 1) * args.batch]
            optim.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(Xtr[idx]), ytr[idx])
            loss.backward()
            optim.step()
            sched.step()
            total += loss.item()
        history.append(total / per_epoch)
        out.write(
            f"epoch {epoch + 1:3d}  loss {history[-1]:.4f}  lr {optim.param_groups[0]['lr']:.2e}\n"
        )
    acc = accuracy(net, Xte, yte)
    out.write(
        f"{args.rule} ({RULES[args.rule]()!r}), {args.epochs} epochs: held-out "
        f"accuracy {100 * acc:.1f}% on {len(Xte)} images\n"
    )
    return {"losses": history, "accuracy": acc}


if __name__ == "__main__":
    main()
