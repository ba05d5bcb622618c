# Per-step scalars.  The state of a rule that changes once per step (the running products
# beta_t = (b1^t, b2^t), RAdam's step t, AccumGrad's counter) lives in small per-leaf arrays:
# `sc` (the compute dtype) and `ctr` (int64).  Before a leaf's tiles run, its stage's
# prologue derives the step's scalars from them into free hp slots; after the last tile,
# the epilogue advances them.  All arithmetic in `floating`, so it rounds exactly as the
# numpy scalars of the reference do.  The prologue returns 1 when the program must stop
# after this stage (AccumGrad before its n-th gradient).
#
# ClipNorm's stage (CLIPNORM, only ever the first stage of a program: its norm is that of
# the program's input g) computes the norm in its prologue, so that a batch of leaves can
# check every norm before any leaf is written.  It returns NONFINITE_NORM (nothing has been
# written) when the norm is not finite and the rule was built with throw=True.
#   hp: [0] the scale lam (set here), [1] omega, [2] p, [3] the NormKind, [4] throw,
#       [5] the norm (set here, for error messages; or given, when [6] is 1: a caller that
#       has already computed it, to check it before anything ran, need not read g again)

cdef inline double _clip_scale(double omega, double norm) noexcept nogil:
    # conventions §7: a zero norm leaves g as it is, an infinite one zeroes it (even when
    # omega is inf), NaN gives NaN; else min(omega / norm, 1), computed in float64.
    cdef double r
    if norm == 0:
        return 1.0
    if norm == INFINITY or norm == -INFINITY:
        return 0.0
    r = omega / norm
    return 1.0 if r > 1.0 else r        # NaN stays NaN, as Python's min(r, 1.0)


cdef int _clipnorm_prologue(Stage* s, const floating* g, Py_ssize_t n_elements, bint pairs,
                            int n_threads) noexcept nogil:
    cdef int how = <int> s.hp[3]
    cdef double total, norm
    if s.hp[6] != 0:
        norm = s.hp[5]
    else:
        total = _reduce(g, n_elements, how, s.hp[2], n_threads, pairs)
        if total == -1.0 and n_elements > 0:    # sums and magnitudes are >= 0: malloc failed
            return NO_MEMORY
        norm = _finish_norm(total, how, s.hp[2], n_elements)
        s.hp[5] = norm
    if s.hp[4] != 0 and not (norm - norm == 0):      # not finite
        return NONFINITE_NORM
    s.hp[0] = <double> (<floating> _clip_scale(s.hp[1], norm))   # rounded to the dtype
    return OK


cdef int _prologue(Stage* s, const floating* g, Py_ssize_t n_elements, bint pairs,
                   int n_threads) noexcept nogil:
    cdef int k = s.kind
    cdef floating one = 1, two = 2, four = 4
    cdef floating* bt = <floating*> s.sc
    cdef floating b1, b2, rho_inf, rho, t, r
    if k == CLIPNORM:
        return _clipnorm_prologue(s, g, n_elements, pairs, n_threads)
    elif k == ADAM or k == OADAM or k == ADAMW_COUPLED or k == ADAMW_DECOUPLED or k == ADABELIEF:
        s.hp[4] = one - bt[0]
        s.hp[5] = one - bt[1]
    elif k == NADAM:
        b1 = <floating> s.hp[0]
        s.hp[4] = one - bt[0]
        s.hp[5] = one - bt[1]
        s.hp[8] = one - b1 * bt[0]
    elif k == ADAMAX:
        # hp[3] = eta / (1 - bt1), with eta kept in hp[5]
        s.hp[3] = (<floating> s.hp[5]) / (one - bt[0])
    elif k == RADAM:
        b2 = <floating> s.hp[1]
        s.hp[4] = one - bt[0]
        s.hp[5] = one - bt[1]
        t = <floating> s.ctr[0]
        rho_inf = two / (one - b2) - one
        rho = rho_inf - ((two * t) * bt[1]) / (one - bt[1])
        if rho > four:
            r = _sqrt(((rho - four) * (rho - two) * rho_inf)
                      / ((rho_inf - four) * (rho_inf - two) * rho))
            s.hp[8] = r
            s.hp[9] = 1.0
        else:
            s.hp[8] = 0.0
            s.hp[9] = 0.0
    elif k == ACCUMGRAD:
        s.hp[1] = 1.0 if s.ctr[0] == 1 else 0.0
        return STOPPED if s.ctr[0] < <long long> s.hp[0] else OK
    return OK


cdef void _epilogue(Stage* s, floating dummy) noexcept nogil:
    cdef int k = s.kind
    cdef floating* bt = <floating*> s.sc
    if (k == ADAM or k == OADAM or k == ADAMW_COUPLED or k == ADAMW_DECOUPLED
            or k == ADABELIEF or k == NADAM or k == ADAMAX or k == RADAM):
        bt[0] = bt[0] * <floating> s.hp[0]
        bt[1] = bt[1] * <floating> s.hp[1]
        if k == RADAM:
            s.ctr[0] += 1
    elif k == ACCUMGRAD:
        if s.ctr[0] >= <long long> s.hp[0]:
            s.ctr[0] = 1
        else:
            s.ctr[0] += 1
