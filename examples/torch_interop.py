"""Recipe: ``optimisers`` as the CPU optimiser of a PyTorch model, through zero-copy views.

A CPU tensor and the numpy array that ``tensor.detach().numpy()`` returns share their
memory, so a model tree of such views is a model that ``optimisers`` can update *in
place*: writing into the view writes the tensor.  Autograd computes the gradients as
usual, and ``p.grad.numpy()`` gives them to ``optimisers`` without a copy either::

    import optimisers as opt

    params = dict(net.named_parameters())                        # {name: Parameter}
    model = {name: p.detach().numpy() for name, p in params.items()}   # views, no copy
    state = opt.setup(opt.Adam(1e-3), model)

    for x, y in data:
        for p in params.values():
            p.grad = None                                        # like optimizer.zero_grad()
        loss_fn(net(x), y).backward()
        grads = {name: p.grad.numpy() for name, p in params.items() if p.grad is not None}
        state, _ = opt.update_(state, model, grads)              # writes into net's tensors

:class:`TorchOptimiser` below packages this as an object with ``step()`` and
``zero_grad()``.  Everything the library offers works on the view tree: ``adjust_`` for
learning-rate schedules, ``freeze_(state["encoder.weight"])``, ``OptimiserChain``,
``save_state``.

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
* ``Adadelta(lr=1.0, rho, eps)`` = ``AdaDelta(rho, eps)``
* ``Rprop(lr, etas, step_sizes)`` = ``Rprop(lr, ell=etas, gamma=step_sizes)``

(1) torch keeps the momentum buffer ``buf <- mu*buf + g`` (started at the first gradient)
    and steps ``p -= lr*buf``; ``Momentum`` keeps the velocity ``v <- rho*v + eta*g`` (started
    at 0) and steps ``x -= v``.  By induction ``v = lr*buf`` at every step, so the two agree
    *while the learning rate is constant*.  Under a schedule they differ: torch applies a new
    ``lr`` to the whole buffer at once, ``Momentum`` only to new gradients (the same holds for
    ``Nesterov``, whose ``v`` is ``-lr*buf``).  ``dampening != 0`` has no equivalent (torch
    does not dampen the first gradient).
(2) torch's ``AdamW`` defaults to ``weight_decay=1e-2``; ``AdamW``'s ``lambda_`` defaults to
    0.  Both multiply the decay by the learning rate (``couple=True``, the default).
(3) The defaults differ: torch ``alpha=0.99``, ``RMSProp`` ``rho=0.9``.
(4) ``AdaGrad`` starts its accumulator at ``epsilon`` (as Optimisers.jl does), torch at
    ``initial_accumulator_value`` (default 0); torch's ``eps`` defaults to 1e-10.

Similar but *not* equal: ``Adamax`` (torch adds ``eps`` inside the max,
``max(b2*u, |g| + eps)``; ``AdaMax`` adds it to the denominator, so the two differ by
O(eps): indistinguishable with ``eps=1e-8`` unless gradients are that small, a relative
difference of 3e-4 after 50 steps with ``eps=0.01``); ``Adam(amsgrad=True)`` vs ``AMSGrad``
(no bias correction, states started at ``epsilon``: O(1) differences); ``NAdam`` (torch's
momentum-decay schedule) and ``RAdam`` (torch's threshold ``rho_t > 5``, ``eps`` added to
``sqrt(v)`` before the bias correction) vs the rules of the same name (1e-3 to 1e-1); and
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
* Parameters must be dense CPU tensors of a dtype numpy has (float32, float64, float16;
  not bfloat16).  For a GPU model this recipe does not apply.
* Build the views again after anything that *replaces* a parameter tensor
  (``net.to(...)``, ``net.half()``, assigning a new ``nn.Parameter``); ``load_state_dict``
  copies into the existing tensors and keeps the views valid.
* ``named_parameters()`` lists a tied parameter once, so it gets one view and one update.
  Two separate ``.numpy()`` views of the same tensor would be two parameters.
* Writes through numpy do not bump autograd's version counters: step after
  ``backward()``, as with ``torch.optim``, not between a forward pass and its backward.

Run it::

    python examples/torch_interop.py                 # all equivalent pairs, 50 steps each
    python examples/torch_interop.py --steps 200 --bench

``--bench`` also times one Adam step of ``optimisers`` against ``torch.optim`` on 4
million float32 parameters.  On a 2-core machine: ``optimisers`` 1.4-1.9 ms, torch's
default (for-loop) ``Adam`` 5-10 ms, ``Adam(fused=True)`` 1.2-2.0 ms: the views cost
nothing, and one fused pass per array is as fast as torch's own fused CPU kernel.
"""

from __future__ import annotations

import argparse
import sys
import time

import optimisers as opt

try:
    import torch
except ImportError:          # the module stays importable; main() explains what to do
    torch = None


def _need_torch():
    if torch is None:
        sys.exit("this example needs PyTorch's CPU build: pip install torch "
                 "(it is not a dependency of optimisers)")


