"""Speed cases: ``optimisers.update_``, the yardsticks and the peers, side by side.

Each implementation of a :class:`~.cases.Case` -- ours (here), the probe and the plain
pass (:mod:`.yardsticks`), the peers (:mod:`.compare`) -- builds its own arrays (so no
one's state leaks into another's) with pre-made gradients, and only its step is timed.
The implementations of one case are timed round-robin (:func:`timing.measure`); when they
would not fit in memory together they are timed one after the other.

Effective GB/s is the rule's *minimal* byte count (:mod:`.rules`) over the median time, for
every implementation alike, so a peer that moves more bytes shows fewer GB/s.  ``% bw`` is
the time of the probe (a plain fused pass with the rule's access pattern, one array of the
same total size; :mod:`optimisers._probe`) over the implementation's time, and ``vs_opt``
the implementation's time over ours: both paired round by round (:func:`timing.ratio`).
"""

from __future__ import annotations

import gc
import time

import optimisers as opt

from . import compare, rules, torch_step, yardsticks
from .cases import Unavailable, make_arrays, thread_limit
from .timing import Budget, measure, ratio

__all__ = ["run_cases", "run_case", "implementations", "optimisers_step", "state_bytes"]


# ----------------------------------------------------------------------------------------
# our implementation


def optimisers_step(case, seed=0):
    """``update_`` of ``case``'s rule on a fresh model: the step, ready to time.

    The step carries ``params`` (the model's arrays), ``setup_s`` (the time ``setup``
    took) and ``state_bytes()`` (the bytes of every array the state tree holds now)."""
    xs, gs = make_arrays(case, seed)
    t0 = time.perf_counter()
    state = opt.setup(case.spec.for_model(), xs)
    setup_s = time.perf_counter() - t0

    def step():
        opt.update_(state, xs, gs)

    step.params = xs
    step.setup_s = setup_s
    step.state_bytes = lambda: state_bytes(state)
    return step


def state_bytes(tree):
    """The bytes of the distinct arrays a state tree holds (states and per-leaf buffers)."""
    return sum(a.nbytes for a in rules.state_arrays(tree))


ALWAYS = ("optimisers", "probe")  # every case times these two (x opt, % bw)


def implementations(case, with_peers, only=None):
    """The ``(name, builder)`` pairs that run ``case``: ours, the probe, the plain pass of
    the same arithmetic where there is one, and the peers; with ``only`` (a set of names),
    just those of them (ours and the probe always).

    >>> from optimisers.bench.cases import Case
    >>> [name for name, _ in implementations(Case("adam", "float32", 1000, 1, 1), False)]
    ['optimisers', 'probe', 'plain']
    >>> [name for name, _ in implementations(Case("adam", "float32", 1000, 10, 1), False)]
    ['optimisers', 'probe']
    """
    impls = [("optimisers", optimisers_step), ("probe", yardsticks.probe_step)]
    if case.rule in yardsticks.PLAIN_RULES and case.leaves == 1 and case.section == "speed":
        impls.append(("plain", yardsticks.plain_step))
    if with_peers:
        impls += compare.builders(case) + torch_step.builders(case)
    if only is not None:
        impls = [(name, b) for name, b in impls if name in only or name in ALWAYS]
    return impls


# ----------------------------------------------------------------------------------------
# running


def _available_memory():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _row(case, impl, t, probe, ours):
    ms = t.median * 1e3
    gbps = case.bytes / t.median / 1e9
    return {
        "section": case.section,
        "impl": impl,
        "rule": case.rule,
        "dtype": case.dtype,
        "size": case.size,
        "leaves": case.leaves,
        "threads": case.threads,
        "ms": ms,
        "ms_best": t.best * 1e3,
        "ms_q1": t.q1 * 1e3,
        "ms_q3": t.q3 * 1e3,
        "steps": t.steps,
        "ms_rounds": [x * 1e3 for x in t.by_round],
        "bytes": case.bytes,
        "gbps": gbps,
        "probe_gbps": case.bytes / probe.median / 1e9 if probe else None,
        "pct_bw": 100.0 / ratio(t, probe) if probe else None,
        "vs_opt": ratio(t, ours) if ours else None,
        "us_per_leaf": ms * 1e3 / case.leaves,
        "setup_ms": None,
        "state_bytes": None,
        "state_min_bytes": case.state_min_bytes,
    }


def run_case(case, with_peers, budget, notes, only=None):
    """Time every implementation of ``case``: a list of result rows (dicts).

    They are timed round-robin when all of them fit in memory at once (up to 70% of what
    is available), else one after the other (then their ratios mean less: narrow the
    set with ``only`` for big cases)."""
    impls = implementations(case, with_peers, only)
    avail = _available_memory()
    need = case.footprint()
    if avail is not None and need > 0.8 * avail:
        notes.append(
            f"skipped {case.label()}: needs about {need / 1e9:.1f} GB, "
            f"{avail / 1e9:.1f} GB available"
        )
        return []
    together = avail is None or need * len(impls) < 0.7 * avail
    if not together:
        _note_once(
            notes,
            f"{case.label()}: implementations timed one after the other "
            f"(not enough memory for all at once; see --impls)",
        )
    timings, extra = {}, {}
    with thread_limit(case.threads):
        steps = {}
        for name, build in impls:
            try:
                steps[name] = build(case)
            except Unavailable as e:
                _note_once(notes, f"{name}: {e}")
                continue
            extra[name] = steps[name]
            if not together:
                timings.update(_measure_one(name, steps.pop(name), budget, notes))
                gc.collect()
        if steps:
            for name, f in list(steps.items()):
                try:  # a peer may fail on its first step
                    f()
                except Exception as e:  # report and go on
                    _note_once(notes, f"{name} failed on {case.label()}: {type(e).__name__}: {e}")
                    del steps[name]
            timings.update(measure(steps, budget))
        steps = None
    ours, probe = timings.get("optimisers"), timings.get("probe")
    rows = [_row(case, name, t, probe, ours) for name, t in timings.items()]
    for r in rows:
        f = extra.get(r["impl"])
        if hasattr(f, "setup_s"):
            r["setup_ms"] = f.setup_s * 1e3
            r["state_bytes"] = f.state_bytes()
    extra = None
    gc.collect()
    return rows


def _measure_one(name, step, budget, notes):
    try:
        step()
    except Exception as e:
        _note_once(notes, f"{name} failed: {type(e).__name__}: {e}")
        return {}
    one = Budget(
        budget.warmup,
        budget.min_steps,
        budget.max_steps,
        budget.min_time,
        budget.max_time,
        rounds=1,
    )
    return measure({name: step}, one)


def _note_once(notes, text):
    if text not in notes:
        notes.append(text)


def run_cases(cases, with_peers=False, budget=Budget(), progress=None, notes=None, only=None):
    """Run every case (with ``only``: just those implementations); returns
    ``(rows, notes)``."""
    notes = [] if notes is None else notes
    if with_peers:
        notes.extend(n for n in compare.availability_notes() if n not in notes)
    rows = []
    for case in cases:
        if progress is not None:
            progress.show(case.label())
        rows += run_case(case, with_peers, budget, notes, only)
        if progress is not None:
            progress.advance(case.label())
    return rows, notes
