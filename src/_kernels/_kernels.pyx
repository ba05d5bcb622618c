"""Fused, typed, OpenMP kernels of every optimisation rule (private).

Design
------
Every update of one parameter array is a *program*: a short list of stages, one per
element-wise rule of an ``OptimiserChain`` (a lone rule is a chain of one).  The driver
walks the array tile by tile (a few kB of each stream) and, inside one tile, runs every
stage in order: stage 0 reads the gradient, each later stage reads the tile buffer the
previous one wrote, and the last stage fuses ``x -= d`` (or stores ``d`` into a
destination array, for the functional ``apply_``).  So a chain costs one pass over
memory, and no buffer is ever allocated per step.  Tiles are distributed over OpenMP
threads (``prange``, static schedule) when the array is larger than the parallel
threshold; every stage is element-wise, so the result does not depend on the thread count.

A *kind* is one rule's arithmetic: its tile functions (float32 and float64, and the pair
forms for complex parameters), its hyper-parameter struct (named fields, given by the rule
class in float64 and rounded once to the dtype inside the tile), its per-step hooks (before
the tiles: bias corrections, a leading ClipNorm's norm, AccumGrad's "due?"; after them:
advance the running products and counters) and its flags.  Each family file registers its
kinds in the table ``KINDS`` (common.pxi); the driver, the checks and the Python side read
everything about a kind from there.  Kernels are compiled without fast-math and without FP
contraction, so they give the same bits as a numpy reference written with the same
operation order.

Files, in the order they are included:

* ``common.pxi``: the stage, the kind table and ``register_kind``, element helpers;
* ``quotients.pxi``: exact quotients by the per-step bias corrections without the divider;
* ``norms.pxi``: p-norms with a reduction order fixed by the data (ClipNorm);
* ``rules_sgd.pxi``, ``rules_adam.pxi``, ``rules_adaptive.pxi``, ``rules_transform.pxi``,
  ``rules_averaged.pxi``: the families, each kind's real and pair tile functions side by
  side, and their registration;
* ``rules_torchlike.pxi``: PyTorch's own forms of Adamax, RAdam and NAdam (torch.optim's
  algorithms, beside the seed's forms in ``rules_adam.pxi``);
* ``rules_muon.pxi``: Muon's element-wise stages around its matrix products;
* ``rules_factored.pxi``, ``rules_lamb.pxi``: Adafactor and LAMB, whose step needs
  whole-array reductions first (row and column sums, the update's norm, the trust ratio),
  and their kinds;
* ``driver.pxi``: tiles, folding of a leading scale, one leaf's prepared program;
* ``staging.pxi``: the same for a parameter stored in 16 bits (float16, bfloat16): each tile
  converted to float32 buffers, run by the float32 tile functions, rounded back once;
* ``entry.pxi``: the Python entry points (``run_program``, build controls, the kind table);
* ``leafcache.pxi``: what a batch found in a leaf's state, reused while it holds;
* ``templates.pxi``: the templates of a batch's entries in one pass, however they interleave;
* ``batch.pxi``: many leaves checked, prepared and run in two calls (``Batch``);
* ``replay.pxi``: a batch prepared once and run at every step with new gradients
  (``Replay``: optimisers.torch's planned step).

A parameter stored in 16 bits (float16, or bfloat16 where ml_dtypes defines it) runs the
float32 program: the driver stages each tile of x, of a 16-bit gradient and of any state
buffer kept in 16 bits into float32 stack buffers, runs the float32 tile functions on them
with x's buffer as the SUBTRACT target, and rounds x and those buffers back once (the
state of such a parameter is float32 by default, used in place).

Complex parameters run on the real views of their arrays (``x.view(R)``: element k is the
components 2k and 2k+1).  A component-wise kind runs unchanged on those views (width 1); a
kind with pair forms keeps REAL second moments holding ``re*re + im*im`` and runs its pair
tile functions (width 2).  Tiles have an even length and start at even offsets, so no tile
splits a pair.
"""

cimport numpy as cnp
from cython cimport floating
from cython.parallel cimport prange, parallel
from libc.stdlib cimport malloc, free
from libc.math cimport sqrt, sqrtf, fabs, fabsf, pow, hypot, INFINITY
from libc.string cimport memcmp

cnp.import_array()

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define OPTIMISERS_OPENMP 1
    #else
    #define OPTIMISERS_OPENMP 0
    static int omp_get_max_threads(void) { return 1; }
    static int omp_get_thread_num(void) { return 0; }
    #endif
    """
    bint OPTIMISERS_OPENMP
    int omp_get_max_threads() noexcept nogil
    int omp_get_thread_num() noexcept nogil


cdef extern from *:
    """
    #include <string.h>
    #if defined(__AVX512F__)
    #define OPTIMISERS_ISA "avx512"
    #elif defined(__AVX2__)
    #define OPTIMISERS_ISA "avx2"
    #else
    #define OPTIMISERS_ISA "baseline"
    #endif
    /* Whether this processor and its operating system run the build named `isa` (the
       flags of each build are in src/meson.build). */
    static int optimisers_cpu_runs(const char* isa) {
        if (strcmp(isa, "baseline") == 0)
            return 1;
    #if defined(__GNUC__) && defined(__x86_64__)
        __builtin_cpu_init();
        int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
        if (strcmp(isa, "avx2") == 0)
            return avx2;
        if (strcmp(isa, "avx512") == 0)
            return avx2 && __builtin_cpu_supports("fma") && __builtin_cpu_supports("avx512f")
                   && __builtin_cpu_supports("avx512dq")
                   && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw");
    #endif
        return 0;
    }
    """
    const char* OPTIMISERS_ISA
    int optimisers_cpu_runs(const char* isa) noexcept nogil


include "common.pxi"
include "quotients.pxi"
include "norms.pxi"
include "rules_sgd.pxi"
include "rules_adam.pxi"
include "rules_torchlike.pxi"
include "rules_adaptive.pxi"
include "rules_transform.pxi"
include "rules_muon.pxi"
include "rules_averaged.pxi"
include "rules_factored.pxi"
include "rules_lamb.pxi"
include "driver.pxi"
include "staging.pxi"
include "entry.pxi"
include "leafcache.pxi"
include "templates.pxi"
include "batch.pxi"
include "replay.pxi"


# Module-level names (plain ints) for the enums and every kind (ADAM, CLIPNORM, ...), as
# the Python side uses them.
for _enum in (Mode, NormKind, Status, Format):
    globals().update({_name: int(_value) for _name, _value in _enum.__members__.items()})
globals().update({_name.upper(): _entry[0] for _name, _entry in KIND_TABLE.items()})
del _enum
