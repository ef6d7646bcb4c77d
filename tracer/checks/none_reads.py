"""The `.grad`s the user's code read as None (the forward recorder sees each read), told
once each: what the report and the picture say of them (tracer.view.report)."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import replace
from types import FrameType

import torch

from tracer.model.explain import NoGradient
from tracer.model.location import code_place

# How many reads of a None .grad a trace records, and how many (tensor, place) pairs it
# remembers having looked at (then it starts again: a loop makes new tensors each time).
NONE_READS_KEPT = 200
PLACES_KEPT = 1024


class NoneReads:
    """Each read is looked at once per (tensor, place in the code), cheaply: the place is
    the code and its instruction offset, read as a line only when new (a frame's
    `f_lineno` scans its line table). Each (name, reason, line) is recorded once, so that a
    loop reading a new tensor's `.grad` on every step says it once; a name recorded
    before on another line is marked `again` (the report tells each name once)."""

    def __init__(self) -> None:
        # (tensor, code, offset) by id: a code object's hash is computed from its contents
        self._seen: dict[tuple[int, int, int], weakref.ref] = {}
        self._told: set[tuple[str, str, tuple[str, int] | None]] = set()
        self._names: set[str] = set()

    def note(
        self,
        t: torch.Tensor,
        frame: FrameType,
        why: Callable[[torch.Tensor, FrameType], NoGradient],
        into: list[NoGradient],
    ) -> None:
        """`t.grad` was read as None by `frame`: `why` says why, and a new one is added to
        `into` with the line that read it."""
        key = (id(t), id(frame.f_code), frame.f_lasti)
        seen = self._seen.get(key)
        if (seen is not None and seen() is t) or len(into) >= NONE_READS_KEPT:
            return
        if len(self._seen) >= PLACES_KEPT:
            self._seen.clear()
        self._seen[key] = weakref.ref(t)
        where = code_place(frame.f_code, frame.f_lasti)
        found = why(t, frame)
        told = (found.name, found.reason, where)
        if told in self._told:
            return
        self._told.add(told)
        into.append(replace(found, where=where, again=found.name in self._names))
        self._names.add(found.name)

    def clear(self) -> None:
        self._seen.clear()
        self._told.clear()
        self._names.clear()
