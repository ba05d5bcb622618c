"""Plain-numpy reference implementation of the 23 optimisation rules (test oracle).

Written independently of the Cython kernels, straight from the formulas of
``shared/reference/optimisers_jl_spec.md`` §1.2 and the numeric conventions of
``conventions.md`` (which win where they differ, as do the departures of
``shared/API.md``).  Every element-wise formula is evaluated with the seed's
parenthesisation, one IEEE operation at a time, with numpy scalars of the compute
dtype for every hyper-parameter and derived scalar (NEP 50: no float64 creeps in).
Derived scalars are formed in float64 (Python floats) and rounded once (see below).

Public functions
----------------
``ref_init(rule, x, low_precision_state=False) -> state``
``ref_apply(rule, state, x, g) -> (new_state, d)``   (never mutates its inputs;
    ``d`` is in the compute dtype C, or ``None`` for "no step")
``ref_update(rule, state, x, g) -> (new_state, new_x)``
``ref_norm(g, p) -> float``                          (the blocked norm of conventions §7)

Rules are duck-typed: dispatch is on ``type(rule).__name__`` and the hyper-parameters
are read from the attributes named in API.md (``eta``, ``beta``, ``lambda_`` ...).

Readings chosen where the written conventions leave a choice (the kernels must match):

* dtypes: T = x.dtype; C = float32 if T is float16 or bfloat16 else T; R = real dtype
  of C; S = the dtype of element-wise state arrays: C (float32 for a 16-bit T), or T for
  a 16-bit T whose state was made with ``low_precision_state=True``; M = the dtype of
  second moments: R for a complex parameter, else S.
  Every hyper-parameter is converted with ``R.type(value)`` straight from the stored
  Python value; derived scalars (1-b1, 1-bt1, 1-b1*bt1, -(rho*rho), (1+rho)*eta,
  eta/(1-bt1), RAdam's rho_inf, rho_t and r_t ...) are computed in float64 from the
  Python values and rounded once to R (API.md, Departures: the seed forms them from
  values already rounded to the dtype).  Running products beta_t are float64 scalars,
  multiplied by the unrounded Python betas.
* float16 and bfloat16 (16-bit T): x and the gradient are loaded with an exact cast to
  float32 and everything is computed in float32; x_new is rounded to T on store.  Their
  state arrays are float32 by default (S = C): Adam's v in float16 would underflow to 0
  for |g| below about 8e-3.  With ``low_precision_state=True`` (S = T) every float32
  state array of x's shape that ``ref_init`` made is rounded to T (the initial fills,
  AdaGrad's acc = epsilon and the like, are therefore rounded twice: to float32, then to
  T); such arrays are loaded exactly and the new states rounded to T on store, the step
  using the unrounded float32 new state.  Which S a state has is read off its arrays.
  Inside an OptimiserChain the running d is passed from member to member in C
  (float32) WITHOUT rounding to T.  The AccumGrad d is the unrounded float32
  accumulator; its copy rounded to S is what the next micro-step adds to.
* initial fills (AdaGrad acc, AMSGrad m/v/vhat = epsilon, Rprop step = eta) are
  converted from the Python float straight to S (``np.full(..., dtype=S)``, a single
  correctly rounded cast from float64).
* bfloat16 is ml_dtypes' dtype; ml_dtypes' casts round to nearest even.
* sign(): numpy's ``np.sign`` semantics: sign(+-0) = +0.0, sign(NaN) = NaN (Lion,
  SignDecay, Rprop's sign(gprev_new)).
* Rprop: d = step_new * sign(gprev_new) uses the unrounded float32 step_new and
  gprev_new (= g in C where p >= 0 or NaN, +0 where p < 0); p = gprev_old * g in C.
  The three-way choice is written with ``np.where``: p > 0 -> min(step*ell2, gamma2),
  p < 0 -> max(step*ell1, gamma1), otherwise (0 or NaN) step unchanged;
  min/max are np.minimum/np.maximum (NaN propagating).
* ClipGrad: d = g where g is NaN, else (delta if g > delta else (-delta if g < -delta
  else g)), with -delta = -(R(delta)).
* RAdam: rho_inf = (2/(1-b2)) - 1; rho = rho_inf - (((2*t)*bt2) / (1-bt2)); the
  branch test is rho > 4; r = sqrt((((rho-4)*(rho-2))*rho_inf) /
  (((rho_inf-4)*(rho_inf-2))*rho)), all in float64, then r = R(r).
* AccumGrad: division g / R(n) (complex: each component divided by R(n)).
* ClipNorm: the norm is taken of the gradient AFTER its cast to C.  For complex g
  and p not in {2, 0} (p = 1, +-inf, other), |g_i| = C-library ``hypot(re, im)`` of
  the components converted to float64 (``np.hypot``; NOT ``np.abs`` of a complex
  array, whose own cabs differs from libm in the last bit for many inputs).
  Other finite p: a_i = C-library ``pow(|g_i|, p)`` in float64 and
  norm = ``pow(total, 1.0/p)`` with 1.0/p a float64 division (libm pow via
  ``math.pow``; numpy's ``np.power`` uses its own SIMD code on AVX-512 machines and
  differs from libm in the last bit).  p = 0 counts g_i != 0 (NaN counts).
  lam in float64: norm == 0 -> 1.0 (even when omega == 0), norm == +inf -> 0.0
  (even when omega == inf), NaN -> NaN, else np.minimum(omega/norm, 1.0); then
  lam = R(lam) and d = g * lam (complex: each component times lam).  ``throw`` and a
  non-finite norm raise ``ValueError`` here (the library's exception class is not
  fixed by the docs).
* float arithmetic used: + - * / and sqrt only (IEEE, identical in numpy's SIMD
  loops and in C); max/min are np.maximum/np.minimum; abs is exact.  No numpy
  transcendental (np.power, np.abs(complex)) is used anywhere.
* Complex parameters: Rprop, AdaMax, AMSGrad, ClipGrad, and also Lion and SignDecay
  (not in the supported list of the brief) raise TypeError in this reference.
* MixedPrecision: the ORIGINAL gradient is cast straight to the high dtype H (not via
  C); the inner rule is updated with ``ref_update`` on xT; new_x = xT_new.astype(T).
  If x is complex and ``rule.dtype`` is real, H is promoted to the complex dtype of
  that precision.  ``ref_apply`` on a MixedPrecision returns the seed's
  non-writable-path step d = C(T(H(x) - xT_new)); ``ref_update`` does not use it.
* ``g is None`` in ``ref_update``/``ref_apply``: no step, state unchanged.
"""

from __future__ import annotations

import math
from collections import namedtuple

import numpy as np

__all__ = [
    "RMSPropState",
    "RpropState",
    "AdamState",
    "RAdamState",
    "AdaMaxState",
    "OAdamState",
    "AdaDeltaState",
    "AMSGradState",
    "AdaBeliefState",
    "AccumGradState",
    "MixedPrecisionState",
    "SkipNonFiniteState",
    "ScheduleFreeState",
    "LookaheadState",
    "EMAState",
    "ref_averaged",
    "AdafactorState",
    "LAMBState",
    "ref_init",
    "ref_apply",
    "ref_update",
    "ref_norm",
    "ref_global_norm",
    "ref_update_tree",
    "MuonState",
    "ref_newton_schulz",
    "TorchAdamaxState",
    "TorchRAdamState",
    "TorchNAdamState",
]

# ---------------------------------------------------------------------------------------
# State layouts (conventions §8)

