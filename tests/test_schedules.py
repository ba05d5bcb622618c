"""optimisers.schedules: optax's values (from optax's formulas transcribed here, and from
optax itself when it is installed), value semantics, argument checks, and bounds."""

import dataclasses
import json
import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import optimisers
from optimisers import schedules

# ----------------------------------------------------------------------------------------
# optax's formulas (optax/schedules/_schedule.py and _join.py), transcribed in numpy float64
# over an array of counts without calling the library, in optax's order of operations.


def ref_constant(t, value):
    return np.full(t.shape, float(value))


def ref_polynomial(t, init_value, end_value, power, transition_steps, transition_begin=0):
    if transition_steps <= 0:
        return np.full(t.shape, float(init_value))
    done = np.clip(t - transition_begin, 0, transition_steps)
    return (init_value - end_value) * (1 - done / transition_steps) ** power + end_value


def ref_linear(t, init_value, end_value, transition_steps, transition_begin=0):
    return ref_polynomial(t, init_value, end_value, 1, transition_steps, transition_begin)


def ref_cosine_decay(t, init_value, decay_steps, alpha=0.0, exponent=1.0):
    half_cosine = 0.5 * (1 + np.cos(np.pi * np.minimum(t, decay_steps) / decay_steps))
    return init_value * ((1 - alpha) * half_cosine**exponent + alpha)


def ref_join(t, parts, boundaries):
    out = parts[0](t)
    for boundary, part in zip(boundaries, parts[1:]):
        out = np.where(t < boundary, out, part(t - boundary))
    return out


def ref_warmup_cosine_decay(
    t, init_value, peak_value, warmup_steps, decay_steps, end_value=0.0, exponent=1.0
):
    alpha = 0.0 if peak_value == 0.0 else end_value / peak_value
    return ref_join(
        t,
        [
            lambda u: ref_linear(u, init_value, peak_value, warmup_steps),
            lambda u: ref_cosine_decay(u, peak_value, decay_steps - warmup_steps, alpha, exponent),
        ],
        [warmup_steps],
    )


def ref_exponential_decay(
    t, init_value, transition_steps, decay_rate, transition_begin=0, staircase=False, end_value=None
):
    if transition_steps <= 0 or decay_rate == 0:
        return np.full(t.shape, float(init_value))
    elapsed = t - transition_begin
    p = elapsed / transition_steps
    if staircase:
        p = np.floor(p)
    with np.errstate(over="ignore"):
        value = np.where(elapsed <= 0, init_value, init_value * np.power(decay_rate, p))
    if end_value is not None:
        value = (np.maximum if decay_rate < 1 else np.minimum)(value, end_value)
    return value


def ref_piecewise_constant(t, init_value, boundaries_and_scales=None):
    value = np.full(t.shape, float(init_value))
    for boundary, scale in sorted((boundaries_and_scales or {}).items()):
        value = np.where(t >= boundary, scale * value, value)
    return value


def ref_cosine_onecycle(
    t, transition_steps, peak_value, pct_start=0.3, div_factor=25.0, final_div_factor=1e4
):
    scales = {
        int(pct_start * transition_steps): div_factor,
        transition_steps: 1.0 / (div_factor * final_div_factor),
    }
    knots = [0] + sorted(scales)
    levels = np.cumprod([peak_value / div_factor] + [scales[k] for k in sorted(scales)])
    out = np.where(t >= knots[-1], levels[-1], 0.0)
    for i in range(len(knots) - 1):
        inside = (knots[i] <= t) & (t < knots[i + 1])
        pct = (t - knots[i]) / max(knots[i + 1] - knots[i], 1)
        start, end = levels[i], levels[i + 1]
        out = np.where(inside, end + (start - end) / 2.0 * (np.cos(np.pi * pct) + 1), out)
    return out


# ----------------------------------------------------------------------------------------
# The cases: (name, arguments); a join's schedules are cases themselves.  They cover optax's
# edge cases: no transition, no warmup, a zero peak, clipping before transition_begin, the
# held exponential decays, scale 0, pct_start 0 and 1, a boundary at 0.

