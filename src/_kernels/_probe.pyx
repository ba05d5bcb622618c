"""The yardsticks of ``optimisers-bench``: the bandwidth probe, and the plain pass of a
rule's arithmetic (``plain_pass``, at the end; its loops are in plain_pass.c).

An optimiser step on a big array is limited by memory bandwidth, and what a machine
delivers depends on the access pattern (how many streams are read, how many are read and
written back in place, how many are only written).  ``probe`` measures that ceiling: one
OpenMP pass, no tiles, no state, the least arithmetic that still touches every element of
every stream:

    s[i]      = (sum of every read stream at i) / (number of read streams)
    out_j[i]  = s[i] * c_j          c_j = 1 - j/16, for every written stream j

An array given both in ``reads`` and in ``writes`` is *updated in place* (read, then
written, as ``x``, ``m`` and ``v`` are by Adam); an array only in ``writes`` is write-only.
With no written stream the pass is a reduction and returns the sum of ``s`` (32
interleaved partial sums of the arrays' dtype per thread, then float64).  The values
stay bounded (a mean, scaled by at most 1), so repeated calls never overflow nor sink into
denormals.

The loop is compiled once per (read-only, updated, write-only) count, so that every stream
is a plain local pointer and the compiler vectorises it (``omp simd``: the streams are
distinct arrays, checked here); the threads split the array into equal contiguous ranges
(``omp parallel``, as many threads as ``omp_get_max_threads()``, which follows
``threadpoolctl.threadpool_limits(n, "openmp")``).
"""

cimport numpy as cnp
from libc.stdint cimport uintptr_t

cnp.import_array()