RMSPropState = namedtuple("RMSPropState", ["q", "l"])
RpropState = namedtuple("RpropState", ["gprev", "step"])
AdamState = namedtuple("AdamState", ["m", "v", "beta_t"])
RAdamState = namedtuple("RAdamState", ["m", "v", "beta_t", "t"])
AdaMaxState = namedtuple("AdaMaxState", ["m", "u", "beta_t"])
OAdamState = namedtuple("OAdamState", ["m", "v", "beta_t", "term"])
AdaDeltaState = namedtuple("AdaDeltaState", ["acc", "dacc"])
AMSGradState = namedtuple("AMSGradState", ["m", "v", "vhat"])
AdaBeliefState = namedtuple("AdaBeliefState", ["m", "s", "beta_t"])
AccumGradState = namedtuple("AccumGradState", ["acc", "counter"])
MixedPrecisionState = namedtuple("MixedPrecisionState", ["xT", "inner"])
SkipNonFiniteState = namedtuple("SkipNonFiniteState", ["skipped", "consecutive"])
MuonState = namedtuple("MuonState", ["m"])
ScheduleFreeState = namedtuple("ScheduleFreeState", ["z", "v", "sc", "k"])
LookaheadState = namedtuple("LookaheadState", ["slow", "since", "inner"])
EMAState = namedtuple("EMAState", ["ema", "n", "inner"])
AdafactorState = namedtuple("AdafactorState", ["row", "col", "v", "t"])
LAMBState = namedtuple("LAMBState", ["m", "v", "beta_t"])
TorchAdamaxState = namedtuple("TorchAdamaxState", ["m", "u", "t"])
TorchRAdamState = namedtuple("TorchRAdamState", ["m", "v", "t"])
TorchNAdamState = namedtuple("TorchNAdamState", ["m", "v", "t", "mu_product"])


# ---------------------------------------------------------------------------------------
# dtype context and component helpers


def _low(T):
    """float16 or bfloat16 (ml_dtypes' dtype, known by name: ml_dtypes is optional)."""
    return np.float16 == T or (T.itemsize == 2 and T.name == "bfloat16")


def _state_arrays(state):
    if isinstance(state, np.ndarray):
        return [state]
    if isinstance(state, tuple):
        return [a for s in state for a in _state_arrays(s)]
    return []


class _Ctx:
    """T (param dtype), C (compute), R (real compute), S (element-wise state), M (second-
    moment state).  ``state``: the state being updated, whose arrays tell S for a 16-bit
    T (T if any of them is of T, else float32)."""

    def __init__(self, x, state=None):
        T = np.dtype(np.asarray(x).dtype)
        if _low(T):
            C = np.dtype(np.float32)
        elif T.kind in "fc":
            C = T
        else:
            raise TypeError(f"reference: unsupported parameter dtype {T}")
        self.T = T
        self.C = C
        self.cplx = C.kind == "c"
        if np.complex64 == C:
            self.R = np.dtype(np.float32)
        elif np.complex128 == C:
            self.R = np.dtype(np.float64)
        elif C.kind == "c":
            raise TypeError(f"reference: unsupported complex dtype {C}")
        else:
            self.R = C
        self.S = C
        if _low(T) and any(a.dtype == T for a in _state_arrays(state)):
            self.S = T
        self.M = self.R if self.cplx else self.S

    def s(self, v):
        """A hyper-parameter / derived scalar as a numpy scalar of R."""
        return self.R.type(v)

    # loading: exact cast of a stored state array to the compute dtype (always a copy)
    def ld(self, a):
        return np.array(a, dtype=self.C, copy=True)

    def ldr(self, a):
        return np.array(a, dtype=self.R, copy=True)

    # storing: round to the state dtype
    def st(self, a):
        return np.array(a, dtype=self.S, copy=True)

    def stm(self, a):
        return np.array(a, dtype=self.M, copy=True)

    def split(self, a):
        """Components of a C array as R arrays: [re, im] for complex, [a] for real."""
        a = np.asarray(a)
        if self.cplx:
            return [
                np.array(a.real, dtype=self.R, copy=True),
                np.array(a.imag, dtype=self.R, copy=True),
            ]
        return [np.asarray(a, dtype=self.C)]

    def join(self, parts):
        if self.cplx:
            out = np.empty(parts[0].shape, dtype=self.C)
            out.real = parts[0]
            out.imag = parts[1]
            return out
        return np.asarray(parts[0], dtype=self.C)

    @staticmethod
    def abs2(parts):
        if len(parts) == 1:
            return parts[0] * parts[0]
        return (parts[0] * parts[0]) + (parts[1] * parts[1])

    def no_complex(self, name):
        if self.cplx:
            raise TypeError(f"reference: {name} does not support complex parameters")


def _name(rule):
    return type(rule).__name__


def _beta(k, rule):
    return k.s(rule.beta[0]), k.s(rule.beta[1])


def _one_minus_beta(k, rule):
    """(1-b1, 1-b2), formed in float64 and rounded once."""
    return k.s(1 - rule.beta[0]), k.s(1 - rule.beta[1])


def _bt(state_bt):
    """The running products (b1^t, b2^t), float64."""
    return float(state_bt[0]), float(state_bt[1])


def _next_bt(rule, bt1, bt2):
    return bt1 * rule.beta[0], bt2 * rule.beta[1]


def _bias_corrections(k, bt1, bt2):
    """(1-bt1, 1-bt2), formed in float64 and rounded once."""
    return k.s(1 - bt1), k.s(1 - bt2)


# ---------------------------------------------------------------------------------------
# init


def _ref_init(rule, x, low_state=False):
    """Initial state of ``rule`` for parameter array ``x`` (conventions §8); with
    ``low_state``, the float32 state arrays of a 16-bit x rounded to its dtype."""
    name = _name(rule)
    x = np.asarray(x)
    if name == "OptimiserChain":
        return tuple(_ref_init(r, x, low_state) for r in rule.opts)
    if name == "MixedPrecision":
        H = _high_dtype(rule, x)
        xT = np.array(x, dtype=H, copy=True)
        return MixedPrecisionState(xT, _ref_init(rule.rule, xT))
    if name in ("Lookahead", "EMA"):
        copy = np.array(x, dtype=_Ctx(x).S, copy=True)
        if low_state and _low(x.dtype):
            copy = copy.astype(x.dtype)
        make = LookaheadState if name == "Lookahead" else EMAState
        return make(copy, np.zeros((), np.int64), _ref_init(rule.rule, x, low_state))
    state = _ref_init_rule(rule, x)
    if low_state and _low(x.dtype):
        state = _round_state(state, x)
    return state


def _round_state(state, x):
    if isinstance(state, np.ndarray) and state.dtype == np.float32 and state.shape == x.shape:
        return state.astype(x.dtype)
    if isinstance(state, tuple):
        parts = [_round_state(s, x) for s in state]
        return type(state)(*parts) if hasattr(state, "_fields") else tuple(parts)
    return state


