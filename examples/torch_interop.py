"""Recipe: ``optimisers`` as the optimiser of a PyTorch model on the CPU.

:class:`optimisers.torch.Optimizer` is a ``torch.optim.Optimizer``: switching from torch's
AdamW is two lines, and schedulers, ``zero_grad``, ``step(closure)``, param groups and
``state_dict`` work as with any torch optimiser::

    from optimisers.torch import Optimizer                     # was: optim = torch.optim.AdamW(
    optim = Optimizer(net.parameters(), opt.AdamW(1e-3, lambda_=0.01))  # net.parameters(), 1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(optim, max_lr=1e-2, total_steps=1000,
                                                cycle_momentum=False)
    for x, y in data:
        optim.zero_grad(); loss_fn(net(x), y).backward(); optim.step(); sched.step()
    torch.save({"model": net.state_dict(), "optim": optim.state_dict(),
                "sched": sched.state_dict()}, "ckpt.pt")       # loads with weights_only=True

Underneath, a CPU tensor and the numpy array ``tensor.detach().numpy()`` share their
memory, so the optimiser hands the engine a tree of such views, set up once, and the
kernels write the tensors in place; ``p.grad.numpy()`` gives the gradients without a
copy either.  ``optim.state_tree`` is the engine's state tree (a list, one
``{name: Leaf}`` a group), for the tree functions: ``opt.freeze_(optim.state_tree[0][
"0.weight"])``.  :func:`checkpoint_demo` saves and resumes mid-schedule, and checks that
the resumed run ends bit for bit where the uninterrupted one does.

Which ``torch.optim`` configurations equal which rules
------------------------------------------------------
Worked out from both update formulas (torch 2.x single-tensor code, which is what CPU
tensors use by default) and checked step by step by :func:`compare` on the pairs of
:func:`torch_equivalents`:

* ``SGD(lr)`` = ``Descent(lr)``
* ``SGD(lr, momentum=mu)`` (``dampening=0``, the default) = ``Momentum(lr, mu)`` (1)
* ``SGD(lr, momentum=mu, nesterov=True)`` = ``Nesterov(lr, mu)`` (1)
* ``SGD(lr, momentum=mu, weight_decay=wd)`` =
  ``OptimiserChain(WeightDecay(wd), Momentum(lr, mu))`` (1)
* ``Adam(lr, betas, eps)`` = ``Adam(lr, betas, eps)``
* ``Adam(lr, betas, eps, weight_decay=wd)`` (L2) =
  ``OptimiserChain(WeightDecay(wd), Adam(lr, betas, eps))``
* ``AdamW(lr, betas, eps, weight_decay=wd)`` = ``AdamW(lr, betas, lambda_=wd, epsilon=eps)`` (2)
* ``RMSprop(lr, alpha, eps)`` = ``RMSProp(lr, rho=alpha, epsilon=eps)`` (3)
* ``RMSprop(lr, alpha, eps, centered=True)`` = ``RMSProp(lr, alpha, eps, centred=True)``
* ``RMSprop(lr, alpha, eps, momentum=mu)`` =
  ``OptimiserChain(RMSProp(1.0, alpha, eps), Momentum(lr, mu))`` (1)
* ``Adagrad(lr, eps=eps, initial_accumulator_value=eps)`` = ``AdaGrad(lr, eps)`` (4)
* ``Adadelta(lr, rho, eps)`` = ``AdaDelta(rho, eps)`` with the group's ``lr`` (5)
* ``Rprop(lr, etas, step_sizes)`` = ``Rprop(lr, ell=etas, gamma=step_sizes)``

(1) torch keeps the momentum buffer ``buf <- mu*buf + g`` (started at the first gradient)
    and steps ``p -= lr*buf``; ``Momentum`` keeps the velocity ``v <- rho*v + eta*g`` (started
    at 0) and steps ``x -= v``.  By induction ``v = lr*buf`` at every step, so the two agree
    *while the learning rate is constant*.  Under a schedule they differ: torch applies a new
    ``lr`` to the whole buffer at once, ``Momentum`` only to new gradients (the same holds for
    ``Nesterov``, whose ``v`` is ``-lr*buf``); ``optimisers.torch.Optimizer`` therefore
    runs them in torch's form, ``OptimiserChain(Momentum(1.0, mu), Descent(lr))``, and tracks
    torch under a scheduler.
    ``dampening != 0`` has no equivalent (torch does not dampen the first gradient).  With
    ``optimisers.torch.Optimizer`` a group's ``lr`` moves every ``eta`` of its chain, so the
    ``RMSprop(momentum=mu)`` chain, with two, steps as ``lr**2`` under a scheduler: use it
    at a constant ``lr`` only.
(2) torch's ``AdamW`` defaults to ``weight_decay=1e-2``; ``AdamW``'s ``lambda_`` defaults to
    0.  Both multiply the decay by the learning rate (``couple=True``, the default).
(3) The defaults differ: torch ``alpha=0.99``, ``RMSProp`` ``rho=0.9``.
(4) ``AdaGrad`` starts its accumulator at ``epsilon`` (as Optimisers.jl does), torch at
    ``initial_accumulator_value`` (default 0); torch's ``eps`` defaults to 1e-10.
(5) ``AdaDelta`` has no ``eta``: the optimiser multiplies its step by the group's ``lr``
    (default 1.0), as torch does.

Besides, rules written to be torch's: ``Adamax(lr, betas, eps)`` = ``TorchAdamax(lr, betas,
eps)``, ``RAdam(lr, betas, eps)`` = ``TorchRAdam(lr, betas, eps)``, ``NAdam(lr, betas, eps,
momentum_decay=psi)`` = ``TorchNAdam(lr, betas, eps, psi)`` (checked by the package's
tests/test_torchlike.py and tests/test_torch_optimizer.py; torch keeps NAdam's
``mu_product`` in its default dtype, ``TorchNAdam`` in float64, so under the float32
default the two differ by that rounding, about 1e-9 relative in float64).

Similar but *not* equal: ``Adamax`` vs ``AdaMax`` (torch adds ``eps`` inside the max,
``max(b2*u, |g| + eps)``; ``AdaMax`` adds it to the denominator, so the two differ by
O(eps): a relative difference of 3e-4 after 50 steps with ``eps=0.01``; equal with
``eps=0`` on both sides; ``TorchAdamax`` is torch's); ``Adam(amsgrad=True)`` vs ``AMSGrad``
(no bias correction, states started at ``epsilon``: O(1) differences); ``NAdam`` (torch's
momentum-decay schedule) and ``RAdam`` (torch's threshold ``rho_t > 5``, ``eps`` added to
``sqrt(v)`` before the bias correction) vs the seed's rules of the same name (1e-3 to 1e-1;
``TorchNAdam`` and ``TorchRAdam`` are torch's); and
``torch.nn.utils.clip_grad_norm_`` (one norm over *all* parameters, plus ``1e-6``) vs
``ClipNorm`` (one norm per array).  ``Lion``, ``AdaBelief``, ``OAdam``, ``SignDecay``,
``AccumGrad`` have no ``torch.optim`` counterpart.

The numbers (``python examples/torch_interop.py``, 50 steps): in float64 every pair of the
table agrees to 2e-15 relative (max |a - b| / max |a| over all parameters), whether the two
copies are handed the same gradients or each computes its own.  In float32 they agree to
rounding, about 3e-7; the largest, ``AdamW``, about 1e-6, because torch rounds its factor
``1 - lr*weight_decay`` to float32, a relative bias of about 1e-8 per step that
``optimisers`` (one rounding of ``x - eta*(a + lambda*x)``) does not have.

Caveats
-------
* Parameters must be dense, contiguous CPU tensors (float16, bfloat16 with ml_dtypes,
  float32, float64, complex).  For a GPU model use torch.optim.
* Build the optimiser again after anything that *replaces* a parameter tensor
  (``net.to(...)``, ``net.half()``, assigning a new ``nn.Parameter``): ``step()`` refuses
  a parameter whose memory moved.  ``net.load_state_dict`` copies into the existing
  tensors and keeps the views valid.
* Writes through numpy do not bump autograd's version counters: step after
  ``backward()``, as with ``torch.optim``, not between a forward pass and its backward.

Run it::

    python examples/torch_interop.py                 # all equivalent pairs, 50 steps each
    python examples/torch_interop.py --steps 200 --bench

It ends with the checkpoint demo (OneCycleLR, saved at step 30 of 60, resumed in a fresh
network and optimiser).  ``--bench`` also times one Adam step of ``Optimizer`` against
``torch.optim`` on 4 million float32 parameters; ``optimisers-bench torch-step``
is the full comparison (bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import io
import sys
import time

import optimisers as opt

try:
    import torch

    from optimisers.torch import Optimizer
except ImportError:  # the module stays importable; main() explains what to do
    torch = Optimizer = None


def _need_torch():
    if torch is None:
        sys.exit(
            "this example needs PyTorch's CPU build: pip install torch "
            "(it is not a dependency of optimisers)"
        )


def make_net(seed=0, width=32, dtype=None):
    """A small regression network with a few kinds of parameters (Linear, LayerNorm)."""
    _need_torch()
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Linear(8, width),
        torch.nn.Tanh(),
        torch.nn.LayerNorm(width),
        torch.nn.Linear(width, width),
        torch.nn.Tanh(),
        torch.nn.Linear(width, 1),
    )
    return net.to(dtype or torch.float32)


def make_data(n=256, seed=0, dtype=None):
    g = torch.Generator().manual_seed(seed + 1)
    X = torch.randn(n, 8, generator=g, dtype=dtype or torch.float32)
    y = (
        torch.sin(X[:, :1] * 2)
        + X[:, 1:2] * X[:, 2:3]
        + 0.1 * torch.randn(n, 1, generator=g, dtype=X.dtype)
    )
    return X, y


def torch_equivalents():
    """``[(label, make torch optimiser from params, optimisers rule)]``: pairs that are
    the same update (see the table in the module docstring)."""
    _need_torch()
    T = torch.optim
    return [
        ("SGD(lr=0.05)", lambda p: T.SGD(p, lr=0.05), opt.Descent(0.05)),
        (
            "SGD(lr=0.05, momentum=0.9)",
            lambda p: T.SGD(p, lr=0.05, momentum=0.9),
            opt.Momentum(0.05, 0.9),
        ),
        (
            "SGD(lr=0.05, momentum=0.9, nesterov=True)",
            lambda p: T.SGD(p, lr=0.05, momentum=0.9, nesterov=True),
            opt.Nesterov(0.05, 0.9),
        ),
        (
            "SGD(lr=0.05, momentum=0.9, weight_decay=0.01)",
            lambda p: T.SGD(p, lr=0.05, momentum=0.9, weight_decay=0.01),
            opt.OptimiserChain(opt.WeightDecay(0.01), opt.Momentum(0.05, 0.9)),
        ),
        ("Adam(lr=0.01)", lambda p: T.Adam(p, lr=0.01), opt.Adam(0.01)),
        (
            "Adam(lr=0.01, betas=(0.8, 0.99), eps=1e-6)",
            lambda p: T.Adam(p, lr=0.01, betas=(0.8, 0.99), eps=1e-6),
            opt.Adam(0.01, (0.8, 0.99), 1e-6),
        ),
        (
            "Adam(lr=0.01, weight_decay=0.01)",
            lambda p: T.Adam(p, lr=0.01, weight_decay=0.01),
            opt.OptimiserChain(opt.WeightDecay(0.01), opt.Adam(0.01)),
        ),
        (
            "AdamW(lr=0.01, weight_decay=0.1)",
            lambda p: T.AdamW(p, lr=0.01, weight_decay=0.1),
            opt.AdamW(0.01, lambda_=0.1),
        ),
        (
            "RMSprop(lr=0.001, alpha=0.9)",
            lambda p: T.RMSprop(p, lr=0.001, alpha=0.9),
            opt.RMSProp(0.001, 0.9),
        ),
        (
            "RMSprop(lr=0.001, alpha=0.9, centered=True)",
            lambda p: T.RMSprop(p, lr=0.001, alpha=0.9, centered=True),
            opt.RMSProp(0.001, 0.9, centred=True),
        ),
        (
            "RMSprop(lr=0.001, alpha=0.9, momentum=0.5)",
            lambda p: T.RMSprop(p, lr=0.001, alpha=0.9, momentum=0.5),
            opt.OptimiserChain(opt.RMSProp(1.0, 0.9), opt.Momentum(0.001, 0.5)),
        ),
        (
            "Adagrad(lr=0.05, eps=1e-8, initial_accumulator_value=1e-8)",
            lambda p: T.Adagrad(p, lr=0.05, eps=1e-8, initial_accumulator_value=1e-8),
            opt.AdaGrad(0.05, 1e-8),
        ),
        (
            "Adadelta(lr=1.0, rho=0.9, eps=1e-6)",
            lambda p: T.Adadelta(p, lr=1.0, rho=0.9, eps=1e-6),
            opt.AdaDelta(0.9, 1e-6),
        ),
        (
            "Rprop(lr=0.01)",
            lambda p: T.Rprop(p, lr=0.01),
            opt.Rprop(0.01, (0.5, 1.2), (1e-6, 50.0)),
        ),
    ]


def torch_lookalikes():
    """Pairs with the same name that are *not* the same update (for contrast)."""
    _need_torch()
    T = torch.optim
    return [
        (
            "Adamax(lr=0.01, eps=0.01)",
            lambda p: T.Adamax(p, lr=0.01, eps=0.01),
            opt.AdaMax(0.01, epsilon=0.01),
        ),
        (
            "Adam(lr=0.01, amsgrad=True)",
            lambda p: T.Adam(p, lr=0.01, amsgrad=True),
            opt.AMSGrad(0.01),
        ),
        ("NAdam(lr=0.01)", lambda p: T.NAdam(p, lr=0.01), opt.NAdam(0.01)),
        ("RAdam(lr=0.01)", lambda p: T.RAdam(p, lr=0.01), opt.RAdam(0.01)),
    ]


def _rel_diff(a, b):
    """max |a - b| over all parameters of two networks, divided by max |a|."""
    d = max(
        (pa.detach() - pb.detach()).abs().max().item()
        for pa, pb in zip(a.parameters(), b.parameters())
    )
    return d / max(pa.detach().abs().max().item() for pa in a.parameters())


def compare(make_torch_opt, rule, *, steps=50, seed=0, batch=32, dtype=None, same_grads=False):
    """Train two copies of one network side by side, one with ``torch.optim``, one with
    ``Optimizer(params, rule)``, on the same mini-batches.

    With ``same_grads=False`` each copy computes its own gradients (real use: rounding
    differences are fed back through the training dynamics and may grow); with
    ``same_grads=True`` the ``optimisers`` copy is handed the gradients of the torch copy,
    which isolates the optimisers' arithmetic.

    Returns ``(rel_diffs, losses)``: after each step, the largest relative difference
    between the two copies' parameters (max |a - b| / max |a| over all parameters); and the
    ``torch.optim`` side's loss at each step.
    """
    _need_torch()
    net_t, net_o = make_net(seed, dtype=dtype), make_net(seed, dtype=dtype)
    X, y = make_data(seed=seed, dtype=dtype)
    opt_t = make_torch_opt(net_t.parameters())
    opt_o = Optimizer(net_o.named_parameters(), rule)
    g = torch.Generator().manual_seed(seed + 2)
    rel, losses = [], []
    for _ in range(steps):
        idx = torch.randint(0, len(X), (batch,), generator=g)
        opt_t.zero_grad()
        loss = torch.nn.functional.mse_loss(net_t(X[idx]), y[idx])
        loss.backward()
        losses.append(loss.item())
        opt_o.zero_grad()
        if same_grads:
            for pt, po in zip(net_t.parameters(), net_o.parameters()):
                po.grad = pt.grad.clone()
        else:
            torch.nn.functional.mse_loss(net_o(X[idx]), y[idx]).backward()
        opt_t.step()
        opt_o.step()
        rel.append(_rel_diff(net_t, net_o))
    return rel, losses


def bench(n_params=4_000_000, repeat=20):
    """Seconds per optimiser step (Adam) on a model of ``n_params`` float32 parameters in
    four tensors: ``Optimizer``, ``torch.optim.Adam`` (for-loop) and ``Adam(fused=True)``."""
    _need_torch()
    torch.manual_seed(0)
    shapes = [(n_params // 4 // 1000, 1000)] * 4
    makers = {
        "optimisers.torch Adam": lambda ps: Optimizer(ps, opt.Adam(1e-3)),
        "torch Adam (for-loop)": lambda ps: torch.optim.Adam(ps, lr=1e-3, foreach=False),
        "torch Adam (fused=True)": lambda ps: torch.optim.Adam(ps, lr=1e-3, fused=True),
    }
    out = {}
    for label, make in makers.items():
        ps = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
        for p in ps:
            p.grad = torch.randn_like(p)
        o = make(ps)
        o.step()  # warm-up (state init)
        t0 = time.perf_counter()
        for _ in range(repeat):
            o.step()
        out[label] = (time.perf_counter() - t0) / repeat
    return out


def _train(net, optim, sched, batches):
    for X, y in batches:
        optim.zero_grad()
        torch.nn.functional.mse_loss(net(X), y).backward()
        optim.step()
        sched.step()


def checkpoint_demo(steps=60, save_at=30, rule=None):
    """Train with OneCycleLR, save model, optimiser and scheduler at ``save_at`` (with
    ``torch.save``), resume them into a fresh network and optimiser (read back with
    ``weights_only=True``), and finish.  Returns ``(resumed equals uninterrupted, the
    losses of the uninterrupted run)``."""
    _need_torch()
    rule = rule or opt.AdamW(1e-3, lambda_=0.01)
    X, y = make_data()
    g = torch.Generator().manual_seed(5)
    batches = [
        (X[i], y[i]) for i in (torch.randint(0, len(X), (32,), generator=g) for _ in range(steps))
    ]

    def fresh(seed):
        net = make_net(seed)
        optim = Optimizer(net.parameters(), rule)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            optim, max_lr=1e-2, total_steps=steps, cycle_momentum=False
        )
        return net, optim, sched

    net, optim, sched = fresh(0)
    _train(net, optim, sched, batches[:save_at])
    buf = io.BytesIO()  # a file in real use: torch.save(..., "ckpt.pt")
    torch.save(
        {"model": net.state_dict(), "optim": optim.state_dict(), "sched": sched.state_dict()}, buf
    )
    _train(net, optim, sched, batches[save_at:])
    losses = [torch.nn.functional.mse_loss(net(X), y).item()]

    buf.seek(0)
    ck = torch.load(buf, weights_only=True)  # tensors and plain values only
    net2, optim2, sched2 = fresh(1)  # other initial weights
    net2.load_state_dict(ck["model"])
    optim2.load_state_dict(ck["optim"])
    sched2.load_state_dict(ck["sched"])
    _train(net2, optim2, sched2, batches[save_at:])
    same = all(torch.equal(a, b) for a, b in zip(net.parameters(), net2.parameters()))
    return same, losses


def main(argv=None, out=sys.stdout):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--steps", type=int, default=50, help="steps per comparison (default 50)")
    p.add_argument("--float64", action="store_true", help="compare in float64")
    p.add_argument("--bench", action="store_true", help="also time one Adam step")
    args = p.parse_args(argv)
    _need_torch()
    dtype = torch.float64 if args.float64 else torch.float32
    out.write(
        f"torch {torch.__version__}, {args.steps} steps of mini-batches of 32, "
        f"{str(dtype).replace('torch.', '')}; relative difference of the parameters "
        f"(max |a - b| / max |a| over all parameters)\n\n"
    )
    results = {}
    width = max(len(lbl) for lbl, _, _ in torch_equivalents() + torch_lookalikes())
    out.write(
        f"{'torch.optim':<{width}}  optimisers rule\n{'':<{width}}  torch's loss at "
        f"the first and last step; largest relative difference over the {args.steps} "
        f"steps with the same gradients / with each copy's own gradients\n"
    )
    for section, pairs in (
        ("same update", torch_equivalents()),
        ("same name, different update", torch_lookalikes()),
    ):
        out.write(f"-- {section}\n")
        for label, make, rule in pairs:
            same, _ = compare(make, rule, steps=args.steps, dtype=dtype, same_grads=True)
            own, losses = compare(make, rule, steps=args.steps, dtype=dtype)
            results[label] = {
                "rule": rule,
                "same_grads": same,
                "own_grads": own,
                "losses": losses,
                "equivalent": section == "same update",
            }
            out.write(
                f"{label:<{width}}  {rule!r}\n{'':<{width}}  loss {losses[0]:.4f} -> "
                f"{losses[-1]:.4f}   rel. difference {max(same):.1e} / "
                f"{max(own):.1e}\n"
            )
    same, losses = checkpoint_demo()
    results["checkpoint"] = same
    out.write(
        f"\ncheckpoint: OneCycleLR, saved at step 30 of 60 and resumed in a fresh "
        f"network: final loss {losses[-1]:.4f}, "
        f"{'bit for bit the uninterrupted run' if same else 'DIFFERENT'}\n"
    )
    if args.bench:
        out.write(
            f"\none Adam step, 4 tensors of 1M float32 parameters, "
            f"{opt.max_threads()} OpenMP threads / torch {torch.get_num_threads()} "
            f"threads:\n"
        )
        for label, s in bench().items():
            out.write(f"  {label:<26} {1e3 * s:8.2f} ms\n")
    return results


if __name__ == "__main__":
    main()
