"""A step's local Jacobian beside the vector-Jacobian product the engine computed.

For each input slot of an op with a recorded Jacobian (tracer.model.graph.Jacobian): the
matrix J, the gradient v that arrived at the node's outputs, vᵀJ worked out here from
them, and the gradient the node actually sent down that slot's edge, with whether the two
agree. The engine computed the gradient it sent in the tensor's dtype, in its own order of
operations; vᵀJ here is summed in double precision from the recorded numbers. They agree
when they differ by no more than rounding can explain (`ROUNDING_ULPS` units in the last
place of the dtype, scaled by the size of the terms summed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tracer.model.graph import Graph, Jacobian, Node
from tracer.model.tensor import TensorData

# The unit roundoff of each dtype a Jacobian can have (tracer.record.capture.jacobian).
_UNIT_ROUNDOFF = {
    "float64": 2.0**-53,
    "float32": 2.0**-24,
    "float16": 2.0**-11,
    "bfloat16": 2.0**-8,
}
# How many units of roundoff per term summed a difference may be and still be rounding:
# the engine's formula rounds a few times per term (a product, a sum, a scale).
ROUNDING_ULPS = 8


@dataclass(frozen=True)
class JacobianStep:
    """One input slot's Jacobian (`jacobian`), the shapes of its rows' outputs and of its
    columns' input, and — when the recording holds the numbers — the gradient that arrived
    (`arrived`, v flattened), vᵀJ (`product`, in the input's shape), the gradient sent down
    the slot's edge (`sent`), and the largest difference between the two."""

    jacobian: Jacobian
    output_shapes: tuple[tuple[int, ...], ...]
    input_shape: tuple[int, ...]
    product: TensorData | None
    sent: TensorData | None
    difference: float | None
    agrees: bool | None


def jacobian_steps(node: Node, graph: Graph) -> list[JacobianStep]:
    """The node's Jacobians, slot by slot, each with its vector-Jacobian product."""
    # (An edge to a constant carries its position among the op's arguments, not a slot.)
    sent_by_slot = {
        e.slot: e.grad
        for e in graph.edges
        if e.src == node.id and graph.nodes[e.dst].kind != "constant"
    }
    return [_step(node, j, sent_by_slot.get(j.slot)) for j in node.jacobians]


def _step(node: Node, jacobian: Jacobian, sent: TensorData | None) -> JacobianStep:
    rows, columns = jacobian.matrix.shape
    arrived = [node.grads[o] if o < len(node.grads) else None for o in jacobian.outputs]
    output_shapes = tuple(a.shape if a is not None else (rows,) for a in arrived)
    input_shape = sent.shape if sent is not None and sent.numel == columns else (columns,)
    v: list[float] = []
    for a in arrived:
        if a is None or a.values is None or len(a.values) != a.numel:
            return JacobianStep(jacobian, output_shapes, input_shape, None, sent, None, None)
        v.extend(a.values)
    matrix = jacobian.matrix.values
    assert matrix is not None  # a Jacobian always has its numbers
    if len(v) != rows:
        return JacobianStep(jacobian, output_shapes, input_shape, None, sent, None, None)
    terms = [[v[r] * matrix[r * columns + c] for r in range(rows)] for c in range(columns)]
    values = tuple(math.fsum(column) for column in terms)
    product = _tensor(values, input_shape, jacobian.matrix.dtype)
    if sent is None or sent.values is None or len(sent.values) != columns:
        return JacobianStep(jacobian, output_shapes, input_shape, product, sent, None, None)
    roundoff = _UNIT_ROUNDOFF.get(sent.dtype, 2.0**-24) * ROUNDING_ULPS * (rows + 1)
    difference, agrees = 0.0, True
    for column, computed, engine in zip(terms, values, sent.values, strict=True):
        gap = abs(computed - engine)
        if (math.isnan(computed) and math.isnan(engine)) or computed == engine:
            continue
        difference = max(difference, gap) if not math.isnan(gap) else math.inf
        scale = math.fsum(abs(t) for t in column) + abs(engine)
        agrees = agrees and gap <= roundoff * scale
    return JacobianStep(jacobian, output_shapes, input_shape, product, sent, difference, agrees)


def _tensor(values: tuple[float, ...], shape: tuple[int, ...], dtype: str) -> TensorData:
    """Numbers worked out here, as a TensorData (its statistics over the finite ones)."""
    finite = [v for v in values if math.isfinite(v)]
    nan = sum(1 for v in values if math.isnan(v))
    return TensorData(
        shape=shape,
        dtype=dtype,
        values=values,
        norm=math.sqrt(math.fsum(v * v for v in finite)) if finite else math.nan,
        min=min(finite, default=math.nan),
        max=max(finite, default=math.nan),
        nan=nan,
        inf=len(values) - len(finite) - nan,
    )
