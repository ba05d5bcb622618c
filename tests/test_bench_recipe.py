"""The quality mode's row for the training recipe of issue 16 (point 7): it trains each
problem with the recipe's rule function, schedule, clipping and skipping as documented."""

from __future__ import annotations

import numpy as np

import optimisers as opt
from optimisers.bench import problems, quality, rules


def test_the_recipe_is_a_row_of_every_problem():
    rows, curves = quality.run_quality(["adam"], ["logistic", "spirals"], steps=40)
    assert [(r["rule"], r["problem"]) for r in rows] == [
        ("adam", "logistic"),
        ("recipe", "logistic"),
        ("adam", "spirals"),
        ("recipe", "spirals"),
    ]
    for r in rows:
        assert not r["diverged"] and r["final_loss"] < r["initial_loss"], r
    assert rows[1]["lr"] == quality.learning_rate(rules.get("adamw"), "logistic")
    assert len(curves[("recipe", "spirals")]) == 41
    assert quality.runs(["adam"], ["logistic", "spirals"]) == len(rows)
    assert quality.runs([], ["logistic"]) == 0


def test_the_recipe_row_steps_as_the_recipe_written_out():
    # the row's training equals the recipe spelled out by hand: warm-up then cosine to 0,
    # decay on matrices only, a global norm of 1, non-finite steps skipped
    problem, steps, peak = problems.get("spirals"), 30, 0.03
    curve = quality.train(quality.RECIPE, problem, steps)
    eta = opt.schedules.warmup_cosine_decay(0.0, peak, 1, steps)
    model = problem.init()
    leaves = {
        k: opt.setup(
            opt.OptimiserChain(
                opt.SkipNonFinite(),
                opt.ClipGlobalNorm(1.0),
                opt.AdamW(eta, lambda_=0.01 if x.ndim >= 2 else 0.0),
            ),
            x,
        )
        for k, x in model.items()
    }
    for t in range(steps):
        loss, grad = problem.loss_grad(model)
        assert loss == curve[t]
        norm = np.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grad.values()))
        for k, leaf in leaves.items():  # each array alone, its gradient clipped by hand
            g = (grad[k] * np.float32(min(1.0, 1.0 / norm))).astype(np.float32)
            leaves[k], model[k] = opt.update_(leaf, model[k], g)
    np.testing.assert_allclose(problem.loss_grad(model)[0], curve[-1], rtol=1e-4)
