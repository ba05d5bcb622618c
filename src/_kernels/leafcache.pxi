# What a batch found in a leaf's state at its last step, kept on the leaf (its owner's
# `_fill`) so that the next step need not follow every path and check every array again.
#
# Why it is safe to reuse: the state is a tree of tuples, which cannot change, so while the
# very same state object is the leaf's state, the same paths lead to the same array
# objects.  An array object itself can change in place (`a.dtype = ...`, `a.shape = ...`,
# `a.resize(refcheck=False)`, `a.flags.writeable = False`), so each of them is checked again
# at every step, by a few loads from its struct: its data pointer, dtype, size and flags.
# The cache holds the state, so that its id cannot be reused by another object.

from cpython.ref cimport PyObject
from libc.string cimport memcpy, memset

cdef extern from *:
    void __builtin_prefetch(const void* p) noexcept nogil

cdef enum:
    PREFETCH_AHEAD = 4       # how many entries ahead a batch asks for a leaf's arrays


cdef inline cnp.npy_intp _size_of(cnp.ndarray a) noexcept:
    """PyArray_SIZE, inline (numpy's is a call through its API table, at every array a
    batch checks)."""
    cdef cnp.npy_intp n = 1
    cdef cnp.npy_intp* dims = cnp.PyArray_DIMS(a)
    cdef int k
    for k in range(cnp.PyArray_NDIM(a)):
        n *= dims[k]
    return n


cdef struct _Seen:
    PyObject* array            # borrowed: the state (held by the _Filled) holds it
    void* data
    cnp.npy_intp* dims         # where its shape was (only prefetched: it may have moved)
    cnp.npy_intp size
    int typenum


cdef struct _StageBuffers:
    void* buf[MAX_BUF]
    int low_bufs
    double* sc
    long long* ctr


# a template's buffer paths -> one object for all templates of those paths (a scheduled
# rule has a template per count, all with the same paths)
_PATHS = {}


cdef object _paths_key(list tpl):
    """The one object that stands for the buffer paths of ``tpl``'s stages."""
    cdef tuple key = tuple([(spec[2], spec[3], spec[4]) for spec in tpl])
    got = _PATHS.get(key)
    if got is None:
        if len(_PATHS) > 4096:
            _PATHS.clear()
        got = _PATHS[key] = key
    return got


cdef inline void _prefetch(object last) noexcept:
    if isinstance(last, _Filled):
        (<_Filled> last).prefetch()


