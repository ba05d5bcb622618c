"""Fused, typed, OpenMP kernels of every optimisation rule (private).

Design
------
Every update of one parameter array is a *program*: a short list of stages, one per
element-wise rule of an ``OptimiserChain`` (a lone rule is a chain of one).  The driver
walks the array tile by tile (4 kB of each stream, 2 kB for a chain of several loops, 64
kB for most programs of one loop on a large array) and, inside one tile, runs every
stage in order: stage 0 reads the gradient, each later stage reads the tile buffer the
previous one wrote, and the last stage fuses ``x -= d`` (or stores ``d`` into a
destination array, for the functional ``apply_``).  So a chain costs one pass over
memory, and no buffer is ever allocated per step.

Tiles are distributed over OpenMP threads (``prange``, static schedule) when the array is
larger than the parallel threshold; every stage is element-wise, so the result does not
depend on the thread count.

Before the tiles, each stage's *prologue* derives its per-step scalars (bias corrections,
AccumGrad's "due?"); a ``ClipNorm`` leading a program (kind ``CLIPNORM``) computes its norm
there, with a blocking fixed by the data (``norms.pxi``), and its scale is then *folded*
into the next stage as that stage's input scale ``gs`` (every component-wise tile function
reads ``g[i] * gs``), so ``ClipNorm -> AdamW`` is one read of g for the norm plus one
fused loop.  After the tiles, *epilogues* advance the per-step scalars.  A ``Batch``
prepares (checks, prologues) many leaves' programs before running any, which is how a
non-finite norm stops a whole step before anything is written.

Each stage is described by a ``Stage``: a rule ``kind``, up to ``MAX_HP`` scalar
hyper-parameters already converted to the parameter dtype and folded by the Python side
(bias corrections, ``1 - beta`` ...), and up to ``MAX_BUF`` state buffers of the parameter's
dtype.  The per-rule tile functions live in the ``rules_*.pxi`` files included below; each
reads like the rule's algorithm box, with the operation order of the seed (see the rule
classes' docstrings and ``shared/reference/optimisers_jl_spec.md``).  Kernels are compiled
without fast-math and without FP contraction, so they give the same bits as a numpy
reference written with the same operation order.

Complex parameters run on the real views of their arrays (``x.view(R)``: element k is the
components 2k and 2k+1).  A component-wise stage (Descent, Momentum, WeightDecay, the
ClipNorm scale, AccumGrad ...) runs unchanged on those views (``width`` 1).  The "moments"
rules (Adam & co, RMSProp, AdaGrad, AdaDelta) keep REAL second moments holding
``re*re + im*im``, one per complex element: their stages have ``width`` 2 and run the
pair-aware tile functions of ``rules_complex.pxi``.  Tiles have an even length and start at
even offsets, so no tile splits a pair; offsets reach the tile functions in components, and
they halve them for their real buffers.  ``run_program`` takes complex arrays as they are
and works out each stage's width and buffer layout from its kind (the rules refused for
complex parameters, e.g. Rprop, are refused here too).
"""

cimport numpy as cnp
from cython cimport floating
from cython.parallel cimport prange, parallel
from libc.stdlib cimport malloc, free
from libc.math cimport sqrt, sqrtf, fabs, fabsf, pow, hypot, isnan, INFINITY
from libc.stdlib cimport qsort
from libc.string cimport memcmp

