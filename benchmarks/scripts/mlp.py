"""A 2,000-step MLP training loop, as a tutorial writes one: for the whole-run benchmark
(benchmarks/bench_runs.py). CPU-sized: a few seconds untraced."""

import torch
from torch import nn

torch.manual_seed(0)
inputs = torch.randn(64, 20)
labels = (inputs[:, :2].sum(dim=1) > 0).long()

model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 2))
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
loss_fn = nn.CrossEntropyLoss()

for step in range(2000):
    optimizer.zero_grad()
    loss = loss_fn(model(inputs), labels)
    loss.backward()
    optimizer.step()
    if step % 500 == 0:
        print(f"step {step}: loss {loss.item():.4f}")
print(f"final loss {loss.item():.4f}")
