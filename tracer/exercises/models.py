"""Real models in the gallery: an `nn.Module` traced as a student would trace their own.

The modules' parameters are made by their own initialisers (seeded, in a forked RNG, so
that the caller's random state is untouched) in float64, and every one requires grad, as
in training; the check is on the last linear layer, whose gradient has a closed form:
with logits z = hWᵀ + b and mean cross-entropy over N samples, Δ = (softmax(z) − Y)/N,
∂L/∂W = Δᵀh and ∂L/∂b = Σₙ Δ, where Y is the one-hot targets and h the layer's input.
"""

import torch
from torch import nn
from torch.nn import functional as F

from tracer.exercises._inputs import Manual
from tracer.exercises._inputs import randn as _randn

f64 = torch.float64


class SmallCNN(nn.Module):
    """conv 3×3 → ReLU → max-pool 2×2 → flatten → linear: 1×6×6 images, 3 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, kernel_size=3, dtype=f64)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(8, 3, dtype=f64)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(torch.relu(self.conv(x))), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


class TinyTransformer(nn.Module):
    """One TransformerEncoderLayer (d_model 4, 2 heads), mean over tokens, linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.TransformerEncoderLayer(
            d_model=4, nhead=2, dim_feedforward=8, dropout=0.0, batch_first=True, dtype=f64
        )
        self.head = nn.Linear(4, 3, dtype=f64)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x).mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _last_layer(z: torch.Tensor, y: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """∂L/∂W = Δᵀh and ∂L/∂b = Σₙ Δ for L = mean cross-entropy of logits z = hWᵀ + b."""
    Δ = (torch.softmax(z, dim=1) - F.one_hot(y, z.shape[1]).to(z.dtype)) / z.shape[0]
    return Δ.T @ h, Δ.sum(dim=0)


def cnn() -> Manual:
    gen = torch.Generator().manual_seed(11)
    X = _randn(gen, 2, 1, 6, 6)
    y = torch.tensor([2, 0])
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = SmallCNN()
    loss_fn = nn.CrossEntropyLoss()
    z = model(X)
    L = loss_fn(z, y)
    L.backward()
    with torch.no_grad():  # the closed form, with no graph of its own
        h = model.features(X)
        dW, db = _last_layer(z, y, h)
    return {model.fc.weight: dW, model.fc.bias: db}


def transformer_layer() -> Manual:
    gen = torch.Generator().manual_seed(12)
    X = _randn(gen, 2, 3, 4)  # 2 sequences of 3 tokens, d_model 4
    y = torch.tensor([1, 2])
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = TinyTransformer()
    z = model(X)
    L = F.cross_entropy(z, y)
    L.backward()
    with torch.no_grad():
        h = model.features(X)
        dW, db = _last_layer(z, y, h)
    return {model.head.weight: dW, model.head.bias: db}
