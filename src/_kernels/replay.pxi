# Replay: one batch prepared once and run again at every step with that step's gradients
# (optimisers.torch's planned step, where the parameters and states stay the same arrays
# from step to step and only the gradients are new).

from libc.string cimport memcpy


cdef class Replay(Batch):
    """A :class:`Batch` whose entries are checked and pointed at their parameters and state
    once, and which :meth:`run_with` runs again at each step with new gradients.

    ``Replay(entries)`` takes the entries of a ``Batch``; the ``g`` of an entry only stands
    for the gradients to come (an array of their dtype, shape and layout: the parameter
    itself will do) and is never read.  No prologue runs then: ``problems`` lists the
    entries that do not fit (the caller plans no replay with any).  Refused (ValueError): a
    template of one step only (a scheduled rule's) or a program led by a global stage
    (ClipGlobalNorm, SkipNonFinite), which need the whole step's sums.

    The caller vouches, at every run, that the parameters and states are still the arrays
    the replay was made with (the same memory, not resized) and that each gradient address
    is the data of a C-contiguous array of its parameter's dtype and shape, alive during
    the call.
    """
    cdef Stage* filled             # every stage as _fill_leaf left it, before any prologue
    cdef int* lengths              # entry j's number of stages (0: left out)
    cdef Py_ssize_t n_stages_all

    def __cinit__(self):
        self.filled = NULL
        self.lengths = NULL
        self.n_stages_all = 0

    def __dealloc__(self):
        free(self.filled)
        free(self.lengths)

    def __init__(self, list entries):
        Batch.__init__(self, entries)
        if self.n_leaves > 0 and (self.filled == NULL or self.lengths == NULL):
            raise MemoryError()
        if self.n_global or self.marked:
            raise ValueError("a replay runs neither a scheduled rule's template nor a "
                             "program led by a global stage")
        cdef Py_ssize_t j
        for j in range(self.n_leaves):      # left out: never run
            if self.count[j] == 0:
                self.lengths[j] = 0

    cdef void _prologues(self, int* status) noexcept nogil:
        # Batch.__init__ calls this once the stages are filled: keep them as they are, for
        # every run to start from; the prologues run at each step (run_with).
        cdef Py_ssize_t j, n = self.n_leaves
        self.n_stages_all = self.first[n - 1] + self.count[n - 1]
        self.filled = <Stage*> malloc(self.n_stages_all * sizeof(Stage))
        self.lengths = <int*> malloc(n * sizeof(int))
        if self.filled == NULL or self.lengths == NULL:
            return
        memcpy(self.filled, self.stages, self.n_stages_all * sizeof(Stage))
        for j in range(n):
            self.lengths[j] = self.count[j]

    def run(self):
        raise TypeError("a Replay runs with its step's gradients: run_with(addresses)")

    def refill(self, Py_ssize_t j0, Py_ssize_t j1, list template):
        """Give the entries ``j0`` to ``j1 - 1`` the hyper-parameters of ``template``, a
        program of the same kinds as theirs (the rule at a new learning rate): the caller
        vouches that its buffers are the same.  ValueError, changing nothing, when an
        entry's program has other kinds or another length."""
        cdef Stage fresh[MAX_STAGES]
        cdef Py_ssize_t j
        cdef int k, n_stages = len(template)
        if not 0 <= j0 <= j1 <= self.n_leaves:
            raise ValueError(f"refill: entries {j0} to {j1} of {self.n_leaves}")
        if n_stages > MAX_STAGES:
            raise ValueError(f"a program has 1 to {MAX_STAGES} stages, got {n_stages}")
        for k in range(n_stages):
            spec = template[k]
            _fill_constants(&fresh[k], spec[0], spec[1], k)
        for j in range(j0, j1):
            if self.lengths[j] != n_stages:
                raise ValueError(f"refill: entry {j} has {self.lengths[j]} stages, the "
                                 f"template {n_stages}")
            for k in range(n_stages):
                if self.filled[self.first[j] + k].kind != fresh[k].kind:
                    raise ValueError(f"refill: stage {k} of entry {j} is of another kind")
        for j in range(j0, j1):
            for k in range(n_stages):
                memcpy(self.filled[self.first[j] + k].hp, fresh[k].hp, sizeof(fresh[k].hp))

    def run_with(self, list addresses):
        """Run every entry whose gradient address (an int, ``addresses[j]`` for entry j) is
        not None: the stages as filled, this step's prologues, then the tiles (as
        :meth:`Batch.run`).  Returns ``[]`` once it has run, or, when a prologue refused
        (a leading ClipNorm's non-finite norm, no memory), the ``(index, Status)`` of the
        entries that refused, having written nothing."""
        cdef Py_ssize_t n = self.n_leaves, j
        cdef int* status
        cdef object address
        cdef list refused = []
        if len(addresses) != n:
            raise ValueError(f"run_with: {len(addresses)} gradient addresses for {n} entries")
        if n == 0:
            return refused
        status = <int*> malloc(n * sizeof(int))
        if status == NULL:
            raise MemoryError()
        try:
            for j in range(n):      # (an empty gradient's address may be 0: None is none)
                address = addresses[j]
                self.gs[j] = NULL if address is None else <void*> <size_t> address
                status[j] = OK if address is not None and self.lengths[j] != 0 else BAD_GRADIENT
            memcpy(self.stages, self.filled, self.n_stages_all * sizeof(Stage))
            for j in range(n):
                self.count[j] = self.lengths[j]
                self.modes[j] = SUBTRACT
            with nogil:
                Batch._prologues(self, status)
            for j in range(n):
                if status[j] == NONFINITE_NORM or status[j] == NO_MEMORY:
                    refused.append((j, status[j]))
                elif status[j] != OK:
                    self.count[j] = 0
            if refused:
                return refused
            self.ran = False
            Batch.run(self)     # the tiles, as a batch runs them
            return refused
        finally:
            free(status)
