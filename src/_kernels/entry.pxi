# The entry points for Python: build controls, the table of kinds, and `run_program`, which
# checks one leaf's program and runs it.


def openmp_enabled():
    """True when the kernels were compiled with OpenMP (they run serially otherwise)."""
    return bool(OPTIMISERS_OPENMP)


def isa():
    """The instruction set this build of the kernels was compiled for: "baseline", "avx2"
    or "avx512"."""
    return OPTIMISERS_ISA.decode()


def cpu_runs(str name):
    """Whether this processor (and operating system) can run the build ``name``."""
    return bool(optimisers_cpu_runs(name.encode()))


def max_threads():
    """The number of threads a kernel would use now (``omp_get_max_threads()``).

    It follows ``threadpoolctl.threadpool_limits`` and ``OMP_NUM_THREADS``."""
    return omp_get_max_threads()


def tile_length(itemsize, bint chain=False):
    """Elements per tile of a parameter whose (real) elements have ``itemsize`` bytes: 1024
    float32 or 512 float64 for a program of one loop, half that for a chain whose stages
    run loops of their own.  (Tests place values tile by tile with it.  Most programs of
    one loop run on longer tiles on a large array: `long_tiles`.)"""
    _check_itemsize(itemsize)
    return _elements_per_tile(chain, itemsize)


def long_tiles(itemsize):
    """``(length, per_thread)``: the elements of ``itemsize`` bytes in a long tile, and how
    many long tiles each thread must get before a program of one loop takes them (see
    LONG_TILE_BYTES).  For the tests that must reach long tiles."""
    _check_itemsize(itemsize)
    return LONG_TILE_BYTES // itemsize, LONG_TILES_PER_THREAD


def _check_itemsize(itemsize):
    if itemsize not in (4, 8):
        raise ValueError(f"the kernels run on 4- or 8-byte reals, not {itemsize}-byte ones")


def get_parallel_threshold():
    """Arrays with fewer elements than this are updated on one thread."""
    return _parallel_threshold


def set_parallel_threshold(Py_ssize_t n):
    """Set the element count from which a program is split over OpenMP threads."""
    global _parallel_threshold
    if n < 0:
        raise ValueError(f"the parallel threshold must be >= 0, got {n}")
    _parallel_threshold = n


def kinds():
    """``{name: index}`` of every kernel kind, in the order the families registered them."""
    return {name: entry[0] for name, entry in KIND_TABLE.items()}


def hyperparameters(str kind):
    """The names of a kind's hyper-parameter fields (its hp struct), in layout order."""
    return KIND_TABLE[kind][1]


def accepts_complex(int kind):
    """Whether the kind is defined for complex parameters (component-wise or in pairs)."""
    _kind(kind)
    return KINDS[kind].complex_form != REFUSED


cdef int _kind(int kind) except -1:
    if kind < 0 or kind >= n_kinds:
        raise ValueError(f"unknown kernel kind {kind}")
    return kind


# hp slot of each field name, per kind (built from KIND_TABLE on first use)
cdef list _slots = []


cdef dict _slots_of(int kind):
    if not _slots:
        by_index = sorted(KIND_TABLE.values())
        _slots.extend({name: j for j, name in enumerate(names)} for _, names in by_index)
    return <dict> _slots[kind]


cdef int _fill_constants(Stage* st, int kind, object hps, int position) except -1:
    """The parts of a stage that every leaf of a program shares: kind and hyper-parameters
    (a dict of named values; fields not given are 0, and those a `before` hook sets per step
    are left to it).  ``position`` is the stage's index in its program."""
    cdef int j
    cdef dict slots
    _kind(kind)
    if KINDS[kind].flags & LEADS and position != 0:
        raise ValueError("a ClipNorm stage must be the first of its program (its norm is "
                         "that of the program's input)")
    slots = _slots_of(kind)
    st.kind = kind
    st.width = 1
    st.gs = 1.0
    st.fold = 1.0
    for j in range(MAX_HP):
        st.hp[j] = 0.0
    for name, value in (<dict?> hps).items():
        j = slots.get(name, -1)
        if j < 0:
            raise ValueError(f"kernel kind {kind} has no hyper-parameter {name!r}; its "
                             f"fields are {tuple(slots)}")
        st.hp[j] = value
    for j in range(MAX_BUF):
        st.buf[j] = NULL
    st.low_bufs = 0
    st.sc = NULL
    st.ctr = NULL
    return 0


cdef inline int _check(object a, int typenum, Py_ssize_t n, str what) except -1:
    if not isinstance(a, cnp.ndarray):
        raise TypeError(f"{what} must be a numpy array, got {type(a).__name__}")
    cdef cnp.ndarray arr = <cnp.ndarray> a
    if cnp.PyArray_TYPE(arr) != typenum:
        raise TypeError(f"{what} has dtype {arr.dtype}, the kernel needs "
                        f"{cnp.PyArray_DescrFromType(typenum)}")
    if not cnp.PyArray_IS_C_CONTIGUOUS(arr):
        raise ValueError(f"{what} must be C-contiguous")
    if n >= 0 and cnp.PyArray_SIZE(arr) != n:
        raise ValueError(f"{what} has {cnp.PyArray_SIZE(arr)} elements, expected {n}")
    return 0


