"""The collapsed view: a Graph with whole module calls drawn as one box each.

A view, not a change: `collapse(graph, …)` returns a new plain-data Graph (and where each
of its nodes came from); the recording keeps every node. A module call is *expanded*
(drawn as a cluster around its nodes) or *collapsed*: the outermost collapsed call on a
node's module chain swallows it, and becomes one node of kind "module" whose `module` is
that call. Edges inside a box vanish; edges into and out of it stay, with their gradients
(several edges between the same two boxes become one, carrying the sum when the
receiving node's arriving gradient is exactly that sum).

Levels: user code outside any module is level 0, the outermost module called is level 1,
its submodules level 2, … `depth=N` expands levels 1…N and collapses the rest; `focus`
expands one module (every call of it) in full, with its ancestors, and collapses all else.
`depth=None` picks the deepest depth whose picture has at most `budget` boxes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from tracer.errors import TracerError
from tracer.model.graph import Edge, Graph, ModuleCall, Node
from tracer.model.tensor import TensorData
from tracer.view.text import module_title, repeated_modules

# A 16:9 slide holds about this many boxes readably (labels of 9-11 points), in at most
# SLIDE_ROWS rows (the longest chain of boxes from the output down): a larger or taller
# graph is drawn collapsed, at the deepest depth that fits both.
SLIDE_BUDGET = 60
SLIDE_ROWS = 16
# `depth=EVERY_DEPTH` collapses nothing (`--depth all`).
EVERY_DEPTH = 1_000_000
# A manual result's graph of more nodes than this (a Python loop of `+=`) is drawn as one
# box with its op count, unless everything is asked for (EVERY_DEPTH).
MANUAL_BOXES = 40


@dataclass(frozen=True)
class Collapsed:
    """A view of a graph: the drawn Graph, and how it was chosen.

    `origin[i]` is the full graph's id of view node i (None for a box); `expanded` the
    ids of the module calls drawn as clusters; `depth` the depth drawn (None: everything
    expanded); `levels` the deepest module level in the graph; `auto` says the depth was
    chosen to fit `budget`; `full_size` is the full graph's node count.
    """

    graph: Graph
    origin: list[int | None]
    expanded: frozenset[int]
    depth: int | None
    levels: int
    auto: bool
    full_size: int
    budget: int

    @property
    def boxes(self) -> int:
        return len(self.graph.nodes)

    @property
    def collapsed(self) -> bool:
        return self.manual_box or any(n.kind == "module" for n in self.graph.nodes)

    @property
    def manual_box(self) -> bool:
        """A manual result's graph drawn as one box (see `collapse_manual`)."""
        return self.graph.kind == "manual" and self.origin == [None]


def levels(modules: Sequence[ModuleCall]) -> list[int]:
    """Each call's level: 1 for an outermost call, its parent's plus one below."""
    out: list[int] = []
    for call in modules:  # parents come first (calls are in the order they started)
        out.append(1 if call.parent is None else out[call.parent] + 1)
    return out


def _boxes(modules: Sequence[ModuleCall], expanded: frozenset[int]) -> list[int | None]:
    """Per call: the outermost collapsed call on its chain (itself included), or None."""
    box: list[int | None] = []
    for call in modules:
        above = None if call.parent is None else box[call.parent]
        box.append(above if above is not None else (None if call.id in expanded else call.id))
    return box


def rows(graph: Graph) -> int:
    """How many rows a graph drawn whole takes: its longest chain of boxes."""
    return _rows([node.id for node in graph.nodes], graph.edges)


def _fits(graph: Graph, box: list[int | None], budget: int) -> bool:
    """Whether the view with these boxes has at most `budget` boxes in SLIDE_ROWS rows."""
    where: list[int] = []
    boxes: dict[int, int] = {}
    shown = 0
    for node in graph.nodes:
        b = None if node.module is None else box[node.module]
        if b is None:
            where.append(node.id)
            shown += 1
        else:
            where.append(boxes.setdefault(b, -1 - b))
    if shown + len(boxes) > budget:
        return False
    return _rows(where, graph.edges) <= SLIDE_ROWS


def _rows(where: list[int], edges: Sequence[Edge]) -> int:
    """The longest chain of boxes in the view (Kahn's order; a cycle cannot occur in a
    backward graph, but a box swallowing part of a path could make one: counted once)."""
    out: dict[int, set[int]] = {}
    indegree: dict[int, int] = {}
    for v in where:
        indegree.setdefault(v, 0)
    for edge in edges:
        src, dst = where[edge.src], where[edge.dst]
        if src != dst and dst not in out.setdefault(src, set()):
            out[src].add(dst)
            indegree[dst] += 1
    depth = dict.fromkeys(indegree, 1)
    ready = [v for v, d in indegree.items() if d == 0]
    while ready:
        v = ready.pop()
        for w in out.get(v, ()):
            depth[w] = max(depth[w], depth[v] + 1)
            indegree[w] -= 1
            if indegree[w] == 0:
                ready.append(w)
    return max(depth.values(), default=0)


def _expanded_to(modules: Sequence[ModuleCall], depth: int) -> frozenset[int]:
    lv = levels(modules)
    return frozenset(c.id for c in modules if lv[c.id] <= depth)


