# Pair-aware tile functions: the "moments" rules on complex parameters.
#
# A complex program runs on the real views of its arrays (``x.view(R)``: element k of a
# complex array is the components 2k (re) and 2k+1 (im)).  Component-wise rules (Descent,
# Momentum, WeightDecay, ...) run unchanged on those views.  The rules below need the pair:
# their second moments are REAL arrays (one R value per complex element) that hold
# |g|^2 = re*re + im*im (conventions §1 and §4), and their denominators are shared by both
# components.  A stage of width 2 (``Stage.width``) is dispatched here.
#
# Units: ``off`` and ``n`` count components (the driver's tiles have an even length and
# start at even offsets, so a tile never splits a pair).  ``x``, ``g``, ``out`` and the
# complex state buffers (first moments, OAdam's term, centred RMSProp's l) are offset by
# ``off``; the real state buffers (second moments, accumulators) by ``off // 2``.
# hp layouts are those of the real kernels (rules_adam.pxi, rules_adaptive.pxi).
# Operation order follows tests/reference.py: every real hyper-parameter acts on each
# component; |z|^2 = (re*re) + (im*im).


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


cdef inline floating _pair_moments(floating* m, floating* v, const floating* g, Py_ssize_t i,
                                   floating b1, floating b2, floating omb1,
                                   floating omb2) noexcept nogil:
    # The moments of the Adam family at pair i: m <- b1*m + (1-b1)*g (each component of
    # m[2i], m[2i+1]); v <- b2*v + (1-b2)*|g|^2 (real, v[i]).  Returns the new v.
    cdef Py_ssize_t j = 2 * i
    cdef floating gr = g[j], gi = g[j + 1], vi
    m[j] = b1 * m[j] + omb1 * gr
    m[j + 1] = b1 * m[j + 1] + omb1 * gi
    vi = b2 * v[i] + omb2 * _abs2(gr, gi)
    v[i] = vi
    return vi


