# The templates of a batch's entries, found in one pass (batch.pxi's global sums and
# scheduled templates), however the entries of several templates interleave.


cdef list template_firsts(Py_ssize_t n, const int* count, const char* is_global,
                          void** tpls, bint global_only):
    """The index of the first entry of each template among the ``n`` entries that run
    (``count`` not 0; ``global_only``: that lead with a global stage), in order: a linear
    search among the few templates seen (a dict past sixteen), nothing per entry."""
    cdef void* seen[16]
    cdef int n_seen = 0, i
    cdef dict more = None
    cdef list firsts = []
    cdef Py_ssize_t j
    cdef void* tpl
    cdef void* last = NULL
    for j in range(n):
        if count[j] == 0 or (global_only and not is_global[j]):
            continue
        tpl = tpls[j]
        if tpl == last:                 # a run of one template
            continue
        last = tpl
        for i in range(n_seen):
            if seen[i] == tpl:
                break
        else:
            if n_seen < 16:
                seen[n_seen] = tpl
                n_seen += 1
            else:
                if more is None:
                    more = {}
                if <size_t> tpl in more:
                    continue
                more[<size_t> tpl] = j
            firsts.append(j)
    return firsts
