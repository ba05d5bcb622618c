"""The per-leaf engine: turns a rule and its state into one fused kernel pass.

A :class:`Program` is built for one parameter array at one step.  Each element-wise rule
adds a *stage*: its kernel kind, its hyper-parameters by name in float64 (the kernel rounds
each once to the dtype), its state buffers (arrays like the parameter) and, for rules with
per-step scalars, a small float64 array (``beta_t``) and an int64 counter that the kernel
reads and advances itself.
The kernel then runs all stages tile by tile and fuses ``x -= d`` into the last.

A rule that needs the whole incoming step first (a rule written in Python, a ``ClipNorm``
after other rules: its norm is that of their output) asks for :meth:`Program.current`,
which runs the stages so far into a per-leaf buffer.  A ``ClipNorm`` that comes first
needs no such barrier: its kernel stage computes the norm of the program's input itself.
``AccumGrad`` before its n-th gradient makes the kernel stop after its stage: the stages so
far run, nothing is subtracted, and later rules are skipped.

Float16 and bfloat16 parameters are computed in float32 by the kernels themselves: they
read the 16-bit parameter (and gradient, and any state buffer kept in 16 bits) tile by
tile and round each result once on store.  Their state arrays are float32 (see
:func:`state_dtype`), unless ``low_precision_state`` kept them in 16 bits.

Complex parameters run as they are: the kernels walk the real views of the parameter, the
gradient and the complex state buffers (component-wise stages unchanged; the "moments"
rules pair-aware, with REAL second-moment buffers of dtype R, see :func:`moment_dtype`).

Many leaves that share a rule and a dtype and need no barrier run through one kernel call
(``_plan.template`` records the program once; ``_kernels.Batch`` fills it per leaf).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from ._dtypes import is_low_precision
from ._native import kernels as _kernels
from ._norms import clipnorm_p, grad_norm, nonfinite_norm_error
from ._types import Array

__all__ = [
    "Program",
    "compute_dtype",
    "real_compute_dtype",
    "state_dtype",
    "moment_dtype",
    "state_full",
    "moment_zeros",
    "gradient_dtype",
    "run_functional",
]

_F32 = np.dtype(np.float32)


def compute_dtype(dtype: npt.DTypeLike) -> np.dtype[Any]:
    """The dtype the kernels compute in for parameters of ``dtype``: float32 for float16
    and bfloat16, else the dtype itself."""
    dtype = np.dtype(dtype)
    return _F32 if is_low_precision(dtype) else dtype


def real_compute_dtype(dtype: npt.DTypeLike) -> np.dtype[Any]:
    """The real dtype of hyper-parameters and per-step scalars for parameters of ``dtype``."""
    c = compute_dtype(dtype)
    return np.dtype(c.char.lower()) if c.kind == "c" else c


def state_dtype(dtype: npt.DTypeLike) -> np.dtype[Any]:
    """The dtype of the element-wise state arrays of parameters of ``dtype`` (momenta,
    first moments, accumulated steps, Rprop's steps ...): the compute dtype, so float32 for
    float16 and bfloat16 parameters (a float16 Adam ``v`` would underflow to 0 for |g|
    below about 8e-3).  ``setup(..., low_precision_state=True)`` rounds them to the
    parameter's dtype instead."""
    return compute_dtype(dtype)


def moment_dtype(dtype: npt.DTypeLike) -> np.dtype[Any]:
    """The dtype of second-moment / accumulator state arrays (Adam's ``v``, AdaGrad's
    ``acc`` ...) for parameters of ``dtype``: :func:`state_dtype`, REAL for a complex
    parameter (they hold ``|g|^2``; conventions §4)."""
    return real_compute_dtype(dtype)


def state_full(x: Array, value: float) -> Array:
    """An element-wise state array for the parameter ``x``, filled with ``value`` (C order,
    :func:`state_dtype`)."""
    return np.full(x.shape, value, state_dtype(x.dtype))


def moment_zeros(x: Array) -> Array:
    """A zero second-moment state array for the parameter ``x`` (C order, ``moment_dtype``)."""
    return np.zeros(x.shape, moment_dtype(x.dtype))


def gradient_dtype(rule: Any, dtype: npt.DTypeLike) -> np.dtype[Any]:
    """The dtype a rule wants its gradient in: the compute dtype of the parameter, or
    (``MixedPrecision``) its own."""
    f = getattr(rule, "grad_dtype", None)
    return np.dtype(f(dtype)) if f is not None else compute_dtype(dtype)


class Program:
    """The step of one rule on one parameter array, as a list of kernel stages."""

    __slots__ = (
        "x",
        "dtype",
        "src",
        "stages",
        "stopped",
        "assigned",
        "path",
        "functional",
        "_writeback",
        "_leaf",
        "_x_orig",
        "_norms",
        "_real",
        "global_scale",
    )

    #: whether this program only records its stages (the engine's batch templates)
    recording = False

    def __init__(
        self, x: Array, g: Array, leaf: Any = None, path: Any = None, functional: bool = False
    ) -> None:
        """``x``: the parameter, C-contiguous (and writable unless ``functional``);
        ``g``: the gradient, C-contiguous, in the compute dtype or the rule's
        ``grad_dtype`` (never written).  A 16-bit ``x`` is handed to the kernels as it is
        (they compute in float32 and round on store)."""
        cd = compute_dtype(x.dtype)
        self.dtype = cd
        self._real = real_compute_dtype(cd)
        self._writeback: list[tuple[Array, Array]] = []
        self._x_orig = x
        # the compute dtype, or 16-bit (the kernels take it as it is): the state checks
        # refuse anything else before a Program is made
        assert x.dtype == cd or is_low_precision(x.dtype), (x.dtype, cd)
        self.x = x
        self.src: Any = g  # the step so far: an array, None once stopped
        self.stages: list[tuple[Any, ...]] = []
        self.stopped = False  # no step this time (AccumGrad not due)
        self.assigned = False  # the rule wrote x itself (MixedPrecision)
        self.path = path
        self.functional = functional
        self._leaf = leaf
        self._norms: dict[float, float] = {}
        # a leading ClipGlobalNorm's scale for the whole step, set by the engine (_global)
        self.global_scale = None

    # -- used by rules ---------------------------------------------------------------
    def add(
        self,
        kind: int,
        hp: Mapping[str, object],
        *buffers: Array,
        sc: Array | None = None,
        ctr: Array | None = None,
    ) -> None:
        """Append an element-wise stage: kernel ``kind``, constants ``hp``, state
        ``buffers``, per-step scalars ``sc`` and step counter ``ctr``."""
        self.stages.append((kind, hp, tuple(self._work(b) for b in buffers), sc, ctr))

    def current(self) -> Array | None:
        """The step so far as an array (runs the pending stages into a per-leaf buffer),
        or ``None`` when a stage stopped the program (then later rules must not run)."""
        if self.stages:
            out = self._scratch()
            stopped = self._run(out, _kernels.STORE)
            self.stages = []
            self._norms = {}
            if stopped:
                self.stopped = True
                self.src = None
            else:
                self.src = out
        return None if self.stopped else self.src

    def norm(self, p: float) -> float | None:
        """The p-norm of the step so far (see ``ClipNorm``), computed once per source;
        ``None`` when the program stopped."""
        d = self.current()
        if d is None:
            return None
        n = self._norms.get(p)
        if n is None:
            n = self._norms[p] = grad_norm(d, p)
        return n

    def known_norm(self, p: float) -> float | None:
        """The p-norm of the next stage's input when it is already known (computed by
        :meth:`norm` for this very source, with no stage pending), else ``None``."""
        return None if self.stages else self._norms.get(p)

    def set_source(self, d: npt.ArrayLike | None) -> None:
        """Continue from ``d`` (the output of a rule written in Python); ``None`` stops."""
        self._norms = {}
        if d is None:
            self.stopped = True
            self.src = None
            return
        d = np.asarray(d)
        if d.shape != self.x.shape:
            raise ValueError(
                f"a rule returned a step of shape {d.shape} for the parameter "
                f"at {self.where()} of shape {self.x.shape}"
            )
        self.src = np.ascontiguousarray(d, dtype=self.dtype)

    def assign(self, value: Array) -> None:
        """Set the parameter to ``value`` (rounded to its dtype) instead of subtracting."""
        if self.functional:
            x = self._x_orig
            self.stages = []
            self.set_source((x.astype(value.dtype) - value).astype(x.dtype))
        else:
            np.copyto(self._x_orig, value, casting="unsafe")
            self.assigned = True

    def compute_x(self) -> Array:
        """The parameter in the compute dtype, as a rule written in Python sees it: a
        float32 copy of a 16-bit parameter (the arithmetic is float32, as in the kernels),
        else the parameter itself."""
        x = self.x
        return x if x.dtype == self.dtype else x.astype(self.dtype)

    def where(self) -> str:
        """The key path of this parameter, for error messages."""
        return str(self.path) if self.path is not None else "the parameter"

    # -- used by the engine ----------------------------------------------------------
    def finish(self) -> None:
        """Run what is pending and subtract the step from ``x`` (in place)."""
        if not self.assigned:
            if self.stages:
                self._run(None, _kernels.SUBTRACT)
            elif not self.stopped:
                np.subtract(self.x, self.src, out=self.x)
        self._round_back()

    def finish_store(self) -> Array | None:
        """Run what is pending and return the step ``d`` (``None`` for no step)."""
        d = None
        if self.stages:
            d = np.empty_like(self.src)
            if self._run(d, _kernels.STORE):
                d = None
        elif not self.stopped:
            d = self.src.copy()
        self._round_back()
        return d

    # -- internals ---------------------------------------------------------------------
    def _run(self, out: Array | None, mode: int) -> bool:
        """Run the pending stages; True when one stopped the program.  A leading
        ``ClipNorm(throw=True)`` stage that meets a non-finite norm raises (the kernel has
        written nothing then)."""
        status = _kernels.run_program(self.stages, self.x, self.src, out, mode)
        if status == _kernels.NONFINITE_NORM:
            p = clipnorm_p(self.stages[0])
            raise nonfinite_norm_error(self.where(), p, grad_norm(self.src, p))
        return status == _kernels.STOPPED

    def _work(self, buf: Array) -> Array:
        # the compute dtype, (complex parameters) its real dtype, or a 16-bit parameter's
        # own dtype (low_precision_state): the kernels take them as they are
        if buf.dtype == self.dtype or buf.dtype == self._real or buf.dtype == self.x.dtype:
            return buf
        work = buf.astype(self.dtype)
        self._writeback.append((buf, work))
        return work

    def _round_back(self) -> None:
        for orig, work in self._writeback:
            np.copyto(orig, work, casting="unsafe")
        self._writeback = []

    def _scratch(self) -> Array:
        leaf = self._leaf
        s = leaf._scratch if leaf is not None else None
        if s is None or s.dtype != self.dtype or s.shape != self.x.shape:
            s = np.empty(self.x.shape, self.dtype)
            if leaf is not None:
                leaf._scratch = s
        # s may be self.src itself (a second barrier in one chain): every stage reads
        # element i before the last one writes element i, so that aliasing is safe.
        return s


def run_functional(rule: Any, state: Any, x: Array, dx: npt.ArrayLike) -> tuple[Any, Array | None]:
    """``apply_``: one step of ``rule`` that returns ``d`` and leaves ``x`` untouched."""
    xc = np.ascontiguousarray(x)
    g = np.ascontiguousarray(dx, dtype=gradient_dtype(rule, x.dtype))
    if g.shape != x.shape:
        raise ValueError(f"gradient of shape {g.shape} for a parameter of shape {x.shape}")
    prog = Program(xc, g, functional=True)
    state = rule._compile(state, prog)
    return state, prog.finish_store()
