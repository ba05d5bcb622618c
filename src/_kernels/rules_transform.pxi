# Gradient transformations, used mostly inside an OptimiserChain.

cdef void weightdecay_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                           const floating* g, floating* out, bint subtract) noexcept nogil:
    # d = g + lambda*x
    cdef floating lam = <floating> s.hp[0]
    cdef floating gs = <floating> s.gs      # input scale: a folded ClipNorm, else 1
    cdef Py_ssize_t i
    for i in range(n):
        _emit(out, i, (g[i] * gs) + lam * x[i], subtract)


cdef void signdecay_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                         const floating* g, floating* out, bint subtract) noexcept nogil:
    # d = g + lambda*sign(x)
    cdef floating lam = <floating> s.hp[0]
    cdef floating gs = <floating> s.gs      # input scale: a folded ClipNorm, else 1
    cdef Py_ssize_t i
    for i in range(n):
        _emit(out, i, (g[i] * gs) + lam * _sign(x[i]), subtract)


cdef void clipgrad_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                        const floating* g, floating* out, bint subtract) noexcept nogil:
    # d = clamp(g, -delta, delta); NaN passes through
    cdef floating hi = <floating> s.hp[0]
    cdef floating lo = -hi
    cdef floating gi, di
    cdef floating gs = <floating> s.gs      # input scale: a folded ClipNorm, else 1
    cdef Py_ssize_t i
    for i in range(n):
        gi = g[i] * gs
        di = gi
        if gi > hi:
            di = hi
        elif gi < lo:
            di = lo
        _emit(out, i, di, subtract)


cdef void scale_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                     const floating* g, floating* out, bint subtract) noexcept nogil:
    # d = g * lam   (ClipNorm, once its norm is known)
    cdef floating lam = <floating> s.hp[0]
    cdef floating gs = <floating> s.gs      # input scale: a folded ClipNorm, else 1
    cdef Py_ssize_t i
    for i in range(n):
        _emit(out, i, (g[i] * gs) * lam, subtract)


cdef void accumgrad_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                         const floating* g, floating* out, bint subtract) noexcept nogil:
    # acc <- g/n on the first of n gradients, acc + g/n after ; d = acc
    # hp: n, 1.0 on the first gradient else 0.0
    cdef floating count = <floating> s.hp[0]
    cdef bint first = s.hp[1] != 0
    cdef floating* acc = (<floating*> s.buf[0]) + off
    cdef floating ai
    cdef floating gs = <floating> s.gs      # input scale: a folded ClipNorm, else 1
    cdef Py_ssize_t i
    for i in range(n):
        if first:
            ai = (g[i] * gs) / count
        else:
            ai = acc[i] + (g[i] * gs) / count
        acc[i] = ai
        _emit(out, i, ai, subtract)
