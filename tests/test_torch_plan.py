"""The planned step of optimisers.torch.Optimizer (issue 18, point 6): the same bits as
the general step, and given up whenever what it was planned with changes.

Each test runs two optimisers over copies of the same tensors with the same gradients:
one as users get it (its steps after the first run the plan), one made to take the
general step every time (``update_`` over numpy views, itself checked against the
references and torch.optim elsewhere), and asserts equal bits after every step, and
that the plan did run (or was given up) where it should.
"""

from __future__ import annotations

import gc
import weakref

import pytest

torch = pytest.importorskip("torch", reason="optimisers.torch needs PyTorch (CI stage 2)")

import numpy as np  # noqa: E402

import optimisers as opt  # noqa: E402
from optimisers import _torch_plan  # noqa: E402
from optimisers._native import kernels  # noqa: E402
from optimisers.bench import torch_step  # noqa: E402
from optimisers.bench.cases import Case  # noqa: E402
from optimisers.bench.timing import Budget, measure  # noqa: E402
from optimisers.torch import Optimizer  # noqa: E402

SHAPES = [(3, 5), (7,), (2, 2, 3), (1,), (40,)]


class General(Optimizer):
    """The optimiser made to take the general step every time."""

    def step(self, closure=None):
        self._planned = False
        return super().step(closure)


@pytest.fixture
def planned_steps(monkeypatch):
    """The results of every Plan.step call (True: the plan ran the step)."""
    results = []
    real = _torch_plan.Plan.step

    def spy(self, *args):
        results.append(real(self, *args))
        return results[-1]

    monkeypatch.setattr(_torch_plan.Plan, "step", spy)
    return results


def tensors(dtype=torch.float32, seed=0, shapes=SHAPES):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=torch.float64).to(dtype) for s in shapes]


class Pair:
    """A planned and a general optimiser over copies of the same parameters."""

    def __init__(self, rule, dtype=torch.float32, groups=None, shapes=SHAPES, **kw):
        self.dtype = dtype
        self.a, self.b = tensors(dtype, shapes=shapes), tensors(dtype, shapes=shapes)
        wrap = groups or (lambda ps: ps)
        self.planned, self.general = (
            Optimizer(wrap(self.a), rule, **kw),
            General(wrap(self.b), rule, **kw),
        )
        self.seed = 100

    def grads(self, fresh=False, none=()):
        """Gradients of this step, the same for both: into the tensors already there
        (``fresh=False`` and there are some), else new tensors; ``None`` at ``none``."""
        self.seed += 1
        new = [
            g.to(p.dtype)
            for g, p in zip(tensors(torch.float64, self.seed, [p.shape for p in self.a]), self.a)
        ]
        for i, (pa, pb, g) in enumerate(zip(self.a, self.b, new)):
            for p in (pa, pb):
                if i in none:
                    p.grad = None
                elif fresh or p.grad is None:
                    p.grad = g.clone()
                else:
                    p.grad.copy_(g)

    def step(self, fresh=False, none=()):
        self.grads(fresh, none)
        self.planned.step()
        self.general.step()
        self.check()

    def check(self):
        for i, (pa, pb) in enumerate(zip(self.a, self.b)):
            assert torch.equal(pa, pb), f"parameter {i} differs"
        sa, sb = self.planned.state_dict(), self.general.state_dict()
        assert sa["param_groups"] == sb["param_groups"]
        for k in sb["state"]:
            for name, v in sb["state"][k].items():
                w = sa["state"][k][name]
                assert torch.equal(w, v) if isinstance(v, torch.Tensor) else w == v, (k, name)


RULES = [
    opt.Adam(1e-2),
    opt.AdamW(1e-2, lambda_=0.1),
    opt.OptimiserChain(opt.ClipNorm(0.5), opt.Momentum(1e-2)),  # a leading norm, folded
    opt.OptimiserChain(opt.AccumGrad(2), opt.Descent(0.1)),  # stops every other step
    opt.TorchRAdam(1e-2),  # a step counter in the state
    opt.Lion(1e-3),
    opt.EMA(opt.Adam(1e-2), 0.9),  # a stage after the step
]