def _ref_init_rule(rule, x):
    name = _name(rule)
    k = _Ctx(x)
    S, M = k.S, k.M
    shape = x.shape
    z = lambda dt: np.zeros(shape, dtype=dt)  # noqa: E731
    if name in ("Descent", "WeightDecay", "ClipNorm", "ClipGlobalNorm"):
        return None
    if name == "SkipNonFinite":
        return SkipNonFiniteState(0, 0)
    if name in ("SignDecay", "ClipGrad"):
        k.no_complex(name)
        return None
    if name in ("Momentum", "Nesterov"):
        return z(S)
    if name == "Lion":
        k.no_complex(name)
        return z(S)
    if name == "AdaGrad":
        return np.full(shape, rule.epsilon, dtype=M)
    if name == "RMSProp":
        return RMSPropState(z(M), z(S) if rule.centred else None)
    if name == "Rprop":
        k.no_complex(name)
        return RpropState(z(S), np.full(shape, rule.eta, dtype=S))
    betas = (float(rule.beta[0]), float(rule.beta[1])) if hasattr(rule, "beta") else None
    if name in ("Adam", "NAdam", "AdamW"):
        return AdamState(z(S), z(M), betas)
    if name == "RAdam":
        return RAdamState(z(S), z(M), betas, 1)
    if name == "AdaMax":
        k.no_complex(name)
        return AdaMaxState(z(S), z(S), betas)
    if name == "OAdam":
        return OAdamState(z(S), z(M), betas, z(S))
    if name == "AdaDelta":
        return AdaDeltaState(z(M), z(M))
    if name == "AMSGrad":
        k.no_complex(name)
        e = rule.epsilon
        return AMSGradState(
            np.full(shape, e, dtype=S), np.full(shape, e, dtype=S), np.full(shape, e, dtype=S)
        )
    if name == "AdaBelief":
        return AdaBeliefState(z(S), z(M), betas)
    if name == "AccumGrad":
        return AccumGradState(z(S), 1)
    if name == "TorchAdamax":
        return TorchAdamaxState(z(S), z(S), 1)  # complex: component-wise, as torch
    if name == "TorchRAdam":
        return TorchRAdamState(z(S), z(S), 1)
    if name == "TorchNAdam":
        return TorchNAdamState(z(S), z(S), 1, np.array([1.0, 0.0]))
    if name == "Muon":
        k.no_complex(name)
        return MuonState(z(S))
    if name == "ScheduleFreeAdamW":
        return ScheduleFreeState(
            np.array(x, dtype=S, copy=True), z(M), np.array([-1.0, 0.0]), np.zeros((), np.int64)
        )
    if name == "Adafactor":
        k.no_complex(name)
        if x.ndim >= 2:  # torch: row_var (..., n, 1) and col_var (..., 1, m), squeezed
            return AdafactorState(z(S)[..., 0].copy(), z(S)[..., 0, :].copy(), None, 0)
        return AdafactorState(None, None, z(S), 0)
    if name == "LAMB":
        return LAMBState(z(S), z(M), betas)
    raise TypeError(f"reference: unknown rule {name}")


# ---------------------------------------------------------------------------------------
# the rules (each gets k, rule, state, x (dtype T), g (dtype C); returns (state, d))


def _descent(k, rule, state, x, g):
    eta = k.s(rule.eta)
    return None, k.join([gc * eta for gc in k.split(g)])


def _momentum(k, rule, state, x, g):
    eta, rho = k.s(rule.eta), k.s(rule.rho)
    vs = k.split(k.ld(state))
    vn = [(rho * vc) + (eta * gc) for vc, gc in zip(vs, k.split(g))]
    v = k.join(vn)
    return k.st(v), v


def _nesterov(k, rule, state, x, g):
    eta, rho = k.s(rule.eta), k.s(rule.rho)
    a = k.s(-(rule.rho * rule.rho))
    b = k.s((1 + rule.rho) * rule.eta)
    vs = k.split(k.ld(state))
    gs = k.split(g)
    d = [(a * vc) + (b * gc) for vc, gc in zip(vs, gs)]  # old v
    vn = [(rho * vc) - (eta * gc) for vc, gc in zip(vs, gs)]
    return k.st(k.join(vn)), k.join(d)


def _rmsprop(k, rule, state, x, g):
    eta, rho, eps = k.s(rule.eta), k.s(rule.rho), k.s(rule.epsilon)
    omr = k.s(1 - rule.rho)
    gs = k.split(g)
    q = k.ldr(state.q)
    qn = (rho * q) + (omr * k.abs2(gs))
    if rule.centred:
        ls = k.split(k.ld(state.l))
        ln = [(rho * lc) + (omr * gc) for lc, gc in zip(ls, gs)]
        den = np.sqrt(qn - k.abs2(ln)) + eps
        new_l = k.st(k.join(ln))
    else:
        den = np.sqrt(qn) + eps
        new_l = None
    d = [(gc * eta) / den for gc in gs]
    return RMSPropState(k.stm(qn), new_l), k.join(d)


def _rprop(k, rule, state, x, g):
    k.no_complex("Rprop")
    l1, l2 = k.s(rule.ell[0]), k.s(rule.ell[1])
    G1, G2 = k.s(rule.gamma[0]), k.s(rule.gamma[1])
    gp = k.ld(state.gprev)
    step = k.ld(state.step)
    p = gp * g
    up = np.minimum(step * l2, G2)
    down = np.maximum(step * l1, G1)
    step_n = np.where(p > 0, up, np.where(p < 0, down, step)).astype(k.C, copy=False)
    gp_n = np.where(p < 0, k.C.type(0), g).astype(k.C, copy=False)
    d = step_n * np.sign(gp_n)
    return RpropState(k.st(gp_n), k.st(step_n)), d


def _adam_moments(k, rule, state, g):
    b1, b2 = _beta(k, rule)
    omb1, omb2 = _one_minus_beta(k, rule)
    gs = k.split(g)
    ms = k.split(k.ld(state.m))
    mn = [(b1 * mc) + (omb1 * gc) for mc, gc in zip(ms, gs)]
    v = k.ldr(state.v)
    vn = (b2 * v) + (omb2 * k.abs2(gs))
    return b1, b2, omb1, gs, mn, vn


def _adam(k, rule, state, x, g):
    eta, eps = k.s(rule.eta), k.s(rule.epsilon)
    b1, b2, _, _, mn, vn = _adam_moments(k, rule, state, g)
    bt1, bt2 = _bt(state.beta_t)
    bc1, bc2 = _bias_corrections(k, bt1, bt2)
    den = np.sqrt(vn / bc2) + eps
    d = [((mc / bc1) / den) * eta for mc in mn]
    new = AdamState(k.st(k.join(mn)), k.stm(vn), _next_bt(rule, bt1, bt2))
    return new, k.join(d)


def _radam_rho(b2, bt2, t):
    """rho_inf and rho_t, in float64."""
    rho_inf = (2.0 / (1 - b2)) - 1.0
    rho = rho_inf - (((2.0 * t) * bt2) / (1 - bt2))
    return rho_inf, rho


def _radam(k, rule, state, x, g):
    eta, eps = k.s(rule.eta), k.s(rule.epsilon)
    b1, b2, _, _, mn, vn = _adam_moments(k, rule, state, g)
    bt1, bt2 = _bt(state.beta_t)
    t = int(state.t)
    bc1, bc2 = _bias_corrections(k, bt1, bt2)
    rho_inf, rho = _radam_rho(rule.beta[1], bt2, t)
    if rho > 4.0:
        r = k.s(
            math.sqrt(
                (((rho - 4.0) * (rho - 2.0)) * rho_inf)
                / (((rho_inf - 4.0) * (rho_inf - 2.0)) * rho)
            )
        )
        den = np.sqrt(vn / bc2) + eps
        d = [(((mc / bc1) / den) * eta) * r for mc in mn]
    else:
        d = [(mc / bc1) * eta for mc in mn]
    new = RAdamState(k.st(k.join(mn)), k.stm(vn), _next_bt(rule, bt1, bt2), t + 1)
    return new, k.join(d)


def _adamax(k, rule, state, x, g):
    k.no_complex("AdaMax")
    eps = k.s(rule.epsilon)
    b1, b2 = _beta(k, rule)
    omb1, _ = _one_minus_beta(k, rule)
    bt1, bt2 = _bt(state.beta_t)
    m = k.ld(state.m)
    u = k.ld(state.u)
    mn = (b1 * m) + (omb1 * g)
    un = np.maximum(b2 * u, np.abs(g))
    lr = k.s(rule.eta / (1 - bt1))  # eta/(1-bt1), formed in float64
    d = (lr * mn) / (un + eps)
    return AdaMaxState(k.st(mn), k.st(un), _next_bt(rule, bt1, bt2)), d


def _oadam(k, rule, state, x, g):
    eta, eps = k.s(rule.eta), k.s(rule.epsilon)
    b1, b2, _, _, mn, vn = _adam_moments(k, rule, state, g)
    bt1, bt2 = _bt(state.beta_t)
    bc1, bc2 = _bias_corrections(k, bt1, bt2)
    prev = k.split(k.ld(state.term))
    den = np.sqrt(vn / bc2) + eps
    term = [((eta * mc) / bc1) / den for mc in mn]
    two = k.s(2)
    d = [(two * tc) - pc for tc, pc in zip(term, prev)]
    new = OAdamState(k.st(k.join(mn)), k.stm(vn), _next_bt(rule, bt1, bt2), k.st(k.join(term)))
    return new, k.join(d)


