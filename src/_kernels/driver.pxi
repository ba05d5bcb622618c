# The driver: one leaf's prepared program, run tile by tile over its array.

# Below this many elements a program runs on the calling thread: waking OpenMP workers
# costs more than it gives (bench/RESULTS.md has the measurement).
cdef Py_ssize_t _parallel_threshold = 32768

cdef inline bint _spread_small(int n_threads, Py_ssize_t n_small,
                               Py_ssize_t small_elements) noexcept nogil:
    """Whether leaves below the parallel threshold are worth spreading over the threads,
    each whole (together they are as much work as one array worth splitting)."""
    return n_threads > 1 and n_small > 1 and small_elements >= _parallel_threshold


cdef enum:
    FOLDED = -1     # Stage.kind of a leading stage whose scale the next stage applies


cdef inline void _run_stage(const Stage* s, Py_ssize_t off, Py_ssize_t n, floating* x,
                            const floating* g, floating* out, bint subtract) noexcept nogil:
    """One stage over one tile: read ``g[0:n]``, emit ``d`` into ``out[0:n]``, through the
    tile function its kind registered.  ``x``, ``g`` and ``out`` point at the tile already;
    state buffers are offset by ``off``.  ``off`` and ``n`` count components (of the real
    views, for a complex program)."""
    cdef const Kind* k = &KINDS[s.kind]
    if floating is float:
        (k.pair32 if s.width == 2 else k.tile32)(s, off, n, x, g, out, subtract)
    else:
        (k.pair64 if s.width == 2 else k.tile64)(s, off, n, x, g, out, subtract)


cdef inline Py_ssize_t _elements_per_tile(bint chain, size_t itemsize) noexcept nogil:
    """``TILE_BYTES`` of each stream, or ``CHAIN_TILE_BYTES`` for a chain of several loops,
    in elements of ``itemsize`` bytes: an even number, so that no tile splits the pair of a
    complex element."""
    return (CHAIN_TILE_BYTES if chain else TILE_BYTES) // itemsize


cdef inline bint _holds_a_tile(const Stage* s, floating dtype) noexcept nogil:
    """Whether this stage's tile function holds a whole tile in a stack buffer of TILE
    elements: the pair forms (their steps), and the KEEPS_TILE kinds where this build
    keeps what they overwrite (quotients.pxi)."""
    return s.width == 2 or ((KINDS[s.kind].flags & KEEPS_TILE) != 0 and _fast_path(dtype))


cdef inline Py_ssize_t _tile_length(const Stage* stages, int n_stages, Py_ssize_t n,
                                    int mode, int n_threads, floating dtype) noexcept nogil:
    """Elements of the dtype per tile of this program over ``n`` components: a chain when
    more than one of its stages runs a loop (a folded stage runs none); long tiles for a
    program of one loop that holds no tile in a stack buffer (nor writes the tile buffer:
    mode SINK), on an array of at least ``LONG_TILES_PER_THREAD`` long tiles for each of
    ``n_threads``."""
    cdef int k, loops = 0
    cdef bint buffered = mode == SINK
    cdef Py_ssize_t long_length = LONG_TILE_BYTES // sizeof(floating)
    for k in range(n_stages):
        # an AFTER_STEP stage re-reads a tile the program has just written (in cache): it
        # does not make the program a chain
        if stages[k].kind != FOLDED and (KINDS[stages[k].kind].flags & AFTER_STEP) == 0:
            loops += 1
            buffered = buffered or _holds_a_tile(&stages[k], dtype)
    if (loops <= 1 and not buffered
            and n >= LONG_TILES_PER_THREAD * (n_threads if n_threads > 1 else 1) * long_length):
        return long_length
    return _elements_per_tile(loops > 1, sizeof(floating))


cdef inline int _step_end(const Stage* stages, int n_stages) noexcept nogil:
    """The index after the stage that emits the program's step: the AFTER_STEP stages
    (Lookahead, EMA) trail it and run after it in each tile.  (A stopped program, mode
    SINK, was cut before them.)"""
    cdef int k = n_stages
    while (k > 1 and stages[k - 1].kind != FOLDED
           and (KINDS[stages[k - 1].kind].flags & AFTER_STEP) != 0):
        k -= 1
    return k


