# Batches: many leaves, each with its own program, checked and prepared in one call and
# run in another.  This is how update_ runs most leaves: the Python walk only routes each
# leaf here; every check that can be made in C is made here, every leaf's prologues (a
# leading ClipNorm's norm included) run before any leaf is written, and then all of them
# run, small ones spread over the threads whole.

cdef enum:
    TEMPLATE_CACHE = 8


cdef class Batch:
    """The programs of many parameters, checked and prepared now, run by :meth:`run`.

    ``Batch(entries)`` takes a list of tuples ``(template, state, x, g, owner, ...)``:

    - ``template``: the program, a list of ``(kind, hyper-parameters, buffer paths,
      scalars path, counter path)``; each path is a tuple of indices that leads from
      ``state`` to that array, or None.  Entries usually share a few template objects.
    - ``state``: the leaf's state (nested tuples of arrays).
    - ``x``: the parameter, float16, bfloat16, float32 or float64, C-contiguous and
      writable (a 16-bit one runs the float32 program, staged: staging.pxi).
    - ``g``: its gradient, an array of the same dtype, shape and C layout (or, for a
      16-bit ``x``, float32; float32 only when the program starts with a ClipNorm).
    - ``owner``: any object that identifies the state (its ``Leaf``); further items are
      ignored (the caller's own bookkeeping).

    Construction checks every entry and runs every program's prologues (per-step scalars,
    ``ClipNorm``'s norm) and writes nothing: an entry that does not fit, and every entry
    that shares a parameter's memory or an owner with another, is left out and listed in
    ``problems`` as ``(index, Status, norm, p)``, where ``norm`` is the non-finite p-norm
    for ``NONFINITE_NORM`` (both None otherwise).  :meth:`run` then updates every other
    parameter and state, once.
    Small leaves are spread over the threads whole; large ones are split by tiles.
    """
    cdef Stage* stages
    cdef Py_ssize_t* first         # where entry j's stages start in `stages`
    cdef int* count                # entry j's number of stages (0: left out)
    cdef int* modes
    cdef Py_ssize_t* sizes
    cdef void** xs
    cdef void** gs
    cdef char* is_double
    cdef char* formats             # entry j's Format: NATIVE, or how its 16-bit x is stored
    cdef char* gformats            # ... and its gradient (NATIVE: float32 for a 16-bit x)
    cdef char* is_global           # entry j's program starts with a globalnorm stage
    cdef void** tpls               # entry j's template object (borrowed: entries keeps it)
    cdef Py_ssize_t n_leaves
    cdef bint ran
    cdef readonly object entries   # keeps the arrays alive until run()
    cdef readonly list problems
    cdef readonly Py_ssize_t n_global   # how many entries run led by ClipGlobalNorm/SkipNonFinite
    cdef readonly bint marked      # some entry's template is a subclass of list (the engine's
                                   # mark for a template that holds for one step only)

    def __cinit__(self):
        self.stages = NULL
        self.first = NULL
        self.count = NULL
        self.modes = NULL
        self.sizes = NULL
        self.xs = NULL
        self.gs = NULL
        self.is_double = NULL
        self.formats = NULL
        self.gformats = NULL
        self.is_global = NULL
        self.tpls = NULL
        self.n_leaves = 0
        self.ran = False
        self.marked = False

    def __dealloc__(self):
        free(self.stages)
        free(self.first)
        free(self.count)
        free(self.modes)
        free(self.sizes)
        free(self.xs)
        free(self.gs)
        free(self.is_double)
        free(self.formats)
        free(self.gformats)
        free(self.is_global)
        free(self.tpls)

    def __init__(self, list entries):
        cdef Py_ssize_t n = len(entries), j, total = 0
        cdef Stage templates[TEMPLATE_CACHE][MAX_STAGES]
        cdef void* template_ids[TEMPLATE_CACHE]
        cdef int template_sizes[TEMPLATE_CACHE]
        cdef int n_templates = 0, t, k, b, n_stages
        cdef int* status
        cdef tuple entry
        cdef list tpl
        cdef const ClipNormHP* clip
        cdef list path_keys = [None] * TEMPLATE_CACHE     # _paths_key of each template
        cdef list fills = []                 # each owner's _Filled of its last step, or None
        self.entries = entries
        self.problems = []
        self.n_global = 0
        self.n_leaves = n
        if n == 0:
            return
        self.first = <Py_ssize_t*> malloc(n * sizeof(Py_ssize_t))
        self.count = <int*> malloc(n * sizeof(int))
        self.modes = <int*> malloc(n * sizeof(int))
        self.sizes = <Py_ssize_t*> malloc(n * sizeof(Py_ssize_t))
        self.xs = <void**> malloc(n * sizeof(void*))
        self.gs = <void**> malloc(n * sizeof(void*))
        self.is_double = <char*> malloc(n * sizeof(char))
        self.formats = <char*> malloc(n * sizeof(char))
        self.gformats = <char*> malloc(n * sizeof(char))
        self.is_global = <char*> malloc(n * sizeof(char))
        self.tpls = <void**> malloc(n * sizeof(void*))
        status = <int*> malloc(n * sizeof(int))
        if (self.first == NULL or self.count == NULL or self.modes == NULL
                or self.sizes == NULL or self.xs == NULL or self.gs == NULL
                or self.is_double == NULL or self.formats == NULL or self.gformats == NULL
                or self.is_global == NULL or self.tpls == NULL or status == NULL):
            free(status)
            raise MemoryError()
        try:
            for j in range(n):
                entry = <tuple?> entries[j]
                if len(entry) < 5:
                    raise ValueError("a batch entry is (template, state, x, g, owner, ...)")
                if not isinstance(entry[0], list):      # a subclass too (see `marked`)
                    raise TypeError(f"a batch template is a list of stages, got "
                                    f"{type(entry[0]).__name__}")
                tpl = <list> entry[0]
                self.first[j] = total
                total += len(tpl)
                fills.append(getattr(entry[4], "_fill", None))
            self.stages = <Stage*> malloc((total if total > 0 else 1) * sizeof(Stage))
            if self.stages == NULL:
                raise MemoryError()
            for j in range(n):
                entry = <tuple> entries[j]
                tpl = <list> entry[0]
                n_stages = len(tpl)
                if n_stages == 0 or n_stages > MAX_STAGES:
                    raise ValueError(f"a program has 1 to {MAX_STAGES} stages, got {n_stages}")
                # the shared part of the program, converted once per template object
                for t in range(n_templates):
                    if template_ids[t] == <void*> tpl:
                        break
                else:
                    t = n_templates if n_templates < TEMPLATE_CACHE else TEMPLATE_CACHE - 1
                    for k in range(n_stages):
                        spec = tpl[k]
                        _fill_constants(&templates[t][k], spec[0], spec[1], k)
                    template_ids[t] = <void*> tpl
                    template_sizes[t] = n_stages
                    path_keys[t] = _paths_key(tpl)
                    if type(tpl) is not list:
                        self.marked = True
                    if n_templates < TEMPLATE_CACHE:
                        n_templates += 1
                for k in range(n_stages):
                    self.stages[self.first[j] + k] = templates[t][k]
                self.is_global[j] = templates[t][0].kind == GLOBALNORM_KIND
                self.tpls[j] = <void*> tpl
                self.count[j] = n_stages
                self.modes[j] = SUBTRACT
                if j + PREFETCH_AHEAD < n:
                    _prefetch(fills[j + PREFETCH_AHEAD])
                status[j] = self._fill_leaf(j, entry, n_stages, path_keys[t], fills[j])
            self._mark_shared(status)
            with nogil:
                self._prologues(status)
            for j in range(n):
                if status[j] != OK:
                    self.count[j] = 0
                    if status[j] == NONFINITE_NORM:      # the ClipNorm stage is the first
                        clip = <const ClipNormHP*> self.stages[self.first[j]].hp
                        self.problems.append((j, status[j], clip.norm, clip.p))
                    else:
                        self.problems.append((j, status[j], None, None))
                elif self.is_global[j]:
                    self.n_global += 1
        finally:
            free(status)

    cdef int _fill_leaf(self, Py_ssize_t j, tuple entry, int n_stages,
                        object paths_key, object last) except -1:
        """Point entry j's stages at its arrays; the entry's Status (nothing raised for a
        parameter, gradient or state that does not fit).  ``paths_key``: the template's
        (_paths_key), and ``last``, the owner's _Filled (or None), for its cache of the
        state's buffers (leafcache.pxi)."""
        cdef object xo = entry[2], go = entry[3], state = entry[1]
        cdef cnp.ndarray x, g
        cdef int typenum, k, b, fmt, low_typenum = -1
        cdef Py_ssize_t size
        cdef Stage* st
        cdef list tpl = <list> entry[0]
        cdef object owner = entry[4]
        cdef _Filled seen
        self.xs[j] = NULL
        if not isinstance(xo, cnp.ndarray):
            return BAD_PARAMETER
        x = <cnp.ndarray> xo
        typenum = cnp.PyArray_TYPE(x)
        fmt = _format_of(x)
        if fmt != NATIVE:               # computed in float32; g may be x's dtype
            low_typenum = typenum
            typenum = cnp.NPY_FLOAT32
        elif typenum != cnp.NPY_FLOAT32 and typenum != cnp.NPY_FLOAT64:
            return BAD_PARAMETER
        if not cnp.PyArray_IS_C_CONTIGUOUS(x) or not cnp.PyArray_ISWRITEABLE(x):
            return BAD_PARAMETER
        size = _size_of(x)
        self.xs[j] = cnp.PyArray_DATA(x)
        self.sizes[j] = size
        self.is_double[j] = typenum == cnp.NPY_FLOAT64
        self.formats[j] = fmt
        self.gformats[j] = NATIVE
        if not isinstance(go, cnp.ndarray):
            return BAD_GRADIENT
        g = <cnp.ndarray> go
        if low_typenum >= 0 and cnp.PyArray_TYPE(g) == low_typenum:
            if KINDS[self.stages[self.first[j]].kind].flags & LEADS:
                return BAD_GRADIENT         # the norm of a leading ClipNorm reads float32
            self.gformats[j] = fmt
        elif cnp.PyArray_TYPE(g) != typenum:
            return BAD_GRADIENT
        if (not cnp.PyArray_IS_C_CONTIGUOUS(g)
                or cnp.PyArray_NDIM(g) != cnp.PyArray_NDIM(x)
                or memcmp(cnp.PyArray_DIMS(g), cnp.PyArray_DIMS(x),
                          cnp.PyArray_NDIM(x) * sizeof(cnp.npy_intp)) != 0):
            return BAD_GRADIENT
        self.gs[j] = cnp.PyArray_DATA(g)
        # the state's buffers: as at the leaf's last step when nothing has changed there
        if isinstance(last, _Filled) and (<_Filled> last).fill(
                &self.stages[self.first[j]], state, paths_key, typenum, low_typenum, size):
            return OK
        seen = _Filled()
        seen.start(state, paths_key, typenum, low_typenum, size, n_stages)
        try:
            for k in range(n_stages):
                st = &self.stages[self.first[j] + k]
                spec = tpl[k]
                paths = spec[2]
                if len(paths) > MAX_BUF:
                    return BAD_STATE
                for b in range(len(paths)):
                    if _set_buffer(&st.buf[b], state, paths[b], typenum, low_typenum, size,
                                   "a state buffer", seen):
                        st.low_bufs |= 1 << b
                if spec[3] is not None:
                    st.sc = <double*> _set_scalar(state, spec[3], cnp.NPY_FLOAT64, 2,
                                                  "a per-step scalar buffer", seen)
                if spec[4] is not None:
                    st.ctr = <long long*> _set_scalar(state, spec[4], cnp.NPY_INT64, 1,
                                                      "a step counter", seen)
        except (TypeError, ValueError, IndexError):
            return BAD_STATE
        seen.keep(&self.stages[self.first[j]])
        try:
            owner._fill = seen
        except AttributeError:          # an owner that keeps nothing (not a Leaf)
            pass
        return OK

    cdef int _mark_shared(self, int* status) except -1:
        """SHARED for every entry whose parameter memory or owner another entry has too:
        their gradients must be summed (tied weights) or the state tree is not this model's,
        which the caller sorts out.  One pass over a hash table per key (a sort of the keys
        cost more than the rest of the batch's checks: bench/RESULTS.md section 19)."""
        cdef Py_ssize_t n = self.n_leaves, j, cap = 16
        cdef size_t key, h
        cdef int pass_
        while cap < 2 * n:
            cap *= 2
        cdef size_t* keys = <size_t*> malloc(cap * sizeof(size_t))
        cdef Py_ssize_t* first = <Py_ssize_t*> malloc(cap * sizeof(Py_ssize_t))
        if keys == NULL or first == NULL:
            free(keys)
            free(first)
            raise MemoryError()
        for pass_ in range(2):
            memset(keys, 0, cap * sizeof(size_t))
            for j in range(n):
                if pass_ == 0:
                    key = <size_t> self.xs[j]
                else:
                    key = <size_t> <void*> (<tuple> self.entries[j])[4]
                if key == 0:
                    continue
                h = ((key >> 4) * <size_t> 11400714819323198485ULL) & <size_t> (cap - 1)
                while keys[h] != 0 and keys[h] != key:      # linear probing
                    h = (h + 1) & <size_t> (cap - 1)
                if keys[h] == key:
                    status[j] = SHARED
                    status[first[h]] = SHARED
                else:
                    keys[h] = key
                    first[h] = j
        free(keys)
        free(first)
        return 0

    cdef void _prologues(self, int* status) noexcept nogil:
        """Every OK entry's prologues.  They are cheap but for a leading norm (a read of
        the gradient): large leaves compute theirs over the threads, small ones are spread
        over the threads whole when there is enough to share, in runs of neighbours (so
        that two threads seldom write one cache line of `status` or of the stages)."""
        cdef Py_ssize_t j, small_elements = 0
        cdef int n_threads = omp_get_max_threads(), n_small = 0
        cdef bint any_norm = False
        for j in range(self.n_leaves):
            if status[j] != OK:
                continue
            if KINDS[self.stages[self.first[j]].kind].flags & LEADS:
                any_norm = True
            if self.sizes[j] >= _parallel_threshold:
                self._prologue(j, status, n_threads)
            else:
                n_small += 1
                small_elements += self.sizes[j]
        if not (any_norm and _spread_small(n_threads, n_small, small_elements)):
            n_threads = 1
        for j in prange(self.n_leaves, schedule="dynamic", chunksize=32, num_threads=n_threads):
            if status[j] == OK and self.sizes[j] < _parallel_threshold:
                self._prologue(j, status, 1)

    cdef void _prologue(self, Py_ssize_t j, int* status, int n_threads) noexcept nogil:
        status[j] = _prepare_leaf(&self.stages[self.first[j]], &self.count[j], &self.modes[j],
                                  self.gs[j], self.sizes[j], 1, n_threads,
                                  not self.is_double[j])
        if status[j] == STOPPED:
            status[j] = OK

    @property
    def global_entries(self):
        """The indices of the entries run that a ClipGlobalNorm/SkipNonFinite leads."""
        return [j for j in range(self.n_leaves) if self.count[j] != 0 and self.is_global[j]]

    def global_groups(self):
        """The entries of ``global_entries`` by template object (entries of one template
        share its rule's leading stage): a list of ``[template, sums, elements, empties,
        first, spec]``, ``first`` the index of its first entry, ``spec`` the leading
        stage's ``(clip, skip, omega, p, throw)``.
        ``sums`` is a short list of floats whose exact sum is that of the raw partials
        the entries' ``before`` hooks found (:func:`_expand`: math.fsum of the lists of
        every group is then the exactly rounded sum of all the partials, however the
        leaves were split into batches); for p = +-inf it is ``[max]`` or ``[min]``, NaN
        winning, empty arrays left out of a min.  ``elements`` counts the elements of the
        entries, ``empties`` the empty arrays among them.  No Python object per entry, and
        one sum per template however its entries interleave with another's (leaves of
        two rules in turn: a rule function's matrices and vectors)."""
        cdef list groups = []
        cdef list g
        cdef Py_ssize_t j
        cdef void* tpl
        cdef const GlobalNormHP* h
        for j in template_firsts(self.n_leaves, self.count, self.is_global, self.tpls, True):
            tpl = self.tpls[j]
            h = <const GlobalNormHP*> self.stages[self.first[j]].hp
            g = [<object> tpl, [], 0, 0, j, (h.clip, h.skip, h.omega, h.p, h.throw)]
            self._run_sums(j, self.n_leaves, tpl, g)
            groups.append(g)
        return groups

    cdef int _run_sums(self, Py_ssize_t j0, Py_ssize_t j1, void* tpl, list g) except -1:
        """Add the partials of the entries of ``tpl`` in ``[j0, j1)`` to the group ``g``."""
        cdef PartialSum acc
        cdef Py_ssize_t j, elements = 0, empties = 0
        _partial_sum_start(&acc, <int> (<const GlobalNormHP*> self.stages[self.first[j0]].hp).how)
        for j in range(j0, j1):
            if self.tpls[j] != tpl or self.count[j] == 0 or not self.is_global[j]:
                continue
            elements += self.sizes[j]
            if self.sizes[j] == 0:
                empties += 1
                if acc.how == NORM_MIN:   # an empty array has no minimum
                    continue
            _partial_sum_add(&acc, (<const GlobalNormHP*> self.stages[self.first[j]].hp).norm)
        _partial_sum_into(&acc, <list> g[1])
        g[2] += elements
        g[3] += empties
        return 0

    def global_members(self, template):
        """``(indices, partials)`` of the entries of ``global_entries`` whose template is
        ``template``: for the search of a non-finite gradient, and a skip's counts."""
        cdef list js = [], parts = []
        cdef Py_ssize_t j
        for j in range(self.n_leaves):
            if (self.tpls[j] == <void*> template and self.count[j] != 0
                    and self.is_global[j]):
                js.append(j)
                parts.append((<const GlobalNormHP*> self.stages[self.first[j]].hp).norm)
        return js, parts

    def marked_templates(self):
        """``[template, entries, first]`` for each template among the entries run whose
        type is a subclass of list (see ``marked``): how many ran it, the first's index."""
        cdef list found = []
        cdef Py_ssize_t j, k, members
        cdef void* tpl
        if not self.marked:
            return found
        for j in template_firsts(self.n_leaves, self.count, self.is_global, self.tpls, False):
            tpl = self.tpls[j]
            if type(<object> tpl) is list:
                continue
            members = 0
            for k in range(j, self.n_leaves):
                if self.tpls[k] == tpl and self.count[k] != 0:
                    members += 1
            found.append([<object> tpl, members, j])
        return found

    def set_template_scale(self, template, double scale):
        """The leading scale of every entry of ``global_entries`` whose template is
        ``template``, decided by the caller for the whole step: the input scale of the
        stage it was folded into, else the leading stage's own scale."""
        cdef Py_ssize_t j
        cdef Stage* st
        if self.ran:
            return
        for j in range(self.n_leaves):
            if (self.tpls[j] == <void*> template and self.count[j] != 0
                    and self.is_global[j]):
                st = &self.stages[self.first[j]]
                if st.kind == FOLDED:
                    self.stages[self.first[j] + 1].gs = scale
                else:
                    st.fold = scale

    def run(self):
        """Update every parameter and state of the batch (once; nothing on a second call)."""
        if self.ran:
            return
        self.ran = True
        cdef int n_threads = omp_get_max_threads()
        cdef Py_ssize_t j
        for j in range(self.n_leaves):     # the step runs: it ends a SkipNonFinite's run
            if (self.count[j] != 0 and self.is_global[j]
                    and self.stages[self.first[j]].ctr != NULL
                    and self.stages[self.first[j]].ctr[0] != 0):  # (reads overlap; writes wait)
                self.stages[self.first[j]].ctr[0] = 0
        with nogil:
            _run_many(self.stages, self.first, self.count, self.modes, self.is_double,
                      self.formats, self.gformats, self.n_leaves, self.sizes, self.xs,
                      self.gs, n_threads, <float> 0)
            _run_many(self.stages, self.first, self.count, self.modes, self.is_double,
                      self.formats, self.gformats, self.n_leaves, self.sizes, self.xs,
                      self.gs, n_threads, <double> 0)


