"""The peers of ``--compare``: torch.optim (loop, foreach, fused) and plain numpy.

Each builder takes a :class:`~.cases.Case` and returns a step callable over fresh arrays
(the same values as ours), or raises :class:`~.cases.Unavailable` saying why it cannot.
Every hyper-parameter is read from the rule the benchmark builds (``case.spec.rule()``),
so a peer computes the same step as ours.

torch
    ``torch.optim.<Rule>(params, foreach=False)`` ("torch-loop"), ``foreach=True``
    ("torch-foreach") and ``fused=True`` ("torch-fused", where torch has a fused CPU
    kernel: Adam, AdamW, SGD, Adagrad).  Gradients are set once as ``.grad``; the step is
    ``opt.step()``.  ``clipnorm+adamw`` is ``torch.nn.utils.clip_grad_norm_`` (one call
    over all the parameters, the idiomatic use: a global norm, where ClipNorm clips per
    array; the same bytes) followed by AdamW's step.  torch's threads follow the case
    (``torch.set_num_threads``).  torch is optional: ``pip install torch``.

numpy
    A careful plain-numpy step: in-place ufuncs with ``out=``, one scratch buffer, Python
    loop over the arrays.  numpy's ufuncs are single-threaded.
"""

from __future__ import annotations

import importlib
import math

import numpy as np

import optimisers as opt

from .cases import Unavailable, make_arrays

__all__ = ["builders", "availability_notes", "torch_module"]

_TORCH = None


def torch_module():
    """``torch`` if it can be imported, else ``None`` (imported once, lazily)."""
    global _TORCH
    if _TORCH is None:
        try:
            _TORCH = importlib.import_module("torch")
        except Exception:  # any failure means "absent"
            _TORCH = False
    return _TORCH or None


def availability_notes():
    """One line on what ``--compare`` can compare with on this machine."""
    torch = torch_module()
    if torch is None:
        return [
            "torch is not installed: --compare shows plain numpy only "
            "(pip install torch to add torch.optim)"
        ]
    return [
        f"torch {torch.__version__}: torch.optim with foreach=False (torch-loop), "
        f"foreach=True (torch-foreach) and fused=True (torch-fused) where it has one"
    ]


# ----------------------------------------------------------------------------------------
# torch


def _adam_kw(r):
    return dict(lr=r.eta, betas=tuple(r.beta), eps=r.epsilon)


def _adamw_kw(r):
    return dict(_adam_kw(r), weight_decay=r.lambda_)


# rule name -> (torch.optim class name, its keyword arguments from our rule ``r``); a chain
# takes the last rule's, and a leading ClipNorm is torch's clip_grad_norm_
_TORCH_RULES = {
    "descent": ("SGD", lambda r: dict(lr=r.eta)),
    "momentum": ("SGD", lambda r: dict(lr=r.eta, momentum=r.rho)),
    "nesterov": ("SGD", lambda r: dict(lr=r.eta, momentum=r.rho, nesterov=True)),
    "rmsprop": ("RMSprop", lambda r: dict(lr=r.eta, alpha=r.rho, eps=r.epsilon)),
    "adagrad": ("Adagrad", lambda r: dict(lr=r.eta, eps=r.epsilon)),
    "adadelta": ("Adadelta", lambda r: dict(lr=1.0, rho=r.rho, eps=r.epsilon)),
    "rprop": ("Rprop", lambda r: dict(lr=r.eta)),
    "adam": ("Adam", _adam_kw),
    "nadam": ("NAdam", _adam_kw),
    "radam": ("RAdam", _adam_kw),
    "adamax": ("Adamax", _adam_kw),
    "amsgrad": ("Adam", lambda r: dict(_adam_kw(r), amsgrad=True)),
    "adamw": ("AdamW", _adamw_kw),
    # torch's weight_decay adds lambda * x to the gradient first: WeightDecay -> Adam
    "weightdecay+adam": (
        "Adam",
        lambda r: dict(_adam_kw(r.opts[1]), weight_decay=r.opts[0].lambda_),
    ),
    "clipnorm+adamw": ("AdamW", lambda r: _adamw_kw(r.opts[1])),
    "clipglobalnorm+adamw": ("AdamW", lambda r: _adamw_kw(r.opts[1])),
    "adafactor": (
        "Adafactor",
        lambda r: dict(
            lr=r.eta, beta2_decay=r.beta2_decay, eps=tuple(r.epsilon), d=r.d, weight_decay=r.lambda_
        ),
    ),
}


_VARIANTS = (
    ("torch-loop", dict(foreach=False)),
    ("torch-foreach", dict(foreach=True)),
    ("torch-fused", dict(fused=True)),
)


def _torch_builder(variant, extra):
    def build(case, seed=0):
        torch = torch_module()
        rule = case.spec.rule()
        name, keywords = _TORCH_RULES[case.rule]
        kw = keywords(rule)
        clip = (
            rule.opts[0].omega if case.rule.startswith(("clipnorm+", "clipglobalnorm+")) else None
        )
        xs, gs = make_arrays(case, seed)
        params = [torch.from_numpy(x) for x in xs]
        for p, g in zip(params, gs):
            p.grad = torch.from_numpy(g)
        try:
            optim = getattr(torch.optim, name)(params, **kw, **extra)
        except (TypeError, RuntimeError, ValueError) as e:
            raise Unavailable(
                f"torch.optim.{name}({', '.join(extra)}=True) is not "
                f"available on CPU: {str(e).splitlines()[0]}"
            ) from None
        clip_norm = torch.nn.utils.clip_grad_norm_
        foreach = extra.get("foreach")
        if clip is not None:

            def step():
                clip_norm(params, clip, foreach=foreach)
                optim.step()
        else:
            step = optim.step
        return _with_params(step, xs)

    return build


