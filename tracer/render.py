"""Render: a Recording to DOT source (via the `graphviz` package), and to files.

The picture reads top to bottom the way the gradient flows: the output at the top, the
seed gradient entering it, each edge labelled with the gradient sent down it, and the
leaves (with their final `.grad`) at the bottom. Each graph is a cluster of its own; the
manual formula's graph stands beside autograd's, and the verdict heads the picture.
"""

from __future__ import annotations

import html
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import graphviz

from tracer.errors import TracerError
from tracer.graph import Check, Edge, Graph, Node, Recording, TensorData
from tracer.report import (
    format_error,
    format_tensor,
    graph_title,
    problems,
    shape_text,
    verdict_text,
)

# Colours: ops blue, leaves yellow, constants grey, gradients orange, problems red.
OP_FILL = "#dceaf7"
MANUAL_FILL = "#e8e0f5"
HIGHER_ORDER_FILL = "#fde2c8"  # nodes an earlier create_graph=True pass made
LEAF_FILL = "#fff2b3"
CONSTANT_FILL = "#eeeeee"
GRAD_COLOUR = "#c25a00"
VALUE_COLOUR = "#1f4e79"
PROBLEM = "#d62728"
AGREE_FILL = "#c9f2c7"
DISAGREE_FILL = "#f7c6c5"

FORMATS = ("svg", "png", "pdf", "dot", "gv", "json", "html")
Detail = Literal["slide", "full"]
DETAILS: tuple[Detail, ...] = ("slide", "full")


@dataclass(frozen=True)
class RenderOptions:
    """How much each node shows.

    slide: op, variable name, backward step and the gradients (for projecting);
    full: also each node's forward value beside the gradient that reached it, shapes,
    dtypes. `saved` adds what autograd saved for backward, in either view (the trace must
    have recorded it: `tracer.trace(saved=True)`).
    """

    detail: Detail = "full"
    saved: bool = False
    # (graph index, node id) drawn with a thick outline: the running node of a stepper frame
    highlight: frozenset[tuple[int, int]] = frozenset()


def _esc(text: str) -> str:
    return html.escape(text, quote=False)


def _grad_label(t: TensorData) -> str:
    # Edge labels are plain text: "\l" ends a left-justified line in DOT.
    return "".join(line + r"\l" for line in format_tensor(t, per_line=4))


def _has_problem(t: TensorData | None) -> bool:
    return t is not None and not t.finite


class _Label:
    """An HTML-like node label: a borderless table of rows."""

    def __init__(self) -> None:
        self.rows: list[str] = []

    def row(self, content: str, colspan: int = 2) -> None:
        self.rows.append(f'<TR><TD COLSPAN="{colspan}">{content}</TD></TR>')

    def pair(self, key: str, lines: list[str], colour: str) -> None:
        body = '<BR ALIGN="LEFT"/>'.join(_esc(line) for line in lines) + '<BR ALIGN="LEFT"/>'
        self.rows.append(
            f'<TR><TD ALIGN="RIGHT" VALIGN="TOP"><FONT POINT-SIZE="9">{key}</FONT></TD>'
            f'<TD ALIGN="LEFT" BALIGN="LEFT"><FONT FACE="Courier" POINT-SIZE="9" '
            f'COLOR="{colour}">{body}</FONT></TD></TR>'
        )

    def small(self, text: str, colour: str = "#333333") -> None:
        self.row(f'<FONT POINT-SIZE="9" COLOR="{colour}">{_esc(text)}</FONT>')

    def html(self) -> str:
        table = '<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="1">'
        return "<" + table + "".join(self.rows) + "</TABLE>>"


def _heading(node: Node) -> str:
    """The first row: the variable name (bold) or the op, and the backward step badge."""
    title = f"<B>{_esc(node.name)}</B>" if node.name else _esc(node.op or "constant")
    if node.kind == "op" and node.name:
        title = f"{_esc(node.op)}  {title}"
    if node.step is None:
        return f'<TR><TD COLSPAN="2">{title}</TD></TR>'
    # A nested table keeps the badge as small as its number, whatever the rows below.
    badge = f'<FONT POINT-SIZE="8" COLOR="#ffffff">{node.step}</FONT>'
    return (
        '<TR><TD COLSPAN="2" ALIGN="CENTER">'
        '<TABLE BORDER="0" CELLSPACING="0" CELLPADDING="1"><TR>'
        f'<TD>{title} </TD><TD BGCOLOR="#555555" FIXEDSIZE="TRUE" '
        f'WIDTH="{6 + 5 * len(str(node.step))}" HEIGHT="12">{badge}</TD>'
        "</TR></TABLE></TD></TR>"
    )


