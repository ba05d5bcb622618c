"""Fields that a rule reads in ``init`` or checks against each other, given as schedules.

mypy (issue 21) found that these read a field as a number where it may be a schedule: Adam's
family built ``beta_t`` from ``beta``, AMSGrad filled its state with ``epsilon``, Rprop
filled its steps with ``eta`` (each a TypeError at ``setup``), and Rprop compared ``ell``
and ``gamma`` with numbers (a TypeError at construction).  A constant schedule must now
give the bits of its number, step after step, and an out-of-range schedule the ValueError
of an out-of-range number.
"""

from __future__ import annotations

import numpy as np
import pytest

import optimisers as opt
from optimisers import schedules
from registry import TUNED_RULES

C = schedules.constant

# (rule with numbers, the same rule with constant schedules in the fields init reads)
PAIRS = [
    (opt.Adam(0.01, (0.9, 0.99)), opt.Adam(0.01, (C(0.9), C(0.99)))),
    (opt.AdamW(0.01, (0.8, 0.9), lambda_=0.1), opt.AdamW(0.01, (C(0.8), 0.9), lambda_=0.1)),
    (opt.RAdam(0.01, (0.9, 0.99)), opt.RAdam(0.01, (0.9, C(0.99)))),
    (opt.AdaBelief(0.01, (0.9, 0.99)), opt.AdaBelief(0.01, (C(0.9), C(0.99)))),
    (opt.AMSGrad(0.01, epsilon=1e-3), opt.AMSGrad(0.01, epsilon=C(1e-3))),
    (opt.Rprop(0.05), opt.Rprop(C(0.05))),
    (
        opt.Rprop(0.05, ell=(0.4, 1.5), gamma=(1e-4, 2.0)),
        opt.Rprop(0.05, ell=(C(0.4), C(1.5)), gamma=(C(1e-4), C(2.0))),
    ),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("plain, scheduled", PAIRS, ids=[repr(p[1]) for p in PAIRS])
def test_a_constant_schedule_gives_the_bits_of_its_number(
    plain: opt.Rule, scheduled: opt.Rule, dtype: type, n_threads: int
) -> None:
    rng = np.random.default_rng(3)
    x0 = rng.standard_normal(300).astype(dtype)
    xa, xb = x0.copy(), x0.copy()
    sa, sb = opt.setup(plain, xa), opt.setup(scheduled, xb)
    for a, b in zip(
        sa.state if isinstance(sa.state, tuple) else (sa.state,),
        sb.state if isinstance(sb.state, tuple) else (sb.state,),
    ):
        assert np.array_equal(a, b) and a.dtype == b.dtype  # the state setup builds
    for _ in range(6):
        g = rng.standard_normal(300).astype(dtype)
        sa, xa = opt.update_(sa, xa, g)
        sb, xb = opt.update_(sb, xb, g)
        assert xa.tobytes() == xb.tobytes()


def test_the_first_running_products_are_the_schedules_values_at_count_0() -> None:
    rule = opt.Adam(beta=(schedules.linear(0.5, 0.9, 10), schedules.constant(0.99)))
    state = opt.setup(rule, np.zeros(3))
    assert state.state.beta_t.tolist() == [0.5, 0.99]
    amsgrad = opt.setup(opt.AMSGrad(epsilon=schedules.linear(1e-3, 1e-8, 10)), np.zeros(2))
    assert amsgrad.state.m.tolist() == [1e-3, 1e-3]
    rprop = opt.setup(opt.Rprop(schedules.linear(0.2, 0.0, 5)), np.zeros(2))
    assert rprop.state.step.tolist() == [0.2, 0.2]


@pytest.mark.parametrize(
    "field, value",
    [
        ("ell", (schedules.linear(0.5, 1.5, 10), 1.2)),  # ell[0] would pass 1
        ("ell", (0.5, schedules.linear(1.2, 0.8, 10))),  # ell[1] would fall below 1
        ("gamma", (schedules.linear(1e-6, 60.0, 10), 50.0)),  # gamma[0] would pass gamma[1]
    ],
)
def test_rprop_refuses_a_schedule_whose_values_break_its_order(field: str, value: tuple) -> None:
    with pytest.raises(ValueError, match=f"Rprop: {field}=.* must satisfy"):
        opt.Rprop(**{field: value})


def test_rprop_takes_schedules_that_keep_its_order() -> None:
    rule = opt.Rprop(
        ell=(schedules.linear(0.5, 0.9, 10), schedules.linear(1.1, 1.5, 10)),
        gamma=(schedules.constant(1e-6), schedules.linear(50.0, 10.0, 10)),
    )
    x = np.ones(4)
    state = opt.setup(rule, x)
    for _ in range(3):
        state, x = opt.update_(state, x, np.array([1.0, -1.0, 2.0, 0.0]))
    assert np.all(np.isfinite(x)) and x[3] == 1.0


S = schedules.warmup_cosine_decay(0.0, 0.5, 3, 12)
# every real field of these rules a schedule (pairs too); RMSProp has a constructor of its own
SCHEDULED = [
    opt.AdamW(S, (schedules.linear(0.8, 0.9, 5), C(0.99)), lambda_=S, epsilon=C(1e-8)),
    opt.RMSProp(S, rho=schedules.linear(0.5, 0.9, 4), epsilon=S, centred=True),
    opt.Rprop(S, ell=(C(0.5), schedules.linear(1.1, 1.5, 10))),
    opt.OptimiserChain(opt.ClipNorm(schedules.piecewise_constant(2, {3: 0.5})), opt.Lion(S)),
]


@pytest.mark.parametrize("rule", SCHEDULED, ids=lambda r: type(r).__name__)
def test_a_rule_at_a_count_is_the_rule_made_from_the_values(rule: opt.Rule) -> None:
    # Rule._at does not check a @checked rule's values again (construction checked every
    # value a schedule takes): it must give what the constructor, checking, gives
    def made(r: opt.Rule, count: int) -> opt.Rule:
        if isinstance(r, opt.OptimiserChain):
            return opt.OptimiserChain(*(made(m, count) for m in r.opts))
        return type(r)(
            **{
                k: schedules.value_at(v, count)
                if not isinstance(v, tuple)
                else tuple(schedules.value_at(u, count) for u in v)
                for k, v in ((k, getattr(r, k)) for k in r._fields())
            }
        )

    for count in (0, 1, 3, 7, 50):
        at = rule._at(count)
        assert at == made(rule, count) and repr(at) == repr(made(rule, count))
        assert not at._scheduled() and rule._at(count) is not rule


def test_a_rule_outside_checked_is_rebuilt_at_a_count() -> None:
    # a rule written in Python (fields in its __dict__) or a @checked rule whose subclass
    # has a __post_init__ of its own goes through _replace: its own checks run again
    class Halving(opt.Rule):
        def __init__(self, eta: object) -> None:
            self.eta = eta

        def init(self, x: np.ndarray) -> None:
            return None

        def apply(self, state: None, x: np.ndarray, dx: np.ndarray) -> tuple:
            return state, dx * self.eta

    rule = Halving(schedules.linear(1.0, 0.0, 4))
    assert rule._at(2).eta == 0.5 and rule._at(2) is not rule and rule.eta is not None

    made: list[float] = []

    class Checked(opt.Momentum):
        def __post_init__(self) -> None:
            super().__post_init__()
            made.append(schedules.value_at(self.eta, 0))

    chk = Checked(schedules.linear(0.2, 0.0, 4))
    assert chk._at(1).eta == pytest.approx(0.15) and made == [0.2, pytest.approx(0.15)]


def test_a_chain_with_nothing_scheduled_is_itself_at_any_count() -> None:
    chain = opt.OptimiserChain(opt.ClipNorm(1.0), opt.Descent(0.1))
    assert chain._at(5) is chain


def _every_real_field_constant(rule: opt.Rule) -> opt.Rule | None:
    """``rule`` with each float field (and each float in a pair) a constant schedule of
    its value; None when it has no such field."""

    def real(v: object) -> bool:  # a schedule's values are finite (p = inf stays a number)
        return isinstance(v, float) and np.isfinite(v)

    def scheduled(v: object) -> object:
        if real(v):
            return C(v)
        if isinstance(v, tuple) and any(map(real, v)):
            return tuple(C(u) if real(u) else u for u in v)
        return v

    changes = {k: scheduled(getattr(rule, k)) for k in rule._fields()}
    changes = {k: v for k, v in changes.items() if v is not getattr(rule, k)}
    return rule._replace(**changes) if changes else None


SWEEP = [
    (name, rule, scheduled)
    for name, rule in TUNED_RULES
    if (scheduled := _every_real_field_constant(rule)) is not None
    and not getattr(rule, "matrix_only", False)
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("plain, scheduled", [s[1:] for s in SWEEP], ids=[s[0] for s in SWEEP])
def test_every_real_field_of_every_rule_takes_a_schedule(
    plain: opt.Rule, scheduled: opt.Rule, dtype: type
) -> None:
    # what the pairs above check for the fields init reads, for every rule and field:
    # setup takes the schedule's value at count 0 and each step the value at its count
    rng = np.random.default_rng(5)
    x0 = rng.standard_normal(64).astype(dtype)
    sa, sb = opt.setup(plain, x0.copy()), opt.setup(scheduled, x0.copy())
    xa, xb = x0.copy(), x0.copy()
    for _ in range(4):
        g = rng.standard_normal(64).astype(dtype)
        sa, xa = opt.update_(sa, xa, g)
        sb, xb = opt.update_(sb, xb, g)
        assert xa.tobytes() == xb.tobytes()
