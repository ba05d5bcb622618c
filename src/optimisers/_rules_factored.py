"""Adafactor and LAMB: rules whose step needs whole-array reductions first.

Adafactor needs the row and column means of g^2 and the RMS of its update; LAMB the trust
ratio of the parameter's norm to its update's.

Each step runs the reductions in the kernels (rules_factored.pxi: float64, in blocks fixed
by the data, so the result never depends on the thread count), computes the per-step
scalars here in float64, then adds one fused element-wise stage that forms the update again
(the same inline arithmetic, the same bits) and writes the state and the parameter.  The
reductions need the rule's whole input, so these rules ask their program for it
(``Program.current``): a leaf with one of them runs on the engine's general path, one
program per leaf, and inside a chain the rules before it run first into a per-leaf buffer.
The reductions write nothing, so a step that fails before the stage runs changes nothing.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from ._dtypes import is_bfloat16
from ._native import kernels as K
from ._program import Program, moment_zeros, state_dtype
from ._rule import Rule, checked, decay, nonneg, number, pair, real
from ._rules_adam import _betas
from ._rules_averaged import torch_lerp
from ._rules_sgd import zeros
from ._schedule import HyperPair, Hyperparameter

__all__ = ["Adafactor", "LAMB", "AdafactorState", "LAMBState"]


def _row_shape(shape: tuple[int, ...]) -> tuple[int, ...] | None:
    return shape[:-1] if len(shape) >= 2 else None


def _col_shape(shape: tuple[int, ...]) -> tuple[int, ...] | None:
    return shape[:-2] + shape[-1:] if len(shape) >= 2 else None


def _vector_shape(shape: tuple[int, ...]) -> tuple[int, ...] | None:
    return shape if len(shape) < 2 else None


class AdafactorState(NamedTuple):
    """Adafactor's state: ``row`` and ``col`` (the factored second moment of an array of 2
    or more dimensions, its last two n x m: shapes ``x.shape[:-1]`` and ``x.shape[:-2] +
    (m,)``; None for vectors and scalars), ``v`` (the full second moment of a vector or
    scalar; None for the others) and ``t`` (the steps taken, a 0-d int64 array)."""

    row: np.ndarray | None
    col: np.ndarray | None
    v: np.ndarray | None
    t: np.ndarray

    @staticmethod
    def _difference(a: Any, b: AdafactorState, where: str, like_x: list[Any]) -> str | None:
        """The engine's state check (``_leaf.state_difference``): ``b`` is the state of an
        empty vector; ``a`` fits when it has one of the two forms, its arrays of ``b``'s
        dtype (``v`` also of a 16-bit parameter's), shaped from the parameter's shape
        (checked later through ``like_x``)."""
        if not isinstance(a, AdafactorState):
            return f"{where} is a {type(a).__name__} where the rule keeps an AdafactorState"
        assert b.v is not None  # the state of a vector
        dtype = b.v.dtype
        if not (isinstance(a.t, np.ndarray) and a.t.shape == () and a.t.dtype == np.int64):
            return f"{where}.t is not a 0-d int64 array (the step count)"
        form = ("row", "col") if a.v is None else ("v",)
        for name in AdafactorState._fields[:3]:
            have = getattr(a, name)
            if (name in form) != isinstance(have, np.ndarray):
                return (
                    f"{where}.{name} is {type(have).__name__}: the state holds neither "
                    f"the factored form (row, col) nor the vector form (v)"
                )
            if name in form and have.dtype != dtype and (name != "v" or have.itemsize != 2):
                return f"{where}.{name} has dtype {have.dtype} where the rule keeps {dtype}"
        shapes = {"row": _row_shape, "col": _col_shape, "v": _vector_shape}
        like_x.extend((f"{where}.{name}", getattr(a, name).shape, shapes[name]) for name in form)
        return None


class LAMBState(NamedTuple):
    """LAMB's state: Adam's moments ``m`` and ``v`` and the running products ``beta_t``."""

    m: np.ndarray
    v: np.ndarray
    beta_t: np.ndarray


def _eps1_or_none(rule: Rule, name: str, v: Any) -> Any:
    return None if v is None else nonneg(rule, name, v)


def _dtype_eps(dtype: np.dtype) -> float:
    """torch.finfo(dtype).eps of the parameter's own dtype (bfloat16: 2^-7)."""
    return 2.0**-7 if is_bfloat16(dtype) else float(np.finfo(dtype).eps)


def _wide(a: np.ndarray) -> np.ndarray:
    """A state array as the reductions read it: a 16-bit one (``low_precision_state``)
    converted to float32, the compute dtype (the stage reads it the same way)."""
    return a.astype(np.float32) if a.itemsize == 2 and a.dtype.kind != "c" else a


@checked
class Adafactor(Rule):
    r"""Adafactor (Shazeer & Stern, 2018) as ``torch.optim.Adafactor`` computes it.

    With :math:`\hat\beta_{2,t} = 1 - t^{\tau}`, :math:`\rho_t = \min(\eta, 1/\sqrt t)`
    and :math:`\alpha_t = \max(\epsilon_2, \mathrm{RMS}(x))\,\rho_t`; for an array of 2
    or more dimensions (its last two, n x m; the leading ones are a batch of matrices):

    .. math::
        R &\leftarrow \hat\beta_{2,t} R + (1-\hat\beta_{2,t})\,\mathrm{mean}_j(g^2) \\
        C &\leftarrow \hat\beta_{2,t} C + (1-\hat\beta_{2,t})\,\mathrm{mean}_i(g^2) \\
        \hat V_{ij} &= \frac{R_i C_j}{\max(\mathrm{mean}_i R_i, \epsilon_1)}

    and for a vector or scalar :math:`\hat V \leftarrow \hat\beta_{2,t} \hat V +
    (1-\hat\beta_{2,t})\, g^2`; then

    .. math::
        u &= \frac{g}{\sqrt{\max(\hat V, \epsilon_1^2)}} \\
        d &= \eta\lambda\, x + \frac{\alpha_t}{\max(1, \mathrm{RMS}(u)/d)}\, u

    Parameters
    ----------
    eta : float, default 1e-2
        The largest relative step size :math:`\rho_t`, and the weight decay's scale.
    beta2_decay : float, default -0.8
        :math:`\tau`, <= 0: the second moment's decay schedule.
    epsilon : (float or None, float), default (None, 1e-3)
        :math:`\epsilon_1` (None: the machine epsilon of the parameter's dtype, as
        torch's ``finfo(dtype).eps``), the floor of the variance estimate; and
        :math:`\epsilon_2`, the floor of the parameter's RMS.
    d : float, default 1.0
        Update clipping threshold, >= 1.
    lambda_ : float, default 0.0
        Decoupled weight decay, scaled by ``eta``.

    Notes
    -----
    State: ``AdafactorState(row, col, v, t)``: for an n x m matrix n + m numbers and the
    step count (``row``, ``col``); for a vector its full ``v``.  The lerps follow
    ``torch.lerp`` (two forms, by the weight); the row and column sums of :math:`g^2`,
    the parameter's and the update's sums of squares are float64 reductions in an order
    fixed by the data.  The step is :math:`d` subtracted from :math:`x` (torch multiplies
    :math:`x` by :math:`1-\eta\lambda` first: the same in exact arithmetic).  Matches
    ``torch.optim.Adafactor`` in float64 to 1e-10 relative over 20 steps (tests).  Not
    defined for complex parameters (torch refuses them too).  Each step reads the
    gradient three times for a matrix (row and column sums; the update's and x's norms;
    the step) and twice for a vector (the norms; the step).

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> x = np.ones((2, 3))
    >>> st = opt.setup(opt.Adafactor(), x)
    >>> st.state.row.shape, st.state.col.shape, st.state.v
    ((2,), (3,), None)
    >>> st, x = opt.update_(st, x, np.full((2, 3), 0.5))
    >>> x[0]                       # alpha = max(1e-3, RMS(x)) * min(eta, 1) = 0.01
    array([0.99, 0.99, 0.99])
    """

    eta: Hyperparameter = 1e-2
    beta2_decay: Hyperparameter = -0.8
    epsilon: tuple[Hyperparameter | None, Hyperparameter] = (None, 1e-3)
    d: Hyperparameter = 1.0
    lambda_: Hyperparameter = 0.0

    state_types = (AdafactorState,)

    def _check(self) -> dict[str, Any]:
        return {
            "eta": nonneg(self, "eta", self.eta),
            "beta2_decay": real(self, "beta2_decay", self.beta2_decay, hi=0.0),
            "epsilon": pair(self, "epsilon", self.epsilon, _eps1_or_none),
            "d": real(self, "d", self.d, lo=1.0),
            "lambda_": nonneg(self, "lambda_", self.lambda_),
        }

    def check_param(self, x: np.ndarray, path: Any = None) -> None:
        """Refuse a complex ``x`` (``TypeError``), as torch does."""
        if x.dtype.kind == "c":
            where = f" at {path}" if path is not None else ""
            raise TypeError(
                f"Adafactor is not defined for complex parameters (it clamps its "
                f"variance estimate, an order on values; torch.optim.Adafactor "
                f"refuses them too){where}; got dtype {x.dtype}"
            )

    def init(self, x: np.ndarray) -> AdafactorState:
        t = np.zeros((), np.int64)
        if x.ndim >= 2:
            s = state_dtype(x.dtype)
            return AdafactorState(
                np.zeros(x.shape[:-1], s), np.zeros(x.shape[:-2] + x.shape[-1:], s), None, t
            )
        return AdafactorState(None, None, zeros(x), t)

    def _compile(self, state: AdafactorState, prog: Program) -> AdafactorState:
        g = prog.current()  # the reductions read the whole input
        if g is None:  # an AccumGrad before this rule is not due
            return state
        x = prog.compute_x()
        n = x.size
        t = int(state.t) + 1
        if n == 0:  # nothing to scale (torch's RMS would be 0/0)
            state.t[...] = t
            return state
        eta, d, lambda_ = number(self.eta), number(self.d), number(self.lambda_)
        eps1_field, eps2_field = self.epsilon
        eps1 = _dtype_eps(prog.x.dtype) if eps1_field is None else number(eps1_field)
        eps2 = number(eps2_field)
        w = float(t) ** number(self.beta2_decay)
        rho = min(eta, 1.0 / float(t) ** 0.5)
        hp = {"w": w, "eps1sq": eps1 * eps1, "decay": eta * lambda_}
        if x.ndim >= 2:
            rows, cols = x.shape[-2], x.shape[-1]
            row, col, factors = self._factors(state, g, rows, cols, w, eps1)
            xsq, usq = K.adafactor_norms(g, factors, x, w, eps1 * eps1, rows, cols)
            hp.update(rows=rows, cols=cols, n_rows=n // cols)
        else:
            assert state.v is not None  # a vector's (or scalar's) full v
            xsq, usq = K.adafactor_norms(g, _wide(state.v), x, w, eps1 * eps1)
        alpha = max(eps2, math.sqrt(xsq) / n**0.5) * rho  # RMS(x) before the step
        denom = max(1.0, math.sqrt(usq) / (n**0.5 * d))
        hp["step"] = alpha / denom
        if x.ndim >= 2:
            prog.add(K.ADAFACTOR, hp, sc=factors)
            assert state.row is not None and state.col is not None
            np.copyto(state.row, row)
            np.copyto(state.col, col)
        else:
            assert state.v is not None
            prog.add(K.ADAFACTOR_VECTOR, hp, state.v)
        state.t[...] = t
        return state

    @staticmethod
    def _factors(
        state: AdafactorState, g: np.ndarray, rows: int, cols: int, w: float, eps1: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The new row and column factors (not stored yet) and the float64 factors the
        kernels read: [rows, columns, clamped row means]."""
        assert state.row is not None and state.col is not None  # a matrix's state
        s = state.row.dtype
        rowsum = np.empty(g.size // cols)
        colsum = np.empty(g.size // rows)
        K.factored_sums(g, rows, cols, rowsum, colsum)
        row = torch_lerp(state.row, (rowsum / cols).astype(s).reshape(state.row.shape), w)
        col = torch_lerp(state.col, (colsum / rows).astype(s).reshape(state.col.shape), w)
        means = np.mean(row.astype(np.float64).reshape(-1, rows), axis=1).astype(s)
        means = np.maximum(means, s.type(eps1))
        factors = np.concatenate([row.ravel(), col.ravel(), means]).astype(np.float64)
        return row, col, factors


def _reciprocal32(b: float) -> float:
    """1/b in float64 of b rounded to float32: the float32 kernels divide by a bias
    correction b as a product with it (rules_lamb.pxi, ``_by_bias``; they use it only
    where 0 < b <= 1 in float32)."""
    b32 = float(np.float32(b))
    return 1.0 / b32 if b32 != 0 else math.inf


@checked
class LAMB(Rule):
    r"""LAMB (You et al., 2020) as ``optax.lamb`` computes it: Adam's direction with
    decoupled weight decay, scaled per array by the trust ratio.

    .. math::
        m &\leftarrow \beta_1 m + (1-\beta_1)\, g \\
        v &\leftarrow \beta_2 v + (1-\beta_2)\, g^2 \\
        u &= \frac{m/(1-\beta_1^t)}{\sqrt{v/(1-\beta_2^t)} + \epsilon} + \lambda x \\
        r &= \begin{cases} \lVert x\rVert_2 / \lVert u\rVert_2 & \text{both norms} > 0 \\
             1 & \text{otherwise} \end{cases} \\
        d &= (u\, r)\, \eta

    Parameters
    ----------
    eta : float, default 1e-3
        Learning rate.
    beta : (float, float), default (0.9, 0.999)
        Decay rates of the moments, each in [0, 1).
    epsilon : float, default 1e-6
        Added outside the square root (optax's ``eps``; its ``eps_root`` is 0).
    lambda_ : float, default 0.0
        Decoupled weight decay, added to the Adam direction before the trust ratio.

    Notes
    -----
    State: ``LAMBState(m, v, beta_t)``, as Adam's (``v`` real for a complex parameter,
    holding :math:`|g|^2`; the norms are those of the complex arrays).  Each step reads
    g, m, v and x twice: a pass that forms u and takes :math:`\lVert x\rVert^2` and
    :math:`\lVert u\rVert^2` together (float64, blocked by the data, written nowhere),
    and the fused pass that forms
    u again and writes m, v and x.  optax's ``mask`` (no decay on some arrays) is
    ``setup(rule_for, model)`` here.

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> x = np.array([3.0, 4.0])
    >>> st = opt.setup(opt.LAMB(0.1), x)
    >>> st, x = opt.update_(st, x, np.array([1.0, 1.0]))
    >>> x                          # u = (1, 1) nearly, r = 5 / sqrt(2): |d| = 0.1 r
    array([2.64644661, 3.64644661])
    """

    eta: Hyperparameter = 1e-3
    beta: HyperPair = (0.9, 0.999)
    epsilon: Hyperparameter = 1e-6
    lambda_: Hyperparameter = 0.0

    state_types = (LAMBState,)

    def _check(self) -> dict[str, Any]:
        return {
            "eta": nonneg(self, "eta", self.eta),
            "beta": pair(self, "beta", self.beta, decay),
            "epsilon": nonneg(self, "epsilon", self.epsilon),
            "lambda_": nonneg(self, "lambda_", self.lambda_),
        }

    def check_param(self, x: np.ndarray, path: Any = None) -> None:
        """Any float array, complex ones included (optax's formula is defined for them)."""

    def init(self, x: np.ndarray) -> LAMBState:
        return LAMBState(zeros(x), moment_zeros(x), _betas(self, x))

    def _compile(self, state: LAMBState, prog: Program) -> LAMBState:
        g = prog.current()  # the trust ratio needs the whole update first
        if g is None:
            return state
        x = prog.compute_x()
        b1, b2 = number(self.beta[0]), number(self.beta[1])
        bt1, bt2 = float(state.beta_t[0]), float(state.beta_t[1])
        hp = {
            "b1": b1,
            "b2": b2,
            "omb1": 1 - b1,
            "omb2": 1 - b2,
            "eps": number(self.epsilon),
            "lam": number(self.lambda_),
            "bc1": 1 - bt1,
            "bc2": 1 - bt2,
            "eta": number(self.eta),
        }
        hp["y1"], hp["y2"] = _reciprocal32(hp["bc1"]), _reciprocal32(hp["bc2"])
        xsq, usq = K.lamb_norms(g, _wide(state.m), _wide(state.v), x, hp)
        x_norm, u_norm = math.sqrt(xsq), math.sqrt(usq)
        # optax's scale_by_trust_ratio: 1 where either norm is 0 (NaN stays NaN)
        hp["ratio"] = 1.0 if x_norm == 0 or u_norm == 0 else x_norm / u_norm
        prog.add(K.LAMB, hp, state.m, state.v)
        state.beta_t[0] = bt1 * b1
        state.beta_t[1] = bt2 * b2
        return state
