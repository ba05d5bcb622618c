"""The benchmark command's paths the rest of the suite left unrun (issue 21, point 3): the
options it refuses, the processor's name without /proc, the progress bar, the numbers and
notes of its report, a rule without tuned learning rates or whose loss diverges, an unknown
problem, a kernel build without its plain pass, and ``python -m optimisers.bench``.  (The
plot and the comparison with torch run in CI's stage with the optional packages.)"""

from __future__ import annotations

import io
import json
import runpy
import sys
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

import optimisers as opt
from optimisers.bench import _cli, main, problems, quality, report, rules, timing, yardsticks
from optimisers.bench.cases import Case, Unavailable

TINY = ["--tiny", "--no-progress"]


@pytest.mark.parametrize(
    "args, words",
    [
        (["--rules", ","], "--rules: empty list"),
        (["--many", "5"], "expected COUNTxSIZE like 1000x1000, got '5'"),
        (["--per-leaf", "-1"], "--per-leaf: must be >= 0"),
        (["--steps", "0"], "--steps: must be >= 1"),
        (["--problems", "nonsense"], "unknown problem 'nonsense'"),
    ],
)
def test_the_command_refuses_what_it_cannot_run(
    args: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(TINY + args)
    assert words in capsys.readouterr().err


def test_the_processor_without_proc(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_proc(*args: Any, **kw: Any) -> Any:
        raise OSError("no /proc here")

    monkeypatch.setattr(_cli, "open", no_proc, raising=False)
    assert isinstance(_cli._cpu_name(), str)


def test_the_progress_bar_redraws_in_place() -> None:
    out = io.StringIO()
    bar = timing.Progress(4, stream=out, width=8)
    bar.advance("adam")
    bar.advance("a longer label")
    bar.advance("x")
    bar.close()
    text = out.getvalue()
    assert "\r[##......] 1/4  adam" in text and "\r[######..] 3/4  x" in text
    assert text.endswith("\r")  # the line is wiped at the end


def test_the_numbers_and_notes_of_the_report(capsys: pytest.CaptureFixture[str]) -> None:
    assert (report._num(float("inf")), report._num(0), report._num(2.5e6)) == (
        "inf",
        "0",
        "2.50e+06",
    )
    assert report._clean({"a": [float("nan"), 1.0]}) == {"a": [None, 1.0]}
    assert (
        main(
            TINY
            + [
                "--json",
                "--rules",
                "descent",
                "--sizes",
                "none",
                "--many",
                "none",
                "--per-leaf",
                "0",
            ]
        )
        == 0
    )
    results = json.loads(capsys.readouterr().out)
    results["notes"] = ["a note"]
    assert "note: a note" in report.to_text(results)


def test_the_arrays_of_a_dict_state() -> None:
    a, b = np.ones(2), np.zeros(3)
    assert {id(x) for x in rules.state_arrays({"a": a, "b": [b, a]})} == {id(a), id(b)}


class Blowup(opt.Rule):
    """A rule of no family the quality table knows, that climbs the loss."""

    def apply(self, state: Any, x: Any, dx: Any) -> tuple[Any, Any]:
        return state, -1e30 * dx


def test_a_rule_without_tuned_learning_rates_and_a_diverging_loss() -> None:
    spec = SimpleNamespace(
        name="wild", rule=lambda eta=None: Blowup(), for_model=lambda eta=None: Blowup()
    )
    assert quality.learning_rate(spec, "rosenbrock") is None
    with np.errstate(over="ignore"):  # the loss overflows: that is the point
        curve = quality.train(spec, problems.get("rosenbrock"), 50)
    assert len(curve) < 51 and not np.isfinite(curve[-1])


def test_an_unknown_problem() -> None:
    with pytest.raises(KeyError, match="unknown problem 'nonsense'"):
        problems.get("nonsense")


def test_a_build_without_its_plain_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(opt, "kernel_isa", lambda: "no-such-isa")
    case = Case("adam", "float32", 1000, 1, 1)
    with pytest.raises(Unavailable, match="no plain pass built for the no-such-isa kernels"):
        yardsticks.plain_step(case)


def test_python_m_optimisers_bench(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["optimisers.bench", "--list"])
    with pytest.raises(SystemExit) as info:
        runpy.run_module("optimisers.bench", run_name="__main__")
    assert info.value.code == 0 and "adam" in capsys.readouterr().out
