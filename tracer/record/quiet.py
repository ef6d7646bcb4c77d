"""`quiet_torch()`: tracer's own torch calls hidden from the user's TorchFunctionModes and
dispatch modes (they should see only the user's calls) and recorded by no graph."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def quiet_torch() -> Iterator[None]:
    import torch  # here, not at the top: the command line imports this module without torch
    from torch.utils._python_dispatch import _disable_current_modes

    # Torch functions off first: no_grad's own calls (`_set_grad_enabled`) are torch
    # functions, which the user's function modes would see.
    with torch._C.DisableTorchFunction(), torch.no_grad(), _disable_current_modes():
        yield
