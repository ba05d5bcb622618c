# Adam and its relatives: Adam, RAdam, AdaMax, OAdam, AMSGrad, NAdam, AdamW (both forms),
# AdaBelief.  They share one hp struct; every kind but AMSGrad divides by the bias
# corrections 1 - beta^t, derived per step from the running products beta^t (the stage's
# float64 `sc`) by `_bias_corrections` and advanced after the step by `_advance_betas`.
# Beside each real tile function stands its pair form for complex parameters: first moments
# complex (each component), second moments REAL (one |g|^2 per complex element).

cdef struct AdamHP:
    double b1
    double b2
    double omb1             # 1 - b1  (formed in float64 by the rule class)
    double omb2             # 1 - b2
    double eps
    double eta
    double lam              # AdamW's weight decay
    double bc1              # 1 - b1^t   (per step: `before`)
    double bc2              # 1 - b2^t
    double bc1_next         # NAdam: 1 - b1 * b1^t
    double r                # RAdam: the rectification r_t ...
    double rectified        # ... and 1.0 when rho_t > 4, else 0.0 (warming up)


cdef int _bias_corrections(Stage* s, const void* g, Py_ssize_t n_elements, bint pairs,
                           int n_threads, bint single) noexcept nogil:
    # in float64, from the running products; each tile rounds them once to its dtype
    cdef AdamHP* h = <AdamHP*> s.hp
    h.bc1 = 1.0 - s.sc[0]
    h.bc2 = 1.0 - s.sc[1]
    h.bc1_next = 1.0 - h.b1 * s.sc[0]
    return OK


cdef int _radam_before(Stage* s, const void* g, Py_ssize_t n_elements, bint pairs,
                       int n_threads, bint single) noexcept nogil:
    # rho_inf = 2/(1-b2) - 1 ; rho_t = rho_inf - 2 t b2^t / (1-b2^t) ; when rho_t > 4:
    # r_t = sqrt(((rho_t-4)(rho_t-2) rho_inf) / ((rho_inf-4)(rho_inf-2) rho_t))   (float64)
    cdef AdamHP* h = <AdamHP*> s.hp
    cdef double t = <double> s.ctr[0], rho_inf, rho
    _bias_corrections(s, g, n_elements, pairs, n_threads, single)
    rho_inf = 2.0 / h.omb2 - 1.0
    rho = rho_inf - ((2.0 * t) * s.sc[1]) / h.bc2
    h.rectified = 1.0 if rho > 4.0 else 0.0
    h.r = 0.0
    if rho > 4.0:
        h.r = sqrt(((rho - 4.0) * (rho - 2.0) * rho_inf)
                   / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho))
    return OK


cdef void _advance_betas(Stage* s) noexcept nogil:
    cdef const AdamHP* h = <const AdamHP*> s.hp
    s.sc[0] = s.sc[0] * h.b1
    s.sc[1] = s.sc[1] * h.b2


cdef void _advance_radam(Stage* s) noexcept nogil:
    _advance_betas(s)
    s.ctr[0] += 1


# ---------------------------------------------------------------------------------------
# The quotient rules: one loop (`quotient_tile`) for every rule that divides its moments by
# the bias corrections, specialised at compile time by a tag type, so that each compiles to
# its own loop with no branch on the rule.  The loop owns the exact-quotient scaffolding
# (quotients.pxi: by reciprocal, keep what is overwritten, redo a tile that needs the
# divider); each rule supplies only its arithmetic: its second moment, the values it divides
# and its step.

cdef struct AdamStep:
    char unused
cdef struct AdamWCoupledStep:
    char unused
cdef struct AdamWDecoupledStep:
    char unused
cdef struct RAdamStep:
    char unused
cdef struct NAdamStep:
    char unused
cdef struct AdaBeliefStep:
    char unused
ctypedef fused QuotientRule:
    AdamStep
    AdamWCoupledStep
    AdamWDecoupledStep
    RAdamStep
    NAdamStep
    AdaBeliefStep


cdef struct QuotientConstants:
    # a tile's constants, rounded to its dtype (held widened) and its divisors
    double b2, omb2, omb1, b1, eps, eta, lam, r
    bint rectified
    Divisor c1, c2, c1_next


