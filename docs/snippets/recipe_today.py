# The training recipe (docs: recipe): AdamW with a warm-up and cosine decay given as a
# schedule, gradients clipped to a global norm of 1, no weight decay on biases, and steps
# whose gradients are not finite skipped.
import numpy as np

import optimisers as opt
from optimisers import schedules

rng = np.random.default_rng(0)
X = rng.standard_normal((512, 8))
y = np.tanh(X @ rng.standard_normal(8))[:, None]
model = {
    "hidden": {"W": 0.3 * rng.standard_normal((8, 32)), "b": np.zeros(32)},
    "out": {"W": 0.3 * rng.standard_normal((32, 1)), "b": np.zeros(1)},
}

eta = schedules.warmup_cosine_decay(
    init_value=0.0, peak_value=3e-2, warmup_steps=50, decay_steps=500, end_value=3e-4
)
rule_for = lambda path, x: opt.OptimiserChain(  # noqa: E731
    opt.SkipNonFinite(),
    opt.ClipGlobalNorm(1.0),
    opt.AdamW(eta, lambda_=0.1 if x.ndim >= 2 else 0.0),
)  # no decay on biases
state = opt.setup(rule_for, model)


def gradients(model):
    h = np.tanh(X @ model["hidden"]["W"] + model["hidden"]["b"])
    err = h @ model["out"]["W"] + model["out"]["b"] - y
    dh = (err @ model["out"]["W"].T) * (1 - h**2) / len(X)
    grads = {
        "hidden": {"W": X.T @ dh, "b": dh.sum(0)},
        "out": {"W": h.T @ err / len(X), "b": err.mean(0)},
    }
    return 0.5 * float(np.mean(err**2)), grads


for step in range(500):
    loss, grads = gradients(model)
    if step == 100:
        grads["out"]["b"][0] = np.nan  # a bad batch: the step is skipped
    state, model = opt.update_(state, model, grads)
    if step == 0:
        first = loss
    if step % 100 == 0:  # the log: norm and learning rate
        lr = opt.hyperparameters(state)["out"]["W"].opts[2].eta
        print(f"step {step}: loss {loss:.4f}, |g| {opt.global_norm(grads):.3g}, eta {lr:.3g}")
print(f"loss {first:.4f} -> {loss:.4f}")
assert loss < first / 10 and np.isfinite(model["out"]["b"]).all()
assert state["out"]["b"].state[0].skipped == 1
