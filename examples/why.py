"""Why is a .grad None, where does a NaN come from: run `trace run examples/why.py`."""

import torch

torch.manual_seed(0)
w = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
h = torch.relu(w - 5.0)  # every input ≤ 0
loss = (3 * h).sum()
loss.backward()
print(w.grad)  # all zero: the report says where the gradient became zero
print(h.grad)  # None: h is not a leaf

v = torch.tensor([0.0, 1.0, 4.0], requires_grad=True)
r = torch.sqrt(v)
r.sum().backward()
print(v.grad)  # inf at [0]

u = torch.tensor([0.5, -0.5, 1.0], requires_grad=True)
frozen = u.detach()
(frozen * v).sum().backward()
print(u.grad.norm())  # AttributeError: u.grad is None
