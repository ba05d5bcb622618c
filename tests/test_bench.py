"""optimisers-bench: the command at --tiny size (table, JSON, CSV, quality, plot), the
bandwidth probe against numpy, and the peers of --compare against optimisers' own results.

No timing is asserted anywhere: only that the figures are consistent with each other."""

import csv
import io
import json
import math
import statistics
import types

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import optimisers as opt
from optimisers import _native, _probe
from optimisers.bench import cases, compare, main, parse, rules, speed, yardsticks
from optimisers.bench.cases import Case, Unavailable
from optimisers.bench.yardsticks import PLAIN_RULES

TINY = ["--tiny", "--no-progress"]


def run_main(capsys, *args):
    code = main(TINY + list(args))
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


@pytest.fixture(scope="module")
def tiny_json():
    """One --tiny --json run shared by the consistency tests."""
    import contextlib

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(TINY + ["--json"]) == 0
    return json.loads(buf.getvalue())


# ----------------------------------------------------------------------------------------
# the command


def test_tiny_table(capsys):
    out = run_main(capsys)
    for title in ("Speed:", "Per-leaf overhead", "Quality:", "ms/step", "% bw"):
        assert title in out
    for rule in ("adam", "momentum", "lion"):
        assert rule in out
    for problem in ("rosenbrock", "logistic", "spirals"):
        assert problem in out


def test_tiny_json_fields(tiny_json):
    meta = tiny_json["meta"]
    assert meta["threads"] == [1, 2] and meta["optimisers"] == opt.__version__
    assert meta["elapsed_s"] > 0
    ns = parse(TINY)
    speed_rows = tiny_json["speed"]
    cases = {(r["rule"], r["dtype"], r["size"], r["leaves"], r["threads"]) for r in speed_rows}
    # 3 rules x (1 size + 1 many-array model) x 2 thread counts
    assert len(cases) == len(ns.rules) * (len(ns.sizes) + len(ns.many)) * len(ns.threads)
    for case in cases:
        impls = {
            r["impl"]
            for r in speed_rows
            if (r["rule"], r["dtype"], r["size"], r["leaves"], r["threads"]) == case
        }
        # the plain pass of the same arithmetic joins single-array cases of the rules
        # that have one
        plain = case[0] in PLAIN_RULES and case[3] == 1
        assert impls == {"optimisers", "probe"} | ({"plain"} if plain else set())
    assert len(tiny_json["per_leaf"]) == 2 * len(ns.threads)  # ours and the probe
    for r in tiny_json["per_leaf"]:
        assert r["leaves"] == ns.per_leaf and r["size"] == 16 * ns.per_leaf
    assert {r["problem"] for r in tiny_json["quality"]} == {"rosenbrock", "logistic", "spirals"}


def test_tiny_json_consistency(tiny_json):
    rows = tiny_json["speed"] + tiny_json["per_leaf"]
    by_case = {}
    for r in rows:
        by_case.setdefault((r["rule"], r["dtype"], r["size"], r["leaves"], r["threads"]), {})[
            r["impl"]
        ] = r
    for impls in by_case.values():
        ours, probe = impls["optimisers"], impls["probe"]
        for r in impls.values():
            spec = rules.get(r["rule"])
            itemsize = np.dtype(r["dtype"]).itemsize
            assert r["bytes"] == rules.arrays_per_element(spec.passes) * r["size"] * itemsize
            assert r["gbps"] == pytest.approx(r["bytes"] / (r["ms"] * 1e-3) / 1e9, rel=1e-9)
            assert r["probe_gbps"] == pytest.approx(probe["gbps"], rel=1e-9)
            # the ratios are paired: the median over the rounds of each round's ratio
            assert len(r["ms_rounds"]) == len(ours["ms_rounds"]) == 3  # --tiny: 3 rounds
            assert min(r["ms_rounds"]) <= r["ms"] <= max(r["ms_rounds"])
            assert r["pct_bw"] == pytest.approx(
                100 / statistics.median(a / p for a, p in zip(r["ms_rounds"], probe["ms_rounds"])),
                rel=1e-9,
            )
            assert r["vs_opt"] == pytest.approx(
                statistics.median(a / o for a, o in zip(r["ms_rounds"], ours["ms_rounds"])),
                rel=1e-9,
            )
            assert r["us_per_leaf"] == pytest.approx(r["ms"] * 1e3 / r["leaves"], rel=1e-9)
            assert 0 < r["ms_best"] <= r["ms"] and r["ms_q1"] <= r["ms"] <= r["ms_q3"]
            assert r["steps"] >= 3
        assert ours["vs_opt"] == 1.0
        # the state holds what the rule needs (+ a few scalars per array, Adam's beta^t)
        assert ours["setup_ms"] > 0
        assert 0 <= ours["state_bytes"] - ours["state_min_bytes"] <= 64 * ours["leaves"]


