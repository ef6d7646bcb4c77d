"""What a reader should not miss, in words: the checks and the problems of a recording
(NaN, Inf, leaves without gradient), and what a collapsed view leaves out."""

from __future__ import annotations

from typing import Literal

from tracer.derivatives.chainrule import EdgeIndex, steps
from tracer.model.explain import NoGradient
from tracer.model.graph import Graph, Node, Recording
from tracer.model.location import Locator
from tracer.model.tensor import TensorData
from tracer.view.collapse import SLIDE_ROWS, Collapsed
from tracer.view.text import (
    format_check,
    graph_name,
    graph_title,
    module_title,
    no_gradient_text,
    node_title,
    unrecorded_text,
)


def bad_value(t: TensorData | None) -> bool:
    """A forward value that is a problem: one holding a NaN. An infinity can be meant (a
    causal mask's -inf) and is not one."""
    return t is not None and t.nan > 0


def bad_gradient(t: TensorData | None) -> bool:
    """A gradient that is a problem: one holding a NaN or an infinity."""
    return t is not None and not t.finite


def _counts(t: TensorData) -> str:
    parts = [f"{n} {what}" for n, what in ((t.nan, "NaN"), (t.inf, "Inf")) if n]
    return " and ".join(parts)


def problems(recording: Recording) -> list[str]:
    """What a reader should not miss: a NaN in a forward value, a NaN or Inf in a gradient,
    and leaves left without the gradient they were asked for.

    A NaN or Inf is named once, where it starts, with the module call it occurs in: a value
    where none of the op's inputs held one, a gradient where it arrives from senders whose
    own arriving gradients were finite (or on the edge that made it, when its destination
    is not named already). Where it flows on from there is the same problem.
    """
    found: list[str] = []
    for graph in recording.graphs:
        where = graph_name(graph)
        inputs: dict[int, list[int]] = {}  # node -> the nodes its op took (its edges' ends)
        senders: dict[int, list[int]] = {}  # node -> the nodes that sent it gradients
        for edge in graph.edges:
            inputs.setdefault(edge.src, []).append(edge.dst)
            senders.setdefault(edge.dst, []).append(edge.src)
        nodes = graph.nodes
        arrived_bad = {n.id for n in nodes if any(map(bad_gradient, n.grads))}
        named: set[int] = set()  # nodes whose arriving gradient is named
        for node in nodes:
            title, inside = node_title(node), _inside(node, graph)
            taken = [nodes[i] for i in inputs.get(node.id, ())]
            if any(map(bad_value, node.forward)) and not any(
                bad_value(t) for child in taken for t in child.forward
            ):
                nan = sum(t.nan for t in node.forward if t is not None)
                found.append(f"{nan} NaN in the value of {title}{inside}, {where}")
            bad = next((t for t in node.grads if bad_gradient(t)), None)
            if bad_gradient(node.leaf_grad):
                bad = node.leaf_grad  # a leaf's .grad: what the user reads
            if bad is not None and not any(s in arrived_bad for s in senders.get(node.id, ())):
                named.add(node.id)
                what = f"{title}.grad" if node.kind == "leaf" else f"the gradient of {title}"
                found.append(f"{_counts(bad)} in {what}{inside}, {where}")
            if graph.kind == "backward" and node.received_no_gradient:
                found.append(f"{title} received no gradient (unused input?){inside}, {where}")
        for edge in graph.edges:
            if (
                bad_gradient(edge.grad)
                and edge.src not in arrived_bad
                and edge.dst not in named
                and edge.dst not in arrived_bad
            ):
                assert edge.grad is not None
                src, dst = node_title(nodes[edge.src]), node_title(nodes[edge.dst])
                inside = _inside(nodes[edge.src], graph)
                found.append(
                    f"{_counts(edge.grad)} in the gradient from {src} to {dst}{inside}, {where}"
                )
    return found


