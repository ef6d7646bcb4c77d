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
from pathlib import Path

import graphviz

from tracer.errors import TracerError
from tracer.graph import Check, Edge, Graph, Node, Recording, TensorData
from tracer.report import format_tensor, shape_text, verdict_text

# Colours: ops blue, leaves yellow, constants grey, gradients orange, problems red.
OP_FILL = "#dceaf7"
MANUAL_FILL = "#e8e0f5"
LEAF_FILL = "#fff2b3"
CONSTANT_FILL = "#eeeeee"
GRAD_COLOUR = "#c25a00"
PROBLEM = "#d62728"
AGREE_FILL = "#c9f2c7"
DISAGREE_FILL = "#f7c6c5"

FORMATS = ("svg", "png", "pdf", "dot", "gv", "json")


def _lines(lines: list[str]) -> str:
    """HTML-label lines, escaped."""
    return "<BR/>".join(html.escape(line) for line in lines)


def _grad_label(t: TensorData) -> str:
    # Edge labels are plain text: "\l" ends a left-justified line in DOT.
    return "".join(line + r"\l" for line in format_tensor(t, per_line=4))


def _node_label(node: Node, graph: Graph) -> str:
    rows: list[str] = []
    if node.kind == "constant":
        rows.append(f"<B>{html.escape(node.name or 'constant')}</B>")
        rows.append(html.escape(f"{node.dtype} {shape_text(node.shape)} · no grad"))
        return "<" + "<BR/>".join(rows) + ">"
    if node.kind == "leaf":
        rows.append(f"<B>{html.escape(node.name or 'leaf')}</B>")
        rows.append(html.escape(f"{node.dtype} {shape_text(node.shape)}"))
        rows.append(f'<FONT POINT-SIZE="9">{html.escape(node.op)}</FONT>')
        if node.leaf_grad is not None and graph.kind == "backward":
            grad = format_tensor(node.leaf_grad, per_line=4)
            rows.append(f'<FONT COLOR="{GRAD_COLOUR}">.grad = {_lines(grad)}</FONT>')
        return "<" + "<BR/>".join(rows) + ">"
    rows.append(html.escape(node.op))
    if node.name:
        rows.append(f"<B>{html.escape(node.name)}</B>")
    return "<" + "<BR/>".join(rows) + ">"


def _has_problem(t: TensorData | None) -> bool:
    return t is not None and not t.finite


def _add_graph(dot: graphviz.Digraph, graph: Graph, prefix: str) -> None:
    def nid(node_id: int) -> str:
        return f"{prefix}n{node_id}"

    manual = graph.kind == "manual"
    with dot.subgraph(name=f"cluster_{prefix}") as c:
        c.attr(
            label=graph.label,
            style="rounded,dashed" if manual else "rounded",
            color="#9b8fc4" if manual else "#7fa7d1",
            fontcolor="#333333",
        )
        for root, seed in zip(graph.roots, graph.seeds, strict=True):
            if seed is None:
                continue
            c.node(f"{prefix}seed{root}", "", shape="point", width="0.08")
            c.edge(
                f"{prefix}seed{root}",
                nid(root),
                label=_grad_label(seed),
                color=PROBLEM if _has_problem(seed) else GRAD_COLOUR,
                fontcolor=PROBLEM if _has_problem(seed) else GRAD_COLOUR,
            )
        for node in graph.nodes:
            fill = {"op": MANUAL_FILL if manual else OP_FILL, "leaf": LEAF_FILL}.get(
                node.kind, CONSTANT_FILL
            )
            problem = any(_has_problem(g) for g in node.grads) or _has_problem(node.leaf_grad)
            c.node(
                nid(node.id),
                _node_label(node, graph),
                shape="box",
                style="rounded,filled",
                fillcolor=fill,
                color=PROBLEM if problem else ("#999999" if node.kind == "constant" else "#555555"),
                penwidth="2" if problem else "1",
            )
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
    """The picture's heading: the title, then one coloured row per check."""
    rows = []
    if recording.title:
        rows.append(f'<TR><TD><B>{html.escape(recording.title)}</B></TD></TR>')
    for check in recording.checks:
        fill = AGREE_FILL if check.passed else DISAGREE_FILL
        rows.append(f'<TR><TD BGCOLOR="{fill}">{html.escape(_check_line(check))}</TD></TR>')
    if not rows:
        return ""
    return '<<TABLE BORDER="0" CELLBORDER="0" CELLPADDING="4">' + "".join(rows) + "</TABLE>>"


def _check_line(check: Check) -> str:
    if check.problem:
        return f"∂f/∂{check.name}: autograd vs manual: {verdict_text(check)}: {check.problem}"
    return (
        f"∂f/∂{check.name}: autograd vs manual: {verdict_text(check)} "
        f"(largest error {check.max_abs:.2g})"
    )


def to_dot(recording: Recording) -> graphviz.Digraph:
    """The Recording as a graphviz Digraph; `.source` is deterministic DOT."""
    dot = graphviz.Digraph("trace")
    dot.attr(rankdir="TB", labelloc="t", fontname="Helvetica", nodesep="0.3", ranksep="0.45")
    label = _title(recording)
    if label:
        dot.attr(label=label)
    dot.attr("node", fontname="Helvetica", fontsize="11")
    dot.attr("edge", fontname="Courier", fontsize="9", arrowsize="0.7")
    for i, graph in enumerate(recording.graphs):
        _add_graph(dot, graph, f"g{i}")
    return dot


def render_dot(recording: Recording) -> str:
    return to_dot(recording).source


def render_svg(recording: Recording) -> str:
    return _pipe(recording, "svg").decode("utf-8")


def _pipe(recording: Recording, fmt: str) -> bytes:
    try:
        return to_dot(recording).pipe(format=fmt)
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


def _encode(recording: Recording, fmt: str) -> bytes:
    renderers: dict[str, Callable[[], bytes]] = {
        "dot": lambda: render_dot(recording).encode("utf-8"),
        "gv": lambda: render_dot(recording).encode("utf-8"),
        "json": lambda: recording.to_json().encode("utf-8"),
    }
    return renderers[fmt]() if fmt in renderers else _pipe(recording, fmt)


def write(recording: Recording, path: str | Path) -> Path:
    """Render to `path` in the format its suffix names (svg, png, pdf, dot, gv, json).

    The whole output is produced in memory first and then moved into place, so a failure
    never leaves a partial file and never clobbers an existing good one.
    """
    path = check_writable(path)
    data = _encode(recording, output_format(path))
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

