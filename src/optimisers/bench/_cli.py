"""The command line of ``optimisers-bench`` (also ``python -m optimisers.bench``)."""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import asdict

import numpy as np

import optimisers as opt
import optimisers._probe as _probe  # (a compiled module: mypy skips it)

from . import busy, compare, distributed, plot, problems, quality, report, rules, speed, torch_step
from .cases import Case
from .timing import Budget, Progress

__all__ = ["main", "parse", "run", "DEFAULTS", "TINY"]

# The default run: the README's main-job command (under a minute on 2 busy cores).
DEFAULTS = dict(
    rules="adam,momentum,lion",
    sizes="1e6,1e7",
    dtypes="float32",
    leaves="1",
    many="1000x1000",
    threads="1,2",
    per_leaf=10000,
    steps=None,
    problems=",".join(problems.PROBLEMS),
    budget=Budget(),
)
# --tiny: a smoke test of every part in a few seconds (CI).
TINY = dict(
    rules="adam,momentum,lion",
    sizes="1e5",
    dtypes="float32",
    leaves="1",
    many="10x1000",
    threads="1,2",
    per_leaf=200,
    steps=60,
    problems=",".join(problems.PROBLEMS),
    budget=Budget(warmup=1, min_steps=3, max_steps=50, min_time=0.005, max_time=0.1, rounds=3),
)

_EPILOG = """\
examples:
  optimisers-bench                                  the main job (under a minute)
  optimisers-bench --compare                        ... with torch.optim and numpy
  optimisers-bench --rules adam,clipnorm+adamw --sizes 1e8 --threads 1,2 --compare
  optimisers-bench --dtypes float32,float64 --leaves 1,1000 --json > out.json
  optimisers-bench quality --rules adam,lion,descent --plot curves.png
  optimisers-bench --list                           rules, byte counts, problems
  optimisers-bench distributed --ranks 2 --sizes 1e7,1e8   sharded state under mpiexec
  optimisers-bench torch-step                       optimisers.torch.Optimizer vs torch.optim
"""


def _parser():
    p = argparse.ArgumentParser(
        prog="optimisers-bench",
        description="Time optimisers' update_ against the machine's bandwidth (and torch "
        "and numpy with --compare), or compare what rules achieve (quality).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "mode",
        nargs="?",
        choices=["speed", "quality"],
        default="speed",
        help="speed (default: speed tables, then a short quality table) or "
        "quality (the quality table only)",
    )
    a = p.add_argument
    a(
        "--rules",
        help=f"comma-separated rule names (default {DEFAULTS['rules']}; --list shows them)",
    )
    a(
        "--sizes",
        help="total elements per model, e.g. 1e6,1e8 or 10M (default 1e6,1e7); "
        "'none' for only --many models",
    )
    a("--dtypes", help="float32,float64 (default float32)")
    a("--leaves", help="split each size over this many arrays, e.g. 1,1000 (default 1)")
    a(
        "--many",
        help="extra many-array models COUNTxSIZE, e.g. 1000x1000 (the default); 'none' for none",
    )
    a("--threads", help="OpenMP thread counts, e.g. 1,2 or 'max' (default 1,2)")
    a(
        "--per-leaf",
        type=int,
        metavar="N",
        help="per-leaf overhead: Adam float32 on N arrays of 16 elements (default 10000; 0 skips)",
    )
    a(
        "--compare",
        action="store_true",
        help="also run torch.optim (loop, foreach, fused) and plain numpy where installed",
    )
    a(
        "--impls",
        help="only these implementations besides optimisers and the probe, e.g. "
        "plain,torch-fused (implies --compare when it names a peer)",
    )
    a("--quality", action="store_true", help="the quality mode only (same as 'quality')")
    a("--no-quality", action="store_true", help="skip the quality table of a speed run")
    a("--problems", help=f"quality problems (default {','.join(problems.PROBLEMS)})")
    a("--steps", type=int, help="quality: steps for every problem (default: each problem's own)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print JSON instead of tables")
    out.add_argument("--csv", action="store_true", help="print CSV instead of tables")
    a("--plot", metavar="FILE.png", help="draw the comparison and loss curves (matplotlib)")
    a("--tiny", action="store_true", help="a smoke test of everything in a few seconds")
    a(
        "--min-time",
        type=float,
        metavar="S",
        help="seconds of timed steps per implementation and case (default 0.25)",
    )
    a("--min-steps", type=int, metavar="N", help="timed steps at least (default 10)")
    a("--warmup", type=int, metavar="N", help="untimed steps first (default 3)")
    a("--rounds", type=int, metavar="N", help="round-robin rounds (default 3)")
    prog = p.add_mutually_exclusive_group()
    prog.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=None,
        help="progress bar on stderr (default: when stderr is a terminal)",
    )
    prog.add_argument("--no-progress", dest="progress", action="store_false")
    a("--list", action="store_true", help="list the rules (with byte counts) and problems")
    return p


