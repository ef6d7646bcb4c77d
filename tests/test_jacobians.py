"""Local Jacobians (`tracer.trace(jacobians=True)`, what the step-through page asks for):
exact, only for torch's own small nodes, and invisible to the user's program."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.checkpoint import checkpoint

import tracer
from tracer.exercises import all_exercises
from tracer.model.graph import Graph, Recording
from tracer.model.options import CaptureOptions
from tracer.output.page import page_capture
from tracer.view.jacobian import jacobian_steps
from tracer.view.text import jacobian_title, vjp_verdict

f64 = torch.float64


def bits(t: torch.Tensor | None) -> Any:
    """A tensor's exact bit pattern (and so the sign of each zero), with its shape."""
    if t is None:
        return None
    t = t.detach().contiguous()
    width = {8: torch.int64, 4: torch.int32, 2: torch.int16}[t.element_size()]
    return (tuple(t.shape), t.dtype, t.view(width).tolist())


class Calls(TorchDispatchMode):
    """The user's own dispatch mode: which aten ops it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.seen.append(str(func))
        return func(*args, **(kwargs or {}))


class Double(torch.autograd.Function):
    """A custom Function: its backward is the user's Python, never called by tracer."""

    calls = 0

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return 2 * x

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        Double.calls += 1
        return 2 * g


def program(how: str) -> tuple[Any, ...]:
    """A small training step with a bit of everything: shared subexpressions, softmax,
    layer norm, a custom Function, checkpointing, the user's own saved-tensor hooks and
    dispatch mode, float32 and float64. Returns everything the user can see, as bits."""
    torch.manual_seed(0)
    w1 = torch.randn(4, 3, requires_grad=True)
    b1 = torch.randn(4, requires_grad=True)
    w2 = torch.randn(3, 4, dtype=f64, requires_grad=True)
    x = torch.randn(3)
    unpacked = []
    Double.calls = 0

    def unpack(t: torch.Tensor) -> torch.Tensor:
        unpacked.append(tuple(t.shape))
        return t

    mode = Calls()
    context: Any = contextlib.nullcontext()
    if how == "traced":
        context = tracer.trace()
    elif how == "jacobians":
        context = tracer.trace(jacobians=True)
    with context as t:
        with torch.autograd.graph.saved_tensors_hooks(lambda t: t, unpack):
            h = torch.tanh(w1 @ x + b1)
        h = torch.nn.functional.layer_norm(h, (4,))
        h = Double.apply(h) + h * h
        z = checkpoint(lambda a: torch.sigmoid(a) * a, h, use_reentrant=False)
        with mode:
            out = torch.softmax(w2 @ z.double(), dim=0)
            loss = (out * out).sum() + out[0]
        loss.backward()
    recorded = t.recording if t is not None else None
    seen = [bits(v) for v in (h, z, out, loss, w1.grad, b1.grad, w2.grad)]
    rng = torch.random.get_rng_state().tolist()
    return (seen, unpacked, Double.calls, mode.seen, rng), recorded


def test_values_gradients_hooks_and_modes_are_the_same_with_jacobians() -> None:
    plain, _ = program("plain")
    traced, _ = program("traced")
    with_jacobians, recording = program("jacobians")
    assert traced == plain
    assert with_jacobians == plain  # bitwise, the user's unpack hook and Function run once
    assert recording is not None
    graph = recording.graphs[0]
    taken = {n.op for n in graph.nodes if n.jacobians}
    assert {"SoftmaxBackward0", "MvBackward0", "NativeLayerNormBackward0"} <= taken
    for node in graph.nodes:
        if node.op in ("AccumulateGrad", "DoubleBackward", "SigmoidBackward0") or node.kind != "op":
            # a leaf, the user's Function, a node whose saved tensors checkpoint's hooks hold
            assert node.jacobians == (), node.op
    tanh = next(n for n in graph.nodes if n.op == "TanhBackward0")
    assert tanh.jacobians == ()  # its saved result has the user's unpack hook


def test_batched_gradients_and_vmap_are_as_untraced() -> None:
    def run(jacobians: bool | None) -> Any:
        x = torch.tensor([1.0, 2.0], requires_grad=True)
        context: Any = contextlib.nullcontext()
        if jacobians is not None:
            context = tracer.trace(jacobians=jacobians)
        with context:
            j = torch.autograd.functional.jacobian(lambda a: a.sin() * a, x, vectorize=True)
            (g,) = torch.autograd.grad(x.sin(), x, torch.eye(2), is_grads_batched=True)
        return bits(j), bits(g)

    assert run(True) == run(None)


def test_a_second_order_pass_is_as_untraced() -> None:
    def run(jacobians: bool) -> Any:
        x = torch.tensor([0.3, -0.7], dtype=f64, requires_grad=True)
        with tracer.trace(jacobians=jacobians) if jacobians else contextlib.nullcontext() as t:
            (g,) = torch.autograd.grad((x.sin() * x).sum(), x, create_graph=True)
            g.sum().backward()
        if t is not None:  # the second pass runs through nodes the first one made
            assert any(n.jacobians and n.made_by == 1 for n in t.recording.graphs[1].nodes)
        return bits(g), bits(x.grad)

    assert run(True) == run(False)


