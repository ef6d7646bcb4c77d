"""The lecture as written, as a script: no `tracer` in it, the manual results printed.

    trace run examples/lecture_as_written.py --out lecture-traces/

`trace run` recognises each printed manual result (see tracer/checks/manual.py) and checks it
against autograd's gradient: both passes agree, exit status 0.
"""

import numpy as np
import torch

# (a) f(z) = log(1 + z), z = xᵀx
D = 10
x = torch.tensor(np.random.random(D), requires_grad=True)
z = torch.dot(x, x)
f = torch.log(1 + z)
print((x / (1 + z)) * 2)  # by hand, before backward: 2x / (1 + xᵀx)
f.backward()
print(x.grad)

# (b) f(z) = sin(z), z = Ax + b
D, E = 5, 10
x = torch.tensor(np.random.random(D), requires_grad=True)
A = torch.tensor(np.random.random((E, D)))
b = torch.tensor(np.random.random(E))
z = torch.mv(A, x) + b
f = torch.sin(z)
f.backward(torch.Tensor(np.ones(z.shape[0])))
print(x.grad)
print(torch.matmul(torch.cos(torch.mv(A, x) + b), A))  # by hand: Aᵀ cos(Ax + b)
