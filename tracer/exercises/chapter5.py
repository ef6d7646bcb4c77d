"""The gallery's exercises from MML chapter 5, "Vector Calculus", with the book's names.

Each builds small, seeded, well-conditioned float64 inputs; only the inputs whose gradient
is checked require grad (the others are drawn as grey constants). The manual gradient is
the closed form from the book, never autograd.
"""

import torch

from tracer.exercises._inputs import Manual
from tracer.exercises._inputs import randn as _randn

f64 = torch.float64


def _eye(n: int) -> torch.Tensor:
    return torch.eye(n, dtype=f64)


def gaussian() -> Manual:
    gen = torch.Generator().manual_seed(581)
    x = _randn(gen, 3).requires_grad_()
    μ = _randn(gen, 3)
    R = _randn(gen, 3, 3)
    S = R @ R.T + _eye(3)  # a covariance: symmetric positive definite
    S_inv = torch.linalg.inv(S)
    y = x - μ
    z = torch.dot(y, torch.linalg.solve(S, y))
    f = torch.exp(-z / 2)
    f.backward()
    return {x: -0.5 * f * torch.mv(S_inv + S_inv.T, y)}


def trace_outer() -> Manual:
    gen = torch.Generator().manual_seed(582)
    x = _randn(gen, 3).requires_grad_()
    σ = 0.5
    σ2I = σ**2 * _eye(3)
    f = torch.trace(torch.outer(x, x) + σ2I)
    f.backward()
    return {x: 2 * x}


def tanh_layer() -> Manual:
    gen = torch.Generator().manual_seed(583)
    A = _randn(gen, 3, 4)
    x = _randn(gen, 4).requires_grad_()
    b = _randn(gen, 3)
    v = _randn(gen, 3)
    z = torch.mv(A, x) + b
    f = torch.tanh(z)
    f.backward(v)
    return {x: torch.mv(A.T, v * (1 - torch.tanh(z) ** 2))}


def sin_log() -> Manual:
    gen = torch.Generator().manual_seed(561)
    t = _randn(gen, 4).requires_grad_()
    f = torch.sin(torch.log(torch.dot(t, t)))
    f.backward()
    return {t: torch.cos(torch.log(torch.dot(t, t))) * 2 * t / torch.dot(t, t)}


def trace_axb() -> Manual:
    gen = torch.Generator().manual_seed(562)
    A = _randn(gen, 2, 3)
    X = _randn(gen, 3, 4).requires_grad_()
    B = _randn(gen, 4, 2)
    g = torch.trace(A @ X @ B)
    g.backward()
    return {X: A.T @ B.T}


def dot() -> Manual:
    gen = torch.Generator().manual_seed(55)
    x = _randn(gen, 4).requires_grad_()
    y = _randn(gen, 4)
    f = torch.dot(x, y)
    f.backward()
    return {x: y}


def worked_example() -> Manual:
    gen = torch.Generator().manual_seed(56)
    x = _randn(gen).requires_grad_()
    # The book's intermediate variables, so the picture matches Fig. 5.11 node for node.
    a = x**2
    b = torch.exp(a)
    c = a + b
    d = torch.sqrt(c)
    e = torch.cos(c)
    f = d + e
    f.backward()
    return {x: 2 * x * (1 / (2 * torch.sqrt(c)) - torch.sin(c)) * (1 + torch.exp(a))}


def least_squares() -> Manual:
    gen = torch.Generator().manual_seed(511)
    Φ = _randn(gen, 4, 3)
    θ = _randn(gen, 3).requires_grad_()
    y = _randn(gen, 4)
    e = y - torch.mv(Φ, θ)
    L = torch.dot(e, e)
    L.backward()
    return {θ: -2 * torch.mv(Φ.T, y - torch.mv(Φ, θ))}


def inverse() -> Manual:
    gen = torch.Generator().manual_seed(5102)
    X = (_randn(gen, 3, 3) + 3 * _eye(3)).requires_grad_()
    G = _randn(gen, 3, 3)
    L = torch.sum(G * torch.linalg.inv(X))
    L.backward()
    X_inv_T = torch.linalg.inv(X).T
    return {X: -X_inv_T @ G @ X_inv_T}


def gram() -> Manual:
    gen = torch.Generator().manual_seed(513)
    R = _randn(gen, 4, 3).requires_grad_()
    G = _randn(gen, 3, 3)
    K = R.T @ R
    L = torch.sum(G * K)
    L.backward()
    return {R: R @ (G + G.T)}


def quadratic() -> Manual:
    gen = torch.Generator().manual_seed(5107)
    x = _randn(gen, 3).requires_grad_()
    B = _randn(gen, 3, 3)
    f = torch.dot(x, torch.mv(B, x))
    f.backward()
    return {x: torch.mv(B + B.T, x)}