EXPONENTIAL = ("exponential_decay", dict(init_value=0.5, transition_steps=20, decay_rate=0.5))
CASES = [
    ("constant", dict(value=0.3)),
    ("constant", dict(value=-2)),
    ("linear", dict(init_value=1.0, end_value=0.01, transition_steps=100, transition_begin=5)),
    ("linear", dict(init_value=0.1, end_value=0.3, transition_steps=7)),
    ("linear", dict(init_value=0.1, end_value=0.3, transition_steps=0, transition_begin=3)),
    (
        "polynomial",
        dict(init_value=1.0, end_value=0.01, power=2.5, transition_steps=100, transition_begin=5),
    ),
    ("polynomial", dict(init_value=-1.0, end_value=2.0, power=0.5, transition_steps=13)),
    ("polynomial", dict(init_value=1.0, end_value=0.0, power=0.0, transition_steps=10)),
    ("polynomial", dict(init_value=1.0, end_value=0.0, power=3, transition_steps=0)),
    (
        "polynomial",
        dict(init_value=0.3, end_value=0.7, power=3, transition_steps=50, transition_begin=9),
    ),
    ("cosine_decay", dict(init_value=1e-3, decay_steps=2000)),
    ("cosine_decay", dict(init_value=2.0, decay_steps=777, alpha=0.1, exponent=2.0)),
    ("cosine_decay", dict(init_value=-1.0, decay_steps=1, alpha=1.5, exponent=0.0)),
    (
        "warmup_cosine_decay",
        dict(init_value=0.0, peak_value=3e-4, warmup_steps=500, decay_steps=2000, end_value=3e-5),
    ),
    (
        "warmup_cosine_decay",
        dict(init_value=1e-5, peak_value=3e-4, warmup_steps=0, decay_steps=1000),
    ),
    (
        "warmup_cosine_decay",
        dict(init_value=1e-5, peak_value=0.0, warmup_steps=10, decay_steps=200, end_value=1.0),
    ),
    (
        "warmup_cosine_decay",
        dict(
            init_value=0.5,
            peak_value=1.0,
            warmup_steps=3,
            decay_steps=4,
            end_value=0.25,
            exponent=3.0,
        ),
    ),
    EXPONENTIAL,
    (
        "exponential_decay",
        dict(init_value=1.0, transition_steps=10, decay_rate=0.9, transition_begin=5),
    ),
    (
        "exponential_decay",
        dict(
            init_value=1.0,
            transition_steps=10,
            decay_rate=0.9,
            transition_begin=5,
            staircase=True,
            end_value=0.5,
        ),
    ),
    ("exponential_decay", dict(init_value=1.0, transition_steps=3, decay_rate=1.1, end_value=2.0)),
    ("exponential_decay", dict(init_value=1.0, transition_steps=3, decay_rate=1.1, end_value=0.5)),
    (
        "exponential_decay",
        dict(init_value=3.0, transition_steps=7, decay_rate=0.5, transition_begin=4, end_value=4.0),
    ),
    ("exponential_decay", dict(init_value=1.0, transition_steps=0, decay_rate=0.5, end_value=3.0)),
    ("exponential_decay", dict(init_value=1.0, transition_steps=5, decay_rate=0.0, end_value=3.0)),
    ("exponential_decay", dict(init_value=-2.0, transition_steps=4, decay_rate=1.0)),
    ("exponential_decay", dict(init_value=1e-3, transition_steps=1, decay_rate=2.0)),
    (
        "piecewise_constant",
        dict(init_value=0.1, boundaries_and_scales={100: 0.1, 20: 3.0, 150: 0.0}),
    ),
    ("piecewise_constant", dict(init_value=0.1, boundaries_and_scales={0: 0.5, 1: 0.5})),
    ("piecewise_constant", dict(init_value=0.1, boundaries_and_scales=None)),
    ("cosine_onecycle", dict(transition_steps=1000, peak_value=0.1)),
    (
        "cosine_onecycle",
        dict(
            transition_steps=7, peak_value=0.1, pct_start=0.0, div_factor=3.0, final_div_factor=7.0
        ),
    ),
    (
        "cosine_onecycle",
        dict(
            transition_steps=7, peak_value=0.1, pct_start=1.0, div_factor=3.0, final_div_factor=7.0
        ),
    ),
    ("cosine_onecycle", dict(transition_steps=10, peak_value=0.1, pct_start=0.55)),
    ("cosine_onecycle", dict(transition_steps=1, peak_value=2.0)),
    (
        "join",
        dict(
            schedules=[
                ("constant", dict(value=1.0)),
                ("linear", dict(init_value=1.0, end_value=0.0, transition_steps=50)),
                EXPONENTIAL,
            ],
            boundaries=[10, 100],
        ),
    ),
    (
        "join",
        dict(
            schedules=[
                ("cosine_decay", dict(init_value=1.0, decay_steps=30)),
                ("cosine_onecycle", dict(transition_steps=40, peak_value=1.0)),
            ],
            boundaries=[0],
        ),
    ),
    ("join", dict(schedules=[("constant", dict(value=1.0))], boundaries=[])),
]
CASE_IDS = [f"{i}-{name}" for i, (name, _) in enumerate(CASES)]

