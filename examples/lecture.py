"""The lecture's two exercises (MML chapter 5), as a plain script.

Run it as it is (`python examples/lecture.py`), or traced, one picture per backward call:

    trace run examples/lecture.py --out lecture-traces/
"""

import torch

import tracer

torch.set_printoptions(precision=4)

# Exercise a: f(z) = log(1 + z), z = xᵀx, x ∈ ℝ¹⁰; by hand, ∂f/∂x = 2x / (1 + xᵀx).
x = torch.tensor(
    [0.1801, 0.3444, 0.4006, 0.6215, 0.2568, 0.3863, 0.5832, 0.4745, 0.8343, 0.0492],
    dtype=torch.float64,
    requires_grad=True,
)
z = torch.dot(x, x)
f = torch.log(1 + z)
f.backward()
manual = (x / (1 + z)) * 2
print("exercise a: autograd", x.grad)
print("exercise a: manual  ", manual)
tracer.check(x, manual)

# Exercise b: f(z) = sin(z), z = Ax + b, A ∈ ℝ¹⁰ˣ⁵; by hand, (∂f/∂x)ᵀ·1 = Aᵀ cos(Ax + b).
x = torch.tensor([0.0143, 0.9790, 0.6805, 0.8771, 0.0953], dtype=torch.float64, requires_grad=True)
b = torch.tensor(
    [0.2230, 0.8327, 0.9930, 0.4835, 0.0355, 0.7217, 0.7977, 0.3526, 0.9574, 0.4611],
    dtype=torch.float64,
)
A = torch.tensor(
    [
        [0.9670, 0.5487, 0.0196, 0.4444, 0.3262],
        [0.3794, 0.7918, 0.9998, 0.0907, 0.8979],
        [0.0238, 0.1552, 0.9408, 0.4540, 0.7213],
        [0.0461, 0.6931, 0.9383, 0.2263, 0.5735],
        [0.1622, 0.9763, 0.6564, 0.8489, 0.6759],
        [0.1780, 0.4534, 0.0268, 0.5234, 0.3507],
        [0.1702, 0.2508, 0.9425, 0.4099, 0.5830],
        [0.7704, 0.2154, 0.5592, 0.2581, 0.9374],
        [0.5028, 0.6831, 0.5410, 0.7700, 0.9633],
        [0.1757, 0.9128, 0.7975, 0.6231, 0.2041],
    ],
    dtype=torch.float64,
)
z = torch.mv(A, x) + b
f = torch.sin(z)
f.backward(torch.ones(10))  # a vector-Jacobian product with ones (float32, cast by PyTorch)
manual = torch.matmul(torch.cos(torch.mv(A, x) + b), A)
print("exercise b: autograd", x.grad)
print("exercise b: manual  ", manual)
print("exercise b: allclose", torch.allclose(x.grad, manual))