cdef extern from *:
    """
    #include <stddef.h>
    #ifdef _OPENMP
    #include <omp.h>
    #define PROBE_OPENMP 1
    #else
    #define PROBE_OPENMP 0
    static int omp_get_max_threads(void) { return 1; }
    static int omp_get_thread_num(void) { return 0; }
    static int omp_get_num_threads(void) { return 1; }
    #endif

    #define PROBE_MAX_RO 4   /* read-only streams (4: LAMB's norm pass reads g, m, v, x) */
    #define PROBE_MAX_UP 4   /* streams read and written in place */
    #define PROBE_MAX_WO 2   /* write-only streams */
    #define PROBE_LANES 32   /* partial sums of the reduction (no written stream) */

    /* One thread's range [lo, hi) of the pass.  NR, NU, NW are literal constants at every
       call site (see PROBE_CASE), so the inner loops unroll and every stream becomes a
       plain pointer. */
    #define PROBE_BODY(T, NAME)                                                          \\
    static inline __attribute__((always_inline)) double                                 \\
    NAME(const int NR, const int NU, const int NW, void* const* P,                     \\
         ptrdiff_t lo, ptrdiff_t hi)                                                    \\
    {                                                                                   \\
        T* p[PROBE_MAX_RO + PROBE_MAX_UP + PROBE_MAX_WO];                               \\
        const T inv = (T)1 / (T)(NR + NU);                                              \\
        double acc = 0.0;                                                               \\
        ptrdiff_t i;                                                                    \\
        int k;                                                                          \\
        for (k = 0; k < NR + NU + NW; k++) p[k] = (T*)P[k];                             \\
        if (NU + NW == 0) {                                                             \\
            /* PROBE_LANES independent partial sums, so that the adds are not one      \\
               latency-bound chain; combined in double at the end */                   \\
            T lanes[PROBE_LANES];                                                       \\
            int l;                                                                      \\
            for (l = 0; l < PROBE_LANES; l++) lanes[l] = 0;                             \\
            for (i = lo; i + PROBE_LANES <= hi; i += PROBE_LANES) {                     \\
                _Pragma("omp simd")                                                     \\
                for (l = 0; l < PROBE_LANES; l++) {                                     \\
                    T s = 0;                                                            \\
                    for (k = 0; k < NR; k++) s += p[k][i + l];                          \\
                    lanes[l] += s;                                                      \\
                }                                                                       \\
            }                                                                           \\
            for (; i < hi; i++) {                                                       \\
                T s = 0;                                                                \\
                for (k = 0; k < NR; k++) s += p[k][i];                                  \\
                acc += (double)s;                                                       \\
            }                                                                           \\
            for (l = 0; l < PROBE_LANES; l++) acc += (double)lanes[l];                  \\
            return acc * (double)inv;                                                   \\
        }                                                                               \\
        _Pragma("omp simd")                                                             \\
        for (i = lo; i < hi; i++) {                                                     \\
            T s = 0;                                                                    \\
            for (k = 0; k < NR + NU; k++) s += p[k][i];                                 \\
            s *= inv;                                                                   \\
            for (k = 0; k < NU + NW; k++)                                               \\
                p[NR + k][i] = s * ((T)1 - (T)k / (T)16);                               \\
        }                                                                               \\
        return 0.0;                                                                     \\
    }

    PROBE_BODY(float, probe_body_f32)
    PROBE_BODY(double, probe_body_f64)

    #define PROBE_CASE(R, U, W)                                                        \\
        case (R) * 100 + (U) * 10 + (W):                                               \\
            return f64 ? probe_body_f64(R, U, W, P, lo, hi)                             \\
                       : probe_body_f32(R, U, W, P, lo, hi);
    #define PROBE_CASES_W(R, U) PROBE_CASE(R, U, 0) PROBE_CASE(R, U, 1) PROBE_CASE(R, U, 2)
    #define PROBE_CASES_U(R) PROBE_CASES_W(R, 0) PROBE_CASES_W(R, 1) PROBE_CASES_W(R, 2) \\
                             PROBE_CASES_W(R, 3) PROBE_CASES_W(R, 4)

    static double probe_range(int nr, int nu, int nw, int f64, void* const* P,
                              ptrdiff_t lo, ptrdiff_t hi)
    {
        switch (nr * 100 + nu * 10 + nw) {
            PROBE_CASES_U(0) PROBE_CASES_U(1) PROBE_CASES_U(2) PROBE_CASES_U(3)
            PROBE_CASES_U(4)
            default: return 0.0;
        }
    }

    /* The whole pass: equal contiguous ranges (rounded to 16 elements, a cache line of
       float32) over the team of threads. */
    static double probe_run(int nr, int nu, int nw, int f64, void* const* P, ptrdiff_t n,
                            int n_threads)
    {
        double total = 0.0;
        if (n_threads < 1) n_threads = 1;
        #pragma omp parallel num_threads(n_threads) reduction(+:total)
        {
            ptrdiff_t t = omp_get_thread_num(), nt = omp_get_num_threads();
            ptrdiff_t lo = (t == 0) ? 0 : ((n / nt) * t) & ~(ptrdiff_t)15;
            ptrdiff_t hi = (t == nt - 1) ? n : ((n / nt) * (t + 1)) & ~(ptrdiff_t)15;
            total += probe_range(nr, nu, nw, f64, P, lo, hi);
        }
        return total;
    }
    """
    bint PROBE_OPENMP
    int PROBE_MAX_RO, PROBE_MAX_UP, PROBE_MAX_WO
    int omp_get_max_threads() noexcept nogil
    double probe_run(int nr, int nu, int nw, int f64, void* const* P, Py_ssize_t n,
                     int n_threads) noexcept nogil


#: the largest numbers of read-only, updated (read and written) and write-only streams
MAX_READ_ONLY = PROBE_MAX_RO
MAX_UPDATED = PROBE_MAX_UP
MAX_WRITE_ONLY = PROBE_MAX_WO


def openmp_enabled():
    """True when the probe was compiled with OpenMP."""
    return bool(PROBE_OPENMP)


def max_threads():
    """The number of threads a probe pass uses now."""
    return omp_get_max_threads()


