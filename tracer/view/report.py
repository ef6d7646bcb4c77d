"""What a reader should not miss, in words: the checks and the problems of a recording
(NaN, Inf, leaves without gradient), and what a collapsed view leaves out."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

from tracer.derivatives.chainrule import EdgeIndex, formula_names, slot_names, steps
from tracer.model.explain import Element, NoGradient, Start, ZeroCause
from tracer.model.graph import Edge, Graph, Node, Recording
from tracer.model.location import Locator
from tracer.model.tensor import TensorData
from tracer.view.collapse import SLIDE_ROWS, Collapsed
from tracer.view.text import (
    counts_text,
    format_check,
    format_forward,
    graph_name,
    graph_title,
    module_title,
    no_gradient_text,
    node_title,
    start_text,
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
    return counts_text(t.nan, t.inf)


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


def all_zero(t: TensorData | None) -> bool:
    """A gradient that is all zero (and not empty, and read)."""
    return t is not None and t.note is None and t.finite and t.numel > 0 and t.min == 0 == t.max


def _first_index(values: tuple[float, ...], bad: Callable[[float], bool]) -> int | None:
    return next((i for i, v in enumerate(values) if bad(v)), None)


def _unravel(flat: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    index = []
    for size in reversed(shape):
        index.append(flat % size if size else 0)
        flat = flat // size if size else 0
    return tuple(reversed(index))


def _inputs(node: Node, graph: Graph, index: EdgeIndex) -> dict[str, TensorData]:
    """The forward values a node's formula names: "result" (its own output), and each
    input by the formula's name for its slot ("self", "other"), where the recording has
    them. A constant's position among the op's tensor arguments stands for its slot."""
    found: dict[str, TensorData] = {}
    if node.forward and node.forward[0] is not None:
        found["result"] = node.forward[0]
    names = slot_names(node, index)
    for edge in index.by_source.get(node.id, ()):
        taken = graph.nodes[edge.dst]
        value = taken.forward[edge.dst_output] if edge.dst_output < len(taken.forward) else None
        if value is not None and names is not None and edge.slot < len(names):
            found.setdefault(names[edge.slot], value)
    return found


def _elements(
    values: dict[str, TensorData], names: Sequence[str], at: int, shape: tuple[int, ...]
) -> tuple[Element, ...]:
    """Each named value at the flat index `at` of a tensor of `shape` (a scalar's one
    number wherever), kept when it explains a NaN or Inf: zero, or itself not finite."""
    size = math.prod(shape)
    found = []
    for name in names:
        t = values.get(name)
        if t is None or t.values is None or t.numel not in (1, size):
            continue
        v = t.values[0 if t.numel == 1 else at]
        if v == 0 or not math.isfinite(v):
            found.append(Element(name, v, () if t.numel == 1 else _unravel(at, t.shape)))
    return tuple(found)


def _first_sent(
    graph: Graph,
    bad: Callable[[TensorData | None], bool],
    received_fine: Callable[[Node], bool],
) -> Edge | None:
    """The edge down which the earliest node in the engine's order sent a gradient `bad`
    says is bad, while what the node received was fine (`received_fine`)."""
    nodes = graph.nodes
    made = [
        edge
        for edge in graph.edges
        if bad(edge.grad) and nodes[edge.src].step is not None and received_fine(nodes[edge.src])
    ]
    return min(made, key=lambda e: nodes[e.src].step or 0) if made else None


def _formula(node: Node, index: EdgeIndex, slot: int) -> str | None:
    """torch's chain-rule step for `slot` of `node`, bound to the user's names."""
    return next((s.line for s in steps(node, index) or () if s.slot == slot), None)


def first_non_finite(graph: Graph) -> Start | None:
    """Where a backward pass's first NaN or Inf gradient was made: the earliest node in
    the engine's order that sent one while every gradient it received was finite, with
    the chain-rule step torch used there and the values in it that explain it (result = 0
    at [0]), where the recording has them."""
    if graph.kind != "backward":
        return None
    edge = _first_sent(graph, bad_gradient, lambda n: not any(map(bad_gradient, n.grads)))
    if edge is None:
        return None
    sender, grad, index = graph.nodes[edge.src], edge.grad, EdgeIndex.of(graph)
    assert grad is not None
    formula = _formula(sender, index, edge.slot)
    elements: tuple[Element, ...] = ()
    at = None if grad.values is None else _first_index(grad.values, _not_finite)
    if at is not None:
        names = [n for n in formula_names(sender, index, edge.slot) if n != "grad"]
        elements = _elements(_inputs(sender, graph, index), names, at, grad.shape)
    return Start("gradient", sender.id, edge.dst, grad.nan, grad.inf, formula, elements)


# Ops that write a value the code gave them (`masked_fill(mask, -inf)`, `where`, an index
# put): an infinity they make is meant, as a causal mask's -inf is. Any other op that turns
# finite inputs into an infinity overflowed (exp of a large number, a division by zero).
_WRITES_A_GIVEN_VALUE = ("MaskedFill", "Fill", "IndexFill", "IndexPut", "Where", "Scatter")


def _made_non_finite(node: Node) -> bool:
    """Whether `node`'s forward output holds a NaN, or an infinity it did not write as told."""
    if any(map(bad_value, node.forward)):
        return True
    return any(t is not None and t.inf for t in node.forward) and not node.op.startswith(
        _WRITES_A_GIVEN_VALUE
    )


