# Adafactor (and, in rules_lamb.pxi, LAMB): rules whose element-wise step needs whole-array
# reductions first.
#
# Adafactor (torch.optim.Adafactor) scales its step by max(1, RMS(u)/d), u the whole
# array's update, and (for arrays of 2 or more dimensions) builds its second moment from
# the row and column means of g^2.  LAMB (optax.lamb) scales its step by the trust ratio
# |x|/|u| of the whole array.  So each step is: reductions over the arrays, written nowhere
# (`factored_sums`, `adafactor_norms`, `lamb_norms`: float64, in blocks fixed by the
# data, never by the thread count, as norms.pxi), then one fused element-wise pass (the
# tile functions below, a kernel kind each) that forms the same update again, with the
# same inline helpers, hence the same bits, and writes the state and x.  The rule classes
# (optimisers/_rules_factored.py) call the reductions and add the stage.

cdef enum:
    FACTOR_CHUNK = 512      # columns per task of the row/column sums
    # Elements of u formed at a time (norm passes and Adafactor's steps).  Short, so that
    # the out-of-order core overlaps one chunk's divider-bound loop (square root and
    # division) with the previous chunk's additions and loads: the norm passes on 1e8
    # float32 went from about 0.8 of their probe (512) to about 0.9 (64 and 128 alike, 32
    # slower); bench/RESULTS.md.
    U_CHUNK = 128


# ---------------------------------------------------------------------------------------
# Adafactor

cdef struct AdafactorHP:
    double w                # t^beta2_decay: this step's lerp weight of the new g^2
    double eps1sq           # eps1^2: the floor of the variance estimate
    double decay            # eta * lambda_ (decoupled weight decay)
    double step             # alpha / denom: the step's scale
    double rows             # factored: rows n of each matrix (the last two dimensions n x m)
    double cols             # ... columns m
    double n_rows           # ... rows of all the matrices (B n): where the columns start


cdef inline floating _rsqrt_times(floating est, floating eps1sq, floating g) noexcept nogil:
    # torch: est.clamp_(min=eps1^2).rsqrt_() then * g   (NaN passes the clamp)
    return (<floating> 1 / _sqrt(_max(est, eps1sq))) * g


cdef struct UForm:
    # what forms Adafactor's update u of elements [e, e + len) (read only)
    const void* g
    const void* x           # the parameter (its norm is taken in the same pass)
    const void* v           # vector form: the second moment before this step
    const double* factors   # factored form: new row factors, column factors, clamped means
    Py_ssize_t rows, cols, n_rows
    double w, eps1sq
    bint factored


