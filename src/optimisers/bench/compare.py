"""The peers of ``--compare``: torch.optim (loop, foreach, fused) and plain numpy.

Each builder takes a :class:`~.cases.Case` and returns a step callable over fresh arrays
(the same values as ours), or raises :class:`~.cases.Unavailable` saying why it cannot.

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

from .cases import Unavailable, make_arrays

__all__ = ["builders", "availability_notes", "torch_module"]

_TORCH = None


def torch_module():
    """``torch`` if it can be imported, else ``None`` (imported once, lazily)."""
    global _TORCH
    if _TORCH is None:
        try:
            _TORCH = importlib.import_module("torch")
        except Exception:                   # noqa: BLE001 - any failure means "absent"
            _TORCH = False
    return _TORCH or None


def availability_notes():
    """One line on what ``--compare`` can compare with on this machine."""
    torch = torch_module()
    if torch is None:
        return ["torch is not installed: --compare shows plain numpy only "
                "(pip install torch to add torch.optim)"]
    return [f"torch {torch.__version__}: torch.optim with foreach=False (torch-loop), "
            f"foreach=True (torch-foreach) and fused=True (torch-fused) where it has one"]


# ----------------------------------------------------------------------------------------
# torch

# rule name -> (torch.optim class name, keyword arguments, clip the gradient norm first)
_TORCH_RULES = {
    "descent": ("SGD", dict(lr=1e-3), False),
    "momentum": ("SGD", dict(lr=1e-3, momentum=0.9), False),
    "nesterov": ("SGD", dict(lr=1e-3, momentum=0.9, nesterov=True), False),
    "rmsprop": ("RMSprop", dict(lr=1e-3, alpha=0.9, eps=1e-8), False),
    "adagrad": ("Adagrad", dict(lr=1e-2), False),
    "adadelta": ("Adadelta", dict(lr=1.0, rho=0.9, eps=1e-8), False),
    "rprop": ("Rprop", dict(lr=1e-3), False),
    "adam": ("Adam", dict(lr=1e-3), False),
    "nadam": ("NAdam", dict(lr=1e-3), False),
    "radam": ("RAdam", dict(lr=1e-3), False),
    "adamax": ("Adamax", dict(lr=1e-3), False),
    "amsgrad": ("Adam", dict(lr=1e-3, amsgrad=True), False),
    "adamw": ("AdamW", dict(lr=1e-3, weight_decay=1e-2), False),
    "weightdecay+adam": ("Adam", dict(lr=1e-3, weight_decay=1e-4), False),
    "clipnorm+adamw": ("AdamW", dict(lr=1e-3, weight_decay=1e-2), True),
}

_VARIANTS = (("torch-loop", dict(foreach=False)), ("torch-foreach", dict(foreach=True)),
             ("torch-fused", dict(fused=True)))


def _torch_builder(variant, extra):
    def build(case, seed=0):
        torch = torch_module()
        name, kw, clip = _TORCH_RULES[case.rule]
        xs, gs = make_arrays(case, seed)
        params = [torch.from_numpy(x) for x in xs]
        for p, g in zip(params, gs):
            p.grad = torch.from_numpy(g)
        try:
            optim = getattr(torch.optim, name)(params, **kw, **extra)
        except (TypeError, RuntimeError, ValueError) as e:
            raise Unavailable(f"torch.optim.{name}({', '.join(extra)}=True) is not "
                              f"available on CPU: {str(e).splitlines()[0]}") from None
        clip_norm = torch.nn.utils.clip_grad_norm_
        foreach = extra.get("foreach")
        if clip:
            def step():
                clip_norm(params, 1.0, foreach=foreach)
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
    return xs, gs, states, [scratch[:x.size] for x in xs]


def _np_descent(case, seed=0, eta=1e-3):
    xs, gs, _, ss = _numpy_state(case, seed, 0)

    def step():
        for x, g, s in zip(xs, gs, ss):
            np.multiply(g, eta, out=s)
            x -= s
    return _with_params(step, xs)


def _np_momentum(case, seed=0, eta=1e-3, rho=0.9):
    xs, gs, (vs,), ss = _numpy_state(case, seed, 1)

    def step():                             # v = rho*v + eta*g ; x -= v
        for x, g, v, s in zip(xs, gs, vs, ss):
            v *= rho
            np.multiply(g, eta, out=s)
            v += s
            x -= v
    return _with_params(step, xs)


def _np_lion(case, seed=0, eta=1e-4, b1=0.9, b2=0.999):
    xs, gs, (ms,), ss = _numpy_state(case, seed, 1)
    r = (1 - b1) / b1

    def step():                             # d = eta*sign(b1*m + (1-b1)*g)
        for x, g, m, s in zip(xs, gs, ms, ss):
            np.multiply(g, r, out=s)        # sign(b1*(m + g*(1-b1)/b1)), b1 > 0
            s += m
            np.sign(s, out=s)
            s *= eta
            x -= s
            m *= b2                         # m = b2*m + (1-b2)*g
            np.multiply(g, 1 - b2, out=s)
            m += s
    return _with_params(step, xs)


def _np_adam(case, seed=0, eta=1e-3, b1=0.9, b2=0.999, eps=1e-8, lam=0.0, clip=None):
    xs, gs, (ms, vs), ss = _numpy_state(case, seed, 2)
    t = [0]

    def step():
        t[0] += 1
        bc1, bc2 = 1 - b1 ** t[0], 1 - b2 ** t[0]
        for x, g, m, v, s in zip(xs, gs, ms, vs, ss):
            c = 1.0
            if clip is not None:            # ClipNorm folded into the scale of g
                norm = math.sqrt(float(np.vdot(g, g)))
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
            if lam:                         # coupled decay: x - eta*(a + lam*x)
                x *= 1 - eta * lam
            s *= eta / bc1
            x -= s
    return _with_params(step, xs)


_NUMPY_RULES = {
    "descent": _np_descent,
    "momentum": _np_momentum,
    "lion": _np_lion,
    "adam": _np_adam,
    "adamw": lambda case, seed=0: _np_adam(case, seed, lam=1e-2),
    "clipnorm+adamw": lambda case, seed=0: _np_adam(case, seed, lam=1e-2, clip=1.0),
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
