/* The plain pass of plain_pass.h, compiled once per instruction set: PLAIN_ISA (baseline,
   avx2 or avx512) names the entry point plain_pass_run_<PLAIN_ISA>. */
#include <math.h>
#include "plain_pass.h"

#define PLAIN_CAT2(a, b) a##b
#define PLAIN_CAT(a, b) PLAIN_CAT2(a, b)

/* The kernels' element helpers, with the same operations: sqrt of the dtype, and the sign
   as a select (numpy's: sign(+-0) = +0, NaN propagates) so that the loop vectorises. */
#define PLAIN_SIGN(T, z) ((z) != (z) ? (z) : (T)((z) > 0) - (T)((z) < 0))

#define PLAIN_LOOPS(T, SQRT)                                                             \
static void plain_adam_##T(T* x, const T* g, T* m, T* v, ptrdiff_t n, const double* h,  \
                           int n_threads)                                                \
{                                                                                        \
    const T b1 = (T)h[0], b2 = (T)h[1], omb1 = (T)h[2], omb2 = (T)h[3];                 \
    const T bc1 = (T)h[4], bc2 = (T)h[5], eps = (T)h[6], eta = (T)h[7], lam = (T)h[8];  \
    ptrdiff_t i;                                                                         \
    _Pragma("omp parallel for schedule(static) num_threads(n_threads)")                  \
    for (i = 0; i < n; i++) {                                                            \
        T gi = g[i];                                                                     \
        T mi = b1 * m[i] + omb1 * gi;                                                    \
        T vi = b2 * v[i] + omb2 * (gi * gi);                                             \
        m[i] = mi;                                                                       \
        v[i] = vi;                                                                       \
        if (lam == 0)                                                                    \
            x[i] = x[i] - ((mi / bc1) / (SQRT(vi / bc2) + eps)) * eta;                   \
        else                                                                             \
            x[i] = x[i] - eta * ((mi / bc1) / (SQRT(vi / bc2) + eps) + lam * x[i]);      \
    }                                                                                    \
}                                                                                        \
                                                                                         \
static void plain_momentum_##T(T* x, const T* g, T* v, ptrdiff_t n, const double* h,    \
                               int n_threads)                                            \
{                                                                                        \
    const T eta = (T)h[0], rho = (T)h[1];                                                \
    ptrdiff_t i;                                                                         \
    _Pragma("omp parallel for schedule(static) num_threads(n_threads)")                  \
    for (i = 0; i < n; i++) {                                                            \
        T vi = rho * v[i] + eta * g[i];                                                  \
        v[i] = vi;                                                                       \
        x[i] = x[i] - vi;                                                                \
    }                                                                                    \
}                                                                                        \
                                                                                         \
static void plain_lion_##T(T* x, const T* g, T* m, ptrdiff_t n, const double* h,        \
                           int n_threads)                                                \
{                                                                                        \
    const T b1 = (T)h[0], b2 = (T)h[1], omb1 = (T)h[2], omb2 = (T)h[3], eta = (T)h[4];  \
    ptrdiff_t i;                                                                         \
    _Pragma("omp parallel for schedule(static) num_threads(n_threads)")                  \
    for (i = 0; i < n; i++) {                                                            \
        T mi = m[i];                                                                     \
        T gi = g[i];                                                                     \
        T s = b1 * mi + omb1 * gi;                                                       \
        m[i] = b2 * mi + omb2 * gi;                                                      \
        x[i] = x[i] - eta * PLAIN_SIGN(T, s);                                            \
    }                                                                                    \
}                                                                                        \
                                                                                         \
static void plain_run_##T(int rule, void* x, const void* g, void* const* b, ptrdiff_t n, \
                          const double* h, int n_threads)                                \
{                                                                                        \
    if (rule == PLAIN_MOMENTUM)                                                          \
        plain_momentum_##T(x, g, b[0], n, h, n_threads);                                 \
    else if (rule == PLAIN_LION)                                                         \
        plain_lion_##T(x, g, b[0], n, h, n_threads);                                     \
    else                                                                                 \
        plain_adam_##T(x, g, b[0], b[1], n, h, n_threads);                               \
}

PLAIN_LOOPS(float, sqrtf)
PLAIN_LOOPS(double, sqrt)

void PLAIN_CAT(plain_pass_run_, PLAIN_ISA)(int rule, int f64, void* x, const void* g,
                                          void* const* b, ptrdiff_t n, const double* h,
                                          int n_threads)
{
    if (f64)
        plain_run_double(rule, x, g, b, n, h, n_threads);
    else
        plain_run_float(rule, x, g, b, n, h, n_threads);
}
