"""The lecture's two exercises (MML chapter 5), on the lecture's own data."""

import torch

from tracer.exercises._inputs import Manual

f64 = torch.float64


def exercise_a() -> Manual:
    x = torch.tensor(
        [0.1801, 0.3444, 0.4006, 0.6215, 0.2568, 0.3863, 0.5832, 0.4745, 0.8343, 0.0492],
        dtype=f64,
        requires_grad=True,
    )
    z = torch.dot(x, x)
    f = torch.log(1 + z)
    f.backward()
    return {x: (x / (1 + z)) * 2}


def exercise_b() -> Manual:
    x = torch.tensor([0.0143, 0.9790, 0.6805, 0.8771, 0.0953], dtype=f64, requires_grad=True)
    b = torch.tensor(
        [0.2230, 0.8327, 0.9930, 0.4835, 0.0355, 0.7217, 0.7977, 0.3526, 0.9574, 0.4611],
        dtype=f64,
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
        dtype=f64,
    )
    z = torch.mv(A, x) + b
    f = torch.sin(z)
    # A vector-Jacobian product with ones, passed as float32 as in the lecture:
    # PyTorch casts it to f's dtype.
    f.backward(torch.ones(10))
    return {x: torch.matmul(torch.cos(torch.mv(A, x) + b), A)}
