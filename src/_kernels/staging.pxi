# Low-precision parameters (float16, bfloat16): the float32 program, staged tile by tile.
#
# Every tile function stays float32/float64.  For a parameter stored in 16 bits the driver
# converts the tile of x, of the gradient (when it is 16-bit too) and of any state buffer
# kept in 16 bits into float32 buffers, runs the float32 stages on them (x's buffer is the
# SUBTRACT target), then rounds x and those state buffers back once, in place: float32
# arithmetic, one rounding on store, as tests/reference.py defines it.  State buffers held
# in float32 (the default for such parameters) are used where they are, at their offset.
#
# The conversions are plain C with integer operations and selects: exact, and vectorised
# by the compiler in every build.  Where the build has F16C (the AVX2 and AVX-512 builds)
# float16 takes vcvtph2ps/vcvtps2ph instead, the same bits: with the selects a float16
# Adam step on 1e6 elements took 1.68x the float32 time, with the instructions 1.32x
# (both on tiles of 1024 elements, before STAGED_TILE; bench/RESULTS.md section 9).

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>

    static inline uint32_t optimisers_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
    static inline float optimisers_float(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

    /* float16 -> float32, exact: rebias the exponent; infinities and NaNs get the all-ones
       exponent; subnormals are renormalised by one exact float subtraction (F. Giesen). */
    static inline float optimisers_f16_to_f32(uint16_t h) {
        uint32_t o = ((uint32_t) (h & 0x7fffu)) << 13;
        uint32_t exp = o & 0x0f800000u;
        uint32_t normal = o + 0x38000000u;
        uint32_t special = normal + 0x38000000u;
        uint32_t sub = optimisers_bits(optimisers_float(normal + 0x00800000u)
                                       - optimisers_float(0x38800000u));
        o = exp == 0x0f800000u ? special : (exp == 0 ? sub : normal);
        return optimisers_float(o | ((uint32_t) (h & 0x8000u) << 16));
    }

    /* float32 -> float16, rounded to nearest even (overflow to infinity, gradual underflow:
       the subnormal result is rounded by adding 0.5 in float arithmetic); a NaN stays a NaN,
       quieted, its top payload bits kept (as vcvtps2ph does). */
    static inline uint16_t optimisers_f32_to_f16(float f) {
        uint32_t u = optimisers_bits(f);
        uint32_t sign = (u >> 16) & 0x8000u;
        uint32_t a = u & 0x7fffffffu;
        uint32_t big = a > 0x7f800000u ? (0x7e00u | ((a >> 13) & 0x3ffu)) : 0x7c00u;
        uint32_t sub = optimisers_bits(optimisers_float(a) + optimisers_float(0x3f000000u))
                       - 0x3f000000u;
        uint32_t normal = (a + 0xc8000fffu + ((a >> 13) & 1u)) >> 13;
        uint32_t r = a >= 0x47800000u ? big : (a < 0x38800000u ? sub : normal);
        return (uint16_t) (r | sign);
    }

    /* bfloat16 is the upper half of a float32: exact one way, rounded to nearest even the
       other; a NaN becomes the quiet NaN of its sign (as ml_dtypes' cast does). */
    static inline float optimisers_bf16_to_f32(uint16_t h) {
        return optimisers_float((uint32_t) h << 16);
    }

    static inline uint16_t optimisers_f32_to_bf16(float f) {
        uint32_t u = optimisers_bits(f);
        uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
        return (uint16_t) ((u & 0x7fffffffu) > 0x7f800000u ? (((u >> 16) & 0x8000u) | 0x7fc0u)
                                                            : r);
    }

    #if defined(__F16C__) || defined(__AVX512F__)
    #include <immintrin.h>
    #endif

    static void optimisers_load_f16(const uint16_t* restrict src, float* restrict dst,
                                    Py_ssize_t n) {
        Py_ssize_t i = 0;
    #if defined(__AVX512F__)
        for (; i + 16 <= n; i += 16)
            _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(
                _mm256_loadu_si256((const __m256i*) (src + i))));
    #elif defined(__F16C__)
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(
                _mm_loadu_si128((const __m128i*) (src + i))));
    #endif
        for (; i < n; i++) dst[i] = optimisers_f16_to_f32(src[i]);
    }
    static void optimisers_store_f16(const float* restrict src, uint16_t* restrict dst,
                                     Py_ssize_t n) {
        Py_ssize_t i = 0;
    #if defined(__AVX512F__)
        for (; i + 16 <= n; i += 16)
            _mm256_storeu_si256((__m256i*) (dst + i), _mm512_cvtps_ph(
                _mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    #elif defined(__F16C__)
        for (; i + 8 <= n; i += 8)
            _mm_storeu_si128((__m128i*) (dst + i), _mm256_cvtps_ph(
                _mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    #endif
        for (; i < n; i++) dst[i] = optimisers_f32_to_f16(src[i]);
    }
    static void optimisers_load_bf16(const uint16_t* restrict src, float* restrict dst,
                                     Py_ssize_t n) {
        for (Py_ssize_t i = 0; i < n; i++) dst[i] = optimisers_bf16_to_f32(src[i]);
    }
    static void optimisers_store_bf16(const float* restrict src, uint16_t* restrict dst,
                                      Py_ssize_t n) {
        for (Py_ssize_t i = 0; i < n; i++) dst[i] = optimisers_f32_to_bf16(src[i]);
    }
    """
    ctypedef unsigned short uint16_t
    void optimisers_load_f16(const uint16_t* src, float* dst, Py_ssize_t n) noexcept nogil
    void optimisers_store_f16(const float* src, uint16_t* dst, Py_ssize_t n) noexcept nogil
    void optimisers_load_bf16(const uint16_t* src, float* dst, Py_ssize_t n) noexcept nogil
    void optimisers_store_bf16(const float* src, uint16_t* dst, Py_ssize_t n) noexcept nogil


cdef inline void _load(int fmt, const void* src, Py_ssize_t off, float* dst,
                       Py_ssize_t n) noexcept nogil:
    """``dst[0:n]`` = the 16-bit values ``src[off:off+n]``, exactly, as float32."""
    if fmt == F16:
        optimisers_load_f16((<const uint16_t*> src) + off, dst, n)
    else:
        optimisers_load_bf16((<const uint16_t*> src) + off, dst, n)


cdef inline void _store(int fmt, const float* src, void* dst, Py_ssize_t off,
                        Py_ssize_t n) noexcept nogil:
    """The 16-bit ``dst[off:off+n]`` = ``src[0:n]``, each rounded once."""
    if fmt == F16:
        optimisers_store_f16(src, (<uint16_t*> dst) + off, n)
    else:
        optimisers_store_bf16(src, (<uint16_t*> dst) + off, n)


cdef enum:
    # Elements per staged tile.  Short: the conversions and the stage's loop take turns
    # over the streams, and with tiles of 1024 elements an Adam step on 1e8 float16
    # elements took 1.23x the float32 time, with 64 it takes 0.90 - 0.95x (1e6: 1.32x,
    # 1.03x); 32 is slower again (bench/RESULTS.md section 9).
    STAGED_TILE = 64
    # float32 buffers of STAGED_TILE elements a staged tile needs: x, the gradient, the
    # tile buffer between stages, and one per state buffer a stage may keep in 16 bits (the
    # stages run one after another within a tile, so they share these)
    STAGED_BUFFERS = 3 + MAX_BUF


cdef void _run_staged_tile(const Stage* stages, int n_stages, Py_ssize_t t, Py_ssize_t n,
                           Py_ssize_t length, void* x, int fmt, const void* g, int gfmt,
                           float* dst, int mode, float* work) noexcept nogil:
    """One tile of a low-precision program (``_run_tile`` for a 16-bit x): ``work`` holds
    ``STAGED_BUFFERS`` float32 buffers of ``STAGED_TILE`` elements."""
    cdef Py_ssize_t off = t * length
    cdef Py_ssize_t m = n - off if n - off < length else length
    cdef float* xs = work
    cdef float* tile = work + 2 * STAGED_TILE
    cdef const float* src
    cdef float* out
    cdef bint subtract
    cdef int k, j, end = _step_end(stages, n_stages)
    cdef Stage staged
    _load(fmt, x, off, xs, m)
    if gfmt == NATIVE:
        src = (<const float*> g) + off
    else:
        _load(gfmt, g, off, work + STAGED_TILE, m)
        src = work + STAGED_TILE
    for k in range(n_stages):
        if stages[k].kind == FOLDED:
            continue                        # its scale is the next stage's input scale
        subtract = False
        out = tile
        if k >= end:                        # AFTER_STEP: sees where the step went
            subtract = mode == SUBTRACT
            out = xs if subtract else dst + off
            src = out
        elif k == end - 1:
            if mode == SUBTRACT:
                out = xs
                subtract = True
            elif mode == STORE:
                out = dst + off
        if stages[k].low_bufs == 0:
            _run_stage(&stages[k], off, m, xs, src, out, subtract)
        else:
            # the stage's 16-bit buffers, staged: its tile function reads them at offset 0
            staged = stages[k]
            for j in range(MAX_BUF):
                if (staged.low_bufs >> j) & 1:
                    staged.buf[j] = work + (3 + j) * STAGED_TILE
                    _load(fmt, stages[k].buf[j], off, <float*> staged.buf[j], m)
            _run_stage(&staged, 0, m, xs, src, out, subtract)
            for j in range(MAX_BUF):
                if (staged.low_bufs >> j) & 1:
                    _store(fmt, <const float*> staged.buf[j], stages[k].buf[j], off, m)
        src = tile
    if mode == SUBTRACT:
        _store(fmt, xs, x, off, m)


cdef void _run_prepared_low(Stage* stages, int n_stages, Py_ssize_t n, void* x, int fmt,
                            const void* g, int gfmt, float* dst, int mode,
                            int n_threads) noexcept nogil:
    """``_run_prepared`` for a parameter of 16-bit format ``fmt`` (F16 or BF16), its
    gradient of format ``gfmt`` (``fmt``, or NATIVE: float32) and ``dst`` (mode STORE)
    float32.  Real parameters only: ``n`` counts elements."""
    cdef Py_ssize_t n_tiles = (n + STAGED_TILE - 1) // STAGED_TILE, t
    cdef float local_work[STAGED_BUFFERS * STAGED_TILE]
    cdef float* work
    if n_threads <= 1 or n < _parallel_threshold or n_tiles < 2:
        for t in range(n_tiles):
            _run_staged_tile(stages, n_stages, t, n, STAGED_TILE, x, fmt, g, gfmt, dst, mode,
                             local_work)
    else:
        with parallel(num_threads=n_threads):
            # one set of staging buffers per thread, for the whole call (under 2 kB)
            work = <float*> malloc(STAGED_BUFFERS * STAGED_TILE * sizeof(float))
            if work != NULL:
                for t in prange(n_tiles, schedule="static"):
                    _run_staged_tile(stages, n_stages, t, n, STAGED_TILE, x, fmt, g, gfmt,
                                     dst, mode, work)
                free(work)
    _run_after_hooks(stages, n_stages)
