"""DOT: a Recording as Graphviz source text, written line by line.

The picture reads top to bottom the way the gradient flows: the output at the top, the
seed gradient entering it, each edge labelled with the gradient sent down it, and the
leaves (with their final `.grad`) at the bottom. With several graphs (autograd's and a
manual formula's) each is a cluster of its own, side by side; the verdict heads it all.

Every piece of user text (names, titles, messages) goes into HTML-like labels, escaped
here and nowhere else (`text`): Graphviz then expands no `\\N` or `\\G`, a backslash or
quote cannot end a string, and a control character or lone surrogate shows as `\\x01`.
Seed gradients go into plain edge labels; an edge's gradient into an HTML-like one, under
the input it feeds (`∂/∂self`, from tracer.chainrule), with a blank column on its left so
that the labels of parallel edges never touch. A node's label is a table of rows; each row kind is
one function in `NODE_ROWS`, so a new per-node overlay is one function added there.
"""

from __future__ import annotations

import functools
import html
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from tracer.graph import Edge, Graph, Node, Recording, TensorData
from tracer.report import (
    check_line,
    format_tensor,
    graph_title,
    problems,
    shape_text,
    summary_line,
)

# Colours: ops blue, leaves yellow, constants grey, gradients orange, problems red.
OP_FILL = "#dceaf7"
MANUAL_FILL = "#e8e0f5"
HIGHER_ORDER_FILL = "#fde2c8"  # nodes an earlier create_graph=True pass made
LEAF_FILL = "#fff2b3"
CONSTANT_FILL = "#eeeeee"
GRAD_COLOUR = "#c25a00"
VALUE_COLOUR = "#1f4e79"
SAVED_COLOUR = "#555555"
PROBLEM = "#d62728"
AGREE_FILL = "#c9f2c7"
DISAGREE_FILL = "#f7c6c5"

Detail = Literal["slide", "full"]
DETAILS: tuple[Detail, ...] = ("slide", "full")

# The slide view writes out tensors of at most this many values; larger ones as a summary.
SLIDE_VALUES = 16
# A name longer than this is cut (with "…"): Graphviz cannot lay out an overwide node.
NAME_LIMIT = 60
# The heading lists at most this many problems, then says how many more there are.
PROBLEM_ROWS = 12


@dataclass(frozen=True)
class RenderOptions:
    """How much each node shows.

    slide: op, variable name, backward step and the gradients (for projecting);
    full: also each node's forward value beside the gradient that reached it, shapes and
    dtypes. `saved` adds what autograd saved for backward, in either view (the trace must
    have recorded it: `tracer.trace(saved=True)`). `highlight` outlines nodes, by (graph
    index, node id): the running node of a step-through frame. `explain` shows each op's
    chain-rule step per input (`tracer.chainrule`) in the slide view; the full view always
    shows it.
    """

    detail: Detail = "full"
    saved: bool = False
    highlight: frozenset[tuple[int, int]] = frozenset()
    explain: bool = False  # the chain-rule step per input in the slide view too

    @property
    def full(self) -> bool:
        return self.detail == "full"

    @property
    def explains(self) -> bool:
        """Whether op nodes show their chain-rule step (always in the full view)."""
        return self.full or self.explain


# -- text -----------------------------------------------------------------------------------

