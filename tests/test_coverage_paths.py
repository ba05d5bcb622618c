"""Paths of the core package the rest of the suite left unrun (issue 21, point 3): the
averaged model's checks, Adafactor's state checks and its empty parameter, Adafactor and
LAMB behind an AccumGrad that is not due, the wrappers (EMA, Lookahead) around rules
written in Python and inside chains, and a Program's work copies of state buffers."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import optimisers as opt
from optimisers import _engine, _plan, schedules
from optimisers._leaf import state_misfit
from optimisers._native import kernels as _kernels
from optimisers._program import Program
from optimisers._rules_averaged import torch_lerp


class Halve(opt.Rule):
    """A rule written in Python: the step is half the gradient."""

    def apply(self, state: Any, x: Any, dx: Any) -> tuple[Any, Any]:
        return state, 0.5 * dx


# ---- optimisers.averaged


def test_averaged_refuses_a_state_where_the_model_has_an_array() -> None:
    model = {"w": np.zeros(2)}
    st = opt.setup(opt.EMA(opt.Descent(0.1)), {"w": {"a": np.zeros(2)}})
    with pytest.raises(
        TypeError, match="the state tree has a dict at w where the model has an array"
    ):
        opt.averaged(st, model)


def test_averaged_refuses_a_copy_of_another_shape() -> None:
    st = opt.setup(opt.EMA(opt.Descent(0.1), decay=0.5), {"w": np.zeros(3)})
    with pytest.raises(ValueError, match=r"keeps a copy of shape \(3,\) for a parameter of shape"):
        opt.averaged(st, {"w": np.zeros((3, 1))})


def test_averaged_of_a_chain_without_averaging_is_the_parameter() -> None:
    x = np.arange(3.0)
    st = opt.setup(opt.OptimiserChain(opt.ClipNorm(1.0), opt.Descent(0.1)), x)
    st, x = opt.update_(st, x, np.ones(3))
    got = opt.averaged(st, x)
    assert got is not x and np.array_equal(got, x)


# ---- torch_lerp: the two forms of the kernels' lerp


@pytest.mark.parametrize("w", [0.25, 0.75, -1.5])
def test_torch_lerp_is_a_plus_w_times_b_minus_a(w: float) -> None:
    a, b = np.array([1.0, -2.0, 3.0]), np.array([4.0, 0.5, -1.0])
    np.testing.assert_allclose(torch_lerp(a, b, w), a + w * (b - a), rtol=1e-15, atol=1e-15)


# ---- Adafactor and LAMB


def test_adafactor_state_checks_name_what_differs() -> None:
    rule, x = opt.Adafactor(), np.ones((3, 4), np.float32)
    good = rule.init(x)
    assert state_misfit(rule, good, x) is None
    assert "is a tuple where the rule keeps an AdafactorState" in str(state_misfit(rule, (1, 2), x))
    bad_t = good._replace(t=np.zeros((), np.int32))
    assert "state.t is not a 0-d int64 array" in str(state_misfit(rule, bad_t, x))
    mixed = good._replace(v=np.zeros(12, np.float32))
    assert "state.row is ndarray: the state holds neither" in str(state_misfit(rule, mixed, x))
    wrong = good._replace(row=good.row.astype(np.float64))
    assert "state.row has dtype float64 where the rule keeps float32" in str(
        state_misfit(rule, wrong, x)
    )


def test_a_misfit_adafactor_state_fails_the_update_before_writing() -> None:
    x = np.ones((3, 4), np.float32)
    st = opt.setup(opt.Adafactor(), x)
    st.state = st.state._replace(t=np.zeros((), np.int32))
    with pytest.raises(ValueError, match=r"state.t is not a 0-d int64 array"):
        opt.update_(st, x, np.ones_like(x))
    assert (x == 1).all()


def test_adafactor_on_an_empty_parameter_counts_the_step() -> None:
    x = np.zeros((0, 3), np.float32)
    st = opt.setup(opt.Adafactor(), x)
    for _ in range(2):
        st, x = opt.update_(st, x, np.zeros_like(x))
    assert int(st.state.t) == 2 and x.shape == (0, 3)


@pytest.mark.parametrize("rule", [opt.Adafactor(), opt.LAMB(0.1)], ids=["adafactor", "lamb"])
def test_a_whole_step_rule_behind_an_accumgrad_waits_for_it(rule: opt.Rule) -> None:
    x = np.arange(1.0, 7.0).reshape(2, 3)
    st = opt.setup(opt.OptimiserChain(opt.AccumGrad(2), rule), x)
    alone = opt.setup(rule, x.copy())
    st, x = opt.update_(st, x, np.ones_like(x))  # not due: nothing moves
    assert np.array_equal(x, np.arange(1.0, 7.0).reshape(2, 3))
    st, x = opt.update_(st, x, 3 * np.ones_like(x))  # due: the mean, 2
    alone, y = opt.update_(alone, np.arange(1.0, 7.0).reshape(2, 3), 2 * np.ones_like(x))
    np.testing.assert_allclose(x, y, rtol=1e-12)
    assert not np.array_equal(x, np.arange(1.0, 7.0).reshape(2, 3))


# ---- the wrappers


@pytest.mark.parametrize("wrap", [opt.EMA, opt.Lookahead])
def test_a_wrapper_around_a_python_rule_steps_by_it(wrap: Any) -> None:
    x = np.array([1.0, 2.0])
    st = opt.setup(wrap(Halve()), x)
    st, x = opt.update_(st, x, np.array([2.0, 4.0]))
    np.testing.assert_array_equal(x, [0.0, 0.0])  # x - g/2


def test_ema_keeps_the_average_of_a_python_rule() -> None:
    x = np.array([4.0])
    st = opt.setup(opt.EMA(Halve(), decay=0.5), x)
    for _ in range(3):
        st, x = opt.update_(st, x, np.array([2.0]))  # x: 3, 2, 1
    # the first update copies x (3), later ones lerp by 1 - decay: 2.5, then 1.75
    np.testing.assert_allclose(opt.averaged(st, x), [1.75])


def test_adjusting_a_chain_leaves_a_wrapper_without_the_field_as_it_is() -> None:
    ema = opt.EMA(opt.Descent(0.1))
    chain = opt.OptimiserChain(opt.Momentum(0.1, 0.9), ema)
    new = opt.adjust(chain, rho=0.5)
    assert new.opts[1] is ema and new.opts[0] == opt.Momentum(0.1, 0.5)


def test_a_wrapper_without_schedules_in_a_scheduled_chain_is_kept() -> None:
    ema = opt.EMA(opt.Descent(0.1))
    chain = opt.OptimiserChain(opt.Descent(schedules.constant(0.5)), ema)
    x = np.array([1.0])
    st = opt.setup(chain, x)
    st, x = opt.update_(st, x, np.array([1.0]))
    # Descent(0.5) then EMA(Descent(0.1)) of the scaled step: 1 - 0.1 * 0.5
    np.testing.assert_allclose(x, [0.95])
    assert chain._at(1).opts[1] is ema


def test_a_wrapper_led_by_skipnonfinite_skips_a_non_finite_step() -> None:
    rule = opt.EMA(opt.OptimiserChain(opt.SkipNonFinite(), opt.Descent(0.1)))
    model = {"a": np.ones(2), "b": np.ones(2)}
    st = opt.setup(rule, model)
    st, model = opt.update_(st, model, {"a": np.ones(2), "b": np.array([np.nan, 1.0])})
    assert (model["a"] == 1).all() and (model["b"] == 1).all()
    assert int(st["a"].state.inner[0].skipped) == 1
    st, model = opt.update_(st, model, {"a": np.ones(2), "b": np.ones(2)})
    np.testing.assert_allclose(model["a"], [0.9, 0.9])


def test_a_wrapper_through_apply_gives_the_step() -> None:
    rule = opt.EMA(opt.Descent(0.5))
    x = np.ones(2)
    state, d = opt.apply_(rule, rule.init(x), x, np.array([2.0, 4.0]))
    np.testing.assert_array_equal(d, [1.0, 2.0])
    # its own apply (how a rule written in Python may call it): the same step
    state, d = rule.apply(state, x, np.array([2.0, 4.0]))
    np.testing.assert_array_equal(d, [1.0, 2.0])


def test_a_wrapper_that_forgets_its_reduce_says_so() -> None:
    class Bare(opt.EMA):
        __slots__ = ()

        def __reduce__(self) -> Any:
            return super(opt.EMA, self).__reduce__()

    with pytest.raises(NotImplementedError):
        repr(Bare(opt.Descent()))


# ---- the recorder of batch templates and a Program's work copies


def test_the_recorder_refuses_to_replace_the_step() -> None:
    x = np.ones(2)
    rec = _plan._Recorder(x, x)
    for call in (lambda: rec.set_source(x), lambda: rec.assign(x), rec.current):
        with pytest.raises(_plan._Barrier):
            call()


def test_a_program_rounds_a_work_copy_of_another_dtype_back() -> None:
    x = np.ones(3, np.float64)
    buf = np.zeros(3, np.float16)
    prog = Program(x, x)
    work = prog._work(buf)
    assert work.dtype == np.float64 and work is not buf
    work[...] = 0.5
    prog._round_back()
    np.testing.assert_array_equal(buf, np.full(3, 0.5, np.float16))


def test_the_norm_of_a_stopped_program_is_none() -> None:
    x = np.ones(3)
    prog = Program(x, np.full(3, 2.0))
    assert prog.norm(2.0) == pytest.approx(np.sqrt(12.0))
    prog.set_source(None)  # what an AccumGrad that is not due does
    assert prog.norm(2.0) is None


class _OutOfMemory:
    """The kernels' Batch of a machine out of memory: every entry is refused."""

    def __init__(self, entries: list[Any]) -> None:
        self.problems = [(0, _engine._kernels.NO_MEMORY, 0.0, 2.0)]