cdef class _Filled:
    """One leaf's state buffers as a batch filled them: the pointers its stages got, and
    every array they came from (to check it is still as it was)."""
    cdef object state              # the state they were found in (held: see above)
    cdef object paths              # _paths_key of the template they were found by
    cdef int typenum, low_typenum
    cdef cnp.npy_intp size
    cdef int n_stages, n_seen
    cdef _StageBuffers* stages
    cdef _Seen* seen

    def __cinit__(self):
        self.stages = NULL
        self.seen = NULL
        self.n_stages = 0
        self.n_seen = 0

    def __dealloc__(self):
        free(self.stages)
        free(self.seen)

    cdef int start(self, object state, object paths, int typenum, int low_typenum,
                   cnp.npy_intp size, int n_stages) except -1:
        self.state = state
        self.paths = paths
        self.typenum = typenum
        self.low_typenum = low_typenum
        self.size = size
        self.n_stages = n_stages
        self.stages = <_StageBuffers*> malloc(n_stages * sizeof(_StageBuffers))
        self.seen = <_Seen*> malloc(n_stages * (MAX_BUF + 2) * sizeof(_Seen))
        if self.stages == NULL or self.seen == NULL:
            raise MemoryError()
        return 0

    cdef void saw(self, object a) noexcept:
        """Record an array the fill checked and took a pointer of."""
        cdef _Seen* s = &self.seen[self.n_seen]
        s.array = <PyObject*> a
        s.data = cnp.PyArray_DATA(<cnp.ndarray> a)
        s.dims = cnp.PyArray_DIMS(<cnp.ndarray> a)
        s.size = _size_of(<cnp.ndarray> a)
        s.typenum = cnp.PyArray_TYPE(<cnp.ndarray> a)
        self.n_seen += 1

    cdef void keep(self, const Stage* stages) noexcept:
        """Record the buffer pointers of the filled ``stages``."""
        cdef int k
        for k in range(self.n_stages):
            memcpy(self.stages[k].buf, stages[k].buf, sizeof(self.stages[k].buf))
            self.stages[k].low_bufs = stages[k].low_bufs
            self.stages[k].sc = stages[k].sc
            self.stages[k].ctr = stages[k].ctr

    cdef void prefetch(self) noexcept:
        """Ask for the memory :meth:`fill` reads (each array's struct and shape), which the
        kernels' pass over the arrays has mostly put out of cache: without this, most of
        the time of a fill is spent waiting for it."""
        cdef int k
        for k in range(self.n_seen):
            __builtin_prefetch(self.seen[k].array)
            __builtin_prefetch(<char*> self.seen[k].array + 64)
            __builtin_prefetch(self.seen[k].dims)

    cdef bint fill(self, Stage* stages, object state, object paths, int typenum,
                   int low_typenum, cnp.npy_intp size) noexcept:
        """Fill ``stages``' buffers as last time, when that is what a full fill would give:
        the same state object and paths, the parameter's dtype and size, and every array
        unchanged (pointer, dtype, size, C-contiguous and writable).  False when not."""
        cdef int k
        cdef const _Seen* s
        cdef cnp.ndarray a
        if (state is not self.state or paths is not self.paths or typenum != self.typenum
                or low_typenum != self.low_typenum or size != self.size):
            return False
        for k in range(self.n_seen):
            s = &self.seen[k]
            a = <cnp.ndarray> s.array
            if (cnp.PyArray_DATA(a) != s.data or cnp.PyArray_TYPE(a) != s.typenum
                    or _size_of(a) != s.size or not cnp.PyArray_ISWRITEABLE(a)
                    or not cnp.PyArray_IS_C_CONTIGUOUS(a)):
                return False
        for k in range(self.n_stages):
            memcpy(stages[k].buf, self.stages[k].buf, sizeof(stages[k].buf))
            stages[k].low_bufs = self.stages[k].low_bufs
            stages[k].sc = self.stages[k].sc
            stages[k].ctr = self.stages[k].ctr
        return True


# Following a template's paths into a state (a full fill).

cdef inline object _follow(object state, tuple path):
    """The part of ``state`` at ``path`` (tuple indices); TypeError or IndexError when the
    state does not have that shape (the kernels index tuples without checks)."""
    cdef object i
    cdef Py_ssize_t k
    for i in path:
        if not isinstance(state, tuple):
            raise TypeError(f"expected a tuple in the state, found {type(state).__name__}")
        k = i
        if k < 0 or k >= len(<tuple> state):
            raise IndexError(f"the state has {len(<tuple> state)} entries, not {k + 1}")
        state = (<tuple> state)[k]
    return state


cdef inline int _set_buffer(void** slot, object state, object path, int typenum,
                            int low_typenum, Py_ssize_t n, str what, _Filled seen) except -1:
    """Follow ``path`` into ``state`` and store the data pointer of the array found there:
    of dtype ``typenum``, or ``low_typenum`` (a 16-bit parameter's own dtype; -1 for none);
    ``seen`` records the array.  Returns 1 when it has ``low_typenum``, else 0."""
    cdef object a = _follow(state, <tuple?> path)
    cdef bint low = low_typenum >= 0 and _typenum_of(a) == low_typenum
    _check(a, low_typenum if low else typenum, n, what)
    if not cnp.PyArray_ISWRITEABLE(<cnp.ndarray> a):
        raise ValueError(f"{what} must be writable")
    slot[0] = cnp.PyArray_DATA(<cnp.ndarray> a)
    seen.saw(a)
    return low


cdef inline void* _set_scalar(object state, object path, int typenum, Py_ssize_t need,
                              str what, _Filled seen) except? NULL:
    """The data pointer of the scalar buffer at ``path`` in ``state`` (NULL for None),
    recorded in ``seen``."""
    cdef object a = _follow(state, <tuple?> path)
    cdef void* p = _scalar_ptr(a, typenum, need, what)
    if a is not None:
        seen.saw(a)
    return p