cdef inline void _quotient_constants(QuotientRule* rule, QuotientConstants* c, const AdamHP* h,
                                     floating dtype) noexcept nogil:
    c.b1, c.b2 = <floating> h.b1, <floating> h.b2
    c.omb1, c.omb2 = <floating> h.omb1, <floating> h.omb2
    c.eps, c.eta, c.lam, c.r = <floating> h.eps, <floating> h.eta, <floating> h.lam, <floating> h.r
    c.rectified = h.rectified != 0
    c.c1 = _divisor(<floating> h.bc1)
    c.c2 = _divisor(<floating> h.bc2)
    if QuotientRule is NAdamStep:       # a division per tile: only where it is used
        c.c1_next = _divisor(<floating> h.bc1_next)


cdef inline floating _second_moment(QuotientRule* rule, const QuotientConstants* c,
                                    floating v, floating g, floating m) noexcept nogil:
    # Adam & co:  v <- b2*v + (1-b2)*g^2
    # AdaBelief:  s <- ((b2*s) + (1-b2)*(g-m)^2) + eps   (with the new m)
    cdef floating b2 = <floating> c.b2, omb2 = <floating> c.omb2, e
    if QuotientRule is AdaBeliefStep:
        e = g - m
        return (b2 * v + omb2 * (e * e)) + <floating> c.eps
    else:
        return b2 * v + omb2 * (g * g)


cdef inline floating _adam_ratio(Quotients* how, const QuotientConstants* c, floating m,
                                 floating v) noexcept nogil:
    # (m/(1-bt1)) / (sqrt(v/(1-bt2)) + eps)
    return _quotient(how, m, &c.c1) / (_sqrt(_quotient(how, v, &c.c2)) + <floating> c.eps)


cdef inline int _divides(QuotientRule* rule, const QuotientConstants* c, floating m,
                         floating v, floating g) noexcept nogil:
    # whether a value this rule divides by a bias correction needs the divider
    if QuotientRule is NAdamStep:
        return (_needs_divider(<floating> c.b1 * m, &c.c1_next)
                | _needs_divider(<floating> c.omb1 * g, &c.c1)
                | _needs_divider(v * <floating> c.b2, &c.c2))
    elif QuotientRule is AdaBeliefStep:
        return _needs_divider(<floating> c.eta * m, &c.c1) | _needs_divider(v, &c.c2)
    else:
        return _needs_divider(m, &c.c1) | _needs_divider(v, &c.c2)


cdef inline floating _quotient_step(QuotientRule* rule, Quotients* how,
                                    const QuotientConstants* c, floating m, floating v,
                                    floating g, floating x) noexcept nogil:
    # a = (m/(1-bt1)) / (sqrt(v/(1-bt2)) + eps)
    # Adam:             d = a * eta
    # AdamW (couple):   d = eta * (a + lambda*x)      AdamW (couple=False): (eta*a) + lambda*x
    # RAdam:            d = (a * eta) * r, or while warming up (rho_t <= 4) (m/(1-bt1)) * eta
    # NAdam:            d = (((b1*m)/(1 - b1*bt1) + ((1-b1)*g)/(1-bt1))
    #                        / (sqrt((v*b2)/(1-bt2)) + eps)) * eta
    # AdaBelief:        d = ((eta*m)/(1-bt1)) / (sqrt(s/(1-bt2)) + eps)
    cdef floating eta = <floating> c.eta, eps = <floating> c.eps, num
    if QuotientRule is RAdamStep:
        if not c.rectified:
            return _quotient(how, m, &c.c1) * eta
        return (_adam_ratio(how, c, m, v) * eta) * <floating> c.r
    elif QuotientRule is AdamWCoupledStep:
        return eta * (_adam_ratio(how, c, m, v) + <floating> c.lam * x)
    elif QuotientRule is AdamWDecoupledStep:
        return eta * _adam_ratio(how, c, m, v) + <floating> c.lam * x
    elif QuotientRule is NAdamStep:
        num = (_quotient(how, <floating> c.b1 * m, &c.c1_next)
               + _quotient(how, <floating> c.omb1 * g, &c.c1))
        return (num / (_sqrt(_quotient(how, v * <floating> c.b2, &c.c2)) + eps)) * eta
    elif QuotientRule is AdaBeliefStep:
        return _quotient(how, eta * m, &c.c1) / (_sqrt(_quotient(how, v, &c.c2)) + eps)
    else:
        return _adam_ratio(how, c, m, v) * eta


