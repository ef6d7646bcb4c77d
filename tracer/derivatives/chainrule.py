"""The chain-rule step of each drawn node: which input each edge feeds, and its formula.

Plain data in (a `Graph`'s `Node`s and `Edge`s), text out; the formulas themselves come
from `tracer.derivatives.formulas` (torch's derivatives.yaml), never from a table of ours:

    slot_name(edge, graph)  -> "self"      the input of edge.src that the edge feeds
    steps(node, graph)      -> [SlotStep]   per input that received a gradient:
        "∂/∂self: grad · tensor   (self = x, tensor = x)"
    bindings(node, graph)   -> {"self": "x", "tensor": "x", "result": "z"}

Bindings. A formula's names are the forward function's arguments ("self", "other",
"tensor") and its output ("result"). Slot i's argument is bound to the name of what is at
the end of the node's slot-i edge: the variable name of that op's output, of the leaf, or
of the constant (a tensor needing no gradient, whose dashed edge carries its position
among the op's tensor arguments); "result" is bound to the node's own name. Nothing is
bound where that thing has no name.

Slots. A node's `next_functions` has one slot per differentiable input, laid out by the
table from the op alone, except for a list input (`torch.cat`'s `tensors`: one slot per
element). The drawn graph keeps its edges' slots, not their count, so for such an op the
count is taken as one past the highest slot any edge (or constant) uses: exact unless the
list's trailing elements needed no gradient and were not recorded as constants (then the
list reads shorter; `formulas` says None where that layout cannot be: nothing is shown
rather than a guess).

Nodes whose class has no formula (AccumulateGrad, a custom Function, an unknown class)
give no steps and no slot names. Loading the table is `tracer.derivatives.formulas`'s
(lazy, cached on disk per torch version); the results per (op, slot count, bindings) are
cached here, and the facts of one graph in an `EdgeIndex` built once per drawing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from tracer.model.graph import Edge, Graph, Node


@dataclass(frozen=True)
class SlotStep:
    """The gradient one input slot of a node receives, as autograd computes it."""

    slot: int
    name: str  # the forward function's argument: "self", "tensor", "vec"
    line: str  # "∂/∂self: grad · tensor   (self = x, tensor = x)"


@dataclass(frozen=True)
class EdgeIndex:
    """A graph's edges by source node, and each node's slot count: built once per drawing
    (`EdgeIndex.of`) and passed to every per-node question below, so that a node's step is
    found without reading every edge of the graph again."""

    graph: Graph
    by_source: dict[int, list[Edge]]
    slot_counts: dict[int, int]

    @classmethod
    def of(cls, graph: Graph) -> EdgeIndex:
        by_source: dict[int, list[Edge]] = {}
        counts: dict[int, int] = {}
        for edge in graph.edges:
            by_source.setdefault(edge.src, []).append(edge)
            if edge.slot >= counts.get(edge.src, 0):
                counts[edge.src] = edge.slot + 1
        return cls(graph, by_source, counts)


def out_edges(node: Node, index: EdgeIndex) -> list[Edge]:
    """The edges from `node` to its inputs."""
    return index.by_source.get(node.id, [])


def slot_count(node: Node, index: EdgeIndex) -> int | None:
    """One past the highest slot the node's edges use; None for a node without edges."""
    return index.slot_counts.get(node.id)


def bindings(node: Node, index: EdgeIndex, names: tuple[str, ...] | None = None) -> dict[str, str]:
    """The formula's names bound to the user's (see the module docstring); `names`, the
    node's slot names, when the caller has them already."""
    if names is None:
        names = _slot_names(node.op, slot_count(node, index))
    return _bindings(node, index.graph, names, out_edges(node, index))[0]


def _bindings(
    node: Node, graph: Graph, names: tuple[str, ...] | None, edges: list[Edge]
) -> tuple[dict[str, str], set[int]]:
    """`bindings`, and the slots that received a gradient (an edge to no constant)."""
    bound: dict[str, str] = {}
    if node.name:
        bound["result"] = node.name
    taken: set[int] = set()
    if names is None:
        return bound, taken
    nodes = graph.nodes
    for edge in edges:  # gradient edges first: their slot is autograd's
        if nodes[edge.dst].kind != "constant":
            taken.add(edge.slot)
            _bind(bound, names, edge, graph)
    for edge in edges:
        if nodes[edge.dst].kind == "constant":
            if edge.slot not in taken:  # a position that is no gradient slot: unknown
                _bind(bound, names, edge, graph)
    return bound, taken