cnp.import_array()

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define OPTIMISERS_OPENMP 1
    #else
    #define OPTIMISERS_OPENMP 0
    static int omp_get_max_threads(void) { return 1; }
    static int omp_get_thread_num(void) { return 0; }
    #endif
    """
    bint OPTIMISERS_OPENMP
    int omp_get_max_threads() noexcept nogil
    int omp_get_thread_num() noexcept nogil


cdef extern from *:
    """
    #include <string.h>
    #if defined(__AVX512F__)
    #define OPTIMISERS_ISA "avx512"
    #elif defined(__AVX2__)
    #define OPTIMISERS_ISA "avx2"
    #else
    #define OPTIMISERS_ISA "baseline"
    #endif
    /* Whether this processor and its operating system run the build named `isa` (the
       flags of each build are in src/meson.build). */
    static int optimisers_cpu_runs(const char* isa) {
        if (strcmp(isa, "baseline") == 0)
            return 1;
    #if defined(__GNUC__) && defined(__x86_64__)
        __builtin_cpu_init();
        int avx2 = __builtin_cpu_supports("avx2");
        if (strcmp(isa, "avx2") == 0)
            return avx2;
        if (strcmp(isa, "avx512") == 0)
            return avx2 && __builtin_cpu_supports("fma") && __builtin_cpu_supports("avx512f")
                   && __builtin_cpu_supports("avx512dq")
                   && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw");
    #endif
        return 0;
    }
    """
    const char* OPTIMISERS_ISA
    int optimisers_cpu_runs(const char* isa) noexcept nogil


cdef enum:
    MAX_HP = 12
    MAX_BUF = 4
    MAX_STAGES = 32
    # Bytes of each stream per tile.  A program of one loop (one stage, or a ClipNorm
    # folded into the next) runs on 4 kB tiles: in cache they are 3-4% faster than 2 kB
    # ones for float64 Adam (1e5, one thread: 1.18 -> 1.15 ns/element), and on big arrays
    # level.  A chain whose stages run loops of their own takes turns on the memory streams
    # (a WeightDecay stage reads g and x, then Adam's reads m and v), and short turns keep
    # the hardware prefetchers streaming: at 4 kB (one page of each stream per turn) chains
    # lose a third of their speed, so they run on 2 kB tiles.  1e7 float64, one thread,
    # ns/element, 4 kB -> 2 kB: WeightDecay -> Momentum 1.39 -> 0.98, WeightDecay -> Adam
    # 2.04 -> 1.70 (float32 chains the same at 1 and 2 kB, 30-50% slower at 4 and 8 kB).
    # Where the tile buffer sits does not matter.
    #   A program of one loop that holds no tile in a stack buffer runs on 64 kB tiles on
    # a large array (at least LONG_TILES_PER_THREAD of them for each thread, so that the
    # threads' shares stay even).  At 1e8 on two threads float32 rules took 0.90 - 1.00 of
    # the time they take on 4 kB tiles (eleven comparisons on the same arrays, median
    # 0.97), and float32 Adam and AdamW came within 1% of the plain loop over the whole
    # array (`plain_pass`) on the same arrays (0.994 - 1.001, three comparisons; 0.92 - 1.00
    # on 4 kB tiles); float64 Lion 0.98 - 1.02 (0.97 - 0.99 on 4 kB).  At 5e5 - 4e6 float32
    # elements (cache) on two threads they were level or better.  The stack buffers hold
    # TILE elements, so whatever holds a whole tile in one keeps short tiles: a chain's
    # tile buffer, mode SINK (the last stage writes it) and complex pair stages; a new tile
    # function with such a buffer must be known to `_holds_a_tile`.  The float64 quotient
    # rules keep what they overwrite in one, but step a long tile in chunks of TILE
    # (`_chunk_end`): that saves their per-tile setup (two divisions for the reciprocals),
    # float64 Adam 1.207 -> 1.167 ns an element in L3 (2.6e5 elements, one thread, the same
    # arrays in turn), and is level at 1e8.
    TILE_BYTES = 4096
    CHAIN_TILE_BYTES = 2048
    LONG_TILE_BYTES = 65536
    LONG_TILES_PER_THREAD = 16
    TILE = TILE_BYTES // 4      # elements per tile at most (float32), for stack buffers


cpdef enum Mode:
    SUBTRACT = 0   # the last stage does x[i] -= d
    STORE = 1      # the last stage does dst[i] = d
    SINK = 2       # the last stage keeps d to itself (AccumGrad before its n-th gradient)


cpdef enum Kind:
    DESCENT = 1
    MOMENTUM
    NESTEROV
    RMSPROP
    RMSPROP_CENTRED
    RPROP
    ADAM
    RADAM
    ADAMAX
    OADAM
    ADAGRAD
    ADADELTA
    AMSGRAD
    NADAM
    ADAMW_COUPLED
    ADAMW_DECOUPLED
    ADABELIEF
    LION
    WEIGHTDECAY
    SIGNDECAY
    CLIPGRAD
    ACCUMGRAD
    CLIPNORM        # ClipNorm, first stage of a program: scale by min(omega/|g|_p, 1)
    FOLDED          # a stage folded into the next one (set per leaf and step, never given)


cpdef enum Status:
    OK = 0
    STOPPED = 1          # a stage stopped the program (AccumGrad before its n-th gradient)
    NONFINITE_NORM = 2   # a ClipNorm(throw=True) met a non-finite norm: nothing was written
    NO_MEMORY = 3
    # Batch only: why a leaf was left for the caller's general path
    BAD_PARAMETER = 4    # not C-contiguous, not writable, or not float32/float64
    BAD_GRADIENT = 5     # not an array of the parameter's dtype, shape and C layout
    BAD_STATE = 6        # the state does not have the buffers the program names
    SHARED = 7           # two entries share a parameter's memory or a Leaf (tied weights)


cdef struct Stage:
    int kind
    int width               # 1: component-wise; 2: pairs of a complex array (rules_complex)
    double hp[MAX_HP]       # hyper-parameters in the compute dtype; some slots are filled
                            # per leaf and step by the stage's prologue
    void* buf[MAX_BUF]      # element-wise state buffers, the parameter's size and dtype
    void* sc                # per-step scalars of the compute dtype (beta_t), or NULL
    long long* ctr          # an int64 step counter (RAdam, AccumGrad), or NULL
    double gs               # the scale of this stage's input: 1, or the scale of a leading
                            # ClipNorm folded into this stage (see _fold_leading_scale)


# Below this many elements a program runs on the calling thread: waking OpenMP workers
# costs more than it gives (see bench/RESULTS.md for the measurement).
cdef Py_ssize_t _parallel_threshold = 32768


def openmp_enabled():
    """True when the kernels were compiled with OpenMP (they run serially otherwise)."""
    return bool(OPTIMISERS_OPENMP)


def isa():
    """The instruction set this build of the kernels was compiled for: "baseline", "avx2"
    or "avx512"."""
    return OPTIMISERS_ISA.decode()


def cpu_runs(str name):
    """Whether this processor (and operating system) can run the build ``name``."""
    return bool(optimisers_cpu_runs(name.encode()))


def max_threads():
    """The number of threads a kernel would use now (``omp_get_max_threads()``).

    It follows ``threadpoolctl.threadpool_limits`` and ``OMP_NUM_THREADS``."""
    return omp_get_max_threads()


def tile_length(itemsize, bint chain=False):
    """Elements per tile of a parameter whose (real) elements have ``itemsize`` bytes: 1024
    float32 or 512 float64 for a program of one loop, half that for a chain whose stages
    run loops of their own.  (Tests place values tile by tile with it.  Most programs of
    one loop run on longer tiles on a large array: `long_tiles`.)"""
    _check_itemsize(itemsize)
    return _elements_per_tile(chain, itemsize)


def long_tiles(itemsize):
    """``(length, per_thread)``: the elements of ``itemsize`` bytes in a long tile, and how
    many long tiles each thread must get before a program of one loop takes them (see
    LONG_TILE_BYTES).  For the tests that must reach long tiles."""
    _check_itemsize(itemsize)
    return LONG_TILE_BYTES // itemsize, LONG_TILES_PER_THREAD


def _check_itemsize(itemsize):
    if itemsize not in (4, 8):
        raise ValueError(f"the kernels run on 4- or 8-byte reals, not {itemsize}-byte ones")


def get_parallel_threshold():
    """Arrays with fewer elements than this are updated on one thread."""
    return _parallel_threshold


def set_parallel_threshold(Py_ssize_t n):
    """Set the element count from which a program is split over OpenMP threads."""
    global _parallel_threshold
    if n < 0:
        raise ValueError(f"the parallel threshold must be >= 0, got {n}")
    _parallel_threshold = n


# ---------------------------------------------------------------------------------------
# Element helpers with numpy's semantics (NaN propagates; sign(0) = 0).

cdef inline floating _sqrt(floating z) noexcept nogil:
    if floating is float:
        return sqrtf(z)
    else:
        return sqrt(z)


cdef inline floating _abs(floating z) noexcept nogil:
    if floating is float:
        return fabsf(z)
    else:
        return fabs(z)


# Written as selects, not branches, so that loops using them vectorise (a compare and a
# blend per lane); the results are numpy's: sign(+-0) = +0, NaN propagates.

cdef inline floating _sign(floating z) noexcept nogil:
    cdef floating s = (<floating> (z > 0)) - (<floating> (z < 0))
    return z if z != z else s


cdef inline floating _max(floating a, floating b) noexcept nogil:
    # np.maximum: NaN if either is NaN
    cdef floating r = a if a >= b else b
    return a if a != a else r


cdef inline floating _min(floating a, floating b) noexcept nogil:
    # np.minimum: NaN if either is NaN
    cdef floating r = a if a <= b else b
    return a if a != a else r


cdef inline void _emit(floating* out, Py_ssize_t i, floating d, bint subtract) noexcept nogil:
    # `subtract` is the same for a whole loop.  Written as a select between two computed
    # values, not a branch: the compiler unswitches a small loop on it, and a larger one
    # (which it does not unswitch) still vectorises with a blend, where a branch left in
    # the loop would keep it scalar.
    cdef floating rest = out[i] - d
    out[i] = rest if subtract else d


include "quotients.pxi"
include "rules_sgd.pxi"
include "rules_adam.pxi"
include "rules_adaptive.pxi"
include "rules_transform.pxi"
include "rules_complex.pxi"
include "norms.pxi"
include "prologues.pxi"


# ---------------------------------------------------------------------------------------
# The driver.

cdef void _run_stage(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                     const floating* g, floating* out, bint subtract) noexcept nogil:
    """One stage over one tile: read ``g[0:n]``, emit ``d`` into ``out[0:n]``.

    ``x``, ``g`` and ``out`` point at the tile already; state buffers are offset by ``off``.
    ``off`` and ``n`` count components (of the real views, for a complex program)."""
    cdef int k = s.kind
    if s.width == 2:
        _run_pair_stage(s, off, n, x, g, out, subtract)
    elif k == DESCENT:
        descent_tile(s, off, n, x, g, out, subtract)
    elif k == MOMENTUM:
        momentum_tile(s, off, n, x, g, out, subtract)
    elif k == NESTEROV:
        nesterov_tile(s, off, n, x, g, out, subtract)
    elif k == RMSPROP:
        rmsprop_tile(s, off, n, x, g, out, subtract)
    elif k == RMSPROP_CENTRED:
        rmsprop_centred_tile(s, off, n, x, g, out, subtract)
    elif k == RPROP:
        rprop_tile(s, off, n, x, g, out, subtract)
    elif k == ADAM:
        adam_family_tile(<AdamStep*> NULL, s, off, n, x, g, out, subtract)
    elif k == RADAM:
        adam_family_tile(<RAdamStep*> NULL, s, off, n, x, g, out, subtract)
    elif k == ADAMAX:
        adamax_tile(s, off, n, x, g, out, subtract)
    elif k == OADAM:
        oadam_tile(s, off, n, x, g, out, subtract)
    elif k == ADAGRAD:
        adagrad_tile(s, off, n, x, g, out, subtract)
    elif k == ADADELTA:
        adadelta_tile(s, off, n, x, g, out, subtract)
    elif k == AMSGRAD:
        amsgrad_tile(s, off, n, x, g, out, subtract)
    elif k == NADAM:
        nadam_tile(s, off, n, x, g, out, subtract)
    elif k == ADAMW_COUPLED:
        adam_family_tile(<AdamWCoupledStep*> NULL, s, off, n, x, g, out, subtract)
    elif k == ADAMW_DECOUPLED:
        adam_family_tile(<AdamWDecoupledStep*> NULL, s, off, n, x, g, out, subtract)
    elif k == ADABELIEF:
        adabelief_tile(s, off, n, x, g, out, subtract)
    elif k == LION:
        lion_tile(s, off, n, x, g, out, subtract)
    elif k == WEIGHTDECAY:
        weightdecay_tile(s, off, n, x, g, out, subtract)
    elif k == SIGNDECAY:
        signdecay_tile(s, off, n, x, g, out, subtract)
    elif k == CLIPGRAD:
        clipgrad_tile(s, off, n, x, g, out, subtract)
    elif k == CLIPNORM:
        scale_tile(s, off, n, x, g, out, subtract)
    elif k == ACCUMGRAD:
        accumgrad_tile(s, off, n, x, g, out, subtract)


cdef inline Py_ssize_t _elements_per_tile(bint chain, size_t itemsize) noexcept nogil:
    """``TILE_BYTES`` of each stream, or ``CHAIN_TILE_BYTES`` for a chain of several loops,
    in elements of ``itemsize`` bytes: an even number, so that no tile splits the pair of a
    complex element."""
    return (CHAIN_TILE_BYTES if chain else TILE_BYTES) // itemsize


cdef inline bint _holds_a_tile(const Stage* s) noexcept nogil:
    """Whether this stage's tile function holds a whole tile in a stack buffer of TILE
    elements: complex pair stages (their steps).  (The float64 quotient rules keep what they
    overwrite in such a buffer too, but step a longer tile in chunks of TILE:
    `_chunk_end`.)"""
    return s.width == 2


cdef inline Py_ssize_t _tile_length(const Stage* stages, int n_stages, Py_ssize_t n,
                                    int mode, int n_threads, floating dummy) noexcept nogil:
    """Elements of the dtype per tile of this program over ``n`` components: a chain when
    more than one of its stages runs a loop (a folded stage runs none); long tiles for a
    program of one loop that holds no tile in a stack buffer (nor writes the tile buffer:
    mode SINK), on an array of at least ``LONG_TILES_PER_THREAD`` long tiles for each of
    ``n_threads``."""
    cdef int k, loops = 0
    cdef bint buffered = mode == SINK
    cdef Py_ssize_t long_length = LONG_TILE_BYTES // sizeof(floating)
    for k in range(n_stages):
        if stages[k].kind != FOLDED:
            loops += 1
            buffered = buffered or _holds_a_tile(&stages[k])
    if (loops <= 1 and not buffered
            and n >= LONG_TILES_PER_THREAD * (n_threads if n_threads > 1 else 1) * long_length):
        return long_length
    return _elements_per_tile(loops > 1, sizeof(floating))


cdef inline void _run_tile(const Stage* stages, int n_stages, Py_ssize_t t, Py_ssize_t n,
                           Py_ssize_t length, floating* x, const floating* g, floating* dst,
                           int mode, floating* tile) noexcept nogil:
    cdef Py_ssize_t off = t * length
    cdef Py_ssize_t m = n - off if n - off < length else length
    cdef const floating* src = g + off
    cdef floating* out
    cdef bint subtract
    cdef int k
    for k in range(n_stages):
        if stages[k].kind == FOLDED:
            continue                        # its scale is the next stage's input scale
        subtract = False
        out = tile
        if k == n_stages - 1:
            if mode == SUBTRACT:
                out = x + off
                subtract = True
            elif mode == STORE:
                out = dst + off
        _run_stage(&stages[k], off, m, x + off, src, out, subtract)
        src = tile


cdef inline void _fold_leading_scale(Stage* stages, int n_stages) noexcept nogil:
    """A leading ClipNorm (its scale known from its prologue) followed by a component-wise
    stage becomes that stage's input scale: ``(g * lam)`` rounded is what the next stage
    would have read from the tile buffer, so the bits are the same, and the program is one
    loop instead of two.  (Pair stages of complex programs read their input unscaled: no
    fold there.)"""
    if (n_stages >= 2 and stages[0].kind == CLIPNORM
            and stages[0].width == 1 and stages[1].width == 1):
        stages[1].gs = stages[0].hp[0]
        stages[0].kind = FOLDED


cdef int _prepare_leaf(Stage* stages, int* n_stages, int* mode, const floating* g,
                       Py_ssize_t n, int comps, int n_threads) noexcept nogil:
    """Run the prologues of one leaf's program (per-step scalars, ClipNorm's norm), then
    fold a leading scale.  Writes nothing but the stages.  Returns OK, STOPPED (then
    ``n_stages`` ends at the stopping stage and ``mode`` is SINK), NONFINITE_NORM or
    NO_MEMORY.  ``n`` counts components, ``comps`` per element."""
    cdef int k, status = OK, st
    for k in range(n_stages[0]):
        st = _prologue(&stages[k], g, n // comps, comps == 2, n_threads)
        if st == STOPPED:
            n_stages[0] = k + 1
            mode[0] = SINK
            status = STOPPED
            break
        if st != OK:
            return st
    _fold_leading_scale(stages, n_stages[0])
    return status


cdef void _run_prepared(const Stage* stages, int n_stages, Py_ssize_t n, floating* x,
                        const floating* g, floating* dst, int mode, int n_threads,
                        int comps) noexcept nogil:
    """Run a prepared program: its tiles, then its epilogues.  ``n`` counts components,
    ``comps`` per element (2 for complex; the parallel threshold counts elements).  Tiles
    have an even length, so they never split a pair."""
    cdef Py_ssize_t length = _tile_length(stages, n_stages, n, mode, n_threads, <floating> 0)
    cdef Py_ssize_t n_tiles = (n + length - 1) // length
    cdef Py_ssize_t t
    cdef floating local_tile[TILE]
    cdef floating* tile
    cdef int k
    if n_threads <= 1 or n // comps < _parallel_threshold or n_tiles < 2:
        for t in range(n_tiles):
            _run_tile(stages, n_stages, t, n, length, x, g, dst, mode, local_tile)
    else:
        with parallel(num_threads=n_threads):
            # one tile buffer per thread, for the whole call (a few kB)
            tile = <floating*> malloc(TILE * sizeof(floating))
            if tile != NULL:
                for t in prange(n_tiles, schedule="static"):
                    _run_tile(stages, n_stages, t, n, length, x, g, dst, mode, tile)
                free(tile)
    for k in range(n_stages):
        _epilogue(<Stage*> &stages[k], <floating> 0)


cdef inline int _check(object a, int typenum, Py_ssize_t n, str what) except -1:
    if not isinstance(a, cnp.ndarray):
        raise TypeError(f"{what} must be a numpy array, got {type(a).__name__}")
    cdef cnp.ndarray arr = <cnp.ndarray> a
    if cnp.PyArray_TYPE(arr) != typenum:
        raise TypeError(f"{what} has dtype {arr.dtype}, the kernel needs the parameter's dtype")
    if not cnp.PyArray_IS_C_CONTIGUOUS(arr):
        raise ValueError(f"{what} must be C-contiguous")
    if n >= 0 and cnp.PyArray_SIZE(arr) != n:
        raise ValueError(f"{what} has {cnp.PyArray_SIZE(arr)} elements, expected {n}")
    return 0


cdef inline void* _scalar_ptr(object a, int typenum, Py_ssize_t need, str what) except? NULL:
    if a is None:
        return NULL
    _check(a, typenum, -1, what)
    if cnp.PyArray_SIZE(<cnp.ndarray> a) < need or not cnp.PyArray_ISWRITEABLE(<cnp.ndarray> a):
        raise ValueError(f"{what} must be a writable array of at least {need} elements")
    return cnp.PyArray_DATA(<cnp.ndarray> a)


cdef int _fill_constants(Stage* st, int kind, object hps, int position) except -1:
    """The parts of a stage that every leaf of a program shares: kind and hyper-parameters.
    ``position`` is the stage's index in its program (a CLIPNORM must be the first)."""
    cdef int j
    if len(hps) > MAX_HP:
        raise ValueError("too many hyper-parameters in a stage")
    if kind == CLIPNORM and position != 0:
        raise ValueError("a CLIPNORM stage must be the first of its program (its norm is "
                         "that of the program's input)")
    if kind == FOLDED or kind < DESCENT or kind > CLIPNORM:
        raise ValueError(f"unknown kernel kind {kind}")
    st.kind = kind
    st.width = 1
    st.gs = 1.0
    for j in range(len(hps)):
        st.hp[j] = hps[j]
    for j in range(len(hps), MAX_HP):
        st.hp[j] = 0.0
    for j in range(MAX_BUF):
        st.buf[j] = NULL
    st.sc = NULL
    st.ctr = NULL
    return 0


