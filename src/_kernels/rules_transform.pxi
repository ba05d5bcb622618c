# Gradient transformations, used mostly inside an OptimiserChain: weight and sign decay,
# element and norm clipping, gradient accumulation.

cdef struct DecayHP:
    double lam


cdef void weightdecay_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                           const floating* g, floating* out, bint subtract) noexcept nogil:
    # d = g + lambda*x
    cdef floating lam = <floating> (<const DecayHP*> s.hp).lam
    cdef floating gs = <floating> s.gs
    cdef Py_ssize_t i
    for i in range(n):
        _emit(out, i, (g[i] * gs) + lam * x[i], subtract)


cdef void signdecay_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                         const floating* g, floating* out, bint subtract) noexcept nogil:
    # d = g + lambda*sign(x)
    cdef floating lam = <floating> (<const DecayHP*> s.hp).lam
    cdef floating gs = <floating> s.gs
    cdef Py_ssize_t i
    for i in range(n):
        _emit(out, i, (g[i] * gs) + lam * _sign(x[i]), subtract)


cdef struct ClipGradHP:
    double delta


cdef void clipgrad_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                        const floating* g, floating* out, bint subtract) noexcept nogil:
    # d = clamp(g, -delta, delta); NaN passes through
    cdef floating hi = <floating> (<const ClipGradHP*> s.hp).delta
    cdef floating lo = -hi
    cdef floating gi, di
    cdef floating gs = <floating> s.gs
    cdef Py_ssize_t i
    for i in range(n):
        gi = g[i] * gs
        di = gi
        if gi > hi:
            di = hi
        elif gi < lo:
            di = lo
        _emit(out, i, di, subtract)


# ClipNorm leads its program (LEADS): its norm is that of the program's input g, computed
# before the tiles by `_clipnorm_before` (norms.pxi: a blocking fixed by the data, never by
# the thread count), so that a batch of leaves can check every norm before any leaf is
# written.  Its scale min(omega/|g|_p, 1) is then folded into the next stage's read of g
# (the driver's `_fold_leading_scale`); `scale_tile` applies it where it cannot be folded.

cdef struct ClipNormHP:
    double omega
    double p
    double how              # the NormKind of p (norms.pxi)
    double throw            # 1.0: a non-finite norm is an error (NONFINITE_NORM)
    double norm             # set by `before` (for the error message); or given, with
    double known            # known = 1.0, by a caller that has computed it already


cdef inline double _clip_scale(double omega, double norm) noexcept nogil:
    # conventions §7: a zero norm leaves g as it is, an infinite one zeroes it (even when
    # omega is inf), NaN gives NaN; else min(omega / norm, 1), computed in float64.
    cdef double r
    if norm == 0:
        return 1.0
    if norm == INFINITY or norm == -INFINITY:
        return 0.0
    r = omega / norm
    return 1.0 if r > 1.0 else r        # NaN stays NaN, as Python's min(r, 1.0)


cdef int _clipnorm_before(Stage* s, const void* g, Py_ssize_t n_elements, bint pairs,
                          int n_threads, bint single) noexcept nogil:
    cdef ClipNormHP* h = <ClipNormHP*> s.hp
    cdef int how = <int> h.how
    cdef double total
    if h.known == 0:
        if single:
            total = _reduce(<const float*> g, n_elements, how, h.p, n_threads, pairs)
        else:
            total = _reduce(<const double*> g, n_elements, how, h.p, n_threads, pairs)
        if total == -1.0 and n_elements > 0:    # sums and magnitudes are >= 0: malloc failed
            return NO_MEMORY
        h.norm = _finish_norm(total, how, h.p, n_elements)
    if h.throw != 0 and not (h.norm - h.norm == 0):      # not finite
        return NONFINITE_NORM
    s.fold = _clip_scale(h.omega, h.norm)
    return OK


cdef void scale_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                     const floating* g, floating* out, bint subtract) noexcept nogil:
    # d = g * scale   (ClipNorm, once its norm is known, where it is not folded)
    cdef floating scale = <floating> s.fold
    cdef floating gs = <floating> s.gs
    cdef Py_ssize_t i
    for i in range(n):
        _emit(out, i, (g[i] * gs) * scale, subtract)


cdef struct AccumGradHP:
    double n                # gradients to average
    double first            # set per step: 1.0 on the first of the n gradients


cdef int _accumgrad_before(Stage* s, const void* g, Py_ssize_t n_elements, bint pairs,
                           int n_threads, bint single) noexcept nogil:
    # before the n-th gradient the program stops after this stage (nothing is subtracted
    # and the rules after it do not run)
    cdef AccumGradHP* h = <AccumGradHP*> s.hp
    h.first = 1.0 if s.ctr[0] == 1 else 0.0
    return STOPPED if s.ctr[0] < <long long> h.n else OK


