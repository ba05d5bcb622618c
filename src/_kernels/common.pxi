# What every part of the kernels shares: the stage of a program, the table of kinds that the
# rule families fill (`register_kind`), and the element helpers of the tile functions.

cdef enum:
    MAX_HP = 12             # doubles of named hyper-parameters a stage carries
    MAX_BUF = 4             # state buffers a stage may have
    MAX_STAGES = 32
    MAX_KINDS = 64
    # Bytes of each stream per tile: a program of one loop, a chain of several loops, and a
    # program of one loop on a large array (at least LONG_TILES_PER_THREAD long tiles for
    # each thread, so that the threads' shares stay even).  bench/RESULTS.md has the
    # measurements behind each length.
    TILE_BYTES = 4096
    CHAIN_TILE_BYTES = 2048
    LONG_TILE_BYTES = 65536
    LONG_TILES_PER_THREAD = 16
    TILE = TILE_BYTES // 4      # elements per tile at most (float32): stack buffers' size


cpdef enum Mode:
    SUBTRACT = 0   # the last stage does x[i] -= d
    STORE = 1      # the last stage does dst[i] = d
    SINK = 2       # the last stage keeps d to itself (AccumGrad before its n-th gradient)


cpdef enum Status:
    OK = 0
    STOPPED = 1          # a stage stopped the program (AccumGrad before its n-th gradient)
    NONFINITE_NORM = 2   # a ClipNorm(throw=True) met a non-finite norm: nothing was written
    NO_MEMORY = 3
    # Batch only: why a leaf was left for the caller's general path
    BAD_PARAMETER = 4    # not C-contiguous, not writable, or not a float the kernels run
    BAD_GRADIENT = 5     # not an array of the parameter's dtype (or, for a 16-bit one,
                         # float32), shape and C layout
    BAD_STATE = 6        # the state does not have the buffers the program names
    SHARED = 7           # two entries share a parameter's memory or a Leaf (tied weights)


cpdef enum Format:
    # How a parameter's elements are stored: in the dtype the kernels compute in (float32,
    # float64, the components of a complex number), or in 16 bits, computed in float32
    # (staging.pxi).
    NATIVE = 0
    F16 = 1         # IEEE binary16 (numpy's float16)
    BF16 = 2        # bfloat16: the upper half of a float32 (ml_dtypes.bfloat16)


cdef struct Stage:
    int kind                # an index into KINDS
    int width               # 1: component-wise; 2: pairs of a complex array
    double hp[MAX_HP]       # the kind's hyper-parameter struct (e.g. AdamHP) laid over it:
                            # given by the rule in float64, some fields set per step by the
                            # kind's `before` hook; a tile function rounds each to its dtype
    void* buf[MAX_BUF]      # element-wise state buffers, the parameter's size and dtype
                            # (the compute dtype: float32 for a 16-bit parameter)
    int low_bufs            # bit j set: buf[j] holds the 16-bit format of its parameter
                            # instead (staging.pxi converts it tile by tile)
    double* sc              # per-step float64 scalars (the running beta^t), or NULL
    long long* ctr          # an int64 step counter (RAdam, AccumGrad), or NULL
    double gs               # the scale of this stage's input: 1, or the scale of a
                            # leading stage folded into this one
    double fold             # a LEADS stage: the scale its `before` hook found


ctypedef void (*Tile32)(const Stage* s, Py_ssize_t off, Py_ssize_t n, float* x,
                        const float* g, float* out, bint subtract) noexcept nogil
ctypedef void (*Tile64)(const Stage* s, Py_ssize_t off, Py_ssize_t n, double* x,
                        const double* g, double* out, bint subtract) noexcept nogil
# Per-step work before the tiles (derive per-step fields of hp from sc and ctr; a LEADS
# kind reads the whole input g, of `n_elements` elements, float32 when `single`).  Returns
# a Status: OK, STOPPED, NONFINITE_NORM or NO_MEMORY.  Writes nothing but the stage.
ctypedef int (*Before)(Stage* s, const void* g, Py_ssize_t n_elements, bint pairs,
                       int n_threads, bint single) noexcept nogil
# Per-step work after the tiles: advance sc and ctr.
ctypedef void (*After)(Stage* s) noexcept nogil


