# Norms for ClipNorm, with a reduction order fixed by the data alone (never by the number of
# threads): blocks of NORM_BLOCK elements, each summed in float64 over LANES interleaved
# accumulators (so the compiler can vectorise without reassociating), lanes combined left to
# right, then block partials summed left to right.  See conventions in tests/reference.py.
#
# Complex gradients are reduced over their elements (pairs of components), with the same
# blocking counted in elements: a_i = re*re + im*im (p = 2), hypot(re, im) (p = 1; other p
# via pow(hypot, p); +-inf), 1.0 for z != 0 (p = 0), all in float64 from the components.

cdef enum:
    NORM_BLOCK = 8192
    LANES = 8
    NORM_CHUNK = 128        # elements of one block before the other's (_two_blocks_squares)

cpdef enum NormKind:
    NORM_SQUARES = 0      # sum |g|^2        (p = 2)
    NORM_ABS = 1          # sum |g|          (p = 1)
    NORM_COUNT = 2        # count of g != 0  (p = 0)
    NORM_POWER = 3        # sum |g|^p        (other finite p)
    NORM_MAX = 4          # max |g|          (p = inf)
    NORM_MIN = 5          # min |g|          (p = -inf)


cdef inline double _lanes_total(double* lanes) noexcept nogil:
    cdef double total = lanes[0]
    cdef int l
    for l in range(1, LANES):
        total = total + lanes[l]
    return total


cdef extern from *:
    """
    #if defined(__FMA__)
    #define OPTIMISERS_HAS_FMA 1
    #else
    #define OPTIMISERS_HAS_FMA 0
    #endif
    """
    bint OPTIMISERS_HAS_FMA


cdef inline double _plus_square(double acc, floating a) noexcept nogil:
    # acc + a^2 in float64, the square rounded before the add (the reference's order).  A
    # float32 a squares exactly in float64 (24 + 24 bits), so a fused multiply-add gives the
    # same bits with one instruction less, where the build has FMA (the passes over large
    # arrays are short of arithmetic throughput, not of bandwidth).  A float64 square is
    # rounded.
    cdef double w = <double> a
    if floating is float and OPTIMISERS_HAS_FMA:
        return fma(w, w, acc)
    return acc + w * w


# One loop per kind, so that each vectorises (a branch on the kind inside the loop does not).
# Element i of the block goes to lane i % LANES; the tail continues the same lanes.

