"""Quotients by the bias corrections without the divider (src/_kernels/quotients.pxi).

The AVX-512 build divides Adam's float64 moments by 1 - beta^t through a reciprocal and two
FMA corrections, and sends values outside the range where that is proven exact to the
divider, a chunk of a tile at a time.  These tests check the quotients bit for bit against
numpy's a / b, the range check exactly, and whole steps whose tiles take the divider against
the reference, on short tiles and on the chunks of long ones.  The same helpers of the other
builds run the division itself and send nothing to the divider: they are checked too, so
that a machine without AVX-512 tests that path and says which tests it skips.
"""

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import optimisers as opt
from assertions import assert_arrays_same, assert_state_same, bits_equal
from builds import BUILDS, ISAS, WIDER_ISAS, build_or_skip, runs_here
from optimisers import _engine, _native, _program
from reference import ref_apply, ref_init, ref_update

FAST = [isa for isa in BUILDS if BUILDS[isa].fast_quotients()]
NO_FAST = (
    f"no build with fast float64 quotients (the AVX-512 build's) runs here: this "
    f"machine runs {runs_here()}, which divide"
)

# quotients.pxi's range for float64: 2^(emin + p + 4) and 2^(emax - 2)
LOW, HIGH = 2.0**-965, 2.0**1021


def test_fast_quotients_are_where_they_pay():
    assert not BUILDS["baseline"].fast_quotients()
    if "avx2" in BUILDS:
        assert not BUILDS["avx2"].fast_quotients()
    if "avx512" in BUILDS:
        assert BUILDS["avx512"].fast_quotients()


def _sent_to_divider(kernels, a, b):
    """Which quotients a / b build ``kernels`` must send to the divider: with the fast path,
    those outside the range where it is proven exact (every one but NaN for b outside
    (0, 1], zeros too); without it none, as every quotient is the division itself."""
    if not kernels.fast_quotients():
        return np.zeros(a.shape, bool)
    if not (0 < b <= 1 and 1 / b <= HIGH):
        return ~np.isnan(a)
    return ((np.abs(a) < LOW) & (a != 0)) | (np.abs(a) > b * HIGH)


def _divisors():
    bias = [1 - beta**t for beta in (0.9, 0.999, 0.99999) for t in (1, 2, 7, 1000)]
    return bias + [1.0, 0.5, 0.75, 2.0**-20, 1e-300, 1 - 2.0**-53]


def _dividends(rng):
    """Random bit patterns over every exponent, both signs, the edges of the range, and
    every significand (to 20 bits) in [1, 2).  Returns the values and a mask of the last
    block, which no divisor in (0, 1] may send to the divider."""
    random = rng.integers(0, 2**64 - 1, 400_000, dtype=np.uint64, endpoint=True)
    fi = np.finfo(np.float64)
    edges = np.array(
        [
            0.0,
            fi.smallest_subnormal,
            fi.tiny,
            LOW,
            HIGH,
            fi.max,
            np.inf,
            np.nan,
            1.0,
            3.0,
            1 - fi.epsneg,
            1 + fi.eps,
        ]
    )
    with np.errstate(over="ignore"):  # nextafter(max, inf) is inf, as wanted
        edges = np.concatenate([edges, np.nextafter(edges, 0), np.nextafter(edges, np.inf)])
    # significands in [1, 2): the quotient's rounding is decided there
    sig = np.arange(1 << 20, dtype=np.uint64) << np.uint64(32) | np.float64(1.0).view(np.uint64)
    a = np.concatenate([random.view(np.float64), edges, -edges, sig.view(np.float64)])
    ordinary = np.zeros(a.size, bool)
    ordinary[-sig.size :] = True
    return a, ordinary


