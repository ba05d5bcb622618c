# Plain and momentum gradient descent.  Each tile function reads g[0:n], scaled by the
# stage's input scale gs (1, or a leading ClipNorm's scale folded into this stage), and
# x[0:n] when the rule needs the parameter; updates its state buffers at [off:off+n]; and
# emits d.
# hp holds the hyper-parameters in the parameter dtype, in the order the Python rule packs them.

cdef void descent_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                       const floating* g, floating* out, bint subtract) noexcept nogil:
    # d = g * eta
    cdef floating eta = <floating> s.hp[0]
    cdef floating gs = <floating> s.gs      # input scale: a folded ClipNorm, else 1
    cdef Py_ssize_t i
    for i in range(n):
        _emit(out, i, (g[i] * gs) * eta, subtract)


cdef void momentum_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                        const floating* g, floating* out, bint subtract) noexcept nogil:
    # v <- rho*v + eta*g ;  d = v
    cdef floating eta = <floating> s.hp[0], rho = <floating> s.hp[1]
    cdef floating* v = (<floating*> s.buf[0]) + off
    cdef floating vi
    cdef floating gs = <floating> s.gs      # input scale: a folded ClipNorm, else 1
    cdef Py_ssize_t i
    for i in range(n):
        vi = rho * v[i] + eta * (g[i] * gs)
        v[i] = vi
        _emit(out, i, vi, subtract)


cdef void nesterov_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                        const floating* g, floating* out, bint subtract) noexcept nogil:
    # d = (-(rho*rho))*v + ((1+rho)*eta)*g   with the old v ;  v <- rho*v - eta*g
    cdef floating eta = <floating> s.hp[0], rho = <floating> s.hp[1]
    cdef floating neg_rho2 = <floating> s.hp[2], c = <floating> s.hp[3]
    cdef floating* v = (<floating*> s.buf[0]) + off
    cdef floating vi, gi
    cdef floating gs = <floating> s.gs      # input scale: a folded ClipNorm, else 1
    cdef Py_ssize_t i
    for i in range(n):
        vi = v[i]
        gi = g[i] * gs
        v[i] = rho * vi - eta * gi
        _emit(out, i, neg_rho2 * vi + c * gi, subtract)


cdef void rprop_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                     const floating* g, floating* out, bint subtract) noexcept nogil:
    # p = gprev*g ; step <- min(step*ell_inc, gamma_max) if p > 0, max(step*ell_dec, gamma_min)
    # if p < 0 ; gprev <- 0 if p < 0 else g ; d = step * sign(gprev)   (iRprop-)
    cdef floating ell_dec = <floating> s.hp[0], ell_inc = <floating> s.hp[1]
    cdef floating gamma_min = <floating> s.hp[2], gamma_max = <floating> s.hp[3]
    cdef floating* gprev = (<floating*> s.buf[0]) + off
    cdef floating* step = (<floating*> s.buf[1]) + off
    cdef floating p, gi, si, grown, shrunk, gp
    cdef floating gs = <floating> s.gs      # input scale: a folded ClipNorm, else 1
    cdef Py_ssize_t i
    for i in range(n):
        gi = g[i] * gs
        p = gprev[i] * gi
        si = step[i]
        # both candidate steps computed, then selected: a branch around the products kept
        # the loop scalar (written as selects it vectorises with or without -ftrapping-math)
        grown = _min(si * ell_inc, gamma_max)
        shrunk = _max(si * ell_dec, gamma_min)
        si = grown if p > 0 else (shrunk if p < 0 else si)
        gp = 0 if p < 0 else gi
        step[i] = si
        gprev[i] = gp
        _emit(out, i, si * _sign(gp), subtract)


cdef void lion_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                    const floating* g, floating* out, bint subtract) noexcept nogil:
    # The paper's Lion:  c = b1*m + (1-b1)*g ;  d = eta*sign(c) ;  m <- b2*m + (1-b2)*g
    cdef floating b1 = <floating> s.hp[0], b2 = <floating> s.hp[1]
    cdef floating omb1 = <floating> s.hp[2], omb2 = <floating> s.hp[3]
    cdef floating eta = <floating> s.hp[4]
    cdef floating* m = (<floating*> s.buf[0]) + off
    cdef floating mi, gi
    cdef floating gs = <floating> s.gs      # input scale: a folded ClipNorm, else 1
    cdef Py_ssize_t i
    for i in range(n):
        mi = m[i]
        gi = g[i] * gs
        m[i] = b2 * mi + omb2 * gi
        _emit(out, i, eta * _sign(b1 * mi + omb1 * gi), subtract)