def _focused(modules: Sequence[ModuleCall], focus: str) -> frozenset[int]:
    """The calls of module `focus`, their ancestors and everything inside them."""
    targets = {c.id for c in modules if c.name == focus}
    if not targets:
        named = sorted({c.name for c in modules if c.name})
        raise TracerError(
            f"no module named '{focus}' was called in this graph: "
            + ("the modules are " + ", ".join(named[:40]) + (" …" if len(named) > 40 else ""))
            if named
            else f"no module named '{focus}' was called in this graph (it has no named module)"
        )
    keep = set()
    for call in modules:
        c: ModuleCall | None = call
        while c is not None:  # call is inside a target: expanded in full
            if c.id in targets:
                keep.add(call.id)
                break
            c = None if c.parent is None else modules[c.parent]
    for t in targets:  # the targets' ancestors
        c = modules[t]
        while c.parent is not None:
            c = modules[c.parent]
            keep.add(c.id)
    return frozenset(keep)


def collapse(
    graph: Graph,
    depth: int | None = None,
    focus: str | None = None,
    budget: int = SLIDE_BUDGET,
) -> Collapsed:
    """The view of `graph` at `depth` (see the module docstring), or around `focus`."""
    modules = graph.modules
    lv = levels(modules)
    deepest = max(lv, default=0)
    every = frozenset(c.id for c in modules)
    auto = False
    if focus is not None:
        expanded = _focused(modules, focus)
    elif depth is not None:
        expanded = _expanded_to(modules, depth)
    else:
        auto, expanded, depth = True, every, None
        if modules and not _fits(graph, _boxes(modules, expanded), budget):
            for d in range(deepest - 1, -1, -1):
                expanded = _expanded_to(modules, d)
                depth = d
                if _fits(graph, _boxes(modules, expanded), budget):
                    break
    if depth is not None and depth >= deepest and focus is None:
        depth = None  # nothing collapsed
    box = _boxes(modules, expanded)
    view, origin = _view(graph, box)
    return Collapsed(view, origin, expanded, depth, deepest, auto, len(graph.nodes), budget)


def _view(graph: Graph, box: list[int | None]) -> tuple[Graph, list[int | None]]:
    if all(b is None for b in box):
        return graph, [n.id for n in graph.nodes]
    where: list[int] = []  # full id -> view id
    origin: list[int | None] = []
    nodes: list[Node] = []
    box_node: dict[int, int] = {}  # call id -> view id
    repeated = repeated_modules(graph.modules)
    inside: dict[int, list[Node]] = {}
    for node in graph.nodes:
        b = None if node.module is None else box[node.module]
        if b is None:
            where.append(len(nodes))
            origin.append(node.id)
            nodes.append(replace(node, id=len(nodes)))
            continue
        if b not in box_node:
            box_node[b] = len(nodes)
            origin.append(None)
            call = graph.modules[b]
            title = module_title(call, graph.modules, repeated)
            nodes.append(Node(id=len(nodes), kind="module", op=call.cls, name=title, module=b))
        where.append(box_node[b])
        inside.setdefault(b, []).append(node)
    for b, members in inside.items():
        steps = [n.step for n in members if n.step is not None]
        nodes[box_node[b]].step = min(steps) if steps else None
    groups: dict[tuple[int, int], list[Edge]] = {}
    for edge in graph.edges:
        src, dst = where[edge.src], where[edge.dst]
        if src != dst:
            groups.setdefault((src, dst), []).append(edge)
    incoming: dict[tuple[int, int], int] = {}
    for edge in graph.edges:
        key = (edge.dst, edge.dst_output)
        incoming[key] = incoming.get(key, 0) + 1
    edges = []
    for (src, dst), group in groups.items():
        first = group[0]
        grad = first.grad if len(group) == 1 else _sum_of(graph, group, incoming)
        edges.append(Edge(src, dst, first.slot, first.dst_output, grad))
    roots: list[int] = []
    seeds = []
    for root, seed in zip(graph.roots, graph.seeds, strict=True):
        if where[root] not in roots:
            roots.append(where[root])
            seeds.append(seed)
    view = replace(graph, nodes=nodes, edges=edges, roots=roots, seeds=seeds)
    return view, origin


def _sum_of(
    graph: Graph, group: list[Edge], incoming: dict[tuple[int, int], int]
) -> TensorData | None:
    """The gradient several merged edges carry together: known when they are every edge
    into one output of one node (its arriving gradient is their sum), else None."""
    targets = {(e.dst, e.dst_output) for e in group}
    if len(targets) != 1:
        return None
    dst, output = targets.pop()
    node = graph.nodes[dst]
    if incoming[(dst, output)] != len(group) or output >= len(node.grads):
        return None
    return node.grads[output]


def collapse_manual(graph: Graph, depth: int | None = None) -> Collapsed | None:
    """A large manual result's graph as one box saying how many ops it holds; None for a
    small one, or when everything is asked for (`depth=EVERY_DEPTH`)."""
    size = len(graph.nodes)
    if graph.kind != "manual" or size <= MANUAL_BOXES or depth == EVERY_DEPTH:
        return None
    ops = sum(n.kind == "op" for n in graph.nodes)
    box = Node(id=0, kind="op", op=f"{ops:,} ops, collapsed")
    view = replace(graph, nodes=[box], edges=[], roots=[0], seeds=[None], modules=[])
    return Collapsed(view, [None], frozenset(), depth, 0, depth is None, size, MANUAL_BOXES)