def first_nan_value(graph: Graph) -> Start | None:
    """The first NaN (or overflow to Inf) of the forward pass: among the ops whose output
    holds one while none of their inputs did, the one the engine ran last (the first to
    run forward), with its inputs at the first such element (self = -1 at [0]). An
    infinity written as told (a causal mask's -inf, see _WRITES_A_GIVEN_VALUE) is not one."""
    if graph.kind != "backward":
        return None
    nodes = graph.nodes
    index = EdgeIndex.of(graph)
    made = [
        node
        for node in nodes
        if node.kind == "op"
        and _made_non_finite(node)
        and not any(
            t is not None and not t.finite
            for e in index.by_source.get(node.id, ())
            for t in nodes[e.dst].forward
        )
    ]
    if not made:
        return None
    node = max(made, key=lambda n: (n.step or 0, -n.id))
    value = next(t for t in node.forward if t is not None and not t.finite)
    elements: tuple[Element, ...] = ()
    odd = math.isnan if value.nan else _not_finite
    at = None if value.values is None else _first_index(value.values, odd)
    if at is not None:
        inputs = _inputs(node, graph, index)
        inputs.pop("result", None)
        elements = _elements(inputs, list(inputs), at, value.shape)
        if not elements:  # nothing zero or infinite: the inputs as they were
            elements = tuple(
                Element(name, t.values[0 if t.numel == 1 else at], _unravel(at, t.shape))
                for name, t in inputs.items()
                if t.values is not None and t.numel in (1, value.numel)
            )
    return Start("value", node.id, None, value.nan, value.inf, None, elements)


def first_zero(graph: Graph) -> Start | None:
    """Where the gradient of a leaf that received an all-zero one became zero: the earliest
    node in the engine's order that sent an all-zero gradient while what it received was
    not, with why where the recording tells (a ReLU whose every input was ≤ 0). None when
    no leaf's gradient is all zero: a zero on one path among others is no problem."""
    if graph.kind != "backward":
        return None
    if not any(
        n.kind == "leaf" and n.step is not None and any(map(all_zero, n.grads)) for n in graph.nodes
    ):
        return None
    edge = _first_sent(
        graph, all_zero, lambda n: any(g is not None and not all_zero(g) for g in n.grads)
    )
    if edge is None:
        return None
    sender = graph.nodes[edge.src]
    cause: ZeroCause | None = None
    if sender.op == "ReluBackward0" and sender.forward and all_zero(sender.forward[0]):
        cause = "inputs ≤ 0"
    formula = _formula(sender, EdgeIndex.of(graph), edge.slot)
    return Start("zero", sender.id, edge.dst, formula=formula, cause=cause)


def starts(graph: Graph) -> list[Start]:
    """Where the problems of a backward pass start: its first NaN value, its first NaN or
    Inf gradient, where a leaf's all-zero gradient became zero."""
    found = (first_nan_value(graph), first_non_finite(graph), first_zero(graph))
    return [s for s in found if s is not None]


def _not_finite(v: float) -> bool:
    return not math.isfinite(v)


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
    as None, with why, and where each pass's problems start (see `starts`)."""
    locate = locate or Locator()
    found = [no_gradient_line(why, locate) for why in recording.no_gradients if not why.again]
    for graph in recording.graphs:
        for start in starts(graph):
            where = graph.nodes[start.node].where
            at = None if where is None else locate(*where).spoken()
            found.append(start_text(start, graph, at))
    return found


def format_report(recording: Recording) -> str:
    """Every check, then every problem, then what was not recorded: what the CLI prints
    after a trace."""
    parts = [format_check(c) for c in recording.checks]
    parts.extend(f"⚠ {p}" for p in problems(recording))
    parts.extend(f"⚠ {f}" for f in explanations(recording))
    parts.extend(f"note: {n}" for n in unrecorded_notes(recording))
    if recording.forward is not None:
        parts.append(format_forward(recording.forward))
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