def _adagrad(k, rule, state, x, g):
    eta, eps = k.s(rule.eta), k.s(rule.epsilon)
    gs = k.split(g)
    acc = k.ldr(state)
    accn = acc + k.abs2(gs)
    den = np.sqrt(accn) + eps
    d = [(gc * eta) / den for gc in gs]
    return k.stm(accn), k.join(d)


def _adadelta(k, rule, state, x, g):
    rho, eps = k.s(rule.rho), k.s(rule.epsilon)
    omr = k.s(1 - rule.rho)
    gs = k.split(g)
    acc = k.ldr(state.acc)
    dacc = k.ldr(state.dacc)
    accn = (rho * acc) + (omr * k.abs2(gs))
    num = np.sqrt(dacc + eps)  # old dacc
    den = np.sqrt(accn + eps)
    d = [(gc * num) / den for gc in gs]
    daccn = (rho * dacc) + (omr * k.abs2(d))
    return AdaDeltaState(k.stm(accn), k.stm(daccn)), k.join(d)


def _amsgrad(k, rule, state, x, g):
    k.no_complex("AMSGrad")
    eta, eps = k.s(rule.eta), k.s(rule.epsilon)
    b1, b2 = _beta(k, rule)
    omb1, omb2 = _one_minus_beta(k, rule)
    m, v, vh = k.ld(state.m), k.ld(state.v), k.ld(state.vhat)
    mn = (b1 * m) + (omb1 * g)
    vn = (b2 * v) + (omb2 * (g * g))
    vhn = np.maximum(vh, vn)
    d = (eta * mn) / (np.sqrt(vhn) + eps)
    return AMSGradState(k.st(mn), k.st(vn), k.st(vhn)), d


def _nadam(k, rule, state, x, g):
    eta, eps = k.s(rule.eta), k.s(rule.epsilon)
    b1, b2, omb1, gs, mn, vn = _adam_moments(k, rule, state, g)
    bt1, bt2 = _bt(state.beta_t)
    c1 = k.s(1 - rule.beta[0] * bt1)  # 1 - b1*bt1, formed in float64
    bc1, bc2 = _bias_corrections(k, bt1, bt2)
    num = [((b1 * mc) / c1) + ((omb1 * gc) / bc1) for mc, gc in zip(mn, gs)]
    den = np.sqrt((vn * b2) / bc2) + eps
    d = [(nc / den) * eta for nc in num]
    new = AdamState(k.st(k.join(mn)), k.stm(vn), _next_bt(rule, bt1, bt2))
    return new, k.join(d)


def _adamw(k, rule, state, x, g):
    eta, eps, lam = k.s(rule.eta), k.s(rule.epsilon), k.s(rule.lambda_)
    b1, b2, _, _, mn, vn = _adam_moments(k, rule, state, g)
    bt1, bt2 = _bt(state.beta_t)
    bc1, bc2 = _bias_corrections(k, bt1, bt2)
    den = np.sqrt(vn / bc2) + eps
    a = [(mc / bc1) / den for mc in mn]
    xs = k.split(k.ld(x))
    if rule.couple:
        d = [eta * (ac + (lam * xc)) for ac, xc in zip(a, xs)]
    else:
        d = [(eta * ac) + (lam * xc) for ac, xc in zip(a, xs)]
    new = AdamState(k.st(k.join(mn)), k.stm(vn), _next_bt(rule, bt1, bt2))
    return new, k.join(d)


def _adabelief(k, rule, state, x, g):
    eta, eps = k.s(rule.eta), k.s(rule.epsilon)
    b1, b2 = _beta(k, rule)
    omb1, omb2 = _one_minus_beta(k, rule)
    bt1, bt2 = _bt(state.beta_t)
    gs = k.split(g)
    ms = k.split(k.ld(state.m))
    mn = [(b1 * mc) + (omb1 * gc) for mc, gc in zip(ms, gs)]
    diff = [gc - mc for gc, mc in zip(gs, mn)]  # uses the new m
    s = k.ldr(state.s)
    sn = ((b2 * s) + (omb2 * k.abs2(diff))) + eps
    bc1, bc2 = _bias_corrections(k, bt1, bt2)
    den = np.sqrt(sn / bc2) + eps
    d = [((eta * mc) / bc1) / den for mc in mn]
    new = AdaBeliefState(k.st(k.join(mn)), k.stm(sn), _next_bt(rule, bt1, bt2))
    return new, k.join(d)


def _lion(k, rule, state, x, g):
    k.no_complex("Lion")
    eta = k.s(rule.eta)
    b1, b2 = _beta(k, rule)
    omb1, omb2 = _one_minus_beta(k, rule)
    m = k.ld(state)
    c = (b1 * m) + (omb1 * g)
    d = eta * np.sign(c)
    mn = (b2 * m) + (omb2 * g)
    return k.st(mn), d


def _weightdecay(k, rule, state, x, g):
    lam = k.s(rule.lambda_)
    xs = k.split(k.ld(x))
    d = [gc + (lam * xc) for gc, xc in zip(k.split(g), xs)]
    return None, k.join(d)


def _signdecay(k, rule, state, x, g):
    k.no_complex("SignDecay")
    lam = k.s(rule.lambda_)
    return None, g + (lam * np.sign(k.ld(x)))


def _clipgrad(k, rule, state, x, g):
    k.no_complex("ClipGrad")
    hi = k.s(rule.delta)
    lo = -hi
    d = np.where(np.isnan(g), g, np.where(g > hi, hi, np.where(g < lo, lo, g)))
    return None, d.astype(k.C, copy=False)


def _clipnorm_lambda(omega, nrm):
    nrm = np.float64(nrm)
    if np.isnan(nrm):
        return np.float64(np.nan)
    if nrm == 0.0:
        return np.float64(1.0)
    if np.isinf(nrm):
        return np.float64(0.0)
    with np.errstate(all="ignore"):
        ratio = np.float64(omega) / nrm
    return np.minimum(ratio, np.float64(1.0))


def _clipnorm(k, rule, state, x, g):
    nrm = _ref_norm(g, rule.p)
    if rule.throw and not np.isfinite(nrm):
        raise ValueError(f"gradient has {rule.p}-norm {nrm}, for array of shape {np.shape(g)}")
    lam = k.s(_clipnorm_lambda(rule.omega, nrm))
    return None, k.join([gc * lam for gc in k.split(g)])


# The global norm of the leaves of one update_ call (ref_update_tree sets it); a single
# array alone (apply_, or ref_update outside a tree) is clipped by its own norm.
_GLOBAL = {}


def _clipglobalnorm(k, rule, state, x, g):
    nrm = _GLOBAL.get(("norm", rule))
    if nrm is None:
        nrm = ref_global_norm([g], rule.p)
    if rule.throw and not np.isfinite(nrm):
        raise ValueError(f"global {rule.p}-norm {nrm}")
    lam = k.s(_clipnorm_lambda(rule.omega, nrm))
    return None, k.join([gc * lam for gc in k.split(g)])


def _skipnonfinite(k, rule, state, x, g):
    # ref_update_tree skips the whole step itself; alone, an array skips on its own values
    if not np.all(np.isfinite(g)):
        return SkipNonFiniteState(state.skipped + 1, state.consecutive + 1), None
    return SkipNonFiniteState(state.skipped, 0), g


def _accumgrad(k, rule, state, x, g):
    n = int(rule.n)
    nC = k.s(n)
    gs = k.split(g)
    counter = int(state.counter)
    if counter == 1:
        accn = [gc / nC for gc in gs]
    else:
        accs = k.split(k.ld(state.acc))
        accn = [ac + (gc / nC) for ac, gc in zip(accs, gs)]
    acc = k.join(accn)
    if counter == n:
        return AccumGradState(k.st(acc), 1), acc
    return AccumGradState(k.st(acc), counter + 1), None


