"""How tracer keeps its own work out of the user's way.

- `quiet_torch()`: tracer's own torch calls are hidden from the user's TorchFunctionModes
  and dispatch modes (they should see only the user's calls) and recorded by no graph.
- `paused_gc()`: while tracer builds tens of thousands of small objects (one capture, a
  DOT or JSON file), Python's cyclic collector would run full collections over them again
  and again; it is paused, and restored to what it was, around that work only.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def quiet_torch() -> Iterator[None]:
    import torch  # here, not at the top: the command line imports this module without torch
    from torch.utils._python_dispatch import _disable_current_modes

    with torch.no_grad(), torch._C.DisableTorchFunction(), _disable_current_modes():
        yield


@contextmanager
def paused_gc() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