def test_doubtful_figures_are_flagged(tiny_json):
    """No row shows a bandwidth fraction above the probe's without saying so, and a busy
    start is a warning of the run."""
    rows = tiny_json["speed"] + tiny_json["per_leaf"]
    for r in rows:
        assert isinstance(r["suspect"], list)
        if r["impl"] != "probe" and r["pct_bw"] is not None and r["pct_bw"] > 100:
            assert ">probe" in r["suspect"]
    meta = tiny_json["meta"]
    busy_start = meta["load_average"] is not None and meta["load_average"] > meta["cpus"] / 2
    assert any("busy" in w for w in meta["busy"]) == busy_start
    assert any("speed rows" in w for w in meta["busy"]) == any(r["suspect"] for r in rows)


def test_byte_counts():
    a = rules.arrays_per_element
    assert a(rules.get("adam").passes) == 7  # x, g, m, v read; x, m, v written
    assert a(rules.get("adamw").passes) == 7
    assert a(rules.get("momentum").passes) == 5
    assert a(rules.get("lion").passes) == 5
    assert a(rules.get("descent").passes) == 3
    assert a(rules.get("clipnorm+adamw").passes) == 8
    assert Case("adam", "float32", 10, 1, 1).bytes == 280
    assert Case("adam", "float64", 10, 1, 1).bytes == 560


def test_rules_come_from_the_registry():
    """Every built-in rule that builds with no arguments is a rule of the benchmark, with
    the bytes its state says it moves."""
    names = rules.names()
    for cls in opt.RULES:
        try:
            cls()
        except TypeError:
            continue
        if cls is opt.OptimiserChain:
            assert "optimiserchain" not in names  # chains are named by their parts
            continue
        assert cls.__name__.lower() in names
        state = cls().init(np.zeros(7))
        arrays = sum(a.size == 7 for a in rules.state_arrays(state))
        norm = 1 if cls in (opt.ClipNorm, opt.ClipGlobalNorm, opt.SkipNonFinite) else 0
        norm += rules.PRE_PASS.get(cls.__name__.lower(), 0)  # Adafactor's, LAMB's norms
        assert rules.arrays_per_element(rules.get(cls.__name__).passes) == 3 + 2 * arrays + norm


def test_a_new_rule_joins_the_benchmark(monkeypatch):
    """A rule added to the registry is timed with nothing in the bench to edit."""

    class ThreeMoments(opt.Rule):
        def __init__(self, eta=0.1):
            self.eta = eta

        def init(self, x):
            return (np.zeros_like(x), np.zeros_like(x), np.zeros_like(x), np.float64(0))

        def apply(self, state, x, dx):
            return state, self.eta * dx

    monkeypatch.setattr(opt, "RULES", opt.RULES + (ThreeMoments,))
    rules._single_rules.cache_clear()
    rules._spec.cache_clear()
    try:
        assert "threemoments" in rules.names()
        assert Case("threemoments", "float32", 10, 1, 1).bytes == (1 + 2 * 4) * 10 * 4
        assert rules.get("clipnorm+threemoments").passes == ((1, 0), (1, 4))
        assert rules.get("threemoments").rule(0.5).eta == 0.5
    finally:
        monkeypatch.undo()
        rules._single_rules.cache_clear()
        rules._spec.cache_clear()
    assert "threemoments" not in rules.names()