# every boundary of the cases lies below 2100; then counts far out (2**40: the power of
# an exponential decay overflows)
COUNTS = np.concatenate([np.arange(2101), [5000, 10**6, 2**40]]).astype(np.int64)

OPTAX_NAMES = {
    "constant": "constant_schedule",
    "linear": "linear_schedule",
    "polynomial": "polynomial_schedule",
    "cosine_decay": "cosine_decay_schedule",
    "warmup_cosine_decay": "warmup_cosine_decay_schedule",
    "exponential_decay": "exponential_decay",
    "piecewise_constant": "piecewise_constant_schedule",
    "cosine_onecycle": "cosine_onecycle_schedule",
    "join": "join_schedules",
}


def build(case, make):
    """The case built by ``make(name, arguments)``, a join's members first."""
    name, args = case
    if name == "join":
        args = dict(args, schedules=[build(member, make) for member in args["schedules"]])
    return make(name, args)


def ours(case):
    return build(case, lambda name, args: getattr(schedules, name)(**args))


def reference(case):
    def make(name, args):
        if name == "join":
            return lambda t: ref_join(t, args["schedules"], args["boundaries"])
        return lambda t: globals()[f"ref_{name}"](t, **args)

    return build(case, make)


def values(schedule, counts=COUNTS):
    return np.array([schedule(int(c)) for c in counts])


def assert_matches(got, expected):
    """Equal to 1e-12 relative.  Plus a few ulps of the largest value: where optax's
    formula cancels (1 + cos(x) near x = pi, the end of a cosine decay) a last-bit
    difference between two cosine implementations is amplified relative to the small
    value it leaves (XLA's and libm's differ)."""
    assert got.dtype == expected.dtype == np.float64
    same = got == expected  # infinities included
    scale = np.max(np.abs(expected[np.isfinite(expected)]), initial=0.0)
    close = np.abs(got - expected) <= 1e-12 * np.abs(expected) + 8 * np.finfo(float).eps * scale
    bad = np.nonzero(~(same | close))[0]
    assert bad.size == 0, [(int(COUNTS[i]), got[i], expected[i]) for i in bad[:5]]


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_values_match_optax_formulas(case):
    with np.errstate(invalid="ignore"):  # inf - inf where both overflow
        assert_matches(values(ours(case)), reference(case)(COUNTS))


@pytest.fixture(scope="module")
def optax():
    optax = pytest.importorskip(
        "optax",
        reason="optax is not installed (pip install 'optimisers[peers]'): the "
        "comparison with optax itself is skipped; the formulas are still checked",
    )
    import jax

    jax.config.update("jax_enable_x64", True)  # float64 schedules, int64 counts
    return optax


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_values_match_optax(case, optax):
    import jax
    import jax.numpy as jnp

    theirs = build(case, lambda name, args: getattr(optax, OPTAX_NAMES[name])(**args))
    # vmap, not jit: under jax.jit (jax 0.10.2, CPU) polynomial_schedule with power 2.5
    # gives nan where the fraction left is 0, where eager jax and the formula give 0
    counts = jnp.asarray(COUNTS, dtype=jnp.int64)
    expected = np.asarray(jax.vmap(theirs)(counts), np.float64)
    with np.errstate(invalid="ignore"):
        assert_matches(values(ours(case)), expected)


# ----------------------------------------------------------------------------------------
# Values: equality, hash, repr, pickle, the fields a checkpoint stores.


def to_json(schedule):
    """A checkpoint's way: name and fields as JSON, without pickle."""

    def field(v):
        if isinstance(v, schedules.Schedule):
            return {
                "schedule": type(v).__name__,
                "fields": {k: field(x) for k, x in v.fields().items()},
            }
        if isinstance(v, dict):
            return {"pairs": [[k, field(x)] for k, x in v.items()]}
        if isinstance(v, tuple):
            return [field(x) for x in v]
        return v

    return json.dumps(field(schedule))


