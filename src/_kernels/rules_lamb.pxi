# LAMB (optax.lamb): the trust ratio |x|/|u| of each array scales its Adam step with
# decoupled decay.  As Adafactor's (rules_factored.pxi, whose U_CHUNK it uses): a pass that
# forms u and takes both norms, written nowhere (`lamb_norms`: float64, blocked by the
# data, never by the thread count), then the fused step that forms u again, with the same
# inline arithmetic, and writes m, v and x.  Complex parameters: m complex, v real |g|^2.

cdef struct LambHP:
    double b1
    double b2
    double omb1             # 1 - b1  (formed in float64 by the rule class)
    double omb2
    double eps
    double lam              # decoupled weight decay, added to the Adam direction
    double bc1              # 1 - b1^t  (formed in float64 from the running products)
    double bc2
    double eta
    double ratio            # the trust ratio |x| / |u| of this step (1 where a norm is 0)
    double y1               # 1/bc1 and 1/bc2 in float64 of bc1 and bc2 rounded to float32
    double y2               # (`_by_bias`), formed by the rule class: gcc 12 dropped the
                            # float32 rounding of (double)(float)bc formed here (SLP)


cdef struct LambConstants:
    # the hyper-parameters rounded to the dtype (held widened); y1, y2 as LambHP's
    double b1, b2, omb1, omb2, eps, lam, bc1, bc2, y1, y2
    bint by_reciprocal


cdef inline void _lamb_constants(LambConstants* c, const LambHP* h,
                                 floating dtype) noexcept nogil:
    c.b1, c.b2 = <floating> h.b1, <floating> h.b2
    c.omb1, c.omb2 = <floating> h.omb1, <floating> h.omb2
    c.eps, c.lam = <floating> h.eps, <floating> h.lam
    c.bc1, c.bc2 = <floating> h.bc1, <floating> h.bc2
    c.y1, c.y2 = h.y1, h.y2
    # (y1 or y2 not given, 0: a caller that does not know them gets the divider)
    c.by_reciprocal = (floating is float and 0 < <floating> c.bc1 <= 1
                       and 0 < <floating> c.bc2 <= 1 and c.y1 > 0 and c.y2 > 0)


cdef inline floating _by_bias(Quotients* how, floating a, double b, double y) noexcept nogil:
    # a / b, correctly rounded, b a bias correction of the dtype and y = RN64(1/b).
    # ByReciprocal (float32, 0 < b <= 1): RN32(RN64(a * y)), no divider.  Why the same bits:
    # RN64(a * y) is within 2^-52 (relative) of a/b, and a/b is never that close to a
    # rounding boundary of float32 (a midpoint M = Mi 2^e, Mi odd < 2^25) unless it is one:
    # a - bM is a nonzero multiple of 2^min(ea, eb + e) (a = A 2^ea, b = B 2^eb, A, B < 2^24),
    # so |a/b - M| >= M / (B Mi) > 2^-49 M (or >= M / A); and a/b = M exactly would need
    # a = B Mi 2^(eb + e), which for b <= 1 is not a float32 (its odd part B Mi has over 24
    # bits, or, under 2^-126, its exponent is below float32's least).  Overflow to inf and
    # subnormal results follow from the same bound (their boundaries are such midpoints).
    # The ByDivider form (float64, or a hand-made b outside (0, 1]) divides.
    if Quotients is ByReciprocal and floating is float:
        return <float> (<double> a * y)
    return a / <floating> b


cdef inline floating _lamb_u(Quotients* how, const LambConstants* c, floating g, floating x,
                             floating* m, floating* v) noexcept nogil:
    # m <- b1 m + (1-b1) g ; v <- b2 v + (1-b2) g^2 ;
    # u = (m/(1-b1^t)) / (sqrt(v/(1-b2^t)) + eps) + lambda x     (optax: scale_by_adam,
    # add_decayed_weights); m and v in place of their old values.  Two of its four
    # divider operations go (`_by_bias`): its passes are short of divider throughput.
    cdef floating mi = <floating> c.b1 * m[0] + <floating> c.omb1 * g
    cdef floating vi = <floating> c.b2 * v[0] + <floating> c.omb2 * (g * g)
    m[0] = mi
    v[0] = vi
    return ((_by_bias(how, mi, c.bc1, c.y1)
             / (_sqrt(_by_bias(how, vi, c.bc2, c.y2)) + <floating> c.eps))
            + <floating> c.lam * x)


cdef inline void _lamb_steps(Quotients* how, const LambConstants* c, floating ratio,
                             floating eta, floating gs, Py_ssize_t n, floating* x,
                             const floating* g, floating* m, floating* v, floating* out,
                             bint subtract) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        _emit(out, i, (_lamb_u(how, c, g[i] * gs, x[i], &m[i], &v[i]) * ratio) * eta,
              subtract)


