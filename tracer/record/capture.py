"""Capture: walk autograd's `grad_fn` graph into plain data, and record the gradient flow.

`GraphCapture` is the one place that touches torch's graph. It walks from the roots
breadth-first (iteratively, so depth is no limit) and numbers each node once on
discovery. For a backward pass it hangs a pre-hook on every node and, where an edge's
gradient cannot be read off the node it enters, a hook on the node that sends it. The
hooks only keep references (they return None, so autograd's numbers are untouched) and
`finish` removes them all; only then is anything summarised, once per distinct tensor
(`tracer.record.summary`), and the torch objects are dropped.
"""

from __future__ import annotations

import functools
from collections import Counter, deque
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch.autograd.graph import GradientEdge, get_gradient_edge

from tracer.model.graph import Edge, Graph, GraphKind, Node, Saved
from tracer.model.options import DEFAULT_CAPTURE, CaptureOptions
from tracer.model.tensor import TensorData
from tracer.record.node_record import NodeRecord, record_of
from tracer.record.summary import Summariser

if TYPE_CHECKING:
    from tracer.record.modules import ModuleTracker

# A grad_fn node as torch exposes it. torch keeps its Python object alive with the node,
# so identity is stable: we key our maps on the object itself while we hold it.
GradFn = Any

# torch stores an int64 default such as NLLLoss's ignore_index=-100 as uint64 in the node.
_UINT64 = 2**64


def root_node(t: torch.Tensor | GradientEdge) -> tuple[GradFn, int]:
    """The node and output index that a backward from `t` starts at."""
    edge = t if isinstance(t, GradientEdge) else get_gradient_edge(t)
    return edge.node, edge.output_nr