cdef inline void _run_tile(const Stage* stages, int n_stages, Py_ssize_t t, Py_ssize_t n,
                           Py_ssize_t length, floating* x, const floating* g, floating* dst,
                           int mode, floating* tile) noexcept nogil:
    cdef Py_ssize_t off = t * length
    cdef Py_ssize_t m = n - off if n - off < length else length
    cdef const floating* src = g + off
    cdef floating* out
    cdef bint subtract
    cdef int k, end = _step_end(stages, n_stages)
    for k in range(n_stages):
        if stages[k].kind == FOLDED:
            continue                        # its scale is the next stage's input scale
        subtract = False
        out = tile
        if k >= end:                        # AFTER_STEP: sees where the step went
            subtract = mode == SUBTRACT
            out = x + off if subtract else dst + off
            src = out
        elif k == end - 1:
            if mode == SUBTRACT:
                out = x + off
                subtract = True
            elif mode == STORE:
                out = dst + off
        _run_stage(&stages[k], off, m, x + off, src, out, subtract)
        src = tile


cdef inline void _fold_leading_scale(Stage* stages, int n_stages) noexcept nogil:
    """A LEADS stage (its scale known from its `before`) followed by a component-wise stage
    becomes that stage's input scale: ``(g * scale)`` rounded is what the next stage would
    have read from the tile buffer, so the bits are the same, and the program is one loop
    instead of two.  (Pair stages read their input unscaled: no fold there.)"""
    if (n_stages >= 2 and (KINDS[stages[0].kind].flags & LEADS) != 0
            and stages[0].width == 1 and stages[1].width == 1
            and (KINDS[stages[1].kind].flags & AFTER_STEP) == 0):
        stages[1].gs = stages[0].fold
        stages[0].kind = FOLDED


cdef int _prepare_leaf(Stage* stages, int* n_stages, int* mode, const void* g,
                       Py_ssize_t n, int comps, int n_threads, bint single) noexcept nogil:
    """Run the `before` hooks of one leaf's program (per-step scalars, a leading norm), then
    fold a leading scale.  Writes nothing but the stages.  Returns OK, STOPPED (then
    ``n_stages`` ends at the stopping stage and ``mode`` is SINK), NONFINITE_NORM or
    NO_MEMORY.  ``n`` counts components, ``comps`` per element."""
    cdef int k, status = OK, st
    cdef Before before
    for k in range(n_stages[0]):
        before = KINDS[stages[k].kind].before
        if before == NULL:
            continue
        st = before(&stages[k], g, n // comps, comps == 2, n_threads, single)
        if st == STOPPED:
            n_stages[0] = k + 1
            mode[0] = SINK
            status = STOPPED
            break
        if st != OK:
            return st
    _fold_leading_scale(stages, n_stages[0])
    return status


cdef inline void _run_after_hooks(Stage* stages, int n_stages) noexcept nogil:
    """A program's `after` hooks (advance the running products and counters), once its
    tiles have run."""
    cdef After after
    cdef int k
    for k in range(n_stages):
        if stages[k].kind != FOLDED:
            after = KINDS[stages[k].kind].after
            if after != NULL:
                after(&stages[k])


cdef void _run_prepared(Stage* stages, int n_stages, Py_ssize_t n, floating* x,
                        const floating* g, floating* dst, int mode, int n_threads,
                        int comps) noexcept nogil:
    """Run a prepared program: its tiles, then its `after` hooks.  ``n`` counts components,
    ``comps`` per element (2 for complex; the parallel threshold counts elements).  Tiles
    have an even length, so they never split a pair."""
    cdef Py_ssize_t length = _tile_length(stages, n_stages, n, mode, n_threads, <floating> 0)
    cdef Py_ssize_t n_tiles = (n + length - 1) // length
    cdef Py_ssize_t t
    cdef floating local_tile[TILE]
    cdef floating* tile
    if n_threads <= 1 or n // comps < _parallel_threshold or n_tiles < 2:
        for t in range(n_tiles):
            _run_tile(stages, n_stages, t, n, length, x, g, dst, mode, local_tile)
    else:
        with parallel(num_threads=n_threads):
            # one tile buffer per thread, for the whole call (a few kB)
            tile = <floating*> malloc(TILE * sizeof(floating))
            if tile != NULL:
                for t in prange(n_tiles, schedule="static"):
                    _run_tile(stages, n_stages, t, n, length, x, g, dst, mode, tile)
                free(tile)
    _run_after_hooks(stages, n_stages)
