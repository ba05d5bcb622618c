# Adam and its relatives.  hp layout shared by most of them:
#   hp[0] b1, hp[1] b2, hp[2] 1-b1, hp[3] 1-b2, hp[4] 1-bt1, hp[5] 1-bt2, hp[6] eps, hp[7] eta
# where bt = beta^t is the running product kept in the state (bias corrections).

# Their quotients by the bias corrections go through quotients.pxi: a loop divides by
# reciprocal (ByReciprocal) while it updates the moments and notes any value that needs the
# divider; it keeps what it overwrites in `out`, and a chunk with such a value is restored
# and stepped again from the new moments with the divider (ByDivider).  Same bits either way.
# A chunk is at most TILE elements, the size of the `kept` buffer (`_chunk_end`), so that
# these loops run on tiles of any length.

cdef inline floating _adam_ratio(Quotients* how, floating mi, floating vi, const Divisor* c1,
                                 const Divisor* c2, floating eps) noexcept nogil:
    # (m/(1-bt1)) / (sqrt(v/(1-bt2)) + eps)
    return _quotient(how, mi, c1) / (_sqrt(_quotient(how, vi, c2)) + eps)


# Adam, AdamW (both forms) and RAdam share their moments and differ only in the step they
# take from them; one tile function serves the four, specialised at compile time by a
# fused tag type, so that each compiles to its own loop with no branch on the rule.
cdef struct AdamStep:
    char unused
cdef struct AdamWCoupledStep:
    char unused
cdef struct AdamWDecoupledStep:
    char unused
cdef struct RAdamStep:
    char unused
ctypedef fused AdamFamily:
    AdamStep
    AdamWCoupledStep
    AdamWDecoupledStep
    RAdamStep


cdef inline floating _adam_family_d(AdamFamily* rule, Quotients* how, floating mi, floating vi,
                                    floating xi, const Divisor* c1, const Divisor* c2,
                                    floating eps, floating eta, floating lam, floating r,
                                    bint rectified) noexcept nogil:
    # a = (m/(1-bt1)) / (sqrt(v/(1-bt2)) + eps)
    # Adam:            d = a * eta
    # AdamW (couple):  d = eta * (a + lambda*x)      AdamW (couple=False): d = (eta*a) + lambda*x
    # RAdam:           d = (a * eta) * r, or while warming up (rho_t <= 4) (m/(1-bt1)) * eta
    if AdamFamily is RAdamStep:
        if not rectified:
            return _quotient(how, mi, c1) * eta
        return (_adam_ratio(how, mi, vi, c1, c2, eps) * eta) * r
    elif AdamFamily is AdamWCoupledStep:
        return eta * (_adam_ratio(how, mi, vi, c1, c2, eps) + lam * xi)
    elif AdamFamily is AdamWDecoupledStep:
        return eta * _adam_ratio(how, mi, vi, c1, c2, eps) + lam * xi
    else:
        return _adam_ratio(how, mi, vi, c1, c2, eps) * eta


cdef void adam_family_tile(AdamFamily* rule, const Stage* s, Py_ssize_t off, Py_ssize_t n,
                           floating* x, const floating* g, floating* out,
                           bint subtract) noexcept nogil:
    # m <- b1*m + (1-b1)*g ; v <- b2*v + (1-b2)*g^2 ; d as _adam_family_d
    # hp: Adam's eight, then AdamW's hp[8] lambda, or RAdam's hp[8] r (the rectification)
    # and hp[9] 1.0 when rho_t > 4 else 0.0
    cdef floating b1 = <floating> s.hp[0], b2 = <floating> s.hp[1]
    cdef floating omb1 = <floating> s.hp[2], omb2 = <floating> s.hp[3]
    cdef Divisor c1 = _divisor(<floating> s.hp[4]), c2 = _divisor(<floating> s.hp[5])
    cdef floating eps = <floating> s.hp[6], eta = <floating> s.hp[7]
    cdef floating lam = 0, r = 0
    cdef bint rectified = False
    cdef floating* m = (<floating*> s.buf[0]) + off
    cdef floating* v = (<floating*> s.buf[1]) + off
    cdef floating gi, mi, vi
    cdef floating gs = <floating> s.gs      # input scale: a folded ClipNorm, else 1
    cdef floating kept[TILE]
    cdef int divider
    cdef Py_ssize_t i, start = 0, end
    if AdamFamily is RAdamStep:
        r = <floating> s.hp[8]
        rectified = s.hp[9] != 0
    elif AdamFamily is AdamWCoupledStep or AdamFamily is AdamWDecoupledStep:
        lam = <floating> s.hp[8]
    while start < n:
        end = _chunk_end(start, n, eps)
        divider = 0
        for i in range(start, end):
            gi = g[i] * gs
            mi = b1 * m[i] + omb1 * gi
            vi = b2 * v[i] + omb2 * (gi * gi)
            m[i] = mi
            v[i] = vi
            divider |= _needs_divider(mi, &c1) | _needs_divider(vi, &c2)
            if _fast_path(mi):
                kept[i - start] = out[i]
            _emit(out, i, _adam_family_d(rule, <ByReciprocal*> NULL, mi, vi, x[i], &c1, &c2,
                                         eps, eta, lam, r, rectified), subtract)
        if divider:
            _restore(out, kept, start, end)
            for i in range(start, end):
                _emit(out, i, _adam_family_d(rule, <ByDivider*> NULL, m[i], v[i], x[i], &c1,
                                             &c2, eps, eta, lam, r, rectified), subtract)
        start = end