def _torch_builders(case):
    if torch_module() is None:
        return []
    if case.rule not in _TORCH_RULES:
        return [("torch", _unavailable(f"torch.optim has no counterpart of {case.rule}"))]
    return [(variant, _torch_builder(variant, extra)) for variant, extra in _VARIANTS]


def _with_params(step, xs):
    """``step`` as a plain function with ``.params``: the numpy arrays it updates."""

    def run():
        step()

    run.params = xs
    return run


def _unavailable(why):
    def build(case, seed=0):
        raise Unavailable(why)

    return build


# ----------------------------------------------------------------------------------------
# numpy


def _numpy_state(case, seed, n_states):
    xs, gs = make_arrays(case, seed)
    states = [[np.zeros_like(x) for x in xs] for _ in range(n_states)]
    scratch = np.empty(max(x.size for x in xs), case.dtype)
    return xs, gs, states, [scratch[: x.size] for x in xs]


def _np_descent(case, seed=0):
    eta = case.spec.rule().eta
    xs, gs, _, ss = _numpy_state(case, seed, 0)

    def step():
        for x, g, s in zip(xs, gs, ss):
            np.multiply(g, eta, out=s)
            x -= s

    return _with_params(step, xs)


def _np_momentum(case, seed=0):
    rule = case.spec.rule()
    eta, rho = rule.eta, rule.rho
    xs, gs, (vs,), ss = _numpy_state(case, seed, 1)

    def step():  # v = rho*v + eta*g ; x -= v
        for x, g, v, s in zip(xs, gs, vs, ss):
            v *= rho
            np.multiply(g, eta, out=s)
            v += s
            x -= v

    return _with_params(step, xs)


def _np_lion(case, seed=0):
    rule = case.spec.rule()
    eta, (b1, b2) = rule.eta, rule.beta
    xs, gs, (ms,), ss = _numpy_state(case, seed, 1)
    r = (1 - b1) / b1

    def step():  # d = eta*sign(b1*m + (1-b1)*g)
        for x, g, m, s in zip(xs, gs, ms, ss):
            np.multiply(g, r, out=s)  # sign(b1*(m + g*(1-b1)/b1)), b1 > 0
            s += m
            np.sign(s, out=s)
            s *= eta
            x -= s
            m *= b2  # m = b2*m + (1-b2)*g
            np.multiply(g, 1 - b2, out=s)
            m += s

    return _with_params(step, xs)


def _np_adam(case, seed=0):
    """Adam, AdamW (coupled decay, as PyTorch) and ClipNorm or ClipGlobalNorm -> AdamW."""
    rule = case.spec.rule()
    clip, total = None, None
    if isinstance(rule, opt.OptimiserChain):  # ClipNorm -> AdamW
        clip, rule = rule.opts[0].omega, rule.opts[1]
        total = case.rule.startswith("clipglobalnorm+")
    eta, (b1, b2), eps = rule.eta, rule.beta, rule.epsilon
    lam = getattr(rule, "lambda_", 0.0)
    xs, gs, (ms, vs), ss = _numpy_state(case, seed, 2)
    t = [0]

    def step():
        t[0] += 1
        bc1, bc2 = 1 - b1 ** t[0], 1 - b2 ** t[0]
        if total:  # ClipGlobalNorm: the norm of every g
            norm_all = math.sqrt(sum(float(np.vdot(g, g)) for g in gs))
        for x, g, m, v, s in zip(xs, gs, ms, vs, ss):
            c = 1.0
            if clip is not None:  # the clip folded into the scale of g
                norm = norm_all if total else math.sqrt(float(np.vdot(g, g)))
                c = min(1.0, clip / norm) if norm > 0 else 1.0
            m *= b1
            np.multiply(g, (1 - b1) * c, out=s)
            m += s
            v *= b2
            np.multiply(g, g, out=s)
            s *= (1 - b2) * c * c
            v += s
            np.multiply(v, 1 / bc2, out=s)
            np.sqrt(s, out=s)
            s += eps
            np.divide(m, s, out=s)
            if lam:  # coupled decay: x - eta*(a + lam*x)
                x *= 1 - eta * lam
            s *= eta / bc1
            x -= s

    return _with_params(step, xs)


_NUMPY_RULES = {
    "descent": _np_descent,
    "momentum": _np_momentum,
    "lion": _np_lion,
    "adam": _np_adam,
    "adamw": _np_adam,
    "clipnorm+adamw": _np_adam,
    "clipglobalnorm+adamw": _np_adam,
}


def builders(case):
    """The peers' ``(name, builder)`` pairs for ``case``, torch first, then numpy.

    A builder returns the step; its ``params`` are the numpy arrays the step updates.

    >>> from optimisers.bench.cases import Case
    >>> dict(builders(Case("lion", "float32", 1000, 1, 1)))["numpy"]   # doctest: +ELLIPSIS
    <function _np_lion at 0x...>
    >>> step = _np_momentum(Case("momentum", "float32", 1000, 2, 1))
    >>> step(); [x.shape for x in step.params]
    [(500,), (500,)]
    """
    out = _torch_builders(case)
    if case.rule in _NUMPY_RULES:
        out.append(("numpy", _NUMPY_RULES[case.rule]))
    return out