cdef inline void _factored_u(const UForm* f, Py_ssize_t e, Py_ssize_t n, floating* u,
                             const floating* g, floating gs) noexcept nogil:
    """u[0:n] of the flat elements e..e+n of a factored array, a row segment at a time:
    u = g / sqrt(max((r_i c_j) / max(mean(r), eps1), eps1^2))."""
    cdef Py_ssize_t i = 0, row, j, seg, k, b
    cdef floating r, rm, eps1sq = <floating> f.eps1sq
    cdef const double* col
    while i < n:
        row = (e + i) // f.cols
        j = (e + i) - row * f.cols
        seg = f.cols - j if f.cols - j < n - i else n - i
        b = row // f.rows
        r = <floating> f.factors[row]
        rm = <floating> f.factors[f.n_rows + (f.n_rows // f.rows) * f.cols + b]
        col = f.factors + f.n_rows + b * f.cols + j
        for k in range(seg):
            u[i + k] = _rsqrt_times((r * <floating> col[k]) / rm, eps1sq, g[i + k] * gs)
        i += seg


cdef inline void _vector_u(const UForm* f, Py_ssize_t e, Py_ssize_t n, floating* u,
                           const floating* g, const floating* v, floating* v_out,
                           floating gs) noexcept nogil:
    """u[0:n] of a vector's elements e..e+n (g and v point at e): v' = lerp(v, g^2, w),
    u = g / sqrt(max(v', eps1^2)); v' goes to v_out (v itself, or a scratch buffer: a
    store on a condition would keep the loop scalar)."""
    cdef floating w = <floating> f.w, omw = <floating> 1 - w
    cdef floating eps1sq = <floating> f.eps1sq, gi, vi
    cdef bint small = _abs(w) < <floating> 0.5
    cdef Py_ssize_t k
    for k in range(n):
        gi = g[k] * gs
        vi = _lerp(v[k], gi * gi, w, omw, small)
        v_out[k] = vi
        u[k] = _rsqrt_times(vi, eps1sq, gi)


cdef void adafactor_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                         const floating* g, floating* out, bint subtract) noexcept nogil:
    # factored: d = (eta lambda) x + (alpha/denom) u, u from the factors in s.sc
    cdef const AdafactorHP* h = <const AdafactorHP*> s.hp
    cdef UForm f
    cdef floating u[U_CHUNK]       # tiles may be longer than TILE (one-loop programs)
    cdef floating decay = <floating> h.decay, step = <floating> h.step
    cdef Py_ssize_t i, c0, m
    f.factors = s.sc
    f.rows, f.cols, f.n_rows = <Py_ssize_t> h.rows, <Py_ssize_t> h.cols, <Py_ssize_t> h.n_rows
    f.eps1sq = h.eps1sq
    c0 = 0
    while c0 < n:
        m = n - c0 if n - c0 < U_CHUNK else U_CHUNK
        _factored_u(&f, off + c0, m, u, g + c0, <floating> s.gs)
        for i in range(m):
            _emit(out, c0 + i, decay * x[c0 + i] + step * u[i], subtract)
        c0 += m


cdef void adafactor_vector_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                                const floating* g, floating* out,
                                bint subtract) noexcept nogil:
    # vectors: v <- lerp(v, g^2, w) ; d = (eta lambda) x + (alpha/denom) u
    cdef const AdafactorHP* h = <const AdafactorHP*> s.hp
    cdef UForm f
    cdef floating u[U_CHUNK]
    cdef floating* v = (<floating*> s.buf[0]) + off
    cdef floating decay = <floating> h.decay, step = <floating> h.step
    cdef Py_ssize_t i, c0, m
    f.w, f.eps1sq = h.w, h.eps1sq
    c0 = 0
    while c0 < n:
        m = n - c0 if n - c0 < U_CHUNK else U_CHUNK
        _vector_u(&f, off + c0, m, u, g + c0, v + c0, v + c0, <floating> s.gs)
        for i in range(m):
            _emit(out, c0 + i, decay * x[c0 + i] + step * u[i], subtract)
        c0 += m


cdef void _u_block(const UForm* f, Py_ssize_t start, Py_ssize_t n, double* sums,
                   floating dtype) noexcept nogil:
    # sums[0] = sum of x^2, sums[1] = sum of u^2 over one NORM_BLOCK block, in float64:
    # norms.pxi's LANES interleaved lanes each (element k of the block in lane k % LANES)
    cdef double xl[LANES]
    cdef double ul[LANES]
    cdef floating u[U_CHUNK]
    cdef floating scratch[U_CHUNK]      # v', not stored
    cdef Py_ssize_t s0 = 0, m
    cdef const floating* g = <const floating*> f.g
    cdef int l
    for l in range(LANES):
        xl[l] = 0.0
        ul[l] = 0.0
    while s0 < n:                       # U_CHUNK is a multiple of LANES
        m = n - s0 if n - s0 < U_CHUNK else U_CHUNK
        if f.factored:
            _factored_u(f, start + s0, m, u, g + start + s0, <floating> 1)
        else:
            _vector_u(f, start + s0, m, u, g + start + s0,
                      (<const floating*> f.v) + start + s0, scratch, <floating> 1)
        _add_squares(ul, u, m)
        _add_squares(xl, (<const floating*> f.x) + start + s0, m)
        s0 += m
    sums[0] = _lanes_total(xl)
    sums[1] = _lanes_total(ul)


