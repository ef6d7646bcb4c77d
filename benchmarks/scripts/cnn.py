"""A small CNN trained for 100 steps on random 28×28 images: for the whole-run benchmark
(benchmarks/bench_runs.py). CPU-sized: a few seconds untraced."""

import torch
from torch import nn

torch.manual_seed(0)
images = torch.randn(512, 1, 28, 28)
labels = torch.randint(0, 10, (512,))

model = nn.Sequential(
    nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(16 * 7 * 7, 10),
)  # fmt: skip
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
loss_fn = nn.CrossEntropyLoss()

for step in range(100):
    batch = torch.randint(0, 512, (16,))
    optimizer.zero_grad()
    loss = loss_fn(model(images[batch]), labels[batch])
    loss.backward()
    optimizer.step()
    if step % 50 == 0:
        print(f"step {step}: loss {loss.item():.4f}")
print(f"final loss {loss.item():.4f}")
