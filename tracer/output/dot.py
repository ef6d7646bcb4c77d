"""DOT: a Recording as Graphviz source text, written line by line.

The picture reads top to bottom the way the gradient flows: the output at the top, the
seed gradient entering it, each edge labelled with the gradient sent down it, and the
leaves (with their final `.grad`) at the bottom. With several graphs (autograd's and a
manual formula's) each is a cluster of its own, side by side; the verdict heads it all.

Every piece of user text (names, titles, messages) goes into HTML-like labels, escaped
here and nowhere else (`text`): Graphviz then expands no `\\N` or `\\G`, a backslash or
quote cannot end a string, and a control character or lone surrogate shows as `\\x01`.
Seed gradients go into plain edge labels; an edge's gradient into an HTML-like one, under
the input it feeds (`∂/∂self`, from tracer.derivatives.chainrule), with a blank column on
its left so that the labels of parallel edges never touch. A node's label is a table of
rows; each row kind is one function in `NODE_ROWS`, called with the graph being drawn
(`Drawn`: the facts rows ask for, found once), so a new per-node overlay is one function.

The one trade-off of this module: a large model's DOT runs to hundreds of megabytes, and
much of it is non-ASCII (∂, ‖·‖), so every string made along the way is a wide copy. Each
label, edge and line is therefore made once, in its final form (its indentation included),
and joined once; rows alike are cached. benchmarks/bench_cost.py guards it against
torchviz's `make_dot`.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from tracer.derivatives.chainrule import EdgeIndex, slot_name, steps
from tracer.errors import TracerError
from tracer.model.check import Check
from tracer.model.collector import paused_gc
from tracer.model.forward import ForwardMode
from tracer.model.graph import Edge, Graph, Node, Recording
from tracer.model.tensor import TensorData
from tracer.view.collapse import SLIDE_BUDGET, Collapsed, collapse, collapse_manual, levels
from tracer.view.grades import (
    GRADE_COLUMNS,
    Grade,
    first_disagreement_text,
    grade_cells,
    recording_grades,
)
from tracer.view.report import (
    bad_gradient,
    bad_value,
    collapse_note,
    explanations,
    problems,
    starts,
)
from tracer.view.text import (
    check_badge,
    check_line,
    checks_brief,
    edge_note,
    format_tensor,
    forward_check_line,
    forward_cost_lines,
    forward_title,
    graph_title,
    module_title,
    repeated_modules,
    shape_text,
    slide_tensor,
    visible,
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
TANGENT_COLOUR = "#2e7d32"  # forward mode's tangents, green as they flow the other way
PROBLEM = "#d62728"
AGREE_FILL = "#c9f2c7"
DISAGREE_FILL = "#f7c6c5"

Detail = Literal["slide", "full"]
DETAILS: tuple[Detail, ...] = ("slide", "full")

# A name longer than this is cut (with "…"): Graphviz cannot lay out an overwide node.
NAME_LIMIT = 60
# The heading lists at most this many problems, then says how many more there are.
PROBLEM_ROWS = 12
# With more checks than this, the heading counts them (each is drawn on its node) and
# lists only those where a disagreement starts.
HEADING_CHECKS = 3


@dataclass(frozen=True)
class RenderOptions:
    """How much each node shows.

    slide: op, variable name, backward step and the gradients (for projecting);
    full: also each node's forward value beside the gradient that reached it, shapes and
    dtypes. `saved` adds what autograd saved for backward, in either view (the trace must
    have recorded it: `tracer.trace(saved=True)`). `highlight` outlines nodes, by (graph
    index, node id): the running node of a step-through frame. `explain` shows each op's
    chain-rule step per input (`tracer.derivatives.chainrule`) in the slide view; the full
    view always shows it.

    Real models (see tracer.view.collapse): `depth=N` draws every module call deeper than N as
    one box (`EVERY_DEPTH`: none); `focus="layers.3"` draws that module's inside in full
    and the rest collapsed; by default (None) a graph of more than `budget` boxes is drawn
    at the deepest depth that fits.
    """

    detail: Detail = "full"
    saved: bool = False
    highlight: frozenset[tuple[int, int]] = frozenset()
    depth: int | None = None
    focus: str | None = None
    budget: int = SLIDE_BUDGET
    explain: bool = False  # the chain-rule step per input in the slide view too
    notes: tuple[str, ...] = ()  # more lines for the heading (why this view was drawn)
    quiz: bool = False  # the step-through page hides the gradients until revealed (page)

    @property
    def full(self) -> bool:
        return self.detail == "full"

    @property
    def explains(self) -> bool:
        """Whether op nodes show their chain-rule step (always in the full view)."""
        return self.full or self.explain


# -- text -----------------------------------------------------------------------------------

_SPECIAL = re.compile(r"[&<>\"'\\\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def text(value: str, limit: int | None = None) -> str:
    """User text for an HTML-like label: cut to `limit`, control characters and lone
    surrogates made visible, and escaped (& < > " ')."""
    if limit is not None and len(value) > limit:
        value = value[: limit - 1] + "…"
    if not _SPECIAL.search(value):
        return value  # the common case: nothing to escape
    # Graphviz expands \\N, \\G, \\L even in HTML-like labels, and shows "\\\\" as one
    # backslash: every backslash is doubled.
    return html.escape(visible(value), quote=True).replace("\\", "\\\\")


def quoted_text(value: str) -> str:
    """Text for a plain (quoted) DOT label: a backslash or quote stays itself."""
    value = visible(value)
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _tensor_lines(t: TensorData, brief: bool) -> list[str]:
    """The tensor's text: all its values, or (`brief`, the slide view) a summary line
    for a tensor of many values."""
    return slide_tensor(t) if brief else format_tensor(t, per_line=4)


def _edge_label(t: TensorData, brief: bool = False) -> str:
    # A plain label (numbers, and at most a note): "\l" ends a left-justified line.
    return '"' + "".join(quoted_text(line) + "\\l" for line in _tensor_lines(t, brief)) + '"'


_BREAK = '<BR ALIGN="LEFT"/>'  # ends a left-justified line of an HTML-like label


def _tensor_html(t: TensorData, brief: bool) -> str:
    return _BREAK.join(map(text, _tensor_lines(t, brief))) + _BREAK


# -- node labels ----------------------------------------------------------------------------

Row = str


@dataclass(frozen=True)
class Drawn:
    """One graph being drawn, with the facts its rows ask for per node, found once per
    drawing: its edges by source (the chain-rule step's, tracer.derivatives.chainrule) and
    the node outputs whose arriving gradient one edge carries alone (`carried`: written
    there, not again on the node)."""

    graph: Graph
    edges: EdgeIndex
    carried: frozenset[tuple[int, int]]
    checks: Mapping[int, Sequence[Check]]  # drawn node id -> the checks of its gradient

    @classmethod
    def of(cls, view: Collapsed, checks: Sequence[Check] = ()) -> Drawn:
        """The drawing of `view`, with the checks made after its pass (a backward graph)."""
        graph = view.graph
        on: dict[int, list[Check]] = {}
        if graph.kind == "backward" and checks:
            drawn_id = {full: i for i, full in enumerate(view.origin) if full is not None}
            for check in checks:
                if check.after == graph.number and check.node in drawn_id:
                    on.setdefault(drawn_id[check.node], []).append(check)
        return cls(graph, EdgeIndex.of(graph), _find_carried(graph), on)


RowMaker = Callable[[Node, Drawn, RenderOptions], list[Row]]


def _small(content: str, colour: str = "#333333") -> Row:
    return f'<TR><TD COLSPAN="2"><FONT POINT-SIZE="9" COLOR="{colour}">{content}</FONT></TD></TR>'


def _pair(key: str, t: TensorData, colour: str, brief: bool = False) -> Row:
    """A labelled tensor: a forward value (VALUE_COLOUR, SAVED_COLOUR) or a gradient, red
    when it is a problem (view.report's rule)."""
    bad = bad_gradient(t) if colour == GRAD_COLOUR else bad_value(t)
    colour = PROBLEM if bad else colour
    body = _tensor_html(t, brief)
    return (
        f'<TR><TD ALIGN="RIGHT" VALIGN="TOP"><FONT POINT-SIZE="9">{key}</FONT></TD>'
        f'<TD ALIGN="LEFT" BALIGN="LEFT"><FONT FACE="Courier" POINT-SIZE="9" '
        f'COLOR="{colour}">{body}</FONT></TD></TR>'
    )


def heading_row(node: Node, drawn: Drawn, options: RenderOptions) -> list[Row]:
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


def check_rows(node: Node, drawn: Drawn, options: RenderOptions) -> list[Row]:
    """The checks of the gradient this node holds, each a coloured row (see check_badge)."""
    return [
        f'<TR><TD COLSPAN="2" BGCOLOR="{AGREE_FILL if c.passed else DISAGREE_FILL}">'
        f'<FONT POINT-SIZE="9">{text(check_badge(c))}</FONT></TD></TR>'
        for c in drawn.checks.get(node.id, ())
    ]


def kind_rows(node: Node, drawn: Drawn, options: RenderOptions) -> list[Row]:
    """Shape and dtype (full view), AccumulateGrad under a leaf, "no grad" on a constant,
    and which pass made a node of a higher-order graph."""
    rows = []
    if options.full and node.shape is not None:
        rows.append(_type_row(node.dtype, node.shape))
    if node.kind == "leaf" and node.name:  # an unnamed leaf's heading says AccumulateGrad
        rows.append(_small(text(node.op)))
    if node.kind == "constant":
        rows.append(_small("no grad" if options.full else f"{shape_text(node.shape)} · no grad"))
    if node.made_by is not None:
        rows.append(_small(f"made by backward pass {node.made_by}"))
    return rows


@lru_cache(maxsize=1024)
def _type_row(dtype: str | None, shape: tuple[int, ...]) -> Row:
    """ "float32 [16, 3]": made once per dtype and shape (a model has a few, on every node)."""
    return _small(f"{text(dtype or '')} {shape_text(shape)}")


def value_rows(node: Node, drawn: Drawn, options: RenderOptions) -> list[Row]:
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
        on_edge = drawn.carried
        for i, grad in enumerate(node.grads):
            if grad is not None and (node.id, i) not in on_edge:  # written once: on its edge
                rows.append(
                    _pair("grad" if len(node.grads) == 1 else f"grad {i}", grad, GRAD_COLOUR)
                )
    return rows


def leaf_rows(node: Node, drawn: Drawn, options: RenderOptions) -> list[Row]:
    """A leaf's `.grad` after the pass (or torch.autograd.grad's result), or a warning."""
    if node.kind != "leaf" or drawn.graph.kind != "backward":
        return []
    brief = not options.full
    if node.leaf_grad is not None:
        if not _accumulated(node) and (node.id, 0) in drawn.carried:
            if node.grads[0] == node.leaf_grad:  # written once: on its edge
                return [_small(".grad = the gradient on its edge", GRAD_COLOUR)]
        return [_pair(".grad", node.leaf_grad, GRAD_COLOUR, brief)]
    if node.grads and node.grads[0] is not None:  # torch.autograd.grad's result
        if (node.id, 0) in drawn.carried:
            return [_small("grad = the gradient on its edge", GRAD_COLOUR)]
        return [_pair("grad", node.grads[0], GRAD_COLOUR, brief)]
    if node.received_no_gradient:
        return [_small("received no gradient", PROBLEM)]
    return []


def saved_rows(node: Node, drawn: Drawn, options: RenderOptions) -> list[Row]:
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
            rows.append(_pair(f"saved {name}", saved.tensor, SAVED_COLOUR, not options.full))
    return rows


def _accumulated(node: Node) -> bool:
    """The leaf's .grad held a gradient before this pass (a non-zero one): it is a sum."""
    before = node.grad_before
    return before is not None and not (before.finite and before.norm == 0)


def accumulated_rows(node: Node, drawn: Drawn, options: RenderOptions) -> list[Row]:
    """A leaf whose .grad was accumulated over passes: says so, with the previous .grad
    (this pass's gradient is on its edge, the sum in .grad above)."""
    if node.kind != "leaf" or drawn.graph.kind != "backward" or not _accumulated(node):
        return []
    assert node.grad_before is not None
    rows = [
        _small("accumulated: previous + this pass", GRAD_COLOUR),
        _pair("previous", node.grad_before, GRAD_COLOUR, not options.full),
    ]
    if (node.id, 0) not in drawn.carried and node.grads and node.grads[0] is not None:
        rows.append(_pair("this pass", node.grads[0], GRAD_COLOUR, not options.full))
    return rows


def module_rows(node: Node, drawn: Drawn, options: RenderOptions) -> list[Row]:
    """A collapsed module call: its parameter count (the gradients that entered and left
    it are on its edges)."""
    if node.kind != "module" or node.module is None:
        return []
    call = drawn.graph.modules[node.module]
    count = f"{call.params:,} parameter{'s' if call.params != 1 else ''}"
    return [_small(f"{count} · collapsed")]


# The chain-rule rows: a formula line is cut here (Graphviz cannot lay out an overwide node).
FORMULA_LIMIT = 90
FORMULA_COLOUR = "#3b3b8f"


def formula_rows(node: Node, drawn: Drawn, options: RenderOptions) -> list[Row]:
    """The chain-rule step per input that received a gradient, from torch's own
    derivatives table (tracer.derivatives.chainrule): `∂/∂self: grad · cos(self)   (self = z)`.
    Backward graphs only; a node whose class has no formula shows none."""
    if not options.explains or node.kind != "op" or drawn.graph.kind != "backward":
        return []
    found = steps(node, drawn.edges) or []
    return [_formula_row(step.line) for step in found]


@lru_cache(maxsize=4096)
def _formula_row(line: str) -> Row:
    """One chain-rule row; made once per line (nodes alike share their lines)."""
    return _small(text(line, FORMULA_LIMIT), FORMULA_COLOUR)


# The rows of a node's label, top to bottom.
NODE_ROWS: tuple[RowMaker, ...] = (
    heading_row,
    check_rows,
    kind_rows,
    value_rows,
    leaf_rows,
    saved_rows,
    accumulated_rows,
    module_rows,
    formula_rows,
)


def _find_carried(graph: Graph) -> frozenset[tuple[int, int]]:
    """The node outputs whose arriving gradient one edge (or the seed) carries alone."""
    arriving: dict[tuple[int, int], list[TensorData | None]] = {}
    for root, seed in zip(graph.roots, graph.seeds, strict=True):
        arriving.setdefault((root, 0), []).append(seed)
    for edge in graph.edges:
        arriving.setdefault((edge.dst, edge.dst_output), []).append(edge.grad)
    nodes = graph.nodes
    return frozenset(
        (dst, output)
        for (dst, output), grads in arriving.items()
        if len(grads) == 1
        and grads[0] is not None
        and output < len(nodes[dst].grads)
        and nodes[dst].grads[output] == grads[0]
    )


_TABLE = '<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="1">'


def node_label(node: Node, drawn: Drawn, options: RenderOptions) -> str:
    parts = [_TABLE]  # joined once (see the module docstring)
    for make in NODE_ROWS:
        parts += make(node, drawn, options)
    parts.append("</TABLE>>")
    return "".join(parts)


def _node_attributes(node: Node, graph: Graph, highlighted: bool, starts_here: bool) -> str:
    if node.kind == "leaf":
        fill = LEAF_FILL
    elif node.kind == "constant":
        fill = CONSTANT_FILL
    elif node.made_by is not None:
        fill = HIGHER_ORDER_FILL
    else:
        fill = MANUAL_FILL if graph.kind == "manual" else OP_FILL
    problem = (
        bad_gradient(node.leaf_grad)
        or any(map(bad_value, node.forward))
        or any(map(bad_gradient, node.grads))
    )
    unused = graph.kind == "backward" and node.received_no_gradient
    style = "rounded,filled,dashed" if unused else "rounded,filled"
    if highlighted:
        colour, width = "#000000", "6"
    elif starts_here:  # where a NaN, an Inf or an all-zero gradient starts (the heading says)
        colour, width = PROBLEM, "5"
    elif problem or unused:
        colour, width = PROBLEM, "2"
    else:
        colour, width = ("#999999" if node.kind == "constant" else "#555555"), "1"
    return f'color="{colour}" fillcolor="{fill}" penwidth={width} shape=box style="{style}"'


def _edge_attributes(edge: Edge, drawn: Drawn, brief: bool = False) -> str:
    """An edge's attributes: its gradient (under the input it feeds: `∂/∂self`) as a
    label, dashed to a constant."""
    if drawn.graph.nodes[edge.dst].kind == "constant":
        return 'arrowhead=none color="#999999" style=dashed'
    grad = edge.grad
    if grad is None:
        return 'color="#555555"'
    colour = PROBLEM if bad_gradient(grad) else GRAD_COLOUR
    # One f-string for the whole (see the module docstring).
    note = edge_note(edge, drawn.graph)
    how = "" if note is None else _edge_note_row(note)
    return (
        f'color="{colour}" fontcolor="{colour}" label={_EDGE_LABEL}'
        f"{_slot_head(slot_name(edge, drawn.edges))}{how}"
        f'<TR><TD ALIGN="LEFT" BALIGN="LEFT"><FONT COLOR="{colour}">{_tensor_html(grad, brief)}'
        "</FONT></TD></TR></TABLE></TD></TR></TABLE>>"
    )


@lru_cache(maxsize=1024)
def _edge_note_row(note: str) -> str:
    """The row saying how the chain rule reshaped an edge's gradient (see edge_note)."""
    return (
        f'<TR><TD ALIGN="LEFT"><FONT FACE="Helvetica" POINT-SIZE="9" COLOR="{FORMULA_COLOUR}">'
        f"{text(note)}</FONT></TD></TR>"
    )


# The blank column left of an edge's label: the labels of parallel edges (the two inputs
# of `torch.dot(x, x)`) and the edge's own line never touch.
LABEL_GAP = 10
# An edge label's tables up to its rows (the slot's name, then the gradient).
_EDGE_LABEL = (
    '<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="0"><TR>'
    f'<TD WIDTH="{LABEL_GAP}"></TD><TD><TABLE BORDER="0" CELLBORDER="0" '
    'CELLSPACING="0" CELLPADDING="1">'
)


@lru_cache(maxsize=1024)
def _slot_head(slot: str | None) -> str:
    """The row naming the input an edge feeds (a handful of names, on thousands of edges)."""
    if slot is None:
        return ""
    return (
        f'<TR><TD ALIGN="LEFT"><FONT FACE="Helvetica" POINT-SIZE="9">'
        f"<I>∂/∂{text(slot)}</I></FONT></TD></TR>"
    )


# -- the whole picture ----------------------------------------------------------------------


def _heading(recording: Recording, titles: list[str], notes: Sequence[str] = ()) -> str:
    """The picture's heading: the title (and a lone graph's), what a collapsed view leaves
    out (`notes`), one coloured row per check, then the problems."""
    rows = []
    for title in titles:
        rows.append(f"<TR><TD><B>{text(title)}</B></TD></TR>")
    for note in notes:
        rows.append(f'<TR><TD><FONT POINT-SIZE="10" COLOR="#3d4b5c">{text(note)}</FONT></TD></TR>')
    grades, firsts = recording_grades(recording)  # in the engine's order
    if len(grades) > HEADING_CHECKS:  # each is on its node: the heading has the sheet
        fill = AGREE_FILL if all(g.check.passed for g in grades) else DISAGREE_FILL
        brief = checks_brief([g.check for g in grades]) + ", each drawn on its node"
        rows.append(f'<TR><TD BGCOLOR="{fill}">{text(brief)}</TD></TR>')
        rows.append(f"<TR><TD>{_grade_table(grades)}</TD></TR>")
        grades = []
    for grade in grades:
        check = grade.check
        fill = AGREE_FILL if check.passed else DISAGREE_FILL
        line = check_line(check) + (" (inherited from above)" if grade.inherits else "")
        rows.append(f'<TR><TD BGCOLOR="{fill}">{text(line)}</TD></TR>')
    for first in firsts:
        rows.append(f"<TR><TD><B>{text(first_disagreement_text(first))}</B></TD></TR>")
    for explained in explanations(recording):  # a None .grad, the first NaN: what and why
        rows.append(f'<TR><TD><FONT COLOR="{PROBLEM}"><B>{text(explained)}</B></FONT></TD></TR>')
    found = problems(recording)
    for problem in found[:PROBLEM_ROWS]:
        rows.append(f'<TR><TD><FONT COLOR="{PROBLEM}">⚠ {text(problem)}</FONT></TD></TR>')
    if len(found) > PROBLEM_ROWS:
        more = f"… and {len(found) - PROBLEM_ROWS} more problems (see the report)"
        rows.append(f'<TR><TD><FONT COLOR="{PROBLEM}">{more}</FONT></TD></TR>')
    if not rows:
        return ""
    return '<<TABLE BORDER="0" CELLBORDER="0" CELLPADDING="4">' + "".join(rows) + "</TABLE>>"


def _grade_table(grades: Sequence[Grade]) -> str:
    """The grade sheet as a small table (the heading's legend): a row per check."""
    head = "".join(f'<TD ALIGN="LEFT"><B>{text(c)}</B></TD>' for c in GRADE_COLUMNS)
    rows = [f"<TR>{head}</TR>"]
    for grade in grades:
        fill = AGREE_FILL if grade.check.passed else DISAGREE_FILL
        rows.append(
            "<TR>"
            + "".join(
                f'<TD ALIGN="LEFT" BGCOLOR="{fill}">{text(c, NAME_LIMIT)}</TD>'
                for c in grade_cells(grade)
            )
            + "</TR>"
        )
    return (
        '<FONT POINT-SIZE="10"><TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" '
        'CELLPADDING="2">' + "".join(rows) + "</TABLE></FONT>"
    )


def _graph_lines(
    view: Collapsed, index: int, options: RenderOptions, cluster: bool, checks: Sequence[Check]
) -> list[str]:
    graph = view.graph
    prefix = f"g{index}"
    indent = "\t\t" if cluster else "\t"
    # DOT names follow the full graph: node n's name is the same collapsed or not (so that
    # `highlight` keeps meaning it), and a box is named by its module call.
    names = [
        f"{prefix}n{full}" if full is not None else f"{prefix}m{graph.nodes[i].module}"
        for i, full in enumerate(view.origin)
    ]
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
        colour = PROBLEM if bad_gradient(seed) else GRAD_COLOUR
        lines.append(f'{indent}{prefix}seed{root} [label="" shape=point width=0.08]')
        lines.append(
            f'{indent}{prefix}seed{root} -> {names[root]} [color="{colour}" '
            f'fontcolor="{colour}" label={_edge_label(seed, not options.full)}]'
        )
    highlight = options.highlight
    started = set() if view.collapsed else {s.node for s in starts(graph)}
    drawn = Drawn.of(view, checks)
    # Each node's line is made with its final indentation, one tab deeper than the module
    # cluster it sits in (nested as the calls were: a call of level L is L - 1 tabs in).
    pads = [indent + "\t" * level for level in levels(graph.modules)]
    node_lines: dict[int | None, list[str]] = {}  # by the cluster (module call) they are in
    for node in graph.nodes:
        full = view.origin[node.id]
        attributes = _node_attributes(node, graph, (index, full) in highlight, node.id in started)
        label = node_label(node, drawn, options)
        home = _home(node, graph, view)
        pad = indent if home is None else pads[home]
        node_lines.setdefault(home, []).append(
            f"{pad}{names[node.id]} [label={label} {attributes}]"
        )
    lines += node_lines.pop(None, [])
    lines += _module_clusters(graph, node_lines, indent, prefix)
    brief = not options.full
    for edge in graph.edges:
        attributes = _edge_attributes(edge, drawn, brief)
        lines.append(f"{indent}{names[edge.src]} -> {names[edge.dst]} [{attributes}]")
    if cluster:
        lines.append("\t}")
    return lines


def _home(node: Node, graph: Graph, view: Collapsed) -> int | None:
    """The module call whose cluster a node is drawn in: its own (expanded) call; a box
    sits in its parent's cluster."""
    call = node.module
    if call is not None and node.kind == "module":
        call = graph.modules[call].parent
    return call if call is None or call in view.expanded else None


def _module_clusters(
    graph: Graph, node_lines: dict[int | None, list[str]], indent: str, prefix: str
) -> list[str]:
    """One cluster per expanded module call that holds something, nested as the calls
    were, titled "layers.3 · TransformerEncoderLayer"; `node_lines` are indented already."""
    children: dict[int | None, list[int]] = {}
    for call in graph.modules:
        children.setdefault(call.parent, []).append(call.id)
    repeated = repeated_modules(graph.modules)
    holds: dict[int, bool] = {}
    for call in reversed(graph.modules):  # children after their parents: bottom up
        holds[call.id] = call.id in node_lines or any(holds[c] for c in children.get(call.id, ()))

    def cluster(call_id: int, depth: int) -> list[str]:
        pad = indent + "\t" * depth
        title = text(module_title(graph.modules[call_id], graph.modules, repeated), NAME_LIMIT)
        out = [
            f"{pad}subgraph cluster_{prefix}m{call_id} {{",
            f'{pad}\tlabel=<<FONT POINT-SIZE="10">{title}</FONT>> labeljust=l',
            f'{pad}\tcolor="#9aa5b1" fontcolor="#3d4b5c" style="rounded,dashed"',
        ]
        out += node_lines.get(call_id, [])
        for child in children.get(call_id, ()):
            if holds[child]:
                out += cluster(child, depth + 1)
        out.append(pad + "}")
        return out

    lines = []
    for top in children.get(None, ()):
        if holds[top]:
            lines += cluster(top, 0)
    return lines


def views(recording: Recording, options: RenderOptions | None = None) -> list[Collapsed]:
    """Each graph as drawn: collapsed to `options.depth`, around `options.focus`, or to fit
    the slide budget (see tracer.view.collapse). A focus no graph has is a TracerError."""
    options = options or RenderOptions()
    focus = options.focus
    if focus is not None and not any(c.name == focus for g in recording.graphs for c in g.modules):
        with_modules = [g for g in recording.graphs if g.modules]
        if not with_modules:
            raise TracerError(f"--focus {focus}: no nn.Module was called in the traced code")
        collapse(with_modules[0], focus=focus)  # raises, naming the modules there are
    out = []
    for graph in recording.graphs:
        manual_box = collapse_manual(graph, options.depth)
        if manual_box is not None:
            out.append(manual_box)
            continue
        has_focus = focus is not None and any(c.name == focus for c in graph.modules)
        out.append(
            collapse(
                graph,
                depth=options.depth,
                focus=focus if has_focus else None,
                budget=options.budget,
            )
        )
    return out


def notes(recording: Recording, options: RenderOptions | None = None) -> list[str]:
    """For the terminal: what each collapsed graph leaves out, and how to see more."""
    found = (collapse_note(v, "command") for v in views(recording, options))
    return [note for note in found if note]


def dot_source(recording: Recording, options: RenderOptions | None = None) -> str:
    """The Recording as DOT source: deterministic, the same text for the same recording.

    One graph is drawn without a cluster around it (its title joins the heading): a
    cluster costs Graphviz's layout dearly on large graphs. A graph of a real model is
    drawn with a cluster per module call, collapsed as `options` say (see `views`).
    """
    with paused_gc():  # many small objects, none cyclic: see tracer.model.collector
        return "\n".join(_lines(recording, options))


def dot_utf8(recording: Recording, options: RenderOptions | None = None) -> bytes:
    """`dot_source(recording, options).encode("utf-8")`, for a file or for Graphviz, with
    a third less memory: a large graph's text runs to hundreds of megabytes as a str (two
    bytes a character, for the few ∂ or ‖ on each line) and half that in UTF-8. Each line
    is encoded and let go in turn, so that its memory holds the next lines' bytes, and the
    whole is never a str."""
    with paused_gc():
        lines = _lines(recording, options)
        encoded = []
        for i, line in enumerate(lines):
            encoded.append(line.encode("utf-8"))
            lines[i] = ""
        return b"\n".join(encoded)


def _lines(recording: Recording, options: RenderOptions | None) -> list[str]:
    """The DOT source's lines (see `dot_source`), and an empty one for its final newline."""
    options = options or RenderOptions()
    shown = views(recording, options)
    single = len(recording.graphs) == 1 and recording.forward is None
    titles = [recording.title] if recording.title else []
    if single:
        titles.append(graph_title(recording.graphs[0]))
    collapsed = [*options.notes, *(note for note in (collapse_note(v) for v in shown) if note)]
    lines = [
        "digraph trace {",
        "\tfontname=Helvetica labelloc=t nodesep=0.3 rankdir=TB ranksep=0.45",
    ]
    heading = _heading(recording, titles, collapsed)
    if heading:
        lines.append(f"\tlabel={heading}")
    lines += [
        "\tnode [fontname=Helvetica fontsize=11]",
        "\tedge [arrowsize=0.7 fontname=Courier fontsize=9]",
    ]
    for i, view in enumerate(shown):
        lines += _graph_lines(view, i, options, not single, recording.checks)
    if recording.forward is not None:
        lines += _forward_lines(recording.forward, options)
    # The closing brace, and after it the final newline: in the one join.
    lines += ["}", ""]
    return lines


# -- forward mode beside reverse mode (tracer.model.forward) ----------------------------------


def _forward_lines(forward: ForwardMode, options: RenderOptions) -> list[str]:
    """Forward mode as a cluster beside the reverse graph, flowing forward: the inputs
    at the top with their part of v, then each op in the order it ran with its value (full
    view) and its `tangent`; the title states J·v's check and the cost contrast."""
    brief = not options.full
    check = forward.check
    fill = AGREE_FILL if check is None or check.passed else DISAGREE_FILL
    title = f"<B>{text(forward_title(forward))}</B>" + "".join(
        f'<BR/><FONT POINT-SIZE="10">{text(line)}</FONT>' for line in forward_cost_lines(forward)
    )
    lines = [
        "\tsubgraph cluster_forward {",
        f'\t\tlabel=<<TABLE BORDER="0" CELLPADDING="3"><TR><TD>{title}</TD></TR>'
        f'<TR><TD BGCOLOR="{fill}">{text(forward_check_line(forward))}</TD></TR></TABLE>>',
        f'\t\tcolor="{TANGENT_COLOUR}" fontcolor="#333333" style="rounded,dashed"',
    ]
    for k, given in enumerate(forward.inputs):
        rows = [
            f'<TR><TD COLSPAN="2"><B>{text(given.name, NAME_LIMIT)}</B></TD></TR>',
            _pair("tangent", given.tangent, TANGENT_COLOUR, brief),
        ]
        lines.append(
            f'\t\tfwi{k} [label={_TABLE}{"".join(rows)}</TABLE>> color="#555555" '
            f'fillcolor="{LEAF_FILL}" shape=box style="rounded,filled"]'
        )
    for step in forward.steps:
        name = f"  <B>{text(step.name, NAME_LIMIT)}</B>" if step.name else ""
        rows = [f'<TR><TD COLSPAN="2">{text(step.op)}{name}</TD></TR>']
        if options.full:
            rows.append(_pair("value", step.value, VALUE_COLOUR))
        rows.append(_pair("tangent", step.tangent, TANGENT_COLOUR, brief))
        width = 2 if step.id == forward.output else 1
        lines.append(
            f'\t\tfws{step.id} [label={_TABLE}{"".join(rows)}</TABLE>> color="#555555" '
            f'fillcolor="{OP_FILL}" penwidth={width} shape=box style="rounded,filled"]'
        )
    for step in forward.steps:
        for k in step.inputs:
            lines.append(f'\t\tfwi{k} -> fws{step.id} [color="{TANGENT_COLOUR}"]')
        for before in step.after:
            lines.append(f'\t\tfws{before} -> fws{step.id} [color="{TANGENT_COLOUR}"]')
    lines.append("\t}")
    return lines
