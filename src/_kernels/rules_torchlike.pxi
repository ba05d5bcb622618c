# PyTorch's own forms of three Adam relatives: torch.optim.Adamax, RAdam and NAdam (their
# single-tensor paths, weight_decay=0, no maximize), where they differ from the seed's
# AdaMax, RAdam and NAdam of rules_adam.pxi.  Each keeps a step counter t (starting at 1)
# and derives its per-step scalars in float64 from it with pow(), as torch does with
# `beta ** step`; NAdam also keeps the running product of its momentum schedule in `sc`.
# The first moment follows torch's `exp_avg.lerp_(grad, 1 - beta1)` (common.pxi's _lerp)
# and the operation order is torch's, so a float64 run tracks torch to rounding.
# torch runs these three on the real views of a complex parameter: COMPONENTWISE.

cdef struct TorchAdamaxHP:
    double b1
    double omb1             # 1 - b1, the lerp weight (formed in float64)
    double b2
    double eps
    double eta
    double clr              # per step: eta / (1 - b1^t)


cdef struct TorchRAdamHP:
    double b1
    double omb1
    double b2
    double omb2
    double eps
    double eta
    double bc1              # per step: 1 - b1^t
    double sqrt_bc2         # (1 - b2^t) ** 0.5
    double r                # the rectification r_t when rho_t > 5 ...
    double rectified        # ... and 1.0 then, else 0.0 (warm-up: no second moment)


cdef struct TorchNAdamHP:
    double b1
    double omb1
    double b2
    double omb2
    double eps
    double eta
    double momentum_decay
    double bc2              # per step: 1 - b2^t
    double cg               # eta (1 - mu_t) / (1 - prod_{i<=t} mu_i)
    double cm               # eta mu_{t+1} / (1 - prod_{i<=t+1} mu_i)
    double mu_product       # prod_{i<=t} mu_i, stored into sc[0] after the step


cdef int _torch_adamax_before(Stage* s, const void* g, Py_ssize_t n_elements, bint pairs,
                              int n_threads, bint single) noexcept nogil:
    # clr = lr / (1 - beta1 ** step)
    cdef TorchAdamaxHP* h = <TorchAdamaxHP*> s.hp
    h.clr = h.eta / (1.0 - pow(h.b1, <double> s.ctr[0]))
    return OK


cdef int _torch_radam_before(Stage* s, const void* g, Py_ssize_t n_elements, bint pairs,
                             int n_threads, bint single) noexcept nogil:
    # rho_inf = 2/(1-b2) - 1 ; rho_t = rho_inf - 2 t b2^t / (1-b2^t) ; rectified when
    # rho_t > 5 (torch's threshold; the seed's RAdam: > 4), with
    # r_t = (((rho_t-4)(rho_t-2) rho_inf) / ((rho_inf-4)(rho_inf-2) rho_t)) ** 0.5
    cdef TorchRAdamHP* h = <TorchRAdamHP*> s.hp
    cdef double t = <double> s.ctr[0], bt2 = pow(h.b2, t), bc2 = 1.0 - bt2, rho_inf, rho
    h.bc1 = 1.0 - pow(h.b1, t)
    h.sqrt_bc2 = pow(bc2, 0.5)
    rho_inf = 2.0 / (1.0 - h.b2) - 1.0
    rho = rho_inf - ((2.0 * t) * bt2) / bc2
    h.rectified = 1.0 if rho > 5.0 else 0.0
    h.r = 0.0
    if rho > 5.0:
        h.r = pow(((rho - 4.0) * (rho - 2.0) * rho_inf)
                  / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho), 0.5)
    return OK


cdef double _torch_nadam_mu(const TorchNAdamHP* h, double t) noexcept nogil:
    # torch's momentum schedule: mu_t = b1 (1 - 0.5 * 0.96 ** (t * momentum_decay))
    return h.b1 * (1.0 - 0.5 * pow(0.96, t * h.momentum_decay))


cdef int _torch_nadam_before(Stage* s, const void* g, Py_ssize_t n_elements, bint pairs,
                             int n_threads, bint single) noexcept nogil:
    # the product of the mu's is advanced here into hp, and stored by `after` (a `before`
    # hook writes nothing but the stage: a failed step leaves the state as it was)
    cdef TorchNAdamHP* h = <TorchNAdamHP*> s.hp
    cdef double t = <double> s.ctr[0]
    cdef double mu = _torch_nadam_mu(h, t), mu_next = _torch_nadam_mu(h, t + 1.0)
    h.bc2 = 1.0 - pow(h.b2, t)
    h.mu_product = s.sc[0] * mu
    h.cg = (h.eta * (1.0 - mu)) / (1.0 - h.mu_product)
    h.cm = (h.eta * mu_next) / (1.0 - h.mu_product * mu_next)
    return OK


cdef void _torch_advance(Stage* s) noexcept nogil:
    s.ctr[0] += 1


cdef void _torch_nadam_advance(Stage* s) noexcept nogil:
    s.sc[0] = (<const TorchNAdamHP*> s.hp).mu_product
    s.ctr[0] += 1