cdef void adamax_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                      const floating* g, floating* out, bint subtract) noexcept nogil:
    # m <- b1*m + (1-b1)*g ; u <- max(b2*u, |g|) ; d = ((eta/(1-bt1)) * m) / (u + eps)
    # hp: b1, b2, 1-b1, eta/(1-bt1), eps
    cdef floating b1 = <floating> s.hp[0], b2 = <floating> s.hp[1]
    cdef floating omb1 = <floating> s.hp[2], lr = <floating> s.hp[3]
    cdef floating eps = <floating> s.hp[4]
    cdef floating* m = (<floating*> s.buf[0]) + off
    cdef floating* u = (<floating*> s.buf[1]) + off
    cdef floating gi, mi, ui
    cdef floating gs = <floating> s.gs      # input scale: a folded ClipNorm, else 1
    cdef Py_ssize_t i
    for i in range(n):
        gi = g[i] * gs
        mi = b1 * m[i] + omb1 * gi
        ui = _max(b2 * u[i], _abs(gi))
        m[i] = mi
        u[i] = ui
        _emit(out, i, (lr * mi) / (ui + eps), subtract)


cdef void oadam_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                     const floating* g, floating* out, bint subtract) noexcept nogil:
    # m, v as Adam ; term' = ((eta*m)/(1-bt1)) / (sqrt(v/(1-bt2)) + eps) ; d = 2*term' - term
    cdef floating b1 = <floating> s.hp[0], b2 = <floating> s.hp[1]
    cdef floating omb1 = <floating> s.hp[2], omb2 = <floating> s.hp[3]
    cdef floating bc1 = <floating> s.hp[4], bc2 = <floating> s.hp[5]
    cdef floating eps = <floating> s.hp[6], eta = <floating> s.hp[7]
    cdef floating two = 2
    cdef floating* m = (<floating*> s.buf[0]) + off
    cdef floating* v = (<floating*> s.buf[1]) + off
    cdef floating* term = (<floating*> s.buf[2]) + off
    cdef floating gi, mi, vi, ti
    cdef floating gs = <floating> s.gs      # input scale: a folded ClipNorm, else 1
    cdef Py_ssize_t i
    for i in range(n):
        gi = g[i] * gs
        mi = b1 * m[i] + omb1 * gi
        vi = b2 * v[i] + omb2 * (gi * gi)
        m[i] = mi
        v[i] = vi
        ti = ((eta * mi) / bc1) / (_sqrt(vi / bc2) + eps)
        _emit(out, i, two * ti - term[i], subtract)
        term[i] = ti


cdef void amsgrad_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                       const floating* g, floating* out, bint subtract) noexcept nogil:
    # m, v as Adam ; vhat <- max(vhat, v) ; d = (eta*m) / (sqrt(vhat) + eps)   (no bias correction)
    # hp: b1, b2, 1-b1, 1-b2, eps, eta
    cdef floating b1 = <floating> s.hp[0], b2 = <floating> s.hp[1]
    cdef floating omb1 = <floating> s.hp[2], omb2 = <floating> s.hp[3]
    cdef floating eps = <floating> s.hp[4], eta = <floating> s.hp[5]
    cdef floating* m = (<floating*> s.buf[0]) + off
    cdef floating* v = (<floating*> s.buf[1]) + off
    cdef floating* vhat = (<floating*> s.buf[2]) + off
    cdef floating gi, mi, vi, hi
    cdef floating gs = <floating> s.gs      # input scale: a folded ClipNorm, else 1
    cdef Py_ssize_t i
    for i in range(n):
        gi = g[i] * gs
        mi = b1 * m[i] + omb1 * gi
        vi = b2 * v[i] + omb2 * (gi * gi)
        hi = _max(vhat[i], vi)
        m[i] = mi
        v[i] = vi
        vhat[i] = hi
        _emit(out, i, (eta * mi) / (_sqrt(hi) + eps), subtract)


cdef inline floating _nadam_d(Quotients* how, floating mi, floating vi, floating gi,
                              floating b1, floating b2, floating omb1, const Divisor* c1,
                              const Divisor* c1_next, const Divisor* c2, floating eps,
                              floating eta) noexcept nogil:
    cdef floating num = _quotient(how, b1 * mi, c1_next) + _quotient(how, omb1 * gi, c1)
    return (num / (_sqrt(_quotient(how, vi * b2, c2)) + eps)) * eta