# ---------------------------------------------------------------------------------------
# Schedule-Free AdamW, Lookahead, EMA (the rules with a second copy of the parameters)


def _lerp(k, a, b, w):
    """torch.lerp(a, b, w) with w a Python float: a + w*(b-a) when |R(w)| < 0.5, else
    b - (b-a)*(1-w), 1-w formed in R."""
    wr = k.s(w)
    if abs(wr) < 0.5:
        return a + (wr * (b - a))
    return b - ((b - a) * (k.R.type(1) - wr))


def _schedulefree(k, rule, state, x, g):
    # the package's scalars, in Python floats (float64), with k = steps taken; a complex
    # parameter keeps a real v of |g|^2 and steps each component of y and z alike
    b1, b2 = rule.beta
    t = int(state.k)
    sched = (t + 1) / rule.warmup_steps if t < rule.warmup_steps else 1.0
    lr = rule.eta * sched
    lr_max = max(lr, float(state.sc[0]))
    weight = ((t + 1) ** rule.r) * (lr_max**rule.weight_lr_power)
    wsum = float(state.sc[1]) + weight
    ckp1 = weight / wsum if wsum != 0 else 0.0
    ay = lr * (b1 * (1 - ckp1) - 1)
    bc2 = k.s(1 - b2 ** (t + 1))
    gs = k.split(g)
    v = (k.ldr(state.v) * k.s(b2)) + (k.s(1 - b2) * k.abs2(gs))
    den = np.sqrt(v / bc2) + k.s(rule.epsilon)
    zs, ds = [], []
    for gc, yc, zc in zip(gs, k.split(k.ld(x)), k.split(k.ld(state.z))):
        u = gc / den
        if rule.lambda_ != 0:
            u = u + (k.s(rule.lambda_) * yc)
        yn = _lerp(k, yc, zc, ckp1) + (k.s(ay) * u)
        zs.append(zc - (k.s(lr) * u))
        ds.append(yc - yn)
    new = ScheduleFreeState(
        k.st(k.join(zs)), k.stm(v), np.array([lr_max, wsum]), np.array(t + 1, np.int64)
    )
    return new, k.join(ds)


# whether the step runs as the functional apply_ does (ref_apply; not inside MixedPrecision,
# whose inner rule steps its master copy in place)
_STORE_MODE = [False]


class _Placed(np.ndarray):
    """A step ``d = C(x) - x_new`` that carries ``x_new`` itself: the library sets the
    parameter to ``x_new`` (Lookahead's synchronisation), where ``x - d`` would round."""

    x_new = None


def _averaging(rule, state, x, g):
    """Lookahead and EMA: the inner rule's step, then the slow / average copy from the new
    parameter ``xn = C(x) - d`` (unrounded: the kernels work on it in the same tile)."""
    inner, d = _ref_apply(rule.rule, state.inner, x, g)
    if d is None:
        return state._replace(inner=inner), None
    k = _Ctx(x, state)
    xc = k.ld(x)
    # the functional apply_ (mode STORE) has only the step: an inner synchronisation's
    # x_new comes back as x - (x - x_new), rounded
    exact = isinstance(d, _Placed) and not _STORE_MODE[0]
    xn = d.x_new if exact else xc - np.asarray(d, dtype=k.C)
    copy = k.ld(state[0])
    count = int(state[1])
    if _name(rule) == "EMA":
        ema = xn if count == 0 else _lerp(k, copy, xn, 1 - rule.decay)
        new = EMAState(k.st(ema), np.array(count + 1, np.int64), inner)
        return new, d
    if count < rule.k - 1:
        return LookaheadState(state.slow, np.array(count + 1, np.int64), inner), d
    slow = copy + (k.s(rule.alpha) * (xn - copy))
    placed = np.asarray(xc - slow).view(_Placed)
    placed.x_new = slow
    return LookaheadState(k.st(slow), np.zeros((), np.int64), inner), placed


def ref_averaged(rule, state, x):
    """The copy ``optimisers.averaged`` gives for the parameter ``x`` (dtype T), or a copy
    of ``x`` for a rule that keeps none."""
    name = _name(rule)
    x = np.asarray(x)
    found = None
    if name == "OptimiserChain":
        for r, s in zip(rule.opts, state):
            got = ref_averaged(r, s, x)
            found = got if got is not None and _keeps_copy(r) else found
        return found if found is not None else x.copy()
    if name == "MixedPrecision":
        return np.array(ref_averaged(rule.rule, state.inner, state.xT), dtype=x.dtype)
    if name in ("Lookahead", "EMA"):
        return np.array(state[0], dtype=x.dtype)
    if name == "ScheduleFreeAdamW":
        k = _Ctx(x)
        w = 1 - 1 / rule.beta[0]
        parts = [_lerp(k, yc, zc, w) for yc, zc in zip(k.split(k.ld(x)), k.split(k.ld(state.z)))]
        return np.array(k.join(parts), dtype=x.dtype)
    return x.copy()


def _keeps_copy(rule):
    name = _name(rule)
    if name == "OptimiserChain":
        return any(_keeps_copy(r) for r in rule.opts)
    if name == "MixedPrecision":
        return _keeps_copy(rule.rule)
    return name in ("Lookahead", "EMA", "ScheduleFreeAdamW")


# Adafactor (torch.optim.Adafactor's _single_tensor_adafactor) and LAMB (optax.lamb).
# Their whole-array sums are float64 in a fixed order: the blocked sum of conventions §7
# (``_blocked_sum``) for |x|^2 and |u|^2; for Adafactor's row and column sums of g^2, a
# column's sum adds the rows in order, and a row's sum is taken over chunks of
# _FACTOR_CHUNK columns, each chunk in _LANES interleaved lanes combined left to right,
# the chunks added left to right.

_FACTOR_CHUNK = 512


def _factored_sums(g, rows, cols):
    """(row sums (B, n), column sums (B, m)) of g^2 in float64, g as B matrices n x m."""
    a = np.asarray(g, dtype=np.float64).reshape(-1, rows, cols)
    a = a * a
    colsum = np.zeros((a.shape[0], cols))
    for i in range(rows):
        colsum = colsum + a[:, i, :]
    rowsum = np.zeros(a.shape[:2])
    for c0 in range(0, cols, _FACTOR_CHUNK):
        blk = a[:, :, c0 : c0 + _FACTOR_CHUNK]
        lanes = np.zeros(blk.shape[:2] + (_LANES,))
        for j in range(blk.shape[2]):
            lanes[..., j % _LANES] = lanes[..., j % _LANES] + blk[..., j]
        part = lanes[..., 0].copy()
        for lane in range(1, _LANES):
            part = part + lanes[..., lane]
        rowsum = rowsum + part
    return rowsum, colsum


def _torch_lerp(k, a, b, w):
    """torch.lerp(a, b, w): a + w (b - a) for |w| < 0.5, else b - (b - a) (1 - w), with w
    and 1 - w in R."""
    ws = k.s(w)
    if abs(ws) < 0.5:
        return a + ws * (b - a)
    return b - (b - a) * (k.s(1) - ws)


def _sum_squares(a):
    """The blocked float64 sum of |a_i|^2 (re*re + im*im for a complex a)."""
    a = np.asarray(a).ravel()
    if a.dtype.kind == "c":
        z = a.astype(np.complex128)
        return float(_blocked_sum(z.real * z.real + z.imag * z.imag, a.size))
    a = a.astype(np.float64)
    return float(_blocked_sum(a * a, a.size))