def test_tiny_csv(capsys, tiny_json):
    out = run_main(capsys, "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    sections = [r["section"] for r in rows]
    assert sections.count("speed") == len(tiny_json["speed"])
    assert sections.count("per_leaf") == len(tiny_json["per_leaf"])
    assert sections.count("quality") == len(tiny_json["quality"])
    for r in rows:
        if r["section"] != "quality":
            ms, b, gbps = float(r["ms"]), int(r["bytes"]), float(r["gbps"])
            assert gbps == pytest.approx(b / (ms * 1e-3) / 1e9, rel=1e-6)


def test_quality_mode_losses_decrease(capsys):
    out = run_main(
        capsys, "quality", "--rules", "adam,momentum,descent,lion,clipnorm+adamw", "--json"
    )
    res = json.loads(out)
    assert res["speed"] == [] and res["per_leaf"] == []
    assert len(res["quality"]) == (5 + 1) * 3  # and the training recipe's row
    for r in res["quality"]:
        assert math.isfinite(r["final_loss"]) and not r["diverged"]
        assert r["final_loss"] < r["initial_loss"], r
        assert r["steps"] == 60


def test_compare_tiny(capsys):
    out = run_main(
        capsys,
        "--compare",
        "--rules",
        "adam,lion,clipnorm+adamw",
        "--many",
        "none",
        "--per-leaf",
        "0",
        "--no-quality",
        "--threads",
        "1",
        "--json",
    )
    res = json.loads(out)
    impls = {(r["rule"], r["impl"]) for r in res["speed"]}
    for rule in ("adam", "lion", "clipnorm+adamw"):
        assert (rule, "numpy") in impls and (rule, "optimisers") in impls
    if compare.torch_module() is not None:
        assert ("adam", "torch-loop") in impls and ("adam", "torch-foreach") in impls
        assert ("clipnorm+adamw", "torch-loop") in impls
        assert any("Lion" in n or "lion" in n for n in res["notes"])
    else:
        assert any("torch is not installed" in n for n in res["notes"])


def test_impls_narrows_the_implementations(capsys):
    res = json.loads(
        run_main(
            capsys,
            "--impls",
            "plain,numpy",
            "--rules",
            "adam",
            "--sizes",
            "2e4",
            "--many",
            "none",
            "--per-leaf",
            "0",
            "--no-quality",
            "--threads",
            "1",
            "--json",
        )
    )
    # naming a peer turns the comparison on; ours and the probe always run
    assert {r["impl"] for r in res["speed"]} == {"optimisers", "probe", "plain", "numpy"}
    assert all(r["pct_bw"] is not None for r in res["speed"])
    with pytest.raises(SystemExit):
        main(["--impls", "plain,nonsense"])


def test_sizes_none_runs_only_the_many_models(capsys):
    res = json.loads(
        run_main(
            capsys,
            "--sizes",
            "none",
            "--many",
            "20x500",
            "--rules",
            "descent",
            "--threads",
            "1",
            "--per-leaf",
            "0",
            "--no-quality",
            "--json",
        )
    )
    assert {(r["size"], r["leaves"]) for r in res["speed"]} == {(10000, 20)}
    assert res["per_leaf"] == [] and res["quality"] == []


def test_list_and_errors(capsys):
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "clipnorm+adamw" in out and "28 B/elem float32" in out
    with pytest.raises(SystemExit):
        main(["--rules", "nonsense"])
    with pytest.raises(SystemExit):
        main(["--sizes", "0"])
    with pytest.raises(SystemExit):
        main(["--dtypes", "float16"])


# ----------------------------------------------------------------------------------------
# plotting


def test_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    path = tmp_path / "bench.png"
    run_main(capsys, "--rules", "adam", "--threads", "1", "--per-leaf", "0", "--plot", str(path))
    assert path.stat().st_size > 1000
    path2 = tmp_path / "quality.png"
    run_main(capsys, "quality", "--rules", "adam,lion", "--plot", str(path2))
    assert path2.stat().st_size > 1000


def test_plot_without_matplotlib(monkeypatch, capsys, tmp_path):
    from optimisers.bench import plot

    def missing():
        raise plot.PlotUnavailable("--plot needs matplotlib: pip install 'optimisers[plot]'")

    monkeypatch.setattr(plot, "pyplot", missing)
    assert main(TINY + ["--plot", str(tmp_path / "x.png")]) == 2
    assert "matplotlib" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


# ----------------------------------------------------------------------------------------
# the probe


def _reference(reads, writes):
    """What the probe computes, in numpy: the mean of the reads into every written array."""
    ids = {id(w) for w in writes}
    order = [a for a in reads if id(a) not in ids] + [a for a in reads if id(a) in ids]
    inv = reads[0].dtype.type(1) / reads[0].dtype.type(len(reads))
    s = np.zeros_like(reads[0])
    for a in order:
        s = s + a
    s = s * inv
    outs_order = [a for a in reads if id(a) in ids] + [
        w for w in writes if id(w) not in {id(r) for r in reads}
    ]
    return (
        s,
        [
            s * (s.dtype.type(1) - s.dtype.type(j) / s.dtype.type(16))
            for j in range(len(outs_order))
        ],
        outs_order,
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [0, 1, 17, 1001, 100_003])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(
    "pattern",
    [
        (1, 0, 0),
        (2, 0, 0),
        (1, 1, 0),
        (1, 2, 0),
        (1, 3, 0),
        (1, 4, 0),
        (2, 1, 1),
        (0, 2, 0),
        (3, 0, 2),
        (1, 0, 1),
    ],
)
def test_probe_matches_numpy(dtype, n, threads, pattern):
    n_ro, n_up, n_wo = pattern
    rng = np.random.default_rng(n + 7 * n_up)
    ro = [rng.standard_normal(n).astype(dtype) for _ in range(n_ro)]
    up = [rng.standard_normal(n).astype(dtype) for _ in range(n_up)]
    wo = [np.full(n, np.nan, dtype) for _ in range(n_wo)]
    reads, writes = up[:1] + ro + up[1:], up + wo  # updated arrays anywhere in reads
    s, expected, outs = _reference(reads, writes)  # before the probe writes
    ro_before = [a.copy() for a in ro]
    with threadpool_limits(threads, "openmp"):
        total = _probe.probe(reads, writes)
    for out, e in zip(outs, expected):
        np.testing.assert_allclose(out, e, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6)
    for a, b in zip(ro, ro_before):
        np.testing.assert_array_equal(a, b)  # read-only arrays untouched
    if writes:
        assert total is None
    else:
        assert total == pytest.approx(float(np.sum(s, dtype=np.float64)), rel=1e-4, abs=1e-3)


def test_probe_values_stay_bounded():
    g = np.random.default_rng(0).standard_normal(4096).astype(np.float32)
    x, m, v = (np.ones(4096, np.float32) * k for k in (1e3, -1e3, 5.0))
    with threadpool_limits(1, "openmp"):
        for _ in range(300):
            _probe.probe([x, g, m, v], [x, m, v])
    for a in (x, m, v):
        assert np.all(np.isfinite(a)) and np.abs(a).max() <= 1e3
        tiny = np.abs(a[a != 0])
        assert tiny.size == 0 or tiny.min() > np.finfo(np.float32).tiny  # no denormals


def test_probe_refuses_bad_input():
    a, b = np.zeros(8), np.zeros(8)
    with pytest.raises(ValueError, match="overlap"):
        big = np.zeros(16)
        _probe.probe([big[:8], big[4:12]], [])
    with pytest.raises(ValueError, match="one dtype"):
        _probe.probe([a, b.astype(np.float32)], [])
    with pytest.raises(ValueError, match="one dtype and one size"):
        _probe.probe([a, np.zeros(9)], [])
    with pytest.raises(TypeError):
        _probe.probe([a.astype(np.int64)], [])
    with pytest.raises(ValueError, match="at most"):
        _probe.probe([np.zeros(8) for _ in range(_probe.MAX_READ_ONLY + 1)], [])
    with pytest.raises(ValueError, match="read-only"):
        r = np.zeros(8)
        r.flags.writeable = False
        _probe.probe([b], [r])
    with pytest.raises(ValueError, match="at least one"):
        _probe.probe([], [a])
    with pytest.raises(ValueError, match="C-contiguous"):
        _probe.probe([np.zeros(16)[::2]], [])


def test_plain_pass_is_built_for_every_kernel_build():
    """The plain pass exists with the flags of every kernel build."""
    assert set(_native.builds()) <= set(_probe.plain_pass_isas())


@pytest.mark.parametrize("rule", ["adam", "adamw", "momentum", "lion"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_plain_pass_is_the_rules_step(rule, dtype):
    """Every build of the plain pass computes the rule's first step, as optimisers does."""
    case = Case(rule, dtype, 5000, 1, 1)
    ours = speed.optimisers_step(case)
    ours()
    spec_rule = case.spec.rule()
    T = np.dtype(dtype).type
    hp, n_buffers = yardsticks._plain_hyperparameters(case, spec_rule, T)
    for isa in _native.builds():
        x, g = (a[0].copy() for a in cases.make_arrays(case))
        buffers = tuple(np.zeros_like(x) for _ in range(n_buffers))
        _probe.plain_pass(isa, rule, x, g, buffers, tuple(float(h) for h in hp))
        np.testing.assert_allclose(
            x, ours.params[0], rtol=1e-6 if dtype == "float32" else 1e-14, err_msg=isa
        )


# ----------------------------------------------------------------------------------------
# the peers compute the same step as optimisers (so the comparison is fair)


def _after_steps(step, k=3):
    for _ in range(k):
        step()
    return [x.copy() for x in step.params]


@pytest.mark.parametrize("rule", ["descent", "momentum", "lion", "adam", "adamw", "clipnorm+adamw"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_numpy_peer_matches_optimisers(rule, dtype):
    case = Case(rule, dtype, 3000, 3, 1)
    ours = _after_steps(speed.optimisers_step(case))
    theirs = _after_steps(dict(compare.builders(case))["numpy"](case))
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(
            a,
            b,
            rtol=1e-4 if dtype == "float32" else 1e-10,
            atol=1e-6 if dtype == "float32" else 1e-14,
        )


@pytest.mark.parametrize("rule", ["descent", "momentum", "adam", "adamw"])
def test_torch_peers_match_optimisers(rule):
    if compare.torch_module() is None:
        pytest.skip(
            "torch is not installed (pip install torch): the torch peers of "
            "--compare are not checked"
        )
    case = Case(rule, "float64", 3000, 1, 1)  # one array: ClipNorm's norm is the same
    start = [x.copy() for x in speed.optimisers_step(case).params]
    ours = _after_steps(speed.optimisers_step(case))
    assert not any(np.array_equal(a, b) for a, b in zip(ours, start))  # the steps move x
    compared = []
    for name, build in compare.builders(case):
        if name == "numpy":
            continue
        try:
            step = build(case)
        except Unavailable:
            # only torch's fused kernels may be missing from a CPU build of torch
            assert name == "torch-fused", name
            continue
        for a, b in zip(ours, _after_steps(step), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-10, err_msg=name)
        compared.append(name)
    assert {"torch-loop", "torch-foreach"} <= set(compared), compared


@pytest.mark.parametrize("rule", rules.names())
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_probe_step_covers_the_rule_passes(rule, dtype, monkeypatch):
    """The probe's step makes exactly the rule's passes (what its bandwidth is measured
    on, and what the byte counts say), over arrays of the case's size and dtype."""
    calls = []

    def recording_probe(reads, writes):
        calls.append((list(reads), list(writes), [a.copy() for a in reads]))
        return _probe.probe(reads, writes)

    monkeypatch.setattr(yardsticks, "_probe", types.SimpleNamespace(probe=recording_probe))
    case = Case(rule, dtype, 5000, 1, 1)
    step = yardsticks.probe_step(case)
    calls.clear()
    step()
    passes, moved = [], 0
    for reads, writes, before in calls:
        updated = {id(w) for w in writes}
        assert updated <= {id(r) for r in reads}  # an updated array is read too
        assert len({id(r) for r in reads}) == len(reads)
        for a, b in zip(reads, before):
            assert a.dtype == np.dtype(dtype) and a.shape == (5000,)
            # what the pass updates it writes, what it only reads it leaves alone
            assert np.array_equal(a, b) != (id(a) in updated), (rule, len(passes))
        passes.append((len(reads) - len(writes), len(writes)))
        moved += (len(reads) + len(writes)) * 5000 * np.dtype(dtype).itemsize
    assert tuple(passes) == case.spec.passes
    assert moved == case.bytes


def test_the_loss_panel_clips_its_log_axis_and_keeps_curves_apart():
    """Issue 20, point 6: one rule reaching 1e-27 does not squash the others, the target
    line stays inside the panel, and curves that overlap differ in style and marker."""
    plt = pytest.importorskip("matplotlib.pyplot", reason="the plot needs matplotlib")
    from optimisers.bench.plot import _curves

    fig, ax = plt.subplots()
    curves = {
        ("adam", "p"): list(np.geomspace(1, 1e-27, 50)),
        ("sgd", "p"): list(np.geomspace(1, 1e-2, 50)),
        ("momentum", "p"): list(np.geomspace(1, 1e-2, 50)),
    }
    _curves(ax, "p", curves, 1e-3)
    bottom, top = ax.get_ylim()
    assert top / bottom <= 10**8.5 and bottom < 1e-3 < top
    lines = [line for line in ax.get_lines() if line.get_label() in ("sgd", "momentum")]
    assert lines[0].get_linestyle() != lines[1].get_linestyle()
    assert lines[0].get_marker() != lines[1].get_marker()
    plt.close(fig)
