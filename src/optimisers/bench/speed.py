"""Speed cases: ``optimisers.update_``, the bandwidth probe and the peers, side by side.

A :class:`Case` is one rule on one model (``size`` elements of one dtype, split over
``leaves`` arrays) at one thread count.  Each implementation of a case builds its own
arrays (so no one's state leaks into another's) with pre-made gradients, and only its
step is timed.  The implementations of one case are timed round-robin
(:func:`timing.measure`); when they would not fit in memory together they are timed one
after the other.

Effective GB/s is the rule's *minimal* byte count (:mod:`.rules`) over the median time, for
every implementation alike, so a peer that moves more bytes shows fewer GB/s.  ``% bw`` is
the time of the probe (a plain fused pass with the rule's access pattern, one array of the
same total size; :mod:`optimisers._probe`) over the implementation's time, and ``vs_opt``
the implementation's time over ours: both paired round by round (:func:`timing.ratio`).
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import sys
import time
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

import optimisers as opt
from optimisers import _probe

# The plain pass compiled with the flags of the kernel build in use (see src/meson.build).
_plain_pass = importlib.import_module(
    "optimisers._plain_pass" + ("" if opt.kernel_isa() == "baseline" else f"_{opt.kernel_isa()}"))

from . import compare, rules
from .timing import Budget, measure, ratio

__all__ = ["Case", "Unavailable", "thread_limit", "run_cases", "optimisers_step",
           "probe_step"]


class Unavailable(Exception):
    """An implementation that cannot run this case (say why)."""


@dataclass(frozen=True)
class Case:
    """One rule, dtype, total size, number of arrays and thread count.

    >>> c = Case("adam", "float32", 10**6, 1000, 2)
    >>> c.bytes, c.leaf_sizes()[:2], c.label()
    (28000000, [1000, 1000], 'adam float32 1e6 /1000 t2')
    """

    rule: str
    dtype: str
    size: int
    leaves: int
    threads: int
    section: str = "speed"          # "speed", or "per_leaf" for the per-leaf overhead

    @property
    def spec(self):
        return rules.get(self.rule)

    @property
    def itemsize(self):
        return np.dtype(self.dtype).itemsize

    @property
    def bytes(self):
        """The minimal bytes of one step (see :mod:`.rules`)."""
        return rules.bytes_per_step(self.spec.passes, self.size, self.itemsize)

    def leaf_sizes(self):
        """``size`` split over ``leaves`` arrays as evenly as possible."""
        q, r = divmod(self.size, self.leaves)
        return [q + (i < r) for i in range(self.leaves)]

    def label(self):
        return (f"{self.rule} {self.dtype} {fmt_size(self.size)}"
                f"{'' if self.leaves == 1 else f' /{self.leaves}'} t{self.threads}")

    @property
    def state_min_bytes(self):
        """The state the rule needs: its largest pass's updated arrays less ``x``."""
        return (max(u for _, u in self.spec.passes) - 1) * self.size * self.itemsize

    def footprint(self):
        """Bytes one implementation of this case holds (x, g and the states)."""
        streams = max(r + u for r, u in self.spec.passes) + 1
        return streams * self.size * self.itemsize


def fmt_size(n):
    """1000000 -> '1e6', 16000000 -> '1.6e7', 2500 -> '2500'.

    >>> fmt_size(10**6), fmt_size(16_000_000), fmt_size(2500), fmt_size(1234567)
    ('1e6', '1.6e7', '2500', '1234567')
    """
    if n >= 10_000:
        e = len(str(n)) - 1
        if n % 10 ** (e - 1) == 0:
            return f"{n / 10 ** e:g}e{e}"
    return str(n)


# ----------------------------------------------------------------------------------------
# arrays

def gradient_values(n, dtype, seed=0):
    """``n`` standard-normal-looking values of ``dtype``, cheap to make at any size."""
    block = np.random.default_rng(seed).standard_normal(min(n, 1 << 16)).astype(dtype)
    return np.resize(block, n)


def make_arrays(case, seed=0):
    """Parameters and gradients of ``case``: two lists of arrays of its leaf sizes."""
    xs, gs = [], []
    for i, n in enumerate(case.leaf_sizes()):
        xs.append(gradient_values(n, case.dtype, seed + 2 * i))
        gs.append(gradient_values(n, case.dtype, seed + 2 * i + 1))
    return xs, gs


@contextlib.contextmanager
def thread_limit(n):
    """Run with ``n`` threads: OpenMP and BLAS pools (threadpoolctl), and torch's own."""
    torch = sys.modules.get("torch")
    old = torch.get_num_threads() if torch is not None else None
    with threadpool_limits(limits=n):
        if torch is not None:
            torch.set_num_threads(n)
        try:
            yield
        finally:
            if torch is not None:
                torch.set_num_threads(old)


# ----------------------------------------------------------------------------------------
# the two implementations of our own

def optimisers_step(case, seed=0):
    """``update_`` of ``case``'s rule on a fresh model: the step, ready to time.

    The step carries ``params`` (the model's arrays), ``setup_s`` (the time ``setup``
    took) and ``state_bytes()`` (the bytes of every array the state tree holds now)."""
    xs, gs = make_arrays(case, seed)
    t0 = time.perf_counter()
    state = opt.setup(case.spec.rule(), xs)
    setup_s = time.perf_counter() - t0

    def step():
        opt.update_(state, xs, gs)
    step.params = xs
    step.setup_s = setup_s
    step.state_bytes = lambda: state_bytes(state)
    return step


