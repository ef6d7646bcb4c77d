"""The stepper page: one self-contained HTML file that steps through a backward pass.

    render_html(recording) -> str        the page (SVG, script, styles and data inline)
    write(recording, "graph.html")      the same, through tracer.output.render's writer

The page opens on the forward graph and steps through the backward pass in the engine's
order: the running node is outlined, the gradients it received and sent appear on their
edges, the side panel shows the chain-rule step with its numbers (per input slot, the
formula from torch's derivatives table with its names bound to the user's, from
`tracer.derivatives.chainrule`), and leaves' `.grad` fill in as they accumulate. It needs no
network: the picture is `render_svg` of the recording (slide view) with the leaves'
`.grad` left for the page to fill in, and every number the page shows is text formatted
here by `tracer.view.text` — the script only shows, hides and highlights.
"""

from __future__ import annotations

import html
import json
import math
import re
from dataclasses import replace
from importlib import resources
from typing import Any

from tracer.derivatives.chainrule import EdgeIndex, per_slot
from tracer.model.graph import Edge, Graph, Node, Recording, Saved
from tracer.model.options import CaptureOptions
from tracer.model.tensor import TensorData
from tracer.output.dot import RenderOptions, views
from tracer.output.graphviz import picture
from tracer.view.collapse import EVERY_DEPTH, Collapsed
from tracer.view.grades import (
    GRADE_COLUMNS,
    first_disagreement_text,
    grade_cells,
    recording_grades,
)
from tracer.view.jacobian import JacobianStep, jacobian_steps
from tracer.view.report import problems
from tracer.view.steps import engine_order
from tracer.view.text import (
    check_line,
    format_check,
    format_tensor,
    graph_title,
    jacobian_lines,
    jacobian_title,
    module_title,
    node_title,
    repeated_modules,
    shape_text,
    summary_line,
    visible,
    vjp_verdict,
)

# The page's picture: names, ops and gradients, readable when projected; every node drawn
# (the page steps through each one the engine ran; its module clusters fold in the page).
PAGE_VIEW = RenderOptions(detail="slide", depth=EVERY_DEPTH)

_ASSETS = resources.files("tracer") / "assets"
_SLOT = re.compile(r"__(TITLE|CSS|SVG|DATA|JS)__")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


# Quiz mode: a gradient of at most this many elements may be typed in and checked, and is
# right when every number typed is within these tolerances of it (the page shows four
# decimals: an answer read off it, or worked out to them, is right).
QUIZ_VALUES = 16
QUIZ_RTOL, QUIZ_ATOL = 1e-3, 5e-4


def page_capture(capture: CaptureOptions, fmt: str | None) -> CaptureOptions:
    """What to record for output in format `fmt`: a page (html) also shows each small op's
    local Jacobian, which only a page asks the trace to take (a plain trace costs nothing
    more)."""
    return replace(capture, jacobians=True) if fmt == "html" else capture


def render_html(
    recording: Recording,
    *,
    quiz: bool = False,
    depth: int | None = None,
    focus: str | None = None,
) -> str:
    """The stepper page for `recording`, as one HTML document. `quiz`: every gradient is
    hidden until the student reveals it (the picture shows none), and one of at most
    QUIZ_VALUES elements may be typed in and checked first. The page opens with module
    calls folded as the pictures collapse them (`depth`, `focus`; by default to fit a
    slide: tracer.output.dot.views decides), and steps through the boxes shown."""
    css = (_ASSETS / "stepper.css").read_text(encoding="utf-8")
    js = (_ASSETS / "stepper.js").read_text(encoding="utf-8")
    template = (_ASSETS / "stepper.html").read_text(encoding="utf-8")
    if "</script" in js.lower() or "</style" in css.lower():
        raise AssertionError("an asset would close its own <script> or <style> element")
    parts = {
        "TITLE": html.escape(visible(recording.title or "backward pass")),
        "CSS": css,
        "SVG": page_svg(recording, quiz=quiz),
        "DATA": script_json(page_data(recording, quiz=quiz, depth=depth, focus=focus)),
        "JS": js,
    }
    # One pass over the template: text put in (a title, the SVG) is never scanned again.
    return _SLOT.sub(lambda m: parts[m[1]], template)