cdef int _adafactor_sums(const UForm* f, Py_ssize_t n, int n_threads, double* out,
                         floating dtype) noexcept nogil:
    """The sums of x^2 and of u^2 over n elements: blocks of NORM_BLOCK, their partials
    added left to right."""
    cdef Py_ssize_t n_blocks = (n + NORM_BLOCK - 1) // NORM_BLOCK, b, start
    cdef double local[128]
    cdef double* partials = &local[0]
    if n_blocks > 64:
        partials = <double*> malloc(2 * n_blocks * sizeof(double))
        if partials == NULL:
            return NO_MEMORY
    if n_threads <= 1 or n < _parallel_threshold or n_blocks < 2:
        for b in range(n_blocks):
            start = b * NORM_BLOCK
            _u_block(f, start, min(NORM_BLOCK, n - start), partials + 2 * b, dtype)
    else:
        for b in prange(n_blocks, schedule="static", num_threads=n_threads):
            start = b * NORM_BLOCK
            _u_block(f, start, min(NORM_BLOCK, n - start), partials + 2 * b, dtype)
    out[0] = 0.0
    out[1] = 0.0
    for b in range(n_blocks):
        out[0] = out[0] + partials[2 * b]
        out[1] = out[1] + partials[2 * b + 1]
    if partials != &local[0]:
        free(partials)
    return OK


