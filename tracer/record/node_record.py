"""What tracer attaches to an autograd node: one `NodeRecord` in its `metadata` dict.

Why on the node, and not in a dict of ours: the record lives exactly as long as the node
(autograd's graph), so a forward value kept for a graph that never reaches a backward is
freed with that graph, and the trace holds no reference that would keep a user's graph
(and its activations) alive.

Why every node tracer touches gets one, even with nothing to record: in torch 2.x, once
Python code has touched a `grad_fn` (`t.grad_fn`, `next_functions`, a hook), the node
keeps its Python object alive and is later destroyed through that object, recursively
along the chain, bypassing autograd's iterative deleter: dropping a 100,000-op chain
then overflows the C stack (SIGSEGV; reproduced without tracer by touching `y.grad_fn`
of each op; PyTorch issues #109948, #155322). A record holds references to its node's
children, and when the node dies, `__del__` hands them to a per-thread queue that the
outermost `__del__` drains in a loop: the destruction becomes iterative again.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import torch

# The key in `grad_fn.metadata`. One record per node, shared by nested traces.
KEY = "tracer"

_local = threading.local()


def _drain(children: Any) -> None:
    """Drop `children` (grad_fn objects) without recursing: the first call on a thread
    drains; calls made while it drains (from nodes dying inside it) only queue."""
    pending: list[Any] | None = getattr(_local, "pending", None)
    if pending is None:
        pending = _local.pending = []
    pending.append(children)
    if getattr(_local, "draining", False):
        return
    _local.draining = True
    try:
        while pending:
            pending.pop()  # dropping the last reference may queue more here
    finally:
        _local.draining = False


class ConstantInput:
    """An input needing no grad that an op was called with (drawn as a constant).

    The tensor is held weakly (who it is: its name, the module owning it); its value as
    the op took it is `value`: a large one summarised at once (a `TensorData`), so that
    it dies when the program lets go of it as it does untraced (the op may not have saved
    it); a small one the tensor itself (or a copy of its numbers, when it views larger
    memory: tracer.record.summary.compact_copy), with its `_version`, so that a later
    in-place change is told apart.
    """

    __slots__ = ("_ref", "position", "value", "version")

    def __init__(self, position: int, tensor: torch.Tensor, value: Any, version: int) -> None:
        self.position = position  # among the op's tensor arguments
        self.value = value  # a TensorData, or a small tensor summarised with the pass
        self.version = version
        try:
            self._ref: weakref.ref | None = weakref.ref(tensor)
        except TypeError:  # a subclass without weak references: nameless, never kept
            self._ref = None

    @property
    def tensor(self) -> torch.Tensor | None:
        """The user's tensor, while the program holds it."""
        return None if self._ref is None else self._ref()

    @property
    def key(self) -> int:
        """The same for every input of the same tensor, while this input is held (Python
        has one plain weak reference per object)."""
        return id(self._ref) if self._ref is not None else id(self)


class NodeRecord:
    """A node's children (kept, see the module docstring), and what the forward recorder
    saw of it: its output values, small ones as tensors with their `_version` (to catch
    later in-place changes) and large ones already summarised (tracer.record.summary.QuickSummary),
    and the inputs needing no grad its op was called with.

    Few objects per node on purpose: every object tracer keeps alive is one more for
    Python's cyclic collector to walk, and on a long graph that walk is most of the cost.
    Output 0 (nearly every op has only that one) lives in two slots; others in `more`.
    """

    __slots__ = (
        "captured",
        "children",
        "constants",
        "module",
        "more",
        "names",
        "summaries",
        "value",
        "version",
        "where",
    )

    def __init__(self, children: Any) -> None:
        self.children = children  # a grad_fn, a tuple of them, or None
        self.value: torch.Tensor | None = None  # output 0 as the op computed it
        self.version = 0
        self.more: dict[int, tuple[torch.Tensor, int]] | None = None  # outputs 1, 2, …
        self.summaries: dict[int, Any] | None = None  # output -> TensorData, once captured
        self.constants: list[ConstantInput] | None = None
        self.captured = 0  # how many backward passes captured this node
        self.names: tuple[str, ...] = ()  # the variables the user's code bound its outputs to
        self.module: Any = None  # the module call that made it (a tracer.record.modules.Call)
        # Where the user's code ran its op: (code, offset), read as a line at capture.
        self.where: tuple[Any, int] | None = None

    def keep(self, output_nr: int, value: torch.Tensor, version: int) -> None:
        if output_nr == 0:
            self.value, self.version = value, version
        else:
            if self.more is None:
                self.more = {}
            self.more[output_nr] = (value, version)

    def keep_summary(self, output_nr: int, summary: Any) -> None:
        """Output `output_nr`'s value, already summarised (a large tensor: see
        tracer.record.summary.QuickSummary), instead of the tensor."""
        if self.summaries is None:
            self.summaries = {}
        self.summaries[output_nr] = summary

    @property
    def seen_forward(self) -> bool:
        return self.value is not None or bool(self.more) or bool(self.summaries)

    def outputs(self) -> dict[int, Any]:
        """Output -> (tensor, version) not yet summarised, or its TensorData."""
        found: dict[int, Any] = dict(self.summaries or {})
        if self.value is not None:
            found[0] = (self.value, self.version)
        for k, entry in (self.more or {}).items():
            found[k] = entry
        return found

    def summarised(self, summaries: dict[int, Any]) -> None:
        """Keep the plain-data values for later passes; drop the tensors."""
        self.summaries = summaries
        self.value = None
        self.more = None

    def __del__(self) -> None:
        children, self.children = self.children, None
        if children is not None:
            _drain(children)


def record_of(fn: Any, next_functions: tuple[Any, ...] | None = None) -> NodeRecord:
    """The node's record, made (with its children) on first touch; `next_functions`, when
    the caller has it already, saves reading it again."""
    meta = fn.metadata
    record = meta.get(KEY)
    if record is None:
        edges = fn.next_functions if next_functions is None else next_functions
        if len(edges) == 1:
            children = edges[0][0]
        else:
            children = tuple(child for child, _ in edges if child is not None) or None
        record = meta[KEY] = NodeRecord(children)
    return record
