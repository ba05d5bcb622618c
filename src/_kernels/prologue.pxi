# A batch's prologues: every leaf's per-step scalars and, for a program led by a norm
# (ClipNorm, ClipGlobalNorm, SkipNonFinite), the read of its gradient, a pass over every
# gradient before any leaf may be written.  On more than one thread that pass runs beside
# the checks of the batch: the checks hold the GIL and chase pointers (latency), the pass
# streams the gradients (bandwidth), so thread 0 checks the entries one by one while
# thread 1 follows it, reducing the gradient of each entry checked
# (`_follow_prologues`).  The order changes no bit: each leaf's partials are its own,
# combined later in a fixed order.

cdef extern from *:
    """
    #if defined(__GNUC__)
    static inline Py_ssize_t optimisers_load(const Py_ssize_t* p) {
        return __atomic_load_n(p, __ATOMIC_ACQUIRE);
    }
    static inline void optimisers_store(Py_ssize_t* p, Py_ssize_t v) {
        __atomic_store_n(p, v, __ATOMIC_RELEASE);
    }
    #else  /* MSVC on x86: volatile accesses acquire and release (/volatile:ms) */
    static inline Py_ssize_t optimisers_load(const Py_ssize_t* p) {
        return *(volatile const Py_ssize_t*) p;
    }
    static inline void optimisers_store(Py_ssize_t* p, Py_ssize_t v) {
        *(volatile Py_ssize_t*) p = v;
    }
    #endif
    static inline void optimisers_pause(void) {
    #if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
    #endif
    }
    """
    Py_ssize_t optimisers_load(const Py_ssize_t* p) noexcept nogil
    void optimisers_store(Py_ssize_t* p, Py_ssize_t v) noexcept nogil
    void optimisers_pause() noexcept nogil


cdef enum:
    PUBLISH = 16    # entries checked between two publications (each moves a cache line)


cdef inline bint _leads(object entry) except -1:
    """Whether a batch entry's program starts with a norm (a pass over its gradient):
    then the batch's gradient pass runs beside its checks (the first entry decides)."""
    cdef object tpl = (<tuple?> entry)[0]
    if not isinstance(tpl, list) or len(<list> tpl) == 0:
        return False
    kind = (<list> tpl)[0][0]
    return (isinstance(kind, int) and 0 <= kind < n_kinds
            and (KINDS[<int> kind].flags & LEADS) != 0)


cdef inline void _prologue(Stage* stages, int* count, int* mode, const void* g,
                           Py_ssize_t size, bint is_float, int* status,
                           int n_threads) noexcept nogil:
    """One OK leaf's prologues; its Status in ``status`` (STOPPED is OK: the run skips)."""
    status[0] = _prepare_leaf(stages, count, mode, g, size, 1, n_threads, is_float)
    if status[0] == STOPPED:
        status[0] = OK


cdef void _follow_prologues(Stage* stages, Py_ssize_t* first, int* count, int* modes,
                            Py_ssize_t* sizes, void** gs, char* is_double, int* status,
                            Py_ssize_t n, const Py_ssize_t* checked,
                            Py_ssize_t* done) noexcept nogil:
    """The prologues of the small leaves (below the parallel threshold) among the first
    ``checked[0]`` entries, waiting for the checks to publish more, until all ``n`` are
    checked (or the checks stop: ``checked[0]`` set to -1).  How many entries it
    went through in ``done``: the caller does the rest (and the large leaves, over all
    threads)."""
    cdef Py_ssize_t j = 0, ready = 0
    cdef int spin
    while j < n:
        ready = optimisers_load(checked)
        if ready < 0:
            break
        if ready <= j:
            for spin in range(32):      # the checks take about 200 ns an entry
                optimisers_pause()
            continue
        while j < ready:
            if status[j] == OK and sizes[j] < _parallel_threshold:
                _prologue(stages + first[j], &count[j], &modes[j], gs[j], sizes[j],
                          not is_double[j], &status[j], 1)
            j += 1
    done[0] = j


cdef void _prologues(Stage* stages, Py_ssize_t* first, int* count, int* modes,
                     Py_ssize_t* sizes, void** gs, char* is_double, int* status,
                     Py_ssize_t n, Py_ssize_t done) noexcept nogil:
    """The prologues `_follow_prologues` left: every large leaf's, over the threads, and
    those of the small leaves from entry ``done`` on, spread over the threads whole when a
    norm gives them enough to share, in runs of 32 neighbours (so that two threads seldom
    write one cache line of `status` or of the stages)."""
    cdef Py_ssize_t j, small_elements = 0
    cdef int n_threads = omp_get_max_threads(), n_small = 0, small_threads = 1
    cdef bint any_norm = False
    for j in range(n):
        if status[j] != OK:
            continue
        if sizes[j] >= _parallel_threshold:
            _prologue(stages + first[j], &count[j], &modes[j], gs[j], sizes[j],
                      not is_double[j], &status[j], n_threads)
        elif j >= done:
            n_small += 1
            small_elements += sizes[j]
            if KINDS[stages[first[j]].kind].flags & LEADS:
                any_norm = True
    if any_norm and _spread_small(n_threads, n_small, small_elements):
        small_threads = n_threads
    for j in prange(done, n, schedule="dynamic", chunksize=32, num_threads=small_threads):
        if status[j] == OK and sizes[j] < _parallel_threshold:
            _prologue(stages + first[j], &count[j], &modes[j], gs[j], sizes[j],
                      not is_double[j], &status[j], 1)
