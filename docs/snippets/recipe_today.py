# The training recipe with what this release has (docs: recipe): a schedule evaluated at
# every step and set with adjust_, per-array clipping, weight decay on matrices only, and a
# step skipped when a gradient is not finite.
import numpy as np
import optimisers as opt
from optimisers import schedules

rng = np.random.default_rng(0)
X = rng.standard_normal((512, 8))
y = np.tanh(X @ rng.standard_normal(8))[:, None]
model = {"hidden": {"W": 0.3 * rng.standard_normal((8, 32)), "b": np.zeros(32)},
         "out": {"W": 0.3 * rng.standard_normal((32, 1)), "b": np.zeros(1)}}

eta = schedules.warmup_cosine_decay(init_value=0.0, peak_value=3e-2, warmup_steps=50,
                                    decay_steps=500, end_value=3e-4)


def rule_for(x):
    decay = 0.1 if x.ndim >= 2 else 0.0          # no weight decay on biases
    return opt.OptimiserChain(opt.ClipNorm(1.0), opt.AdamW(eta(0), lambda_=decay))


state = {layer: {name: opt.setup(rule_for(x), x) for name, x in params.items()}
         for layer, params in model.items()}


def gradients(model):
    h = np.tanh(X @ model["hidden"]["W"] + model["hidden"]["b"])
    err = h @ model["out"]["W"] + model["out"]["b"] - y
    dh = (err @ model["out"]["W"].T) * (1 - h ** 2) / len(X)
    grads = {"hidden": {"W": X.T @ dh, "b": dh.sum(0)},
             "out": {"W": h.T @ err / len(X), "b": err.mean(0)}}
    return 0.5 * float(np.mean(err ** 2)), grads


skipped = 0
for step in range(500):
    loss, grads = gradients(model)
    if step == 100:
        grads["out"]["b"][0] = np.nan                # a bad batch
    opt.adjust_(state, eta(step))                    # the schedule's value for this step
    try:
        state, model = opt.update_(state, model, grads)
    except FloatingPointError:                       # a leading ClipNorm(throw=True) found a
        skipped += 1                                 # non-finite norm: nothing was written
    if step == 0:
        first = loss
print(f"loss {first:.4f} -> {loss:.4f}, {skipped} step skipped")
assert loss < first / 10 and skipped == 1 and np.isfinite(model["out"]["b"]).all()