cdef inline void* _scalar_ptr(object a, int typenum, Py_ssize_t need, str what) except? NULL:
    if a is None:
        return NULL
    _check(a, typenum, -1, what)
    if cnp.PyArray_SIZE(<cnp.ndarray> a) < need or not cnp.PyArray_ISWRITEABLE(<cnp.ndarray> a):
        raise ValueError(f"{what} must be a writable array of at least {need} elements")
    return cnp.PyArray_DATA(<cnp.ndarray> a)


cdef int _fill_stage(Stage* st, int kind, object hps, object bufs, object sc, object ctr,
                     int typenum, Py_ssize_t n, int position, int ctypenum=-1,
                     int low_typenum=-1) except -1:
    """Fill one stage.  ``typenum`` is the real dtype of the kernel arithmetic, ``n`` the
    number of elements of the parameter.  For a complex parameter ``ctypenum`` is its
    complex dtype: the stage's width and which buffers are complex (the others are real,
    of ``typenum``) follow from the kind's complex form.  For a 16-bit parameter
    ``low_typenum`` is its dtype: a buffer of that dtype is staged (``Stage.low_bufs``),
    the others are float32."""
    cdef int j, mask = 0, form, want
    _fill_constants(st, kind, hps, position)
    if len(bufs) > MAX_BUF:
        raise ValueError("too many buffers in a stage")
    if ctypenum >= 0:
        form = KINDS[kind].complex_form
        if form == PAIRS:
            st.width = 2
            mask = KINDS[kind].complex_buffers
        elif form == COMPONENTWISE:
            mask = (1 << MAX_BUF) - 1       # every buffer is complex, read component-wise
        else:
            raise TypeError(f"kernel kind {kind} is not defined for complex parameters")
    for j in range(len(bufs)):
        want = ctypenum if (mask >> j) & 1 else typenum
        if low_typenum >= 0 and _typenum_of(bufs[j]) == low_typenum:
            want = low_typenum
            st.low_bufs |= 1 << j
        _check(bufs[j], want, n, "a state buffer")
        if not cnp.PyArray_ISWRITEABLE(<cnp.ndarray> bufs[j]):
            raise ValueError("state buffers must be writable")
        st.buf[j] = cnp.PyArray_DATA(<cnp.ndarray> bufs[j])
    st.sc = <double*> _scalar_ptr(sc, cnp.NPY_FLOAT64, 2, "a per-step scalar buffer")
    st.ctr = <long long*> _scalar_ptr(ctr, cnp.NPY_INT64, 1, "a step counter")
    return 0


cdef inline int _typenum_of(object a) noexcept:
    """The dtype number of an array; -1 for anything else."""
    return cnp.PyArray_TYPE(<cnp.ndarray> a) if isinstance(a, cnp.ndarray) else -1


cdef int _float_typenum(cnp.ndarray x) except -1:
    cdef int typenum = cnp.PyArray_TYPE(x)
    if typenum != cnp.NPY_FLOAT32 and typenum != cnp.NPY_FLOAT64:
        raise TypeError(f"kernels run on float16, bfloat16, float32 and float64, got "
                        f"{x.dtype}")
    return typenum


# numpy's number of the bfloat16 dtype (a dtype registered at run time), once one is seen
cdef int _bf16_typenum = -1


cdef int _format_of(cnp.ndarray a) except -1:
    """How the elements of ``a`` are stored: F16, BF16 or NATIVE (anything else).  A
    bfloat16 dtype is known by its name and size, so ml_dtypes (which defines it) is never
    imported here."""
    global _bf16_typenum
    cdef int typenum = cnp.PyArray_TYPE(a)
    if typenum == cnp.NPY_FLOAT16:
        return F16
    if typenum == _bf16_typenum:
        return BF16
    if _bf16_typenum < 0 and cnp.PyArray_ISUSERDEF(a):
        descr = a.dtype
        if descr.itemsize == 2 and descr.name == "bfloat16":
            _bf16_typenum = typenum
            return BF16
    return NATIVE


def storage_format(cnp.ndarray a):
    """``NATIVE``, ``F16`` or ``BF16``: how the kernels read the elements of ``a``."""
    return _format_of(a)


cdef int _real_typenum(int typenum) noexcept:
    """The real dtype of a complex one; -1 for any other."""
    if typenum == cnp.NPY_COMPLEX64:
        return cnp.NPY_FLOAT32
    if typenum == cnp.NPY_COMPLEX128:
        return cnp.NPY_FLOAT64
    return -1