def from_json(text):
    def field(v):
        if isinstance(v, dict) and "schedule" in v:
            fields = {k: field(x) for k, x in v["fields"].items()}
            return schedules.SCHEDULES[v["schedule"]](**fields)
        if isinstance(v, dict):
            return {k: field(x) for k, x in v["pairs"]}
        if isinstance(v, list):
            return [field(x) for x in v]
        return v

    return field(json.loads(text))


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_schedule_is_a_value(case):
    s = ours(case)
    twin = ours(case)
    assert s == twin and hash(s) == hash(twin) and s is not twin
    assert len({s, twin}) == 1
    for copy in (
        eval(repr(s), {"schedules": schedules}),
        pickle.loads(pickle.dumps(s)),
        type(s)(**s.fields()),
        from_json(to_json(s)),
    ):
        assert copy == s and hash(copy) == hash(s) and repr(copy) == repr(s)
        # the copy resumes bit for bit
        assert values(copy, COUNTS[:300]).tobytes() == values(s, COUNTS[:300]).tobytes()
    assert repr(s).startswith(f"schedules.{case[0]}(")
    assert list(s.fields()) == [f.name for f in dataclasses.fields(s)]
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(s, next(iter(s.fields())), 0)


def test_different_schedules_differ():
    built = [ours(case) for case in CASES]
    assert len(set(built)) == len({repr(s) for s in built}) == len(CASES)
    assert schedules.constant(1) == schedules.constant(1.0)
    assert schedules.linear(1.0, 0.0, 10) != schedules.linear(1.0, 0.0, 11)
    assert schedules.linear(1.0, 0.0, 10) != schedules.polynomial(1.0, 0.0, 1, 10)
    assert schedules.piecewise_constant(1.0, None) == schedules.piecewise_constant(1.0, {})


def test_count_is_a_nonnegative_integer():
    s = schedules.linear(1.0, 0.0, 10)
    assert s(np.int64(5)) == s(np.uint8(5)) == s(5) == 0.5
    assert type(s(np.int32(3))) is float
    for bad in (5.0, True, np.float64(1.0), "3", None):
        with pytest.raises(TypeError, match="count"):
            s(bad)
    with pytest.raises(ValueError, match="count=-1"):
        s(-1)


def test_value_at():
    s = schedules.constant(0.5)
    assert schedules.value_at(s, 3) == 0.5 and schedules.value_at(0.25, 3) == 0.25


def test_importing_optimisers_imports_no_peer():
    import subprocess
    import sys

    code = "import sys, optimisers; print('jax' in sys.modules or 'optax' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"


# ----------------------------------------------------------------------------------------
# Argument checks: each refusal names the schedule, the argument and the value.

