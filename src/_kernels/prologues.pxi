# Per-step scalars.  The state of a rule that changes once per step (the running products
# beta_t = (b1^t, b2^t), RAdam's step t, AccumGrad's counter) lives in small per-leaf arrays:
# `sc` (the compute dtype) and `ctr` (int64).  Before a leaf's tiles run, its stage's
# prologue derives the step's scalars from them into free hp slots; after the last tile,
# the epilogue advances them.  All arithmetic in `floating`, so it rounds exactly as the
# numpy scalars of the reference do.  The prologue returns 1 when the program must stop
# after this stage (AccumGrad before its n-th gradient).

cdef int _prologue(Stage* s, floating dummy) noexcept nogil:
    cdef int k = s.kind
    cdef floating one = 1, two = 2, four = 4
    cdef floating* bt = <floating*> s.sc
    cdef floating b1, b2, rho_inf, rho, t, r
    if k == ADAM or k == OADAM or k == ADAMW_COUPLED or k == ADAMW_DECOUPLED or k == ADABELIEF:
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
        return 1 if s.ctr[0] < <long long> s.hp[0] else 0
    return 0


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
