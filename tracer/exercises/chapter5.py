"""The gallery's exercises from MML chapter 5, "Vector Calculus", with the book's names.

Each builds small, seeded, well-conditioned float64 inputs; only the inputs whose gradient
is checked require grad (the others are drawn as grey constants). The manual gradient is
the closed form from the book, never autograd.
"""

import torch

from tracer.exercises import Manual, exercise
from tracer.exercises import randn as _randn

f64 = torch.float64


def _eye(n: int) -> torch.Tensor:
    return torch.eye(n, dtype=f64)


@exercise(
    "gaussian",
    title="gaussian (MML 5.8a): f = exp(−½ (x − μ)ᵀS⁻¹(x − μ))",
    source="MML ch. 5, exercise 5.8a",
    formula="f = exp(−z/2), z = yᵀS⁻¹y, y = x − μ",
    manual="∂f/∂x = −½ f (S⁻¹ + S⁻ᵀ) y, i.e. −f S⁻¹(x − μ) for symmetric S",
    shapes="x, μ ∈ ℝ³, S ∈ ℝ³ˣ³ symmetric positive definite",
)
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


@exercise(
    "trace-outer",
    title="trace-outer (MML 5.8b): f = tr(xxᵀ + σ²I)",
    source="MML ch. 5, exercise 5.8b",
    formula="f = tr(xxᵀ + σ²I)",
    manual="∂f/∂x = 2x",
    shapes="x ∈ ℝ³, σ ∈ ℝ",
)
def trace_outer() -> Manual:
    gen = torch.Generator().manual_seed(582)
    x = _randn(gen, 3).requires_grad_()
    σ = 0.5
    σ2I = σ**2 * _eye(3)
    f = torch.trace(torch.outer(x, x) + σ2I)
    f.backward()
    return {x: 2 * x}


@exercise(
    "tanh-layer",
    title="tanh-layer (MML 5.8c): f = tanh(Ax + b), backward with v",
    source="MML ch. 5, exercise 5.8c",
    formula="f = tanh(z), z = Ax + b; backward seeded with v (a vector-Jacobian product)",
    manual="(∂f/∂x)ᵀv = Aᵀ(v ⊙ (1 − tanh²(Ax + b)))",
    shapes="A ∈ ℝ³ˣ⁴, x ∈ ℝ⁴, b, v ∈ ℝ³",
)
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


@exercise(
    "sin-log",
    title="sin-log (MML 5.6a): f = sin(log(tᵀt))",
    source="MML ch. 5, exercise 5.6a",
    formula="f = sin(log(tᵀt))",
    manual="∂f/∂t = cos(log(tᵀt)) · 2t / (tᵀt)",
    shapes="t ∈ ℝ⁴",
)
def sin_log() -> Manual:
    gen = torch.Generator().manual_seed(561)
    t = _randn(gen, 4).requires_grad_()
    f = torch.sin(torch.log(torch.dot(t, t)))
    f.backward()
    return {t: torch.cos(torch.log(torch.dot(t, t))) * 2 * t / torch.dot(t, t)}


@exercise(
    "trace-axb",
    title="trace-axb (MML 5.6b): g = tr(AXB)",
    source="MML ch. 5, exercise 5.6b",
    formula="g = tr(AXB)",
    manual="∂g/∂X = AᵀBᵀ = (BA)ᵀ",
    shapes="A ∈ ℝ²ˣ³, X ∈ ℝ³ˣ⁴, B ∈ ℝ⁴ˣ²",
)
def trace_axb() -> Manual:
    gen = torch.Generator().manual_seed(562)
    A = _randn(gen, 2, 3)
    X = _randn(gen, 3, 4).requires_grad_()
    B = _randn(gen, 4, 2)
    g = torch.trace(A @ X @ B)
    g.backward()
    return {X: A.T @ B.T}


