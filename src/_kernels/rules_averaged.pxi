# The rules that keep a second copy of the parameters for evaluation: Schedule-Free AdamW
# (its z), Lookahead (the slow weights) and the parameters' moving average (EMA).
#
# Schedule-Free AdamW is an ordinary stage: it reads y (the parameter the model holds) and
# emits the step d = y - y_new.  Lookahead and EMA are AFTER_STEP stages (common.pxi): the
# driver runs them after the program's step is emitted, in the same tile, so they see the
# new parameter x_new without another pass over memory: in mode SUBTRACT ``x[i]`` already
# holds it (and they may set it), in mode STORE it is ``x[i] - out[i]`` (and setting it
# means rewriting the step ``out[i]``).


cdef inline floating _lerp(floating a, floating b, floating w, floating omw,
                           bint small) noexcept nogil:
    # torch.lerp(a, b, w): a + w*(b-a) when |w| < 0.5, else b - (b-a)*(1-w); `small` is
    # decided once per stage (w is the same for every element)
    cdef floating near = a + w * (b - a)
    cdef floating far = b - (b - a) * omw
    return near if small else far


# ---------------------------------------------------------------------------------------
# Schedule-Free AdamW (Defazio et al., 2024), as the authors' `schedulefree` package steps
# it in train mode.

cdef struct ScheduleFreeHP:
    double eta              # the base learning rate (a schedule's value this step)
    double b1
    double b2
    double omb2             # 1 - b2
    double eps
    double lam              # weight decay, at y
    double warmup           # warm-up steps
    double r                # the weight's power of the step count
    double wlp              # the weight's power of the largest learning rate
    double lr               # per step (`before`): eta * warm-up factor
    double ckp1             # the interpolation weight of z into y
    double ay               # lr * (b1*(1 - ckp1) - 1): y's step along the normalised g
    # (the struct is full at MAX_HP: the tile forms 1 - b2^(k+1) from the counter itself)


cdef int _schedulefree_before(Stage* s, const void* g, Py_ssize_t n_elements, bint pairs,
                              int n_threads, bint single) noexcept nogil:
    # In float64, as the package does in Python floats: with k = ctr (steps taken),
    #   sched = (k+1)/warmup while k < warmup, else 1 ;  lr = eta*sched
    #   lr_max = max(lr, sc[0]) ;  weight = (k+1)^r * lr_max^wlp ;  wsum = sc[1] + weight
    #   ckp1 = weight/wsum (0 when wsum = 0) ;  ay = lr*(b1*(1-ckp1) - 1)
    # sc[0], sc[1] are advanced by `after` (this hook writes nothing but the stage).
    cdef ScheduleFreeHP* h = <ScheduleFreeHP*> s.hp
    cdef double k = <double> s.ctr[0], sched = 1.0, lr_max, weight, wsum
    if k < h.warmup:
        sched = (k + 1.0) / h.warmup
    h.lr = h.eta * sched
    lr_max = h.lr if h.lr > s.sc[0] else s.sc[0]
    weight = pow(k + 1.0, h.r) * pow(lr_max, h.wlp)
    wsum = s.sc[1] + weight
    h.ckp1 = weight / wsum if wsum != 0.0 else 0.0
    h.ay = h.lr * (h.b1 * (1.0 - h.ckp1) - 1.0)
    return OK


cdef void _schedulefree_after(Stage* s) noexcept nogil:
    cdef const ScheduleFreeHP* h = <const ScheduleFreeHP*> s.hp
    cdef double k = <double> s.ctr[0]
    cdef double lr_max = h.lr if h.lr > s.sc[0] else s.sc[0]
    s.sc[1] = s.sc[1] + pow(k + 1.0, h.r) * pow(lr_max, h.wlp)
    s.sc[0] = lr_max
    s.ctr[0] += 1


cdef void schedulefree_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                            const floating* g, floating* out, bint subtract) noexcept nogil:
    # v <- b2*v + (1-b2)*g^2 ;  u = g / (sqrt(v/(1-b2^(k+1))) + eps) + lam*y
    # y_new = lerp(y, z, ckp1) + ay*u ;  z <- z - lr*u ;  d = y - y_new
    cdef const ScheduleFreeHP* h = <const ScheduleFreeHP*> s.hp
    cdef floating b2 = <floating> h.b2, omb2 = <floating> h.omb2, eps = <floating> h.eps
    cdef floating lam = <floating> h.lam, lr = <floating> h.lr, ay = <floating> h.ay
    cdef floating c = <floating> h.ckp1
    cdef floating omc = 1 - c
    cdef bint small = _abs(c) < <floating> 0.5
    cdef bint decays = h.lam != 0.0
    # 1 - b2^(k+1), in float64 as the package forms it, rounded once
    cdef floating bc2 = <floating> (1.0 - pow(h.b2, <double> s.ctr[0] + 1.0))
    cdef floating* z = (<floating*> s.buf[0]) + off
    cdef floating* v = (<floating*> s.buf[1]) + off
    cdef floating gs = <floating> s.gs
    cdef floating gi, vi, u, yi, zi, yn
    cdef Py_ssize_t i
    for i in range(n):
        gi = g[i] * gs
        yi = x[i]
        zi = z[i]
        vi = v[i] * b2 + omb2 * (gi * gi)
        v[i] = vi
        u = gi / (_sqrt(vi / bc2) + eps)
        # decay at y, skipped when lam = 0 (as the package does: 0*inf would be NaN)
        u = (u + lam * yi) if decays else u
        yn = _lerp(yi, zi, c, omc, small) + ay * u
        z[i] = zi - lr * u
        _emit(out, i, yi - yn, subtract)