cdef void _accumgrad_after(Stage* s) noexcept nogil:
    if s.ctr[0] >= <long long> (<AccumGradHP*> s.hp).n:
        s.ctr[0] = 1
    else:
        s.ctr[0] += 1


cdef void accumgrad_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                         const floating* g, floating* out, bint subtract) noexcept nogil:
    # acc <- g/n on the first of n gradients, acc + g/n after ; d = acc
    cdef const AccumGradHP* h = <const AccumGradHP*> s.hp
    cdef floating count = <floating> h.n
    cdef bint first = h.first != 0
    cdef floating* acc = (<floating*> s.buf[0]) + off
    cdef floating ai
    cdef floating gs = <floating> s.gs
    cdef Py_ssize_t i
    for i in range(n):
        if first:
            ai = (g[i] * gs) / count
        else:
            ai = acc[i] + (g[i] * gs) / count
        acc[i] = ai
        _emit(out, i, ai, subtract)


cdef DecayHP _decay_layout
cdef ClipGradHP _clipgrad_layout
cdef ClipNormHP _clipnorm_layout
cdef AccumGradHP _accumgrad_layout

register_kind("weightdecay", weightdecay_tile[float], weightdecay_tile[double], _decay_layout,
              sizeof(DecayHP), COMPONENTWISE)
register_kind("signdecay", signdecay_tile[float], signdecay_tile[double], _decay_layout,
              sizeof(DecayHP))
register_kind("clipgrad", clipgrad_tile[float], clipgrad_tile[double], _clipgrad_layout,
              sizeof(ClipGradHP))
register_kind("clipnorm", scale_tile[float], scale_tile[double], _clipnorm_layout,
              sizeof(ClipNormHP), COMPONENTWISE, _clipnorm_before, NULL, LEADS)
register_kind("accumgrad", accumgrad_tile[float], accumgrad_tile[double], _accumgrad_layout,
              sizeof(AccumGradHP), COMPONENTWISE, _accumgrad_before, _accumgrad_after)


# ClipGlobalNorm and SkipNonFinite lead their program (LEADS) as one kind: the norm and the
# finiteness they need are those of every participating leaf together, so the `before` hook
# only reduces this leaf's gradient to its raw partial (norms.pxi's `_reduce`: float64, a
# blocking fixed by the data) and leaves the verdict to the caller, which combines the
# partials of all leaves (the engine: exactly rounded, so in no order that matters), decides
# throw or skip for the whole step before anything is written, and gives each leaf its scale
# (Batch.set_scale, or `known`/`scale` for a program run alone).  SkipNonFinite followed by
# ClipGlobalNorm is one stage of this kind (clip and skip both set): one read serves both.

cdef struct GlobalNormHP:
    double omega
    double p
    double how              # the NormKind of p: the partial's reduction
    double throw            # for the caller: a non-finite norm is an error
    double norm             # set by `before`: this leaf's raw partial (sum of |g|^p, max...)
    double known            # 1.0: `scale` is given, `before` reads nothing
    double scale
    double clip             # 1.0: a ClipGlobalNorm (else SkipNonFinite alone)
    double skip             # 1.0: a SkipNonFinite leads (the stage's counter: its count
                            # of steps skipped in a row, which a step that runs resets)


cdef int _globalnorm_before(Stage* s, const void* g, Py_ssize_t n_elements, bint pairs,
                            int n_threads, bint single) noexcept nogil:
    cdef GlobalNormHP* h = <GlobalNormHP*> s.hp
    cdef double total
    if h.known != 0:
        s.fold = h.scale
        return OK
    if single:
        total = _reduce(<const float*> g, n_elements, <int> h.how, h.p, n_threads, pairs)
    else:
        total = _reduce(<const double*> g, n_elements, <int> h.how, h.p, n_threads, pairs)
    if total == -1.0 and n_elements > 0:        # sums and magnitudes are >= 0: malloc failed
        return NO_MEMORY
    h.norm = total
    s.fold = 1.0            # until the caller sets the scale of the whole step
    return OK


cdef GlobalNormHP _globalnorm_layout
cdef int GLOBALNORM_KIND = -1   # for the Batch's list of the entries it leads

GLOBALNORM_KIND = register_kind("globalnorm", scale_tile[float], scale_tile[double],
                                _globalnorm_layout, sizeof(GlobalNormHP), COMPONENTWISE,
                                _globalnorm_before, NULL, LEADS)
