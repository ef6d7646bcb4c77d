"""Capture: autograd's `grad_fn` graph into plain data, with the gradient flow of a pass.

`GraphCapture` is the one place that touches torch's graph, in three parts with one job
each: the structure walk (`walk`: nodes numbered breadth-first, edges, constants), the
gradient-flow hooks (`flow`: what arrived at and left each node during backward) and the
assembly of plain data (`assemble`: everything summarised once, no torch object left).

    capture = GraphCapture(roots, kind="backward", number=1, name_of=...)
    capture.hook()            # just before the engine runs
    ...                       # the engine runs
    graph = capture.finish()  # unhooks, summarises, returns a plain Graph
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from torch.autograd.graph import GradientEdge

from tracer.model.graph import Graph, GraphKind, Node
from tracer.model.options import DEFAULT_CAPTURE, CaptureOptions
from tracer.record.capture.assemble import assemble
from tracer.record.capture.flow import GradientFlow
from tracer.record.capture.walk import BackwardOrigins, GradFn, GraphWalk, root_node
from tracer.record.summary import Summariser

if TYPE_CHECKING:
    from tracer.record.modules import ModuleTracker

__all__ = ["BackwardOrigins", "GraphCapture", "NodeFinder", "root_node"]


class NodeFinder:
    """Which node of a captured pass holds a tensor's gradient (a leaf's AccumulateGrad, or
    the op that made a non-leaf), for the leaves and the named ops: what the user's code
    checks. It keeps no graph alive: an op is known by its grad_fn's identity and sequence
    number (no two live nodes share both), a leaf by a weak reference."""

    def __init__(self, walk: GraphWalk) -> None:
        self._ops: dict[tuple[int, int], int] = {}
        self._leaves: dict[int, tuple[weakref.ref, int]] = {}
        for node_id, tensor in walk.leaves.items():
            self._leaves[id(tensor)] = (weakref.ref(tensor), node_id)
        for node in walk.nodes:
            if node.kind == "op" and node.name is not None:
                fn = walk.fns[node.id]
                assert fn is not None  # an op's grad_fn (None is a constant's)
                self._ops[(id(fn), fn._sequence_nr())] = node.id

    def node_of(self, t: torch.Tensor) -> int | None:
        fn = t.grad_fn
        if fn is not None:
            return self._ops.get((id(fn), fn._sequence_nr()))
        entry = self._leaves.get(id(t))
        return entry[1] if entry is not None and entry[0]() is t else None


class GraphCapture:
    """One graph being captured. Holds torch objects only until `finish` returns the Graph.

    `name_of` gives a tensor's variable name (or None); `options` say what is recorded;
    `origins` tells which create_graph=True pass made a node; `modules`, when given,
    places each node in the module call that made it.
    """

    def __init__(
        self,
        roots: Sequence[tuple[GradFn, int]],
        *,
        kind: GraphKind,
        number: int,
        name_of: Callable[[torch.Tensor], str | None],
        options: CaptureOptions = DEFAULT_CAPTURE,
        origins: BackwardOrigins | None = None,
        modules: ModuleTracker | None = None,
    ) -> None:
        self.kind: GraphKind = kind
        self.number = number
        self._modules = modules
        self._walk = GraphWalk(
            roots,
            Summariser(options.max_values),
            name_of=name_of,
            values=options.values,
            saved=options.saved,
            origins=origins,
        )
        self._jacobians = options.jacobians
        self._flow: GradientFlow | None = None
        self.nodes: NodeFinder | None = None  # once finished

    @property
    def roots(self) -> list[int]:
        return self._walk.roots

    def on_cpu(self) -> bool:
        """Whether every leaf of the graph is on the CPU (then, with CPU roots, the engine
        runs the whole pass in the calling thread)."""
        return all(t.device.type == "cpu" for t in self._walk.leaves.values())

    def add_unreached(self, tensors: Sequence[torch.Tensor | GradientEdge]) -> None:
        """Draw leaves the caller asked gradients for but that are not in the graph."""
        self._walk.add_unreached(tensors)

    def limit_to(self, inputs: Sequence[torch.Tensor | GradientEdge]) -> None:
        """The pass computes the gradients of `inputs` only (`inputs=`, autograd.grad)."""
        self._walk.limit_to(inputs)

    def hook(self, every_edge: bool = False) -> None:
        """Hook the graph to record the gradient flow of the next backward (see `flow`)."""
        self._flow = GradientFlow(self._walk, self._jacobians)
        self._flow.hook(every_edge)

    def last_ran(self) -> Node | None:
        """The node whose pre-hook fired last in this pass: the one running when the
        engine raised (its pre-hook fires before it unpacks what it saved)."""
        if self._flow is None or not self._flow.arrivals:
            return None
        return self._walk.nodes[self._flow.arrivals[-1][0]]

    def unhook(self) -> None:
        """Remove every hook (also when backward raised)."""
        if self._flow is not None:
            self._flow.unhook()

    def finish(
        self,
        seeds: Sequence[torch.Tensor | None] = (),
        results: Mapping[GradFn, torch.Tensor] | None = None,
    ) -> Graph:
        """Summarise what the pass touched and return the plain-data graph (see
        `assemble`); every torch object is dropped."""
        self.unhook()
        walk = self._walk
        graph = assemble(
            walk, self._flow, kind=self.kind, number=self.number, seeds=seeds, results=results
        )
        if self._modules is not None:
            graph.modules = self._modules.assign(
                walk.fns, walk.records, walk.nodes, walk.tensors_by_node(), walk.first_users()
            )
        if self._flow is not None:
            self._flow.release()
        self.nodes = NodeFinder(walk)
        walk.release()
        return graph
