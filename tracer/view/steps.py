"""The backward pass step by step: the nodes in the order the engine ran them, and the
recording as it stood after k steps (for the step-through page and the slide frames)."""

from __future__ import annotations

from dataclasses import replace

from tracer.model.graph import Node, Recording
from tracer.model.tensor import TensorData
from tracer.view.text import node_title


def engine_order(recording: Recording) -> list[tuple[int, Node]]:
    """(graph index, node) in the order the engine ran them, pass after pass."""
    return [
        (index, node)
        for index, graph in enumerate(recording.graphs)
        if graph.kind == "backward"
        for node in graph.steps
    ]


def global_steps(recording: Recording) -> dict[tuple[int, int], int]:
    """(graph index, node id) -> 1-based position in `engine_order`."""
    return {(gi, node.id): k for k, (gi, node) in enumerate(engine_order(recording), start=1)}


def truncated(recording: Recording, position: int) -> Recording:
    """A copy of `recording` as it stood after `position` engine steps (0: before backward).

    Nodes that had not run yet lose the gradients they received and leaves their `.grad`;
    edges keep their gradient only when their source had run (it sent it); a pass's seeds
    appear with its first step. The title says which step this is and which node runs.
    """
    order = engine_order(recording)
    if not 0 <= position <= len(order):
        raise ValueError(f"position {position} is outside 0..{len(order)}")
    ran = global_steps(recording)

    def done(gi: int, node_id: int) -> bool:
        return ran.get((gi, node_id), len(order) + 1) <= position

    graphs = []
    for gi, graph in enumerate(recording.graphs):
        if graph.kind != "backward":
            graphs.append(graph)
            continue
        started = any(done(gi, node.id) for node in graph.nodes)
        nodes = [
            node
            if done(gi, node.id)
            else replace(node, grads=(None,) * len(node.grads), leaf_grad=None)
            for node in graph.nodes
        ]
        edges = [e if done(gi, e.src) else replace(e, grad=None) for e in graph.edges]
        seeds: list[TensorData | None] = graph.seeds if started else [None] * len(graph.seeds)
        graphs.append(replace(graph, nodes=nodes, edges=edges, seeds=seeds))
    if position == 0:
        where = "before backward: the forward graph"
    else:
        gi, node = order[position - 1]
        where = f"▶ running {node_title(node)}"
    heading = f"step {position} / {len(order)}: {where}"
    title = f"{recording.title} — {heading}" if recording.title else heading
    return Recording(title=title, graphs=graphs, checks=list(recording.checks))
