"""Pausing Python's cyclic collector around tracer's own bulk work.

While tracer builds tens of thousands of small objects (one capture, a DOT or JSON file),
the collector would run full collections over them again and again; `paused_gc()` pauses
it, and restores it to what it was, around that work only.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused_gc() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
