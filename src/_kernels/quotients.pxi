# Quotients by a per-step constant, correctly rounded, without the divider.
#
# Adam and its relatives divide every element by the bias corrections b = 1 - beta^t: one b
# for a whole array and step.  A hardware division is slow: in float64 the divider, not
# memory, sets the pace of Adam (two such divisions, one by sqrt(.) + eps and a square root
# per element).  With y = 1/b rounded once per tile, the correctly rounded quotient RN(a/b)
# comes from multiplications and fused multiply-adds alone:
#
#     q0 = RN(a*y)                                  within 1.5 ulp of a/b
#     q1 = RN(q0 + r0*y),  r0 = RN(a - b*q0)        within 1 ulp (faithful)
#     q  = RN(q1 + r1*y),  r1 =    a - b*q1  exact  (the remainder of a faithful quotient)
#
# and q = RN(a/b) by Markstein's theorem (y within half an ulp of 1/b, q1 within one ulp of
# a/b; Muller et al., Handbook of Floating-Point Arithmetic, "division with an FMA").  Each
# remainder and correction is one FMA; the sign of a is put back at the end, because the
# corrections turn a = -0 into +0 (and a/b keeps -0).  The first correction is what makes
# the proof hold: q0 alone need not be faithful (an exhaustive search in small precisions
# finds remainders of q0 that are not exact).
#
# The theorem needs no underflow or overflow on the way: it holds for
# QUOTIENT_LOW <= |a| <= limit, with QUOTIENT_LOW = 2^(emin + p + 4) (below it a remainder
# could fall under the subnormal spacing) and limit = 2^(emax - 2) * b (q and the remainders
# stay clear of overflow); a = +-0 and NaN come out right as they are.  Any other a
# (a subnormal moment, an infinity, a huge value) needs the divider.  Such values are rare,
# so a rule checks the values it divides as it goes, keeps what it overwrites, and redoes a
# tile (at most TILE elements: the kind is KEEPS_TILE) that held one with the divider -- the
# same bits either way (the loop is `quotient_tile`, rules_adam.pxi).  Such a tile costs the
# fast pass plus a pass with the divider (and subnormal arithmetic is slow on any path): a
# parameter whose gradient stays exactly zero sees its moments decay through that range (m
# within about 700 steps, v at beta2 = 0.999 within about 75,000), and its tiles are that
# much slower meanwhile.
# tests/test_quotients.py checks the fast path bit for bit against a/b on edge values and
# random bit patterns.
#
# Only the AVX-512 build takes the fast path, and only in float64 (elsewhere it is the
# division itself): with AVX2 the extra instructions cost more than the divider (16 vector
# registers and no mask registers), and float32 division is cheap.  bench/RESULTS.md has the
# measurements.

from libc.math cimport copysign, fma

cdef extern from *:
    """
    #if defined(__AVX512F__) && defined(__FMA__)
    #define OPTIMISERS_FAST_QUOTIENTS 1
    #else
    #define OPTIMISERS_FAST_QUOTIENTS 0
    #endif
    /* float64's 2^(emin + p + 4) and 2^(emax - 2) */
    #define OPTIMISERS_QUOTIENT_LOW 0x1p-965
    #define OPTIMISERS_QUOTIENT_HIGH 0x1p1021
    """
    bint OPTIMISERS_FAST_QUOTIENTS
    const double QUOTIENT_LOW "OPTIMISERS_QUOTIENT_LOW"
    const double QUOTIENT_HIGH "OPTIMISERS_QUOTIENT_HIGH"


cdef struct Divisor:
    # A per-step constant divisor, in the compute dtype (stored widened).
    double b        # the divisor
    double y        # 1/b, rounded
    double limit    # the largest |a| whose quotient may take the fast path (-1: none)


# How a loop divides by a Divisor: a fused type, so that each loop is compiled both ways
# with no branch inside.
cdef struct ByDivider:
    char unused
cdef struct ByReciprocal:
    char unused
ctypedef fused Quotients:
    ByDivider
    ByReciprocal


cdef inline bint _fast_path(floating z) noexcept nogil:
    """Whether quotients of this dtype take the fast path in this build: float64 only
    (float32 division is cheap enough that the extra instructions do not pay).  The code
    below behind this test is float64 code: its float32 copy is never run."""
    if floating is float:
        return False
    else:
        return OPTIMISERS_FAST_QUOTIENTS


cdef inline Divisor _divisor(floating b) noexcept nogil:
    cdef Divisor d
    cdef floating y = 1 / b
    d.b = b
    d.y = y
    d.limit = -1
    # b in (0, 1] (a bias correction) keeps y normal and finite; any other b (a hand-made
    # state) sends every value to the divider, zeros too (0 * (1/b) is NaN for b = 5e-324,
    # and +0 where a/b is -0 for b < 0).
    if _fast_path(b) and b > 0 and b <= 1 and y <= QUOTIENT_HIGH:
        d.limit = b * QUOTIENT_HIGH
    return d


cdef inline int _needs_divider(floating a, const Divisor* d) noexcept nogil:
    """Whether a/b must not take the fast path: 0 < |a| < QUOTIENT_LOW or |a| > limit.
    (Compares and bit operations only, so that the loops calling it vectorise.)"""
    cdef floating ax = _abs(a)
    if not _fast_path(a):
        return 0
    return ((ax < QUOTIENT_LOW) & (ax != 0)) | (ax > d.limit)


cdef inline floating _quotient(Quotients* how, floating a, const Divisor* d) noexcept nogil:
    """a / d.b, correctly rounded (by reciprocal only where `_needs_divider` is false)."""
    cdef floating b = <floating> d.b, y = <floating> d.y
    cdef floating q
    if Quotients is ByDivider or not _fast_path(a):
        return a / b
    q = a * y
    q = fma(fma(-q, b, a), y, q)
    q = fma(fma(-q, b, a), y, q)
    return copysign(q, a)           # a = -0: the corrections above make it +0


cdef inline void _restore(floating* out, const floating* kept, Py_ssize_t n) noexcept nogil:
    """``out[0:n]`` back to what ``kept`` kept of it."""
    cdef Py_ssize_t i
    for i in range(n):
        out[i] = kept[i]


def _quotients_by_reciprocal(double[::1] a, double b):
    """a / b for every element of the float64 array ``a`` by the fast path of this build,
    and whether each value needs the divider (for the tests).  Returns ``(q, needs)``."""
    import numpy as np
    q = np.empty(a.shape[0], np.float64)
    needs = np.zeros(a.shape[0], np.uint8)
    cdef double[::1] qv = q
    cdef unsigned char[::1] nd = needs
    cdef Divisor d = _divisor(b)
    cdef Py_ssize_t i
    for i in range(a.shape[0]):
        qv[i] = _quotient(<ByReciprocal*> NULL, a[i], &d)
        nd[i] = _needs_divider(a[i], &d)
    return q, needs.view(np.bool_)


def fast_quotients():
    """Whether this build divides float64 values by the per-step constants by reciprocal
    (quotients.pxi)."""
    return bool(OPTIMISERS_FAST_QUOTIENTS)
