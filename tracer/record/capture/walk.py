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


class WalkedEdge(NamedTuple):
    """An input slot of node `src`: the output `dst_output` of node `dst` feeds slot `slot`."""

    src: int
    dst: int
    slot: int
    dst_output: int


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


def root_node(t: torch.Tensor | GradientEdge) -> tuple[GradFn, int]:
    """The node and output index that a backward from `t` starts at."""
    edge = t if isinstance(t, GradientEdge) else get_gradient_edge(t)
    return edge.node, edge.output_nr


class GraphWalk:
    """The numbered nodes and edges of one graph, with the torch objects they came from.

    `name_of` gives a tensor's variable name (or None); a node's name is that of the
    tensors it produced, kept on its record. `made_by` is the create_graph=True pass a
    node not seen in the forward pass must come from. With `values=False` no forward
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
        made_by: int | None,
    ) -> None:
        self.summary = summary
        self._name_of = name_of
        self._values = values
        self._saved = saved
        self._made_by = made_by
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
        self._walk([fn for fn, _ in roots])
        self.roots = [self.index[fn] for fn, _ in roots]
        self.root_outputs = [output for _, output in roots]

    def _walk(self, roots: list[GradFn]) -> None:
        """Number every node breadth-first from `roots` (see the module docstring)."""
        index, fns, records, nodes, edges = self.index, self.fns, self.records, self.nodes, []
        for fn in roots:
            if fn not in index:
                self._number(fn)
        src = len(nodes)
        while src < len(fns):
            fn = fns[src]
            assert fn is not None  # constants (None) are added after the walk
            next_functions = fn.next_functions
            # A leaf's AccumulateGrad has no children to free (see tracer.record.node_record):
            # it needs no record.
            record = record_of(fn, next_functions) if next_functions else None
            records.append(record)
            nodes.append(self._node(src, fn, record))
            if record is not None:
                record.captured += 1
            for slot, (child, output_nr) in enumerate(next_functions):
                if child is None:
                    continue  # an input that needs no gradient: drawn from the constants
                dst = index.get(child)
                if dst is None:
                    dst = self._number(child)
                edges.append(WalkedEdge(src, dst, slot, output_nr))
            src += 1
        self.edges = edges
        self.incoming = Counter((e.dst, e.dst_output) for e in edges)
        for node_id, fn in enumerate(fns):
            record = records[node_id]
            if fn is not None and record is not None and record.constants:
                self._attach_constants(self._constant_user(fn), record.constants)

    def _number(self, fn: GradFn) -> int:
        """Give a newly found node the next id (its position in `fns`)."""
        node_id = self.index[fn] = len(self.fns)
        self.fns.append(fn)
        return node_id

    def _node(self, node_id: int, fn: GradFn, record: NodeRecord | None) -> Node:
        """The plain-data node for `fn`, with what is known of it; its forward values (and
        saved tensors) are queued for summarising."""
        op = type(fn).__name__
        if op == "AccumulateGrad":
            variable = fn.variable
            self.leaves[node_id] = variable
            if self._values:
                self.forward_keys[node_id] = [self.summary.add(variable)]
            return Node(
                id=node_id,
                kind="leaf",
                op=op,
                name=self._name_of(variable),
                shape=tuple(variable.shape),
                dtype=_dtype(variable),
            )
        forward = record.outputs() if record is not None else None
        first = None
        if forward:
            keys = [self._forward_key(forward.get(i)) for i in range(max(forward) + 1)]
            self.forward_keys[node_id] = keys
            first = forward.get(0)
        if self._saved:
            self.saved_keys[node_id] = self._read_saved(fn)
        # Not seen by the forward recorder nor by an earlier capture, after a pass that
        # built a graph of its gradients: that pass made it.
        fresh = record is None or not (record.seen_forward or record.captured)
        return Node(
            id=node_id,
            kind="op",
            op=op,
            name=", ".join(record.names) if record is not None and record.names else None,
            shape=_shape_of(first),
            dtype=_dtype_of(first),
            made_by=self._made_by if fresh else None,
        )

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
                        shape=tuple(value.shape),
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
                node_id = self._number(fn)
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
        for edge in self.edges:
            users.setdefault(edge.dst, edge.src)
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


def _dtype(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


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