@pytest.mark.parametrize("isa", ISAS)
def test_quotients_are_correctly_rounded_where_taken(isa):
    kernels = build_or_skip(isa)
    a, ordinary = _dividends(np.random.default_rng(11))
    for b in _divisors():
        q, needs = kernels._quotients_by_reciprocal(a, b)
        with np.errstate(all="ignore"):
            exact = a / b
        # the range check is exactly the one the proof needs (none without the fast path)
        np.testing.assert_array_equal(needs, _sent_to_divider(kernels, a, b), err_msg=f"b={b}")
        same = bits_equal(q, exact)
        assert same[~needs].all(), (
            f"b={b}: {np.count_nonzero(~same & ~needs)} quotients differ from a/b, "
            f"e.g. a={a[~same & ~needs][:3]}"
        )
        assert not needs[ordinary].any(), f"b={b}: ordinary values sent to the divider"


def test_the_values_sent_to_the_divider_need_it():
    """Without the range check some quotients would be wrong: subnormal-range dividends
    round differently, and infinities turn into NaN."""
    if not FAST:
        pytest.skip(NO_FAST)
    kernels = BUILDS[FAST[-1]]
    rng = np.random.default_rng(5)
    a = np.append(rng.uniform(1, 2**20, 200_000) * np.finfo(np.float64).smallest_subnormal, np.inf)
    q, needs = kernels._quotients_by_reciprocal(a, 1 - 0.999)
    assert needs.all()
    assert not bits_equal(q, a / (1 - 0.999)).all()
    assert np.isnan(q[-1])


@pytest.mark.parametrize("isa", ISAS)
def test_a_divisor_outside_zero_one_sends_everything_to_the_divider(isa):
    kernels = build_or_skip(isa)
    a = np.array([0.0, -0.0, 1.0, -3.5, 1e-30, np.nan])
    for b in (1.5, -0.5, 0.0, float(np.finfo(np.float64).smallest_subnormal), np.nan, np.inf):
        q, needs = kernels._quotients_by_reciprocal(a, b)
        np.testing.assert_array_equal(needs, _sent_to_divider(kernels, a, b), err_msg=f"b={b}")
        # and where the fast path is taken it gives a / b (signed zeros included)
        fast = ~needs
        with np.errstate(all="ignore"):
            want = a / b
        np.testing.assert_array_equal(q[fast], want[fast], err_msg=f"b={b}")
        np.testing.assert_array_equal(np.signbit(q[fast]), np.signbit(want[fast]), err_msg=f"b={b}")


# ---------------------------------------------------------------------------------------
# Whole steps with tiles that take the divider: values the fast path would get wrong sit
# in some tiles, among ordinary ones (whole tiles of a one-loop program: two of a chain's).

RULES = [
    opt.Adam(0.01),
    opt.AdamW(0.01, lambda_=0.1),
    opt.AdamW(0.01, lambda_=0.1, couple=False),
    opt.RAdam(0.01),
    opt.NAdam(0.01),
    opt.AdaBelief(0.01),
    opt.OptimiserChain(opt.WeightDecay(0.1), opt.Adam(0.01)),
    opt.OptimiserChain(opt.WeightDecay(0.1), opt.NAdam(0.01)),
    opt.OptimiserChain(opt.ClipNorm(10.0, throw=False), opt.AdamW(0.01, lambda_=0.1)),
]