# ----------------------------------------------------------------------------------------
# parsing helpers

_SUFFIX = {"k": 10**3, "m": 10**6, "g": 10**9}


def parse_count(text):
    """'1e6', '1_000_000', '10M', '4k' -> int (> 0).

    >>> parse_count("1e6"), parse_count("10M"), parse_count("4k")
    (1000000, 10000000, 4000)
    """
    t = text.strip().lower().replace("_", "")
    mult = _SUFFIX.get(t[-1:], 1)
    if mult != 1:
        t = t[:-1]
    value = float(t) * mult
    if value < 1 or value != int(value):
        raise ValueError(f"not a positive whole count: {text!r}")
    return int(value)


def _list(text, conv, what, parser):
    try:
        items = [conv(s) for s in text.split(",") if s.strip()]
    except (ValueError, KeyError) as e:
        parser.error(f"--{what}: {e}")
    if not items:
        parser.error(f"--{what}: empty list")
    return list(dict.fromkeys(items))


def _threads(s):
    return os.cpu_count() or 1 if s.strip() == "max" else parse_count(s)


def _dtype(s):
    d = np.dtype(s.strip())
    if d not in (np.float32, np.float64):
        raise ValueError(f"the benchmark runs float32 and float64, not {s!r}")
    return d.name


def _many(s):
    count, _, size = s.strip().lower().partition("x")
    if not size:
        raise ValueError(f"expected COUNTxSIZE like 1000x1000, got {s!r}")
    return parse_count(count), parse_count(size)


def _rule(s):
    return rules.get(s).name


def parse(argv=None):
    """Parse ``argv``; returns the resolved settings (an ``argparse.Namespace``).

    >>> ns = parse(["--rules", "adam,clipnorm+adamw", "--sizes", "1e8", "--many", "none"])
    >>> ns.rules, ns.sizes, ns.threads, ns.many, ns.mode
    (['adam', 'clipnorm+adamw'], [100000000], [1, 2], [], 'speed')
    """
    p = _parser()
    ns = p.parse_args(argv)
    base = TINY if ns.tiny else DEFAULTS
    ns.mode = "quality" if ns.quality else ns.mode
    ns.rules = _list(ns.rules or base["rules"], _rule, "rules", p)
    sizes = ns.sizes or base["sizes"]
    ns.sizes = [] if sizes.strip().lower() == "none" else _list(sizes, parse_count, "sizes", p)
    ns.dtypes = _list(ns.dtypes or base["dtypes"], _dtype, "dtypes", p)
    ns.leaves = _list(ns.leaves or base["leaves"], parse_count, "leaves", p)
    ns.threads = _list(ns.threads or base["threads"], _threads, "threads", p)
    many = ns.many if ns.many is not None else base["many"]
    ns.many = [] if many.strip().lower() in ("", "none", "0") else _list(many, _many, "many", p)
    ns.per_leaf = base["per_leaf"] if ns.per_leaf is None else ns.per_leaf
    if ns.per_leaf < 0:
        p.error("--per-leaf: must be >= 0")
    ns.problems = _list(
        ns.problems or base["problems"], lambda s: problems.get(s).name, "problems", p
    )
    ns.steps = base["steps"] if ns.steps is None else ns.steps
    if ns.steps is not None and ns.steps < 1:
        p.error("--steps: must be >= 1")
    b = base["budget"]
    ns.budget = Budget(
        warmup=b.warmup if ns.warmup is None else ns.warmup,
        min_steps=b.min_steps if ns.min_steps is None else ns.min_steps,
        max_steps=max(b.max_steps, ns.min_steps or 0),
        min_time=b.min_time if ns.min_time is None else ns.min_time,
        max_time=max(b.max_time, 4 * (ns.min_time or 0)),
        rounds=b.rounds if ns.rounds is None else ns.rounds,
    )
    ns.impls = _impls(ns, p)
    if ns.progress is None:
        ns.progress = sys.stderr.isatty()
    return ns


IMPLS = ("plain", "torch-loop", "torch-foreach", "torch-fused", "numpy", "optimisers.torch")
PEERS = IMPLS[1:]


def _impls(ns, p):
    """The set of --impls (None: all); naming a peer turns --compare on."""
    if ns.impls is None:
        return None
    names = {n.strip() for n in ns.impls.split(",") if n.strip()}
    unknown = sorted(names - set(IMPLS) - {"optimisers", "probe"})
    if unknown:
        p.error(f"--impls: unknown {', '.join(unknown)} (known: {', '.join(IMPLS)})")
    if names & set(PEERS):
        ns.compare = True
    return names


