"""The gradient-flow hooks: what arrived at and left each node during one backward pass.

Every node gets a pre-hook (the gradient that arrives, and the engine's order). The
gradient on an edge is the one its destination received, unless several edges (or an edge
and a seed) enter the same output: only the nodes sending into such an output get a hook
that keeps what they sent. The hooks return None, so autograd's numbers are untouched,
and keep only keys into the capture's `Summariser` (a large gradient is reduced at once,
inside the hook, and not kept: `add_now`).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import torch

from tracer.model.graph import Jacobian
from tracer.record.capture.jacobian import local_jacobians, wanted
from tracer.record.capture.walk import GraphWalk
from tracer.record.summary import Summariser

# What one node received, in the engine's order: (node id, a key per output, or None for
# a leaf whose gradient AccumulateGrad adopts as .grad: read from .grad after the pass).
Arrival = tuple[int, list[Hashable | None] | None]


# The engine's id of the backward pass running on this thread (torch >= 2.1; without it
# every pass counts as ours).
_task_id: Callable[[], int] = getattr(torch._C, "_current_graph_task_id", lambda: -1)


class GradientFlow:
    """The hooks on one walked graph, and what they saw.

    Only what the pass itself runs is recorded: a node can be in several graphs at once
    (a leaf, a shared trunk), and another pass running it (in another thread, or nested
    inside this one) fires this pass's hooks too. The engine's id of this pass is read at
    its roots, which run before any other node of it; a hook firing under another id, or
    before a root ran, belongs to another pass and keeps nothing.
    """

    def __init__(self, walk: GraphWalk, jacobians: bool = False) -> None:
        self.walk = walk
        self.arrivals: list[Arrival] = []
        self.sent: dict[int, list[Hashable | None]] = {}  # node id -> a key per input slot
        # With `jacobians`: node id -> its local Jacobians (see capture.jacobian).
        self.jacobians: dict[int, list[Jacobian]] | None = {} if jacobians else None
        self._hooks: list[Any] = []
        self._task: int | None = None  # the engine's id of this pass, once a root ran

    def hook(self, every_edge: bool = False) -> None:
        """Register the read-only hooks that record the gradient flow of the next backward;
        `every_edge` hooks every sender (when some nodes will not run: `inputs=`,
        `torch.autograd.grad`)."""
        walk = self.walk
        self._read_grads_before()
        incoming = walk.incoming.copy()
        incoming.update(zip(walk.roots, walk.root_outputs, strict=True))  # the seeds
        if every_edge:
            senders = {src for src, _, _, _ in walk.edges}
        else:
            shared = {key for key, count in incoming.items() if count > 1}
            into = {dst for dst, _ in shared}  # a cheap test first: few nodes are among them
            edges = walk.edges
            senders = {src for src, dst, _, out in edges if dst in into and (dst, out) in shared}
        hooks, leaves, roots = self._hooks, walk.leaves, set(walk.roots)
        on_arrive, on_leaf_arrive, on_send = self._on_arrive, self._on_leaf_arrive, self._on_send
        jacobians = self.jacobians is not None  # asked for by a page only
        for node_id, fn in enumerate(walk.fns):
            if fn is None:
                continue
            leaf = leaves.get(node_id)
            arrive = on_arrive(node_id) if leaf is None else on_leaf_arrive(node_id, leaf)
            if node_id in roots:
                arrive = self._at_root(arrive)
            hooks.append(fn.register_prehook(arrive))
            if leaf is None and node_id in senders:
                hooks.append(fn.register_hook(on_send(node_id)))
            if jacobians and leaf is None and wanted(fn):
                hooks.append(fn.register_hook(self._on_jacobian(node_id)))

    def _read_grads_before(self) -> None:
        """Each leaf's `.grad` before the pass adds to it (a summary, taken now: the engine
        accumulates into it in place), so that the picture can tell a sum over passes."""
        walk = self.walk
        before = Summariser(walk.summary.max_values)
        keys = {
            node_id: before.add(leaf.grad)
            for node_id, leaf in walk.leaves.items()
            if leaf.grad is not None
        }
        if keys:
            before.run()
            for node_id, key in keys.items():
                walk.nodes[node_id].grad_before = before.results[key]

    def _at_root(self, prehook: Callable[..., None]) -> Callable[..., None]:
        """`prehook` on a root: the first root to run tells which pass is this one."""

        def root_prehook(grad_outputs: tuple[torch.Tensor | None, ...]) -> None:
            if self._task is None:
                self._task = _task_id()
            prehook(grad_outputs)

        return root_prehook

    # Each hook asks whether it was fired by this pass (see the class docstring):
    # `_task_id() == self._task`, inline (once per node), false until a root ran (None).

    def _on_arrive(self, node_id: int) -> Callable[..., None]:
        arrivals = self.arrivals
        now = self.walk.summary.add_now

        def prehook(grad_outputs: tuple[torch.Tensor | None, ...]) -> None:
            if _task_id() != self._task:
                return
            if len(grad_outputs) == 1:  # nearly every node: no list comprehension to run
                g = grad_outputs[0]
                arrivals.append((node_id, [None if g is None else now(g)]))
            else:
                arrivals.append((node_id, [None if g is None else now(g) for g in grad_outputs]))

        return prehook

    def _on_leaf_arrive(self, node_id: int, leaf: torch.Tensor) -> Callable[..., None]:
        arrivals = self.arrivals
        now = self.walk.summary.add_now

        def leaf_prehook(grad_outputs: tuple[torch.Tensor | None, ...]) -> None:
            # With no .grad yet, AccumulateGrad adopts the gradient itself, unless someone
            # else holds it: keep nothing then (and read .grad after the pass), so that
            # tracing never changes what .grad is.
            if _task_id() != self._task:
                return
            if leaf.grad is None:
                arrivals.append((node_id, None))
            else:
                arrivals.append((node_id, [None if g is None else now(g) for g in grad_outputs]))

        return leaf_prehook

    def _on_send(self, node_id: int) -> Callable[..., None]:
        sent = self.sent
        now = self.walk.summary.add_now

        def hook(grad_inputs: tuple[torch.Tensor | None, ...], _grad_outputs: Any) -> None:
            if _task_id() == self._task:
                sent[node_id] = [None if g is None else now(g) for g in grad_inputs]

        return hook

    def _on_jacobian(self, node_id: int) -> Callable[..., None]:
        jacobians, fns = self.jacobians, self.walk.fns
        assert jacobians is not None

        def hook(
            grad_inputs: tuple[torch.Tensor | None, ...],
            grad_outputs: tuple[torch.Tensor | None, ...],
        ) -> None:
            if _task_id() == self._task:
                found = local_jacobians(fns[node_id], grad_inputs, grad_outputs)
                if found:
                    jacobians[node_id] = found

        return hook

    def unhook(self) -> None:
        """Remove every hook (also when backward raised)."""
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()

    def release(self) -> None:
        self.arrivals.clear()
        self.sent.clear()
        if self.jacobians is not None:
            self.jacobians.clear()