def run_program(list stages, cnp.ndarray x, cnp.ndarray g, object dst=None, int mode=SUBTRACT):
    """Run a program of element-wise stages over one parameter array.

    Parameters
    ----------
    stages : list of (kind, hyper-parameters, buffers, scalars, counter)
        ``kind`` an index of ``kinds()``; hyper-parameters a dict of the kind's named fields
        (``hyperparameters(name)``) as float64 values; buffers a sequence of C-contiguous,
        writable state arrays of the parameter dtype and size; scalars a float64 array of
        at least 2 elements (the running ``beta_t``) or None; counter a 1-element int64
        array or None.  For a complex parameter the second-moment buffers of the kinds with
        pair forms are of its real dtype R (see ``Kind.complex_buffers``).
    x : ndarray, float16, bfloat16, float32, float64, complex64 or complex128, C-contiguous
        The parameter.  Written in place (``x -= d``) when ``mode`` is ``SUBTRACT``.  A
        16-bit one is computed in float32 and rounded once on store; its state buffers
        are float32 or of its own dtype (staging.pxi).
    g : ndarray, same dtype and size as ``x``, C-contiguous
        The incoming gradient (read only); float32 also for a 16-bit ``x``, and float32
        only when its program starts with a ``ClipNorm`` stage (whose norm reads float32).
    dst : ndarray or None
        Where ``d`` goes when ``mode`` is ``STORE`` (float32 for a 16-bit ``x``).
    mode : Mode

    Returns
    -------
    A ``Status``: ``OK``; ``STOPPED`` when a stage stopped the program (``AccumGrad``
    before its n-th gradient: the stages up to it ran, and nothing was subtracted or
    stored); ``NONFINITE_NORM`` when a leading ``ClipNorm`` stage with ``throw`` met a
    non-finite norm (then nothing at all was written).
    """
    cdef Stage c_stages[MAX_STAGES]
    cdef int n_stages = len(stages)
    cdef int xtypenum = cnp.PyArray_TYPE(x)
    cdef int typenum = _real_typenum(xtypenum)      # the arithmetic's dtype
    cdef int ctypenum = -1                          # the complex dtype, if any
    cdef int comps = 1                              # components per element
    cdef int fmt = NATIVE, gfmt = NATIVE            # 16-bit storage of x and of g
    cdef int low_typenum = -1                       # x's dtype, when it is 16-bit
    cdef Py_ssize_t n = cnp.PyArray_SIZE(x)
    cdef int i, status
    cdef void* dst_ptr = NULL
    if typenum >= 0:
        ctypenum = xtypenum
        comps = 2
    else:
        fmt = _format_of(x)
        if fmt == NATIVE:
            typenum = _float_typenum(x)
        else:
            typenum = cnp.NPY_FLOAT32
            low_typenum = xtypenum
    if n_stages == 0 or n_stages > MAX_STAGES:
        raise ValueError(f"a program has 1 to {MAX_STAGES} stages, got {n_stages}")
    _check(x, xtypenum, n, "x")
    if fmt != NATIVE and cnp.PyArray_TYPE(g) == xtypenum:
        gfmt = fmt
    _check(g, xtypenum if fmt == NATIVE or gfmt != NATIVE else typenum, n, "the gradient")
    if mode == SUBTRACT and not cnp.PyArray_ISWRITEABLE(x):
        raise ValueError("x must be writable")
    if mode == STORE:
        _check(dst, xtypenum if fmt == NATIVE else typenum, n, "dst")
        if not cnp.PyArray_ISWRITEABLE(<cnp.ndarray> dst):
            raise ValueError("dst must be writable")
        dst_ptr = cnp.PyArray_DATA(<cnp.ndarray> dst)
    for i in range(n_stages):
        kind, hps, bufs, sc, ctr = stages[i]
        _fill_stage(&c_stages[i], kind, hps, bufs, sc, ctr, typenum, n, i, ctypenum,
                    low_typenum)
    if gfmt != NATIVE and KINDS[c_stages[0].kind].flags & LEADS:
        raise TypeError(f"a program that starts with ClipNorm takes a float32 gradient for "
                        f"a {x.dtype} parameter (its norm reads float32), got {g.dtype}")
    cdef int n_threads = omp_get_max_threads()
    cdef bint single = typenum == cnp.NPY_FLOAT32
    n = n * comps          # the kernels walk the components
    with nogil:
        status = _prepare_leaf(c_stages, &n_stages, &mode, cnp.PyArray_DATA(g), n, comps,
                               n_threads, single)
        if status == OK or status == STOPPED:
            if fmt != NATIVE:
                _run_prepared_low(c_stages, n_stages, n, cnp.PyArray_DATA(x), fmt,
                                  cnp.PyArray_DATA(g), gfmt, <float*> dst_ptr, mode,
                                  n_threads)
            elif single:
                _run_prepared[float](c_stages, n_stages, n, <float*> cnp.PyArray_DATA(x),
                                     <const float*> cnp.PyArray_DATA(g), <float*> dst_ptr,
                                     mode, n_threads, comps)
            else:
                _run_prepared[double](c_stages, n_stages, n, <double*> cnp.PyArray_DATA(x),
                                      <const double*> cnp.PyArray_DATA(g), <double*> dst_ptr,
                                      mode, n_threads, comps)
    if status == NO_MEMORY:
        raise MemoryError("could not allocate the partial sums of a norm")
    return status