@pytest.mark.parametrize("rule", RULES, ids=lambda r: type(r).__name__)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("fresh", [False, True], ids=["persisting", "fresh"])
def test_the_plan_gives_the_general_steps_bits(rule, dtype, fresh, n_threads, planned_steps):
    pair = Pair(rule, dtype)
    for _ in range(6):
        pair.step(fresh)
    assert isinstance(pair.planned._planned, _torch_plan.Plan)
    assert planned_steps == [True] * 5  # every step after the first


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_16bit_parameters_are_planned(dtype, n_threads, planned_steps):
    pytest.importorskip("ml_dtypes")
    pair = Pair(opt.Adam(1e-2), dtype)
    for _ in range(4):
        pair.step()
    assert planned_steps == [True] * 3


def test_an_empty_parameter_is_stepped_and_counted(planned_steps):
    """An empty tensor's data address may be 0: it is no "no gradient" mark."""
    pair = Pair(opt.Adam(1e-2), shapes=[(0,), (3,), (2, 0)])
    for _ in range(4):
        pair.step()
    assert [leaf.count for leaf in pair.planned._groups[0].leaves] == [4, 4, 4]
    assert planned_steps == [True] * 3


def test_large_and_small_tensors_over_two_threads(n_threads, small_parallel_threshold):
    pair = Pair(opt.Adam(1e-3), shapes=[(5000,), (3,), (70, 80), (9,)] * 3)
    for _ in range(4):
        pair.step()
    assert isinstance(pair.planned._planned, _torch_plan.Plan)


def test_a_none_gradient_leaves_its_parameter_and_state_as_they_were(planned_steps):
    pair = Pair(opt.Adam(1e-2))
    pair.step()
    before = pair.a[1].clone()
    pair.step(none=(1, 3))
    assert torch.equal(pair.a[1], before)
    assert [leaf.count for leaf in pair.planned._groups[0].leaves] == [2, 1, 2, 1, 2]
    pair.step()
    pair.step(fresh=True, none=(0,))
    assert planned_steps == [True] * 3


@pytest.mark.parametrize(
    "scheduler, steps",
    [
        (lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5), 10),
        (  # a new lr at every step
            lambda o: torch.optim.lr_scheduler.OneCycleLR(
                o, max_lr=0.1, total_steps=20, cycle_momentum=False
            ),
            12,
        ),
    ],
    ids=["StepLR", "OneCycleLR"],
)
def test_a_scheduler_moves_the_lr_and_the_plan_follows(scheduler, steps, planned_steps):
    pair = Pair(opt.Adam(1e-2))
    scheds = [scheduler(o) for o in (pair.planned, pair.general)]
    for _ in range(steps):
        pair.step()
        for s in scheds:
            s.step()
    # the plan applies each new lr itself
    assert planned_steps == [True] * (steps - 1)


@pytest.mark.parametrize(
    "rule",
    [
        opt.OptimiserChain(opt.RMSProp(1e-2), opt.Momentum(1e-3)),  # two etas, scaled together
        opt.OptimiserChain(opt.ClipNorm(0.5), opt.AdamW(1e-2, lambda_=0.1)),
        opt.AdaDelta(),  # no eta: followed by Descent(lr)
    ],
    ids=["two-etas", "clipnorm-adamw", "adadelta"],
)
def test_an_lr_set_by_hand_each_step(rule, planned_steps):
    mixed = [(3, 5), (7,), (2, 2, 3), (1,), (40,)]
    pair = Pair(rule, shapes=mixed)
    for k in range(6):
        for o in (pair.planned, pair.general):
            o.param_groups[0]["lr"] = 1e-2 / (k + 1)
        pair.step()
    assert planned_steps == [True] * 5


def test_an_lr_change_over_groups_of_mixed_dtypes(planned_steps):
    """Runs of float32 and float64 leaves in one group: one new program per dtype."""
    pair = Pair(opt.Adam(1e-2), dtype=torch.float64)
    for ps in (pair.a, pair.b):
        for i in (1, 3):
            ps[i].data = ps[i].data.float()
    pair.planned, pair.general = (
        cls([{"params": ps[:3], "lr": 1e-2}, {"params": ps[3:], "lr": 1e-3}], opt.Adam())
        for cls, ps in ((Optimizer, pair.a), (General, pair.b))
    )
    pair.dtype = None
    for k in range(5):
        for o in (pair.planned, pair.general):
            o.param_groups[k % 2]["lr"] *= 0.5
        pair.step()
    assert planned_steps == [True] * 4
    runs = pair.planned._planned._runs
    assert [[(a, b) for a, b, *_ in g] for g in runs] == [
        [(0, 1), (1, 2), (2, 3)],
        [(3, 4), (4, 5)],
    ]