cdef void quotient_tile(QuotientRule* rule, const Stage* s, Py_ssize_t off, Py_ssize_t n,
                        floating* x, const floating* g, floating* out,
                        bint subtract) noexcept nogil:
    # m <- b1*m + (1-b1)*g ; v <- `_second_moment` ; d = `_quotient_step`
    # By reciprocal first, noting any value that needs the divider and keeping what `out`
    # held (in a chain `out` may be the buffer g came from); a tile that needs the divider
    # is restored and stepped again from the new moments with it.  Same bits either way.
    cdef QuotientConstants c
    cdef floating b1, omb1
    cdef floating* m = (<floating*> s.buf[0]) + off
    cdef floating* v = (<floating*> s.buf[1]) + off
    cdef floating gs = <floating> s.gs
    cdef floating gi, mi, vi
    cdef floating kept[TILE]
    cdef int divider = 0
    cdef Py_ssize_t i
    _quotient_constants(rule, &c, <const AdamHP*> s.hp, <floating> 0)
    b1, omb1 = <floating> c.b1, <floating> c.omb1
    for i in range(n):
        gi = g[i] * gs
        mi = b1 * m[i] + omb1 * gi
        vi = _second_moment(rule, &c, v[i], gi, mi)
        m[i] = mi
        v[i] = vi
        divider |= _divides(rule, &c, mi, vi, gi)
        if _fast_path(mi):
            kept[i] = out[i]
        _emit(out, i, _quotient_step(rule, <ByReciprocal*> NULL, &c, mi, vi, gi, x[i]),
              subtract)
    if divider:
        _restore(out, kept, n)
        for i in range(n):
            _emit(out, i, _quotient_step(rule, <ByDivider*> NULL, &c, m[i], v[i], g[i] * gs,
                                         x[i]), subtract)


cdef void adam_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                    const floating* g, floating* out, bint subtract) noexcept nogil:
    quotient_tile(<AdamStep*> NULL, s, off, n, x, g, out, subtract)


cdef void radam_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                     const floating* g, floating* out, bint subtract) noexcept nogil:
    quotient_tile(<RAdamStep*> NULL, s, off, n, x, g, out, subtract)


cdef void adamw_coupled_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                             const floating* g, floating* out, bint subtract) noexcept nogil:
    quotient_tile(<AdamWCoupledStep*> NULL, s, off, n, x, g, out, subtract)


cdef void adamw_decoupled_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                               const floating* g, floating* out, bint subtract) noexcept nogil:
    quotient_tile(<AdamWDecoupledStep*> NULL, s, off, n, x, g, out, subtract)


cdef void nadam_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                     const floating* g, floating* out, bint subtract) noexcept nogil:
    quotient_tile(<NAdamStep*> NULL, s, off, n, x, g, out, subtract)


cdef void adabelief_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                         const floating* g, floating* out, bint subtract) noexcept nogil:
    quotient_tile(<AdaBeliefStep*> NULL, s, off, n, x, g, out, subtract)


# ---------------------------------------------------------------------------------------
# The others read their constants directly.

cdef void adamax_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                      const floating* g, floating* out, bint subtract) noexcept nogil:
    # m <- b1*m + (1-b1)*g ; u <- max(b2*u, |g|) ; d = ((eta/(1-bt1)) * m) / (u + eps)
    cdef const AdamHP* h = <const AdamHP*> s.hp
    cdef floating b1 = <floating> h.b1, b2 = <floating> h.b2
    cdef floating omb1 = <floating> h.omb1, eps = <floating> h.eps
    cdef floating lr = <floating> (h.eta / h.bc1)        # formed in float64
    cdef floating* m = (<floating*> s.buf[0]) + off
    cdef floating* u = (<floating*> s.buf[1]) + off
    cdef floating gi, mi, ui
    cdef floating gs = <floating> s.gs
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
    cdef const AdamHP* h = <const AdamHP*> s.hp
    cdef floating b1 = <floating> h.b1, b2 = <floating> h.b2
    cdef floating omb1 = <floating> h.omb1, omb2 = <floating> h.omb2
    cdef floating bc1 = <floating> h.bc1, bc2 = <floating> h.bc2
    cdef floating eps = <floating> h.eps, eta = <floating> h.eta
    cdef floating two = 2
    cdef floating* m = (<floating*> s.buf[0]) + off
    cdef floating* v = (<floating*> s.buf[1]) + off
    cdef floating* term = (<floating*> s.buf[2]) + off
    cdef floating gi, mi, vi, ti
    cdef floating gs = <floating> s.gs
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
    cdef const AdamHP* h = <const AdamHP*> s.hp
    cdef floating b1 = <floating> h.b1, b2 = <floating> h.b2
    cdef floating omb1 = <floating> h.omb1, omb2 = <floating> h.omb2
    cdef floating eps = <floating> h.eps, eta = <floating> h.eta
    cdef floating* m = (<floating*> s.buf[0]) + off
    cdef floating* v = (<floating*> s.buf[1]) + off
    cdef floating* vhat = (<floating*> s.buf[2]) + off
    cdef floating gi, mi, vi, hi
    cdef floating gs = <floating> s.gs
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


