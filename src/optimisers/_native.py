"""The compiled kernels, built for the widest instruction set this processor runs.

The kernel module is compiled up to three times: ``_kernels`` for the baseline of the
platform and, on x86-64, ``_kernels_avx2`` (AVX2) and ``_kernels_avx512``
(AVX-512 F/DQ/VL/BW, 512-bit vectors).  All give the same bits (IEEE arithmetic without FP
contraction); the wider builds are faster where the arithmetic, not memory, is the limit
(Adam's divisions and square root per element).  ``OPTIMISERS_ISA=baseline`` (or ``avx2``)
in the environment caps the choice.
"""

import importlib
import os
from types import ModuleType
from typing import Any, cast

# absolute: `from . import _kernels` reads a name of the package's __init__, which imports
# every module, and that cycle leaves mypy unable to type the rules' decorator
import optimisers._kernels as _baseline

ISAS = ("baseline", "avx2", "avx512")  # narrowest first


def _load(isa: str) -> ModuleType | None:
    """The build ``isa`` if it is installed here and this processor runs it, else None."""
    if isa == "baseline":
        return cast(ModuleType, _baseline)
    if not _baseline.cpu_runs(isa):
        return None
    try:
        return importlib.import_module(f"{__package__}._kernels_{isa}")
    except ImportError:  # not built here (another platform or compiler)
        return None


def builds() -> dict[str, ModuleType]:
    """Every build of the kernels installed here that this processor runs, narrowest first:
    ``{isa: module}``, the baseline always among them (for tests and benchmarks that
    compare the builds; they give the same bits)."""
    return {isa: module for isa in ISAS if (module := _load(isa)) is not None}


def _choose() -> ModuleType:
    cap = os.environ.get("OPTIMISERS_ISA", "").strip().lower()
    cap = {"sse2": "baseline", "generic": "baseline"}.get(cap, cap)
    allowed = ISAS[: ISAS.index(cap) + 1] if cap in ISAS else ISAS
    for isa in reversed(allowed[1:]):  # the widest first; allowed[0], the baseline, loads
        module = _load(isa)
        if module is not None:
            return module
    return cast(ModuleType, _baseline)


# the kernel module in use; typed Any: a compiled module without stubs
kernels: Any = _choose()


# ----------------------------------------------------------------------------------------
# The thread and instruction-set controls of the build in use, as plain Python functions
# (so that their docstrings carry runnable examples); each calls the kernel module's own.


def openmp_enabled() -> bool:
    """Whether the kernels in use were compiled with OpenMP.

    Without OpenMP every kernel runs serially, on the calling thread; the results are the
    same bits either way.

    Returns
    -------
    bool
        ``True`` when the kernels were compiled with OpenMP.

    Examples
    --------
    >>> import optimisers as opt
    >>> isinstance(opt.openmp_enabled(), bool)
    True
    """
    return bool(kernels.openmp_enabled())


def max_threads() -> int:
    """The number of threads a kernel would use now (OpenMP's ``omp_get_max_threads()``).

    It follows ``OMP_NUM_THREADS`` and ``threadpoolctl.threadpool_limits`` (the kernels'
    OpenMP runtime is visible to threadpoolctl under ``user_api="openmp"``).  Arrays
    smaller than :func:`get_parallel_threshold` are updated on one thread whatever this
    says, and the results never depend on the number of threads.

    Returns
    -------
    int
        The number of OpenMP threads, at least 1 (1 for a build without OpenMP).

    Examples
    --------
    >>> import optimisers as opt
    >>> from threadpoolctl import threadpool_limits
    >>> opt.max_threads() >= 1
    True
    >>> with threadpool_limits(limits=1, user_api="openmp"):
    ...     opt.max_threads()
    1
    """
    return int(kernels.max_threads())


def get_parallel_threshold() -> int:
    """The element count from which one array's update is split over OpenMP threads.

    An array with fewer elements than this is updated whole on one thread (below it,
    starting threads costs more than it saves); many such small arrays are spread over the
    threads when together they reach the threshold.  Change it with
    :func:`set_parallel_threshold`.

    Returns
    -------
    int
        The threshold, in elements, ``>= 0``.

    Examples
    --------
    >>> import optimisers as opt
    >>> opt.get_parallel_threshold() >= 0
    True
    """
    return int(kernels.get_parallel_threshold())


def set_parallel_threshold(n: int) -> None:
    """Set the element count from which one array's update is split over OpenMP threads.

    The setting is global to the process and applies to every later step.  It changes only
    the speed, never the results: the parallel and serial paths give the same bits.  See
    :func:`get_parallel_threshold` for what it controls.

    Parameters
    ----------
    n : int
        The new threshold, in elements, ``>= 0``.

    Returns
    -------
    None

    Raises
    ------
    ValueError
        If ``n`` is negative.
    TypeError
        If ``n`` is not an integer.

    Examples
    --------
    >>> import optimisers as opt
    >>> old = opt.get_parallel_threshold()
    >>> opt.set_parallel_threshold(4096)
    >>> opt.get_parallel_threshold()
    4096
    >>> opt.set_parallel_threshold(old)          # restore the default
    >>> opt.get_parallel_threshold() == old
    True
    """
    kernels.set_parallel_threshold(n)


def kernel_isa() -> str:
    """The instruction set the kernels in use were compiled for.

    ``"avx512"`` or ``"avx2"`` on an x86-64 processor that runs it (unless
    ``OPTIMISERS_ISA`` set in the environment before import names a narrower one),
    ``"baseline"`` otherwise.  Every build gives the same bits.

    Returns
    -------
    str
        ``"baseline"``, ``"avx2"`` or ``"avx512"``.

    Examples
    --------
    >>> import optimisers as opt
    >>> opt.kernel_isa() in ("baseline", "avx2", "avx512")
    True
    """
    return str(kernels.isa())