class GraphCapture:
    """One graph being captured. Holds torch objects only until `finish` returns the Graph.

    `name_of` gives a tensor's variable name (or None); a node's name is that of the
    tensors it produced, kept on its record. `made_by` is the create_graph=True pass a
    node not seen in the forward pass must come from (or None). With `values=False` no
    forward value is summarised, not even a leaf's (a model's parameters).
    """

    def __init__(
        self,
        roots: Sequence[tuple[GradFn, int]],
        *,
        kind: GraphKind,
        number: int,
        name_of: Callable[[torch.Tensor], str | None],
        options: CaptureOptions = DEFAULT_CAPTURE,
        made_by: int | None = None,
        modules: ModuleTracker | None = None,
    ) -> None:
        self._modules = modules  # which module call made each node (see tracer.record.modules)
        self.kind: GraphKind = kind
        self.number = number
        self._name_of = name_of
        self._values = options.values
        self._saved = options.saved
        self._made_by = made_by
        self._summary = Summariser(options.max_values)
        self._index: dict[GradFn, int] = {}
        self._fns: list[GradFn | None] = []  # by node id; None for a constant
        self._records: list[NodeRecord | None] = []
        self._nodes: list[Node] = []
        # What each node's data will be once summarised: keys into the Summariser.
        self._forward_keys: dict[int, list[Hashable | None]] = {}
        self._saved_keys: dict[int, list[tuple[str, Hashable | None, str | None, str | None]]] = {}
        self._edges: list[tuple[int, int, int, int]] = []  # (src, dst, slot, dst_output)
        self._incoming: Counter[tuple[int, int]] = Counter()  # (dst, dst_output) -> edges
        self._constant_edges: list[tuple[int, int, int]] = []  # (src, constant node, position)
        self._constant_ids: dict[int, int] = {}  # id(tensor) -> node id
        self._leaves: dict[int, torch.Tensor] = {}  # node id -> the leaf tensor
        self._hooks: list[Any] = []
        # What each node received and sent, as keys into the Summariser (filled by hooks).
        self._arrivals: list[tuple[int, list[Hashable | None] | None]] = []
        self._sent: dict[int, list[Hashable | None]] = {}
        self._walk([fn for fn, _ in roots])
        self.roots = [self._index[fn] for fn, _ in roots]
        self._root_outputs = [output for _, output in roots]

    # -- structure ---------------------------------------------------------------------

    def _walk(self, roots: list[GradFn]) -> None:
        """Number every node breadth-first from `roots`: `_fns` is both the numbering and the
        queue (a node's id is its position; nodes are described in id order)."""
        index, fns, records, nodes, edges = (
            self._index,
            self._fns,
            self._records,
            self._nodes,
            self._edges,
        )
        for fn in roots:
            if fn not in index:
                self._number(fn)
        src = len(nodes)
        while src < len(fns):
            fn = fns[src]
            next_functions = fn.next_functions
            # A leaf's AccumulateGrad has no children to free (see tracer.record.node_record): it
            # needs no record.
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
                edges.append((src, dst, slot, output_nr))
            src += 1
        self._incoming = Counter((dst, output) for _, dst, _, output in edges)
        for node_id, fn in enumerate(fns):
            record = records[node_id]
            if fn is not None and record is not None and record.constants:
                self._attach_constants(self._constant_user(fn), record.constants)

    def _number(self, fn: GradFn) -> int:
        """Give a newly found node the next id (its position in `_fns`)."""
        node_id = self._index[fn] = len(self._fns)
        self._fns.append(fn)
        return node_id

    def _node(self, node_id: int, fn: GradFn, record: NodeRecord | None) -> Node:
        """The plain-data node for `fn`, with what is known of it; its forward values (and
        saved tensors) are queued for summarising."""
        op = type(fn).__name__
        if op == "AccumulateGrad":
            variable = fn.variable
            self._leaves[node_id] = variable
            if self._values:
                self._forward_keys[node_id] = [self._summary.add(variable)]
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
            self._forward_keys[node_id] = keys
            first = forward.get(0)
        if self._saved:
            self._saved_keys[node_id] = self._read_saved(fn)
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

    def _forward_key(self, entry: Any) -> Hashable | TensorData | None:
        if entry is None:
            return None
        if isinstance(entry, TensorData):
            return entry  # summarised by an earlier pass through this graph
        tensor, version = entry
        return self._summary.add(tensor, version)

    def _read_saved(self, fn: GradFn) -> list[tuple[str, Hashable | None, str | None, str | None]]:
        """What autograd kept on `fn` for its backward, read before backward frees it."""
        saved = []
        for attr in _saved_attributes(type(fn)):
            try:
                value = getattr(fn, attr)
            except Exception:  # freed by an earlier backward, or unreadable
                continue
            name = attr.removeprefix("_saved_")
            if isinstance(value, torch.Tensor):
                source = self._name_of(value)
                if source is None and value.grad_fn is fn:
                    source = "output"
                saved.append((name, self._summary.add(value), None, source))
            elif value is not None:
                saved.append((name, None, _short(value), None))
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
                if child in seen or child not in self._index:
                    continue
                record = self._records[self._index[child]]
                if (record is not None and record.seen_forward) or type(child).__name__ == (
                    "AccumulateGrad"
                ):
                    continue  # made by another call
                seen.add(child)
                queue.append(child)
        return output

    def _attach_constants(
        self, fn: GradFn, constants: Sequence[tuple[int, torch.Tensor, int]]
    ) -> None:
        src = self._index.get(fn)
        if src is None:
            return
        for position, tensor, version in constants:
            if id(tensor) not in self._constant_ids:
                node_id = len(self._nodes)
                self._constant_ids[id(tensor)] = node_id
                self._fns.append(None)
                self._records.append(None)
                self._nodes.append(
                    Node(
                        id=node_id,
                        kind="constant",
                        op="",
                        name=self._name_of(tensor),
                        shape=tuple(tensor.shape),
                        dtype=_dtype(tensor),
                    )
                )
                self._forward_keys[node_id] = [self._summary.add(tensor, version)]
            self._constant_edges.append((src, self._constant_ids[id(tensor)], position))

    def add_unreached(self, tensors: Sequence[torch.Tensor | GradientEdge]) -> None:
        """Draw leaves the caller asked gradients for but that are not in the graph."""
        for t in tensors:
            if isinstance(t, GradientEdge) or t.grad_fn is not None or not t.requires_grad:
                continue
            fn = root_node(t)[0]
            if fn not in self._index:
                node_id = self._number(fn)
                self._records.append(None)
                self._nodes.append(self._node(node_id, fn, None))

    # -- gradient flow -----------------------------------------------------------------

    def hook(self, every_edge: bool = False) -> None:
        """Register the read-only hooks that record the gradient flow of the next backward.

        Every node gets a pre-hook (the gradient that arrives, and the engine's order). The
        gradient on an edge is the one its destination received, unless several edges (or
        an edge and a seed) enter the same output: only the nodes sending into such an
        output get a hook that keeps what they sent; `every_edge` hooks every node (when
        some nodes will not run: `inputs=`, `torch.autograd.grad`).
        """
        self._read_grads_before()
        incoming = self._incoming.copy()
        incoming.update(zip(self.roots, self._root_outputs, strict=True))  # the seeds
        senders = {
            src for src, dst, _, output in self._edges if every_edge or incoming[(dst, output)] > 1
        }
        for node_id, fn in enumerate(self._fns):
            if fn is None:
                continue
            leaf = self._leaves.get(node_id)
            self._hooks.append(fn.register_prehook(self._on_arrive(node_id, leaf)))
            if node_id in senders and leaf is None:
                self._hooks.append(fn.register_hook(self._on_send(node_id)))

    def _read_grads_before(self) -> None:
        """Each leaf's `.grad` before the pass adds to it (a summary, taken now: the engine
        accumulates into it in place), so that the picture can tell a sum over passes."""
        before = Summariser(self._summary.max_values)
        keys = {
            node_id: before.add(leaf.grad)
            for node_id, leaf in self._leaves.items()
            if leaf.grad is not None
        }
        if keys:
            before.run()
            for node_id, key in keys.items():
                self._nodes[node_id].grad_before = before.results[key]

    def _module_calls(self) -> list[Any]:
        """Set each node's module call (see tracer.record.modules); the graph's ModuleCalls."""
        if self._modules is None:
            return []
        tensors: dict[int, torch.Tensor] = dict(self._leaves)
        for record in self._records:
            for _, tensor, _ in (record.constants or ()) if record is not None else ():
                node_id = self._constant_ids.get(id(tensor))
                if node_id is not None:
                    tensors[node_id] = tensor
        users: dict[int, int] = {}
        for src, dst, _, _ in self._edges:
            users.setdefault(dst, src)
        for src, dst, _ in self._constant_edges:
            users.setdefault(dst, src)
        return self._modules.assign(self._fns, self._records, self._nodes, tensors, users)

    def _on_arrive(self, node_id: int, leaf: torch.Tensor | None) -> Callable[..., None]:
        arrivals = self._arrivals
        now = self._summary.add_now
        if leaf is None:

            def prehook(grad_outputs: tuple[torch.Tensor | None, ...]) -> None:
                arrivals.append((node_id, [None if g is None else now(g) for g in grad_outputs]))

            return prehook

        def leaf_prehook(grad_outputs: tuple[torch.Tensor | None, ...]) -> None:
            # With no .grad yet, AccumulateGrad adopts the gradient itself, unless someone
            # else holds it: keep nothing then (and read .grad after the pass), so that
            # tracing never changes what .grad is.
            if leaf.grad is None:
                arrivals.append((node_id, None))
            else:
                arrivals.append((node_id, [None if g is None else now(g) for g in grad_outputs]))

        return leaf_prehook

    def _on_send(self, node_id: int) -> Callable[..., None]:
        sent = self._sent
        now = self._summary.add_now

        def hook(grad_inputs: tuple[torch.Tensor | None, ...], _grad_outputs: Any) -> None:
            sent[node_id] = [None if g is None else now(g) for g in grad_inputs]

        return hook

    def unhook(self) -> None:
        """Remove every hook (also when backward raised)."""
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()

    def finish(
        self,
        seeds: Sequence[torch.Tensor | None] = (),
        results: Mapping[GradFn, torch.Tensor] | None = None,
    ) -> Graph:
        """Summarise what the pass touched and return the plain-data graph.

        `results` maps a node to the gradient `torch.autograd.grad` returned for it: that
        call does not run the leaves' AccumulateGrad, so their arriving gradient comes
        from here instead.
        """
        self.unhook()
        add = self._summary.add
        arrived: dict[int, list[Hashable | None]] = {}
        for step, (node_id, grads) in enumerate(self._arrivals, start=1):
            self._nodes[node_id].step = step
            if grads is not None:
                arrived[node_id] = grads
        leaf_grads: dict[int, Hashable] = {}
        for node_id, leaf in self._leaves.items():
            if leaf.grad is not None:
                leaf_grads[node_id] = add(leaf.grad)
                if self._nodes[node_id].step is not None and node_id not in arrived:
                    arrived[node_id] = [leaf_grads[node_id]]  # .grad was None: it is the arrival
        for fn, grad in (results or {}).items():
            node_id = self._index.get(fn)
            if node_id is not None and node_id not in arrived and grad is not None:
                arrived[node_id] = [add(grad)]
        sent = self._sent
        seed_keys = [None if s is None else add(s) for s in seeds]
        self._summary.run()
        results = self._summary.results

        def data(key: Hashable | TensorData | None) -> TensorData | None:
            if key is None or isinstance(key, TensorData):
                return key
            return results[key]

        nodes = self._nodes
        for node_id, keys in self._forward_keys.items():
            nodes[node_id].forward = tuple([data(k) for k in keys])
        for node_id, keys in arrived.items():  # keys or None: `data` inline, once per node
            nodes[node_id].grads = tuple([None if k is None else results[k] for k in keys])
        for node_id, key in leaf_grads.items():
            nodes[node_id].leaf_grad = data(key)
        for node_id, saved in self._saved_keys.items():
            nodes[node_id].saved = tuple(
                Saved(name, data(key), text, source) for name, key, text, source in saved
            )
        for node_id, record in enumerate(self._records):
            # Later passes through the same graph reuse the summaries; the tensors go.
            if record is not None and record.seen_forward and nodes[node_id].kind == "op":
                record.summarised(
                    {i: value for i, value in enumerate(nodes[node_id].forward) if value}
                )
        incoming = self._incoming
        edges = []
        for src, dst, slot, output in self._edges:
            grad: TensorData | None = None
            if src in sent:
                grad = data(sent[src][slot]) if slot < len(sent[src]) else None
            elif node_grads := self._nodes[dst].grads:
                if incoming[(dst, output)] == 1 and output < len(node_grads):
                    grad = node_grads[output]
            edges.append(Edge(src, dst, slot, output, grad))
        edges.extend(Edge(src, dst, position) for src, dst, position in self._constant_edges)
        graph = Graph(
            kind=self.kind,
            number=self.number,
            nodes=self._nodes,
            edges=edges,
            roots=self.roots,
            seeds=[data(k) for k in seed_keys] if seeds else [None] * len(self.roots),
        )
        graph.modules = self._module_calls()
        self._release()
        return graph

    def _release(self) -> None:
        """Drop every torch object, root first (see tracer.record.node_record for why the order)."""
        self._arrivals.clear()
        self._sent.clear()
        self._leaves.clear()
        self._index.clear()
        self._records.clear()
        fns, self._fns = self._fns, []
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
def _saved_attributes(node_type: type) -> tuple[str, ...]:
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