cdef void lamb_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                    const floating* g, floating* out, bint subtract) noexcept nogil:
    # moments and u as `_lamb_u` ; d = (u * ratio) * eta
    cdef const LambHP* h = <const LambHP*> s.hp
    cdef LambConstants c
    cdef floating* m = (<floating*> s.buf[0]) + off
    cdef floating* v = (<floating*> s.buf[1]) + off
    cdef floating ratio = <floating> h.ratio, eta = <floating> h.eta, gs = <floating> s.gs
    _lamb_constants(&c, h, <floating> 0)
    if c.by_reciprocal:
        _lamb_steps(<ByReciprocal*> NULL, &c, ratio, eta, gs, n, x, g, m, v, out, subtract)
    else:
        _lamb_steps(<ByDivider*> NULL, &c, ratio, eta, gs, n, x, g, m, v, out, subtract)


cdef inline void _lamb_pair_u(const LambConstants* c, floating gr, floating gi, floating xr,
                              floating xi, floating* m, floating* v, floating* ur,
                              floating* ui) noexcept nogil:
    # m[0], m[1]: the components of m ; v[0]: the real second moment (all in place)
    cdef floating mr = <floating> c.b1 * m[0] + <floating> c.omb1 * gr
    cdef floating mi = <floating> c.b1 * m[1] + <floating> c.omb1 * gi
    cdef floating vi = <floating> c.b2 * v[0] + <floating> c.omb2 * _abs2(gr, gi)
    cdef floating den = _sqrt(vi / <floating> c.bc2) + <floating> c.eps
    m[0] = mr
    m[1] = mi
    v[0] = vi
    ur[0] = (mr / <floating> c.bc1) / den + <floating> c.lam * xr
    ui[0] = (mi / <floating> c.bc1) / den + <floating> c.lam * xi


