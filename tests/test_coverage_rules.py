"""The rule protocol's paths the rest of the suite left unrun (issue 21, point 3): a rule
written in Python that forgets ``apply`` or is adjusted, the composite rules through
``apply_``, ``MixedPrecision``'s own checks, schedules inside it and its ``SkipNonFinite``,
the checks of a hyper-parameter switch, and which kernel builds load."""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
import pytest

import optimisers as opt
from optimisers import _native, _rule, schedules
from optimisers._schedule import Schedule


class Halve(opt.Rule):
    """A rule written in Python, with a field that adjust may change."""

    def __init__(self, eta: float = 0.5) -> None:
        self.eta = eta

    def apply(self, state: Any, x: Any, dx: Any) -> tuple[Any, Any]:
        return state, self.eta * dx


def test_a_rule_written_without_apply_says_so() -> None:
    class NoApply(opt.Rule):
        pass

    state = opt.setup(NoApply(), np.ones(2))
    with pytest.raises(NotImplementedError, match="NoApply must define apply"):
        opt.update_(state, np.ones(2), np.ones(2))


def test_adjusting_a_rule_written_in_python_copies_it() -> None:
    rule = Halve(0.5)
    new = opt.adjust(rule, eta=0.25)
    assert type(new) is Halve and new.eta == 0.25 and rule.eta == 0.5


def test_only_a_rule_led_by_skipnonfinite_has_a_skip_state() -> None:
    with pytest.raises(TypeError, match="Descent is not led by SkipNonFinite"):
        opt.Descent()._skip_state(None)


def test_a_chain_checks_a_complex_parameter_through_its_barrier() -> None:
    # a ClipNorm after another rule asks for the step so far while the kinds are listed
    state = opt.setup(
        opt.OptimiserChain(opt.Descent(0.1), opt.ClipNorm(1.0)), np.ones(2, np.complex128)
    )
    assert state.rule.opts[1] == opt.ClipNorm(1.0)


def test_a_field_value_outside_schedules_is_kept_and_a_schedule_is_no_number() -> None:
    assert _rule.number(0.5) == 0.5
    with pytest.raises(TypeError, match="reached a kernel stage unevaluated"):
        _rule.number(schedules.constant(0.5))
    assert _rule.extent(schedules.linear(1.0, 3.0, 4)) == (1.0, 3.0)


def test_a_switch_takes_booleans_only() -> None:
    with pytest.raises(TypeError, match="AdamW: couple must be True or False, got 1"):
        opt.AdamW(couple=1)  # type: ignore[arg-type]


def test_a_schedule_must_define_its_value() -> None:
    with pytest.raises(NotImplementedError):
        Schedule()._value(0)


@pytest.mark.parametrize(
    "rule",
    [
        opt.OptimiserChain(opt.ClipGrad(1.0), opt.Descent(0.5)),
        opt.AccumGrad(1),
        opt.MixedPrecision(np.float64, opt.Descent(0.5)),
    ],
    ids=["chain", "accumgrad", "mixed"],
)
def test_the_composite_rules_through_apply(rule: opt.Rule) -> None:
    x = np.ones(3, np.float32)
    state = opt.init(rule, x)
    state, d = opt.apply_(rule, state, x, np.full(3, 4.0, np.float32))
    want = {opt.OptimiserChain: 0.5, opt.AccumGrad: 4.0, opt.MixedPrecision: 2.0}[type(rule)]
    assert d is not None and np.allclose(d, want)
    assert x.tolist() == [1.0, 1.0, 1.0]  # apply_ leaves x alone


def test_mixedprecision_is_a_value_like_the_other_rules() -> None:
    with pytest.raises(TypeError, match=r"MixedPrecision\(rule\) or MixedPrecision\(dtype, "):
        opt.MixedPrecision(np.float64, opt.Descent(), opt.Descent())  # type: ignore[call-arg]
    rule = opt.MixedPrecision(np.float64, opt.Adam(0.1))
    with pytest.raises(AttributeError, match="rules are immutable"):
        rule.dtype = np.float32  # type: ignore[misc]
    assert opt.adjust(rule, eta=0.2) == opt.MixedPrecision(np.float64, opt.Adam(0.2))