# ---------------------------------------------------------------------------------------
# Pair forms (complex parameters).  Operation order as the real forms, every real constant
# acting on each component; |z|^2 = (re*re) + (im*im).

cdef inline floating _pair_moments(floating* m, floating* v, const floating* g, Py_ssize_t i,
                                   const AdamHP* h) noexcept nogil:
    # m <- b1*m + (1-b1)*g (each component of m[2i], m[2i+1]) ;
    # v <- b2*v + (1-b2)*|g|^2 (real, v[i]).  Returns the new v.
    cdef floating b1 = <floating> h.b1, b2 = <floating> h.b2
    cdef floating omb1 = <floating> h.omb1, omb2 = <floating> h.omb2
    cdef Py_ssize_t j = 2 * i
    cdef floating gr = g[j], gi = g[j + 1], vi
    m[j] = b1 * m[j] + omb1 * gr
    m[j + 1] = b1 * m[j + 1] + omb1 * gi
    vi = b2 * v[i] + omb2 * _abs2(gr, gi)
    v[i] = vi
    return vi


cdef inline floating _pair_step(QuotientRule* rule, const AdamHP* h, floating m, floating g,
                                floating x, floating den) noexcept nogil:
    # one component's step of a quotient rule, with its pair's den = sqrt(v/(1-bt2)) + eps
    # (NAdam: sqrt((v*b2)/(1-bt2)) + eps) shared by both components
    cdef floating bc1 = <floating> h.bc1, eta = <floating> h.eta
    cdef floating lam = <floating> h.lam
    if QuotientRule is RAdamStep:
        if h.rectified == 0:
            return (m / bc1) * eta
        return (((m / bc1) / den) * eta) * <floating> h.r
    elif QuotientRule is AdamWCoupledStep:
        return eta * ((m / bc1) / den + lam * x)
    elif QuotientRule is AdamWDecoupledStep:
        return eta * ((m / bc1) / den) + lam * x
    elif QuotientRule is NAdamStep:
        return (((<floating> h.b1 * m) / <floating> h.bc1_next + (<floating> h.omb1 * g) / bc1)
                / den) * eta
    elif QuotientRule is AdaBeliefStep:
        return ((eta * m) / bc1) / den
    else:
        return ((m / bc1) / den) * eta


cdef void quotient_pair_tile(QuotientRule* rule, const Stage* s, Py_ssize_t off, Py_ssize_t n,
                             floating* x, const floating* g, floating* out,
                             bint subtract) noexcept nogil:
    # m complex, v real (AdaBelief: s <- ((b2*s) + (1-b2)*|g-m|^2) + eps, with the new m)
    cdef const AdamHP* h = <const AdamHP*> s.hp
    cdef floating b1 = <floating> h.b1, b2 = <floating> h.b2
    cdef floating omb1 = <floating> h.omb1, omb2 = <floating> h.omb2
    cdef floating bc2 = <floating> h.bc2, eps = <floating> h.eps
    cdef floating* m = (<floating*> s.buf[0]) + off
    cdef floating* v = (<floating*> s.buf[1]) + off // 2
    cdef floating gr, gi, mr, mi, vi, den
    cdef floating d[TILE]
    cdef Py_ssize_t i, j
    for i in range(n // 2):
        j = 2 * i
        if QuotientRule is AdaBeliefStep:
            gr = g[j]
            gi = g[j + 1]
            mr = b1 * m[j] + omb1 * gr
            mi = b1 * m[j + 1] + omb1 * gi
            vi = (b2 * v[i] + omb2 * _abs2(gr - mr, gi - mi)) + eps
            m[j] = mr
            m[j + 1] = mi
            v[i] = vi
        else:
            vi = _pair_moments(m, v, g, i, h)
        if QuotientRule is NAdamStep:
            den = _sqrt((vi * b2) / bc2) + eps
        else:
            den = _sqrt(vi / bc2) + eps
        d[j] = _pair_step(rule, h, m[j], g[j], x[j], den)
        d[j + 1] = _pair_step(rule, h, m[j + 1], g[j + 1], x[j + 1], den)
    _emit_all(out, d, n, subtract)


cdef void adam_pair_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                         const floating* g, floating* out, bint subtract) noexcept nogil:
    quotient_pair_tile(<AdamStep*> NULL, s, off, n, x, g, out, subtract)