class TorchOptimiser:
    """Update a torch module's parameters in place with an ``optimisers`` rule.

    A drop-in for the ``step()`` / ``zero_grad()`` part of a ``torch.optim`` optimiser.
    ``self.model`` is the tree of numpy views (``{name: array}``) and ``self.state`` the
    state tree, so ``opt.adjust_(o.state, 1e-4)`` or ``opt.freeze_(o.state["0.weight"])``
    work as on any model.
    """

    def __init__(self, module, rule):
        self.params = dict(module.named_parameters())
        for name, p in self.params.items():
            if p.device.type != "cpu" or p.layout != torch.strided:
                raise ValueError(f"{name}: only dense CPU tensors can be viewed from numpy")
        self.model = {name: p.detach().numpy() for name, p in self.params.items()}
        self.state = opt.setup(rule, self.model)

    def zero_grad(self):
        for p in self.params.values():
            p.grad = None

    def step(self):
        grads = {name: p.grad.numpy() for name, p in self.params.items()
                 if p.grad is not None}
        self.state, model = opt.update_(self.state, self.model, grads)
        for name, x in self.model.items():          # every view was written in place
            if model[name] is not x:
                raise RuntimeError(f"{name}: the numpy view is not writable")


def make_net(seed=0, width=32, dtype=None):
    """A small regression network with a few kinds of parameters (Linear, LayerNorm)."""
    _need_torch()
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Linear(8, width), torch.nn.Tanh(),
        torch.nn.LayerNorm(width),
        torch.nn.Linear(width, width), torch.nn.Tanh(),
        torch.nn.Linear(width, 1))
    return net.to(dtype or torch.float32)


def make_data(n=256, seed=0, dtype=None):
    g = torch.Generator().manual_seed(seed + 1)
    X = torch.randn(n, 8, generator=g, dtype=dtype or torch.float32)
    y = torch.sin(X[:, :1] * 2) + X[:, 1:2] * X[:, 2:3] + 0.1 * torch.randn(n, 1, generator=g,
                                                                           dtype=X.dtype)
    return X, y


def torch_equivalents():
    """``[(label, make torch optimiser from params, optimisers rule)]``: pairs that are
    the same update (see the table in the module docstring)."""
    _need_torch()
    T = torch.optim
    return [
        ("SGD(lr=0.05)", lambda p: T.SGD(p, lr=0.05), opt.Descent(0.05)),
        ("SGD(lr=0.05, momentum=0.9)",
         lambda p: T.SGD(p, lr=0.05, momentum=0.9), opt.Momentum(0.05, 0.9)),
        ("SGD(lr=0.05, momentum=0.9, nesterov=True)",
         lambda p: T.SGD(p, lr=0.05, momentum=0.9, nesterov=True), opt.Nesterov(0.05, 0.9)),
        ("SGD(lr=0.05, momentum=0.9, weight_decay=0.01)",
         lambda p: T.SGD(p, lr=0.05, momentum=0.9, weight_decay=0.01),
         opt.OptimiserChain(opt.WeightDecay(0.01), opt.Momentum(0.05, 0.9))),
        ("Adam(lr=0.01)", lambda p: T.Adam(p, lr=0.01), opt.Adam(0.01)),
        ("Adam(lr=0.01, betas=(0.8, 0.99), eps=1e-6)",
         lambda p: T.Adam(p, lr=0.01, betas=(0.8, 0.99), eps=1e-6),
         opt.Adam(0.01, (0.8, 0.99), 1e-6)),
        ("Adam(lr=0.01, weight_decay=0.01)",
         lambda p: T.Adam(p, lr=0.01, weight_decay=0.01),
         opt.OptimiserChain(opt.WeightDecay(0.01), opt.Adam(0.01))),
        ("AdamW(lr=0.01, weight_decay=0.1)",
         lambda p: T.AdamW(p, lr=0.01, weight_decay=0.1), opt.AdamW(0.01, lambda_=0.1)),
        ("RMSprop(lr=0.001, alpha=0.9)",
         lambda p: T.RMSprop(p, lr=0.001, alpha=0.9), opt.RMSProp(0.001, 0.9)),
        ("RMSprop(lr=0.001, alpha=0.9, centered=True)",
         lambda p: T.RMSprop(p, lr=0.001, alpha=0.9, centered=True),
         opt.RMSProp(0.001, 0.9, centred=True)),
        ("RMSprop(lr=0.001, alpha=0.9, momentum=0.5)",
         lambda p: T.RMSprop(p, lr=0.001, alpha=0.9, momentum=0.5),
         opt.OptimiserChain(opt.RMSProp(1.0, 0.9), opt.Momentum(0.001, 0.5))),
        ("Adagrad(lr=0.05, eps=1e-8, initial_accumulator_value=1e-8)",
         lambda p: T.Adagrad(p, lr=0.05, eps=1e-8, initial_accumulator_value=1e-8),
         opt.AdaGrad(0.05, 1e-8)),
        ("Adadelta(lr=1.0, rho=0.9, eps=1e-6)",
         lambda p: T.Adadelta(p, lr=1.0, rho=0.9, eps=1e-6), opt.AdaDelta(0.9, 1e-6)),
        ("Rprop(lr=0.01)", lambda p: T.Rprop(p, lr=0.01),
         opt.Rprop(0.01, (0.5, 1.2), (1e-6, 50.0))),
    ]


