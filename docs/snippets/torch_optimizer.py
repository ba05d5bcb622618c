# optimisers.torch.Optimizer: the two-line switch from torch.optim.AdamW (docs: torch).
import torch

import optimisers as opt
from optimisers.torch import Optimizer

torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
# optim = torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=0.01)   # before
optim = Optimizer(net.parameters(), opt.AdamW(1e-2, lambda_=0.01))  # after
sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, T_max=100)

X, y = torch.randn(64, 4), torch.randn(64, 1)
for step in range(100):
    optim.zero_grad()
    loss = torch.nn.functional.mse_loss(net(X), y)
    loss.backward()
    optim.step()
    sched.step()
    if step == 0:
        first = loss.item()
print(f"loss {first:.4f} -> {loss.item():.4f}, lr now {optim.param_groups[0]['lr']:.1e}")
assert loss.item() < first