def _node_label(node: Node, graph: Graph, options: RenderOptions) -> str:
    label = _Label()
    label.rows.append(_heading(node))
    full = options.detail == "full"
    if full and node.shape is not None:
        label.small(f"{node.dtype} {shape_text(node.shape)}")
    if node.kind == "leaf":
        label.small(node.op)
    if node.kind == "constant":
        label.small("no grad" if full else f"{shape_text(node.shape)} · no grad")
    if node.made_by is not None:
        label.small(f"made by backward pass {node.made_by}")
    if full:
        for i, value in enumerate(node.forward):
            if value is not None:
                key = "value" if len(node.forward) == 1 else f"value {i}"
                colour = PROBLEM if _has_problem(value) else VALUE_COLOUR
                label.pair(key, format_tensor(value, per_line=4), colour)
        if node.kind == "op":
            for i, grad in enumerate(node.grads):
                if grad is not None:
                    key = "grad" if len(node.grads) == 1 else f"grad {i}"
                    colour = PROBLEM if _has_problem(grad) else GRAD_COLOUR
                    label.pair(key, format_tensor(grad, per_line=4), colour)
    if node.kind == "leaf" and graph.kind == "backward":
        if node.leaf_grad is not None:
            colour = PROBLEM if _has_problem(node.leaf_grad) else GRAD_COLOUR
            label.pair(".grad", format_tensor(node.leaf_grad, per_line=4), colour)
        elif node.grads and node.grads[0] is not None:  # torch.autograd.grad's result
            label.pair("grad", format_tensor(node.grads[0], per_line=4), GRAD_COLOUR)
        elif node.received_no_gradient:
            label.small("received no gradient", PROBLEM)
    if options.saved:
        for saved in node.saved:
            if saved.tensor is None:
                label.small(f"saved {saved.name} = {saved.text}", "#555555")
            elif saved.source:
                label.small(f"saved {saved.name} = {saved.source}", "#555555")
            else:
                label.pair(f"saved {_esc(saved.name)}", format_tensor(saved.tensor, 4), "#555555")
    return label.html()


def _node_style(node: Node, graph: Graph) -> dict[str, str]:
    if node.kind == "leaf":
        fill = LEAF_FILL
    elif node.kind == "constant":
        fill = CONSTANT_FILL
    elif node.made_by is not None:
        fill = HIGHER_ORDER_FILL
    else:
        fill = MANUAL_FILL if graph.kind == "manual" else OP_FILL
    tensors = [*node.forward, *node.grads, node.leaf_grad]
    problem = any(_has_problem(t) for t in tensors)
    unused = graph.kind == "backward" and node.received_no_gradient
    style = "rounded,filled,dashed" if unused else "rounded,filled"
    if problem or unused:
        colour = PROBLEM
    else:
        colour = "#999999" if node.kind == "constant" else "#555555"
    return {
        "shape": "box",
        "style": style,
        "fillcolor": fill,
        "color": colour,
        "penwidth": "2" if problem or unused else "1",
    }


def _add_graph(dot: graphviz.Digraph, graph: Graph, prefix: str, options: RenderOptions) -> None:
    def nid(node_id: int) -> str:
        return f"{prefix}n{node_id}"

    manual = graph.kind == "manual"
    with dot.subgraph(name=f"cluster_{prefix}") as c:
        c.attr(
            label=graph_title(graph),
            style="rounded,dashed" if manual else "rounded",
            color="#9b8fc4" if manual else "#7fa7d1",
            fontcolor="#333333",
        )
        for root, seed in zip(graph.roots, graph.seeds, strict=True):
            if seed is None:
                continue
            colour = PROBLEM if _has_problem(seed) else GRAD_COLOUR
            c.node(f"{prefix}seed{root}", "", shape="point", width="0.08")
            c.edge(
                f"{prefix}seed{root}",
                nid(root),
                label=_grad_label(seed),
                color=colour,
                fontcolor=colour,
            )
        for node in graph.nodes:
            c.node(nid(node.id), _node_label(node, graph, options), **_node_style(node, graph))
        for edge in graph.edges:
            c.edge(nid(edge.src), nid(edge.dst), **_edge_style(edge, graph))


def _edge_style(edge: Edge, graph: Graph) -> dict[str, str]:
    if graph.node(edge.dst).kind == "constant":
        return {"style": "dashed", "color": "#999999", "arrowhead": "none"}
    if edge.grad is None:
        return {"color": "#555555"}
    colour = PROBLEM if _has_problem(edge.grad) else GRAD_COLOUR
    return {"label": _grad_label(edge.grad), "color": colour, "fontcolor": colour}