def state_bytes(tree):
    """The bytes of the distinct arrays a state tree holds (states and per-leaf buffers)."""
    seen, total = set(), 0
    todo = [tree]
    while todo:
        s = todo.pop()
        if isinstance(s, np.ndarray):
            if id(s) not in seen:
                seen.add(id(s))
                total += s.nbytes
        elif isinstance(s, opt.Leaf):
            todo += [s.state, getattr(s, "_scratch", None)]
        elif isinstance(s, dict):
            todo += list(s.values())
        elif isinstance(s, (list, tuple)):
            todo += list(s)
    return total


def probe_step(case, seed=0):
    """The plain fused passes of ``case``'s access pattern over one array of its size."""
    passes = case.spec.passes
    n_ro = max(r for r, _ in passes)
    n_up = max(u for _, u in passes)
    ro = [gradient_values(case.size, case.dtype, seed + k) for k in range(n_ro)]
    up = [gradient_values(case.size, case.dtype, seed + 10 + k) for k in range(n_up)]
    calls = [(ro[:r] + up[:u], up[:u]) for r, u in passes]
    run = _probe.probe

    def step():
        for reads, writes in calls:
            run(reads, writes)
    return step


#: rules with a plain pass of the same arithmetic (``optimisers._plain_pass``)
PLAIN_RULES = ("adam", "adamw", "momentum", "lion")


def plain_step(case, seed=0):
    """The same arithmetic as ``case``'s rule written as one plain OpenMP loop over the
    whole array -- no tiles, no stages, no per-step scalars -- compiled with the flags of
    the kernel build in use: the yardstick of "a plain fused C pass of the
    same arithmetic".  Its time over ours is how close the engine comes to it."""
    rule = case.spec.rule()
    T = np.dtype(case.dtype).type
    x = gradient_values(case.size, case.dtype, seed)
    g = gradient_values(case.size, case.dtype, seed + 1)
    zeros = lambda: np.zeros(case.size, case.dtype)   # noqa: E731
    one = T(1)
    if case.rule in ("adam", "adamw"):
        b1, b2 = T(rule.beta[0]), T(rule.beta[1])
        hp = (b1, b2, one - b1, one - b2, one - b1, one - b2, T(rule.epsilon), T(rule.eta))
        if case.rule == "adamw":
            hp += (T(rule.lambda_),)
        bufs = (zeros(), zeros())
    elif case.rule == "momentum":
        hp, bufs = (T(rule.eta), T(rule.rho)), (zeros(),)
    else:
        b1, b2 = T(rule.beta[0]), T(rule.beta[1])
        hp, bufs = (b1, b2, one - b1, one - b2, T(rule.eta)), (zeros(),)
    hp = tuple(float(h) for h in hp)
    run = _plain_pass.plain_pass

    def step():
        run(case.rule, x, g, bufs, hp)
    return step


ALWAYS = ("optimisers", "probe")      # every case times these two (x opt, % bw)


def implementations(case, with_peers, only=None):
    """The ``(name, builder)`` pairs that run ``case``: ours, the probe, the plain pass of
    the same arithmetic where there is one, and the peers; with ``only`` (a set of names),
    just those of them (ours and the probe always)."""
    impls = [("optimisers", optimisers_step), ("probe", probe_step)]
    if case.rule in PLAIN_RULES and case.leaves == 1 and case.section == "speed":
        impls.append(("plain", plain_step))
    if with_peers:
        impls += compare.builders(case)
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
        "section": case.section, "impl": impl, "rule": case.rule, "dtype": case.dtype,
        "size": case.size, "leaves": case.leaves, "threads": case.threads,
        "ms": ms, "ms_best": t.best * 1e3, "ms_q1": t.q1 * 1e3, "ms_q3": t.q3 * 1e3,
        "steps": t.steps, "ms_rounds": [x * 1e3 for x in t.by_round],
        "bytes": case.bytes, "gbps": gbps,
        "probe_gbps": case.bytes / probe.median / 1e9 if probe else None,
        "pct_bw": 100.0 / ratio(t, probe) if probe else None,
        "vs_opt": ratio(t, ours) if ours else None,
        "us_per_leaf": ms * 1e3 / case.leaves,
        "setup_ms": None, "state_bytes": None, "state_min_bytes": case.state_min_bytes,
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
        notes.append(f"skipped {case.label()}: needs about {need / 1e9:.1f} GB, "
                     f"{avail / 1e9:.1f} GB available")
        return []
    together = avail is None or need * len(impls) < 0.7 * avail
    if not together:
        _note_once(notes, f"{case.label()}: implementations timed one after the other "
                          f"(not enough memory for all at once; see --impls)")
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
                try:                        # a peer may fail on its first step
                    f()
                except Exception as e:      # noqa: BLE001 - report and go on
                    _note_once(notes, f"{name} failed on {case.label()}: "
                                      f"{type(e).__name__}: {e}")
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
    except Exception as e:                  # noqa: BLE001
        _note_once(notes, f"{name} failed: {type(e).__name__}: {e}")
        return {}
    one = Budget(budget.warmup, budget.min_steps, budget.max_steps, budget.min_time,
                 budget.max_time, rounds=1)
    return measure({name: step}, one)


def _note_once(notes, text):
    if text not in notes:
        notes.append(text)


def run_cases(cases, with_peers=False, budget=Budget(), progress=None, notes=None,
              only=None):
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
