"""The grade sheet of a backward pass: its checks in the engine's order, which is the order a
student derives the gradients by hand (from the loss back to the inputs), and the first
disagreement, where a wrong hand-derived gradient starts.

A check disagrees "first" when every check upstream of its node (the nodes that send
gradient into it, transitively: what a student derived before it) agrees; the checks that
disagree below it inherit its error, since a hand derivation builds each gradient from the
ones above it. Of several such starts (on parallel branches) the earliest in the engine's
order is the first disagreement.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tracer.derivatives.chainrule import EdgeIndex, steps
from tracer.model.check import Check
from tracer.model.graph import Graph, Node, Recording
from tracer.view.text import format_error, node_title, shape_text


@dataclass(frozen=True)
class Grade:
    """One check on the sheet: the node it concerns (None when its tensor is not in the
    pass), whether a disagreement starts there, or is inherited from one upstream."""

    check: Check
    node: Node | None
    inherits: bool = False
    starts: bool = False


@dataclass(frozen=True)
class FirstDisagreement:
    """Where the first wrong gradient starts, and the chain-rule steps torch used to
    compute that gradient (one per edge into the node: "MulBackward0 ∂/∂self: …")."""

    grade: Grade
    formulas: tuple[str, ...]


def grade_sheet(graph: Graph, checks: Sequence[Check]) -> list[Grade]:
    """The checks made after backward pass `graph`, in the engine's order of their nodes
    (checks of tensors outside the pass last, as made), the inherited ones marked."""
    mine = [c for c in checks if graph.kind == "backward" and c.after == graph.number]
    nodes = graph.nodes

    def node_of(check: Check) -> Node | None:
        return nodes[check.node] if check.node is not None and check.node < len(nodes) else None

    def order(item: tuple[int, Check]) -> tuple[int, int]:
        node = node_of(item[1])
        return (
            node.step if node is not None and node.step is not None else len(nodes) + 1,
            item[0],
        )

    ordered = [c for _, c in sorted(enumerate(mine), key=order)]
    starts = {id(c) for c in _starts(graph, ordered)}
    below = _below(graph, [c.node for c in ordered if id(c) in starts and c.node is not None])
    return [
        Grade(
            c,
            node_of(c),
            inherits=not c.passed and id(c) not in starts and c.node in below,
            starts=id(c) in starts,
        )
        for c in ordered
    ]


def first_disagreement(graph: Graph, grades: Sequence[Grade]) -> FirstDisagreement | None:
    """The earliest check that disagrees while every check upstream of it agrees (the
    sheet is in the engine's order: see `grade_sheet`)."""
    first = next((g for g in grades if g.starts), None)
    if first is None:
        return None
    formulas: list[str] = []
    if first.node is not None:
        index = EdgeIndex.of(graph)
        for edge in graph.edges:
            if edge.dst != first.node.id:
                continue
            sender = graph.nodes[edge.src]
            for step in steps(sender, index) or ():
                if step.slot == edge.slot:
                    formulas.append(f"{sender.op} {step.line}")
    return FirstDisagreement(first, tuple(dict.fromkeys(formulas)))


def _starts(graph: Graph, checks: Sequence[Check]) -> list[Check]:
    """The disagreeing checks on nodes none of whose upstream checks disagree; a
    disagreeing check of a tensor outside the pass is a start of its own."""
    failing = [c for c in checks if not c.passed]
    failing_nodes = {c.node for c in failing if c.node is not None}
    senders: dict[int, list[int]] = {}
    for edge in graph.edges:
        senders.setdefault(edge.dst, []).append(edge.src)
    found = []
    for check in failing:
        if check.node is None:
            found.append(check)
            continue
        upstream = _reach(check.node, senders) - {check.node}
        if not upstream & failing_nodes:
            found.append(check)
    return found


def _below(graph: Graph, starts: Sequence[int]) -> set[int]:
    """Every node the gradient of these nodes flows on to (themselves excluded)."""
    receivers: dict[int, list[int]] = {}
    for edge in graph.edges:
        receivers.setdefault(edge.src, []).append(edge.dst)
    found: set[int] = set()
    for start in starts:
        found |= _reach(start, receivers) - {start}
    return found


def _reach(start: int, neighbours: dict[int, list[int]]) -> set[int]:
    seen, queue = {start}, [start]
    while queue:
        for n in neighbours.get(queue.pop(), ()):
            if n not in seen:
                seen.add(n)
                queue.append(n)
    return seen


# -- in words ------------------------------------------------------------------------------

GRADE_COLUMNS = ("step", "name", "shape", "exact", "close", "largest error")


def grade_cells(grade: Grade) -> tuple[str, ...]:
    """One row of the sheet, a text per column (GRADE_COLUMNS)."""
    check, node = grade.check, grade.node
    step = "" if node is None or node.step is None else str(node.step)
    shape = shape_text(node.shape) if node is not None else ""
    if check.problem:
        return (step, check.name, shape, "✗", "✗", check.problem)
    exact = "✓" if check.bit_exact else "✗"
    close = "✓" if check.passed else ("✗ (inherited)" if grade.inherits else "✗")
    largest = "0" if check.bit_exact else format_error(check.max_abs)
    return (step, check.name, shape, exact, close, largest)


def first_disagreement_text(first: FirstDisagreement) -> str:
    """ "first disagreement: logits (step 7, largest error 0.31); torch used
    SubBackward0 ∂/∂self: grad   (self = logits)"."""
    grade = first.grade
    where = []
    if grade.node is not None and grade.node.step is not None:
        where.append(f"step {grade.node.step}")
    where.append(f"largest error {format_error(grade.check.max_abs)}")
    text = f"first disagreement: {grade.check.name} ({', '.join(where)})"
    if first.formulas:
        text += "; torch used " + "; ".join(first.formulas)
    elif grade.node is not None:
        text += f" at {node_title(grade.node)}"
    return text


def format_grade_sheet(graph: Graph, checks: Sequence[Check]) -> str:
    """The sheet as aligned text for the terminal: a row per check, then the first
    disagreement when there is one."""
    grades = grade_sheet(graph, checks)
    rows = [GRADE_COLUMNS, *(grade_cells(g) for g in grades)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(GRADE_COLUMNS))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    first = first_disagreement(graph, grades)
    if first is not None:
        lines.append(first_disagreement_text(first))
    return "\n".join(lines)


def recording_grades(recording: Recording) -> tuple[list[Grade], list[FirstDisagreement]]:
    """Every check of a recording, pass by pass in the engine's order (checks after no
    pass of it at the end, as made), and each pass's first disagreement."""
    grades: list[Grade] = []
    firsts: list[FirstDisagreement] = []
    placed: set[int] = set()
    for graph in recording.backward_graphs():
        sheet = grade_sheet(graph, recording.checks)
        grades += sheet
        placed.update(id(g.check) for g in sheet)
        first = first_disagreement(graph, sheet)
        if first is not None:
            firsts.append(first)
    grades += [Grade(c, None) for c in recording.checks if id(c) not in placed]
    return grades, firsts
