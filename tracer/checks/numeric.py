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
tracking, on copies: the user's tensors and their `.grad` are as they were, and so is
every global random number generator `fn` may draw from or seed (`random_state_kept`):
torch's CPU one; CUDA's, each device's (and, while CUDA is not initialised, the seed
queued for it, which `torch.manual_seed` sets); Python's `random`; numpy's global one,
when numpy was imported before the check. Generators the user's code made itself
(`torch.Generator()`, `numpy.random.default_rng()`, `random.Random()`) and other
accelerators' (MPS, XPU) are not kept.
"""

from __future__ import annotations

import contextlib
import copy
import sys
from collections.abc import Callable, Iterator

import torch

EPS = 1e-6
# (rtol, atol) for finite differences in float64: gradcheck's order of magnitude.
FD_TOLERANCES = (1e-5, 1e-6)
# Each element costs two calls of fn: beyond this many the check asks for a smaller input.
MAX_ELEMENTS = 10_000


@contextlib.contextmanager
def random_state_kept() -> Iterator[None]:
    """The global generators as they were (see the module docstring).

    CUDA not yet initialised has no state to save: the seed queued for it is kept
    instead, and should `fn` be the first to use CUDA, each device's generator is seeded
    again with the seed it started from (Philox: seed and offset 0, its state at start),
    which is the program's queued seed, or torch's default, unless `fn` itself seeded
    before it used CUDA.
    """
    import random

    numpy = sys.modules.get("numpy")
    np_state = numpy.random.get_state() if numpy is not None else None
    py_state = random.getstate()
    cuda_ready = torch.cuda.is_initialized()
    devices = list(range(torch.cuda.device_count())) if cuda_ready else []
    # torch.cuda's record of the latest seeds asked for before its initialisation (private;
    # each of its attributes is copied, whatever they are).
    tracker = None if cuda_ready else getattr(torch.cuda, "_lazy_seed_tracker", None)
    queued = None if tracker is None else {k: copy.copy(v) for k, v in vars(tracker).items()}
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py_state)
            if numpy is not None:
                numpy.random.set_state(np_state)
            if tracker is not None and queued is not None:
                vars(tracker).clear()
                vars(tracker).update(queued)
            if not cuda_ready and torch.cuda.is_initialized():
                for generator in torch.cuda.default_generators:
                    generator.manual_seed(generator.initial_seed())


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

    with torch.no_grad(), torch._C.DisableTorchFunction(), random_state_kept():
        for i in range(flat.numel()):
            original = float(flat[i])
            flat[i] = original + eps
            plus = value(base.clone())
            flat[i] = original - eps
            minus = value(base.clone())
            flat[i] = original
            grad[i] = (plus - minus) / (2 * eps)
    return grad.view(base.shape)