cdef void radam_pair_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                          const floating* g, floating* out, bint subtract) noexcept nogil:
    quotient_pair_tile(<RAdamStep*> NULL, s, off, n, x, g, out, subtract)


cdef void adamw_coupled_pair_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                                  const floating* g, floating* out,
                                  bint subtract) noexcept nogil:
    quotient_pair_tile(<AdamWCoupledStep*> NULL, s, off, n, x, g, out, subtract)


cdef void adamw_decoupled_pair_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                                    const floating* g, floating* out,
                                    bint subtract) noexcept nogil:
    quotient_pair_tile(<AdamWDecoupledStep*> NULL, s, off, n, x, g, out, subtract)


cdef void nadam_pair_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                          const floating* g, floating* out, bint subtract) noexcept nogil:
    quotient_pair_tile(<NAdamStep*> NULL, s, off, n, x, g, out, subtract)


cdef void adabelief_pair_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                              const floating* g, floating* out, bint subtract) noexcept nogil:
    quotient_pair_tile(<AdaBeliefStep*> NULL, s, off, n, x, g, out, subtract)


cdef void oadam_pair_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                          const floating* g, floating* out, bint subtract) noexcept nogil:
    # moments as adam_pair ; term' = ((eta*m)/(1-bt1)) / den ; d = 2*term' - term
    cdef const AdamHP* h = <const AdamHP*> s.hp
    cdef floating bc1 = <floating> h.bc1, bc2 = <floating> h.bc2
    cdef floating eps = <floating> h.eps, eta = <floating> h.eta
    cdef floating two = 2
    cdef floating* m = (<floating*> s.buf[0]) + off
    cdef floating* v = (<floating*> s.buf[1]) + off // 2
    cdef floating* term = (<floating*> s.buf[2]) + off
    cdef floating den, tr, ti
    cdef floating d[TILE]
    cdef Py_ssize_t i, j
    for i in range(n // 2):
        j = 2 * i
        den = _sqrt(_pair_moments(m, v, g, i, h) / bc2) + eps
        tr = ((eta * m[j]) / bc1) / den
        ti = ((eta * m[j + 1]) / bc1) / den
        d[j] = two * tr - term[j]
        d[j + 1] = two * ti - term[j + 1]
        term[j] = tr
        term[j + 1] = ti
    _emit_all(out, d, n, subtract)


cdef AdamHP _adam_layout


cdef int _register_quotient_rule(str name, Tile32 tile32, Tile64 tile64, Tile32 pair32,
                                 Tile64 pair64, Before before, After after) except -1:
    # pair forms: m complex, v real
    return register_kind(name, tile32, tile64, _adam_layout, sizeof(AdamHP), PAIRS, before,
                         after, KEEPS_TILE, pair32, pair64, 0b1)


_register_quotient_rule("adam", adam_tile[float], adam_tile[double], adam_pair_tile[float],
                        adam_pair_tile[double], _bias_corrections, _advance_betas)
_register_quotient_rule("radam", radam_tile[float], radam_tile[double],
                        radam_pair_tile[float], radam_pair_tile[double], _radam_before,
                        _advance_radam)
_register_quotient_rule("adamw_coupled", adamw_coupled_tile[float], adamw_coupled_tile[double],
                        adamw_coupled_pair_tile[float], adamw_coupled_pair_tile[double],
                        _bias_corrections, _advance_betas)
_register_quotient_rule("adamw_decoupled", adamw_decoupled_tile[float],
                        adamw_decoupled_tile[double], adamw_decoupled_pair_tile[float],
                        adamw_decoupled_pair_tile[double], _bias_corrections, _advance_betas)
_register_quotient_rule("nadam", nadam_tile[float], nadam_tile[double],
                        nadam_pair_tile[float], nadam_pair_tile[double], _bias_corrections,
                        _advance_betas)
_register_quotient_rule("adabelief", adabelief_tile[float], adabelief_tile[double],
                        adabelief_pair_tile[float], adabelief_pair_tile[double],
                        _bias_corrections, _advance_betas)
register_kind("oadam", oadam_tile[float], oadam_tile[double], _adam_layout, sizeof(AdamHP),
              PAIRS, _bias_corrections, _advance_betas, 0, oadam_pair_tile[float],
              oadam_pair_tile[double], 0b101)      # m, term complex; v real
register_kind("adamax", adamax_tile[float], adamax_tile[double], _adam_layout, sizeof(AdamHP),
              REFUSED, _bias_corrections, _advance_betas)
register_kind("amsgrad", amsgrad_tile[float], amsgrad_tile[double], _adam_layout,
              sizeof(AdamHP))