def adafactor_norms(cnp.ndarray g, cnp.ndarray state, cnp.ndarray x, double w,
                    double eps1sq, Py_ssize_t rows=0, Py_ssize_t cols=0):
    """``(sum of x^2, sum of u^2)`` in float64 for Adafactor's step, in one read of ``g``,
    ``x`` (and ``v``), written nowhere; ``g`` and ``x`` C-contiguous, one dtype (float32 or
    float64), one size.  ``cols == 0``: the vector form, ``state`` the second moment ``v``
    before this step (v' = lerp(v, g^2, w) is formed, not stored).  Else the factored form
    over matrices of ``rows`` x ``cols``: ``state`` the float64 factors [new row factors
    (B rows), new column factors (B cols), clamped row means (B)].  Blocked as norms.pxi:
    the order is fixed by the data, never by the thread count."""
    cdef UForm f
    cdef Py_ssize_t n = cnp.PyArray_SIZE(g)
    cdef int typenum = cnp.PyArray_TYPE(g), n_threads = omp_get_max_threads(), status
    cdef double sums[2]
    _check(g, typenum, n, "the gradient")
    _check(x, typenum, n, "the parameter")
    f.g = cnp.PyArray_DATA(g)
    f.x = cnp.PyArray_DATA(x)
    f.w, f.eps1sq = w, eps1sq
    f.factored = cols > 0
    f.rows, f.cols, f.n_rows = rows, cols, (n // cols if cols > 0 else 0)
    if f.factored:
        if rows <= 0 or n % (rows * cols) != 0:
            raise ValueError(f"{n} elements are not matrices of {rows} x {cols}")
        _check(state, cnp.NPY_FLOAT64, f.n_rows + (f.n_rows // rows) * (cols + 1),
               "the factors")
        f.factors = <const double*> cnp.PyArray_DATA(state)
    else:
        _check(state, typenum, n, "the second moment")
        f.v = cnp.PyArray_DATA(state)
    if typenum == cnp.NPY_FLOAT32:
        with nogil:
            status = _adafactor_sums(&f, n, n_threads, sums, <float> 0)
    elif typenum == cnp.NPY_FLOAT64:
        with nogil:
            status = _adafactor_sums(&f, n, n_threads, sums, <double> 0)
    else:
        raise TypeError(f"Adafactor runs on float32 and float64 arrays, got {g.dtype}")
    if status != OK:
        raise MemoryError("could not allocate the partial sums of Adafactor's norms")
    return sums[0], sums[1]


cdef void _factored_chunk(const floating* g, Py_ssize_t rows, Py_ssize_t cols,
                          Py_ssize_t b, Py_ssize_t k, Py_ssize_t n_chunks, double* colsum,
                          double* part) noexcept nogil:
    """Columns [k FACTOR_CHUNK, ...) of matrix b: their sums of g^2 over the rows, in row
    order, and each row's partial over them (LANES lanes, combined left to right)."""
    cdef Py_ssize_t c0 = k * FACTOR_CHUNK
    cdef Py_ssize_t w = cols - c0 if cols - c0 < FACTOR_CHUNK else FACTOR_CHUNK
    cdef Py_ssize_t i, j, jj
    cdef double lanes[LANES]
    cdef double a
    cdef double* col = colsum + b * cols + c0
    cdef const floating* p
    cdef int l
    for j in range(w):
        col[j] = 0.0
    for i in range(rows):
        p = g + (b * rows + i) * cols + c0
        for l in range(LANES):
            lanes[l] = 0.0
        for jj in range(w // LANES):
            for l in range(LANES):
                a = <double> p[jj * LANES + l]
                a = a * a
                lanes[l] += a
                col[jj * LANES + l] += a
        for j in range((w // LANES) * LANES, w):
            a = <double> p[j]
            a = a * a
            lanes[j % LANES] += a
            col[j] += a
        part[(b * rows + i) * n_chunks + k] = _lanes_total(lanes)


cdef int _factored_sums(const floating* g, Py_ssize_t n_mats, Py_ssize_t rows,
                        Py_ssize_t cols, double* rowsum, double* colsum,
                        int n_threads) noexcept nogil:
    # tasks (matrix, column chunk) over the threads; row partials then summed in chunk order
    cdef Py_ssize_t n_chunks = (cols + FACTOR_CHUNK - 1) // FACTOR_CHUNK
    cdef Py_ssize_t n_tasks = n_mats * n_chunks, t, r, k
    cdef double* part = <double*> malloc((n_mats * rows * n_chunks + 1) * sizeof(double))
    if part == NULL:
        return NO_MEMORY
    if n_threads <= 1 or n_mats * rows * cols < _parallel_threshold or n_tasks < 2:
        for t in range(n_tasks):
            _factored_chunk(g, rows, cols, t // n_chunks, t % n_chunks, n_chunks, colsum, part)
    else:
        for t in prange(n_tasks, schedule="static", num_threads=n_threads):
            _factored_chunk(g, rows, cols, t // n_chunks, t % n_chunks, n_chunks, colsum, part)
    for r in range(n_mats * rows):
        rowsum[r] = 0.0
        for k in range(n_chunks):
            rowsum[r] = rowsum[r] + part[r * n_chunks + k]
    free(part)
    return OK


def factored_sums(cnp.ndarray g, Py_ssize_t rows, Py_ssize_t cols, cnp.ndarray rowsum,
                  cnp.ndarray colsum):
    """Adafactor's reductions of ``g`` (C-contiguous float32 or float64, B matrices of
    ``rows`` x ``cols``): ``rowsum`` (float64, B rows) gets each row's sum of g^2 and
    ``colsum`` (float64, B cols) each column's, both in float64, in an order fixed by the
    data (columns in chunks of FACTOR_CHUNK, each row's chunk in LANES lanes, chunks added
    left to right; a column's sum in row order), never by the thread count."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(g), n_mats
    cdef int typenum = cnp.PyArray_TYPE(g), n_threads = omp_get_max_threads(), st
    if rows <= 0 or cols <= 0 or n % (rows * cols) != 0:
        raise ValueError(f"{n} elements are not matrices of {rows} x {cols}")
    n_mats = n // (rows * cols)
    _check(g, typenum, n, "the gradient")
    _check(rowsum, cnp.NPY_FLOAT64, n_mats * rows, "the row sums")
    _check(colsum, cnp.NPY_FLOAT64, n_mats * cols, "the column sums")
    cdef double* rs = <double*> cnp.PyArray_DATA(rowsum)
    cdef double* cs = <double*> cnp.PyArray_DATA(colsum)
    if typenum == cnp.NPY_FLOAT32:
        with nogil:
            st = _factored_sums(<const float*> cnp.PyArray_DATA(g), n_mats, rows, cols, rs,
                                cs, n_threads)
    elif typenum == cnp.NPY_FLOAT64:
        with nogil:
            st = _factored_sums(<const double*> cnp.PyArray_DATA(g), n_mats, rows, cols, rs,
                                cs, n_threads)
    else:
        raise TypeError(f"Adafactor runs on float32 and float64 arrays, got {g.dtype}")
    if st != OK:
        raise MemoryError("could not allocate the partial sums of Adafactor's factors")


cdef AdafactorHP _adafactor_layout

# Adafactor clamps (orders) its estimate: no complex form, as torch refuses complex
# parameters.
register_kind("adafactor", adafactor_tile[float], adafactor_tile[double], _adafactor_layout,
              sizeof(AdafactorHP))
register_kind("adafactor_vector", adafactor_vector_tile[float], adafactor_vector_tile[double],
              _adafactor_layout, sizeof(AdafactorHP))