C, L = schedules.constant(1.0), schedules.linear(1.0, 0.0, 10)
BAD = [
    ("constant", dict(value=float("nan")), ValueError, "value=nan"),
    ("constant", dict(value="1"), TypeError, "value"),
    ("constant", dict(value=True), TypeError, "value"),
    ("constant", dict(value=np.ones(1)), TypeError, "value"),
    (
        "linear",
        dict(init_value=math.inf, end_value=0.0, transition_steps=1),
        ValueError,
        "init_value=inf",
    ),
    (
        "linear",
        dict(init_value=1.0, end_value=0.0, transition_steps=-1),
        ValueError,
        "transition_steps=-1",
    ),
    (
        "linear",
        dict(init_value=1.0, end_value=0.0, transition_steps=10.0),
        TypeError,
        "transition_steps",
    ),
    (
        "linear",
        dict(init_value=1.0, end_value=0.0, transition_steps=10, transition_begin=-2),
        ValueError,
        "transition_begin=-2",
    ),
    (
        "linear",
        dict(init_value=1e308, end_value=-1e308, transition_steps=10),
        ValueError,
        "end_value=-1e+308",
    ),
    (
        "polynomial",
        dict(init_value=1.0, end_value=0.0, power=-1.0, transition_steps=10),
        ValueError,
        "power=-1.0",
    ),
    ("cosine_decay", dict(init_value=1.0, decay_steps=0), ValueError, "decay_steps=0"),
    ("cosine_decay", dict(init_value=1.0, decay_steps=10, alpha=math.nan), ValueError, "alpha=nan"),
    (
        "cosine_decay",
        dict(init_value=1.0, decay_steps=10, exponent=-0.5),
        ValueError,
        "exponent=-0.5",
    ),
    (
        "warmup_cosine_decay",
        dict(init_value=0.0, peak_value=1.0, warmup_steps=10, decay_steps=10),
        ValueError,
        "decay_steps=10",
    ),
    (
        "warmup_cosine_decay",
        dict(init_value=0.0, peak_value=1.0, warmup_steps=-1, decay_steps=10),
        ValueError,
        "warmup_steps=-1",
    ),
    (
        "warmup_cosine_decay",
        dict(init_value=0.0, peak_value=1e-300, warmup_steps=1, decay_steps=10, end_value=1e300),
        ValueError,
        "end_value=1e+300",
    ),
    (
        "exponential_decay",
        dict(init_value=1.0, transition_steps=10, decay_rate=-0.5),
        ValueError,
        "decay_rate=-0.5",
    ),
    (
        "exponential_decay",
        dict(init_value=1.0, transition_steps=10, decay_rate=0.5, staircase=1),
        TypeError,
        "staircase",
    ),
    (
        "exponential_decay",
        dict(init_value=1.0, transition_steps=10, decay_rate=0.5, end_value=math.inf),
        ValueError,
        "end_value=inf",
    ),
    (
        "exponential_decay",
        dict(init_value=0.0, transition_steps=10, decay_rate=2.0),
        ValueError,
        "init_value=0.0",
    ),
    (
        "piecewise_constant",
        dict(init_value=1.0, boundaries_and_scales={10: -0.1}),
        ValueError,
        "boundaries_and_scales[10]=-0.1",
    ),
    (
        "piecewise_constant",
        dict(init_value=1.0, boundaries_and_scales={-10: 0.1}),
        ValueError,
        "boundaries_and_scales (a boundary)=-10",
    ),
    (
        "piecewise_constant",
        dict(init_value=1.0, boundaries_and_scales={1.5: 0.1}),
        TypeError,
        "boundaries_and_scales",
    ),
    (
        "piecewise_constant",
        dict(init_value=1.0, boundaries_and_scales=[(1, 0.5), (1, 0.5)]),
        ValueError,
        "boundaries_and_scales",
    ),
    (
        "piecewise_constant",
        dict(init_value=1.0, boundaries_and_scales=0.5),
        TypeError,
        "boundaries_and_scales",
    ),
    ("cosine_onecycle", dict(transition_steps=0, peak_value=1.0), ValueError, "transition_steps=0"),
    (
        "cosine_onecycle",
        dict(transition_steps=10, peak_value=1.0, pct_start=1.5),
        ValueError,
        "pct_start=1.5",
    ),
    (
        "cosine_onecycle",
        dict(transition_steps=10, peak_value=1.0, div_factor=0.0),
        ValueError,
        "div_factor=0.0",
    ),
    (
        "cosine_onecycle",
        dict(transition_steps=10, peak_value=1.0, final_div_factor=-1.0),
        ValueError,
        "final_div_factor=-1.0",
    ),
    (
        "cosine_onecycle",
        dict(transition_steps=10, peak_value=1.0, div_factor=1e-300, final_div_factor=1e-300),
        ValueError,
        "final_div_factor=1e-300",
    ),
    ("join", dict(schedules=[C, L], boundaries=[]), ValueError, "boundaries=()"),
    ("join", dict(schedules=[C, L, C], boundaries=[5, 5]), ValueError, "boundaries=(5, 5)"),
    ("join", dict(schedules=[C, L], boundaries=[-1]), ValueError, "boundaries[0]=-1"),
    ("join", dict(schedules=[C, lambda t: 1.0], boundaries=[3]), TypeError, "schedules[1]"),
    ("join", dict(schedules=[], boundaries=[]), ValueError, "schedules=()"),
    ("join", dict(schedules=C, boundaries=[]), TypeError, "schedules"),
]