def torch_lookalikes():
    """Pairs with the same name that are *not* the same update (for contrast)."""
    _need_torch()
    T = torch.optim
    return [
        ("Adamax(lr=0.01, eps=0.01)", lambda p: T.Adamax(p, lr=0.01, eps=0.01),
         opt.AdaMax(0.01, epsilon=0.01)),
        ("Adam(lr=0.01, amsgrad=True)", lambda p: T.Adam(p, lr=0.01, amsgrad=True),
         opt.AMSGrad(0.01)),
        ("NAdam(lr=0.01)", lambda p: T.NAdam(p, lr=0.01), opt.NAdam(0.01)),
        ("RAdam(lr=0.01)", lambda p: T.RAdam(p, lr=0.01), opt.RAdam(0.01)),
    ]


def _rel_diff(a, b):
    """max |a - b| over all parameters of two networks, divided by max |a|."""
    d = max((pa.detach() - pb.detach()).abs().max().item()
            for pa, pb in zip(a.parameters(), b.parameters()))
    return d / max(pa.detach().abs().max().item() for pa in a.parameters())


def compare(make_torch_opt, rule, *, steps=50, seed=0, batch=32, dtype=None,
            same_grads=False):
    """Train two copies of one network side by side, one with ``torch.optim``, one with
    ``rule`` through numpy views, on the same mini-batches.

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
    opt_o = TorchOptimiser(net_o, rule)
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
    a few tensors: ``optimisers`` via views, ``torch.optim.Adam`` (for-loop) and
    ``torch.optim.Adam(fused=True)``."""
    _need_torch()
    torch.manual_seed(0)
    shapes = [(n_params // 4 // 1000, 1000)] * 4
    out = {}
    for label in ("optimisers Adam", "torch Adam (for-loop)", "torch Adam (fused=True)"):
        ps = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
        for p in ps:
            p.grad = torch.randn_like(p)
        if label.startswith("optimisers"):
            model = [p.detach().numpy() for p in ps]
            grads = [p.grad.numpy() for p in ps]
            state = opt.setup(opt.Adam(1e-3), model)

            def step(state=state, model=model, grads=grads):
                opt.update_(state, model, grads)
        else:
            o = torch.optim.Adam(ps, lr=1e-3, fused="fused" in label)
            step = o.step
        step()                                                    # warm-up (state init)
        t0 = time.perf_counter()
        for _ in range(repeat):
            step()
        out[label] = (time.perf_counter() - t0) / repeat
    return out


def main(argv=None, out=sys.stdout):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=50, help="steps per comparison (default 50)")
    p.add_argument("--float64", action="store_true", help="compare in float64")
    p.add_argument("--bench", action="store_true", help="also time one Adam step")
    args = p.parse_args(argv)
    _need_torch()
    dtype = torch.float64 if args.float64 else torch.float32
    out.write(f"torch {torch.__version__}, {args.steps} steps of mini-batches of 32, "
              f"{str(dtype).replace('torch.', '')}; relative difference of the parameters "
              f"(max |a - b| / max |a| over all parameters)\n\n")
    results = {}
    width = max(len(lbl) for lbl, _, _ in torch_equivalents() + torch_lookalikes())
    out.write(f"{'torch.optim':<{width}}  optimisers rule\n{'':<{width}}  torch's loss at "
              f"the first and last step; largest relative difference over the {args.steps} "
              f"steps with the same gradients / with each copy's own gradients\n")
    for section, pairs in (("same update", torch_equivalents()),
                           ("same name, different update", torch_lookalikes())):
        out.write(f"-- {section}\n")
        for label, make, rule in pairs:
            same, _ = compare(make, rule, steps=args.steps, dtype=dtype, same_grads=True)
            own, losses = compare(make, rule, steps=args.steps, dtype=dtype)
            results[label] = {"rule": rule, "same_grads": same, "own_grads": own,
                              "losses": losses, "equivalent": section == "same update"}
            out.write(f"{label:<{width}}  {rule!r}\n{'':<{width}}  loss {losses[0]:.4f} -> "
                      f"{losses[-1]:.4f}   rel. difference {max(same):.1e} / "
                      f"{max(own):.1e}\n")
    if args.bench:
        out.write(f"\none Adam step, 4 tensors of 1M float32 parameters, "
                  f"{opt.max_threads()} OpenMP threads / torch {torch.get_num_threads()} "
                  f"threads:\n")
        for label, s in bench().items():
            out.write(f"  {label:<26} {1e3 * s:8.2f} ms\n")
    return results


if __name__ == "__main__":
    main()