# ----------------------------------------------------------------------------------------
# running


def speed_cases(ns):
    """Every speed case of the settings, then the per-leaf cases."""
    cases = []
    for rule in ns.rules:
        for dtype in ns.dtypes:
            shapes = [(size, min(leaves, size)) for size in ns.sizes for leaves in ns.leaves]
            shapes += [(count * size, count) for count, size in ns.many]
            for size, leaves in dict.fromkeys(shapes):
                for t in ns.threads:
                    cases.append(Case(rule, dtype, size, leaves, t))
    if ns.per_leaf:
        for t in ns.threads:
            cases.append(
                Case("adam", "float32", 16 * ns.per_leaf, ns.per_leaf, t, section="per_leaf")
            )
    return cases


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _meta(ns, argv):
    torch = compare.torch_module() if ns.compare else None
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    meta = {
        "argv": list(argv),
        "mode": ns.mode,
        "optimisers": opt.__version__,
        "numpy": np.__version__,
        "torch": torch.__version__ if torch else None,
        "python": platform.python_version(),
        "cpu": _cpu_name(),
        "cpus": os.cpu_count(),
        "openmp": bool(opt.openmp_enabled() and _probe.openmp_enabled()),
        "load_average": load,
        "threads": ns.threads,
        "per_leaf_elements": 16,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    meta["summary"] = (
        f"optimisers {meta['optimisers']}, numpy {meta['numpy']}"
        + (f", torch {meta['torch']}" if meta["torch"] else "")
        + f", Python {meta['python']}; {meta['cpus']} CPUs ({meta['cpu']}), "
        + f"OpenMP {'on' if meta['openmp'] else 'OFF'}"
        + (f"; load average {load:.1f} at start" if load is not None else "")
    )
    return meta


def run(ns, argv=()):
    """Run what ``ns`` (from :func:`parse`) asks: ``(results, curves)``."""
    t0 = time.perf_counter()
    results = {"meta": None, "speed": [], "per_leaf": [], "quality": [], "notes": []}
    do_speed = ns.mode == "speed"
    do_quality = ns.mode == "quality" or not ns.no_quality
    cases = speed_cases(ns) if do_speed else []
    n_quality = quality.runs(ns.rules, ns.problems) if do_quality else 0
    progress = Progress(len(cases) + n_quality, enabled=ns.progress)
    results["meta"] = _meta(ns, argv)
    results["meta"]["budget"] = asdict(ns.budget)
    curves = {}
    try:
        if cases:
            rows, _ = speed.run_cases(
                cases, ns.compare, ns.budget, progress, results["notes"], ns.impls
            )
            busy.flag_rows(rows)
            results["speed"] = [r for r in rows if r["section"] == "speed"]
            results["per_leaf"] = [r for r in rows if r["section"] == "per_leaf"]
        if n_quality:
            results["quality"], curves = quality.run_quality(
                ns.rules, ns.problems, ns.steps, progress
            )
    finally:
        progress.close()
    results["meta"]["busy"] = busy.warnings(results["meta"], results["speed"] + results["per_leaf"])
    results["meta"]["elapsed_s"] = time.perf_counter() - t0
    return results, curves


def _list_text():
    lines = ["rules (minimal traffic per element: passes of (read-only, updated) arrays)"]
    for name in rules.names():
        spec = rules.get(name)
        n = rules.arrays_per_element(spec.passes)
        lines.append(
            f"  {name:18s} {n} arrays = {4 * n:2d} B/elem float32, "
            f"{8 * n:2d} B/elem float64   {spec.doc}"
        )
    lines.append("problems")
    for name, pr in problems.PROBLEMS.items():
        lines.append(f"  {name:12s} {pr.steps:5d} steps, target {pr.target:.4g}: {pr.description}")
    return "\n".join(lines) + "\n"


def main(argv=None):
    """The ``optimisers-bench`` command; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["distributed"]:  # its own options (bench/distributed.py)
        return distributed.main(argv[1:])
    if argv[:1] == ["torch-step"]:  # optimisers.torch.Optimizer vs torch.optim
        torch_step.main(argv[1:])
        return 0
    ns = parse(argv)
    if ns.list:
        sys.stdout.write(_list_text())
        return 0
    if ns.plot:
        try:
            plot.pyplot()
        except plot.PlotUnavailable as e:
            print(f"optimisers-bench: {e}", file=sys.stderr)
            return 2
    results, curves = run(ns, argv)
    if ns.plot:
        plot.plot(results, curves, ns.plot)
        results["notes"].append(f"plot written to {ns.plot}")
    if ns.json:
        out = report.to_json(results)
    elif ns.csv:
        out = report.to_csv(results)
    else:
        out = report.to_text(results)
    sys.stdout.write(out)
    sys.stdout.flush()
    return 0
