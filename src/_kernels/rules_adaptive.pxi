# Per-coordinate adaptive learning rates without first moments: RMSProp (plain and
# centred), AdaGrad, AdaDelta.  Each kind has its real tile function and, beside it, its
# pair form for complex parameters: second moments and accumulators are then REAL (one
# value per complex element, holding |g|^2), shared by both components.

cdef struct RMSPropHP:
    double rho
    double omr              # 1 - rho
    double eps
    double eta


cdef void rmsprop_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                       const floating* g, floating* out, bint subtract) noexcept nogil:
    # q <- rho*q + (1-rho)*g^2 ; d = (g*eta) / (sqrt(q) + eps)
    cdef const RMSPropHP* h = <const RMSPropHP*> s.hp
    cdef floating rho = <floating> h.rho, omr = <floating> h.omr
    cdef floating eps = <floating> h.eps, eta = <floating> h.eta
    cdef floating* q = (<floating*> s.buf[0]) + off
    cdef floating gi, qi
    cdef floating gs = <floating> s.gs
    cdef Py_ssize_t i
    for i in range(n):
        gi = g[i] * gs
        qi = rho * q[i] + omr * (gi * gi)
        q[i] = qi
        _emit(out, i, (gi * eta) / (_sqrt(qi) + eps), subtract)


cdef void rmsprop_pair_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                            const floating* g, floating* out, bint subtract) noexcept nogil:
    # q <- rho*q + (1-rho)*|g|^2 (real) ; d = (g*eta) / (sqrt(q) + eps)
    cdef const RMSPropHP* h = <const RMSPropHP*> s.hp
    cdef floating rho = <floating> h.rho, omr = <floating> h.omr
    cdef floating eps = <floating> h.eps, eta = <floating> h.eta
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


cdef void rmsprop_centred_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                               const floating* g, floating* out, bint subtract) noexcept nogil:
    # q as rmsprop ; l <- rho*l + (1-rho)*g ; d = (g*eta) / (sqrt(q - l^2) + eps)
    cdef const RMSPropHP* h = <const RMSPropHP*> s.hp
    cdef floating rho = <floating> h.rho, omr = <floating> h.omr
    cdef floating eps = <floating> h.eps, eta = <floating> h.eta
    cdef floating* q = (<floating*> s.buf[0]) + off
    cdef floating* l = (<floating*> s.buf[1]) + off
    cdef floating gi, qi, li
    cdef floating gs = <floating> s.gs
    cdef Py_ssize_t i
    for i in range(n):
        gi = g[i] * gs
        qi = rho * q[i] + omr * (gi * gi)
        li = rho * l[i] + omr * gi
        q[i] = qi
        l[i] = li
        _emit(out, i, (gi * eta) / (_sqrt(qi - li * li) + eps), subtract)


cdef void rmsprop_centred_pair_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                                    const floating* g, floating* out,
                                    bint subtract) noexcept nogil:
    # q as rmsprop_pair (real) ; l <- rho*l + (1-rho)*g (complex)
    # d = (g*eta) / (sqrt(q - |l|^2) + eps)
    cdef const RMSPropHP* h = <const RMSPropHP*> s.hp
    cdef floating rho = <floating> h.rho, omr = <floating> h.omr
    cdef floating eps = <floating> h.eps, eta = <floating> h.eta
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


cdef struct AdaGradHP:
    double eta
    double eps


cdef void adagrad_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                       const floating* g, floating* out, bint subtract) noexcept nogil:
    # acc <- acc + g^2 ; d = (g*eta) / (sqrt(acc) + eps)
    cdef const AdaGradHP* h = <const AdaGradHP*> s.hp
    cdef floating eta = <floating> h.eta, eps = <floating> h.eps
    cdef floating* acc = (<floating*> s.buf[0]) + off
    cdef floating gi, ai
    cdef floating gs = <floating> s.gs
    cdef Py_ssize_t i
    for i in range(n):
        gi = g[i] * gs
        ai = acc[i] + gi * gi
        acc[i] = ai
        _emit(out, i, (gi * eta) / (_sqrt(ai) + eps), subtract)


cdef void adagrad_pair_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                            const floating* g, floating* out, bint subtract) noexcept nogil:
    # acc <- acc + |g|^2 (real) ; d = (g*eta) / (sqrt(acc) + eps)
    cdef const AdaGradHP* h = <const AdaGradHP*> s.hp
    cdef floating eta = <floating> h.eta, eps = <floating> h.eps
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


cdef struct AdaDeltaHP:
    double rho
    double omr              # 1 - rho
    double eps


cdef void adadelta_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                        const floating* g, floating* out, bint subtract) noexcept nogil:
    # acc <- rho*acc + (1-rho)*g^2 ; d = (g*sqrt(dacc + eps)) / sqrt(acc + eps)  (old dacc)
    # dacc <- rho*dacc + (1-rho)*d^2
    cdef const AdaDeltaHP* h = <const AdaDeltaHP*> s.hp
    cdef floating rho = <floating> h.rho, omr = <floating> h.omr
    cdef floating eps = <floating> h.eps
    cdef floating* acc = (<floating*> s.buf[0]) + off
    cdef floating* dacc = (<floating*> s.buf[1]) + off
    cdef floating gi, ai, di, dai
    cdef floating gs = <floating> s.gs
    cdef Py_ssize_t i
    for i in range(n):
        gi = g[i] * gs
        ai = rho * acc[i] + omr * (gi * gi)
        dai = dacc[i]
        di = (gi * _sqrt(dai + eps)) / _sqrt(ai + eps)
        acc[i] = ai
        dacc[i] = rho * dai + omr * (di * di)
        _emit(out, i, di, subtract)


cdef void adadelta_pair_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                             const floating* g, floating* out, bint subtract) noexcept nogil:
    # acc <- rho*acc + (1-rho)*|g|^2 ; d = (g*sqrt(dacc + eps)) / sqrt(acc + eps)  (old dacc)
    # dacc <- rho*dacc + (1-rho)*|d|^2          (acc, dacc real)
    cdef const AdaDeltaHP* h = <const AdaDeltaHP*> s.hp
    cdef floating rho = <floating> h.rho, omr = <floating> h.omr
    cdef floating eps = <floating> h.eps
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


cdef RMSPropHP _rmsprop_layout
cdef AdaGradHP _adagrad_layout
cdef AdaDeltaHP _adadelta_layout

# pair forms: q, acc and dacc real; centred RMSProp's l complex
register_kind("rmsprop", rmsprop_tile[float], rmsprop_tile[double], _rmsprop_layout,
              sizeof(RMSPropHP), PAIRS, NULL, NULL, 0, rmsprop_pair_tile[float],
              rmsprop_pair_tile[double], 0b0)
register_kind("rmsprop_centred", rmsprop_centred_tile[float], rmsprop_centred_tile[double],
              _rmsprop_layout, sizeof(RMSPropHP), PAIRS, NULL, NULL, 0,
              rmsprop_centred_pair_tile[float], rmsprop_centred_pair_tile[double], 0b10)
register_kind("adagrad", adagrad_tile[float], adagrad_tile[double], _adagrad_layout,
              sizeof(AdaGradHP), PAIRS, NULL, NULL, 0, adagrad_pair_tile[float],
              adagrad_pair_tile[double], 0b0)
register_kind("adadelta", adadelta_tile[float], adadelta_tile[double], _adadelta_layout,
              sizeof(AdaDeltaHP), PAIRS, NULL, NULL, 0, adadelta_pair_tile[float],
              adadelta_pair_tile[double], 0b0)