_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_SPECIAL = re.compile(r"[&<>\"'\\\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def text(value: str, limit: int | None = None) -> str:
    """User text for an HTML-like label: cut to `limit`, control characters and lone
    surrogates made visible, and escaped (& < > " ')."""
    if limit is not None and len(value) > limit:
        value = value[: limit - 1] + "…"
    if not _SPECIAL.search(value):
        return value  # the common case: nothing to escape
    # Graphviz expands \\N, \\G, \\L even in HTML-like labels, and shows "\\\\" as one
    # backslash: every backslash is doubled.
    return html.escape(_UNPRINTABLE.sub(_visible, value), quote=True).replace("\\", "\\\\")


def _plain(value: str) -> str:
    """Text for a plain (quoted) DOT label: a backslash or quote stays itself."""
    value = _UNPRINTABLE.sub(_visible, value)
    return value.replace("\\", "\\\\").replace('"', '\\"')


# A tensor is often drawn twice (in the node it reaches, on the edge that carries it):
# its text is made once per picture (the caches are emptied when a picture starts).
def _tensor_lines(t: TensorData, limit: int | None) -> list[str]:
    """The tensor's values, or its summary line when it has more than `limit` of them."""
    if limit is not None and t.values is not None and len(t.values) > limit:
        return [summary_line(t)]
    return format_tensor(t, per_line=4)


@functools.lru_cache(maxsize=16384)
def _edge_label(t: TensorData, limit: int | None) -> str:
    # A plain label (numbers, and at most a note): "\l" ends a left-justified line.
    return '"' + "".join(_plain(line) + "\\l" for line in _tensor_lines(t, limit)) + '"'


@functools.lru_cache(maxsize=16384)
def _tensor_html(t: TensorData, limit: int | None) -> str:
    return "".join(text(line) + '<BR ALIGN="LEFT"/>' for line in _tensor_lines(t, limit))


def _limit(options: RenderOptions) -> int | None:
    return SLIDE_VALUES if options.detail == "slide" else None


def _bad(t: TensorData | None) -> bool:
    return t is not None and (t.nan > 0 or t.inf > 0)


# -- node labels ----------------------------------------------------------------------------

Row = str
RowMaker = Callable[[Node, Graph, RenderOptions], list[Row]]


def _small(content: str, colour: str = "#333333") -> Row:
    return f'<TR><TD COLSPAN="2"><FONT POINT-SIZE="9" COLOR="{colour}">{content}</FONT></TD></TR>'


def _pair(key: str, t: TensorData, colour: str, limit: int | None = None) -> Row:
    colour = PROBLEM if _bad(t) else colour
    body = _tensor_html(t, limit)
    return (
        f'<TR><TD ALIGN="RIGHT" VALIGN="TOP"><FONT POINT-SIZE="9">{key}</FONT></TD>'
        f'<TD ALIGN="LEFT" BALIGN="LEFT"><FONT FACE="Courier" POINT-SIZE="9" '
        f'COLOR="{colour}">{body}</FONT></TD></TR>'
    )


def heading_row(node: Node, graph: Graph, options: RenderOptions) -> list[Row]:
    """The variable name (bold) or the op, and the backward step as a badge."""
    title = f"<B>{text(node.name, NAME_LIMIT)}</B>" if node.name else text(node.op or "constant")
    if node.kind == "op" and node.name:
        title = f"{text(node.op)}  {title}"
    if node.step is None:
        return [f'<TR><TD COLSPAN="2">{title}</TD></TR>']
    # A nested table keeps the badge as small as its number, whatever the rows below.
    badge = f'<FONT POINT-SIZE="8" COLOR="#ffffff">{node.step}</FONT>'
    return [
        '<TR><TD COLSPAN="2" ALIGN="CENTER">'
        '<TABLE BORDER="0" CELLSPACING="0" CELLPADDING="1"><TR>'
        f'<TD>{title} </TD><TD BGCOLOR="#555555" FIXEDSIZE="TRUE" '
        f'WIDTH="{6 + 5 * len(str(node.step))}" HEIGHT="12">{badge}</TD>'
        "</TR></TABLE></TD></TR>"
    ]


def kind_rows(node: Node, graph: Graph, options: RenderOptions) -> list[Row]:
    """Shape and dtype (full view), AccumulateGrad under a leaf, "no grad" on a constant,
    and which pass made a node of a higher-order graph."""
    rows = []
    if options.full and node.shape is not None:
        rows.append(_small(f"{text(node.dtype or '')} {shape_text(node.shape)}"))
    if node.kind == "leaf":
        rows.append(_small(text(node.op)))
    if node.kind == "constant":
        rows.append(_small("no grad" if options.full else f"{shape_text(node.shape)} · no grad"))
    if node.made_by is not None:
        rows.append(_small(f"made by backward pass {node.made_by}"))
    return rows


def value_rows(node: Node, graph: Graph, options: RenderOptions) -> list[Row]:
    """The full view's forward value beside the gradient that came back to the node."""
    if not options.full:
        return []
    rows = []
    for i, value in enumerate(node.forward):
        if value is not None:
            rows.append(
                _pair("value" if len(node.forward) == 1 else f"value {i}", value, VALUE_COLOUR)
            )
    if node.kind == "op":
        for i, grad in enumerate(node.grads):
            if grad is not None:
                rows.append(
                    _pair("grad" if len(node.grads) == 1 else f"grad {i}", grad, GRAD_COLOUR)
                )
    return rows


def leaf_rows(node: Node, graph: Graph, options: RenderOptions) -> list[Row]:
    """A leaf's `.grad` after the pass (or torch.autograd.grad's result), or a warning."""
    if node.kind != "leaf" or graph.kind != "backward":
        return []
    if node.leaf_grad is not None:
        return [_pair(".grad", node.leaf_grad, GRAD_COLOUR, _limit(options))]
    if node.grads and node.grads[0] is not None:  # torch.autograd.grad's result
        return [_pair("grad", node.grads[0], GRAD_COLOUR, _limit(options))]
    if node.received_no_gradient:
        return [_small("received no gradient", PROBLEM)]
    return []


def saved_rows(node: Node, graph: Graph, options: RenderOptions) -> list[Row]:
    """What autograd saved for backward (with --saved): a name where we know one."""
    if not options.saved:
        return []
    rows = []
    for saved in node.saved:
        name = text(saved.name)
        if saved.tensor is None:
            rows.append(
                _small(f"saved {name} = {text(saved.text or '', NAME_LIMIT)}", SAVED_COLOUR)
            )
        elif saved.source:
            rows.append(_small(f"saved {name} = {text(saved.source, NAME_LIMIT)}", SAVED_COLOUR))
        else:
            rows.append(_pair(f"saved {name}", saved.tensor, SAVED_COLOUR, _limit(options)))
    return rows


# The chain-rule rows: a formula line is cut here (Graphviz cannot lay out an overwide node).
FORMULA_LIMIT = 90
FORMULA_COLOUR = "#3b3b8f"


def formula_rows(node: Node, graph: Graph, options: RenderOptions) -> list[Row]:
    """The chain-rule step per input that received a gradient, from torch's own
    derivatives table (tracer.chainrule): `∂/∂self: grad · cos(self)   (self = z)`.
    Backward graphs only; a node whose class has no formula shows none."""
    if not options.explains or node.kind != "op" or graph.kind != "backward":
        return []
    from tracer.chainrule import steps

    found = steps(node, graph) or []
    return [_small(text(step.line, FORMULA_LIMIT), FORMULA_COLOUR) for step in found]


# The rows of a node's label, top to bottom.
NODE_ROWS: tuple[RowMaker, ...] = (
    heading_row,
    kind_rows,
    value_rows,
    leaf_rows,
    saved_rows,
    formula_rows,
)

_TABLE = '<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="1">'


def node_label(node: Node, graph: Graph, options: RenderOptions) -> str:
    rows = [row for make in NODE_ROWS for row in make(node, graph, options)]
    return _TABLE + "".join(rows) + "</TABLE>>"


def _node_attributes(node: Node, graph: Graph, highlighted: bool) -> str:
    if node.kind == "leaf":
        fill = LEAF_FILL
    elif node.kind == "constant":
        fill = CONSTANT_FILL
    elif node.made_by is not None:
        fill = HIGHER_ORDER_FILL
    else:
        fill = MANUAL_FILL if graph.kind == "manual" else OP_FILL
    problem = _bad(node.leaf_grad) or any(
        t is not None and (t.nan > 0 or t.inf > 0) for t in (*node.forward, *node.grads)
    )
    unused = graph.kind == "backward" and node.received_no_gradient
    style = "rounded,filled,dashed" if unused else "rounded,filled"
    if highlighted:
        colour, width = "#000000", "6"
    elif problem or unused:
        colour, width = PROBLEM, "2"
    else:
        colour, width = ("#999999" if node.kind == "constant" else "#555555"), "1"
    return f'color="{colour}" fillcolor="{fill}" penwidth={width} shape=box style="{style}"'


def _edge_attributes(edge: Edge, graph: Graph, limit: int | None) -> str:
    if graph.nodes[edge.dst].kind == "constant":
        return 'arrowhead=none color="#999999" style=dashed'
    if edge.grad is None:
        return 'color="#555555"'
    colour = PROBLEM if _bad(edge.grad) else GRAD_COLOUR
    from tracer.chainrule import slot_name

    label = _slot_edge_label(edge.grad, slot_name(edge, graph), colour, limit)
    return f'color="{colour}" fontcolor="{colour}" label={label}'


# The blank column left of an edge's label: the labels of parallel edges (the two inputs
# of `torch.dot(x, x)`) and the edge's own line never touch.
LABEL_GAP = 10


def _slot_edge_label(t: TensorData, slot: str | None, colour: str, limit: int | None) -> str:
    """The gradient sent down an edge, under the input it feeds (`∂/∂self`)."""
    head = ""
    if slot is not None:
        head = (
            f'<TR><TD ALIGN="LEFT"><FONT FACE="Helvetica" POINT-SIZE="9">'
            f"<I>∂/∂{text(slot)}</I></FONT></TD></TR>"
        )
    body = _tensor_html(t, limit)
    return (
        '<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="0"><TR>'
        f'<TD WIDTH="{LABEL_GAP}"></TD><TD><TABLE BORDER="0" CELLBORDER="0" '
        f'CELLSPACING="0" CELLPADDING="1">{head}<TR><TD ALIGN="LEFT" BALIGN="LEFT">'
        f'<FONT COLOR="{colour}">{body}</FONT></TD></TR></TABLE></TD></TR></TABLE>>'
    )


# -- the whole picture ----------------------------------------------------------------------


def _heading(recording: Recording, titles: list[str]) -> str:
    """The picture's heading: the title (and a lone graph's), one coloured row per
    check, then the problems."""
    rows = []
    for title in titles:
        rows.append(f"<TR><TD><B>{text(title)}</B></TD></TR>")
    for check in recording.checks:
        fill = AGREE_FILL if check.passed else DISAGREE_FILL
        rows.append(f'<TR><TD BGCOLOR="{fill}">{text(check_line(check))}</TD></TR>')
    found = problems(recording)
    for problem in found[:PROBLEM_ROWS]:
        rows.append(f'<TR><TD><FONT COLOR="{PROBLEM}">⚠ {text(problem)}</FONT></TD></TR>')
    if len(found) > PROBLEM_ROWS:
        more = f"… and {len(found) - PROBLEM_ROWS} more problems (see the report)"
        rows.append(f'<TR><TD><FONT COLOR="{PROBLEM}">{more}</FONT></TD></TR>')
    if not rows:
        return ""
    return '<<TABLE BORDER="0" CELLBORDER="0" CELLPADDING="4">' + "".join(rows) + "</TABLE>>"


def _graph_lines(graph: Graph, index: int, options: RenderOptions, cluster: bool) -> list[str]:
    prefix = f"g{index}"
    indent = "\t\t" if cluster else "\t"
    lines = []
    if cluster:
        manual = graph.kind == "manual"
        lines += [
            f"\tsubgraph cluster_{prefix} {{",
            f"\t\tlabel=<{text(graph_title(graph))}>",
            f'\t\tcolor="{"#9b8fc4" if manual else "#7fa7d1"}" fontcolor="#333333" '
            f'style="{"rounded,dashed" if manual else "rounded"}"',
        ]
    for root, seed in zip(graph.roots, graph.seeds, strict=True):
        if seed is None:
            continue
        colour = PROBLEM if _bad(seed) else GRAD_COLOUR
        lines.append(f'{indent}{prefix}seed{root} [label="" shape=point width=0.08]')
        lines.append(
            f'{indent}{prefix}seed{root} -> {prefix}n{root} [color="{colour}" '
            f'fontcolor="{colour}" label={_edge_label(seed, _limit(options))}]'
        )
    highlight, limit = options.highlight, _limit(options)
    for node in graph.nodes:
        attributes = _node_attributes(node, graph, (index, node.id) in highlight)
        label = node_label(node, graph, options)
        lines.append(f"{indent}{prefix}n{node.id} [label={label} {attributes}]")
    for edge in graph.edges:
        attributes = _edge_attributes(edge, graph, limit)
        lines.append(f"{indent}{prefix}n{edge.src} -> {prefix}n{edge.dst} [{attributes}]")
    if cluster:
        lines.append("\t}")
    return lines


def dot_source(recording: Recording, options: RenderOptions | None = None) -> str:
    """The Recording as DOT source: deterministic, the same text for the same recording.

    One graph is drawn without a cluster around it (its title joins the heading): a
    cluster costs Graphviz's layout dearly on large graphs.
    """
    options = options or RenderOptions()
    _edge_label.cache_clear()
    _tensor_html.cache_clear()
    single = len(recording.graphs) == 1
    titles = [recording.title] if recording.title else []
    if single:
        titles.append(graph_title(recording.graphs[0]))
    lines = [
        "digraph trace {",
        "\tfontname=Helvetica labelloc=t nodesep=0.3 rankdir=TB ranksep=0.45",
    ]
    heading = _heading(recording, titles)
    if heading:
        lines.append(f"\tlabel={heading}")
    lines += [
        "\tnode [fontname=Helvetica fontsize=11]",
        "\tedge [arrowsize=0.7 fontname=Courier fontsize=9]",
    ]
    for i, graph in enumerate(recording.graphs):
        lines += _graph_lines(graph, i, options, cluster=not single)
    lines.append("}")
    return "\n".join(lines) + "\n"