cdef inline void _run_leaf(Stage* stages, int count, Py_ssize_t size, void* x, const void* g,
                           int mode, char fmt, char gfmt, int n_threads,
                           floating dummy) noexcept nogil:
    """Run one prepared leaf of the float32 (16-bit ones too) or float64 pass."""
    if floating is float and fmt != NATIVE:
        _run_prepared_low(stages, count, size, x, fmt, g, gfmt, <float*> NULL, mode, n_threads)
    else:
        _run_prepared(stages, count, size, <floating*> x, <const floating*> g,
                      <floating*> NULL, mode, n_threads, 1)


cdef void _run_many(Stage* stages, Py_ssize_t* first, int* count, int* modes, char* is_double,
                    char* formats, char* gformats, Py_ssize_t n_leaves, Py_ssize_t* sizes,
                    void** xs, void** gs, int n_threads, floating dummy) noexcept nogil:
    """Run the prepared leaves of one compute dtype (that of ``floating``; the 16-bit ones
    compute in float32)."""
    cdef char want_double = floating is double
    cdef Py_ssize_t j, small_elements = 0
    cdef int n_small = 0
    # Large leaves one after the other, each split over the threads by tiles...
    for j in range(n_leaves):
        if count[j] == 0 or is_double[j] != want_double:
            continue
        if sizes[j] >= _parallel_threshold:
            _run_leaf(stages + first[j], count[j], sizes[j], xs[j], gs[j], modes[j],
                      formats[j], gformats[j], n_threads, dummy)
        else:
            n_small += 1
            small_elements += sizes[j]
    # ...small ones spread over the threads whole (never split a tiny array).
    if _spread_small(n_threads, n_small, small_elements):
        for j in prange(n_leaves, schedule="dynamic", chunksize=4, num_threads=n_threads):
            if count[j] != 0 and is_double[j] == want_double and sizes[j] < _parallel_threshold:
                _run_leaf(stages + first[j], count[j], sizes[j], xs[j], gs[j], modes[j],
                          formats[j], gformats[j], 1, dummy)
    elif n_small > 0:
        for j in range(n_leaves):
            if count[j] != 0 and is_double[j] == want_double and sizes[j] < _parallel_threshold:
                _run_leaf(stages + first[j], count[j], sizes[j], xs[j], gs[j], modes[j],
                          formats[j], gformats[j], 1, dummy)
