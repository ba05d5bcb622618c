"""The per-leaf engine: turns a rule and its state into one fused kernel pass.

A :class:`Program` is built for one parameter array at one step.  Each element-wise rule
adds a *stage* (its kernel kind, its hyper-parameters in the compute dtype, its state
buffers); the kernel then runs all stages tile by tile and fuses ``x -= d`` into the last.
A rule that needs the whole incoming step first (``ClipNorm``'s norm, a rule written in
Python) asks for :meth:`Program.current`, which runs the stages so far into a per-leaf
buffer.  ``AccumGrad`` before its n-th gradient calls :meth:`Program.stop`: the stages run,
but nothing is subtracted and later rules are skipped.

Float16 parameters are computed in float32: the program works on float32 copies of the
parameter and of the float16 state buffers, and rounds them back on :meth:`finish`.
"""

from __future__ import annotations

import numpy as np

from . import _kernels

__all__ = ["Program", "compute_dtype", "run_functional"]

_F16 = np.dtype(np.float16)
_F32 = np.dtype(np.float32)


def compute_dtype(dtype):
    """The dtype the kernels compute in for parameters of ``dtype``."""
    dtype = np.dtype(dtype)
    return _F32 if dtype == _F16 else dtype


class Program:
    """The step of one rule on one parameter array, as a list of kernel stages."""

    __slots__ = ("x", "dtype", "scalar", "src", "stages", "stopped", "assigned", "path",
                 "functional", "_writeback", "_leaf", "_x_orig", "_norms")

    def __init__(self, x, g, leaf=None, path=None, functional=False):
        """``x``: the parameter, C-contiguous (and writable unless ``functional``);
        ``g``: the gradient, C-contiguous, in the compute dtype or the rule's
        ``grad_dtype`` (never written)."""
        cd = compute_dtype(x.dtype)
        self.dtype = cd
        self.scalar = cd.type
        self._writeback = []
        self._x_orig = x
        self.x = x if x.dtype == cd else x.astype(cd)
        self.src = g
        self.stages = []
        self.stopped = False        # no step this time (AccumGrad not due)
        self.assigned = False       # the rule wrote x itself (MixedPrecision)
        self.path = path
        self.functional = functional
        self._leaf = leaf
        self._norms = {}

    def where(self):
        """The key path of this parameter, for error messages."""
        return str(self.path) if self.path is not None else "the parameter"

    def norm(self, p):
        """The p-norm of the step so far (see ``ClipNorm``), computed once per source."""
        from ._rules_transform import grad_norm
        d = self.current()
        n = self._norms.get(p)
        if n is None:
            n = self._norms[p] = grad_norm(d, p)
        return n

    def assign(self, value):
        """Set the parameter to ``value`` (rounded to its dtype) instead of subtracting."""
        if self.functional:
            x = self._x_orig
            d = (x.astype(value.dtype) - value).astype(x.dtype)
            self.stages = []
            self.set_source(d)
        else:
            np.copyto(self._x_orig, value, casting="unsafe")
            self.assigned = True

    # -- used by rules ---------------------------------------------------------------
    def add(self, kind, hp, *buffers):
        """Append an element-wise stage: ``kind``, scalars ``hp``, state ``buffers``."""
        self.stages.append((kind, hp, tuple(self._work(b) for b in buffers)))

    def current(self):
        """The step so far as an array (runs the pending stages into a per-leaf buffer)."""
        if self.stages:
            out = self._scratch()
            _kernels.run_program(self.stages, self.x, self.src, out, _kernels.STORE)
            self.stages = []
            self.src = out
            self._norms = {}
        return self.src

    def set_source(self, d):
        """Continue from ``d`` (the output of a rule written in Python); ``None`` stops."""
        if d is None:
            self.stopped = True
            self.src = None
            return
        d = np.asarray(d)
        if d.shape != self.x.shape:
            raise ValueError(f"a rule returned a step of shape {d.shape} for a parameter "
                             f"of shape {self.x.shape}")
        self.src = np.ascontiguousarray(d, dtype=self.dtype)
        self._norms = {}

    def stop(self):
        """No step this time: run the pending stages for their state, subtract nothing."""
        self.stopped = True

    # -- used by the engine ----------------------------------------------------------
    def finish(self):
        """Run what is pending and subtract the step from ``x`` (in place)."""
        if self.assigned:
            self._round_back(write_x=False)
            return
        if self.stages:
            mode = _kernels.SINK if self.stopped else _kernels.SUBTRACT
            _kernels.run_program(self.stages, self.x, self.src, None, mode)
        elif not self.stopped:
            np.subtract(self.x, self.src, out=self.x)
        self._round_back()

    def finish_store(self):
        """Run what is pending and return the step ``d`` (``None`` for no step)."""
        if self.stopped:
            if self.stages:
                _kernels.run_program(self.stages, self.x, self.src, None, _kernels.SINK)
            d = None
        elif self.stages:
            d = np.empty_like(self.src)
            _kernels.run_program(self.stages, self.x, self.src, d, _kernels.STORE)
        else:
            d = self.src.copy() if self.src is not None else None
        self._round_back(write_x=False)
        return d

    # -- internals ---------------------------------------------------------------------
    def _work(self, buf):
        if buf.dtype == self.dtype:
            return buf
        work = buf.astype(self.dtype)
        self._writeback.append((buf, work))
        return work

    def _round_back(self, write_x=True):
        for orig, work in self._writeback:
            np.copyto(orig, work, casting="unsafe")
        self._writeback = []
        if write_x and self.x is not self._x_orig:
            np.copyto(self._x_orig, self.x, casting="unsafe")

    def _scratch(self):
        leaf = self._leaf
        s = leaf._scratch if leaf is not None else None
        if s is None or s.dtype != self.dtype or s.shape != self.x.shape:
            s = np.empty(self.x.shape, self.dtype)
            if leaf is not None:
                leaf._scratch = s
        # s may be self.src itself (a second barrier in one chain): every stage reads
        # element i before the last one writes element i, so that aliasing is safe.
        return s


def gradient_dtype(rule, dtype):
    """The dtype a rule wants its gradient in: the compute dtype of the parameter, or
    (``MixedPrecision``) its own."""
    f = getattr(rule, "grad_dtype", None)
    return np.dtype(f(dtype)) if f is not None else compute_dtype(dtype)


def run_functional(rule, state, x, dx):
    """``apply_``: one step of ``rule`` that returns ``d`` and leaves ``x`` untouched."""
    xc = np.ascontiguousarray(x)
    g = np.ascontiguousarray(dx, dtype=gradient_dtype(rule, x.dtype))
    if g.shape != x.shape:
        raise ValueError(f"gradient of shape {g.shape} for a parameter of shape {x.shape}")
    prog = Program(xc, g, functional=True)
    state = rule._compile(state, prog)
    return state, prog.finish_store()
