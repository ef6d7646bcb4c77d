"""Capture: walk autograd's `grad_fn` graph into plain data, and record the gradient flow.

`GraphCapture` is the one place that touches torch's graph. It walks from the roots
breadth-first (iteratively, so depth is no limit), numbers each node once on discovery,
and, for a backward pass, hangs a pre-hook and a hook on every node. The hooks only read:
they return None, so autograd's numbers are untouched, and `finish` removes them all.
"""

from __future__ import annotations

import functools
import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch.autograd.graph import get_gradient_edge

from tracer.graph import Edge, Graph, GraphKind, Node, NodeKind, Saved, TensorData

# Tensors with up to this many elements keep their values; larger ones only a summary.
DEFAULT_MAX_VALUES = 64

# A grad_fn node as torch exposes it. Its Python object is cached by torch while alive, so
# identity is stable as long as we hold a reference: we key our maps on the object itself.
GradFn = Any


def summarize(t: torch.Tensor, max_values: int = DEFAULT_MAX_VALUES) -> TensorData:
    """Reduce a tensor to plain numbers (values when small, statistics always)."""
    d = t.detach()
    if d.is_complex():
        d = torch.view_as_real(d)  # the statistics of the real and imaginary parts
    if d.numel() <= max_values:
        # Small tensors, the common case in teaching: one copy out, statistics in Python.
        values = tuple(float(v) for v in d.cpu().flatten().tolist())
        finite = [v for v in values if math.isfinite(v)]
        nan = sum(1 for v in values if math.isnan(v))
        inf = len(values) - len(finite) - nan
        if finite:
            lo, hi, norm = min(finite), max(finite), math.sqrt(math.fsum(v * v for v in finite))
        else:
            lo = hi = norm = math.nan
        return _tensor_data(t, values, norm, lo, hi, nan, inf)
    with torch.no_grad():
        d = d.to("cpu", torch.float64)
        finite_mask = torch.isfinite(d)
        nan = int(torch.isnan(d).sum())
        inf = d.numel() - int(finite_mask.sum()) - nan
        finite = d[finite_mask]
        if finite.numel():
            lo, hi, norm = float(finite.min()), float(finite.max()), float(finite.norm())
        else:
            lo = hi = norm = math.nan
    return _tensor_data(t, None, norm, lo, hi, nan, inf)


def _tensor_data(
    t: torch.Tensor,
    values: tuple[float, ...] | None,
    norm: float,
    lo: float,
    hi: float,
    nan: int,
    inf: int,
) -> TensorData:
    return TensorData(
        shape=tuple(t.shape),
        dtype=str(t.dtype).removeprefix("torch."),
        values=values,
        norm=norm,
        min=lo,
        max=hi,
        nan=nan,
        inf=inf,
    )


def root_node(t: torch.Tensor) -> tuple[GradFn, int]:
    """The node and output index that a backward from `t` starts at."""
    edge = get_gradient_edge(t)
    return edge.node, edge.output_nr


@dataclass
class Known:
    """What the session learnt about the graph's tensors before capture (all may be empty).

    `names`: a tensor's id -> the variable name the user's code gave it; `node_names`: a
    grad_fn -> the names of the tensors it produced; `constants`: a grad_fn -> the inputs
    needing no grad that its op was called with (position, tensor); `forward`: (grad_fn,
    output_nr) -> the value the op computed; `origin`: a grad_fn -> the backward pass
    that made it (higher order).
    """

    names: Mapping[int, str] = field(default_factory=dict)
    node_names: Mapping[GradFn, str] = field(default_factory=dict)
    constants: Mapping[GradFn, Sequence[tuple[int, torch.Tensor]]] = field(default_factory=dict)
    forward: Mapping[tuple[GradFn, int], TensorData] = field(default_factory=dict)
    origin: Callable[[GradFn], str | None] = lambda fn: None