def _classify(reads, writes):
    """Split the streams into read-only, updated and write-only lists (order kept)."""
    reads, writes = list(reads), list(writes)
    if not reads:
        raise ValueError("the probe needs at least one array to read")
    for a in reads + writes:
        if not isinstance(a, cnp.ndarray):
            raise TypeError(f"the probe takes numpy arrays, got {type(a).__name__}")
    ids_r = [id(a) for a in reads]
    ids_w = [id(a) for a in writes]
    if len(set(ids_r)) != len(ids_r) or len(set(ids_w)) != len(ids_w):
        raise ValueError("an array appears twice in reads or twice in writes")
    updated = [a for a in reads if id(a) in ids_w]
    read_only = [a for a in reads if id(a) not in ids_w]
    write_only = [a for a in writes if id(a) not in ids_r]
    return read_only, updated, write_only


def probe(reads, writes=()):
    """One plain fused pass: ``out[i] = mean of reads[i] * c_j`` into every written array.

    Parameters
    ----------
    reads : sequence of ndarray
        The streams read (1 to 7).  An array also in ``writes`` is updated in place.
    writes : sequence of ndarray
        The streams written; ``writes[j]`` gets ``s * (1 - j/16)`` where ``s`` is the mean of
        the reads (``j`` counts the written arrays in the order: updated ones in the order of
        ``reads``, then write-only ones in the order of ``writes``).

    All arrays are distinct, C-contiguous, of one dtype (float32 or float64) and size, and
    do not overlap in memory; at most ``MAX_READ_ONLY`` read-only, ``MAX_UPDATED`` updated
    and ``MAX_WRITE_ONLY`` write-only streams.

    Returns
    -------
    float or None
        With no written stream, the sum over ``i`` of the mean of the reads (a reduction,
        in 32 partial sums of the arrays' dtype per thread, combined in float64); ``None``
        otherwise.
    """
    read_only, updated, write_only = _classify(reads, writes)
    streams = read_only + updated + write_only
    cdef int nr = len(read_only), nu = len(updated), nw = len(write_only)
    if nr > PROBE_MAX_RO or nu > PROBE_MAX_UP or nw > PROBE_MAX_WO:
        raise ValueError(f"the probe handles at most {PROBE_MAX_RO} read-only, {PROBE_MAX_UP} "
                         f"updated and {PROBE_MAX_WO} write-only arrays, got {nr}, {nu}, {nw}")
    cdef cnp.ndarray first = <cnp.ndarray> streams[0]
    cdef int typenum = cnp.PyArray_TYPE(first)
    if typenum != cnp.NPY_FLOAT32 and typenum != cnp.NPY_FLOAT64:
        raise TypeError(f"the probe runs on float32 and float64, got {first.dtype}")
    cdef Py_ssize_t n = cnp.PyArray_SIZE(first)
    cdef void* ptrs[9]
    cdef cnp.ndarray a
    cdef int k
    spans = []
    for k in range(nr + nu + nw):
        a = <cnp.ndarray> streams[k]
        if cnp.PyArray_TYPE(a) != typenum or cnp.PyArray_SIZE(a) != n:
            raise ValueError("all probe arrays must have one dtype and one size")
        if not cnp.PyArray_IS_C_CONTIGUOUS(a):
            raise ValueError("probe arrays must be C-contiguous")
        if k >= nr and not cnp.PyArray_ISWRITEABLE(a):
            raise ValueError("a written probe array is read-only")
        ptrs[k] = cnp.PyArray_DATA(a)
        start = <uintptr_t> ptrs[k]
        spans.append((start, start + <uintptr_t> cnp.PyArray_NBYTES(a)))
    spans.sort()
    for k in range(1, len(spans)):
        if spans[k][0] < spans[k - 1][1]:
            raise ValueError("probe arrays must not overlap in memory")
    cdef int f64 = typenum == cnp.NPY_FLOAT64
    cdef int n_threads = omp_get_max_threads()
    cdef double total
    with nogil:
        total = probe_run(nr, nu, nw, f64, ptrs, n, n_threads)
    return total if nu + nw == 0 else None


