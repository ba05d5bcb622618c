# Plain and momentum gradient descent, Rprop and Lion.  Each tile function reads g[0:n],
# scaled by the stage's input scale gs (1, or a leading ClipNorm's scale folded into this
# stage), and x[0:n] when the rule needs the parameter; updates its state buffers at
# [off:off+n]; and emits d.  Each reads its hyper-parameters by name from its hp struct
# (given in float64 by the rule class, rounded here to the dtype).

cdef struct DescentHP:
    double eta


cdef void descent_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                       const floating* g, floating* out, bint subtract) noexcept nogil:
    # d = g * eta
    cdef const DescentHP* h = <const DescentHP*> s.hp
    cdef floating eta = <floating> h.eta
    cdef floating gs = <floating> s.gs
    cdef Py_ssize_t i
    for i in range(n):
        _emit(out, i, (g[i] * gs) * eta, subtract)


cdef struct MomentumHP:
    double eta
    double rho


cdef void momentum_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                        const floating* g, floating* out, bint subtract) noexcept nogil:
    # v <- rho*v + eta*g ;  d = v
    cdef const MomentumHP* h = <const MomentumHP*> s.hp
    cdef floating eta = <floating> h.eta, rho = <floating> h.rho
    cdef floating* v = (<floating*> s.buf[0]) + off
    cdef floating vi
    cdef floating gs = <floating> s.gs
    cdef Py_ssize_t i
    for i in range(n):
        vi = rho * v[i] + eta * (g[i] * gs)
        v[i] = vi
        _emit(out, i, vi, subtract)


cdef struct NesterovHP:
    double eta
    double rho
    double old_weight       # -(rho*rho)
    double grad_weight      # (1+rho)*eta


cdef void nesterov_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                        const floating* g, floating* out, bint subtract) noexcept nogil:
    # d = (-(rho*rho))*v + ((1+rho)*eta)*g   with the old v ;  v <- rho*v - eta*g
    cdef const NesterovHP* h = <const NesterovHP*> s.hp
    cdef floating eta = <floating> h.eta, rho = <floating> h.rho
    cdef floating old_weight = <floating> h.old_weight, grad_weight = <floating> h.grad_weight
    cdef floating* v = (<floating*> s.buf[0]) + off
    cdef floating vi, gi
    cdef floating gs = <floating> s.gs
    cdef Py_ssize_t i
    for i in range(n):
        vi = v[i]
        gi = g[i] * gs
        v[i] = rho * vi - eta * gi
        _emit(out, i, old_weight * vi + grad_weight * gi, subtract)


cdef struct RpropHP:
    double ell_dec
    double ell_inc
    double gamma_min
    double gamma_max


cdef void rprop_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                     const floating* g, floating* out, bint subtract) noexcept nogil:
    # p = gprev*g ; step <- min(step*ell_inc, gamma_max) if p > 0, max(step*ell_dec, gamma_min)
    # if p < 0 ; gprev <- 0 if p < 0 else g ; d = step * sign(gprev)   (iRprop-)
    cdef const RpropHP* h = <const RpropHP*> s.hp
    cdef floating ell_dec = <floating> h.ell_dec, ell_inc = <floating> h.ell_inc
    cdef floating gamma_min = <floating> h.gamma_min, gamma_max = <floating> h.gamma_max
    cdef floating* gprev = (<floating*> s.buf[0]) + off
    cdef floating* step = (<floating*> s.buf[1]) + off
    cdef floating p, gi, si, grown, shrunk, gp
    cdef floating gs = <floating> s.gs
    cdef Py_ssize_t i
    for i in range(n):
        gi = g[i] * gs
        p = gprev[i] * gi
        si = step[i]
        # both candidate steps computed, then selected: a branch around the products kept
        # the loop scalar
        grown = _min(si * ell_inc, gamma_max)
        shrunk = _max(si * ell_dec, gamma_min)
        si = grown if p > 0 else (shrunk if p < 0 else si)
        gp = 0 if p < 0 else gi
        step[i] = si
        gprev[i] = gp
        _emit(out, i, si * _sign(gp), subtract)


cdef struct LionHP:
    double b1
    double b2
    double omb1             # 1 - b1
    double omb2             # 1 - b2
    double eta


cdef void lion_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                    const floating* g, floating* out, bint subtract) noexcept nogil:
    # The paper's Lion:  c = b1*m + (1-b1)*g ;  d = eta*sign(c) ;  m <- b2*m + (1-b2)*g
    cdef const LionHP* h = <const LionHP*> s.hp
    cdef floating b1 = <floating> h.b1, b2 = <floating> h.b2
    cdef floating omb1 = <floating> h.omb1, omb2 = <floating> h.omb2
    cdef floating eta = <floating> h.eta
    cdef floating* m = (<floating*> s.buf[0]) + off
    cdef floating mi, gi
    cdef floating gs = <floating> s.gs
    cdef Py_ssize_t i
    for i in range(n):
        mi = m[i]
        gi = g[i] * gs
        m[i] = b2 * mi + omb2 * gi
        _emit(out, i, eta * _sign(b1 * mi + omb1 * gi), subtract)


cdef DescentHP _descent_layout
cdef MomentumHP _momentum_layout
cdef NesterovHP _nesterov_layout
cdef RpropHP _rprop_layout
cdef LionHP _lion_layout

register_kind("descent", descent_tile[float], descent_tile[double], _descent_layout,
              sizeof(DescentHP), COMPONENTWISE)
register_kind("momentum", momentum_tile[float], momentum_tile[double], _momentum_layout,
              sizeof(MomentumHP), COMPONENTWISE)
register_kind("nesterov", nesterov_tile[float], nesterov_tile[double], _nesterov_layout,
              sizeof(NesterovHP), COMPONENTWISE)
register_kind("rprop", rprop_tile[float], rprop_tile[double], _rprop_layout, sizeof(RpropHP))
register_kind("lion", lion_tile[float], lion_tile[double], _lion_layout, sizeof(LionHP))
