"""The compiled kernels, built for the widest instruction set this processor runs.

The kernel module is compiled twice: ``_kernels`` for the baseline of the platform and, on
x86-64, ``_kernels_avx2`` with AVX2 enabled.  Both give the same bits (IEEE arithmetic
without FP contraction); the AVX2 build is faster where the arithmetic, not memory, is the
limit (Adam's two divisions and square root per element).  ``OPTIMISERS_ISA=baseline`` in
the environment forces the baseline build.
"""

import os

from . import _kernels as _baseline


def _choose():
    if os.environ.get("OPTIMISERS_ISA", "").strip().lower() in ("baseline", "sse2", "generic"):
        return _baseline
    if _baseline.cpu_has_avx2():
        try:
            from . import _kernels_avx2
        except ImportError:           # a build without it (another platform or compiler)
            return _baseline
        return _kernels_avx2
    return _baseline


kernels = _choose()