def test_a_new_rule_for_a_group():
    pair = Pair(opt.Adam(1e-2))
    for _ in range(3):
        pair.step()
    for o in (pair.planned, pair.general):
        o.param_groups[0]["rule"] = opt.Adam(1e-3, (0.8, 0.99))
    for _ in range(3):
        pair.step()


def test_adjust_freeze_and_thaw_through_the_state_tree(planned_steps):
    pair = Pair(opt.Adam(1e-2))
    pair.step()
    pair.step()
    for o in (pair.planned, pair.general):
        opt.adjust_(o.state_tree, eta=1e-4)
    pair.step()
    frozen = pair.a[2].clone()
    for o in (pair.planned, pair.general):
        opt.freeze_(o.state_tree[0]["2"])
    pair.step()
    pair.step()
    assert torch.equal(pair.a[2], frozen)
    for o in (pair.planned, pair.general):
        opt.thaw_(o.state_tree)
    pair.step()
    pair.step()
    assert not torch.equal(pair.a[2], frozen)
    assert planned_steps[:1] == [True] and planned_steps[-1] is True


def test_a_state_replaced_by_hand_is_the_one_stepped():
    pair = Pair(opt.Momentum(1e-2, 0.9))
    tree = pair.planned.state_tree  # handed out before the plan is made
    for _ in range(3):
        pair.step()
    for o in (pair.planned, pair.general):
        leaf = o.state_tree[0]["0"]  # Momentum in torch's form: (buffer, Descent's None)
        velocity, rest = leaf.state
        leaf.state = (np.full_like(velocity, 3.0), rest)
    pair.step()
    assert tree is pair.planned.state_tree


def test_a_rule_set_on_a_leaf_by_hand():
    pair = Pair(opt.Adam(1e-2))
    for _ in range(2):
        pair.step()
    for o in (pair.planned, pair.general):
        o.state_tree[0]["4"].rule = opt.Adam(0.5)
    pair.step()
    pair.step()


def test_add_param_group_after_planned_steps(planned_steps):
    pair = Pair(opt.Adam(1e-2))
    for _ in range(3):
        pair.step()
    extra_a, extra_b = (
        tensors(seed=9, shapes=[(6,), (2, 3)]),
        tensors(seed=9, shapes=[(6,), (2, 3)]),
    )
    pair.planned.add_param_group({"params": extra_a, "rule": opt.Lion(1e-3)})
    pair.general.add_param_group({"params": extra_b, "rule": opt.Lion(1e-3)})
    pair.a += extra_a
    pair.b += extra_b
    for _ in range(3):
        pair.step()
    assert planned_steps == [True, True, True, True]


def test_load_state_dict_rolls_the_plan_back():
    pair = Pair(opt.Adam(1e-2))
    for _ in range(2):
        pair.step()
    saved = [o.state_dict() for o in (pair.planned, pair.general)]
    kept = [[p.clone() for p in ps] for ps in (pair.a, pair.b)]
    for _ in range(3):
        pair.step()
    for o, sd, ps, old in zip((pair.planned, pair.general), saved, (pair.a, pair.b), kept):
        o.load_state_dict(sd)
        with torch.no_grad():
            for p, v in zip(ps, old):
                p.copy_(v)
    pair.seed -= 3
    for _ in range(3):
        pair.step()


@pytest.mark.parametrize(
    "odd",
    [
        lambda g: g[:1].expand_as(g),  # one element seen everywhere (stride 0)
        lambda g: g.t().contiguous().t() if g.dim() == 2 else g,  # not contiguous
    ],
    ids=["expanded", "transposed"],
)
def test_a_gradient_the_plan_cannot_take_goes_the_general_way(odd, planned_steps):
    pair = Pair(opt.Adam(1e-2))
    pair.step()
    pair.step()
    pair.grads()
    for p in pair.a + pair.b:
        p.grad = odd(p.grad)
    pair.planned.step()
    pair.general.step()
    pair.check()
    pair.step(fresh=True)
    pair.step()
    assert planned_steps == [True, False, True, True]


