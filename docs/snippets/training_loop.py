# A first training loop: linear regression on a nested model (docs: getting-started).
import numpy as np

import optimisers as opt

rng = np.random.default_rng(0)
X = rng.standard_normal((256, 3))
y = X @ np.array([1.0, -2.0, 0.5]) + 0.3 + 0.1 * rng.standard_normal(256)
model = {"w": np.zeros(3), "b": np.zeros(1), "name": "linear"}  # any nesting works
state = opt.setup(opt.OptimiserChain(opt.ClipNorm(1.0), opt.Adam(0.05)), model)

for _ in range(200):
    err = X @ model["w"] + model["b"] - y  # forward
    loss = 0.5 * np.mean(err**2)
    grad = {"w": X.T @ err / len(y), "b": np.array([err.mean()])}  # backward, by hand
    state, model = opt.update_(state, model, grad)  # in place; use the returned model
print(f"loss {loss:.4f}")
assert loss < 0.01