class _KernelsOutOfMemory:
    def __getattr__(self, name: str) -> Any:
        return _OutOfMemory if name == "Batch" else getattr(_kernels, name)


def test_out_of_memory_preparing_a_batch_names_the_leaf(monkeypatch: pytest.MonkeyPatch) -> None:
    model = {"layer": {"w": np.ones(4, np.float32)}}
    st = opt.setup(opt.Adam(0.1), model)
    monkeypatch.setattr(_engine, "_kernels", _KernelsOutOfMemory())
    with pytest.raises(MemoryError, match=r"out of memory preparing the step of layer\.w"):
        opt.update_(st, model, {"layer": {"w": np.ones(4, np.float32)}})
    assert (model["layer"]["w"] == 1).all() and int(st["layer"]["w"].count) == 0


class DictMomentum(opt.Momentum):
    """Momentum keeping its velocity in a dict: a buffer the batch's index paths (tuples
    and arrays only) cannot name."""

    def init(self, x: Any) -> Any:
        return {"v": super().init(x)}

    def _compile(self, state: Any, prog: Any) -> Any:
        super()._compile(state["v"], prog)
        return state


def test_a_stage_buffer_outside_the_index_paths_is_not_batched() -> None:
    rule, x = DictMomentum(0.1, 0.9), np.arange(4.0)
    assert _plan.template(rule, x, rule.init(x)) is None
    st, ref = opt.setup(rule, x), opt.setup(opt.Momentum(0.1, 0.9), x.copy())
    y = x.copy()
    for k in range(3):
        g = np.cos(np.arange(4.0) + k)
        st, x = opt.update_(st, x, g)
        ref, y = opt.update_(ref, y, g)
    np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(st.state["v"], ref.state)