def test_mixedprecision_evaluates_the_schedules_of_its_rule() -> None:
    rule = opt.MixedPrecision(np.float64, opt.Descent(schedules.linear(1.0, 0.0, 4)))
    x = np.ones(2, np.float32)
    state = opt.setup(rule, x)
    for _ in range(2):
        state, x = opt.update_(state, x, np.ones(2, np.float32))
    assert x.tolist() == [-0.75, -0.75]  # 1 - 1.0 - 0.75
    assert opt.hyperparameters(state) == opt.MixedPrecision(np.float64, opt.Descent(0.5))


def test_mixedprecision_skips_a_non_finite_step_of_its_chain() -> None:
    rule = opt.MixedPrecision(np.float64, opt.OptimiserChain(opt.SkipNonFinite(), opt.Descent(0.5)))
    tree = {"a": np.ones(2, np.float32), "b": np.ones(2, np.float32)}
    state = opt.setup(rule, tree)
    state, tree = opt.update_(
        state, tree, {"a": np.ones(2, np.float32), "b": np.array([np.nan, 1.0], np.float32)}
    )
    assert tree["a"].tolist() == [1.0, 1.0] and tree["b"].tolist() == [1.0, 1.0]
    assert int(state["a"].state.inner[0].skipped) == 1


def test_skipnonfinite_through_apply_counts_and_then_raises() -> None:
    rule = opt.SkipNonFinite(max_consecutive=1)
    x = np.ones(2)
    state = opt.init(rule, x)
    state, d = opt.apply_(rule, state, x, np.array([np.inf, 0.0]))
    assert d is None and int(state.consecutive) == 1
    with pytest.raises(FloatingPointError, match=r"after 1 steps skipped in a row"):
        opt.apply_(rule, state, x, np.array([np.inf, 0.0]))


def test_a_build_this_processor_cannot_run_or_that_was_not_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    baseline = _native.builds()["baseline"]
    monkeypatch.setattr(baseline, "cpu_runs", lambda isa: False, raising=False)
    assert _native._load("avx2") is None
    monkeypatch.undo()

    def not_built(name: str) -> Any:
        raise ImportError(name)

    monkeypatch.setattr(importlib, "import_module", not_built)
    assert _native._load("avx512") is None
    assert _native._load("baseline") is baseline


@pytest.mark.parametrize(
    "rule, want",
    [
        (opt.OptimiserChain(opt.ClipGrad(1.0), opt.Descent(0.5)), 0.5),
        (opt.AccumGrad(1), 4.0),
        (opt.MixedPrecision(np.float64, opt.Descent(0.5)), 2.0),
    ],
    ids=["chain", "accumgrad", "mixed"],
)
def test_the_composite_rules_follow_the_rule_protocol(rule: opt.Rule, want: float) -> None:
    # rule.apply(state, x, dx) -> (state, d), as a rule written in Python is called
    x = np.ones(3, np.float32)
    state, d = rule.apply(opt.init(rule, x), x, np.full(3, 4.0, np.float32))
    assert d is not None and np.allclose(d, want) and x.tolist() == [1.0, 1.0, 1.0]


def test_a_clipnorm_after_a_stage_asks_the_kinds_probe_for_the_step() -> None:
    probe = _rule._KernelKinds(np.zeros(2))
    opt.Descent(0.1)._compile(None, probe)
    opt.ClipNorm(1.0)._compile((), probe)  # a barrier: it reads the step so far
    assert len(probe.used) == 2


def test_a_cap_on_the_instruction_set_loads_the_baseline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTIMISERS_ISA", "baseline")
    assert _native._choose() is _native.builds()["baseline"]