# ----------------------------------------------------------------------------------------
# The plain pass of a rule's arithmetic (plain_pass.h), one build per kernel build

cdef extern from "plain_pass.h":
    int PLAIN_ADAM, PLAIN_MOMENTUM, PLAIN_LION
    enum:
        PLAIN_MAX_HP
        PLAIN_MAX_BUF
    ctypedef void (*plain_pass_fn)(int rule, int f64, void* x, const void* g,
                                   void* const* b, Py_ssize_t n, const double* h,
                                   int n_threads) noexcept nogil
    plain_pass_fn plain_pass_build(const char* isa)


#: the rules the plain pass knows, with how many state buffers each takes
PLAIN_RULES = {"adam": 2, "adamw": 2, "momentum": 1, "lion": 1}


def plain_pass_isas():
    """The instruction sets the plain pass was compiled for here (those of the kernels)."""
    return [isa for isa in ("baseline", "avx2", "avx512")
            if plain_pass_build(isa.encode()) != NULL]


def plain_pass(str isa, str rule, x, g, tuple buffers, tuple hp):
    """One plain fused step of ``rule`` ("adam", "adamw", "momentum" or "lion") with the
    build ``isa`` (the name of a kernel build; see ``plain_pass_isas``), over C-contiguous
    float32/float64 arrays of one size, for benchmarks: ``hp`` are the same
    hyper-parameter slots the rule's stage uses (Adam: b1, b2, 1-b1, 1-b2, 1-bt1, 1-bt2,
    eps, eta[, lambda]; Momentum: eta, rho; Lion: b1, b2, 1-b1, 1-b2, eta).  The processor
    must run ``isa`` (the kernels' ``cpu_runs``)."""
    cdef plain_pass_fn run = plain_pass_build(isa.encode())
    if run == NULL:
        raise ValueError(f"no plain pass built for {isa!r} here: {plain_pass_isas()}")
    if PLAIN_RULES.get(rule) != len(buffers) or len(hp) > PLAIN_MAX_HP:
        raise ValueError(f"plain_pass knows {', '.join(PLAIN_RULES)} with their state "
                         f"buffers and at most {PLAIN_MAX_HP} hyper-parameters, got "
                         f"{rule!r} with {len(buffers)} and {len(hp)}")
    arrays = [x, g] + list(buffers)
    for array in arrays:
        if not isinstance(array, cnp.ndarray):
            raise TypeError(f"the plain pass takes numpy arrays, got {type(array).__name__}")
    cdef cnp.ndarray first = <cnp.ndarray> x
    cdef int typenum = cnp.PyArray_TYPE(first)
    if typenum != cnp.NPY_FLOAT32 and typenum != cnp.NPY_FLOAT64:
        raise TypeError(f"the plain pass runs on float32 and float64, got {first.dtype}")
    cdef Py_ssize_t n = cnp.PyArray_SIZE(first)
    cdef void* ptrs[2 + PLAIN_MAX_BUF]
    cdef cnp.ndarray a
    cdef int k
    for k in range(len(arrays)):
        a = <cnp.ndarray> arrays[k]
        if cnp.PyArray_TYPE(a) != typenum or cnp.PyArray_SIZE(a) != n:
            raise ValueError("all plain-pass arrays must have one dtype and one size")
        if not cnp.PyArray_IS_C_CONTIGUOUS(a):
            raise ValueError("plain-pass arrays must be C-contiguous")
        ptrs[k] = cnp.PyArray_DATA(a)
    cdef double h[PLAIN_MAX_HP]
    for k in range(PLAIN_MAX_HP):
        h[k] = hp[k] if k < len(hp) else 0.0
    cdef int which = PLAIN_LION if rule == "lion" else (
        PLAIN_MOMENTUM if rule == "momentum" else PLAIN_ADAM)
    cdef int f64 = typenum == cnp.NPY_FLOAT64
    cdef int n_threads = omp_get_max_threads()
    with nogil:
        run(which, f64, ptrs[0], ptrs[1], &ptrs[2], n, h, n_threads)