def test_a_gradient_whose_memory_changed_in_place(planned_steps):
    pair = Pair(opt.Adam(1e-2))
    pair.step()
    pair.step()
    held = [p.grad for p in pair.a]
    pair.grads()
    old = [p.grad.data for p in pair.a + pair.b]  # kept alive: a stale plan would read it
    for pa, pb in zip(pair.a, pair.b):  # the same tensor objects, new memory, new values
        pa.grad.data = pa.grad.data * 2.0
        pb.grad.data = pb.grad.data * 2.0
    assert all(p.grad is g for p, g in zip(pair.a, held)) and len(old) == 10
    pair.planned.step()
    pair.general.step()
    pair.check()
    assert planned_steps == [True, True]


def test_a_gradient_reshaped_in_place_to_its_parameters_size(planned_steps):
    # torch refuses a .grad of another shape, but .data can reshape one in place: the plan
    # checks the size (what its memory must hold) and takes the elements in order, as
    # torch's fused step does; the general step refuses the shape
    pair = Pair(opt.Adam(1e-2))
    pair.step()
    pair.step()
    pair.grads()
    flat = [p.grad.clone() for p in pair.a]
    pair.a[0].grad.data = pair.a[0].grad.data.reshape(5, 3)
    pair.planned.step()
    for p, g in zip(pair.b, flat):
        p.grad = g
    pair.general.step()
    pair.check()
    pair.b[0].grad.data = pair.b[0].grad.data.reshape(5, 3)
    with pytest.raises(ValueError, match=r"shape \(5, 3\).*\(3, 5\)"):
        pair.general.step()
    assert planned_steps == [True, True]


@pytest.mark.parametrize(
    "change",
    [
        lambda g: g.reshape(-1)[:-1].clone(),  # fewer elements: refused
        lambda g: g.to(torch.bfloat16),  # half the bytes: cast by the general step
        lambda g: g.to(torch.float64),  # twice the bytes: cast by the general step
    ],
    ids=["smaller", "bfloat16", "float64"],
)
def test_a_gradient_changed_in_place_past_what_the_plan_takes(change, planned_steps):
    pair = Pair(opt.Adam(1e-2))
    pair.step()
    pair.step()
    pair.grads()
    for p in (pair.a[0], pair.b[0]):
        p.grad.data = change(p.grad.data)
    if pair.a[0].grad.dtype != torch.float32:
        pair.planned.step()
        pair.general.step()
        pair.check()
    else:  # the general step names what is wrong, and nothing is written
        before = [p.clone() for p in pair.a]
        with pytest.raises(ValueError, match="shape"):
            pair.planned.step()
        assert all(torch.equal(p, q) for p, q in zip(pair.a, before))
    assert planned_steps == [True, False]


def test_weak_references_only_to_gradients_that_persist(planned_steps):
    # fresh gradients (zero_grad's default) are checked at every step, and only the first
    # one is followed; once they persist the plan keeps them all, weakly, and checks
    # them no more while they stay at the same addresses
    pair = Pair(opt.Adam(1e-2))
    for _ in range(3):
        pair.step(fresh=True)
    plan = pair.planned._planned
    assert plan._refs is None and plan._first() is pair.a[0].grad
    pair.step()  # the tensors of the step before, refilled
    assert [r() for r in plan._refs] == [p.grad for p in pair.a]
    pair.step()
    pair.step(fresh=True)
    assert plan._refs is None
    assert planned_steps == [True] * 5