cdef void lamb_pair_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                         const floating* g, floating* out, bint subtract) noexcept nogil:
    # complex parameters: m complex (each component), v REAL, v <- b2 v + (1-b2)|g|^2 ;
    # each component of u as `_lamb_u` with its pair's sqrt(v/(1-b2^t)) + eps ;
    # d = (u * ratio) * eta
    cdef const LambHP* h = <const LambHP*> s.hp
    cdef LambConstants c
    cdef floating* m = (<floating*> s.buf[0]) + off
    cdef floating* v = (<floating*> s.buf[1]) + off // 2
    cdef floating ratio = <floating> h.ratio, eta = <floating> h.eta
    cdef floating ur, ui
    cdef floating d[TILE]
    cdef Py_ssize_t i, j
    _lamb_constants(&c, h, <floating> 0)
    for i in range(n // 2):
        j = 2 * i
        _lamb_pair_u(&c, g[j], g[j + 1], x[j], x[j + 1], &m[j], &v[i], &ur, &ui)
        d[j] = (ur * ratio) * eta
        d[j + 1] = (ui * ratio) * eta
    _emit_all(out, d, n, subtract)


cdef void _lamb_pair_block(const LambConstants* c, const floating* g, const floating* m,
                           const floating* v, const floating* x, Py_ssize_t n,
                           double* sums) noexcept nogil:
    # the pair form of `_lamb_block` over n complex elements: |x_i|^2 and |u_i|^2 as
    # re*re + im*im in float64, element i in lane i % LANES
    cdef double xl[LANES]
    cdef double ul[LANES]
    cdef floating mc[2]
    cdef floating vi, ur, ui
    cdef Py_ssize_t i
    cdef int l
    for l in range(LANES):
        xl[l] = 0.0
        ul[l] = 0.0
    for i in range(n):
        mc[0] = m[2 * i]
        mc[1] = m[2 * i + 1]
        vi = v[i]
        _lamb_pair_u(c, g[2 * i], g[2 * i + 1], x[2 * i], x[2 * i + 1], mc, &vi, &ur, &ui)
        ul[i % LANES] += <double> ur * <double> ur + <double> ui * <double> ui
        xl[i % LANES] += (<double> x[2 * i] * <double> x[2 * i]
                          + <double> x[2 * i + 1] * <double> x[2 * i + 1])
    sums[0] = _lanes_total(xl)
    sums[1] = _lanes_total(ul)


cdef void _lamb_block(Quotients* how, const LambConstants* c, const floating* g,
                      const floating* m, const floating* v, const floating* x, Py_ssize_t n,
                      double* sums) noexcept nogil:
    # sums[0] = sum of x^2, sums[1] = sum of u^2 over one block (LANES lanes each, element
    # k in lane k % LANES); u formed a chunk at a time into a buffer, so that the loop
    # forming it vectorises apart from the lanes' adds
    cdef double xl[LANES]
    cdef double ul[LANES]
    cdef floating u[U_CHUNK]
    cdef floating mi, vi
    cdef Py_ssize_t s0 = 0, k, len_
    cdef int l
    for l in range(LANES):
        xl[l] = 0.0
        ul[l] = 0.0
    while s0 < n:                       # U_CHUNK is a multiple of LANES
        len_ = n - s0 if n - s0 < U_CHUNK else U_CHUNK
        for k in range(len_):
            mi = m[s0 + k]
            vi = v[s0 + k]
            u[k] = _lamb_u(how, c, g[s0 + k], x[s0 + k], &mi, &vi)
        _add_squares(ul, u, len_)
        _add_squares(xl, x + s0, len_)
        s0 += len_
    sums[0] = _lanes_total(xl)
    sums[1] = _lanes_total(ul)


cdef inline void _lamb_any_block(const LambConstants* c, const floating* g,
                                 const floating* m, const floating* v, const floating* x,
                                 Py_ssize_t start, Py_ssize_t n, bint pairs,
                                 double* sums) noexcept nogil:
    # block [start, start + n) of n elements (pairs: complex elements, v real)
    if pairs:
        _lamb_pair_block(c, g + 2 * start, m + 2 * start, v + start, x + 2 * start, n, sums)
    elif c.by_reciprocal:
        _lamb_block(<ByReciprocal*> NULL, c, g + start, m + start, v + start, x + start, n,
                    sums)
    else:
        _lamb_block(<ByDivider*> NULL, c, g + start, m + start, v + start, x + start, n,
                    sums)


cdef int _lamb_norms(const LambHP* h, const floating* g, const floating* m,
                     const floating* v, const floating* x, Py_ssize_t n, int n_threads,
                     bint pairs, double* out) noexcept nogil:
    cdef LambConstants c
    cdef Py_ssize_t n_blocks = (n + NORM_BLOCK - 1) // NORM_BLOCK, b, start
    cdef double local[128]
    cdef double* partials = &local[0]
    _lamb_constants(&c, h, <floating> 0)
    if n_blocks > 64:
        partials = <double*> malloc(2 * n_blocks * sizeof(double))
        if partials == NULL:
            return NO_MEMORY
    if n_threads <= 1 or n < _parallel_threshold or n_blocks < 2:
        for b in range(n_blocks):
            start = b * NORM_BLOCK
            _lamb_any_block(&c, g, m, v, x, start, min(NORM_BLOCK, n - start), pairs,
                            partials + 2 * b)
    else:
        for b in prange(n_blocks, schedule="static", num_threads=n_threads):
            start = b * NORM_BLOCK
            _lamb_any_block(&c, g, m, v, x, start, min(NORM_BLOCK, n - start), pairs,
                            partials + 2 * b)
    out[0] = 0.0
    out[1] = 0.0
    for b in range(n_blocks):
        out[0] = out[0] + partials[2 * b]
        out[1] = out[1] + partials[2 * b + 1]
    if partials != &local[0]:
        free(partials)
    return OK


def lamb_norms(cnp.ndarray g, cnp.ndarray m, cnp.ndarray v, cnp.ndarray x, dict hp):
    """``(sum of x^2, sum of u^2)`` in float64 for LAMB's step with the hyper-parameters
    ``hp`` (the lamb kind's fields, ``ratio`` unused), forming the new moments and u as the
    tile function does but writing nothing.  ``g``, ``m``, ``x``: C-contiguous, one dtype
    (float32, float64, complex64 or complex128), one size; ``v`` the same, of the real
    dtype for complex ones.  Blocked as norms.pxi: never by the thread count."""
    cdef Stage st
    cdef Py_ssize_t n = cnp.PyArray_SIZE(g)
    cdef int ctypenum = cnp.PyArray_TYPE(g), n_threads = omp_get_max_threads(), status
    cdef int typenum = _real_typenum(ctypenum)
    cdef bint pairs = typenum >= 0
    cdef double sums[2]
    if not pairs:
        typenum = ctypenum
    _fill_constants(&st, KIND_TABLE["lamb"][0], hp, 0)
    for a, what in ((g, "the gradient"), (m, "the first moment"), (x, "the parameter")):
        _check(a, ctypenum, n, what)
    _check(v, typenum, n, "the second moment")
    if typenum == cnp.NPY_FLOAT32:
        with nogil:
            status = _lamb_norms(<const LambHP*> st.hp, <const float*> cnp.PyArray_DATA(g),
                                 <const float*> cnp.PyArray_DATA(m),
                                 <const float*> cnp.PyArray_DATA(v),
                                 <const float*> cnp.PyArray_DATA(x), n, n_threads, pairs,
                                 sums)
    elif typenum == cnp.NPY_FLOAT64:
        with nogil:
            status = _lamb_norms(<const LambHP*> st.hp, <const double*> cnp.PyArray_DATA(g),
                                 <const double*> cnp.PyArray_DATA(m),
                                 <const double*> cnp.PyArray_DATA(v),
                                 <const double*> cnp.PyArray_DATA(x), n, n_threads, pairs,
                                 sums)
    else:
        raise TypeError(f"LAMB runs on float32 and float64 arrays, got {g.dtype}")
    if status != OK:
        raise MemoryError("could not allocate the partial sums of LAMB's norms")
    return sums[0], sums[1]


cdef LambHP _lamb_layout

register_kind("lamb", lamb_tile[float], lamb_tile[double], _lamb_layout, sizeof(LambHP),
              PAIRS, NULL, NULL, 0, lamb_pair_tile[float], lamb_pair_tile[double], 0b1)
