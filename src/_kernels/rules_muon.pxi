# Muon's element-wise parts (the Newton-Schulz iteration between them is float32 matrix
# products through numpy's BLAS, in optimisers/_rules_muon.py).  Two kinds:
#
# * "muon_momentum" reads g (scaled by gs), updates the momentum buffer m and emits the
#   matrix to orthogonalise: the Nesterov blend of g and m, or m itself;
# * "muon_apply" reads the orthogonalised matrix O as its input and x, and emits the
#   step d = (eta*lambda)*x + lr_adj*O: the decoupled weight decay and the shape-adjusted
#   learning rate in one pass, fused with x -= d.
# Neither is defined for complex numbers (torch's Muon refuses them; the iteration between
# them is real).

cdef struct MuonMomentumHP:
    double mu
    double omm              # 1 - mu
    double nesterov         # 1.0: emit g + mu*(m - g); 0.0: emit m


cdef void muon_momentum_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                             const floating* g, floating* out, bint subtract) noexcept nogil:
    # m <- m + (1-mu)*(g - m) ;  u = g + mu*(m - g) (Nesterov, new m) or u = m
    cdef const MuonMomentumHP* h = <const MuonMomentumHP*> s.hp
    cdef floating mu = <floating> h.mu, omm = <floating> h.omm
    cdef bint nesterov = h.nesterov != 0
    cdef floating* m = (<floating*> s.buf[0]) + off
    cdef floating mi, gi, blend
    cdef floating gs = <floating> s.gs
    cdef Py_ssize_t i
    for i in range(n):
        gi = g[i] * gs
        mi = m[i] + omm * (gi - m[i])
        m[i] = mi
        blend = gi + mu * (mi - gi)
        _emit(out, i, blend if nesterov else mi, subtract)


cdef struct MuonApplyHP:
    double wd               # eta * lambda_ (torch decays by its unadjusted learning rate)
    double lr               # eta * the shape adjustment


cdef void muon_apply_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                          const floating* g, floating* out, bint subtract) noexcept nogil:
    # d = wd*x + lr*O   (g holds O, the orthogonalised update)
    cdef const MuonApplyHP* h = <const MuonApplyHP*> s.hp
    cdef floating wd = <floating> h.wd, lr = <floating> h.lr
    cdef floating gs = <floating> s.gs
    cdef Py_ssize_t i
    for i in range(n):
        _emit(out, i, wd * x[i] + lr * (g[i] * gs), subtract)


cdef MuonMomentumHP _muon_momentum_layout
cdef MuonApplyHP _muon_apply_layout

register_kind("muon_momentum", muon_momentum_tile[float], muon_momentum_tile[double],
              _muon_momentum_layout, sizeof(MuonMomentumHP))
register_kind("muon_apply", muon_apply_tile[float], muon_apply_tile[double],
              _muon_apply_layout, sizeof(MuonApplyHP))