def test_a_trace_not_asked_takes_no_jacobian() -> None:
    _, recording = program("traced")
    assert recording is not None
    assert all(n.jacobians == () for g in recording.graphs for n in g.nodes)
    assert page_capture(CaptureOptions(), "svg") == CaptureOptions()
    assert page_capture(CaptureOptions(), "html").jacobians


def _graph(fn: Callable[[], torch.Tensor]) -> Graph:
    with tracer.trace(jacobians=True) as t:
        fn().backward()
    return t.recording.graphs[0]


def test_jacobians_are_torchs_own_derivatives() -> None:
    torch.manual_seed(1)
    A = torch.randn(5, 3, dtype=f64)
    x = torch.randn(3, dtype=f64, requires_grad=True)
    graph = _graph(lambda: torch.sin(A @ x).sum())
    mv = next(n for n in graph.nodes if n.op == "MvBackward0")
    (j,) = mv.jacobians
    assert j.matrix.shape == (5, 3) and j.slot == 1
    assert j.matrix.values == tuple(A.reshape(-1).tolist())  # ∂(Ax)/∂x = A, exactly
    sin = next(n for n in graph.nodes if n.op == "SinBackward0")
    expected = torch.autograd.functional.jacobian(torch.sin, (A @ x).detach())
    assert sin.jacobians[0].matrix.values == tuple(expected.reshape(-1).tolist())


def test_a_multi_output_node_stacks_its_outputs_rows() -> None:
    x = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=f64, requires_grad=True)

    def f() -> torch.Tensor:
        a, b = (x * x).split(2)
        return (3 * a).sum() + (b * b).sum()

    graph = _graph(f)
    split = next(n for n in graph.nodes if n.op.startswith("SplitBackward"))
    (j,) = split.jacobians
    assert j.outputs == (0, 1) and j.matrix.shape == (4, 4)
    assert j.matrix.values == tuple(torch.eye(4, dtype=f64).reshape(-1).tolist())
    (step,) = jacobian_steps(split, graph)
    assert step.agrees is True and step.difference == 0
    assert "rows = outputs 0 [2], 1 [2] (4 elements)" in jacobian_title(step)


def test_an_op_with_a_constant_input_compares_each_slot_with_its_own_edge() -> None:
    """addmm(bias, X, Wᵀ) with X needing no grad: the edge to X is no slot of autograd's."""
    torch.manual_seed(2)
    X = torch.randn(4, 3)
    model = torch.nn.Linear(3, 1)
    graph = _graph(lambda: model(X).sum())
    addmm = next(n for n in graph.nodes if n.op == "AddmmBackward0")
    steps = jacobian_steps(addmm, graph)
    assert [s.jacobian.slot for s in steps] == [0, 2]
    assert all(s.agrees for s in steps), [vjp_verdict(s) for s in steps]


def test_large_ops_take_none() -> None:
    x = torch.randn(17, requires_grad=True)
    graph = _graph(lambda: (x * 2).sum())
    assert all(n.jacobians == () for n in graph.nodes if n.op == "MulBackward0")


def test_the_verdict_tells_a_gradient_that_is_not_vjp() -> None:
    x = torch.tensor([0.5, -1.0], dtype=f64, requires_grad=True)
    graph = _graph(lambda: (x.exp() * 3).sum())
    exp = next(n for n in graph.nodes if n.op == "ExpBackward0")
    edge = next(e for e in graph.edges if e.src == exp.id)
    assert edge.grad is not None and edge.grad.values is not None
    (step,) = jacobian_steps(exp, graph)
    assert vjp_verdict(step).startswith("✓")
    edge.grad.values = (edge.grad.values[0] + 0.5, edge.grad.values[1])
    (step,) = jacobian_steps(exp, graph)
    assert step.agrees is False
    assert vjp_verdict(step) == "✗ the gradient sent ≠ vᵀJ: largest difference 0.5"


@pytest.fixture(scope="module")
def exercises() -> Iterator[list[tuple[str, Recording]]]:
    capture = CaptureOptions(jacobians=True)
    yield [(ex.slug, ex.run(capture)) for ex in all_exercises()]


def test_every_exercise_step_sends_vjp(exercises: list[tuple[str, Recording]]) -> None:
    """Each small step of every exercise: the gradient sent is vᵀJ of what arrived."""
    panels = 0
    for slug, recording in exercises:
        for graph in recording.backward_graphs():
            for node in graph.nodes:
                for step in jacobian_steps(node, graph):
                    panels += 1
                    assert step.agrees is True, (slug, node.op, vjp_verdict(step))
    assert panels >= 100


def test_jacobians_read_back_from_json(exercises: list[tuple[str, Recording]]) -> None:
    for _, recording in exercises[:4]:
        assert any(n.jacobians for g in recording.graphs for n in g.nodes)
        assert Recording.from_json(recording.to_json()) == recording