cdef int _fill_stage(Stage* st, int kind, object hps, object bufs, object sc, object ctr,
                     int typenum, Py_ssize_t n, int position, int ctypenum=-1) except -1:
    """Fill one stage.  ``typenum`` is the real dtype of the kernel arithmetic, ``n`` the
    number of elements of the parameter.  For a complex parameter ``ctypenum`` is its
    complex dtype: the stage's width and which buffers are complex (the others are real,
    of ``typenum``) follow from the kind."""
    cdef int j, mask = 0
    _fill_constants(st, kind, hps, position)
    if len(bufs) > MAX_BUF:
        raise ValueError("too many buffers in a stage")
    if ctypenum >= 0:
        mask = _pair_buffers(kind)
        if mask >= 0:
            st.width = 2
        elif _componentwise(kind):
            mask = (1 << MAX_BUF) - 1       # every buffer is complex, read component-wise
        else:
            raise TypeError(f"kernel kind {kind} is not defined for complex parameters")
    for j in range(len(bufs)):
        _check(bufs[j], ctypenum if (mask >> j) & 1 else typenum, n, "a state buffer")
        if not cnp.PyArray_ISWRITEABLE(<cnp.ndarray> bufs[j]):
            raise ValueError("state buffers must be writable")
        st.buf[j] = cnp.PyArray_DATA(<cnp.ndarray> bufs[j])
    st.sc = _scalar_ptr(sc, typenum, 2, "a per-step scalar buffer")
    st.ctr = <long long*> _scalar_ptr(ctr, cnp.NPY_INT64, 1, "a step counter")
    return 0