def _title(recording: Recording) -> str:
    """The picture's heading: the title, one coloured row per check, then any problem."""
    rows = []
    if recording.title:
        rows.append(f"<TR><TD><B>{_esc(recording.title)}</B></TD></TR>")
    for check in recording.checks:
        fill = AGREE_FILL if check.passed else DISAGREE_FILL
        rows.append(f'<TR><TD BGCOLOR="{fill}">{_esc(_check_line(check))}</TD></TR>')
    for problem in problems(recording):
        rows.append(f'<TR><TD><FONT COLOR="{PROBLEM}">⚠ {_esc(problem)}</FONT></TD></TR>')
    if not rows:
        return ""
    return '<<TABLE BORDER="0" CELLBORDER="0" CELLPADDING="4">' + "".join(rows) + "</TABLE>>"


def _check_line(check: Check) -> str:
    if check.problem:
        return f"{check.derivative}: autograd vs manual: {verdict_text(check)}: {check.problem}"
    return (
        f"{check.derivative}: autograd vs manual: {verdict_text(check)} "
        f"(largest error {format_error(check.max_abs)})"
    )


def to_dot(recording: Recording, options: RenderOptions | None = None) -> graphviz.Digraph:
    """The Recording as a graphviz Digraph; `.source` is deterministic DOT."""
    options = options or RenderOptions()
    dot = graphviz.Digraph("trace")
    dot.attr(rankdir="TB", labelloc="t", fontname="Helvetica", nodesep="0.3", ranksep="0.45")
    label = _title(recording)
    if label:
        dot.attr(label=label)
    dot.attr("node", fontname="Helvetica", fontsize="11")
    dot.attr("edge", fontname="Courier", fontsize="9", arrowsize="0.7")
    for i, graph in enumerate(recording.graphs):
        _add_graph(dot, graph, f"g{i}", options)
    for i, node_id in sorted(options.highlight):  # restating a node keeps it in its cluster
        dot.node(f"g{i}n{node_id}", penwidth="6", color="#000000")
    return dot


def render_dot(recording: Recording, options: RenderOptions | None = None) -> str:
    return to_dot(recording, options).source


def render_svg(recording: Recording, options: RenderOptions | None = None) -> str:
    return _pipe(recording, "svg", options).decode("utf-8")


def _pipe(recording: Recording, fmt: str, options: RenderOptions | None = None) -> bytes:
    dot = to_dot(recording, options)
    if fmt == "png":
        dot.attr(dpi="144")  # 72 dpi makes 9-point labels unreadable on a slide
    try:
        return dot.pipe(format=fmt)
    except graphviz.ExecutableNotFound:
        raise TracerError(
            "Graphviz's `dot` program was not found: install it (Debian/Ubuntu: "
            "`apt-get install graphviz`; macOS: `brew install graphviz`; conda: "
            "`conda install graphviz`), or write .dot or .json, which need no `dot`"
        ) from None
    except graphviz.CalledProcessError as e:
        stderr = (e.stderr or b"").decode("utf-8", "replace").strip().splitlines()
        raise TracerError(f"Graphviz's `dot` failed: {stderr[-1] if stderr else e}") from None


def output_format(path: str | Path) -> str:
    """The format for `path` from its suffix, or a TracerError naming the supported ones."""
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        given = f"'.{suffix}'" if suffix else "no suffix"
        raise TracerError(
            f"unsupported output format ({given} in {path}): use one of "
            + ", ".join("." + f for f in FORMATS)
        )
    return suffix


def check_writable(path: str | Path) -> Path:
    """Fail early, with one clear line, when `path` cannot be written."""
    path = Path(path)
    if path.is_dir():
        raise TracerError(f"cannot write {path}: it is a directory; give a file name")
    output_format(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise TracerError(f"cannot write {path}: the directory {parent} does not exist")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise TracerError(f"cannot write {path}: permission denied")
    return path


def _encode(recording: Recording, fmt: str, options: RenderOptions | None) -> bytes:
    renderers: dict[str, Callable[[], bytes]] = {
        "dot": lambda: render_dot(recording, options).encode("utf-8"),
        "gv": lambda: render_dot(recording, options).encode("utf-8"),
        "json": lambda: recording.to_json().encode("utf-8"),
        "html": lambda: _stepper_page(recording),
    }
    return renderers[fmt]() if fmt in renderers else _pipe(recording, fmt, options)


def _stepper_page(recording: Recording) -> bytes:
    from tracer.stepper import render_html  # the page draws its own (slide) view

    return render_html(recording).encode("utf-8")


def write(recording: Recording, path: str | Path, options: RenderOptions | None = None) -> Path:
    """Render to `path` in the format its suffix names (svg, png, pdf, dot, gv, json, html).

    The whole output is produced in memory first and then moved into place, so a failure
    never leaves a partial file and never clobbers an existing good one.
    """
    path = check_writable(path)
    data = _encode(recording, output_format(path), options)
    write_atomic(path, data)
    return path


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, then rename it over `path`."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise TracerError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise TracerError(f"cannot write {path}: {e.strerror or e}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
