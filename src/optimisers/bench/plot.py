"""``--plot FILE.png``: the speed comparison and the loss curves, with matplotlib.

matplotlib is optional (``pip install optimisers[plot]``); without it :func:`plot` raises
:class:`PlotUnavailable` with that advice.
"""

from __future__ import annotations

import math

from .cases import fmt_size

__all__ = ["PlotUnavailable", "pyplot", "plot"]


class PlotUnavailable(RuntimeError):
    """matplotlib cannot be imported."""


def pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotUnavailable(
            "--plot needs matplotlib: pip install 'optimisers[plot]' (or pip install matplotlib)"
        ) from None
    return plt


def _speed(ax, rows):
    cases, impls = [], []
    for r in rows:
        key = (r["rule"], r["dtype"], r["size"], r["leaves"], r["threads"])
        if key not in cases:
            cases.append(key)
        if r["impl"] not in impls and r["impl"] != "probe":
            impls.append(r["impl"])
    by = {
        ((r["rule"], r["dtype"], r["size"], r["leaves"], r["threads"]), r["impl"]): r for r in rows
    }
    h = 0.8 / max(1, len(impls))
    for j, impl in enumerate(impls):
        ys, xs = [], []
        for i, c in enumerate(cases):
            r = by.get((c, impl))
            if r is not None:
                ys.append(i - 0.4 + (j + 0.5) * h)
                xs.append(r["gbps"])
        ax.barh(ys, xs, height=h, label=impl)
    px = [(i, by[(c, "probe")]["gbps"]) for i, c in enumerate(cases) if (c, "probe") in by]
    if px:
        ax.plot(
            [x for _, x in px], [i for i, _ in px], "k|", markersize=14, label="probe (bandwidth)"
        )
    ax.set_yticks(range(len(cases)))
    ax.set_yticklabels(
        [
            f"{ru} {dt} {fmt_size(n)}{'' if lv == 1 else f'/{lv}'} t{t}"
            for ru, dt, n, lv, t in cases
        ],
        fontsize=8,
    )
    ax.invert_yaxis()
    ax.set_xlabel("effective GB/s (minimal bytes / median step time)")
    ax.set_title("speed")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))


# Curves that overlap stay apart: each rule gets its own colour, and the line styles and
# markers cycle against the colours, so two rules on one line are still two lines.
_STYLES = ("-", "--", "-.", ":")
_MARKERS = ("o", "s", "^", "v", "D", "x", "+", "*")
# The log axis shows this many decades below the largest loss, and no more: one rule
# reaching 1e-27 would otherwise squash every other curve to the top of its panel.
_DECADES = 8


def _curves(ax, problem, curves, target):
    shown = []
    for i, ((rule, _), curve) in enumerate((k, v) for k, v in curves.items() if k[1] == problem):
        ys = [c if math.isfinite(c) and c > 0 else math.nan for c in curve]
        shown += [y for y in ys if not math.isnan(y)]
        every = max(1, len(ys) // 8)  # markers staggered from curve to curve
        ax.plot(
            range(len(ys)),
            ys,
            label=rule,
            linewidth=1.2,
            linestyle=_STYLES[i % len(_STYLES)],
            marker=_MARKERS[i % len(_MARKERS)],
            markevery=((i * every // 3) % every, every),
            markersize=4,
        )
    ax.axhline(target, color="k", linestyle=":", linewidth=1, label="target")
    ax.set_yscale("log")
    if shown:
        # the target inside the panel, the curves' range clipped to _DECADES decades
        top = max(max(shown), target) * 2
        bottom = max(min(min(shown), target) / 2, top * 10.0**-_DECADES)
        ax.set_ylim(bottom, top)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(problem)
    ax.legend(fontsize=7)


def plot(results, curves, path):
    """Draw the speed rows and the quality curves of ``results`` into ``path``.

    ``results`` and ``curves`` are what :func:`optimisers.bench.run` returns.

    >>> from optimisers.bench import parse, run
    >>> results, curves = run(parse(["quality", "--tiny", "--rules", "adam"]))
    >>> plot(results, curves, "curves.png")        # doctest: +SKIP
    """
    plt = pyplot()
    speed = results.get("speed") or []
    quality = results.get("quality") or []
    problems = list(dict.fromkeys(r["problem"] for r in quality))
    targets = {r["problem"]: r["target"] for r in quality}
    ncols = max(1, len(problems))
    nrows = (1 if speed else 0) + (1 if problems else 0)
    if nrows == 0:
        raise ValueError("nothing to plot")
    n_cases = len({(r["rule"], r["dtype"], r["size"], r["leaves"], r["threads"]) for r in speed})
    heights = ([max(3.0, 0.35 * n_cases)] if speed else []) + ([3.5] if problems else [])
    fig = plt.figure(figsize=(4.5 * ncols + 1, sum(heights) + 1))
    gs = fig.add_gridspec(nrows, ncols, height_ratios=heights)
    row = 0
    if speed:
        _speed(fig.add_subplot(gs[0, :]), speed)
        row = 1
    for k, p in enumerate(problems):
        _curves(fig.add_subplot(gs[row, k]), p, curves, targets[p])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