cdef void adam_pair_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                         const floating* g, floating* out, bint subtract) noexcept nogil:
    # m <- b1*m + (1-b1)*g (each component) ; v <- b2*v + (1-b2)*|g|^2 (real)
    # den = sqrt(v/(1-bt2)) + eps ; d = ((m/(1-bt1)) / den) * eta (each component)
    cdef floating b1 = <floating> s.hp[0], b2 = <floating> s.hp[1]
    cdef floating omb1 = <floating> s.hp[2], omb2 = <floating> s.hp[3]
    cdef floating bc1 = <floating> s.hp[4], bc2 = <floating> s.hp[5]
    cdef floating eps = <floating> s.hp[6], eta = <floating> s.hp[7]
    cdef floating* m = (<floating*> s.buf[0]) + off
    cdef floating* v = (<floating*> s.buf[1]) + off // 2
    cdef floating den
    cdef floating d[TILE]
    cdef Py_ssize_t i, j
    for i in range(n // 2):
        j = 2 * i
        den = _sqrt(_pair_moments(m, v, g, i, b1, b2, omb1, omb2) / bc2) + eps
        d[j] = ((m[j] / bc1) / den) * eta
        d[j + 1] = ((m[j + 1] / bc1) / den) * eta
    _emit_all(out, d, n, subtract)


cdef void radam_pair_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                          const floating* g, floating* out, bint subtract) noexcept nogil:
    # moments as adam_pair ; rectified: d = (((m/(1-bt1)) / den) * eta) * r,
    # warming up: d = (m/(1-bt1)) * eta
    cdef floating b1 = <floating> s.hp[0], b2 = <floating> s.hp[1]
    cdef floating omb1 = <floating> s.hp[2], omb2 = <floating> s.hp[3]
    cdef floating bc1 = <floating> s.hp[4], bc2 = <floating> s.hp[5]
    cdef floating eps = <floating> s.hp[6], eta = <floating> s.hp[7]
    cdef floating r = <floating> s.hp[8]
    cdef floating* m = (<floating*> s.buf[0]) + off
    cdef floating* v = (<floating*> s.buf[1]) + off // 2
    cdef floating den
    cdef floating d[TILE]
    cdef Py_ssize_t i, j
    if s.hp[9] != 0:                    # rectified
        for i in range(n // 2):
            j = 2 * i
            den = _sqrt(_pair_moments(m, v, g, i, b1, b2, omb1, omb2) / bc2) + eps
            d[j] = (((m[j] / bc1) / den) * eta) * r
            d[j + 1] = (((m[j + 1] / bc1) / den) * eta) * r
    else:
        for i in range(n // 2):
            j = 2 * i
            _pair_moments(m, v, g, i, b1, b2, omb1, omb2)
            d[j] = (m[j] / bc1) * eta
            d[j + 1] = (m[j + 1] / bc1) * eta
    _emit_all(out, d, n, subtract)


cdef void oadam_pair_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                          const floating* g, floating* out, bint subtract) noexcept nogil:
    # moments as adam_pair ; term' = ((eta*m)/(1-bt1)) / den ; d = 2*term' - term
    cdef floating b1 = <floating> s.hp[0], b2 = <floating> s.hp[1]
    cdef floating omb1 = <floating> s.hp[2], omb2 = <floating> s.hp[3]
    cdef floating bc1 = <floating> s.hp[4], bc2 = <floating> s.hp[5]
    cdef floating eps = <floating> s.hp[6], eta = <floating> s.hp[7]
    cdef floating two = 2
    cdef floating* m = (<floating*> s.buf[0]) + off
    cdef floating* v = (<floating*> s.buf[1]) + off // 2
    cdef floating* term = (<floating*> s.buf[2]) + off
    cdef floating den, tr, ti
    cdef floating d[TILE]
    cdef Py_ssize_t i, j
    for i in range(n // 2):
        j = 2 * i
        den = _sqrt(_pair_moments(m, v, g, i, b1, b2, omb1, omb2) / bc2) + eps
        tr = ((eta * m[j]) / bc1) / den
        ti = ((eta * m[j + 1]) / bc1) / den
        d[j] = two * tr - term[j]
        d[j + 1] = two * ti - term[j + 1]
        term[j] = tr
        term[j + 1] = ti
    _emit_all(out, d, n, subtract)


cdef void nadam_pair_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                          const floating* g, floating* out, bint subtract) noexcept nogil:
    # moments as adam_pair ; num = (b1*m)/(1 - b1*bt1) + ((1-b1)*g)/(1-bt1) (each component)
    # den = sqrt((v*b2)/(1-bt2)) + eps ; d = (num/den) * eta
    cdef floating b1 = <floating> s.hp[0], b2 = <floating> s.hp[1]
    cdef floating omb1 = <floating> s.hp[2], omb2 = <floating> s.hp[3]
    cdef floating bc1 = <floating> s.hp[4], bc2 = <floating> s.hp[5]
    cdef floating eps = <floating> s.hp[6], eta = <floating> s.hp[7]
    cdef floating bc1_next = <floating> s.hp[8]
    cdef floating* m = (<floating*> s.buf[0]) + off
    cdef floating* v = (<floating*> s.buf[1]) + off // 2
    cdef floating den
    cdef floating d[TILE]
    cdef Py_ssize_t i, j
    for i in range(n // 2):
        j = 2 * i
        den = _sqrt((_pair_moments(m, v, g, i, b1, b2, omb1, omb2) * b2) / bc2) + eps
        d[j] = (((b1 * m[j]) / bc1_next + (omb1 * g[j]) / bc1) / den) * eta
        d[j + 1] = (((b1 * m[j + 1]) / bc1_next + (omb1 * g[j + 1]) / bc1) / den) * eta
    _emit_all(out, d, n, subtract)


cdef void adamw_coupled_pair_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                                  const floating* g, floating* out,
                                  bint subtract) noexcept nogil:
    # moments as adam_pair ; a = (m/(1-bt1)) / den ; d = eta * (a + lambda*x) (each component)
    cdef floating b1 = <floating> s.hp[0], b2 = <floating> s.hp[1]
    cdef floating omb1 = <floating> s.hp[2], omb2 = <floating> s.hp[3]
    cdef floating bc1 = <floating> s.hp[4], bc2 = <floating> s.hp[5]
    cdef floating eps = <floating> s.hp[6], eta = <floating> s.hp[7]
    cdef floating lam = <floating> s.hp[8]
    cdef floating* m = (<floating*> s.buf[0]) + off
    cdef floating* v = (<floating*> s.buf[1]) + off // 2
    cdef floating den
    cdef floating d[TILE]
    cdef Py_ssize_t i, j
    for i in range(n // 2):
        j = 2 * i
        den = _sqrt(_pair_moments(m, v, g, i, b1, b2, omb1, omb2) / bc2) + eps
        d[j] = eta * ((m[j] / bc1) / den + lam * x[j])
        d[j + 1] = eta * ((m[j + 1] / bc1) / den + lam * x[j + 1])
    _emit_all(out, d, n, subtract)


cdef void adamw_decoupled_pair_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                                    const floating* g, floating* out,
                                    bint subtract) noexcept nogil:
    # as adamw_coupled_pair, but d = (eta*a) + lambda*x   (couple=False)
    cdef floating b1 = <floating> s.hp[0], b2 = <floating> s.hp[1]
    cdef floating omb1 = <floating> s.hp[2], omb2 = <floating> s.hp[3]
    cdef floating bc1 = <floating> s.hp[4], bc2 = <floating> s.hp[5]
    cdef floating eps = <floating> s.hp[6], eta = <floating> s.hp[7]
    cdef floating lam = <floating> s.hp[8]
    cdef floating* m = (<floating*> s.buf[0]) + off
    cdef floating* v = (<floating*> s.buf[1]) + off // 2
    cdef floating den
    cdef floating d[TILE]
    cdef Py_ssize_t i, j
    for i in range(n // 2):
        j = 2 * i
        den = _sqrt(_pair_moments(m, v, g, i, b1, b2, omb1, omb2) / bc2) + eps
        d[j] = eta * ((m[j] / bc1) / den) + lam * x[j]
        d[j + 1] = eta * ((m[j + 1] / bc1) / den) + lam * x[j + 1]
    _emit_all(out, d, n, subtract)


cdef void adabelief_pair_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                              const floating* g, floating* out, bint subtract) noexcept nogil:
    # m as adam_pair ; s <- ((b2*s) + (1-b2)*|g-m|^2) + eps   (with the new m, real)
    # d = ((eta*m)/(1-bt1)) / (sqrt(s/(1-bt2)) + eps)
    cdef floating b1 = <floating> s.hp[0], b2 = <floating> s.hp[1]
    cdef floating omb1 = <floating> s.hp[2], omb2 = <floating> s.hp[3]
    cdef floating bc1 = <floating> s.hp[4], bc2 = <floating> s.hp[5]
    cdef floating eps = <floating> s.hp[6], eta = <floating> s.hp[7]
    cdef floating* m = (<floating*> s.buf[0]) + off
    cdef floating* sv = (<floating*> s.buf[1]) + off // 2
    cdef floating gr, gi, mr, mi, si, den
    cdef floating d[TILE]
    cdef Py_ssize_t i, j
    for i in range(n // 2):
        j = 2 * i
        gr = g[j]
        gi = g[j + 1]
        mr = b1 * m[j] + omb1 * gr
        mi = b1 * m[j + 1] + omb1 * gi
        si = (b2 * sv[i] + omb2 * _abs2(gr - mr, gi - mi)) + eps
        m[j] = mr
        m[j + 1] = mi
        sv[i] = si
        den = _sqrt(si / bc2) + eps
        d[j] = ((eta * mr) / bc1) / den
        d[j + 1] = ((eta * mi) / bc1) / den
    _emit_all(out, d, n, subtract)


cdef void rmsprop_pair_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                            const floating* g, floating* out, bint subtract) noexcept nogil:
    # q <- rho*q + (1-rho)*|g|^2 (real) ; d = (g*eta) / (sqrt(q) + eps)
    cdef floating rho = <floating> s.hp[0], omr = <floating> s.hp[1]
    cdef floating eps = <floating> s.hp[2], eta = <floating> s.hp[3]
    cdef floating* q = (<floating*> s.buf[0]) + off // 2
    cdef floating gr, gi, qi, den
    cdef floating d[TILE]
    cdef Py_ssize_t i, j
    for i in range(n // 2):
        j = 2 * i
        gr = g[j]
        gi = g[j + 1]
        qi = rho * q[i] + omr * _abs2(gr, gi)
        q[i] = qi
        den = _sqrt(qi) + eps
        d[j] = (gr * eta) / den
        d[j + 1] = (gi * eta) / den
    _emit_all(out, d, n, subtract)


cdef void rmsprop_centred_pair_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                                    const floating* g, floating* out,
                                    bint subtract) noexcept nogil:
    # q as rmsprop_pair (real) ; l <- rho*l + (1-rho)*g (complex)
    # d = (g*eta) / (sqrt(q - |l|^2) + eps)
    cdef floating rho = <floating> s.hp[0], omr = <floating> s.hp[1]
    cdef floating eps = <floating> s.hp[2], eta = <floating> s.hp[3]
    cdef floating* q = (<floating*> s.buf[0]) + off // 2
    cdef floating* l = (<floating*> s.buf[1]) + off
    cdef floating gr, gi, qi, lr, li, den
    cdef floating d[TILE]
    cdef Py_ssize_t i, j
    for i in range(n // 2):
        j = 2 * i
        gr = g[j]
        gi = g[j + 1]
        qi = rho * q[i] + omr * _abs2(gr, gi)
        lr = rho * l[j] + omr * gr
        li = rho * l[j + 1] + omr * gi
        q[i] = qi
        l[j] = lr
        l[j + 1] = li
        den = _sqrt(qi - _abs2(lr, li)) + eps
        d[j] = (gr * eta) / den
        d[j + 1] = (gi * eta) / den
    _emit_all(out, d, n, subtract)


cdef void adagrad_pair_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                            const floating* g, floating* out, bint subtract) noexcept nogil:
    # acc <- acc + |g|^2 (real) ; d = (g*eta) / (sqrt(acc) + eps)
    cdef floating eta = <floating> s.hp[0], eps = <floating> s.hp[1]
    cdef floating* acc = (<floating*> s.buf[0]) + off // 2
    cdef floating gr, gi, ai, den
    cdef floating d[TILE]
    cdef Py_ssize_t i, j
    for i in range(n // 2):
        j = 2 * i
        gr = g[j]
        gi = g[j + 1]
        ai = acc[i] + _abs2(gr, gi)
        acc[i] = ai
        den = _sqrt(ai) + eps
        d[j] = (gr * eta) / den
        d[j + 1] = (gi * eta) / den
    _emit_all(out, d, n, subtract)


cdef void adadelta_pair_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                             const floating* g, floating* out, bint subtract) noexcept nogil:
    # acc <- rho*acc + (1-rho)*|g|^2 ; d = (g*sqrt(dacc + eps)) / sqrt(acc + eps)  (old dacc)
    # dacc <- rho*dacc + (1-rho)*|d|^2          (acc, dacc real)
    cdef floating rho = <floating> s.hp[0], omr = <floating> s.hp[1]
    cdef floating eps = <floating> s.hp[2]
    cdef floating* acc = (<floating*> s.buf[0]) + off // 2
    cdef floating* dacc = (<floating*> s.buf[1]) + off // 2
    cdef floating gr, gi, ai, dai, num, den, dr, di
    cdef floating d[TILE]
    cdef Py_ssize_t i, j
    for i in range(n // 2):
        j = 2 * i
        gr = g[j]
        gi = g[j + 1]
        ai = rho * acc[i] + omr * _abs2(gr, gi)
        dai = dacc[i]
        num = _sqrt(dai + eps)
        den = _sqrt(ai + eps)
        dr = (gr * num) / den
        di = (gi * num) / den
        acc[i] = ai
        dacc[i] = rho * dai + omr * _abs2(dr, di)
        d[j] = dr
        d[j + 1] = di
    _emit_all(out, d, n, subtract)


# Which kinds have a pair form, and which of their buffers hold complex values (bit j set:
# buffer j is complex, offset in components; clear: real, one value per element).

cdef int _pair_buffers(int kind) noexcept nogil:
    """The complex-buffer mask of a kind's pair form, or -1 when it has none."""
    if (kind == ADAM or kind == RADAM or kind == NADAM or kind == ADAMW_COUPLED
            or kind == ADAMW_DECOUPLED or kind == ADABELIEF):
        return 0b1          # m complex, v / s real
    elif kind == OADAM:
        return 0b101        # m, term complex; v real
    elif kind == RMSPROP_CENTRED:
        return 0b10         # q real, l complex
    elif kind == RMSPROP or kind == ADAGRAD or kind == ADADELTA:
        return 0            # every buffer real
    return -1


cdef bint _componentwise(int kind) noexcept nogil:
    """Kinds that act on each component of a complex number alone (width 1 on the views)."""
    return (kind == DESCENT or kind == MOMENTUM or kind == NESTEROV or kind == WEIGHTDECAY
            or kind == CLIPNORM or kind == ACCUMGRAD)


cdef void _run_pair_stage(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                          const floating* g, floating* out, bint subtract) noexcept nogil:
    cdef int k = s.kind
    if k == ADAM:
        adam_pair_tile(s, off, n, x, g, out, subtract)
    elif k == RADAM:
        radam_pair_tile(s, off, n, x, g, out, subtract)
    elif k == OADAM:
        oadam_pair_tile(s, off, n, x, g, out, subtract)
    elif k == NADAM:
        nadam_pair_tile(s, off, n, x, g, out, subtract)
    elif k == ADAMW_COUPLED:
        adamw_coupled_pair_tile(s, off, n, x, g, out, subtract)
    elif k == ADAMW_DECOUPLED:
        adamw_decoupled_pair_tile(s, off, n, x, g, out, subtract)
    elif k == ADABELIEF:
        adabelief_pair_tile(s, off, n, x, g, out, subtract)
    elif k == RMSPROP:
        rmsprop_pair_tile(s, off, n, x, g, out, subtract)
    elif k == RMSPROP_CENTRED:
        rmsprop_centred_pair_tile(s, off, n, x, g, out, subtract)
    elif k == ADAGRAD:
        adagrad_pair_tile(s, off, n, x, g, out, subtract)
    elif k == ADADELTA:
        adadelta_pair_tile(s, off, n, x, g, out, subtract)