def script_json(value: Any) -> str:
    """JSON that can sit inside <script>: no `<`, `>` or `&` can end the element or start
    markup, and U+2028/2029 (line breaks to old JavaScript parsers) are escaped too."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    if _SURROGATE.search(text):  # a lone one (a str may hold it, UTF-8 cannot): escaped
        text = _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    for raw, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(raw, escaped)
    return text


def page_svg(recording: Recording, *, quiz: bool = False) -> str:
    """The slide picture without the leaves' `.grad` (the page fills them in step by step),
    or in a quiz without any gradient, as an inline <svg> element: no XML prolog, doctype
    or comments."""
    shown = without_gradients(recording) if quiz else without_leaf_grads(recording)
    svg = picture(shown, "svg", PAGE_VIEW).decode("utf-8")
    svg = svg[svg.index("<svg") :]
    return re.sub(r"<!--.*?-->\n?", "", svg, flags=re.DOTALL)


def without_leaf_grads(recording: Recording) -> Recording:
    """A copy in which no leaf of a backward graph shows a gradient yet."""

    def graph_without(graph: Graph) -> Graph:
        if graph.kind != "backward":
            return graph
        nodes = [
            replace(n, leaf_grad=None, grads=(None,) * len(n.grads)) if n.kind == "leaf" else n
            for n in graph.nodes
        ]
        return replace(graph, nodes=nodes)

    return replace(recording, graphs=[graph_without(g) for g in recording.graphs])


def without_gradients(recording: Recording) -> Recording:
    """A copy whose backward graphs show no gradient (the seeds are given): a quiz's
    picture."""

    def graph_without(graph: Graph) -> Graph:
        if graph.kind != "backward":
            return graph
        nodes = [
            replace(n, leaf_grad=None, grads=(None,) * len(n.grads), grad_before=None)
            for n in graph.nodes
        ]
        edges = [replace(e, grad=None) for e in graph.edges]
        return replace(graph, nodes=nodes, edges=edges)

    return replace(recording, graphs=[graph_without(g) for g in recording.graphs])


# -- the page's data: plain text and numbers, formatted here ---------------------------


def page_data(
    recording: Recording,
    *,
    quiz: bool = False,
    depth: int | None = None,
    focus: str | None = None,
) -> dict[str, Any]:
    """Everything the page shows, as JSON-ready data; tensors as text lines (and, in a
    quiz, a small gradient's numbers too, to check what the student types); which module
    calls open folded (see `render_html`)."""
    data = _quiz_data(recording) if quiz else _data(recording)
    shown = views(recording, RenderOptions(depth=depth, focus=focus))
    for gi, (graph, view) in enumerate(zip(recording.graphs, shown, strict=True)):
        data["graphs"][gi]["folded"] = view.manual_box
        data["graphs"][gi]["modules"] = _modules_data(graph, gi, view)
    return data


def _modules_data(graph: Graph, gi: int, view: Collapsed) -> list[dict[str, Any]]:
    """Each module call of a graph: its cluster in the picture, its parent, its title, and
    whether the page opens with it folded (drawn collapsed in the picture's view)."""
    repeated = repeated_modules(graph.modules)
    return [
        {
            "id": call.id,
            "parent": call.parent,
            "cluster": f"cluster_g{gi}m{call.id}",
            "title": module_title(call, graph.modules, repeated),
            "folded": not view.manual_box and call.id not in view.expanded,
        }
        for call in graph.modules
    ]


def _data(recording: Recording) -> dict[str, Any]:
    return {
        "title": recording.title,
        "passed": recording.passed,
        "checks": [
            {"passed": c.passed, "headline": check_line(c, "exact"), "report": format_check(c)}
            for c in recording.checks
        ],
        "problems": problems(recording),
        "grades": _grades_data(recording),
        "steps": [[gi, node.id] for gi, node in engine_order(recording)],
        "graphs": [_graph_data(g) for g in recording.graphs],
    }


def _quiz_data(recording: Recording) -> dict[str, Any]:
    data = _data(recording)
    data["quiz"] = {"rtol": QUIZ_RTOL, "atol": QUIZ_ATOL}
    for graph, drawn in zip(recording.graphs, data["graphs"], strict=True):
        if graph.kind != "backward":
            continue
        for node, shown in zip(graph.nodes, drawn["nodes"], strict=True):
            shown["grads"] = [
                _with_numbers(t, s) for t, s in zip(node.grads, shown["grads"], strict=True)
            ]
            shown["leafGrad"] = _with_numbers(node.leaf_grad, shown["leafGrad"])
        for edge, shown in zip(graph.edges, drawn["edges"], strict=True):
            shown["grad"] = _with_numbers(edge.grad, shown["grad"])
    return data


def _with_numbers(t: TensorData | None, shown: dict[str, Any] | None) -> dict[str, Any] | None:
    """A gradient's page data with its numbers, when the student may type it in."""
    if t is None or shown is None or t.values is None or not 0 < t.numel <= QUIZ_VALUES:
        return shown
    if len(t.values) != t.numel:  # a complex tensor's values are its parts
        return shown
    if not all(math.isfinite(v) for v in t.values):
        return shown  # NaN and Inf are not typed in: revealed only
    return {**shown, "numbers": list(t.values)}


def _grades_data(recording: Recording) -> dict[str, Any] | None:
    """The grade sheet (tracer.view.grades) of a recording with several checks: its
    columns, a row of texts per check in the engine's order, the first disagreements."""
    if len(recording.checks) < 2:
        return None
    grades, firsts = recording_grades(recording)
    return {
        "columns": list(GRADE_COLUMNS),
        "rows": [{"cells": list(grade_cells(g)), "passed": g.check.passed} for g in grades],
        "first": [first_disagreement_text(f) for f in firsts],
    }


def tensor_text(t: TensorData | None) -> dict[str, Any] | None:
    """A tensor for the page: its one-line summary, and its values when it has them."""
    if t is None:
        return None
    return {
        "summary": summary_line(t),
        "lines": None if t.values is None else format_tensor(t),
    }


def _graph_data(graph: Graph) -> dict[str, Any]:
    index = EdgeIndex.of(graph)
    return {
        "kind": graph.kind,
        "label": graph_title(graph),
        "roots": graph.roots,
        "seeds": [tensor_text(s) for s in graph.seeds],
        "nodes": [_node_data(n, index, graph) for n in graph.nodes],
        "edges": [_edge_data(e, graph) for e in graph.edges],
    }


def _node_data(node: Node, index: EdgeIndex, graph: Graph) -> dict[str, Any]:
    slots = per_slot(node, index) if node.kind == "op" else None
    return {
        "id": node.id,
        "kind": node.kind,
        "op": node.op,
        "name": node.name,
        "title": node_title(node),
        "step": node.step,
        "shape": shape_text(node.shape),
        "dtype": node.dtype,
        "madeBy": node.made_by,
        "module": node.module,
        "forward": [tensor_text(t) for t in node.forward],
        "grads": [tensor_text(t) for t in node.grads],
        "leafGrad": tensor_text(node.leaf_grad),
        "saved": [_saved_data(s) for s in node.saved],
        "slotNames": slots[0] if slots else None,
        "formulas": slots[1] if slots else None,
        "jacobians": [_jacobian_data(j) for j in jacobian_steps(node, graph)],
    }


def _jacobian_data(step: JacobianStep) -> dict[str, Any]:
    """One input slot's Jacobian panel: J, vᵀJ, and whether the gradient sent is vᵀJ."""
    return {
        "slot": step.jacobian.slot,
        "title": jacobian_title(step),
        "matrix": jacobian_lines(step),
        "product": tensor_text(step.product),
        "verdict": vjp_verdict(step),
        "agrees": step.agrees,
    }


def _saved_data(saved: Saved) -> dict[str, Any]:
    return {
        "name": saved.name,
        "text": saved.text,
        "source": saved.source,
        "tensor": tensor_text(saved.tensor),
    }


def _edge_data(edge: Edge, graph: Graph) -> dict[str, Any]:
    return {
        "src": edge.src,
        "dst": edge.dst,
        "slot": edge.slot,
        "dstOutput": edge.dst_output,
        "constant": graph.node(edge.dst).kind == "constant",
        "grad": tensor_text(edge.grad),
    }
