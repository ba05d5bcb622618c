# optimisers as the optimiser of a PyTorch model, through zero-copy numpy views (docs: torch).
import torch

import optimisers as opt

torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
params = dict(net.named_parameters())
model = {name: p.detach().numpy() for name, p in params.items()}  # zero-copy views
state = opt.setup(opt.Adam(1e-2), model)  # = torch.optim.Adam(net.parameters(), 1e-2)

X, y = torch.randn(64, 4), torch.randn(64, 1)
for step in range(100):
    net.zero_grad()
    loss = torch.nn.functional.mse_loss(net(X), y)
    loss.backward()
    if step == 0:
        first = loss.item()
    grads = {name: p.grad.numpy() for name, p in params.items()}
    state, _ = opt.update_(state, model, grads)  # writes into net's tensors
print(f"loss {first:.4f} -> {loss.item():.4f}")
assert loss.item() < first