def _adafactor(k, rule, state, x, g):
    k.no_complex("Adafactor")
    xc = k.ld(x)
    n = xc.size
    t = int(state.t) + 1
    if n == 0:
        return state._replace(t=t), np.zeros_like(g)
    eps1, eps2 = rule.epsilon
    if eps1 is None:  # torch.finfo(param.dtype).eps
        eps1 = 2.0**-7 if k.T.name == "bfloat16" else float(np.finfo(k.T).eps)
    w = float(t) ** rule.beta2_decay
    rho = min(rule.eta, 1.0 / float(t) ** 0.5)
    alpha = max(eps2, math.sqrt(_sum_squares(xc)) / n**0.5) * rho
    floor = k.s(eps1 * eps1)
    if x.ndim >= 2:
        rows, cols = x.shape[-2], x.shape[-1]
        rowsum, colsum = _factored_sums(g, rows, cols)
        row = _torch_lerp(k, k.ld(state.row).reshape(-1, rows), (rowsum / cols).astype(k.R), w)
        col = _torch_lerp(k, k.ld(state.col).reshape(-1, cols), (colsum / rows).astype(k.R), w)
        # torch: row_var.mean(dim=-2).clamp_(min=eps1); the mean of the R values in float64
        means = np.maximum(np.mean(row.astype(np.float64), axis=1).astype(k.R), k.s(eps1))
        est = (row[:, :, None] * col[:, None, :]) / means[:, None, None]
        u = ((k.s(1) / np.sqrt(np.maximum(est, floor))) * g.reshape(est.shape)).reshape(x.shape)
        new = AdafactorState(
            k.st(row.reshape(state.row.shape)), k.st(col.reshape(state.col.shape)), None, t
        )
    else:
        v = _torch_lerp(k, k.ld(state.v), g * g, w)
        u = (k.s(1) / np.sqrt(np.maximum(v, floor))) * g
        new = AdafactorState(None, None, k.st(v), t)
    denom = max(1.0, math.sqrt(_sum_squares(u)) / (n**0.5 * rule.d))
    d = (k.s(rule.eta * rule.lambda_) * xc) + (k.s(alpha / denom) * u)
    return new, d


def _lamb(k, rule, state, x, g):
    # complex: m each component, v real (|g|^2), the norms those of the complex arrays
    eta, eps, lam = k.s(rule.eta), k.s(rule.epsilon), k.s(rule.lambda_)
    b1, b2 = _beta(k, rule)
    omb1, omb2 = _one_minus_beta(k, rule)
    bt1, bt2 = _bt(state.beta_t)
    bc1, bc2 = _bias_corrections(k, bt1, bt2)
    gs = k.split(g)
    mn = [(b1 * mc) + (omb1 * gc) for mc, gc in zip(k.split(k.ld(state.m)), gs)]
    vn = (b2 * k.ldr(state.v)) + (omb2 * k.abs2(gs))
    den = np.sqrt(vn / bc2) + eps
    xc = k.ld(x)
    u = k.join([((mc / bc1) / den) + (lam * xs) for mc, xs in zip(mn, k.split(xc))])
    x_norm, u_norm = math.sqrt(_sum_squares(xc)), math.sqrt(_sum_squares(u))
    ratio = 1.0 if x_norm == 0 or u_norm == 0 else x_norm / u_norm
    d = k.join([(uc * k.s(ratio)) * eta for uc in k.split(u)])
    return LAMBState(k.st(k.join(mn)), k.stm(vn), _next_bt(rule, bt1, bt2)), d


# ---------------------------------------------------------------------------------------
# torch.optim's Adamax, RAdam and NAdam (single-tensor algorithms, torch 2.13's
# torch/optim/adamax.py, radam.py, nadam.py), component by component for a complex
# parameter (torch steps its real view).  Per-step scalars in float64 from t with `**`,
# as torch forms them from the step count; each tensor operation one IEEE operation in
# the dtype, in torch's order: lerp for the first moment, addcmul's (value*g)*g,
# addcdiv's (value*a)/b, `scalar / tensor` as reciprocal(tensor)*scalar.


def _torch_moments(k, rule, state, g, second):
    """The new first moments (lerp) and second moments of each component: second is
    "max" (Adamax: max(b2*u, |g| + eps)) or "square" (b2*v + ((1-b2)*g)*g)."""
    b2 = k.s(rule.beta[1])
    gs = k.split(g)
    mn = [_lerp(k, mc, gc, 1 - rule.beta[0]) for mc, gc in zip(k.split(k.ld(state[0])), gs)]
    if second == "max":
        eps = k.s(rule.epsilon)
        sn = [np.maximum(b2 * uc, np.abs(gc) + eps) for uc, gc in zip(k.split(k.ld(state[1])), gs)]
    else:
        omb2 = k.s(1 - rule.beta[1])
        sn = [(b2 * vc) + ((omb2 * gc) * gc) for vc, gc in zip(k.split(k.ld(state[1])), gs)]
    return gs, mn, sn


def _torch_adamax(k, rule, state, x, g):
    t = int(state.t)
    _, mn, un = _torch_moments(k, rule, state, g, "max")
    clr = k.s(rule.eta / (1 - rule.beta[0] ** t))
    d = [(clr * mc) / uc for mc, uc in zip(mn, un)]
    return TorchAdamaxState(k.st(k.join(mn)), k.st(k.join(un)), t + 1), k.join(d)


def _torch_radam(k, rule, state, x, g):
    b1, b2 = rule.beta
    t = int(state.t)
    _, mn, vn = _torch_moments(k, rule, state, g, "square")
    bc1, bc2 = 1 - b1**t, 1 - b2**t
    rho_inf = 2 / (1 - b2) - 1
    rho = rho_inf - 2 * t * (b2**t) / bc2
    eta, eps = k.s(rule.eta), k.s(rule.epsilon)
    d = [(mc / k.s(bc1)) * eta for mc in mn]
    if rho > 5.0:
        r = k.s(((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho)) ** 0.5)
        one, sqrt_bc2 = k.s(1), k.s(bc2**0.5)
        d = [(dc * ((one / (np.sqrt(vc) + eps)) * sqrt_bc2)) * r for dc, vc in zip(d, vn)]
    return TorchRAdamState(k.st(k.join(mn)), k.st(k.join(vn)), t + 1), k.join(d)


def _torch_nadam(k, rule, state, x, g):
    b1, b2 = rule.beta
    t = int(state.t)
    gs, mn, vn = _torch_moments(k, rule, state, g, "square")
    mu = b1 * (1.0 - 0.5 * (0.96 ** (t * rule.momentum_decay)))
    mu_next = b1 * (1.0 - 0.5 * (0.96 ** ((t + 1) * rule.momentum_decay)))
    prod = float(state.mu_product[0]) * mu
    cg = k.s(rule.eta * (1.0 - mu) / (1.0 - prod))
    cm = k.s(rule.eta * mu_next / (1.0 - prod * mu_next))
    bc2, eps = k.s(1 - b2**t), k.s(rule.epsilon)
    den = [np.sqrt(vc / bc2) + eps for vc in vn]
    d = [((cg * gc) / dc) + ((cm * mc) / dc) for gc, mc, dc in zip(gs, mn, den)]
    new = TorchNAdamState(k.st(k.join(mn)), k.st(k.join(vn)), t + 1, np.array([prod, 0.0]))
    return new, k.join(d)


_APPLY = {
    "Descent": _descent,
    "Momentum": _momentum,
    "Nesterov": _nesterov,
    "RMSProp": _rmsprop,
    "Rprop": _rprop,
    "Adam": _adam,
    "RAdam": _radam,
    "AdaMax": _adamax,
    "OAdam": _oadam,
    "AdaGrad": _adagrad,
    "AdaDelta": _adadelta,
    "AMSGrad": _amsgrad,
    "NAdam": _nadam,
    "AdamW": _adamw,
    "AdaBelief": _adabelief,
    "Lion": _lion,
    "WeightDecay": _weightdecay,
    "SignDecay": _signdecay,
    "ClipGrad": _clipgrad,
    "ClipNorm": _clipnorm,
    "AccumGrad": _accumgrad,
    "ClipGlobalNorm": _clipglobalnorm,
    "SkipNonFinite": _skipnonfinite,
    "ScheduleFreeAdamW": _schedulefree,
    "Adafactor": _adafactor,
    "LAMB": _lamb,
    "TorchAdamax": _torch_adamax,
    "TorchRAdam": _torch_radam,
    "TorchNAdam": _torch_nadam,
}


