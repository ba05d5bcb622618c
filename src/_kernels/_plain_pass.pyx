"""The benchmark's yardstick: a rule's step written the plainest way (private).

The issue's target is "at least 95% of a plain fused C pass of the same arithmetic".  This
module is that pass for a few rules: one OpenMP loop over the whole array, the same
operations in the same order as the kernels' tile function, no tiles, no stages, no
prologue.  ``optimisers-bench`` times it beside ``update_`` (the ``plain`` rows).  The
library never uses it.

It is compiled once per instruction set, with the flags of the kernel build of that name
(``_plain_pass``, ``_plain_pass_avx2``, ``_plain_pass_avx512``; see src/meson.build), so
that the bench compares the kernels in use with a plain loop built the same way.

>>> isa() in ("baseline", "avx2", "avx512")
True
"""

cimport numpy as cnp
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt, sqrtf

cnp.import_array()

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #else
    static int omp_get_max_threads(void) { return 1; }
    #endif
    #if defined(__AVX512F__)
    #define PLAIN_PASS_ISA "avx512"
    #elif defined(__AVX2__)
    #define PLAIN_PASS_ISA "avx2"
    #else
    #define PLAIN_PASS_ISA "baseline"
    #endif
    """
    const char* PLAIN_PASS_ISA
    int omp_get_max_threads() noexcept nogil


cdef enum:
    MAX_HP = 9          # Adam's slots with AdamW's lambda, the most any plain pass reads
    MAX_BUF = 2


def isa():
    """The instruction set this build was compiled for: "baseline", "avx2" or "avx512"
    (the same name as the kernel build compiled with the same flags)."""
    return PLAIN_PASS_ISA.decode()


# The element helpers of the kernels, with the same operations: sqrt of the dtype, and the
# sign as a select (numpy's: sign(+-0) = +0, NaN propagates) so that the loop vectorises.

cdef inline floating _sqrt(floating z) noexcept nogil:
    if floating is float:
        return sqrtf(z)
    else:
        return sqrt(z)


cdef inline floating _sign(floating z) noexcept nogil:
    cdef floating s = (<floating> (z > 0)) - (<floating> (z < 0))
    return z if z != z else s


cdef void _plain_adam(floating* x, const floating* g, floating* m, floating* v, Py_ssize_t n,
                      const double* h, int n_threads) noexcept nogil:
    cdef floating b1 = <floating> h[0], b2 = <floating> h[1], omb1 = <floating> h[2]
    cdef floating omb2 = <floating> h[3], bc1 = <floating> h[4], bc2 = <floating> h[5]
    cdef floating eps = <floating> h[6], eta = <floating> h[7], lam = <floating> h[8]
    cdef floating gi, mi, vi
    cdef Py_ssize_t i
    for i in prange(n, schedule="static", num_threads=n_threads):
        gi = g[i]
        mi = b1 * m[i] + omb1 * gi
        vi = b2 * v[i] + omb2 * (gi * gi)
        m[i] = mi
        v[i] = vi
        if lam == 0:
            x[i] = x[i] - ((mi / bc1) / (_sqrt(vi / bc2) + eps)) * eta
        else:
            x[i] = x[i] - eta * ((mi / bc1) / (_sqrt(vi / bc2) + eps) + lam * x[i])


cdef void _plain_momentum(floating* x, const floating* g, floating* v, Py_ssize_t n,
                          const double* h, int n_threads) noexcept nogil:
    cdef floating eta = <floating> h[0], rho = <floating> h[1]
    cdef floating vi
    cdef Py_ssize_t i
    for i in prange(n, schedule="static", num_threads=n_threads):
        vi = rho * v[i] + eta * g[i]
        v[i] = vi
        x[i] = x[i] - vi


cdef void _plain_lion(floating* x, const floating* g, floating* m, Py_ssize_t n,
                      const double* h, int n_threads) noexcept nogil:
    cdef floating b1 = <floating> h[0], b2 = <floating> h[1], omb1 = <floating> h[2]
    cdef floating omb2 = <floating> h[3], eta = <floating> h[4]
    cdef floating mi, gi
    cdef Py_ssize_t i
    for i in prange(n, schedule="static", num_threads=n_threads):
        mi = m[i]
        gi = g[i]
        m[i] = b2 * mi + omb2 * gi
        x[i] = x[i] - eta * _sign(b1 * mi + omb1 * gi)


cdef int _check(object a, int typenum, Py_ssize_t n, str what) except -1:
    if not isinstance(a, cnp.ndarray):
        raise TypeError(f"{what} must be a numpy array, got {type(a).__name__}")
    cdef cnp.ndarray arr = <cnp.ndarray> a
    if cnp.PyArray_TYPE(arr) != typenum:
        raise TypeError(f"{what} has dtype {arr.dtype}, the plain pass needs x's dtype")
    if not cnp.PyArray_IS_C_CONTIGUOUS(arr):
        raise ValueError(f"{what} must be C-contiguous")
    if cnp.PyArray_SIZE(arr) != n:
        raise ValueError(f"{what} has {cnp.PyArray_SIZE(arr)} elements, expected {n}")
    return 0


def plain_pass(str rule, cnp.ndarray x, cnp.ndarray g, tuple buffers, tuple hp):
    """One plain fused step of ``rule`` ("adam", "adamw", "momentum" or "lion") over
    C-contiguous float32/float64 arrays, for benchmarks: ``hp`` are the same hyper-parameter
    slots the rule's stage uses (Adam: b1, b2, 1-b1, 1-b2, 1-bt1, 1-bt2, eps, eta[, lambda];
    Momentum: eta, rho; Lion: b1, b2, 1-b1, 1-b2, eta)."""
    cdef double h[MAX_HP]
    cdef int typenum = cnp.PyArray_TYPE(x), j
    cdef Py_ssize_t n = cnp.PyArray_SIZE(x)
    cdef int n_threads = omp_get_max_threads()
    cdef void* b[MAX_BUF]
    if typenum != cnp.NPY_FLOAT32 and typenum != cnp.NPY_FLOAT64:
        raise TypeError(f"the plain pass runs on float32 and float64, got {x.dtype}")
    if len(hp) > MAX_HP or len(buffers) > MAX_BUF:
        raise ValueError(f"at most {MAX_HP} hyper-parameters and {MAX_BUF} state buffers")
    for j in range(MAX_HP):
        h[j] = hp[j] if j < len(hp) else 0.0
    _check(x, typenum, n, "x")
    _check(g, typenum, n, "the gradient")
    for j in range(len(buffers)):
        _check(buffers[j], typenum, n, "a state buffer")
        b[j] = cnp.PyArray_DATA(<cnp.ndarray> buffers[j])
    cdef void* px = cnp.PyArray_DATA(x)
    cdef void* pg = cnp.PyArray_DATA(g)
    cdef int which = {"adam": 0, "adamw": 0, "momentum": 1, "lion": 2}.get(rule, -1)
    if which < 0 or len(buffers) != (2 if which == 0 else 1):
        raise ValueError(f"plain_pass knows adam, adamw, momentum and lion with their state "
                         f"buffers, got {rule!r} with {len(buffers)}")
    with nogil:
        if typenum == cnp.NPY_FLOAT32:
            if which == 1:
                _plain_momentum[float](<float*> px, <const float*> pg, <float*> b[0], n, h, n_threads)
            elif which == 2:
                _plain_lion[float](<float*> px, <const float*> pg, <float*> b[0], n, h, n_threads)
            else:
                _plain_adam[float](<float*> px, <const float*> pg, <float*> b[0], <float*> b[1],
                                   n, h, n_threads)
        else:
            if which == 1:
                _plain_momentum[double](<double*> px, <const double*> pg, <double*> b[0], n, h,
                                        n_threads)
            elif which == 2:
                _plain_lion[double](<double*> px, <const double*> pg, <double*> b[0], n, h,
                                    n_threads)
            else:
                _plain_adam[double](<double*> px, <const double*> pg, <double*> b[0],
                                    <double*> b[1], n, h, n_threads)