def _gradient(rng, n, dtype, step, spots=None):
    """Ordinary gradients but for three spans of a tile's length (or ``spots``: ``(width,
    (start, start, start))``): subnormals, huge values and -0, infinities and NaN."""
    fi = np.finfo(dtype)
    if spots is None:
        t = _native.kernels.tile_length(np.dtype(dtype).itemsize)
        spots = (t, (t, 3 * t, 5 * t))
    t, (a, b, c) = spots
    g = rng.standard_normal(n).astype(dtype)
    g[rng.integers(0, n, n // 10)] = 0
    # tile 1: subnormal gradients (the moments end up in the subnormal range)
    g[a : a + t] = (rng.standard_normal(t) * fi.smallest_subnormal * 64).astype(dtype)
    # tile 3: a few huge ones (g*g overflows: v = inf with m finite), and -0
    g[b + rng.integers(0, t, 3)] = np.sqrt(fi.max) * dtype(4)
    g[b + rng.integers(0, t, 5)] = dtype(-0.0)
    # tile 5, from step 2: an infinity and a NaN
    if step >= 2:
        g[c + rng.integers(0, t, 2)] = [np.inf, -np.inf]
        g[c + rng.integers(0, t, 1)] = np.nan
    return g


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rule", RULES, ids=lambda r: repr(r)[:48])
def test_steps_whose_tiles_take_the_divider_match_the_reference(
    rule, dtype, n_threads, small_parallel_threshold
):
    rng = np.random.default_rng(3)
    n = 9000
    x = rng.standard_normal(n).astype(dtype)
    x[rng.integers(0, n, 50)] = dtype(-0.0)
    ref_x, ref_s = x.copy(), ref_init(rule, x)
    state = opt.setup(rule, x)
    for step in range(7):  # RAdam is rectified from its fifth step
        g = _gradient(rng, n, dtype, step)
        state, x = opt.update_(state, x, g)
        ref_s, ref_x = ref_update(rule, ref_s, ref_x, g)
        assert_arrays_same(x, ref_x, f"step {step}: parameter")
        assert_state_same(state.state, ref_s, f"step {step}: state")
    # the functional form: d stored, x untouched
    g = _gradient(rng, n, dtype, 9)
    st, d = opt.apply_(rule, state.state, x, g)
    ref_st, ref_d = ref_apply(rule, ref_s, ref_x, g)
    assert_arrays_same(d, ref_d, "apply_: d")
    assert_state_same(st, ref_st, "apply_: state")


# Long tiles (64 kB, from 16 of them a thread on) are stepped in chunks of TILE elements
# (the float32 short tile's length), and only a chunk that needs the divider is redone: the
# spans sit in the second chunk of a long tile, in the last chunk of another, and in the
# partial tile at the end.


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rule", RULES[:6], ids=lambda r: repr(r)[:48])
def test_long_tiles_whose_chunks_take_the_divider_match_the_reference(rule, dtype, n_threads):
    rng = np.random.default_rng(5)
    long, per_thread = _native.kernels.long_tiles(np.dtype(dtype).itemsize)
    chunk = _native.kernels.tile_length(4)
    n = 2 * per_thread * long + 3001
    spots = (chunk, (2 * long + chunk, 4 * long - chunk, n - 2000))
    x = rng.standard_normal(n).astype(dtype)
    ref_x, ref_s = x.copy(), ref_init(rule, x)
    state = opt.setup(rule, x)
    for step in range(6):  # RAdam is rectified from its fifth step
        g = _gradient(rng, n, dtype, step, spots)
        state, x = opt.update_(state, x, g)
        ref_s, ref_x = ref_update(rule, ref_s, ref_x, g)
        assert_arrays_same(x, ref_x, f"step {step}: parameter")
        assert_state_same(state.state, ref_s, f"step {step}: state")
    g = _gradient(rng, n, dtype, 9, spots)
    st, d = opt.apply_(rule, state.state, x, g)
    ref_st, ref_d = ref_apply(rule, ref_s, ref_x, g)
    assert_arrays_same(d, ref_d, "apply_: d")
    assert_state_same(st, ref_st, "apply_: state")


@pytest.mark.parametrize("isa", WIDER_ISAS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_build_gives_the_same_bits_on_tiles_that_take_the_divider(dtype, isa, monkeypatch):
    wider = build_or_skip(isa)
    results = []
    for build, kernels in (("baseline", BUILDS["baseline"]), (isa, wider)):
        monkeypatch.setattr(_program, "_kernels", kernels)
        monkeypatch.setattr(_engine, "_kernels", kernels)
        rng = np.random.default_rng(8)
        x = rng.standard_normal(7000).astype(dtype)
        state = opt.setup(opt.AdamW(0.01, lambda_=0.1), x)
        with threadpool_limits(limits=1, user_api="openmp"):
            for step in range(4):
                state, x = opt.update_(state, x, _gradient(rng, x.size, dtype, step))
        results.append((build, x, state))
    _, x0, s0 = results[0]
    for isa, x1, s1 in results[1:]:
        assert_arrays_same(x1, x0, f"{isa} against baseline: parameter")
        assert_state_same(s1.state, s0.state, f"{isa} against baseline: state")