def _bind(bound: dict[str, str], names: tuple[str, ...], edge: Edge, graph: Graph) -> None:
    target = graph.nodes[edge.dst].name
    if target and edge.slot < len(names) and "[" not in names[edge.slot]:
        bound.setdefault(names[edge.slot], target)


def slot_name(edge: Edge, index: EdgeIndex) -> str | None:
    """The argument of edge.src that the edge feeds ("self", "tensor"), or None."""
    nodes = index.graph.nodes
    source = nodes[edge.src]
    if source.kind != "op" or nodes[edge.dst].kind == "constant":
        return None
    names = _slot_names(source.op, slot_count(source, index))
    return names[edge.slot] if names is not None and edge.slot < len(names) else None


def steps(node: Node, index: EdgeIndex) -> list[SlotStep] | None:
    """Per input that received a gradient, the formula autograd applied; None when the
    node's class has no formula (nothing rather than a guess)."""
    if node.kind != "op":
        return None
    count = slot_count(node, index)
    names = _slot_names(node.op, count)
    if names is None:  # no formula for the class (or this layout): no lines either
        return None
    bound, fed = _bindings(node, index.graph, names, out_edges(node, index))
    found = _steps(node.op, count, tuple(sorted(bound.items())), tuple(sorted(fed)))
    return None if found is None else list(found)


@lru_cache(maxsize=4096)
def _steps(
    op: str, count: int | None, bound: tuple[tuple[str, str], ...], fed: tuple[int, ...]
) -> tuple[SlotStep, ...] | None:
    """`steps` for the node's class, slot count, bindings and fed slots: a graph has many
    nodes alike (a layer's ops, a chain's), so each step is made once."""
    lines = _explain(op, count, bound)
    if lines is None:
        return None
    names = _slot_names(op, count) or ()
    return tuple(SlotStep(s, names[s], lines[s]) for s in fed if s < len(lines) and s < len(names))


def per_slot(node: Node, index: EdgeIndex) -> tuple[list[str | None], list[str | None]] | None:
    """(names, formula lines), one entry per slot (None where unknown): for the page."""
    count = slot_count(node, index)
    names = _slot_names(node.op, count) if node.kind == "op" else None
    if names is None:
        return None
    lines = _explain(node.op, count, tuple(sorted(bindings(node, index, names).items())))
    formulas: list[str | None] = list(lines) if lines is not None else [None] * len(names)
    return list(names), formulas


@lru_cache(maxsize=4096)
def _slot_names(op: str, count: int | None) -> tuple[str, ...] | None:
    """The table's slot names: its own layout, or (list inputs) the layout for `count`."""
    from tracer.derivatives import formulas

    try:
        names = formulas.slot_names(op)
        if names is None and count is not None:
            names = formulas.slot_names(op, count)
    except Exception:  # a table that does not load: no names, never a failed picture
        return None
    return names


@lru_cache(maxsize=4096)
def _explain(
    op: str, count: int | None, bound: tuple[tuple[str, str], ...]
) -> tuple[str, ...] | None:
    from tracer.derivatives import formulas

    try:
        if formulas.slot_names(op) is not None:
            found = formulas.explain(op, dict(bound))
        elif count is not None:
            found = formulas.explain(op, dict(bound), n_slots=count)
        else:
            found = None
    except Exception:
        return None
    return None if found is None else tuple(found)


def formula_names(node: Node, index: EdgeIndex, slot: int) -> tuple[str, ...]:
    """The names torch's formula for the gradient `node` sends down `slot` reads, in order
    ("grad", "result"; "grad", "other" for ∂/∂self of a product); () without a formula."""
    return _formula_names(node.op, slot_count(node, index), slot)


@lru_cache(maxsize=4096)
def _formula_names(op: str, count: int | None, slot: int) -> tuple[str, ...]:
    from tracer.derivatives import formulas

    try:
        found = formulas.formula_for(op, None if formulas.slot_names(op) else count)
    except Exception:  # a table that does not load: no names, never a failed picture
        return ()
    if found is None or slot >= len(found.inputs):
        return ()
    return tuple(dict.fromkeys(re.findall(r"[A-Za-z_][A-Za-z_0-9]*", found.inputs[slot].formula)))


def slot_names(node: Node, index: EdgeIndex) -> tuple[str, ...] | None:
    """The formula's name for each input slot of `node` ("self", "other"); None without."""
    return _slot_names(node.op, slot_count(node, index))