@pytest.mark.parametrize(
    "name, args, error, names", BAD, ids=[f"{i}-{b[0]}" for i, b in enumerate(BAD)]
)
def test_bad_arguments_are_refused_by_name(name, args, error, names):
    with pytest.raises(error) as refused:
        getattr(schedules, name)(**args)
    message = str(refused.value)
    assert message.startswith(f"schedules.{name}: ") and names in message, message


def test_unpickling_checks_again():
    # a pickle goes through the constructor: a tampered one is refused like a call
    one = b"G" + np.float64(1.0).byteswap().tobytes()  # BINFLOAT: big-endian float64
    inf = b"G" + np.float64(np.inf).byteswap().tobytes()
    data = pickle.dumps(schedules.constant(1.0))
    assert data.count(one) == 1
    data = data.replace(one, inf)
    with pytest.raises(ValueError, match="value=inf"):
        pickle.loads(data)


# ----------------------------------------------------------------------------------------
# Bounds: true bounds, and exact ones (values the schedule takes).


def stops(s):
    knots = {k + d for k in s._knots() for d in (-1, 0, 1, 2)} if s._knots() else set()
    return sorted({1, 2, 3, 57, 700, 2100} | {k for k in knots if k >= 1})


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_bounds_are_exact(case):
    s = ours(case)
    every = values(s)
    lo, hi = s.bounds()
    assert lo <= every.min() and every.max() <= hi
    if case[0] != "exponential_decay" and case[0] != "join":
        assert (lo, hi) == (every.min(), every.max())  # settled within COUNTS
    for stop in stops(s):
        lo, hi = s.bounds(steps=stop)
        first = every[:stop]
        assert (lo, hi) == (first.min(), first.max()), stop


def test_bounds_over_all_counts_of_exponential_decays():
    falling = schedules.exponential_decay(2.0, transition_steps=3, decay_rate=0.5)
    rising = schedules.exponential_decay(2.0, transition_steps=3, decay_rate=1.5)
    assert falling.bounds() == (0.0, 2.0) and rising.bounds() == (2.0, math.inf)
    # decay_rate >= 1: end_value is a ceiling whatever the sign (optax's minimum)
    ceiling = schedules.exponential_decay(-2.0, 3, 1.5, end_value=-7.0)
    assert ceiling.bounds() == (-math.inf, -7.0) and ceiling(0) == -7.0
    with pytest.raises(ValueError, match="steps=0"):
        falling.bounds(steps=0)
    with pytest.raises(TypeError, match="steps"):
        falling.bounds(steps=2.0)


# no tiny values: end_value / peak_value would overflow (refused, a test of its own)
reals = st.floats(-10.0, 10.0).filter(lambda v: v == 0 or abs(v) > 1e-3)
steps = st.integers(0, 60)


@st.composite
def random_schedules(draw, depth=0):
    kind = draw(
        st.sampled_from(
            [
                "linear",
                "polynomial",
                "cosine_decay",
                "warmup",
                "exponential",
                "piecewise",
                "onecycle",
            ]
            + (["join"] if depth == 0 else [])
        )
    )
    if kind == "linear":
        return schedules.linear(draw(reals), draw(reals), draw(steps), draw(steps))
    if kind == "polynomial":
        return schedules.polynomial(
            draw(reals), draw(reals), draw(st.floats(0.0, 5.0)), draw(steps), draw(steps)
        )
    if kind == "cosine_decay":
        return schedules.cosine_decay(
            draw(reals), draw(st.integers(1, 60)), draw(reals), draw(st.floats(0.0, 5.0))
        )
    if kind == "warmup":
        warmup = draw(steps)
        return schedules.warmup_cosine_decay(
            draw(reals),
            draw(reals),
            warmup,
            warmup + draw(st.integers(1, 60)),
            draw(reals),
            draw(st.floats(0.0, 5.0)),
        )
    if kind == "exponential":
        end = draw(st.none() | reals)
        init = draw(reals.filter(lambda v: v != 0))
        return schedules.exponential_decay(
            init, draw(steps), draw(st.floats(0.0, 3.0)), draw(steps), draw(st.booleans()), end
        )
    if kind == "piecewise":
        return schedules.piecewise_constant(
            draw(reals), draw(st.dictionaries(steps, st.floats(0.0, 3.0), max_size=4))
        )
    if kind == "onecycle":
        return schedules.cosine_onecycle(
            draw(st.integers(1, 60)),
            draw(reals),
            draw(st.floats(0.0, 1.0)),
            draw(st.floats(0.1, 30)),
            draw(st.floats(0.1, 1e4)),
        )
    members = draw(st.lists(random_schedules(depth=1), min_size=1, max_size=4))
    cuts = sorted(draw(st.sets(steps, min_size=len(members) - 1, max_size=len(members) - 1)))
    return schedules.join(members, cuts)