cdef void schedulefree_pair_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                                 const floating* g, floating* out,
                                 bint subtract) noexcept nogil:
    # complex parameters: v real, v <- b2*v + (1-b2)*|g|^2 ; each component of y and z as
    # in the real form, with the pair's one denominator
    cdef const ScheduleFreeHP* h = <const ScheduleFreeHP*> s.hp
    cdef floating b2 = <floating> h.b2, omb2 = <floating> h.omb2, eps = <floating> h.eps
    cdef floating lam = <floating> h.lam, lr = <floating> h.lr, ay = <floating> h.ay
    cdef floating c = <floating> h.ckp1
    cdef floating omc = 1 - c
    cdef bint small = _abs(c) < <floating> 0.5
    cdef bint decays = h.lam != 0.0
    cdef floating bc2 = <floating> (1.0 - pow(h.b2, <double> s.ctr[0] + 1.0))
    cdef floating* z = (<floating*> s.buf[0]) + off
    cdef floating* v = (<floating*> s.buf[1]) + off // 2
    cdef floating gs = <floating> s.gs
    cdef floating gr, gi, vi, den, u, yc, zc, yn
    cdef floating d[TILE]
    cdef Py_ssize_t i, j, q
    for i in range(n // 2):
        j = 2 * i
        gr = g[j] * gs
        gi = g[j + 1] * gs
        vi = v[i] * b2 + omb2 * _abs2(gr, gi)
        v[i] = vi
        den = _sqrt(vi / bc2) + eps
        for q in range(j, j + 2):
            yc = x[q]
            zc = z[q]
            u = (g[q] * gs) / den
            u = (u + lam * yc) if decays else u
            yn = _lerp(yc, zc, c, omc, small) + ay * u
            z[q] = zc - lr * u
            d[q] = yc - yn
    _emit_all(out, d, n, subtract)


# ---------------------------------------------------------------------------------------
# Lookahead (Zhang et al., 2019), with optax.lookahead's schedule: the k-th step of each
# round (steps_since_sync = k-1) ends with slow <- slow + alpha*(x_new - slow), x <- slow.

cdef struct LookaheadHP:
    double k
    double alpha
    double sync             # per step (`before`): 1.0 on the step that synchronises


cdef int _lookahead_before(Stage* s, const void* g, Py_ssize_t n_elements, bint pairs,
                           int n_threads, bint single) noexcept nogil:
    cdef LookaheadHP* h = <LookaheadHP*> s.hp
    # ctr counts the steps since the last synchronisation; >= k-1 (k lowered by adjust_)
    # synchronises now
    h.sync = 1.0 if <double> s.ctr[0] >= h.k - 1.0 else 0.0
    return OK


cdef void _lookahead_after(Stage* s) noexcept nogil:
    cdef const LookaheadHP* h = <const LookaheadHP*> s.hp
    s.ctr[0] = 0 if h.sync != 0.0 else s.ctr[0] + 1


cdef void lookahead_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                         const floating* g, floating* out, bint subtract) noexcept nogil:
    # AFTER_STEP: on a synchronising step, slow <- slow + alpha*(x_new - slow); x <- slow.
    # Other steps leave everything as it is, and cost nothing.
    cdef const LookaheadHP* h = <const LookaheadHP*> s.hp
    cdef floating alpha = <floating> h.alpha
    cdef floating* slow = (<floating*> s.buf[0]) + off
    cdef floating xn, si
    cdef Py_ssize_t i
    if h.sync == 0.0:
        return
    for i in range(n):
        xn = x[i] if subtract else x[i] - out[i]
        si = slow[i]
        si = si + alpha * (xn - si)
        slow[i] = si
        # the new parameter is the slow weight: set it, or (STORE) the step that gives it
        out[i] = si if subtract else x[i] - si


# ---------------------------------------------------------------------------------------
# EMA of the parameters, as torch.optim.swa_utils.AveragedModel with
# get_ema_multi_avg_fn(decay) updated after every step: the first update copies the
# parameter, later ones ema <- lerp(ema, x_new, 1 - decay).

cdef struct EMAHP:
    double w                # 1 - decay (formed in float64 by the rule class)


cdef void _ema_after(Stage* s) noexcept nogil:
    s.ctr[0] += 1


cdef void ema_tile(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                   const floating* g, floating* out, bint subtract) noexcept nogil:
    # AFTER_STEP: ema <- x_new at the first update, else lerp(ema, x_new, w); x unchanged
    cdef const EMAHP* h = <const EMAHP*> s.hp
    cdef floating w = <floating> h.w
    cdef floating omw = 1 - w
    cdef bint small = _abs(w) < <floating> 0.5
    cdef bint first = s.ctr[0] == 0
    cdef floating* ema = (<floating*> s.buf[0]) + off
    cdef floating xn
    cdef Py_ssize_t i
    for i in range(n):
        xn = x[i] if subtract else x[i] - out[i]
        ema[i] = xn if first else _lerp(ema[i], xn, w, omw, small)


cdef ScheduleFreeHP _schedulefree_layout
cdef LookaheadHP _lookahead_layout
cdef EMAHP _ema_layout

register_kind("schedulefree", schedulefree_tile[float], schedulefree_tile[double],
              _schedulefree_layout, sizeof(ScheduleFreeHP), PAIRS, _schedulefree_before,
              _schedulefree_after, 0, schedulefree_pair_tile[float],
              schedulefree_pair_tile[double], 0b1)      # z complex; v real
register_kind("lookahead", lookahead_tile[float], lookahead_tile[double], _lookahead_layout,
              sizeof(LookaheadHP), COMPONENTWISE, _lookahead_before, _lookahead_after,
              AFTER_STEP)
register_kind("ema", ema_tile[float], ema_tile[double], _ema_layout, sizeof(EMAHP),
              COMPONENTWISE, NULL, _ema_after, AFTER_STEP)