cdef void nadam_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                     const floating* g, floating* out, bint subtract) noexcept nogil:
    # m, v as Adam ; num = (b1*m)/(1 - b1*bt1) + ((1-b1)*g)/(1-bt1)
    # den = sqrt((v*b2)/(1-bt2)) + eps ; d = (num/den) * eta
    # hp: b1, b2, 1-b1, 1-b2, 1-bt1, 1-bt2, eps, eta, 1-b1*bt1
    cdef floating b1 = <floating> s.hp[0], b2 = <floating> s.hp[1]
    cdef floating omb1 = <floating> s.hp[2], omb2 = <floating> s.hp[3]
    cdef Divisor c1 = _divisor(<floating> s.hp[4]), c2 = _divisor(<floating> s.hp[5])
    cdef floating eps = <floating> s.hp[6], eta = <floating> s.hp[7]
    cdef Divisor c1_next = _divisor(<floating> s.hp[8])
    cdef floating* m = (<floating*> s.buf[0]) + off
    cdef floating* v = (<floating*> s.buf[1]) + off
    cdef floating gi, mi, vi
    cdef floating gs = <floating> s.gs      # input scale: a folded ClipNorm, else 1
    cdef floating kept[TILE]
    cdef int divider
    cdef Py_ssize_t i, start = 0, end
    while start < n:
        end = _chunk_end(start, n, eps)
        divider = 0
        for i in range(start, end):
            gi = g[i] * gs
            mi = b1 * m[i] + omb1 * gi
            vi = b2 * v[i] + omb2 * (gi * gi)
            m[i] = mi
            v[i] = vi
            divider |= (_needs_divider(b1 * mi, &c1_next) | _needs_divider(omb1 * gi, &c1)
                        | _needs_divider(vi * b2, &c2))
            if _fast_path(mi):
                kept[i - start] = out[i]
            _emit(out, i, _nadam_d(<ByReciprocal*> NULL, mi, vi, gi, b1, b2, omb1, &c1,
                                   &c1_next, &c2, eps, eta), subtract)
        if divider:
            _restore(out, kept, start, end)     # g too, where out is the buffer g came from
            for i in range(start, end):
                _emit(out, i, _nadam_d(<ByDivider*> NULL, m[i], v[i], g[i] * gs, b1, b2,
                                       omb1, &c1, &c1_next, &c2, eps, eta), subtract)
        start = end


cdef inline floating _adabelief_d(Quotients* how, floating mi, floating si, const Divisor* c1,
                                  const Divisor* c2, floating eps, floating eta) noexcept nogil:
    # ((eta*m)/(1-bt1)) / (sqrt(s/(1-bt2)) + eps)
    return _quotient(how, eta * mi, c1) / (_sqrt(_quotient(how, si, c2)) + eps)


cdef void adabelief_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                         const floating* g, floating* out, bint subtract) noexcept nogil:
    # m <- b1*m + (1-b1)*g ; s <- ((b2*s) + (1-b2)*(g-m)^2) + eps   (with the new m)
    # d = ((eta*m)/(1-bt1)) / (sqrt(s/(1-bt2)) + eps)
    cdef floating b1 = <floating> s.hp[0], b2 = <floating> s.hp[1]
    cdef floating omb1 = <floating> s.hp[2], omb2 = <floating> s.hp[3]
    cdef Divisor c1 = _divisor(<floating> s.hp[4]), c2 = _divisor(<floating> s.hp[5])
    cdef floating eps = <floating> s.hp[6], eta = <floating> s.hp[7]
    cdef floating* m = (<floating*> s.buf[0]) + off
    cdef floating* sv = (<floating*> s.buf[1]) + off
    cdef floating gi, mi, si, e
    cdef floating gs = <floating> s.gs      # input scale: a folded ClipNorm, else 1
    cdef floating kept[TILE]
    cdef int divider
    cdef Py_ssize_t i, start = 0, end
    while start < n:
        end = _chunk_end(start, n, eps)
        divider = 0
        for i in range(start, end):
            gi = g[i] * gs
            mi = b1 * m[i] + omb1 * gi
            e = gi - mi
            si = (b2 * sv[i] + omb2 * (e * e)) + eps
            m[i] = mi
            sv[i] = si
            divider |= _needs_divider(eta * mi, &c1) | _needs_divider(si, &c2)
            if _fast_path(mi):
                kept[i - start] = out[i]
            _emit(out, i, _adabelief_d(<ByReciprocal*> NULL, mi, si, &c1, &c2, eps, eta),
                  subtract)
        if divider:
            _restore(out, kept, start, end)
            for i in range(start, end):
                _emit(out, i, _adabelief_d(<ByDivider*> NULL, m[i], sv[i], &c1, &c2, eps,
                                           eta), subtract)
        start = end
