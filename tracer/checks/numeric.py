"""A second oracle: the gradient by central finite differences, for `tracer.check(x, fn=...)`.

A student without a closed form yet can still check autograd: give the function that
backward differentiated, as a function of the checked tensor, and it is re-run on copies
of that tensor, one element nudged at a time::

    tracer.check(x, fn=lambda x: torch.log(1 + torch.dot(x, x)))

What is re-run is exactly `fn`, nothing else: the trace cannot re-run the user's code (a
recorded graph holds values, not the program). `fn(t)` must return a scalar: the tensor
`backward()` was called on. For `f.backward(v)` give the scalar whose gradient that pass
computed, `fn=lambda x: (v * f_of(x)).sum()`.

Each element i of the gradient is (fn(x + ε eᵢ) − fn(x − ε eᵢ)) / 2ε, in float64 (as
`torch.autograd.gradcheck` does), with ε = 1e-6. Central differences are exact to about
ε² times the third derivative plus rounding of about 1e-16/ε, so they are compared with
looser tolerances than a closed form (`FD_TOLERANCES`). `fn` runs without gradient
tracking, on copies: the user's tensors, their `.grad` and the random number generators
are as they were.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

import torch

EPS = 1e-6
# (rtol, atol) for finite differences in float64: gradcheck's order of magnitude.
FD_TOLERANCES = (1e-5, 1e-6)
# Each element costs two calls of fn: beyond this many the check asks for a smaller input.
MAX_ELEMENTS = 10_000


@contextlib.contextmanager
def _random_state_kept() -> Iterator[None]:
    """torch's and (when imported) numpy's and Python's generators as they were."""
    import random

    numpy = sys.modules.get("numpy")
    np_state = numpy.random.get_state() if numpy is not None else None
    py_state = random.getstate()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(py_state)
            if numpy is not None:
                numpy.random.set_state(np_state)


def finite_differences(
    fn: Callable[[torch.Tensor], torch.Tensor], tensor: torch.Tensor, eps: float = EPS
) -> torch.Tensor:
    """∂fn/∂tensor by central differences, float64, with `tensor`'s shape.

    A TypeError or ValueError, in one line, when `fn` does not return a real scalar or the
    tensor is too large to differentiate element by element.
    """
    if tensor.numel() > MAX_ELEMENTS:
        raise ValueError(
            f"finite differences need 2 calls of fn per element: {tensor.numel()} elements "
            f"is more than {MAX_ELEMENTS}; check a smaller input"
        )
    base = tensor.detach().to(torch.float64).clone()
    flat = base.view(-1)
    grad = torch.zeros_like(flat)

    def value(t: torch.Tensor) -> float:
        out = fn(t)
        if not isinstance(out, torch.Tensor) or out.numel() != 1 or out.is_complex():
            raise TypeError(
                "fn must return a real scalar tensor (the one backward was called on); "
                "for f.backward(v) use fn=lambda x: (v * f(x)).sum()"
            )
        return float(out.detach().to(torch.float64).reshape(()))

    with torch.no_grad(), torch._C.DisableTorchFunction(), _random_state_kept():
        for i in range(flat.numel()):
            original = float(flat[i])
            flat[i] = original + eps
            plus = value(base.clone())
            flat[i] = original - eps
            minus = value(base.clone())
            flat[i] = original
            grad[i] = (plus - minus) / (2 * eps)
    return grad.view(base.shape)
