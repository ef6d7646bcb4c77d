"""The structure walk: autograd's `grad_fn` graph from its roots, numbered breadth-first.

The walk is iterative (depth is no limit) and numbers each node once, on discovery: a
node's id is its position in `fns`, which is also the walk's queue. It makes the plain
`Node` of each one with what is known now (op, name, shape), queues its forward values
and saved tensors for summarising (keys into the capture's `Summariser`), and adds the
inputs needing no grad that the forward recorder noted as constant nodes.
"""

from __future__ import annotations

import functools
from collections import Counter, deque
from collections.abc import Callable, Hashable, Sequence
from typing import Any, NamedTuple

import torch
from torch.autograd.graph import GradientEdge, get_gradient_edge

from tracer.model.graph import Node
from tracer.model.location import code_place
from tracer.model.tensor import TensorData
from tracer.record.node_record import ConstantInput, NodeRecord, record_of
from tracer.record.summary import Summariser

# A grad_fn node as torch exposes it. torch keeps its Python object alive with the node,
# so identity is stable: we key our maps on the object itself while we hold it.
GradFn = Any
# What a value will be once summarised: a key into the Summariser, or a TensorData an
# earlier pass through the same graph summarised already.
ValueKey = Hashable | TensorData | None

# torch stores an int64 default such as NLLLoss's ignore_index=-100 as uint64 in the node.
_UINT64 = 2**64


# An input slot of node `src`: the output `dst_output` of node `dst` feeds slot `slot`, as
# (src, dst, slot, dst_output). A plain tuple, not a NamedTuple: the walk makes one per edge
# of every pass, and a NamedTuple costs seven times as much to make.
WalkedEdge = tuple[int, int, int, int]


class ConstantEdge(NamedTuple):
    """Node `src`'s op took the constant node `constant` as its `position`-th tensor."""

    src: int
    constant: int
    position: int


class SavedEntry(NamedTuple):
    """One thing a node saved for backward, before summarising (see model.graph.Saved)."""

    name: str
    key: ValueKey  # a saved tensor's key into the Summariser
    text: str | None  # a non-tensor saved value, as text
    source: str | None  # where a saved tensor came from: an input's name, or "output"


class BackwardOrigins:
    """Which create_graph=True backward pass made a node, if one did.

    autograd numbers every node a thread creates (`_sequence_nr`, one counter per thread),
    and the engine runs a pass's CPU work in the thread that called backward: the nodes a
    pass made there are numbered inside the interval the counter moved through while it
    ran. A pass that ran on other devices' engine threads numbers its nodes from their
    counters; for the latest such pass the rule is the older one: a node that neither the
    forward recorder nor an earlier capture saw came from it (a custom Function's node
    made later in the forward, unseen by the recorder, then reads as made by that pass).
    """

    def __init__(self) -> None:
        self._intervals: list[tuple[int, int, int]] = []  # (first, end, pass), end excluded
        self._elsewhere: int | None = None

    def add(self, number: int, first: int, end: int, *, in_this_thread: bool) -> None:
        """Pass `number` ran while this thread's counter went from `first` to `end`."""
        if in_this_thread:
            self._intervals.append((first, end, number))
        else:
            self._elsewhere = number

    @property
    def any(self) -> bool:
        """Whether a create_graph=True pass was recorded (else no node was made by one)."""
        return bool(self._intervals) or self._elsewhere is not None

    def made_by(self, fn: GradFn, unseen: bool) -> int | None:
        """The pass that made op node `fn`; `unseen`: nothing in the forward pass saw it."""
        if self._intervals:
            seq = fn._sequence_nr()
            for first, end, number in reversed(self._intervals):
                if first <= seq < end:
                    return number
        return self._elsewhere if unseen else None


def root_node(t: torch.Tensor | GradientEdge) -> tuple[GradFn, int]:
    """The node and output index that a backward from `t` starts at."""
    edge = t if isinstance(t, GradientEdge) else get_gradient_edge(t)
    return edge.node, edge.output_nr