@pytest.mark.parametrize(
    "bad, error, match",
    [
        (lambda g: g.to_sparse(), ValueError, "sparse"),
        (lambda g: torch.full_like(g, float("nan")), FloatingPointError, "norm"),
    ],
    ids=["sparse", "nonfinite"],
)
def test_a_failed_planned_step_writes_nothing(bad, error, match, planned_steps):
    rule = opt.OptimiserChain(opt.ClipNorm(1.0, throw=True), opt.Adam(1e-2))
    pair = Pair(rule)
    pair.step()
    pair.step()
    before = [p.clone() for p in pair.a]
    state = pair.planned.state_dict()
    pair.grads()
    pair.a[2].grad = bad(pair.a[2].grad)
    with pytest.raises(error, match=match):
        pair.planned.step()
    assert all(torch.equal(p, q) for p, q in zip(pair.a, before))
    after = pair.planned.state_dict()["state"]
    for k, st in state["state"].items():
        for name, v in st.items():
            assert torch.equal(after[k][name], v) if isinstance(v, torch.Tensor) else True
    assert planned_steps == [True, False]


@pytest.mark.parametrize(
    "rule",
    [
        opt.OptimiserChain(opt.ClipGlobalNorm(1.0), opt.Adam(1e-2)),
        opt.OptimiserChain(opt.SkipNonFinite(), opt.Adam(1e-2)),
    ],
    ids=["ClipGlobalNorm", "SkipNonFinite"],
)
def test_a_whole_step_stage_is_not_planned(rule, planned_steps):
    pair = Pair(rule)
    for _ in range(3):
        pair.step()
    assert pair.planned._planned is False and planned_steps == []


def test_a_frozen_leaf_or_a_scheduled_rule_is_not_planned(planned_steps):
    pair = Pair(opt.Adam(1e-2))
    for o in (pair.planned, pair.general):
        opt.freeze_(o.state_tree[0]["1"])
    for _ in range(3):
        pair.step()
    assert pair.planned._planned is False
    scheduled = opt.Adam(opt.schedules.linear(1e-2, 1e-3, 10))
    w = torch.zeros(3)
    optim = Optimizer([{"params": [w], "lr": 1e-2}], opt.Descent(0.1))
    optim.state_tree[0]["0"] = opt.setup(scheduled, w.numpy())
    for _ in range(3):
        w.grad = torch.ones(3)
        optim.step()
    assert optim._planned is False and planned_steps == []


def test_a_replaced_parameter_is_still_refused(planned_steps):
    pair = Pair(opt.Adam(1e-2))
    pair.step()
    pair.step()
    pair.a[0].data = torch.zeros(3, 5)
    pair.grads()
    with pytest.raises(RuntimeError, match="replaced"):
        pair.planned.step()
    assert planned_steps == [True, False]


def test_the_replay_entry_point():
    x = np.zeros(4, np.float32)
    state = opt.init(opt.Adam(0.1), x)
    leaf = opt.Leaf(opt.Adam(0.1), state)
    tpl = opt._engine.template(opt.Adam(0.1), x, state)
    replay = kernels.Replay([(tpl, state, x, x, leaf)])
    assert replay.problems == []
    g = np.ones(4, np.float32)
    assert replay.run_with([g.ctypes.data]) == []
    np.testing.assert_allclose(x, -0.1, rtol=1e-6)
    assert replay.run_with([None]) == [] and np.allclose(x, -0.1)  # no gradient: not run
    with pytest.raises(ValueError, match="2 gradient addresses for 1"):
        replay.run_with([None, None])
    with pytest.raises(TypeError, match="run_with"):
        replay.run()
    bad = kernels.Replay([(tpl, state, x.astype(np.int32), x, leaf)])
    assert [p[1] for p in bad.problems] == [kernels.BAD_PARAMETER]
    rule = opt.OptimiserChain(opt.ClipGlobalNorm(1.0), opt.Adam())
    state = opt.init(rule, x)
    glob = opt._engine.template(rule, x, state)
    with pytest.raises(ValueError, match="global"):
        kernels.Replay([(glob, state, x, x, leaf)])


def test_the_bench_times_fresh_gradients_apart():
    step = torch_step.optimiser_step(Case("adam", "float32", 400, 4, 1))
    prepare = torch_step._fresh(step)
    old = [p.grad for p in step.tensors]
    prepare()
    new = [p.grad for p in step.tensors]
    assert all(g is not h and torch.equal(g, h) for g, h in zip(old, new))  # new tensors
    calls = []
    timing = measure(
        {"a": lambda: calls.append("s"), "b": step},
        Budget(warmup=1, min_steps=4, min_time=0, rounds=2),
        prepare={"a": lambda: calls.append("p")},
    )
    assert timing["a"].steps == 4 and calls == ["p", "s"] * 5  # each step prepared first
    assert timing["b"].steps == 4


