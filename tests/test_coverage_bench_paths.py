"""More of the benchmark command's paths the rest of the suite left unrun (issue 21,
point 3): a case too big for the memory or timed one implementation after the other, a
peer failing its first step, an unsteady row, the distributed mode's text report and its
missing ``mpiexec``, an empty plot, a wrapper's learning rate, numpy's ClipGlobalNorm
-> AdamW, and the torch comparisons on a machine without torch.  Nothing here times
anything for real: sizes are tiny, budgets one step."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest

import optimisers as opt
from optimisers.bench import busy, compare, distributed, plot, rules, speed, timing, torch_step
from optimisers.bench.cases import Case, Unavailable
from optimisers.bench.speed import optimisers_step
from optimisers.bench.timing import Budget

ONE_STEP = Budget(warmup=0, min_steps=1, max_steps=1, min_time=0.0, max_time=0.0, rounds=1)


def _case() -> Case:
    return Case("descent", "float32", 64, 1, 1)


def _failing(case: Case) -> Any:
    def step() -> None:
        raise RuntimeError("a peer that breaks")

    return step


def _unavailable(case: Case) -> Any:
    raise Unavailable("not here")


def test_available_memory_without_proc(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_proc(*args: Any, **kw: Any) -> Any:
        raise OSError("no /proc here")

    monkeypatch.setattr(speed, "open", no_proc, raising=False)
    assert speed._available_memory() is None


def test_a_case_bigger_than_the_memory_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(speed, "_available_memory", lambda: 10)
    notes: list[str] = []
    assert speed.run_case(_case(), False, ONE_STEP, notes) == []
    assert notes and notes[0].startswith("skipped descent float32") and "GB available" in notes[0]


@pytest.mark.parametrize("together", [True, False], ids=["together", "one-by-one"])
def test_a_failing_peer_is_noted_and_the_others_timed(
    monkeypatch: pytest.MonkeyPatch, together: bool
) -> None:
    case = _case()
    # enough memory for one implementation, not for all three at once (unless together)
    avail = case.footprint() * (100 if together else 1.5)
    monkeypatch.setattr(speed, "_available_memory", lambda: avail)
    impls = [("optimisers", optimisers_step), ("broken", _failing), ("absent", _unavailable)]
    monkeypatch.setattr(speed, "implementations", lambda *a, **k: impls)
    notes: list[str] = []
    rows = speed.run_case(case, False, ONE_STEP, notes)
    assert [r["impl"] for r in rows] == ["optimisers"]
    assert "absent: not here" in notes
    assert any("broken failed" in n and "RuntimeError: a peer that breaks" in n for n in notes)
    assert any("timed one after the other" in n for n in notes) != together


def test_an_unsteady_row_is_flagged() -> None:
    row = {"impl": "optimisers", "pct_bw": 50.0, "ms": 1.0, "ms_rounds": [1.0, 4.0]}
    assert busy._own_reasons(row, []) == ["unsteady"]
    row["ms_rounds"] = [1.0, 2.0]
    assert busy._own_reasons(row, []) == []


def _fake_row(size: int) -> dict[str, Any]:
    ms = {
        k: 1e-3
        for k in ("reduce_scatter", "all_gather", "all_reduce", "single", "bound")
        + ("sharded", "sharded_packed", "replicated")
    }
    ms.update(sharded=2e-3, bound=3e-3, replicated=4e-3)
    return {"size": size, "ranks": 2, "state_sharded": 4e6, "state_replicated": 8e6, **ms}


def test_the_distributed_text_report(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class World:
        rank = 0

    monkeypatch.setenv(distributed._LAUNCHED, "1")
    monkeypatch.setattr(distributed, "_mpi", lambda: type("MPI", (), {"COMM_WORLD": World}))
    monkeypatch.setattr(distributed, "measure", lambda size, arrays, rounds: _fake_row(size))
    assert distributed.main(["--sizes", "1e6"]) == 0
    text = capsys.readouterr().out
    assert "2 ranks of this machine" in text
    assert "   1e+06      1.00      1.00" in text and "yes" in text
    assert "N=   8: sharded" in text and "communication), replicated" in text


def test_the_distributed_mode_without_mpiexec(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(distributed._LAUNCHED, raising=False)
    monkeypatch.setattr(distributed.shutil, "which", lambda *a, **k: None)
    assert distributed.main([]) == 2
    assert "no mpiexec found" in capsys.readouterr().err


def test_nothing_to_plot() -> None:
    pytest.importorskip("matplotlib", reason="the plot needs matplotlib")
    with pytest.raises(ValueError, match="nothing to plot"):
        plot.plot({}, {}, "unused.png")


def test_plot_without_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import raises ImportError
    with pytest.raises(plot.PlotUnavailable, match="--plot needs matplotlib"):
        plot.pyplot()


def ema(**kw: Any) -> opt.Rule:
    """A bench 'class' building a wrapper without a learning rate of its own."""
    return opt.EMA(opt.Descent(0.1))


def test_the_learning_rate_of_a_wrapper_is_its_inner_rules() -> None:
    spec = rules.RuleSpec("ema", (ema,), ((1, 1),))
    assert spec.rule(eta=0.3) == opt.EMA(opt.Descent(0.3))


def test_numpy_clipglobalnorm_adamw_matches_optimisers() -> None:
    case = Case("clipglobalnorm+adamw", "float64", 50, 3, 1)
    ours, theirs = optimisers_step(case), compare._np_adam(case)
    for _ in range(3):
        ours()
        theirs()
    for a, b in zip(ours.params, theirs.params):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


# ---- the benchmark without torch (any machine)


@pytest.fixture
def no_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(name: str) -> Any:
        raise ImportError(f"no {name} here")

    monkeypatch.setattr(compare, "_TORCH", None)
    monkeypatch.setattr(compare.importlib, "import_module", refuse)


def test_the_bench_without_torch(no_torch: None) -> None:
    assert compare.torch_module() is None
    assert compare.torch_module() is None  # remembered as absent
    assert "torch is not installed" in compare.availability_notes()[0]
    assert compare._torch_builders(Case("adam", "float32", 64, 1, 1)) == []
    with pytest.raises(Unavailable, match="torch is not installed"):
        torch_step.optimiser_step(Case("adam", "float32", 64, 1, 1))
    with pytest.raises(SystemExit, match="this benchmark needs PyTorch"):
        torch_step.main(["--size", "64", "--tensors", "1"])


def test_measure_with_prepare_stops_each_round_at_max_steps() -> None:
    # min_steps asks for more than max_steps allows: each round stops at its share of
    # max_steps (3), and every timed step (warm-up included) is preceded by its prepare
    calls: list[str] = []
    budget = Budget(warmup=1, min_steps=50, max_steps=6, min_time=0.0, max_time=60.0, rounds=2)
    timings = timing.measure(
        {"prepared": lambda: calls.append("step"), "plain": lambda: calls.append("plain")},
        budget,
        prepare={"prepared": lambda: calls.append("prepare")},
    )
    assert timings["prepared"].steps == 6 and len(timings["prepared"].by_round) == 2
    assert timings["plain"].steps == 6
    prepared = [c for c in calls if c != "plain"]
    assert prepared == ["prepare", "step"] * 7  # one warm-up and 2 rounds of 3
    assert calls.count("plain") == 7
