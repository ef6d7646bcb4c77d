"""Names: which variable names the user's code gave its tensors, read from its frames.

The user's code is told apart from Python's, torch's and tracer's by file
(`tracer.model.location.is_user_file`). A tensor keeps the first name it is seen under; a node the
name of the tensors it produced (on its NodeRecord, so the name lives as long as the graph
and the trace keeps no graph alive); a parameter's qualified name, where a module owns it,
wins over both (`tracer.record.modules`).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from types import FrameType
from typing import Any

import torch

from tracer.model.location import is_user_file
from tracer.record.node_record import record_of


def outward(start: FrameType | None, skip: Callable[[FrameType], bool]) -> FrameType | None:
    """The innermost frame at or above `start` that `skip` does not match."""
    frame = start
    while frame is not None and skip(frame):
        frame = frame.f_back
    return frame


def user_frame(start: FrameType | None) -> FrameType | None:
    """The innermost frame at or above `start` that belongs to the user's code."""
    return outward(start, lambda f: not is_user_file(f.f_code.co_filename))


# The library modules whose functions run many backward passes of their own for one call
# of the user's: gradcheck and gradgradcheck, jacobian, hessian, vjp, jvp, hvp, vhp.
LIBRARY_MODULES = ("torch.autograd.gradcheck", "torch.autograd.functional")


def caller_and_library(start: FrameType | None) -> tuple[FrameType | None, str | None]:
    """The innermost frame of the user's code at or above `start`, and the name of the
    library function (of `LIBRARY_MODULES`) it called on the way to `start`, if it did:
    a backward pass that function runs is one of its own, not one the user's code asked for."""
    library, frame = None, start
    while frame is not None and not is_user_file(frame.f_code.co_filename):
        if frame.f_globals.get("__name__") in LIBRARY_MODULES:
            library = frame.f_code.co_name  # the outermost one: the function the user called
        frame = frame.f_back
    return frame, (None if frame is None else library)


def in_torch(frame: FrameType) -> bool:
    """Whether the frame runs torch's own code."""
    module = frame.f_globals.get("__name__", "")
    return module == "torch" or module.startswith("torch.")


def is_user_name(name: str) -> bool:
    """A variable name worth showing: not private ("_x"), not a tool's ("@py_assert1")."""
    return name.isidentifier() and not name.startswith("_")


def namespaces(frame: FrameType) -> list[Mapping[str, Any]]:
    """Where the frame's code looks names up: its locals, then its globals (once, when the
    code runs at module level, where the two are the same)."""
    if frame.f_locals is frame.f_globals:
        return [frame.f_globals]
    return [frame.f_locals, frame.f_globals]


def variable_naming(frame: FrameType | None) -> Callable[[Any], str | None]:
    """A function giving the user's variable name for an object (looked up lazily in the
    innermost user frame at or above `frame`)."""

    def variable(value: Any) -> str | None:
        user = user_frame(frame)
        for namespace in namespaces(user) if user is not None else ():
            for name, v in list(namespace.items()):
                if v is value and is_user_name(name):
                    return name
        return None

    return variable


class Names:
    """The variable names learnt so far, by tensor (a weak reference tells a reused id
    apart, and keeps no tensor alive)."""

    def __init__(self) -> None:
        self._names: dict[int, tuple[weakref.ref, str]] = {}

    def learn(self, namespace: Mapping[str, Any]) -> None:
        """Each tensor in `namespace` is named; the first name wins; "_x" is skipped."""
        for name, value in list(namespace.items()):
            if not is_user_name(name) or not isinstance(value, torch.Tensor):
                continue
            if self.of(value) is None:
                self._names[id(value)] = (weakref.ref(value), name)
                if value.grad_fn is not None:  # the node keeps it, as long as it lives
                    record = record_of(value.grad_fn)
                    if name not in record.names:
                        record.names = (*record.names, name)

    def learn_from(self, frame: FrameType | None) -> FrameType | None:
        """Learn the names of the innermost user frame at or above `frame`; return it."""
        user = user_frame(frame)
        for namespace in namespaces(user) if user is not None else ():
            self.learn(namespace)
        return user

    def of(self, t: torch.Tensor) -> str | None:
        entry = self._names.get(id(t))
        return entry[1] if entry is not None and entry[0]() is t else None

    def tensors(self) -> list[tuple[torch.Tensor, str]]:
        """The named tensors still alive."""
        found = []
        for ref, name in list(self._names.values()):
            t = ref()
            if t is not None:
                found.append((t, name))
        return found

    def clear(self) -> None:
        self._names.clear()
