"""Muon: momentum orthogonalised by a Newton-Schulz iteration, for 2-D parameters.

The step has three parts.  The momentum and its Nesterov blend are a kernel stage
(``K.MUON_MOMENTUM``) whose output the program materialises (a barrier: the iteration
needs the whole matrix); the Newton-Schulz iteration is float32 matrix products through
numpy's BLAS into a per-shape workspace; the decoupled weight decay and the shape-adjusted
learning rate are a second kernel stage (``K.MUON_APPLY``) fused with ``x -= d``.
"""

from __future__ import annotations

import math
import threading
from typing import NamedTuple

import numpy as np

from ._native import kernels as K
from ._norms import grad_norm
from ._program import Program
from ._rule import Rule, checked, decay, flag, nonneg, real
from ._rules_sgd import zeros

__all__ = ["Muon", "MuonState"]

_F32 = np.dtype(np.float32)
_ADJUSTMENTS = (None, "original", "match_rms_adamw")


class MuonState(NamedTuple):
    """Muon's state: the momentum buffer ``m``, like the parameter."""

    m: np.ndarray


def lr_ratio(adjust_lr_fn: str | None, shape: tuple[int, ...]) -> float:
    """torch's learning-rate adjustment for a matrix of ``shape`` (rows A, columns B):
    ``sqrt(max(1, A/B))`` ("original", the default) or ``0.2*sqrt(max(A, B))``
    ("match_rms_adamw", Moonshot's: the update's RMS matches AdamW's)."""
    rows, cols = shape[0], shape[1]
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    if cols == 0:  # an empty matrix: no element to scale (torch divides by 0)
        return 1.0
    return math.sqrt(max(1.0, rows / cols))


class _Workspace:
    """The float32 buffers of the iteration for one matrix shape (n, m), with k = min(n, m):
    the iterate X and the product T (n x m), the Gram matrix A and the polynomial B (k x k).
    Made once per shape and thread, reused by every step."""

    __slots__ = ("a", "b", "t", "x")

    def __init__(self, shape: tuple[int, int]) -> None:
        k = min(shape)
        self.x = np.empty(shape, _F32)
        self.t = np.empty(shape, _F32)
        self.a = np.empty((k, k), _F32)
        self.b = np.empty((k, k), _F32)


# shape -> _Workspace, one dict per thread (numpy's matrix products release the GIL, so two
# threads stepping matrices of one shape must not share buffers)
_WORKSPACES = threading.local()


def _workspace(shape: tuple[int, int]) -> _Workspace:
    cache = getattr(_WORKSPACES, "by_shape", None)
    if cache is None:
        cache = _WORKSPACES.by_shape = {}
    ws = cache.get(shape)
    if ws is None:
        ws = cache[shape] = _Workspace(shape)
    return ws


def orthogonalise(
    u: np.ndarray,
    out: np.ndarray,
    coefficients: tuple[float, float, float],
    steps: int,
    epsilon: float,
) -> np.ndarray:
    """Newton-Schulz's approximate orthogonalisation of the matrix ``u`` into ``out`` (any
    float dtype, may be ``u`` itself), computed in float32.

    With ``X = u / max(||u||_F, epsilon)`` (the norm in float64, thread-count invariant), each
    step is ``A = X X^T``, ``B = b A + c A A``, ``X = a X + B X`` on the wide orientation
    (torch transposes a tall matrix first); for a tall ``u`` the same products are taken on
    the other side (``A = X^T X``, ``X = a X + X B``, B being symmetric), so no transpose is
    ever copied.  Returns ``out``.
    """
    a, b, c = coefficients
    ws = _workspace(u.shape)
    X, T, A, B = ws.x, ws.t, ws.a, ws.b
    wide = u.shape[0] <= u.shape[1]
    # the division in float64 (u's norm is float64), rounded once to float32
    scale = np.float64(max(grad_norm(u, 2.0), epsilon))
    np.divide(u, scale, out=X, casting="same_kind")
    for i in range(steps):
        if wide:
            np.matmul(X, X.T, out=A)  # a symmetric rank-k product (syrk)
        else:
            np.matmul(X.T, X, out=A)
        np.matmul(A, A, out=B)
        np.multiply(B, np.float32(c), out=B)
        np.multiply(A, np.float32(b), out=A)
        np.add(B, A, out=B)
        if wide:
            np.matmul(B, X, out=T)
        else:
            np.matmul(X, B, out=T)
        np.multiply(X, np.float32(a), out=X)
        # the last step writes its sum straight into ``out`` (rounded once when it is wider)
        np.add(X, T, out=out if i == steps - 1 else X, casting="same_kind")
    if steps == 0:
        np.copyto(out, X, casting="same_kind")
    return out