cdef enum ComplexForm:
    REFUSED = 0             # orders values: not defined for complex parameters
    COMPONENTWISE = 1       # runs unchanged on the real views (width 1)
    PAIRS = 2               # pair-aware tile functions (width 2), some buffers real


cdef enum KindFlags:
    LEADS = 1               # first of its program only; `before` reads g and sets `fold`,
                            # which becomes the next stage's input scale (ClipNorm)
    KEEPS_TILE = 2          # its float64 tile keeps what it overwrites in a TILE-long stack
                            # buffer when the build divides by reciprocal (quotients.pxi)
    AFTER_STEP = 4          # runs after the program's step is emitted, in the same tile
                            # (Lookahead, EMA: rules_averaged.pxi); such stages trail the
                            # program.  Its tile function gets x and, as both g and out,
                            # where the step went: with `subtract` (mode SUBTRACT) x[i] is
                            # the new parameter, which it may set through out[i]; without
                            # (mode STORE) the new parameter is x[i] - out[i], and setting
                            # it means rewriting the step out[i]


cdef struct Kind:
    Tile32 tile32
    Tile64 tile64
    Tile32 pair32           # the pair forms (ComplexForm PAIRS), else NULL
    Tile64 pair64
    int complex_form
    int complex_buffers     # PAIRS: bit j set when buffer j holds complex values (offset in
                            # components), clear when real (one value per complex element)
    Before before           # or NULL
    After after             # or NULL
    int flags


cdef Kind KINDS[MAX_KINDS]
cdef int n_kinds = 0

#: kind name -> (index, names of its hyper-parameter fields in layout order)
KIND_TABLE = {}


cdef int register_kind(str name, Tile32 tile32, Tile64 tile64, dict hp_layout,
                       size_t hp_size, int complex_form=REFUSED, Before before=NULL,
                       After after=NULL, int flags=0, Tile32 pair32=NULL, Tile64 pair64=NULL,
                       int complex_buffers=0) except -1:
    """Add a kind to the table (the arguments after ``hp_size`` are positional: Cython's
    cdef functions take no keywords past an omitted default).  ``hp_layout`` is the kind's
    hp struct converted to a dict (its field names in layout order; every field a double,
    so field j is ``hp[j]``)."""
    global n_kinds
    if n_kinds >= MAX_KINDS or name in KIND_TABLE:
        raise RuntimeError(f"cannot register kernel kind {name!r}")
    if hp_size != len(hp_layout) * sizeof(double) or len(hp_layout) > MAX_HP:
        raise RuntimeError(f"the hp struct of {name!r} must be at most {MAX_HP} doubles")
    if (complex_form == PAIRS) != (pair32 != NULL and pair64 != NULL):
        raise RuntimeError(f"{name!r}: pair tile functions go with complex_form PAIRS")
    cdef Kind* k = &KINDS[n_kinds]
    k.tile32 = tile32
    k.tile64 = tile64
    k.pair32 = pair32
    k.pair64 = pair64
    k.complex_form = complex_form
    k.complex_buffers = complex_buffers
    k.before = before
    k.after = after
    k.flags = flags
    KIND_TABLE[name] = (n_kinds, tuple(hp_layout))
    n_kinds += 1
    return n_kinds - 1


# ---------------------------------------------------------------------------------------
# Element helpers with numpy's semantics (NaN propagates; sign(0) = 0).  Written as selects,
# not branches, so that loops using them vectorise (a compare and a blend per lane).

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


# ---------------------------------------------------------------------------------------
# Helpers of the pair-aware tile functions (complex parameters on their real views: element
# k is the components 2k (re) and 2k+1 (im); `off` and `n` count components, a tile never
# splits a pair; complex buffers are offset by `off`, real ones by `off // 2`).

cdef inline floating _abs2(floating re, floating im) noexcept nogil:
    return re * re + im * im


cdef inline void _emit_all(floating* out, const floating* d, Py_ssize_t n,
                           bint subtract) noexcept nogil:
    # The pair loops write their steps into a tile-sized buffer on the stack, and this
    # small loop emits them: the pair loops have no branch left (their bodies are too large
    # for the compiler to unswitch on `subtract`), so both vectorise.
    cdef Py_ssize_t j
    for j in range(n):
        _emit(out, j, d[j], subtract)