# ---------------------------------------------------------------------------------------
# MixedPrecision helpers


def _high_dtype(rule, x):
    H = np.dtype(rule.dtype)
    if np.asarray(x).dtype.kind == "c" and H.kind != "c":
        H = np.promote_types(H, np.complex64)
    return H


def _mixed_update(rule, state, x, g):
    """(new_state, xT_new) for a MixedPrecision rule."""
    H = np.asarray(state.xT).dtype
    gH = np.array(g, dtype=H, copy=True)
    store, _STORE_MODE[0] = _STORE_MODE[0], False
    try:
        inner, xT_new = _ref_update(rule.rule, state.inner, state.xT, gH)
    finally:
        _STORE_MODE[0] = store
    return MixedPrecisionState(xT_new, inner), xT_new


# ---------------------------------------------------------------------------------------
# public entry points


def _ref_apply_quiet(rule, state, x, g):
    """``(new_state, d)``; d in the compute dtype C, or None for "no step".

    Never mutates ``state``, ``x`` or ``g``.  Floating-point warnings are silenced
    (IEEE results are unaffected).
    """
    with np.errstate(all="ignore"):
        return _ref_apply(rule, state, x, g)


def _ref_apply(rule, state, x, g):
    name = _name(rule)
    x = np.asarray(x)
    if g is None:
        return state, None
    if name == "MixedPrecision":
        new_state, xT_new = _mixed_update(rule, state, x, g)
        k = _Ctx(x)
        H = xT_new.dtype
        d = np.array(np.array(x, dtype=H) - xT_new, dtype=k.T).astype(k.C)
        return new_state, d
    if name == "OptimiserChain":
        k = _Ctx(x)
        d = np.array(g, dtype=k.C, copy=True)
        new_states = []
        for r, s in zip(rule.opts, state):
            if d is None:
                new_states.append(s)
            else:
                s2, d = _ref_apply(r, s, x, d)
                new_states.append(s2)
        return tuple(new_states), d
    if name in ("Lookahead", "EMA"):
        return _averaging(rule, state, x, g)
    fn = _APPLY.get(name)
    if fn is None:
        raise TypeError(f"reference: unknown rule {name}")
    k = _Ctx(x, state)
    gC = np.array(g, dtype=k.C, copy=True)
    return fn(k, rule, state, x, gC)


def ref_update(rule, state, x, g):
    """``(new_state, new_x)`` with new_x = T(C(x) - d); x unchanged (a copy) if d is None.
    States in the library's layout (see the end of this file)."""
    with np.errstate(all="ignore"):
        new_state, new_x = _ref_update(rule, _internal_layout(state), x, g)
    return _library_layout(new_state), new_x


def _ref_update(rule, state, x, g):
    x = np.asarray(x)
    if g is None:
        return state, x.copy()
    if _name(rule) == "MixedPrecision":
        new_state, xT_new = _mixed_update(rule, state, x, g)
        return new_state, np.array(xT_new, dtype=x.dtype, copy=True)
    k = _Ctx(x)
    gC = np.array(g, dtype=k.C, copy=True)
    new_state, d = _ref_apply(rule, state, x, gC)
    if d is None:
        return new_state, x.copy()
    if isinstance(d, _Placed):  # the parameter is set, not stepped
        return new_state, np.array(d.x_new, dtype=k.T)
    new_x = np.array(k.ld(x) - np.asarray(d, dtype=k.C), dtype=k.T)
    return new_state, new_x


# ---------------------------------------------------------------------------------------
# the blocked norm (conventions §7)

_BLOCK = 8192
_LANES = 8


def _libm_pow(a, b):
    """C-library pow(a, b) for a >= 0 (or NaN): ``math.pow`` calls libm's pow, but raises
    where C returns an IEEE special value; map those back.  (np.power is NOT used: numpy
    dispatches float64 power to its own SIMD/SVML code, which differs from libm pow in the
    last bit for a few percent of inputs on AVX-512 machines.)"""
    try:
        return math.pow(a, b)
    except OverflowError:
        return math.inf
    except ValueError:  # pow(+-0, b < 0) -> +inf (a >= 0 here)
        return math.inf


_pow_ufunc = np.frompyfunc(_libm_pow, 2, 1)


def _pow_vec(a, b):
    with np.errstate(all="ignore"):
        return np.asarray(_pow_ufunc(np.asarray(a, dtype=np.float64), float(b)), dtype=np.float64)


def ref_norm(g, p):
    """p-norm of g, accumulated in float64 with the fixed blocking of conventions §7."""
    with np.errstate(all="ignore"):
        return _ref_norm(g, p)


def _ref_norm(g, p):
    a = np.asarray(g).ravel(order="C")
    p = float(p)
    n = a.size
    if n == 0:
        return 0.0
    cplx = a.dtype.kind == "c"
    if cplx:
        z = a.astype(np.complex128)
        re, im = z.real, z.imag
    else:
        re = a.astype(np.float64)
    if p == 2.0:
        vals = (re * re + im * im) if cplx else re * re
    elif p == 0.0:
        vals = (a != 0).astype(np.float64)
    else:
        # complex |g_i|: libm hypot(re, im) in float64 (np.hypot calls it; np.abs of a
        # complex array does NOT -- numpy has its own cabs, which differs in the last bit)
        absv = np.hypot(re, im) if cplx else np.abs(re)
        if p == np.inf:
            return float(np.max(absv))
        if p == -np.inf:
            return float(np.min(absv))
        if p == 1.0:
            vals = absv
        else:
            vals = _pow_vec(absv, p)
    total = _blocked_sum(vals, n)
    with np.errstate(all="ignore"):
        if p == 2.0:
            return float(np.sqrt(total))
        if p == 1.0 or p == 0.0:
            return float(total)
        return _libm_pow(float(total), 1.0 / p)