class GraphCapture:
    """One graph being captured. Holds torch objects only until `finish` returns the Graph."""

    def __init__(
        self,
        roots: Sequence[tuple[GradFn, int]],
        *,
        kind: GraphKind,
        label: str,
        known: Known,
        max_values: int = DEFAULT_MAX_VALUES,
        create_graph: bool = False,
    ) -> None:
        self.max_values = max_values
        self.kind: GraphKind = kind
        self.label = label
        self.create_graph = create_graph
        self._known = known
        self._index: dict[GradFn, int] = {}
        self._fns: list[GradFn] = []
        self._nodes: list[Node] = []
        self._edges: list[Edge] = []
        self._edge_at: dict[tuple[int, int], int] = {}  # (src, slot) -> position in _edges
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []
        self._step = 0
        self._walk([fn for fn, _ in roots])
        self.roots = [self._index[fn] for fn, _ in roots]

    # -- structure ---------------------------------------------------------------------

    def _add(self, fn: GradFn) -> int:
        node_id = len(self._nodes)
        self._index[fn] = node_id
        self._fns.append(fn)
        known = self._known
        variable = getattr(fn, "variable", None)  # only AccumulateGrad has one
        if isinstance(variable, torch.Tensor):
            node = self._tensor_node(node_id, "leaf", variable)
            node.op = type(fn).__name__
        else:
            outputs = len(fn._input_metadata) if hasattr(fn, "_input_metadata") else 1
            forward = [known.forward.get((fn, i)) for i in range(max(outputs, 1))]
            first = forward[0]
            node = Node(
                id=node_id,
                kind="op",
                op=type(fn).__name__,
                name=known.node_names.get(fn),
                shape=None if first is None else first.shape,
                dtype=None if first is None else first.dtype,
                forward=forward,
                saved=self._saved(fn),
                origin=known.origin(fn),
            )
        self._nodes.append(node)
        return node_id

    def _tensor_node(self, node_id: int, kind: NodeKind, t: torch.Tensor) -> Node:
        return Node(
            id=node_id,
            kind=kind,
            op="",
            name=self._known.names.get(id(t)),
            shape=tuple(t.shape),
            dtype=str(t.dtype).removeprefix("torch."),
            forward=[summarize(t, self.max_values)],
        )

    def _saved(self, fn: GradFn) -> list[Saved]:
        """What autograd kept on `fn` for its backward, read before backward frees it."""
        saved = []
        for attr in _saved_attributes(type(fn)):
            try:
                value = getattr(fn, attr)
            except RuntimeError:  # already freed by an earlier backward
                continue
            name = attr.removeprefix("_saved_")
            if isinstance(value, torch.Tensor):
                source = self._known.names.get(id(value))
                if source is None and value.grad_fn is fn:
                    source = "output"
                saved.append(Saved(name, tensor=self._summary(value), source=source))
            elif value is not None:
                saved.append(Saved(name, text=_short(value)))
        return saved

    def _walk(self, roots: list[GradFn]) -> None:
        constant_ids: dict[int, int] = {}  # id(tensor) -> node id, so a shared constant is one node
        queue: deque[GradFn] = deque()
        for fn in roots:
            if fn not in self._index:
                self._add(fn)
                queue.append(fn)
        while queue:
            fn = queue.popleft()
            src = self._index[fn]
            for slot, (child, output_nr) in enumerate(fn.next_functions):
                if child is None:
                    continue  # an input that needs no gradient: drawn from `constants` below
                if child not in self._index:
                    self._add(child)
                    queue.append(child)
                self._edge_at[(src, slot)] = len(self._edges)
                self._edges.append(Edge(src, self._index[child], slot, output_nr))
            for position, tensor in self._known.constants.get(fn, ()):
                if id(tensor) not in constant_ids:
                    constant_ids[id(tensor)] = len(self._nodes)
                    self._nodes.append(self._tensor_node(len(self._nodes), "constant", tensor))
                self._edges.append(Edge(src, constant_ids[id(tensor)], position))

    def nodes(self) -> list[GradFn]:
        """The grad_fn objects captured (valid until `finish`)."""
        return list(self._fns)

    def add_unreached(self, tensors: Sequence[torch.Tensor]) -> None:
        """Draw leaves the caller asked gradients for but that are not in the graph."""
        for t in tensors:
            if t.grad_fn is None and t.requires_grad and root_node(t)[0] not in self._index:
                fn = root_node(t)[0]
                self._index[fn] = len(self._nodes)
                self._fns.append(fn)
                node = self._tensor_node(len(self._nodes), "leaf", t)
                node.op = type(fn).__name__
                self._nodes.append(node)

    # -- gradient flow -----------------------------------------------------------------

    def hook(self) -> None:
        """Register the read-only hooks that record the gradient flow of the next backward."""
        for fn in self._fns:
            node_id = self._index[fn]
            self._hooks.append(fn.register_prehook(self._on_arrive(node_id)))
            self._hooks.append(fn.register_hook(self._on_leave(node_id)))

    def _on_arrive(self, node_id: int) -> Callable[[tuple[torch.Tensor | None, ...]], None]:
        def prehook(grad_outputs: tuple[torch.Tensor | None, ...]) -> None:
            self._step += 1
            node = self._nodes[node_id]
            node.step = self._step
            node.grads = [self._summary(g) for g in grad_outputs]

        return prehook

    def _on_leave(self, node_id: int) -> Callable[..., None]:
        def hook(grad_inputs: tuple[torch.Tensor | None, ...], _grad_outputs: Any) -> None:
            for slot, grad in enumerate(grad_inputs):
                at = self._edge_at.get((node_id, slot))
                if at is not None and grad is not None:
                    self._edges[at] = replace(self._edges[at], grad=self._summary(grad))

        return hook

    def _summary(self, t: torch.Tensor | None) -> TensorData | None:
        return None if t is None else summarize(t, self.max_values)

    def finish(
        self,
        seeds: Sequence[torch.Tensor | None] = (),
        results: Mapping[GradFn, torch.Tensor] | None = None,
    ) -> Graph:
        """Remove every hook, read the leaves' `.grad`, and return the plain-data graph.

        `results` maps a node to the gradient `torch.autograd.grad` returned for it: that
        call does not run the leaves' AccumulateGrad, so their arriving gradient comes
        from here instead.
        """
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()
        for fn in self._fns:
            node = self._nodes[self._index[fn]]
            if node.kind == "leaf" and fn.variable.grad is not None:
                node.leaf_grad = self._summary(fn.variable.grad)
            if results and fn in results and not any(node.grads):
                node.grads = [self._summary(results[fn])]
        graph = Graph(
            kind=self.kind,
            label=self.label,
            nodes=self._nodes,
            edges=self._edges,
            roots=self.roots,
            seeds=[self._summary(s) for s in seeds] if seeds else [None] * len(self.roots),
            create_graph=self.create_graph,
        )
        self._fns.clear()
        self._index.clear()
        return graph


@functools.cache
def _saved_attributes(node_type: type) -> tuple[str, ...]:
    """The `_saved_*` attributes of a grad_fn class (dir() is slow: once per class).

    Symbolic sizes and strides (`_saved_self_sym_sizes`) are autograd's bookkeeping, not
    tensors a reader cares about: left out.
    """
    return tuple(a for a in dir(node_type) if a.startswith("_saved_") and "_sym_" not in a)


def _short(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