def _check_matrix(x: np.ndarray, where: object) -> None:
    """``ValueError`` unless ``x`` is a matrix (naming ``where``)."""
    if x.ndim != 2:
        at = f" at {where}" if where is not None else ""
        raise ValueError(
            f"Muon trains 2-D parameters only; the parameter{at} has shape {x.shape}.  Use "
            f"setup(rule_for, model) with Muon for the matrices and AdamW for the rest, e.g. "
            f"rule_for = lambda path, x: opt.Muon() if x.ndim == 2 else opt.AdamW()"
        )


def _coefficient(rule: Rule, name: str, v: object) -> object:
    return real(rule, name, v, what="a finite real number")


@checked
class Muon(Rule):
    r"""Muon (Jordan et al., 2024): momentum orthogonalised by a Newton-Schulz iteration,
    with decoupled weight decay; for 2-D parameters.  The algorithm of torch 2.13's
    ``torch.optim.Muon``.

    .. math::
        m &\leftarrow m + (1-\mu)(g - m) \\
        u &= g + \mu\,(m - g) \ \ (\text{nesterov}) \quad\text{or}\quad u = m \\
        X_0 &= u / \max(\lVert u\rVert_F, \epsilon), \quad
        X_{j+1} = a X_j + (b A_j + c A_j^2) X_j,\ \ A_j = X_j X_j^{\mathsf T} \\
        x &\leftarrow x - \eta\lambda\, x - \eta\, r(A, B)\, X_k

    with :math:`k` = ``ns_steps``, the products taken on the wide side of the matrix (for an
    :math:`A \times B` matrix with :math:`A > B` on its transpose), and :math:`r(A, B) =
    \sqrt{\max(1, A/B)}` ("original") or :math:`0.2\sqrt{\max(A, B)}` ("match_rms_adamw").

    Parameters
    ----------
    eta : float, default 1e-3
        Learning rate, >= 0.
    lambda_ : float, default 0.1
        Decoupled weight decay, >= 0, multiplied by ``eta`` (not by the adjusted rate).
    mu : float, default 0.95
        Momentum, in [0, 1).
    nesterov : bool, default True
        Orthogonalise the Nesterov blend of the gradient and the momentum (else the momentum).
    ns_coefficients : (float, float, float), default (3.4445, -4.775, 2.0315)
        The quintic's coefficients :math:`(a, b, c)`.
    epsilon : float, default 1e-7
        Lower bound of the Frobenius norm that normalises :math:`u`, > 0.
    ns_steps : int, default 5
        Newton-Schulz steps, 0 to 99.
    adjust_lr_fn : {None, "original", "match_rms_adamw"}, default None
        The learning rate's adjustment by shape; ``None`` is "original".

    Notes
    -----
    State: ``MuonState(m)``.  Only 2-D parameters: ``setup`` refuses other ranks, naming the
    key path; give Muon to the matrices and AdamW to the rest with ``setup(rule_for,
    model)``.  Not defined for complex parameters (as torch's).

    The momentum and the Nesterov blend run in the kernels, in the parameter's compute
    dtype; the iteration runs in float32 through numpy's BLAS (torch's runs in bfloat16),
    into buffers made once per matrix shape and Python thread and kept for the next step
    (two float32 arrays like the matrix and two square ones of its smaller side: 256 MiB for
    a 4096 x 4096 matrix, shared by every matrix of that shape); the decay and the step are
    one more kernel pass fused with ``x -= d``.  The Frobenius norm is accumulated in float64
    in an order fixed by the data.  Measured (``tests/test_muon.py``, matrices of 24 x 64 to 256 x
    512): one step agrees with a float64 evaluation of the algorithm to 1e-6 relative in
    the Frobenius norm (3e-6 in the largest element; the tests ask 1e-4); after 10 steps
    from the same start, the displacement differs from torch 2.13's ``Muon`` (its
    bfloat16 iteration) by 1.5e-3 to 5.5e-3 relative in the Frobenius norm (the tests ask
    2e-2), bfloat16's rounding carried through the iteration.

    Examples
    --------
    >>> import numpy as np, optimisers as opt
    >>> model = {"w": np.eye(3, 4, dtype=np.float32), "b": np.zeros(3, np.float32)}
    >>> rule_for = lambda path, x: opt.Muon(0.02) if x.ndim == 2 else opt.AdamW(0.02)
    >>> st = opt.setup(rule_for, model)
    >>> grads = {"w": np.ones((3, 4), np.float32), "b": np.ones(3, np.float32)}
    >>> st, model = opt.update_(st, model, grads)
    >>> st["w"].rule
    Muon(eta=0.02, lambda_=0.1, mu=0.95, nesterov=True,
         ns_coefficients=(3.4445, -4.775, 2.0315), epsilon=1e-07, ns_steps=5,
         adjust_lr_fn=None)
    >>> bool(np.all(model["w"] < np.eye(3, 4)))
    True
    """

    eta: float = 1e-3
    lambda_: float = 0.1
    mu: float = 0.95
    nesterov: bool = True
    ns_coefficients: tuple[float, float, float] = (3.4445, -4.775, 2.0315)
    epsilon: float = 1e-7
    ns_steps: int = 5
    adjust_lr_fn: str | None = None

    state_types = (MuonState,)

    def _check(self) -> dict[str, object]:
        coef = self.ns_coefficients
        if not isinstance(coef, (tuple, list)) or len(coef) != 3:
            raise TypeError(
                f"Muon: ns_coefficients must be a tuple of 3 numbers (a, b, c), got {coef!r}"
            )
        steps = self.ns_steps
        if not isinstance(steps, (int, np.integer)) or isinstance(steps, (bool, np.bool_)):
            raise TypeError(f"Muon: ns_steps must be an integer, got {steps!r}")
        if not 0 <= steps < 100:
            raise ValueError(f"Muon: ns_steps={steps!r} is out of range, it must be in [0, 99]")
        if self.adjust_lr_fn not in _ADJUSTMENTS:
            raise ValueError(
                f"Muon: adjust_lr_fn={self.adjust_lr_fn!r} is not one of "
                f"None, 'original', 'match_rms_adamw'"
            )
        return {
            "eta": nonneg(self, "eta", self.eta),
            "lambda_": nonneg(self, "lambda_", self.lambda_),
            "mu": decay(self, "mu", self.mu),
            "nesterov": flag(self, "nesterov", self.nesterov),
            "ns_coefficients": tuple(
                _coefficient(self, f"ns_coefficients[{i}]", v) for i, v in enumerate(coef)
            ),
            "epsilon": real(self, "epsilon", self.epsilon, lo=0.0, lo_open=True, what="(0, inf]"),
            "ns_steps": int(steps),
        }

    def check_param(self, x: np.ndarray, path: object = None) -> None:
        """``TypeError`` for a complex parameter, ``ValueError`` for one that is not 2-D."""
        if x.dtype.kind == "c":
            at = f" at {path}" if path is not None else ""
            raise TypeError(f"Muon is not defined for complex parameters{at}; got dtype {x.dtype}")
        _check_matrix(x, path)

    def init(self, x: np.ndarray) -> MuonState:
        """The zero momentum buffer for ``x``."""
        return MuonState(zeros(x))

    def _precheck(self, prog: Program) -> None:
        # before anything of the step is written (a state set up for another rule's leaf)
        _check_matrix(prog.x, prog.where())

    def _compile(self, state: MuonState, prog: Program) -> MuonState:
        _check_matrix(prog.x, prog.where())
        prog.add(
            K.MUON_MOMENTUM,
            {"mu": self.mu, "omm": 1 - self.mu, "nesterov": float(self.nesterov)},
            state.m,
        )
        u = prog.current()  # the barrier: the iteration needs the whole matrix
        if u is None:  # an AccumGrad before this rule is not due
            return state
        # u is the program's own buffer: the orthogonalised matrix replaces it
        prog.set_source(orthogonalise(u, u, self.ns_coefficients, self.ns_steps, self.epsilon))
        prog.add(
            K.MUON_APPLY,
            {
                "wd": self.eta * self.lambda_,
                "lr": self.eta * lr_ratio(self.adjust_lr_fn, prog.x.shape),
            },
        )
        return state
