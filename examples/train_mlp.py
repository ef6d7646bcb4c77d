"""A small training loop in the style of PyTorch's tutorials ("Learning PyTorch with
Examples"): fit sin(x) on [-π, π] with a deep sigmoid MLP and RMSprop. Its first layers
learn slowly: their gradients shrink through every sigmoid, which the gradient flow of
`trace run examples/train_mlp.py` shows (gradient-flow.svg, index.html)."""

import math

import torch

torch.manual_seed(0)
x = torch.linspace(-math.pi, math.pi, 256).unsqueeze(1)
y = torch.sin(x)

layers = [torch.nn.Linear(1, 16), torch.nn.Sigmoid()]
for _ in range(6):
    layers += [torch.nn.Linear(16, 16), torch.nn.Sigmoid()]
model = torch.nn.Sequential(*layers, torch.nn.Linear(16, 1))
loss_fn = torch.nn.MSELoss(reduction="sum")
optimizer = torch.optim.RMSprop(model.parameters(), lr=1e-3)

for t in range(40):
    y_pred = model(x)
    loss = loss_fn(y_pred, y)
    if t % 10 == 9:
        print(t, loss.item())
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