def test_the_plan_outlives_a_declined_step_and_new_lrs(planned_steps):
    pair = Pair(opt.Adam(1e-2))
    pair.step()
    plan = pair.planned._planned
    for o in (pair.planned, pair.general):
        o.param_groups[0]["lr"] = 3e-3
    pair.step()
    pair.grads()
    for p in pair.a + pair.b:  # a step the plan declines: the general step takes it
        p.grad = p.grad[..., :1].expand_as(p.grad)
    pair.planned.step()
    pair.general.step()
    pair.check()
    pair.step(fresh=True)
    assert pair.planned._planned is plan and planned_steps == [True, False, True]


def test_the_plan_holds_no_gradient_past_the_step(planned_steps):
    w = torch.zeros(5)
    optim = Optimizer([w], opt.Adam(1e-2))
    for _ in range(3):
        w.grad = torch.ones(5)
        seen = weakref.ref(w.grad)
        optim.step()
        optim.zero_grad()  # set_to_none: the gradient must go now
        gc.collect()
        assert seen() is None
    assert planned_steps == [True, True]


def test_a_planned_step_returns_the_closures_loss(planned_steps):
    w = torch.nn.Parameter(torch.ones(4))
    optim = Optimizer([w], opt.Descent(0.1))

    def closure():
        optim.zero_grad()
        loss = (w**2).sum()
        loss.backward()
        return loss

    losses = [optim.step(closure).item() for _ in range(3)]
    assert losses == pytest.approx([4.0, 4 * 0.8**2, 4 * 0.64**2])
    assert planned_steps == [True, True]


# ---- what the plan gives up on (lines the rest of the suite left unrun)


def test_a_hand_set_rule_the_state_does_not_fit_is_not_planned(planned_steps):
    """A Leaf given by hand a rule its state does not fit, and no gradient yet: the general
    step leaves it out, the plan cannot be made, and the step that reaches it raises."""
    pair = Pair(opt.Adam(1e-2))
    for o in (pair.planned, pair.general):
        o.state_tree[0]["1"].rule = opt.Momentum(1e-2)  # an Adam state: does not fit
    pair.step(none=(1,))
    pair.step(none=(1,))
    assert pair.planned._planned is False and planned_steps == []
    pair.grads()
    kept = [p.clone() for p in pair.a]
    for o in (pair.planned, pair.general):
        with pytest.raises(ValueError, match=r"the state of the Leaf at 0\.1 does not fit"):
            o.step()
    assert all(torch.equal(p, k) for p, k in zip(pair.a, kept))  # nothing written
    pair.check()


def test_tied_parameters_are_not_planned(planned_steps):
    """Two parameters over the same memory: the general step every time, same bits."""
    bases = [torch.arange(8.0), torch.arange(8.0)]
    ps_a, ps_b = ([b[:4], b[:4], b[4:]] for b in bases)
    planned, general = Optimizer(ps_a, opt.Adam(1e-2)), General(ps_b, opt.Adam(1e-2))
    for k in range(4):
        for ps in (ps_a, ps_b):
            for i, p in enumerate(ps):
                p.grad = torch.full((4,), float(i + k + 1))
        planned.step()
        general.step()
        assert torch.equal(bases[0], bases[1])
    assert not torch.equal(bases[0], torch.arange(8.0))
    assert planned._planned is False and planned_steps == []


def test_an_lr_change_after_a_leaf_was_replaced_in_the_tree(planned_steps):
    """A Leaf replaced in the state tree, then a new lr: the group takes its Leaves from
    the tree, so the plan (made again with the new Leaf) applies the lr to it itself."""
    pair = Pair(opt.Adam(1e-2))
    pair.step()
    pair.step()
    for o, ps in ((pair.planned, pair.a), (pair.general, pair.b)):
        o.state_tree[0]["2"] = opt.setup(opt.Adam(1e-2), ps[2].numpy())
    pair.step()  # the plan declines (its Leaf is gone) and is made again
    pair.step()
    for o in (pair.planned, pair.general):
        o.param_groups[0]["lr"] = 3e-3
    pair.step()
    pair.step()
    assert pair.planned.state_tree[0]["2"].rule == opt.Adam(3e-3)
    assert planned_steps == [True, False, True, True, True]


