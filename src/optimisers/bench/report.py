"""Output of a run: readable tables (default), JSON (``--json``) or CSV (``--csv``).

A run's *results* are a dict::

    {"meta": {...}, "speed": [row, ...], "per_leaf": [row, ...], "quality": [row, ...],
     "notes": [str, ...]}

with the rows of :mod:`.speed` and :mod:`.quality`.  The text tables leave the probe's own
rows out (its GB/s is the ``bw GB/s`` column of every row of its case); JSON and CSV keep
every row.
"""

from __future__ import annotations

import csv
import io
import json
import math

from .cases import fmt_size

__all__ = ["LEGEND", "to_text", "to_json", "to_csv"]

LEGEND = """\
ms/step   median time of one step (each step timed alone, after warm-up)
GB/s      effective bandwidth: the rule's minimal bytes per step / ms/step (the same
          byte count for every implementation; see optimisers.bench.rules)
bw GB/s   the probe's GB/s: a plain fused OpenMP pass with the rule's access pattern
          (same reads and in-place writes, one array of the same size), timed in this run
% bw      probe time / step time: how close the step comes to the machine's bandwidth
x opt     step time / optimisers' step time in the same case (> 1: optimisers is faster)
          (both ratios paired: the median over the round-robin rounds of each round's ratio)
us/leaf   step time / number of arrays (per-leaf overhead on many tiny arrays)
setup ms  time of optimisers.setup on that model (once)
check     why a row's figures are doubtful (optimisers.bench.busy): >probe (faster than
          the probe), threads (much slower than with fewer threads), unsteady (rounds
          far apart), probe (its case's probe is one of these): signs of a busy machine"""


def _num(x, digits=3):
    """A number for a table: 3 significant digits, no exponent for everyday magnitudes.

    >>> _num(0.012345), _num(45.678), _num(12345.6), _num(None)
    ('0.0123', '45.7', '12346', '-')
    """
    if x is None:
        return "-"
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if x == 0:
        return "0"
    a = abs(x)
    if a >= 1e6:
        return f"{x:.2e}"
    if a >= 10**digits:
        return f"{x:.0f}"
    if a < 1e-3:
        return f"{x:.2e}"
    decimals = max(0, digits - 1 - math.floor(math.log10(a)))
    return f"{x:.{decimals}f}"


def _table(header, rows, align):
    """Plain columns: ``align`` a string of 'l'/'r' per column."""
    cells = [header] + rows
    widths = [max(len(str(r[i])) for r in cells) for i in range(len(header))]
    lines = []
    for k, r in enumerate(cells):
        parts = [
            str(c).ljust(w) if a == "l" else str(c).rjust(w) for c, w, a in zip(r, widths, align)
        ]
        lines.append("  ".join(parts).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _speed_table(rows):
    out = []
    for r in rows:
        if r["impl"] == "probe":
            continue
        out.append(
            [
                r["rule"],
                r["dtype"],
                fmt_size(r["size"]),
                r["leaves"],
                r["threads"],
                r["impl"],
                _num(r["ms"]),
                _num(r["gbps"]),
                _num(r["probe_gbps"]),
                "-" if r["pct_bw"] is None else f"{r['pct_bw']:.0f}%",
                _num(r["vs_opt"]),
                _check(r),
            ]
        )
    return _table(
        [
            "rule",
            "dtype",
            "size",
            "leaves",
            "thr",
            "impl",
            "ms/step",
            "GB/s",
            "bw GB/s",
            "% bw",
            "x opt",
            "check",
        ],
        out,
        "lllrrlrrrrrl",
    )


def _check(row):
    return ",".join(row.get("suspect") or [])


def _per_leaf_table(rows):
    out = [
        [
            r["rule"],
            r["dtype"],
            r["leaves"],
            r["threads"],
            r["impl"],
            _num(r["ms"]),
            _num(r["us_per_leaf"]),
            _num(r["vs_opt"]),
            _num(r.get("setup_ms")),
            _check(r),
        ]
        for r in rows
        if r["impl"] != "probe"
    ]
    return _table(
        [
            "rule",
            "dtype",
            "leaves",
            "thr",
            "impl",
            "ms/step",
            "us/leaf",
            "x opt",
            "setup ms",
            "check",
        ],
        out,
        "llrrlrrrrl",
    )


def _quality_table(rows):
    out = []
    for r in rows:
        hit = r["steps_to_target"]
        out.append(
            [
                r["problem"],
                r["rule"],
                _num(r["lr"]),
                r["steps"],
                _num(r["initial_loss"], 4),
                _num(r["final_loss"], 4),
                _num(r["target"], 4),
                "diverged" if r["diverged"] else ("never" if hit is None else hit),
                f"{r['seconds']:.2f}",
            ]
        )
    return _table(
        ["problem", "rule", "lr", "steps", "initial", "final", "target", "steps to target", "s"],
        out,
        "llrrrrrrr",
    )


def to_text(results):
    """The readable report."""
    meta = results["meta"]
    parts = [f"optimisers-bench: {meta['summary']}"]
    parts += [f"WARNING: {w}" for w in meta.get("busy") or []]
    if results.get("speed"):
        parts += [
            "",
            "Speed: optimisers.update_ per step, the probe and the peers in the same run",
            _speed_table(results["speed"]),
        ]
    if results.get("per_leaf"):
        parts += [
            "",
            "Per-leaf overhead: update_ on many arrays of "
            f"{meta.get('per_leaf_elements', 16)} elements",
            _per_leaf_table(results["per_leaf"]),
        ]
    if results.get("speed") or results.get("per_leaf"):
        parts += ["", LEGEND]
    if results.get("quality"):
        parts += [
            "",
            "Quality: full-batch training from the same start; 'steps to target' "
            "counts updates until the loss first reached the target",
            _quality_table(results["quality"]),
        ]
    if results.get("notes"):
        parts += [""] + [f"note: {n}" for n in results["notes"]]
    parts.append(f"\n({meta['elapsed_s']:.1f} s)")
    return "\n".join(parts) + "\n"


def _clean(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def to_json(results):
    """Strict JSON (NaN and infinities become null)."""
    return json.dumps(_clean(results), indent=2) + "\n"


def _csv_cell(v):
    """None -> empty; a list (``ms_rounds``) -> its numbers separated by spaces.

    >>> _csv_cell(None), _csv_cell([1.5, 2.0]), _csv_cell(3)
    ('', '1.5 2.0', 3)
    """
    if v is None:
        return ""
    if isinstance(v, (list, tuple)):
        return " ".join(map(str, v))
    return v


def to_csv(results):
    """One CSV table of every row; ``section`` tells speed, per_leaf and quality apart."""
    rows = [r for key in ("speed", "per_leaf", "quality") for r in results.get(key, [])]
    fields = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _csv_cell(v) for k, v in r.items()})
    return buf.getvalue()
