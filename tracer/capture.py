"""Capture: walk autograd's `grad_fn` graph into plain data, and record the gradient flow.

`GraphCapture` is the one place that touches torch's graph. It walks from the roots
breadth-first (iteratively, so depth is no limit), numbers each node once on discovery,
and, for a backward pass, hangs a pre-hook and a hook on every node. The hooks only read:
they return None, so autograd's numbers are untouched, and `finish` removes them all.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch.autograd.graph import get_gradient_edge

from tracer.graph import Edge, Graph, GraphKind, Node, TensorData

# Tensors with up to this many elements keep their values; larger ones only a summary.
DEFAULT_MAX_VALUES = 64

# A grad_fn node as torch exposes it. Its Python object is cached by torch while alive, so
# identity is stable as long as we hold a reference: we key our maps on the object itself.
GradFn = Any


@torch.no_grad()
def summarize(t: torch.Tensor, max_values: int = DEFAULT_MAX_VALUES) -> TensorData:
    """Reduce a tensor to plain numbers (values when small, statistics always)."""
    d = t.detach()
    if d.is_complex():
        d = torch.view_as_real(d)  # the statistics of the real and imaginary parts
    d = d.to("cpu", torch.float64)
    nan = int(torch.isnan(d).sum())
    inf = int(torch.isinf(d).sum())
    finite = d[torch.isfinite(d)]
    if finite.numel():
        lo, hi, norm = float(finite.min()), float(finite.max()), float(finite.norm())
    else:
        lo = hi = norm = float("nan")
    values = tuple(d.flatten().tolist()) if d.numel() <= max_values else None
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


class GraphCapture:
    """One graph being captured. Holds torch objects only until `finish` returns the Graph.

    `constants` maps a grad_fn to the tensors needing no grad that its op was called with
    (seen by the forward recorder); `names` maps a tensor's id to the variable name the
    user's code gave it; both may be empty.
    """

    def __init__(
        self,
        roots: Sequence[tuple[GradFn, int]],
        *,
        kind: GraphKind,
        label: str,
        names: Mapping[int, str],
        node_names: Mapping[GradFn, str],
        constants: Mapping[GradFn, Sequence[tuple[int, torch.Tensor]]],
        max_values: int = DEFAULT_MAX_VALUES,
    ) -> None:
        self.max_values = max_values
        self.kind: GraphKind = kind
        self.label = label
        self._index: dict[GradFn, int] = {}
        self._fns: list[GradFn] = []
        self._nodes: list[Node] = []
        self._edges: list[Edge] = []
        self._edge_at: dict[tuple[int, int], int] = {}  # (src, slot) -> position in _edges
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []
        self._step = 0
        self._walk([fn for fn, _ in roots], names, node_names, constants)
        self.roots = [self._index[fn] for fn, _ in roots]

    # -- structure ---------------------------------------------------------------------

    def _add(self, fn: GradFn, names: Mapping[int, str], node_names: Mapping[GradFn, str]) -> int:
        node_id = len(self._nodes)
        self._index[fn] = node_id
        self._fns.append(fn)
        variable = getattr(fn, "variable", None)  # only AccumulateGrad has one
        if isinstance(variable, torch.Tensor):
            self._nodes.append(
                Node(
                    id=node_id,
                    kind="leaf",
                    op=type(fn).__name__,
                    name=names.get(id(variable)),
                    shape=tuple(variable.shape),
                    dtype=str(variable.dtype).removeprefix("torch."),
                )
            )
        else:
            self._nodes.append(
                Node(id=node_id, kind="op", op=type(fn).__name__, name=node_names.get(fn))
            )
        return node_id

    def _walk(
        self,
        roots: list[GradFn],
        names: Mapping[int, str],
        node_names: Mapping[GradFn, str],
        constants: Mapping[GradFn, Sequence[tuple[int, torch.Tensor]]],
    ) -> None:
        constant_ids: dict[int, int] = {}  # id(tensor) -> node id, so a shared constant is one node
        queue: deque[GradFn] = deque()
        for fn in roots:
            if fn not in self._index:
                self._add(fn, names, node_names)
                queue.append(fn)
        while queue:
            fn = queue.popleft()
            src = self._index[fn]
            for slot, (child, output_nr) in enumerate(fn.next_functions):
                if child is None:
                    continue  # an input that needs no gradient: drawn from `constants` below
                if child not in self._index:
                    self._add(child, names, node_names)
                    queue.append(child)
                self._edge_at[(src, slot)] = len(self._edges)
                self._edges.append(Edge(src, self._index[child], slot, output_nr))
            for position, tensor in constants.get(fn, ()):
                if id(tensor) not in constant_ids:
                    constant_ids[id(tensor)] = len(self._nodes)
                    self._nodes.append(
                        Node(
                            id=len(self._nodes),
                            kind="constant",
                            op="",
                            name=names.get(id(tensor)),
                            shape=tuple(tensor.shape),
                            dtype=str(tensor.dtype).removeprefix("torch."),
                        )
                    )
                self._edges.append(Edge(src, constant_ids[id(tensor)], position))

    # -- gradient flow -----------------------------------------------------------------

    def hook(self) -> None:
        """Register the read-only hooks that record the gradient flow of the next backward."""
        for node_id, fn in enumerate(self._fns):
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
        for fn, node in zip(self._fns, self._nodes, strict=False):
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
        )
        self._fns.clear()
        self._index.clear()
        return graph