cdef double _block_squares(const floating* g, Py_ssize_t n) noexcept nogil:
    # (not _plus_square: gcc's loop with it took 15% longer on 1000 float32 in cache)
    cdef double lanes[LANES]
    cdef double a
    cdef Py_ssize_t i, j
    cdef int l
    for l in range(LANES):
        lanes[l] = 0.0
    for j in range(n // LANES):
        for l in range(LANES):
            a = <double> g[j * LANES + l]
            lanes[l] += a * a
    for i in range((n // LANES) * LANES, n):
        a = <double> g[i]
        lanes[i % LANES] += a * a
    return _lanes_total(lanes)


cdef inline void _add_squares(double* lanes, const floating* a, Py_ssize_t n) noexcept nogil:
    # lanes[k % LANES] += a[k]^2 for k < n, in order (the lanes above, continued from one
    # chunk to the next).  A loop of its own over memory lanes: inlined into a loop that
    # also accumulates other lanes, gcc kept a lane of each in scalar registers besides.
    cdef Py_ssize_t jj, k
    cdef int l
    for jj in range(n // LANES):
        for l in range(LANES):
            lanes[l] = _plus_square(lanes[l], a[jj * LANES + l])
    for k in range((n // LANES) * LANES, n):
        lanes[k % LANES] = _plus_square(lanes[k % LANES], a[k])


cdef void _two_blocks_squares(const floating* a, const floating* b, double* partial_a,
                              double* partial_b) noexcept nogil:
    # The partials of two whole blocks, each formed as _block_squares forms it (the same
    # bits), a chunk of one then a chunk of the other: one block's lanes are chains of
    # dependent adds, and two blocks give the core twice the adds to overlap (the norm of
    # 1e8 float32 went from 1.3x a plain read of it to 1.0x; bench/RESULTS.md).
    cdef double la[LANES]
    cdef double lb[LANES]
    cdef Py_ssize_t c
    cdef int l
    for l in range(LANES):
        la[l] = 0.0
        lb[l] = 0.0
    for c in range(NORM_BLOCK // NORM_CHUNK):
        _add_squares(la, a + c * NORM_CHUNK, NORM_CHUNK)
        _add_squares(lb, b + c * NORM_CHUNK, NORM_CHUNK)
    partial_a[0] = _lanes_total(la)
    partial_b[0] = _lanes_total(lb)


cdef double _block_abs(const floating* g, Py_ssize_t n) noexcept nogil:
    cdef double lanes[LANES]
    cdef Py_ssize_t i, j
    cdef int l
    for l in range(LANES):
        lanes[l] = 0.0
    for j in range(n // LANES):
        for l in range(LANES):
            lanes[l] += fabs(<double> g[j * LANES + l])
    for i in range((n // LANES) * LANES, n):
        lanes[i % LANES] += fabs(<double> g[i])
    return _lanes_total(lanes)


cdef double _block_count(const floating* g, Py_ssize_t n) noexcept nogil:
    cdef double lanes[LANES]
    cdef Py_ssize_t i, j
    cdef int l
    for l in range(LANES):
        lanes[l] = 0.0
    for j in range(n // LANES):
        for l in range(LANES):
            lanes[l] += 1.0 if g[j * LANES + l] != 0 else 0.0
    for i in range((n // LANES) * LANES, n):
        lanes[i % LANES] += 1.0 if g[i] != 0 else 0.0
    return _lanes_total(lanes)


cdef double _block_power(const floating* g, Py_ssize_t n, double p) noexcept nogil:
    cdef double lanes[LANES]
    cdef Py_ssize_t i
    cdef int l
    for l in range(LANES):
        lanes[l] = 0.0
    for i in range(n):
        lanes[i % LANES] += pow(fabs(<double> g[i]), p)
    return _lanes_total(lanes)


# The same over n complex elements (2n components).

cdef double _pair_block_squares(const floating* g, Py_ssize_t n) noexcept nogil:
    cdef double lanes[LANES]
    cdef double re, im
    cdef Py_ssize_t i, j, k
    cdef int l
    for l in range(LANES):
        lanes[l] = 0.0
    for j in range(n // LANES):
        for l in range(LANES):
            k = 2 * (j * LANES + l)
            re = <double> g[k]
            im = <double> g[k + 1]
            lanes[l] += re * re + im * im
    for i in range((n // LANES) * LANES, n):
        re = <double> g[2 * i]
        im = <double> g[2 * i + 1]
        lanes[i % LANES] += re * re + im * im
    return _lanes_total(lanes)


cdef double _pair_block_abs(const floating* g, Py_ssize_t n) noexcept nogil:
    cdef double lanes[LANES]
    cdef Py_ssize_t i
    cdef int l
    for l in range(LANES):
        lanes[l] = 0.0
    for i in range(n):
        lanes[i % LANES] += hypot(<double> g[2 * i], <double> g[2 * i + 1])
    return _lanes_total(lanes)


cdef double _pair_block_count(const floating* g, Py_ssize_t n) noexcept nogil:
    cdef double lanes[LANES]
    cdef Py_ssize_t i
    cdef int l
    for l in range(LANES):
        lanes[l] = 0.0
    for i in range(n):
        lanes[i % LANES] += 1.0 if (g[2 * i] != 0 or g[2 * i + 1] != 0) else 0.0
    return _lanes_total(lanes)


cdef double _pair_block_power(const floating* g, Py_ssize_t n, double p) noexcept nogil:
    cdef double lanes[LANES]
    cdef Py_ssize_t i
    cdef int l
    for l in range(LANES):
        lanes[l] = 0.0
    for i in range(n):
        lanes[i % LANES] += pow(hypot(<double> g[2 * i], <double> g[2 * i + 1]), p)
    return _lanes_total(lanes)


cdef double _block_sum(const floating* g, Py_ssize_t n, int how, double p,
                       bint pairs) noexcept nogil:
    if pairs:
        if how == NORM_SQUARES:
            return _pair_block_squares(g, n)
        elif how == NORM_ABS:
            return _pair_block_abs(g, n)
        elif how == NORM_COUNT:
            return _pair_block_count(g, n)
        return _pair_block_power(g, n, p)
    if how == NORM_SQUARES:
        return _block_squares(g, n)
    elif how == NORM_ABS:
        return _block_abs(g, n)
    elif how == NORM_COUNT:
        return _block_count(g, n)
    return _block_power(g, n, p)


cdef inline double _magnitude(const floating* g, Py_ssize_t i, bint pairs) noexcept nogil:
    if pairs:
        return hypot(<double> g[2 * i], <double> g[2 * i + 1])
    return fabs(<double> g[i])


cdef double _block_extreme(const floating* g, Py_ssize_t n, bint want_max,
                           bint pairs) noexcept nogil:
    # max or min of |g| in float64; NaN wins
    cdef Py_ssize_t i
    cdef double a, r = _magnitude(g, 0, pairs)
    for i in range(1, n):
        a = _magnitude(g, i, pairs)
        if r != r:
            break
        if a != a or (want_max and a > r) or (not want_max and a < r):
            r = a
    return r


cdef inline void _block(const floating* g, Py_ssize_t n, Py_ssize_t b, int how, double p,
                        bint pairs, double* partials) noexcept nogil:
    """The partial of block b."""
    cdef Py_ssize_t start = b * NORM_BLOCK
    cdef Py_ssize_t m = n - start if n - start < NORM_BLOCK else NORM_BLOCK
    cdef Py_ssize_t comps = 2 if pairs else 1
    if how == NORM_MAX or how == NORM_MIN:
        partials[b] = _block_extreme(g + start * comps, m, how == NORM_MAX, pairs)
    else:
        partials[b] = _block_sum(g + start * comps, m, how, p, pairs)


cdef void _block_pair(const floating* g, Py_ssize_t n, Py_ssize_t n_blocks, Py_ssize_t k,
                      int how, double p, bint pairs, double* partials) noexcept nogil:
    """The partials of blocks k and k + n_blocks // 2: two streams far apart, which one
    core reads faster than one (a tenth, bench/RESULTS.md); for k = n_blocks // 2 (an odd
    count of blocks), the last block alone."""
    cdef Py_ssize_t other = k + n_blocks // 2
    if other == n_blocks - 1 and n_blocks % 2 == 1:
        _block(g, n, other, how, p, pairs, partials)
        return
    if how == NORM_SQUARES and not pairs and (other + 1) * NORM_BLOCK <= n:
        _two_blocks_squares(g + k * NORM_BLOCK, g + other * NORM_BLOCK, partials + k,
                            partials + other)
        return
    _block(g, n, k, how, p, pairs, partials)
    _block(g, n, other, how, p, pairs, partials)


cdef double _reduce(const floating* g, Py_ssize_t n, int how, double p, int n_threads,
                    bint pairs) noexcept nogil:
    # n elements; with ``pairs`` each is two components (a complex number)
    cdef Py_ssize_t n_blocks = (n + NORM_BLOCK - 1) // NORM_BLOCK
    cdef Py_ssize_t b, k
    cdef double total, part
    cdef double* partials
    cdef bint extreme = how == NORM_MAX or how == NORM_MIN
    cdef double local[64]               # the partials of arrays up to 64 blocks: no malloc
    if n == 0:
        return 0.0
    if n_blocks <= 64:
        partials = &local[0]
    else:
        partials = <double*> malloc(n_blocks * sizeof(double))
    if partials == NULL:
        return -1.0
    if n_threads <= 1 or n < _parallel_threshold or n_blocks < 2:
        for k in range((n_blocks + 1) // 2):
            _block_pair(g, n, n_blocks, k, how, p, pairs, partials)
    else:
        for k in prange((n_blocks + 1) // 2, schedule="static", num_threads=n_threads):
            _block_pair(g, n, n_blocks, k, how, p, pairs, partials)
    if extreme:
        total = partials[0]
        for b in range(1, n_blocks):
            part = partials[b]
            if total != total:
                break
            if (part != part or (how == NORM_MAX and part > total)
                    or (how == NORM_MIN and part < total)):
                total = part
    else:
        total = 0.0
        for b in range(n_blocks):
            total = total + partials[b]
    if partials != &local[0]:
        free(partials)
    return total


cdef inline double _finish_norm(double total, int how, double p, Py_ssize_t n) noexcept nogil:
    """The p-norm from the raw reduction of ``n`` elements."""
    if n == 0:
        return 0.0                      # conventions §7, also for p < 0
    if how == NORM_SQUARES:
        return sqrt(total)
    if how == NORM_POWER:
        return pow(total, 1.0 / p)      # IEEE: 0 ** negative = inf, overflow = inf
    return total


def p_partial(cnp.ndarray g, int how, double p=2.0):
    """The raw reduction behind ``p_norm`` before it is finished (the sum of ``|g|^p``, of
    squares, the max...): what ``global_norm`` and the engine combine over many arrays.

    Accumulated in float64 over ``g``, a C-contiguous float32, float64, complex64 or
    complex128 array (complex: |g_i| is ``hypot(re, im)``, |g_i|^2 is ``re*re + im*im``).
    The result depends on the data only, never on the number of threads."""
    cdef int typenum = cnp.PyArray_TYPE(g)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(g)
    cdef int n_threads = omp_get_max_threads()
    cdef double r
    if not cnp.PyArray_IS_C_CONTIGUOUS(g):
        raise ValueError("the gradient must be C-contiguous")
    cdef bint pairs = typenum == cnp.NPY_COMPLEX64 or typenum == cnp.NPY_COMPLEX128
    if typenum == cnp.NPY_FLOAT32 or typenum == cnp.NPY_COMPLEX64:
        with nogil:
            r = _reduce[float](<const float*> cnp.PyArray_DATA(g), n, how, p, n_threads, pairs)
    elif typenum == cnp.NPY_FLOAT64 or typenum == cnp.NPY_COMPLEX128:
        with nogil:
            r = _reduce[double](<const double*> cnp.PyArray_DATA(g), n, how, p, n_threads,
                                pairs)
    else:
        raise TypeError(f"norms are computed for float32, float64, complex64 and complex128, "
                        f"got {g.dtype}")
    if r == -1.0 and n > 0:             # sums and magnitudes are >= 0: -1 is malloc failing
        raise MemoryError("could not allocate the partial sums of a norm")
    return r


def p_norm(cnp.ndarray g, int how, double p=2.0):
    """The p-norm behind ``ClipNorm`` (``how`` is p's ``NormKind``), as a Python float: the
    reduction of ``p_partial``, finished."""
    return _finish_norm(p_partial(g, how, p), how, p, cnp.PyArray_SIZE(g))


# The partials of many arrays combined exactly (global norms): a running sum kept as
# Shewchuk's expansion, the algorithm of math.fsum, so that the engine's math.fsum over the
# expansions of every group is the exactly rounded sum of all the partials, however the
# leaves were split into batches and groups.  For p = +-inf, the max or min, NaN winning.

cdef enum:
    _EXPANSION = 64     # Shewchuk's partials of non-negative doubles: about 40 at most


cdef int _expand(double* parts, int m, double x) noexcept nogil:
    """Add the finite ``x`` to the expansion ``parts[0:m]`` (non-overlapping partials,
    smallest first, whose sum is exact: Shewchuk's Grow-Expansion with zero elimination,
    as math.fsum, with Knuth's TwoSum, which needs no comparison of magnitudes, so that
    no branch waits on the data): the new length, or -1 when a sum overflows (all inputs
    are >= 0 here, so the exact total is then beyond float64)."""
    cdef int i = 0, k
    cdef double y, hi, b, lo
    for k in range(m):
        y = parts[k]
        hi = x + y
        b = hi - x
        lo = (x - (hi - b)) + (y - b)   # exactly x + y - hi
        parts[i] = lo
        i += lo != 0.0
        x = hi
    if not (x - x == 0):              # an overflow: inf from there on, the inputs are >= 0
        return -1
    if i >= _EXPANSION:               # cannot happen for doubles >= 0; stay in bounds
        return -1
    parts[i] = x
    return i + 1


cdef struct PartialSum:
    double parts[_EXPANSION]
    int m                   # the expansion's length
    int how                 # the NormKind of p
    double special          # an infinite or NaN partial (NaN over inf), or 0
    double best             # NORM_MAX / NORM_MIN: the extreme so far
    bint have               # ... once there is one


cdef inline void _partial_sum_start(PartialSum* acc, int how) noexcept nogil:
    acc.m = 0
    acc.how = how
    acc.special = 0.0
    acc.best = 0.0
    acc.have = False


cdef inline void _partial_sum_add(PartialSum* acc, double x) noexcept nogil:
    if acc.how == NORM_MAX or acc.how == NORM_MIN:
        if not acc.have or acc.best == acc.best and (
                x != x or (acc.how == NORM_MAX and x > acc.best)
                or (acc.how == NORM_MIN and x < acc.best)):
            acc.best = x
        acc.have = True
    elif not (x - x == 0):          # inf or NaN: the sum is that (NaN over inf)
        if acc.special == 0.0 or x != x:
            acc.special = x
    else:
        acc.m = _expand(acc.parts, acc.m, x)
        if acc.m < 0:               # the exact sum overflows float64
            if acc.special == 0.0:
                acc.special = INFINITY
            acc.m = 0


cdef int _partial_sum_into(PartialSum* acc, list out) except -1:
    """Append the few floats whose exact sum is the sum so far (or the extreme) to ``out``."""
    cdef int i
    if acc.how == NORM_MAX or acc.how == NORM_MIN:
        if acc.have:
            out.append(acc.best)
    elif acc.special != 0.0:
        out.append(acc.special)
    else:
        for i in range(acc.m):
            out.append(acc.parts[i])
    return 0