cdef int _float_typenum(cnp.ndarray x) except -1:
    cdef int typenum = cnp.PyArray_TYPE(x)
    if typenum != cnp.NPY_FLOAT32 and typenum != cnp.NPY_FLOAT64:
        raise TypeError(f"kernels run on float32 and float64, got {x.dtype}")
    return typenum


cdef int _real_typenum(int typenum) noexcept:
    """The real dtype of a complex one; -1 for any other."""
    if typenum == cnp.NPY_COMPLEX64:
        return cnp.NPY_FLOAT32
    if typenum == cnp.NPY_COMPLEX128:
        return cnp.NPY_FLOAT64
    return -1


def run_program(list stages, cnp.ndarray x, cnp.ndarray g, object dst=None, int mode=SUBTRACT):
    """Run a program of element-wise stages over one parameter array.

    Parameters
    ----------
    stages : list of (kind, hyper-parameters, buffers, scalars, counter)
        ``kind`` a ``Kind``; hyper-parameters a sequence of at most ``MAX_HP`` floats, already
        rounded to the parameter dtype; buffers a sequence of C-contiguous, writable state
        arrays of the parameter dtype and size; scalars a small array of the parameter dtype
        (the running ``beta_t``) or None; counter a 1-element int64 array or None.
        For a complex parameter, hyper-parameters and scalars are of its real dtype R, and
        so are the second-moment buffers of the "moments" kinds (see ``_pair_buffers``).
    x : ndarray, float32, float64, complex64 or complex128, C-contiguous
        The parameter.  Written in place (``x -= d``) when ``mode`` is ``SUBTRACT``.
    g : ndarray, same dtype and size as ``x``, C-contiguous
        The incoming gradient (read only).
    dst : ndarray or None
        Where ``d`` goes when ``mode`` is ``STORE``.
    mode : Mode

    Returns
    -------
    A ``Status``: ``OK``; ``STOPPED`` when a stage stopped the program (``AccumGrad``
    before its n-th gradient: the stages up to it ran, and nothing was subtracted or
    stored); ``NONFINITE_NORM`` when a leading ``CLIPNORM`` stage with ``throw`` met a
    non-finite norm (then nothing at all was written).
    """
    cdef Stage c_stages[MAX_STAGES]
    cdef int n_stages = len(stages)
    cdef int xtypenum = cnp.PyArray_TYPE(x)
    cdef int typenum = _real_typenum(xtypenum)      # the arithmetic's dtype
    cdef int ctypenum = -1                          # the complex dtype, if any
    cdef int comps = 1                              # components per element
    cdef Py_ssize_t n = cnp.PyArray_SIZE(x)
    cdef int i, status
    cdef void* dst_ptr = NULL
    if typenum >= 0:
        ctypenum = xtypenum
        comps = 2
    else:
        typenum = _float_typenum(x)
    if n_stages == 0 or n_stages > MAX_STAGES:
        raise ValueError(f"a program has 1 to {MAX_STAGES} stages, got {n_stages}")
    _check(x, xtypenum, n, "x")
    _check(g, xtypenum, n, "the gradient")
    if mode == SUBTRACT and not cnp.PyArray_ISWRITEABLE(x):
        raise ValueError("x must be writable")
    if mode == STORE:
        _check(dst, xtypenum, n, "dst")
        if not cnp.PyArray_ISWRITEABLE(<cnp.ndarray> dst):
            raise ValueError("dst must be writable")
        dst_ptr = cnp.PyArray_DATA(<cnp.ndarray> dst)
    for i in range(n_stages):
        kind, hps, bufs, sc, ctr = stages[i]
        _fill_stage(&c_stages[i], kind, hps, bufs, sc, ctr, typenum, n, i, ctypenum)
    cdef int n_threads = omp_get_max_threads()
    n = n * comps          # the kernels walk the components
    if typenum == cnp.NPY_FLOAT32:
        with nogil:
            status = _prepare_leaf[float](c_stages, &n_stages, &mode,
                                          <const float*> cnp.PyArray_DATA(g), n, comps,
                                          n_threads)
            if status == OK or status == STOPPED:
                _run_prepared[float](c_stages, n_stages, n, <float*> cnp.PyArray_DATA(x),
                                     <const float*> cnp.PyArray_DATA(g), <float*> dst_ptr,
                                     mode, n_threads, comps)
    else:
        with nogil:
            status = _prepare_leaf[double](c_stages, &n_stages, &mode,
                                           <const double*> cnp.PyArray_DATA(g), n, comps,
                                           n_threads)
            if status == OK or status == STOPPED:
                _run_prepared[double](c_stages, n_stages, n, <double*> cnp.PyArray_DATA(x),
                                      <const double*> cnp.PyArray_DATA(g), <double*> dst_ptr,
                                      mode, n_threads, comps)
    if status == NO_MEMORY:
        raise MemoryError("could not allocate the partial sums of a norm")
    return status


include "batch.pxi"


# Module-level names (plain ints) for every enum member, as the Python side uses them.
for _enum in (Kind, Mode, NormKind, Status):
    globals().update({_name: int(_value) for _name, _value in _enum.__members__.items()})
del _enum