def _blocked_sum(vals, n):
    vals = np.asarray(vals, dtype=np.float64)
    nblocks = -(-n // _BLOCK)
    padded = np.zeros(nblocks * _BLOCK, dtype=np.float64)
    padded[:n] = vals  # zero padding: x + 0.0 == x for the non-negative partial sums
    lanes = np.cumsum(padded.reshape(nblocks, _BLOCK // _LANES, _LANES), axis=1)[:, -1, :]
    part = lanes[:, 0].copy()
    for lane in range(1, _LANES):
        part = part + lanes[:, lane]
    total = np.float64(0.0)
    for b in range(nblocks):
        total = total + part[b]
    return total


def ref_global_norm(grads, p):
    """The p-norm of many arrays together (conventions §7 extended): each array's blocked
    float64 sum of |g|^p (or max/min), the arrays' sums added exactly rounded (fsum), then
    finished as one norm."""
    p = float(p)
    parts, n = [], 0
    with np.errstate(all="ignore"):
        for g in grads:
            a = np.asarray(g).ravel(order="C")
            if a.size == 0:
                continue
            n += a.size
            if a.dtype.kind == "c":
                z = a.astype(np.complex128)
                mag2 = z.real * z.real + z.imag * z.imag
                absv = np.hypot(z.real, z.imag)
                nonzero = (z.real != 0) | (z.imag != 0)
            else:
                r = a.astype(np.float64)
                mag2, absv, nonzero = r * r, np.abs(r), r != 0
            if p in (np.inf, -np.inf):
                parts.append(float(np.max(absv) if p > 0 else np.min(absv)))
            elif p == 2.0:
                parts.append(float(_blocked_sum(mag2, a.size)))
            elif p == 0.0:
                parts.append(float(_blocked_sum(nonzero.astype(np.float64), a.size)))
            elif p == 1.0:
                parts.append(float(_blocked_sum(absv, a.size)))
            else:
                parts.append(float(_blocked_sum(_pow_vec(absv, p), a.size)))
        if n == 0:
            return 0.0
        if p in (np.inf, -np.inf):
            return (
                math.nan
                if any(math.isnan(t) for t in parts)
                else (max(parts) if p > 0 else min(parts))
            )
        try:
            total = math.fsum(parts)
        except OverflowError:
            total = math.inf
        if p == 2.0:
            return math.sqrt(total) if total == total else total
        if p in (0.0, 1.0):
            return total
        return _libm_pow(total, 1.0 / p)


def _leading(rule):
    """The leading ClipGlobalNorm / SkipNonFinite of a rule, as (skip, clip or None)."""
    while True:
        name = _name(rule)
        if name == "MixedPrecision":
            rule = rule.rule
        elif name == "OptimiserChain" and rule.opts:
            if _name(rule.opts[0]) == "SkipNonFinite":
                nxt = _leading(rule.opts[1])[1] if len(rule.opts) > 1 else None
                return rule.opts[0], nxt
            rule = rule.opts[0]
        elif name == "SkipNonFinite":
            return rule, None
        elif name == "ClipGlobalNorm":
            return None, rule
        else:
            return None, None


def _skip_state_path(rule):
    """The indices that lead from a leaf's state to its SkipNonFinite state."""
    path = []
    while _name(rule) != "SkipNonFinite":
        if _name(rule) == "MixedPrecision":
            path.append("inner")
            rule = rule.rule
        else:
            path.append(0)
            rule = rule.opts[0]
    return path


def _grad_in(rule, x, g):
    """The gradient as the rule's leading stage sees it (cast to C, or MixedPrecision's
    high dtype)."""
    if _name(rule) == "MixedPrecision":
        return np.asarray(g, dtype=_high_dtype(rule, x))
    return np.asarray(g, dtype=_Ctx(x).C)


def ref_update_tree(rule, states, xs, grads):
    """``ref_update`` of every leaf of one update_ call (dicts key -> state/x/gradient, one
    rule): a leading SkipNonFinite skips the whole step when any gradient is not finite (only
    its counts advance), a leading ClipGlobalNorm clips by the norm of all the gradients."""
    skip, clip = _leading(rule)
    gs = {k: _grad_in(rule, xs[k], grads[k]) for k in xs if grads.get(k) is not None}
    if skip is not None and not all(np.all(np.isfinite(g)) for g in gs.values()):
        if skip.max_consecutive is not None:
            for k in gs:
                assert _dig(states[k], _skip_state_path(rule)).consecutive < skip.max_consecutive
        out = {}
        for k in xs:
            s = states[k]
            if k in gs:
                s = _bump(s, _skip_state_path(rule))
            out[k] = (s, xs[k].copy())
        return out
    if clip is not None:
        _GLOBAL[("norm", clip)] = ref_global_norm(list(gs.values()), clip.p)
    try:
        return {k: ref_update(rule, states[k], xs[k], grads.get(k)) for k in xs}
    finally:
        _GLOBAL.clear()


def _dig(state, path):
    for i in path:
        state = getattr(state, i) if isinstance(i, str) else state[i]
    return state


def _bump(state, path):
    if not path:
        return SkipNonFiniteState(
            np.array(int(state.skipped) + 1, np.int64),
            np.array(int(state.consecutive) + 1, np.int64),
        )
    i, rest = path[0], path[1:]
    if isinstance(i, str):
        return state._replace(**{i: _bump(getattr(state, i), rest)})
    return tuple(_bump(s, rest) if j == i else s for j, s in enumerate(state))


# ---------------------------------------------------------------------------------------
# The library keeps its per-step scalars in small arrays that its kernels advance in place
# (beta_t: a 2-element float64 array; RAdam's t and AccumGrad's counter:
# 0-d int64 arrays).  The formulas above work on plain scalars; these wrappers present the
# states in the library's layout, so states can be compared field by field.


def _internal_layout(state):
    if isinstance(state, tuple) and hasattr(state, "_fields"):
        d = state._asdict()
        if "beta_t" in d and isinstance(d["beta_t"], np.ndarray):
            d["beta_t"] = (d["beta_t"][0], d["beta_t"][1])
        for f in ("t", "counter", "skipped", "consecutive"):
            if f in d and isinstance(d[f], np.ndarray):
                d[f] = int(d[f])
        return type(state)(**{k: _internal_layout(v) for k, v in d.items()})
    if isinstance(state, tuple):
        return tuple(_internal_layout(s) for s in state)
    return state


def _library_layout(state):
    if isinstance(state, tuple) and hasattr(state, "_fields"):
        d = state._asdict()
        if "beta_t" in d and isinstance(d["beta_t"], tuple):
            b = d["beta_t"]
            d["beta_t"] = np.array([b[0], b[1]], dtype=np.float64)
        for f in ("t", "counter", "skipped", "consecutive"):
            if f in d and isinstance(d[f], (int, np.integer)):
                d[f] = np.array(d[f], dtype=np.int64)
        return type(state)(**{k: _library_layout(v) for k, v in d.items()})
    if isinstance(state, tuple):
        return tuple(_library_layout(s) for s in state)
    return state


def ref_init(rule, x, low_precision_state=False):
    """Initial state of ``rule`` for parameter array ``x`` (conventions §8), in the
    library's layout; ``low_precision_state`` as for ``optimisers.setup``."""
    return _library_layout(_ref_init(rule, x, low_precision_state))


def ref_apply(rule, state, x, g):
    """(new_state, d) for one step; never mutates its inputs.  States in the library's
    layout."""
    _STORE_MODE[0] = True
    try:
        new_state, d = _ref_apply_quiet(rule, _internal_layout(state), x, g)
    finally:
        _STORE_MODE[0] = False
    return _library_layout(new_state), (None if d is None else np.asarray(d))


# ---------------------------------------------------------------------------------------
# Muon (torch 2.13's torch.optim.Muon, written from its algorithm box and docs): the
# momentum in C one operation at a time (an element-wise state, so bit for bit); the
# Newton-Schulz iteration, the decay and the step in float64 -- the float64 evaluation the
# library's float32 iteration is checked against (to a tolerance), its d rounded once to C.


def ref_newton_schulz(u, coefficients, steps, epsilon):
    """torch's orthogonalisation of the matrix ``u`` in float64: X = u (transposed when it
    has more rows than columns) / max(||u||_F, epsilon); ``steps`` times A = X X^T,
    B = b A + c A A, X = a X + B X; transposed back."""
    a, b, c = (float(v) for v in coefficients)
    X = np.array(u, dtype=np.float64)
    tall = X.shape[0] > X.shape[1]
    if tall:
        X = X.T
    X = X / max(math.sqrt(math.fsum((X * X).ravel())), float(epsilon))
    for _ in range(steps):
        A = X @ X.T
        B = b * A + c * (A @ A)
        X = a * X + B @ X
    return X.T if tall else X


def _muon_lr(rule, shape):
    rows, cols = shape
    if rule.adjust_lr_fn == "match_rms_adamw":
        return float(rule.eta) * 0.2 * math.sqrt(max(rows, cols))
    return float(rule.eta) * math.sqrt(max(1.0, rows / cols if cols else 0.0))


def _muon(k, rule, state, x, g):
    k.no_complex("Muon")
    if np.ndim(x) != 2:
        raise ValueError(f"reference: Muon needs a matrix, got shape {np.shape(x)}")
    mu, omm = k.s(rule.mu), k.s(1 - rule.mu)
    m_old = k.ld(state.m)
    m = m_old + omm * (g - m_old)
    u = (g + mu * (m - g)) if rule.nesterov else m
    o = ref_newton_schulz(u, rule.ns_coefficients, rule.ns_steps, rule.epsilon)
    x64 = np.asarray(k.ld(x), dtype=np.float64)
    d = (float(rule.eta) * float(rule.lambda_)) * x64 + _muon_lr(rule, x.shape) * o
    return MuonState(k.st(m)), d.astype(k.C)


_APPLY["Muon"] = _muon