def test_an_lr_change_that_changes_a_leafs_program(planned_steps):
    """A Leaf whose rule was set by hand (coupled weight decay) planned with its program;
    a new lr gives it the group's rule (decoupled), another program: the general step."""
    rule = opt.AdamW(1e-2, lambda_=0.1, couple=False)
    pair = Pair(rule)
    for o in (pair.planned, pair.general):
        o.state_tree[0]["0"].rule = opt.AdamW(1e-2, lambda_=0.1, couple=True)
    pair.step()
    pair.step()
    for o in (pair.planned, pair.general):
        o.param_groups[0]["lr"] = 3e-3
    pair.step()
    for o in (pair.planned, pair.general):
        assert o.state_tree[0]["0"].rule == opt.AdamW(3e-3, lambda_=0.1, couple=False)
    pair.step()
    pair.step()
    assert planned_steps == [True, False, True, True]


def test_a_group_tree_replaced_in_the_state_tree(planned_steps):
    """A group's ``{name: Leaf}`` replaced by a copy: the plan declines once, the general
    step runs over the new dict, and the plan made again holds it."""
    pair = Pair(opt.Adam(1e-2))
    pair.step()
    pair.step()
    for o in (pair.planned, pair.general):
        o.state_tree[0] = dict(o.state_tree[0])
    pair.step()
    pair.step()
    assert planned_steps == [True, False, True]
    assert pair.planned._planned._trees[0] is pair.planned.state_tree[0]


def test_a_param_group_removed_by_hand(planned_steps):
    """A group popped from ``param_groups``: the plan declines, the general step steps the
    groups left and leaves the removed one's parameters as they are."""
    pair = Pair(opt.Adam(1e-2), groups=lambda ps: [{"params": ps[:3]}, {"params": ps[3:]}])
    pair.step()
    pair.step()
    for o in (pair.planned, pair.general):
        o.param_groups.pop()
    kept = [p.clone() for p in pair.a[3:]]
    pair.step()
    pair.step()
    assert all(torch.equal(p, k) for p, k in zip(pair.a[3:], kept))
    assert planned_steps[:2] == [True, False]


def test_a_leaf_deleted_from_the_state_tree(planned_steps):
    """A name deleted from a group's tree: the plan declines and the general step says
    the tree no longer matches the model, writing nothing; put back, the steps go on."""
    pair = Pair(opt.Adam(1e-2))
    pair.step()
    pair.step()
    removed = [o.state_tree[0].pop("1") for o in (pair.planned, pair.general)]
    pair.grads()
    kept = [p.clone() for p in pair.a]
    for o in (pair.planned, pair.general):
        with pytest.raises(ValueError, match="the state tree does not match the model at 0"):
            o.step()
    assert all(torch.equal(p, k) for p, k in zip(pair.a, kept))
    for o, leaf in zip((pair.planned, pair.general), removed):
        o.state_tree[0]["1"] = leaf
    pair.step()
    pair.step()
    assert planned_steps == [True, False, True]


@pytest.mark.parametrize("after", [0, 2])
def test_a_gradient_without_memory_is_refused_before_anything_is_written(after, planned_steps):
    """A gradient whose storage was freed (resized to 0 bytes) reports address 0: the plan
    gives the step up, and the general step raises naming the parameter (it once read
    freed memory there, and the plan crashed), with every parameter as it was."""
    params = [torch.nn.Parameter(t) for t in tensors()]
    optim = Optimizer(params, opt.Adam(1e-2))
    for _ in range(after):
        for p in params:
            p.grad = torch.ones_like(p)
        optim.step()
    for p in params:
        p.grad = torch.ones_like(p)
    params[2].grad.untyped_storage().resize_(0)
    before = [p.detach().clone() for p in params]
    with pytest.raises(ValueError, match="parameter 2: the gradient has no memory"):
        optim.step()
    assert all(torch.equal(p, b) for p, b in zip(params, before))
    assert True not in planned_steps[after - 1 :] if after else planned_steps == []
