"""What a reader should not miss, in words: the checks and the problems of a recording
(NaN, Inf, leaves without gradient), and what a collapsed view leaves out."""

from __future__ import annotations

from typing import Literal

from tracer.model.graph import Graph, Recording
from tracer.model.tensor import TensorData
from tracer.view.collapse import SLIDE_ROWS, Collapsed
from tracer.view.text import format_check, graph_name, node_title


def _non_finite(t: TensorData | None) -> str | None:
    if t is None or t.finite:
        return None
    parts = [f"{n} {what}" for n, what in ((t.nan, "NaN"), (t.inf, "Inf")) if n]
    return " and ".join(parts)


def problems(recording: Recording) -> list[str]:
    """What a reader should not miss: NaN or Inf anywhere, and leaves left without gradient."""
    found: list[str] = []
    for graph in recording.graphs:
        where = graph_name(graph)
        for node in graph.nodes:  # two loops, not one over pairs: this walks every node
            for t in node.forward:
                if bad := _non_finite(t):
                    found.append(f"{bad} in the value of {node_title(node)}, {where}")
            for t in node.grads:
                if bad := _non_finite(t):
                    found.append(f"{bad} in the gradient of {node_title(node)}, {where}")
            if bad := _non_finite(node.leaf_grad):
                found.append(f"{bad} in {node_title(node)}.grad, {where}")
            if graph.kind == "backward" and node.received_no_gradient:
                found.append(f"{node_title(node)} received no gradient (unused input?), {where}")
        found.extend(_edge_problems(graph, where))
    return found


def _edge_problems(graph: Graph, where: str) -> list[str]:
    found = []
    for edge in graph.edges:
        if bad := _non_finite(edge.grad):
            src, dst = node_title(graph.node(edge.src)), node_title(graph.node(edge.dst))
            found.append(f"{bad} in the gradient from {src} to {dst}, {where}")
    return found


def format_report(recording: Recording) -> str:
    """Every check, then every problem: what the CLI prints after a trace."""
    parts = [format_check(c) for c in recording.checks]
    parts.extend(f"⚠ {p}" for p in problems(recording))
    return "\n".join(parts)


def collapse_note(view: Collapsed, how: Literal["picture", "command"] = "picture") -> str | None:
    """What a collapsed view leaves out and how to see it; None when nothing is collapsed.

    picture: for the heading; command: for the terminal, with the pass it is about.
    """
    if not view.collapsed:
        return None
    graph = view.graph
    where = f"backward pass {graph.number}: " if how == "command" else ""
    if view.depth is None:  # a focus
        return f"{where}the modules outside the focus are drawn as one box each"
    text = f"{where}modules nested deeper than {view.depth} are drawn as one box each"
    if view.auto:
        text += (
            f" ({view.boxes} boxes instead of {view.full_size}: a slide holds "
            f"{view.budget} boxes in {SLIDE_ROWS} rows)"
        )
    more = f"--depth {view.depth + 1}, --depth all or --focus NAME"
    if how == "picture":
        more += " (from Python: RenderOptions(depth=…, focus=…))"
    return f"{text}; to see more: {more}"