cdef void torch_adamax_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                            const floating* g, floating* out, bint subtract) noexcept nogil:
    # m <- lerp(m, g, 1-b1) ; u <- max(b2*u, |g| + eps) ; d = (clr*m) / u
    cdef const TorchAdamaxHP* h = <const TorchAdamaxHP*> s.hp
    cdef floating w = <floating> h.omb1, omw = <floating> 1 - w
    cdef floating b2 = <floating> h.b2, eps = <floating> h.eps, clr = <floating> h.clr
    cdef bint small = _abs(w) < <floating> 0.5
    cdef floating* m = (<floating*> s.buf[0]) + off
    cdef floating* u = (<floating*> s.buf[1]) + off
    cdef floating gs = <floating> s.gs
    cdef floating gi, mi, ui
    cdef Py_ssize_t i
    for i in range(n):
        gi = g[i] * gs
        mi = _lerp(m[i], gi, w, omw, small)
        ui = _max(b2 * u[i], _abs(gi) + eps)
        m[i] = mi
        u[i] = ui
        _emit(out, i, (clr * mi) / ui, subtract)


cdef void torch_radam_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                           const floating* g, floating* out, bint subtract) noexcept nogil:
    # m <- lerp(m, g, 1-b1) ; v <- b2*v + ((1-b2)*g)*g
    # rectified: d = (((m/bc1) * eta) * ((1/(sqrt(v) + eps)) * sqrt_bc2)) * r
    #            (torch forms `scalar / tensor` as reciprocal(tensor) * scalar)
    # warm-up:   d = (m/bc1) * eta
    cdef const TorchRAdamHP* h = <const TorchRAdamHP*> s.hp
    cdef floating w = <floating> h.omb1, omw = <floating> 1 - w
    cdef floating b2 = <floating> h.b2, omb2 = <floating> h.omb2, eps = <floating> h.eps
    cdef floating eta = <floating> h.eta, bc1 = <floating> h.bc1
    cdef floating sqrt_bc2 = <floating> h.sqrt_bc2, r = <floating> h.r, one = 1
    cdef bint small = _abs(w) < <floating> 0.5, rectified = h.rectified != 0
    cdef floating* m = (<floating*> s.buf[0]) + off
    cdef floating* v = (<floating*> s.buf[1]) + off
    cdef floating gs = <floating> s.gs
    cdef floating gi, mi, vi, d
    cdef Py_ssize_t i
    for i in range(n):
        gi = g[i] * gs
        mi = _lerp(m[i], gi, w, omw, small)
        vi = b2 * v[i] + (omb2 * gi) * gi
        m[i] = mi
        v[i] = vi
        d = (mi / bc1) * eta
        if rectified:
            d = (d * ((one / (_sqrt(vi) + eps)) * sqrt_bc2)) * r
        _emit(out, i, d, subtract)


cdef void torch_nadam_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                           const floating* g, floating* out, bint subtract) noexcept nogil:
    # m <- lerp(m, g, 1-b1) ; v <- b2*v + ((1-b2)*g)*g ; den = sqrt(v/bc2) + eps
    # d = (cg*g)/den + (cm*m)/den   (torch: two addcdiv_ into the parameter)
    cdef const TorchNAdamHP* h = <const TorchNAdamHP*> s.hp
    cdef floating w = <floating> h.omb1, omw = <floating> 1 - w
    cdef floating b2 = <floating> h.b2, omb2 = <floating> h.omb2, eps = <floating> h.eps
    cdef floating bc2 = <floating> h.bc2, cg = <floating> h.cg, cm = <floating> h.cm
    cdef bint small = _abs(w) < <floating> 0.5
    cdef floating* m = (<floating*> s.buf[0]) + off
    cdef floating* v = (<floating*> s.buf[1]) + off
    cdef floating gs = <floating> s.gs
    cdef floating gi, mi, vi, den
    cdef Py_ssize_t i
    for i in range(n):
        gi = g[i] * gs
        mi = _lerp(m[i], gi, w, omw, small)
        vi = b2 * v[i] + (omb2 * gi) * gi
        m[i] = mi
        v[i] = vi
        den = _sqrt(vi / bc2) + eps
        _emit(out, i, (cg * gi) / den + (cm * mi) / den, subtract)


cdef TorchAdamaxHP _torch_adamax_layout
cdef TorchRAdamHP _torch_radam_layout
cdef TorchNAdamHP _torch_nadam_layout

register_kind("torch_adamax", torch_adamax_tile[float], torch_adamax_tile[double],
              _torch_adamax_layout, sizeof(TorchAdamaxHP), COMPONENTWISE,
              _torch_adamax_before, _torch_advance)
register_kind("torch_radam", torch_radam_tile[float], torch_radam_tile[double],
              _torch_radam_layout, sizeof(TorchRAdamHP), COMPONENTWISE,
              _torch_radam_before, _torch_advance)
register_kind("torch_nadam", torch_nadam_tile[float], torch_nadam_tile[double],
              _torch_nadam_layout, sizeof(TorchNAdamHP), COMPONENTWISE,
              _torch_nadam_before, _torch_nadam_advance)
