/* The benchmark's yardstick: a rule's step written the plainest way.

   The target is "at least 95% of a plain fused C pass of the same arithmetic".
   plain_pass.c is that pass for a few rules: one OpenMP loop over the whole array, the
   same operations in the same order as the kernels' tile functions, no tiles, no stages,
   no prologue.  The library never uses it.

   It is compiled once per kernel build, with that build's flags (src/meson.build), into
   plain_pass_run_<isa>; _probe.pyx links them all and calls the one named like the kernel
   build in use, so that the bench compares two loops of the same instruction set. */
#ifndef OPTIMISERS_PLAIN_PASS_H
#define OPTIMISERS_PLAIN_PASS_H

#include <stddef.h>
#include <string.h>

enum { PLAIN_ADAM = 0, PLAIN_MOMENTUM = 1, PLAIN_LION = 2 };
#define PLAIN_MAX_HP 9     /* Adam's slots with AdamW's lambda, the most a pass reads */
#define PLAIN_MAX_BUF 2

/* One step of `rule` over n elements of float (f64 == 0) or double; b the state buffers,
   h the hyper-parameter slots (see plain_pass in _probe.pyx). */
typedef void (*plain_pass_fn)(int rule, int f64, void* x, const void* g, void* const* b,
                              ptrdiff_t n, const double* h, int n_threads);

void plain_pass_run_baseline(int, int, void*, const void*, void* const*, ptrdiff_t,
                             const double*, int);
void plain_pass_run_avx2(int, int, void*, const void*, void* const*, ptrdiff_t,
                         const double*, int);
void plain_pass_run_avx512(int, int, void*, const void*, void* const*, ptrdiff_t,
                           const double*, int);

/* The build named `isa`, or NULL where it was not compiled (PLAIN_PASS_HAS_<ISA> come
   from src/meson.build). */
static inline plain_pass_fn plain_pass_build(const char* isa)
{
    if (strcmp(isa, "baseline") == 0)
        return plain_pass_run_baseline;
#ifdef PLAIN_PASS_HAS_AVX2
    if (strcmp(isa, "avx2") == 0)
        return plain_pass_run_avx2;
#endif
#ifdef PLAIN_PASS_HAS_AVX512
    if (strcmp(isa, "avx512") == 0)
        return plain_pass_run_avx512;
#endif
    return NULL;
}

#endif