def first_non_finite(graph: Graph) -> str | None:
    """Where a backward pass's first NaN or Inf gradient was made: the earliest node in
    the engine's order that sent one while every gradient it received was finite, with
    the chain-rule step torch used there ("first non-finite gradient: SqrtBackward0 (step
    3) sent 1 Inf to x; torch used ∂/∂self: grad / (2 · result)   (self = x)")."""
    if graph.kind != "backward":
        return None
    nodes = graph.nodes
    made = [
        edge
        for edge in graph.edges
        if bad_gradient(edge.grad)
        and nodes[edge.src].step is not None
        and not any(map(bad_gradient, nodes[edge.src].grads))
    ]
    if not made:
        return None
    edge = min(made, key=lambda e: nodes[e.src].step or 0)
    sender, receiver = nodes[edge.src], nodes[edge.dst]
    assert edge.grad is not None
    text = (
        f"first non-finite gradient: {node_title(sender)} (step {sender.step}) sent "
        f"{_counts(edge.grad)} to {node_title(receiver)}"
    )
    formula = next(
        (s.line for s in steps(sender, EdgeIndex.of(graph)) or () if s.slot == edge.slot), None
    )
    return text + (f"; torch used {formula}" if formula else "")


def _inside(node: Node, graph: Graph) -> str:
    """ " in layers.3 · Linear": the module call that made the node; "" outside any."""
    if node.module is None or node.module >= len(graph.modules):
        return ""
    return f" in {module_title(graph.modules[node.module], graph.modules)}"


def unrecorded_notes(recording: Recording, locate: Locator | None = None) -> list[str]:
    """One line per place in the user's code where passes ran that are not recorded."""
    locate = locate or Locator()
    notes = []
    for entry in recording.unrecorded:
        where = None if entry.source is None else locate(*entry.source)
        notes.append(unrecorded_text(entry, None if where is None else where.spoken()))
    return notes


def no_gradient_line(why: NoGradient, locate: Locator | None = None) -> str:
    """Why a `.grad` is None, with the lines of the cut and of the read spoken as the user
    knows them ("train.py:4", "cell 2, line 3")."""
    locate = locate or Locator()
    cut_at = None if why.cut is None or why.cut.where is None else locate(*why.cut.where)
    read_at = None if why.where is None else locate(*why.where)
    return no_gradient_text(
        why,
        None if cut_at is None else cut_at.spoken(),
        None if read_at is None else read_at.spoken(),
    )


def explanations(recording: Recording, locate: Locator | None = None) -> list[str]:
    """What the recording explains beyond its problems: each `.grad` the user's code read
    as None, with why (and, see first_non_finite, where a gradient became NaN or Inf)."""
    found = [no_gradient_line(why, locate) for why in recording.no_gradients if not why.again]
    found.extend(f for g in recording.graphs if (f := first_non_finite(g)) is not None)
    return found


def format_report(recording: Recording) -> str:
    """Every check, then every problem, then what was not recorded: what the CLI prints
    after a trace."""
    parts = [format_check(c) for c in recording.checks]
    parts.extend(f"⚠ {p}" for p in problems(recording))
    parts.extend(f"⚠ {f}" for f in explanations(recording))
    parts.extend(f"note: {n}" for n in unrecorded_notes(recording))
    return "\n".join(parts)


def collapse_note(view: Collapsed, how: Literal["picture", "command"] = "picture") -> str | None:
    """What a collapsed view leaves out and how to see it; None when nothing is collapsed.

    picture: for the heading; command: for the terminal, with the pass it is about.
    """
    if not view.collapsed:
        return None
    graph = view.graph
    if view.manual_box:
        return (
            f"{graph_title(graph)}: {view.full_size:,} nodes drawn as one box; "
            "to see them: --depth all"
            + (" (from Python: RenderOptions(depth=EVERY_DEPTH))" if how == "picture" else "")
        )
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
