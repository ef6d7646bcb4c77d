"""The plain-data graph: what capture produces and what render and check consume.

Nothing in here refers to torch. A `Recording` can be written to JSON and read back
unchanged, and the same traced code always gives the same ids in the same order.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, is_dataclass
from typing import Any, Literal, get_args

from tracer.errors import TracerError
from tracer.model.check import Check, How
from tracer.model.collector import paused_gc
from tracer.model.explain import Cut, CutKind, NoGradient, NoGradientReason
from tracer.model.forward import ForwardInput, ForwardMode, TangentStep
from tracer.model.tensor import TensorData

# "module": a collapsed module call, made only by the collapsed view (tracer.view.collapse).
NodeKind = Literal["op", "leaf", "constant", "module"]
GraphKind = Literal["backward", "manual"]


@dataclass  # not frozen: see TensorData
class Edge:
    """One input slot of an op: the gradient `src` sent down to `dst` during backward.

    `slot` is the index in src's `next_functions` (which input of the op), `dst_output` the
    output of dst that this input was. Edges to constants have no slot in autograd's sense;
    they carry the position among the op's tensor arguments and never a gradient.
    """

    src: int
    dst: int
    slot: int
    dst_output: int = 0
    grad: TensorData | None = None


@dataclass(frozen=True)
class Saved:
    """One thing autograd saved on a node for its backward (`_saved_self` → name "self").

    `source` says where a saved tensor came from when we know: the variable name of an
    input ("x"), or "output" when the node saved its own result.
    """

    name: str
    tensor: TensorData | None = None
    text: str | None = None  # a non-tensor saved value (sizes, dims, scalars), as text
    source: str | None = None


@dataclass(frozen=True)
class Jacobian:
    """An op's local Jacobian for one input slot, ∂(outputs)/∂(input), as the node's own
    backward computed it during the pass (tracer.record.capture.jacobian): row r is what
    the node sends down `slot` for the r-th basis vector of its outputs `outputs` (their
    elements flattened row-major, one output after the other: those that received a
    gradient), column c the input's c-th element. `matrix` has shape (rows, columns) and
    always its values."""

    slot: int
    outputs: tuple[int, ...]
    matrix: TensorData


@dataclass
class Node:
    """A `grad_fn` node (op), a leaf's `AccumulateGrad` (leaf), or an input needing no grad.

    Per output of the node: `forward` holds the value the op computed (seen while tracing
    the forward pass; None where the op ran inside a composite call, a compiled region or
    outside the trace) and `grads` the gradient that arrived during backward (the sum over
    its incoming edges; None where none arrived). A leaf or constant has one output, the
    tensor itself. `leaf_grad` is a leaf tensor's `.grad` after the pass.
    """

    id: int
    kind: NodeKind
    op: str  # grad_fn class name: "MulBackward0", "AccumulateGrad"; "" for a constant
    name: str | None = None  # the variable name the user's code bound the tensor to
    shape: tuple[int, ...] | None = None
    dtype: str | None = None
    # Tuples, not lists: a capture makes a Node per grad_fn, and an empty tuple is no
    # new object for Python's cyclic collector to walk.
    forward: tuple[TensorData | None, ...] = ()
    grads: tuple[TensorData | None, ...] = ()
    leaf_grad: TensorData | None = None
    step: int | None = None  # 1-based position in the engine's execution order
    saved: tuple[Saved, ...] = ()
    made_by: int | None = None  # the create_graph=True backward pass that made this node
    module: int | None = None  # the module call (index in Graph.modules) that made it
    grad_before: TensorData | None = None  # a leaf's .grad before the pass, when it had one
    # A leaf the pass was not asked for: backward(inputs=...) or autograd.grad(out, inputs)
    # named other tensors, so the engine stopped at them and this one was not to be reached.
    outside_pass: bool = False
    # Its local Jacobians, per input slot, when the trace was asked for them (small ops).
    jacobians: tuple[Jacobian, ...] = ()
    # The user's line that ran the op (file name as in the code, line), when the forward
    # recorder saw it run there (not inside a module's or a library's own code).
    where: tuple[str, int] | None = None

    @property
    def received_no_gradient(self) -> bool:
        """A leaf that backward never reached though it was asked for (an unused input)."""
        return (
            self.kind == "leaf"
            and self.step is None
            and not any(self.grads)
            and not self.outside_pass
        )


@dataclass(frozen=True)
class ModuleCall:
    """One call of an `nn.Module` during the forward pass that made a graph's nodes.

    `name` is the module's qualified name from the outermost module called ("" for that
    module itself: `layers.3.self_attn`), `cls` its class, `parent` the call it was made
    inside (index in Graph.modules, None for an outermost call), `call` which call of this
    module it was within the graph (1, 2, … in forward order), `params` the module's
    parameter count (its submodules' included).
    """

    id: int
    name: str
    cls: str
    parent: int | None = None
    call: int = 1
    params: int = 0


@dataclass
class Graph:
    """One captured graph: a backward pass with its gradients, or a manual formula's graph.

    `number` is the backward pass's number in its trace (1, 2, …); a manual graph has the
    number of the pass it was compared with (0 before any). `roots` are the ids of the
    nodes backward started from, in the order given; `seeds` the gradient fed into each
    root (None for a manual graph). `through` is the create_graph=True pass whose graph
    this pass ran through (higher order), `derivative` what a manual graph is the
    hand-derived form of ("∂f/∂x"), `source` where the user's code called backward: (file
    name as in the code object, line).
    """

    kind: GraphKind
    number: int
    nodes: list[Node]
    edges: list[Edge]
    roots: list[int]
    seeds: list[TensorData | None]
    create_graph: bool = False  # the pass built a graph of its gradients (higher order)
    through: int | None = None
    derivative: str | None = None
    source: tuple[str, int] | None = None
    modules: list[ModuleCall] = field(default_factory=list)  # see ModuleCall, Node.module

    @property
    def steps(self) -> list[Node]:
        """The nodes in the order the engine ran them."""
        ran = [n for n in self.nodes if n.step is not None]
        return sorted(ran, key=lambda n: n.step or 0)

    def node(self, node_id: int) -> Node:
        return self.nodes[node_id]

    def leaves(self) -> list[Node]:
        return [n for n in self.nodes if n.kind == "leaf"]

    def in_edges(self, node_id: int) -> list[Edge]:
        return [e for e in self.edges if e.dst == node_id]


# Why a backward pass run inside a trace was not recorded. "torch.func": it ran inside a
# torch.func transform (grad, vjp, jacrev, hessian, ...), on functorch's wrapped tensors,
# whose graph is the transform's own, not the one the program's tensors have. "library":
# a library function the user's code called ran it, as one of its own many passes
# (gradcheck, gradgradcheck, torch.autograd.functional's jacobian, hessian, ...).
UnrecordedKind = Literal["torch.func", "library"]
UNRECORDED_KINDS: tuple[UnrecordedKind, ...] = ("torch.func", "library")


@dataclass
class UnrecordedPasses:
    """Backward passes the trace saw but did not record, counted per place in the user's
    code (`source`: file name as in the code object, line; None when unknown) and, for a
    library's passes, per function the user's code called there (`function`: "gradcheck")."""

    kind: UnrecordedKind
    source: tuple[str, int] | None
    passes: int = 1
    function: str = ""


@dataclass
class Recording:
    """Everything one trace produced: its graphs in capture order, its checks, the
    passes it saw but did not record, and the `.grad`s the user's code read as None
    (each tensor once, with why)."""

    title: str = ""
    graphs: list[Graph] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    unrecorded: list[UnrecordedPasses] = field(default_factory=list)
    forward: ForwardMode | None = None  # a forward-mode pass beside the reverse one
    no_gradients: list[NoGradient] = field(default_factory=list)
    # How many backward passes the trace counted, recorded or not (the selection's, see
    # tracer.model.selection; not those in `unrecorded`): a pass's number counts them.
    passes_run: int = 0

    def note_unrecorded(
        self, kind: UnrecordedKind, source: tuple[str, int] | None, function: str = ""
    ) -> None:
        """Count one more pass of `kind` (run by `function`) not recorded at `source`."""
        for entry in self.unrecorded:
            if entry.kind == kind and entry.source == source and entry.function == function:
                entry.passes += 1
                return
        self.unrecorded.append(UnrecordedPasses(kind, source, function=function))

    def recorded_passes(self) -> list[int]:
        """The numbers of the backward passes recorded, in order."""
        return sorted(g.number for g in self.graphs if g.kind == "backward")

    def drop_passes(self, numbers: set[int]) -> None:
        """Forget the passes numbered so, with the manual graphs captured and the checks
        made after them (a pass no longer selected, see tracer.model.selection)."""
        if numbers:
            self.graphs = [g for g in self.graphs if g.number not in numbers]
            self.checks = [c for c in self.checks if c.after not in numbers]

    @property
    def passed(self) -> bool | None:
        """True when every check agrees, False when one does not, None with no check."""
        checks = [*self.checks]
        if self.forward is not None and self.forward.check is not None:
            checks.append(self.forward.check)  # J·v, forward mode against reverse mode
        if not checks:
            return None
        return all(c.passed for c in checks)

    def backward_graphs(self) -> list[Graph]:
        return [g for g in self.graphs if g.kind == "backward"]

    def per_pass(self) -> list[Recording]:
        """One Recording per backward pass, with this one's title: the pass's graph, the
        manual graphs captured after it (before the next pass), and the checks made and
        the `.grad`s read as None after it.

        Manual graphs, checks and reads from before the first pass are in none.
        """
        # A manual graph and a check carry the number of the pass they came after.
        parts: dict[int, Recording] = {}
        for graph in self.graphs:
            if graph.kind == "backward":
                parts[graph.number] = Recording(title=self.title, graphs=[graph])
            elif graph.number in parts:
                parts[graph.number].graphs.append(graph)
        for check in self.checks:
            if check.after in parts:
                parts[check.after].checks.append(check)
        for read in self.no_gradients:
            if read.after in parts:
                parts[read.after].no_gradients.append(read)
        return list(parts.values())

    def to_json(self) -> str:
        """Standard JSON (no NaN/Infinity tokens: such floats are written as the strings
        "NaN", "Infinity" and "-Infinity"), readable by jq and browsers.

        orjson writes it (ten times faster than the json module on a 100,000-node graph);
        straight from the dataclasses when every number is finite, else through `_json_default`.
        """
        import orjson  # here: `trace --help` reads no JSON

        with paused_gc():
            try:
                if _all_finite(self):
                    data = orjson.dumps(self)
                else:
                    data = orjson.dumps(
                        self, default=_json_default, option=orjson.OPT_PASSTHROUGH_DATACLASS
                    )
                return data.decode("utf-8") + "\n"
            except TypeError:  # a lone surrogate in a name, which orjson refuses: escaped
                text = json.dumps(self, default=_json_default, ensure_ascii=True, allow_nan=False)
                return text + "\n"

    @classmethod
    def from_json(cls, text: str) -> Recording:
        """The recording `to_json` wrote; a TracerError in one line for anything else
        (not JSON, nested too deep, a missing or mistyped field, an edge to no node)."""
        try:
            raw = json.loads(text)
            recording = cls(
                title=str(raw["title"]),
                graphs=[_graph_from(g) for g in raw["graphs"]],
                checks=[_check_from(c) for c in raw["checks"]],
                unrecorded=[_unrecorded_from(u) for u in raw.get("unrecorded", ())],
                forward=_forward_from(raw.get("forward")),
                no_gradients=[_no_gradient_from(n) for n in raw.get("no_gradients", ())],
            )
            backward = recording.recorded_passes()
            recording.passes_run = int(raw.get("passes_run", max(backward, default=0)))
        except RecursionError:
            raise TracerError("not a tracer recording: the JSON is nested too deep") from None
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
            what = f"no field {e}" if isinstance(e, KeyError) else str(e).splitlines()[0]
            raise TracerError(f"not a tracer recording: {what}") from None
        for graph in recording.graphs:
            _check_references(graph)
        return recording


_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _check_references(graph: Graph) -> None:
    """Every id a graph names is one of its nodes (or module calls), as capture made it."""
    count = len(graph.nodes)
    problem = None
    if any(node.id != i for i, node in enumerate(graph.nodes)):
        problem = "its nodes are not numbered 0, 1, 2, ... in order"
    elif any(not (0 <= e.src < count and 0 <= e.dst < count) for e in graph.edges):
        problem = "an edge joins a node it does not have"
    elif any(not 0 <= r < count for r in graph.roots) or len(graph.seeds) != len(graph.roots):
        problem = "a root is not one of its nodes, or has no seed"
    elif any(n.module is not None and not 0 <= n.module < len(graph.modules) for n in graph.nodes):
        problem = "a node is placed in a module call it does not have"
    if problem is not None:
        raise TracerError(f"not a tracer recording: in graph {graph.number}, {problem}")


def _finite_data(t: TensorData | None) -> bool:
    isfinite = math.isfinite
    return t is None or (
        t.nan == 0 and t.inf == 0 and isfinite(t.norm) and isfinite(t.min) and isfinite(t.max)
    )


def _all_finite(recording: Recording) -> bool:
    """Whether every number in the recording is finite (JSON can then hold them as they are)."""
    if recording.forward is not None:  # small: written through _json_default, whatever it holds
        return False
    for check in recording.checks:
        if not (math.isfinite(check.max_abs) and math.isfinite(check.max_rel)):
            return False
        if not (_finite_data(check.autograd) and _finite_data(check.manual)):
            return False
    for graph in recording.graphs:
        if not all(_finite_data(s) for s in graph.seeds):
            return False
        if not all(_finite_data(e.grad) for e in graph.edges):
            return False
        for node in graph.nodes:
            if not _finite_data(node.leaf_grad):
                return False
            if not all(_finite_data(t) for t in node.forward) or not all(
                _finite_data(t) for t in node.grads
            ):
                return False
            if not all(_finite_data(v.tensor) for v in node.saved):
                return False
            if not all(_finite_data(j.matrix) for j in node.jacobians):
                return False
    return True


def json_float(v: float) -> float | str:
    """A float as standard JSON holds it: itself when finite, else "NaN", "Infinity" or
    "-Infinity" (see Recording.to_json; tracer.model.flow writes the same way)."""
    if math.isfinite(v):
        return v
    return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")


def _json_default(value: Any) -> Any:
    """json's hook for our dataclasses: their fields as a dict, with non-finite floats as
    strings (see to_json). The C encoder does the rest."""
    if isinstance(value, TensorData):
        plain = dict(vars(value))
        if not (value.nan == 0 and value.inf == 0 and value.note is None):
            if value.values is not None:
                plain["values"] = [json_float(v) for v in value.values]
        for key in ("norm", "min", "max"):
            plain[key] = json_float(plain[key])
        return plain
    if isinstance(value, Check):
        plain = dict(vars(value))
        for key in ("max_abs", "max_rel"):
            plain[key] = json_float(plain[key])
        return plain
    if is_dataclass(value):
        return vars(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def float_from_json(v: float | str | None) -> float:
    """The float `json_float` wrote (None, which no writer gives, reads as NaN)."""
    if isinstance(v, str):
        return _NON_FINITE[v]
    return math.nan if v is None else float(v)


def _tensor_from(raw: dict[str, Any] | None) -> TensorData | None:
    if raw is None:
        return None
    values = raw["values"]
    return TensorData(
        shape=tuple(raw["shape"]),
        dtype=raw["dtype"],
        values=None if values is None else tuple(float_from_json(v) for v in values),
        norm=float_from_json(raw["norm"]),
        min=float_from_json(raw["min"]),
        max=float_from_json(raw["max"]),
        nan=raw["nan"],
        inf=raw["inf"],
        note=raw.get("note"),
    )


def _jacobian_from(raw: dict[str, Any]) -> Jacobian:
    matrix = _tensor_from(raw["matrix"])
    if matrix is None or matrix.values is None or len(matrix.shape) != 2:
        raise ValueError("a Jacobian without its matrix")
    return Jacobian(int(raw["slot"]), tuple(int(o) for o in raw["outputs"]), matrix)


def _graph_from(raw: dict[str, Any]) -> Graph:
    nodes = [
        Node(
            id=n["id"],
            kind=n["kind"],
            op=n["op"],
            name=n["name"],
            shape=None if n["shape"] is None else tuple(n["shape"]),
            dtype=n["dtype"],
            forward=tuple(_tensor_from(v) for v in n["forward"]),
            grads=tuple(_tensor_from(g) for g in n["grads"]),
            leaf_grad=_tensor_from(n["leaf_grad"]),
            step=n["step"],
            saved=tuple(
                Saved(v["name"], _tensor_from(v["tensor"]), v["text"], v["source"])
                for v in n["saved"]
            ),
            made_by=n["made_by"],
            module=n.get("module"),
            grad_before=_tensor_from(n.get("grad_before")),
            outside_pass=bool(n.get("outside_pass", False)),
            jacobians=tuple(_jacobian_from(j) for j in n.get("jacobians", ())),
            where=_where(n.get("where")),
        )
        for n in raw["nodes"]
    ]
    edges = [
        Edge(e["src"], e["dst"], e["slot"], e["dst_output"], _tensor_from(e["grad"]))
        for e in raw["edges"]
    ]
    source = raw["source"]
    return Graph(
        kind=raw["kind"],
        number=raw["number"],
        nodes=nodes,
        edges=edges,
        roots=list(raw["roots"]),
        seeds=[_tensor_from(s) for s in raw["seeds"]],
        create_graph=raw["create_graph"],
        through=raw["through"],
        derivative=raw["derivative"],
        source=None if source is None else (source[0], source[1]),
        modules=[
            ModuleCall(m["id"], m["name"], m["cls"], m["parent"], m["call"], m["params"])
            for m in raw.get("modules", ())
        ],
    )


def _unrecorded_from(raw: dict[str, Any]) -> UnrecordedPasses:
    kind = next((k for k in UNRECORDED_KINDS if k == raw["kind"]), None)
    if kind is None:
        raise ValueError(f"unknown kind of unrecorded pass {raw['kind']!r}")
    source = raw["source"]
    return UnrecordedPasses(
        kind=kind,
        source=None if source is None else (str(source[0]), int(source[1])),
        passes=int(raw["passes"]),
        function=str(raw.get("function", "")),
    )


def _where(raw: Any) -> tuple[str, int] | None:
    return None if raw is None else (str(raw[0]), int(raw[1]))


def _no_gradient_from(raw: dict[str, Any]) -> NoGradient:
    cut = raw["cut"]
    if raw["reason"] not in get_args(NoGradientReason):
        raise ValueError(f"unknown reason for a missing gradient {raw['reason']!r}")
    if cut is not None and cut["kind"] not in get_args(CutKind):
        raise ValueError(f"unknown kind of cut {cut['kind']!r}")
    return NoGradient(
        name=str(raw["name"]),
        reason=raw["reason"],
        after=int(raw["after"]),
        made_by=raw["made_by"],
        dtype=raw["dtype"],
        cut=None if cut is None else Cut(cut["kind"], str(cut["op"]), _where(cut["where"])),
        where=_where(raw["where"]),
        again=bool(raw.get("again", False)),
    )


def _check_from(raw: dict[str, Any]) -> Check:
    where = raw["where"]
    return Check(
        name=raw["name"],
        autograd=_tensor_from(raw["autograd"]),
        manual=_tensor_from(raw["manual"]),  # type: ignore[arg-type]
        max_abs=float_from_json(raw["max_abs"]),
        max_rel=float_from_json(raw["max_rel"]),
        where=None if where is None else tuple(where),
        rtol=raw["rtol"],
        atol=raw["atol"],
        passed=raw["passed"],
        problem=raw["problem"],
        of=raw["of"],
        after=raw["after"],
        how=How(raw["how"]),
        also=tuple(How(h) for h in raw.get("also", ())),
        node=raw.get("node"),
    )


def _forward_from(raw: dict[str, Any] | None) -> ForwardMode | None:
    if raw is None:
        return None
    check = raw["check"]
    return ForwardMode(
        direction=tuple(float_from_json(v) for v in raw["direction"]),
        given=str(raw["given"]),
        inputs=[ForwardInput(i["name"], _tensor_from(i["tangent"])) for i in raw["inputs"]],  # type: ignore[arg-type]
        steps=[
            TangentStep(
                id=s["id"],
                op=s["op"],
                name=s["name"],
                value=_tensor_from(s["value"]),  # type: ignore[arg-type]
                tangent=_tensor_from(s["tangent"]),  # type: ignore[arg-type]
                after=tuple(s["after"]),
                inputs=tuple(s["inputs"]),
            )
            for s in raw["steps"]
        ],
        output=raw["output"],
        output_name=raw["output_name"],
        outputs=int(raw["outputs"]),
        backward_passes=int(raw["backward_passes"]),
        check=None if check is None else _check_from(check),
    )