class GraphWalk:
    """The numbered nodes and edges of one graph, with the torch objects they came from.

    `name_of` gives a tensor's variable name (or None); a node's name is that of the
    tensors it produced, kept on its record. `origins` tells which create_graph=True
    pass made a node, if one did. With `values=False` no forward
    value is queued, not even a leaf's (a model's parameters).
    """

    def __init__(
        self,
        roots: Sequence[tuple[GradFn, int]],
        summary: Summariser,
        *,
        name_of: Callable[[torch.Tensor], str | None],
        values: bool,
        saved: bool,
        origins: BackwardOrigins | None,
    ) -> None:
        self.summary = summary
        self._name_of = name_of
        self._values = values
        self._saved = saved
        # Asked for each op node only once some pass built a graph (most traces: never).
        self._origins = origins if origins is not None and origins.any else None
        self.index: dict[GradFn, int] = {}
        self.fns: list[GradFn | None] = []  # by node id; None for a constant
        self.records: list[NodeRecord | None] = []
        self.nodes: list[Node] = []
        self.forward_keys: dict[int, list[ValueKey]] = {}
        self.saved_keys: dict[int, list[SavedEntry]] = {}
        self.edges: list[WalkedEdge] = []
        self.incoming: Counter[tuple[int, int]] = Counter()  # (dst, dst_output) -> edges
        self.constant_edges: list[ConstantEdge] = []
        self.constant_ids: dict[int, int] = {}  # ConstantInput.key -> node id
        self.leaves: dict[int, torch.Tensor] = {}  # node id -> the leaf tensor
        self._shapes: dict[tuple[int, ...], tuple[int, ...]] = {}  # see `_shape`
        self._walk([fn for fn, _ in roots])
        self.roots = [self.index[fn] for fn, _ in roots]
        self.root_outputs = [output for _, output in roots]

    def _walk(self, roots: list[GradFn]) -> None:
        """Number every node breadth-first from `roots` (see the module docstring).

        It runs once per node of every pass, so it is one loop with what it calls bound to
        local names, and it makes nothing per node but the node's record, its `Node` and a
        tuple per edge.
        """
        index, fns, records, nodes, edges = self.index, self.fns, self.records, self.nodes, []
        node = self._node
        for fn in roots:
            if fn not in index:
                index[fn] = len(fns)
                fns.append(fn)
        with_constants: list[int] = []  # nodes whose op took inputs needing no grad
        for src, fn in enumerate(fns):  # `fns` grows as nodes are found: it is the queue
            assert fn is not None  # constants (None) are added after the walk
            next_functions = fn.next_functions
            # A leaf's AccumulateGrad has no children to free (see tracer.record.node_record):
            # it needs no record.
            record = record_of(fn, next_functions) if next_functions else None
            records.append(record)
            nodes.append(node(src, fn, record))
            if record is not None:
                record.captured += 1
                if record.constants:
                    with_constants.append(src)
            for slot, (child, output_nr) in enumerate(next_functions):
                if child is None:
                    continue  # an input that needs no gradient: drawn from the constants
                dst = index.get(child)
                if dst is None:
                    dst = index[child] = len(fns)
                    fns.append(child)
                edges.append((src, dst, slot, output_nr))
        self.edges = edges
        self.incoming = Counter([(dst, output) for _, dst, _, output in edges])
        for node_id in with_constants:
            fn, record = fns[node_id], records[node_id]
            assert record is not None and record.constants
            self._attach_constants(self._constant_user(fn), record.constants)

    def _node(self, node_id: int, fn: GradFn, record: NodeRecord | None) -> Node:
        """The plain-data node for `fn`, with what is known of it; its forward values (and
        saved tensors) are queued for summarising."""
        op = type(fn).__name__
        if op == "AccumulateGrad":
            variable = fn.variable
            self.leaves[node_id] = variable
            if self._values:
                self.forward_keys[node_id] = [self.summary.add(variable)]
            name = self._name_of(variable)
            return Node(node_id, "leaf", op, name, self._shape(variable.shape), _dtype(variable))
        name = shape = dtype = None  # output 0's shape and dtype are the node's
        if record is not None:
            value = record.value
            if value is not None and record.more is None and record.summaries is None:
                # Output 0 alone, as the op computed it: nearly every op the recorder saw.
                self.forward_keys[node_id] = [self.summary.add(value, record.version)]
                shape, dtype = self._shape(value.shape), _dtype(value)
            elif record.seen_forward:
                first = self._queue_forward(node_id, record)
                shape, dtype = _shape_of(first), _dtype_of(first)
            if record.names:
                name = ", ".join(record.names)
        if self._saved:
            self.saved_keys[node_id] = self._read_saved(fn)
        node = Node(node_id, "op", op, name, shape, dtype)
        if record is not None and record.where is not None:
            node.where = code_place(*record.where)
        if self._origins is not None:
            unseen = record is None or not (record.seen_forward or record.captured)
            node.made_by = self._origins.made_by(fn, unseen)
        return node

    def _shape(self, size: torch.Size | tuple[int, ...]) -> tuple[int, ...]:
        """`size` as a tuple, one per distinct shape in the graph: a few tuples for
        thousands of nodes, and fewer objects for Python's cyclic collector to walk."""
        shape = self._shapes.get(size)  # a torch.Size hashes and compares as its tuple
        if shape is None:
            shape = tuple(size)
            self._shapes[shape] = shape
        return shape

    def _queue_forward(self, node_id: int, record: NodeRecord) -> Any:
        """Queue the forward values the recorder kept on `record`; output 0's entry."""
        forward = record.outputs()
        keys = [self._forward_key(forward.get(i)) for i in range(max(forward) + 1)]
        self.forward_keys[node_id] = keys
        return forward.get(0)

    def _forward_key(self, entry: Any) -> ValueKey:
        if entry is None:
            return None
        if isinstance(entry, TensorData):
            return entry  # summarised by an earlier pass through this graph
        tensor, version = entry
        return self.summary.add(tensor, version)

    def _read_saved(self, fn: GradFn) -> list[SavedEntry]:
        """What autograd kept on `fn` for its backward, read before backward frees it."""
        saved = []
        for attr in _saved_attributes(fn.__class__):
            try:
                value = getattr(fn, attr)
            except Exception:  # freed by an earlier backward, or unreadable
                continue
            name = attr.removeprefix("_saved_")
            if isinstance(value, torch.Tensor):
                source = self._name_of(value)
                if source is None and value.grad_fn is fn:
                    source = "output"
                # Summarised now: backward frees what a node saved, and so must tracer.
                saved.append(SavedEntry(name, self.summary.add_now(value), None, source))
            elif value is not None:
                saved.append(SavedEntry(name, None, _short(value), None))
        return saved

    def _constant_user(self, output: GradFn) -> GradFn:
        """The node of one call's own subgraph that took its constants as inputs.

        A composite op (matmul of a vector by a matrix: unsqueeze, mm, squeeze) makes
        several nodes in one call; the constants belong to the first, breadth-first from
        the output, that has an input needing no grad (a None in its next_functions). The
        search stays inside the call: it stops at nodes another recorded call made.
        """
        queue, seen = deque([output]), {output}
        while queue:
            fn = queue.popleft()
            if any(child is None for child, _ in fn.next_functions):
                return fn
            for child, _ in fn.next_functions:
                if child in seen or child not in self.index:
                    continue
                record = self.records[self.index[child]]
                if (record is not None and record.seen_forward) or type(child).__name__ == (
                    "AccumulateGrad"
                ):
                    continue  # made by another call
                seen.add(child)
                queue.append(child)
        return output

    def _attach_constants(self, fn: GradFn, constants: Sequence[ConstantInput]) -> None:
        src = self.index.get(fn)
        if src is None:
            return
        for constant in constants:
            node_id = self.constant_ids.get(constant.key)
            if node_id is None:
                node_id = self.constant_ids[constant.key] = len(self.nodes)
                tensor, value = constant.tensor, constant.value  # (None once freed)
                summarised = isinstance(value, TensorData)
                self.fns.append(None)
                self.records.append(None)
                self.nodes.append(
                    Node(
                        id=node_id,
                        kind="constant",
                        op="",
                        name=None if tensor is None else self._name_of(tensor),
                        shape=self._shape(value.shape),
                        dtype=value.dtype if summarised else _dtype(value),
                    )
                )
                self.forward_keys[node_id] = [
                    value if summarised else self.summary.add(value, constant.version)
                ]
            self.constant_edges.append(ConstantEdge(src, node_id, constant.position))

    def add_unreached(self, tensors: Sequence[torch.Tensor | GradientEdge]) -> None:
        """Add leaves the caller asked gradients for but that are not in the graph."""
        for t in tensors:
            if isinstance(t, GradientEdge) or t.grad_fn is not None or not t.requires_grad:
                continue
            fn = root_node(t)[0]
            if fn not in self.index:
                node_id = self.index[fn] = len(self.fns)
                self.fns.append(fn)
                self.records.append(None)
                self.nodes.append(self._node(node_id, fn, None))

    def limit_to(self, inputs: Sequence[torch.Tensor | GradientEdge]) -> None:
        """The pass computes the gradients of `inputs` only: every other leaf is outside it
        (not expected to receive a gradient)."""
        asked = {root_node(t)[0] for t in inputs}
        for node_id, fn in enumerate(self.fns):
            if node_id in self.leaves and fn not in asked:
                self.nodes[node_id].outside_pass = True

    def tensors_by_node(self) -> dict[int, torch.Tensor | None]:
        """The leaf and constant tensors, by node id (None: a constant the program has let
        go of)."""
        tensors: dict[int, torch.Tensor | None] = dict(self.leaves)
        for record in self.records:
            for constant in (record.constants or ()) if record is not None else ():
                node_id = self.constant_ids.get(constant.key)
                if node_id is not None:
                    tensors[node_id] = constant.tensor
        return tensors

    def first_users(self) -> dict[int, int]:
        """For each node, the first node (breadth-first from the roots) that takes it."""
        users: dict[int, int] = {}
        for src, dst, _, _ in self.edges:
            users.setdefault(dst, src)
        for constant_edge in self.constant_edges:
            users.setdefault(constant_edge.constant, constant_edge.src)
        return users

    def release(self) -> None:
        """Drop every torch object, root first (see tracer.record.node_record for why)."""
        self.leaves.clear()
        self.index.clear()
        self.records.clear()
        fns, self.fns = self.fns, []
        fns.reverse()
        while fns:
            fns.pop()


_DTYPE_NAMES: dict[torch.dtype, str] = {}  # "float32", made once per dtype


def _dtype(t: torch.Tensor) -> str:
    dtype = t.dtype
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = _DTYPE_NAMES[dtype] = str(dtype).removeprefix("torch.")
    return name


def _shape_of(entry: Any) -> tuple[int, ...] | None:
    if entry is None:
        return None
    if isinstance(entry, TensorData):
        return entry.shape
    return tuple(entry[0].shape)


def _dtype_of(entry: Any) -> str | None:
    if entry is None:
        return None
    if isinstance(entry, TensorData):
        return entry.dtype
    return _dtype(entry[0])


@functools.cache
def _saved_attributes(node_type: Any) -> tuple[str, ...]:
    """The `_saved_*` attributes of a grad_fn class (dir() is slow: once per class).

    Symbolic sizes and strides (`_saved_self_sym_sizes`) are autograd's bookkeeping, not
    tensors a reader cares about: left out.
    """
    return tuple(a for a in dir(node_type) if a.startswith("_saved_") and "_sym_" not in a)


def _short(value: object, limit: int = 40) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 2**63:
        value -= _UINT64  # torch's uint64 spelling of a negative default (-100)
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