@exercise(
    "dot",
    title="dot (MML 5.5): f = xᵀy",
    source="MML ch. 5, exercise 5.5",
    formula="f = xᵀy",
    manual="∂f/∂x = y",
    shapes="x, y ∈ ℝ⁴",
)
def dot() -> Manual:
    gen = torch.Generator().manual_seed(55)
    x = _randn(gen, 4).requires_grad_()
    y = _randn(gen, 4)
    f = torch.dot(x, y)
    f.backward()
    return {x: y}


@exercise(
    "worked-example",
    title="worked-example (MML §5.6, Fig. 5.11): f = √(x² + exp(x²)) + cos(x² + exp(x²))",
    source="MML ch. 5, §5.6 worked example (eq. 5.109, Fig. 5.11)",
    formula="a = x², b = exp(a), c = a + b, d = √c, e = cos(c), f = d + e",
    manual="∂f/∂x = 2x · (1/(2√c) − sin c) · (1 + exp(a))",
    shapes="x ∈ ℝ",
)
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


@exercise(
    "least-squares",
    title="least-squares (MML Example 5.11): L = ‖y − Φθ‖²",
    source="MML ch. 5, Example 5.11",
    formula="L = ‖e‖², e = y − Φθ",
    manual="∂L/∂θ = −2Φᵀ(y − Φθ)",
    shapes="Φ ∈ ℝ⁴ˣ³, θ ∈ ℝ³, y ∈ ℝ⁴",
)
def least_squares() -> Manual:
    gen = torch.Generator().manual_seed(511)
    Φ = _randn(gen, 4, 3)
    θ = _randn(gen, 3).requires_grad_()
    y = _randn(gen, 4)
    e = y - torch.mv(Φ, θ)
    L = torch.dot(e, e)
    L.backward()
    return {θ: -2 * torch.mv(Φ.T, y - torch.mv(Φ, θ))}


@exercise(
    "inverse",
    title="inverse (MML 5.102): L = ⟨G, X⁻¹⟩",
    source="MML ch. 5, identity (5.102) with abᵀ generalised to G",
    formula="L = ⟨G, X⁻¹⟩ = Σᵢⱼ Gᵢⱼ (X⁻¹)ᵢⱼ",
    manual="∂L/∂X = −X⁻ᵀ G X⁻ᵀ",
    shapes="X ∈ ℝ³ˣ³ invertible, G ∈ ℝ³ˣ³",
)
def inverse() -> Manual:
    gen = torch.Generator().manual_seed(5102)
    X = (_randn(gen, 3, 3) + 3 * _eye(3)).requires_grad_()
    G = _randn(gen, 3, 3)
    L = torch.sum(G * torch.linalg.inv(X))
    L.backward()
    X_inv_T = torch.linalg.inv(X).T
    return {X: -X_inv_T @ G @ X_inv_T}


@exercise(
    "gram",
    title="gram (MML Example 5.13): L = ⟨G, RᵀR⟩, K = RᵀR",
    source="MML ch. 5, Example 5.13",
    formula="L = ⟨G, K⟩ = Σᵢⱼ Gᵢⱼ Kᵢⱼ, K = RᵀR",
    manual="∂L/∂R = R(G + Gᵀ)",
    shapes="R ∈ ℝ⁴ˣ³, G, K ∈ ℝ³ˣ³",
)
def gram() -> Manual:
    gen = torch.Generator().manual_seed(513)
    R = _randn(gen, 4, 3).requires_grad_()
    G = _randn(gen, 3, 3)
    K = R.T @ R
    L = torch.sum(G * K)
    L.backward()
    return {R: R @ (G + G.T)}


@exercise(
    "quadratic",
    title="quadratic (MML 5.107): f = xᵀBx",
    source="MML ch. 5, identity (5.107)",
    formula="f = xᵀBx",
    manual="∂f/∂x = (B + Bᵀ)x",
    shapes="x ∈ ℝ³, B ∈ ℝ³ˣ³ (not symmetric)",
)
def quadratic() -> Manual:
    gen = torch.Generator().manual_seed(5107)
    x = _randn(gen, 3).requires_grad_()
    B = _randn(gen, 3, 3)
    f = torch.dot(x, torch.mv(B, x))
    f.backward()
    return {x: torch.mv(B + B.T, x)}
