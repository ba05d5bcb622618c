# Per-coordinate adaptive learning rates without first moments.

cdef void rmsprop_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                       const floating* g, floating* out, bint subtract) noexcept nogil:
    # q <- rho*q + (1-rho)*g^2 ; d = (g*eta) / (sqrt(q) + eps)      hp: rho, 1-rho, eps, eta
    cdef floating rho = <floating> s.hp[0], omr = <floating> s.hp[1]
    cdef floating eps = <floating> s.hp[2], eta = <floating> s.hp[3]
    cdef floating* q = (<floating*> s.buf[0]) + off
    cdef floating gi, qi
    cdef floating gs = <floating> s.gs      # input scale: a folded ClipNorm, else 1
    cdef Py_ssize_t i
    for i in range(n):
        gi = g[i] * gs
        qi = rho * q[i] + omr * (gi * gi)
        q[i] = qi
        _emit(out, i, (gi * eta) / (_sqrt(qi) + eps), subtract)


cdef void rmsprop_centred_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                               const floating* g, floating* out, bint subtract) noexcept nogil:
    # q as rmsprop ; l <- rho*l + (1-rho)*g ; d = (g*eta) / (sqrt(q - l^2) + eps)
    cdef floating rho = <floating> s.hp[0], omr = <floating> s.hp[1]
    cdef floating eps = <floating> s.hp[2], eta = <floating> s.hp[3]
    cdef floating* q = (<floating*> s.buf[0]) + off
    cdef floating* l = (<floating*> s.buf[1]) + off
    cdef floating gi, qi, li
    cdef floating gs = <floating> s.gs      # input scale: a folded ClipNorm, else 1
    cdef Py_ssize_t i
    for i in range(n):
        gi = g[i] * gs
        qi = rho * q[i] + omr * (gi * gi)
        li = rho * l[i] + omr * gi
        q[i] = qi
        l[i] = li
        _emit(out, i, (gi * eta) / (_sqrt(qi - li * li) + eps), subtract)


cdef void adagrad_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                       const floating* g, floating* out, bint subtract) noexcept nogil:
    # acc <- acc + g^2 ; d = (g*eta) / (sqrt(acc) + eps)      hp: eta, eps
    cdef floating eta = <floating> s.hp[0], eps = <floating> s.hp[1]
    cdef floating* acc = (<floating*> s.buf[0]) + off
    cdef floating gi, ai
    cdef floating gs = <floating> s.gs      # input scale: a folded ClipNorm, else 1
    cdef Py_ssize_t i
    for i in range(n):
        gi = g[i] * gs
        ai = acc[i] + gi * gi
        acc[i] = ai
        _emit(out, i, (gi * eta) / (_sqrt(ai) + eps), subtract)


cdef void adadelta_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                        const floating* g, floating* out, bint subtract) noexcept nogil:
    # acc <- rho*acc + (1-rho)*g^2 ; d = (g*sqrt(dacc + eps)) / sqrt(acc + eps)  (old dacc)
    # dacc <- rho*dacc + (1-rho)*d^2          hp: rho, 1-rho, eps
    cdef floating rho = <floating> s.hp[0], omr = <floating> s.hp[1]
    cdef floating eps = <floating> s.hp[2]
    cdef floating* acc = (<floating*> s.buf[0]) + off
    cdef floating* dacc = (<floating*> s.buf[1]) + off
    cdef floating gi, ai, di, dai
    cdef floating gs = <floating> s.gs      # input scale: a folded ClipNorm, else 1
    cdef Py_ssize_t i
    for i in range(n):
        gi = g[i] * gs
        ai = rho * acc[i] + omr * (gi * gi)
        dai = dacc[i]
        di = (gi * _sqrt(dai + eps)) / _sqrt(ai + eps)
        acc[i] = ai
        dacc[i] = rho * dai + omr * (di * di)
        _emit(out, i, di, subtract)
