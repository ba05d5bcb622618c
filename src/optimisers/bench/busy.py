"""Signs that the machine was busy, and the speed rows whose figures they make doubtful.

On a machine shared with other work, the threads of an OpenMP pass are descheduled
and a 2-thread step can take 50 times as long as a 1-thread one; the probe, timed in the
same rounds, measures that and not the memory, and ``% bw`` then shows figures no memory
could give.  Nothing here changes a figure: a row gets ``suspect`` reasons (shown in the
``check`` column of the table), and the run gets ``busy`` warnings (shown at the top).

A row is suspect when

* ``>probe``: it moved its bytes faster than the probe moved the same pattern (``% bw``
  above 100%): the probe did not measure this case's ceiling;
* ``threads``: it took more than :data:`THREAD_SLOWDOWN` times as long as the same
  implementation of the same case with fewer threads (more threads share the work; only
  threads waiting for a core make it that much slower);
* ``unsteady``: its slowest round-robin round took more than :data:`ROUND_SPREAD` times
  as long as its fastest (the machine's speed changed during the case);
* ``probe``: the probe of its case is one of the above (its ``% bw`` is then no measure
  of the memory).
"""

from __future__ import annotations

__all__ = ["THREAD_SLOWDOWN", "ROUND_SPREAD", "BUSY_LOAD", "flag_rows", "warnings"]

#: more threads than this many times slower than fewer threads: threads were waiting
THREAD_SLOWDOWN = 2.0
#: the slowest round over the fastest beyond this: the machine's speed changed
ROUND_SPREAD = 3.0
#: a load average above this fraction of the CPUs at the start: other work is running
BUSY_LOAD = 0.5


def _case(r):
    return (r["section"], r["rule"], r["dtype"], r["size"], r["leaves"])


def _own_reasons(r, fewer_threads):
    reasons = []
    if r["impl"] != "probe" and r["pct_bw"] is not None and r["pct_bw"] > 100:
        reasons.append(">probe")
    slower = [f["ms"] for f in fewer_threads if r["ms"] > THREAD_SLOWDOWN * f["ms"]]
    if slower:
        reasons.append("threads")
    rounds = r["ms_rounds"]
    if len(rounds) >= 2 and min(rounds) > 0 and max(rounds) > ROUND_SPREAD * min(rounds):
        reasons.append("unsteady")
    return reasons


def flag_rows(rows):
    """Set every row's ``suspect``: the list of its reasons (empty when none).

    >>> r = lambda impl, thr, ms, pct: {"section": "speed", "rule": "adam",
    ...     "dtype": "float32", "size": 10, "leaves": 1, "impl": impl, "threads": thr,
    ...     "ms": ms, "ms_rounds": [ms, ms], "pct_bw": pct}
    >>> rows = [r("probe", 1, 1.0, 100), r("optimisers", 1, 1.0, 100),
    ...         r("probe", 2, 40.0, 100), r("optimisers", 2, 20.0, 200)]
    >>> [row["suspect"] for row in flag_rows(rows)]
    [[], [], ['threads'], ['>probe', 'threads', 'probe']]
    """
    by_impl = {}
    for r in rows:
        by_impl.setdefault((_case(r), r["impl"]), []).append(r)
    for r in rows:
        fewer = [f for f in by_impl[(_case(r), r["impl"])] if f["threads"] < r["threads"]]
        r["suspect"] = _own_reasons(r, fewer)
    probes = {(_case(r), r["threads"]): r for r in rows if r["impl"] == "probe"}
    for r in rows:
        probe = probes.get((_case(r), r["threads"]))
        if r["impl"] != "probe" and probe is not None and probe["suspect"]:
            r["suspect"].append("probe")
    return rows


def warnings(meta, rows):
    """The run's warnings: a busy machine at the start, and how many rows are suspect.

    >>> warnings({"load_average": 3.0, "cpus": 2}, [{"suspect": ["threads"]}])[0]
    'the machine was busy: load average 3.0 on 2 CPUs at the start'
    """
    out = []
    load, cpus = meta.get("load_average"), meta.get("cpus") or 1
    if load is not None and load > BUSY_LOAD * cpus:
        out.append(f"the machine was busy: load average {load:.1f} on {cpus} CPUs at the start")
    suspect = sum(1 for r in rows if r.get("suspect"))
    if suspect:
        out.append(
            f"{suspect} of {len(rows)} speed rows have figures a quiet machine "
            f"does not give (the 'check' column): read them as signs of load, not "
            f"as the speed of the code"
        )
    return out