@settings(max_examples=300, deadline=None)
@given(random_schedules(), st.integers(1, 200))
def test_bounds_hold_for_random_schedules(s, stop):
    every = values(s, range(stop))
    assert s.bounds(steps=stop) == (every.min(), every.max())
    lo, hi = s.bounds()
    further = values(s, range(400))
    assert lo <= further.min() and further.max() <= hi


# ---------------------------------------------------------------------------------------
# Schedules as hyper-parameters of rules (issue 16, point 2)


def _train(rule, adjust_to=None, steps=30, dtype=np.float32):
    opt = optimisers
    rng = np.random.default_rng(4)
    model = {"w": rng.standard_normal((6, 5)).astype(dtype), "b": rng.standard_normal(5)}
    state = opt.setup(rule, model)
    for t in range(steps):
        grads = {k: rng.standard_normal(v.shape).astype(v.dtype) for k, v in model.items()}
        if adjust_to is not None:
            opt.adjust_(state, **adjust_to(t))
        state, model = opt.update_(state, model, grads)
    return state, model


SCHEDULED = [
    ("Adam-eta", lambda s: optimisers.Adam(s), lambda s, t: {"eta": s(t)}),
    ("AdamW-lambda", lambda s: optimisers.AdamW(1e-2, lambda_=s), lambda s, t: {"lambda_": s(t)}),
    (
        "chain-Momentum-rho",
        lambda s: optimisers.OptimiserChain(optimisers.ClipNorm(1.0), optimisers.Momentum(0.1, s)),
        lambda s, t: {"rho": s(t)},
    ),
]


@pytest.mark.parametrize("name, make, hand", SCHEDULED, ids=[n for n, _, _ in SCHEDULED])
def test_a_scheduled_rule_steps_as_the_rule_adjusted_by_hand(name, make, hand):
    s = schedules.warmup_cosine_decay(0.0, 0.5, 5, 30, 0.01)
    state, model = _train(make(s))
    ref_state, ref_model = _train(make(0.0), lambda t: hand(s, t))
    for k in model:
        np.testing.assert_array_equal(model[k], ref_model[k], err_msg=k)
    assert state["w"].count == 30


def test_a_schedule_out_of_a_fields_range_is_refused():
    opt = optimisers
    with pytest.raises(ValueError, match=r"eta=.*takes values in \[-1, 1\]"):
        opt.Adam(schedules.linear(1.0, -1.0, 10))
    with pytest.raises(ValueError, match=r"beta\[0\]"):
        opt.Adam(beta=(schedules.linear(0.5, 1.0, 10), 0.999))


def test_a_scheduled_rule_resumes_bit_for_bit_from_a_checkpoint(tmp_path):
    opt = optimisers
    rule = opt.OptimiserChain(
        opt.ClipNorm(1.0),
        opt.AdamW(
            schedules.join([schedules.linear(0.0, 1e-2, 5), schedules.cosine_decay(1e-2, 20)], [5]),
            lambda_=schedules.piecewise_constant(0.1, {10: 0.5}),
        ),
    )
    state, model = _train(rule, steps=12)
    opt.save_state(tmp_path / "ckpt", state)
    again = opt.load_state(tmp_path / "ckpt")
    assert again == state and again["w"].count == 12
    rng = np.random.default_rng(9)
    grads = {k: rng.standard_normal(v.shape).astype(v.dtype) for k, v in model.items()}
    m1 = {k: v.copy() for k, v in model.items()}
    m2 = {k: v.copy() for k, v in model.items()}
    opt.update_(state, m1, grads)
    opt.update_(again, m2, grads)
    for k in m1:
        np.testing.assert_array_equal(m1[k], m2[k])


def test_hyperparameters_reads_the_values_the_next_update_uses():
    opt = optimisers
    s = schedules.linear(1.0, 0.0, 10)
    state, _ = _train(opt.Descent(s), steps=3)
    rules = opt.hyperparameters(state)
    assert rules["w"].eta == s(3) and rules["b"] == opt.Descent(s(3))
