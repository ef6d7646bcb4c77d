"""The tracer core: capture, gradient flow, plain data, determinism, numbers untouched."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from enum import Enum

import pytest
import torch
from conftest import assert_golden
from torchviz import make_dot

import tracer
from tracer.exercises import get
from tracer.model.graph import Recording
from tracer.output.render import render_dot

f64 = torch.float64


def lecture_x() -> torch.Tensor:
    return torch.tensor(
        [0.1801, 0.3444, 0.4006, 0.6215, 0.2568, 0.3863, 0.5832, 0.4745, 0.8343, 0.0492],
        dtype=f64,
        requires_grad=True,
    )


def torchviz_edges(root: torch.Tensor) -> tuple[Counter, Counter]:
    """torchviz's op nodes and op-to-op edges, as (label) and (consumer, producer) counts."""
    source = make_dot(root).source
    labels = dict(re.findall(r"^\s*(\d+) \[label=(\w+)\]", source, re.M))
    nodes = Counter(labels.values())
    edges = Counter(
        (labels[v], labels[u])  # torchviz draws producer -> consumer; we draw consumer -> producer
        for u, v in re.findall(r"^\s*(\d+) -> (\d+)", source, re.M)
        if u in labels and v in labels
    )
    return nodes, edges


def our_edges(graph: tracer.Graph) -> tuple[Counter, Counter]:
    ops = {n.id: n.op for n in graph.nodes if n.kind != "constant"}
    nodes = Counter(ops.values())
    edges = Counter((ops[e.src], ops[e.dst]) for e in graph.edges if e.dst in ops)
    return nodes, edges


def computations() -> dict[str, Callable[[], torch.Tensor]]:
    """Graphs for the oracle: shared subgraphs, constants, several outputs, views."""

    def lecture_a():
        x = lecture_x()
        return torch.log(1 + torch.dot(x, x))

    def lecture_b():
        x = torch.linspace(0, 1, 5, dtype=f64, requires_grad=True)
        A = torch.arange(50, dtype=f64).reshape(10, 5) / 50
        return torch.sin(torch.mv(A, x) + 0.5).sum()

    def diamond():
        x = torch.tensor([0.3, -0.2], dtype=f64, requires_grad=True)
        a = x * x
        return (a.exp() + a.sin() * a).sum()

    def matmul_manual():
        x = torch.tensor([0.3, -0.2, 0.1], dtype=f64, requires_grad=True)
        A = torch.ones(3, 3, dtype=f64, requires_grad=True)
        return torch.matmul(torch.cos(x), A).sum()

    def split():
        x = torch.arange(6, dtype=f64, requires_grad=True)
        p, q = x.reshape(2, 3).unbind(0)
        return (p * q).sum() + p.mean()

    return {f.__name__: f for f in (lecture_a, lecture_b, diamond, matmul_manual, split)}


@pytest.mark.parametrize("name", list(computations()))
def test_capture_matches_torchviz(name: str) -> None:
    build = computations()[name]
    with tracer.trace() as t:
        out = build()
        out.backward()
    assert our_edges(t.graphs[0]) == torchviz_edges(build())


def test_every_node_once_and_leaves_tied_to_their_tensors() -> None:
    x = lecture_x()
    with tracer.trace() as t:
        z = torch.dot(x, x)
        f = torch.log(1 + z)
        f.backward()
    g = t.graphs[0]
    assert [n.op for n in g.nodes] == [
        "LogBackward0",
        "AddBackward0",
        "DotBackward0",
        "AccumulateGrad",
    ]
    (leaf,) = g.leaves()
    assert (leaf.name, leaf.shape, leaf.dtype) == ("x", (10,), "float64")
    assert [(e.src, e.dst, e.slot) for e in g.edges] == [(0, 1, 0), (1, 2, 0), (2, 3, 0), (2, 3, 1)]
    assert leaf.leaf_grad is not None and x.grad is not None
    assert leaf.leaf_grad.values == tuple(x.grad.tolist())


def test_inputs_needing_no_grad_are_constants() -> None:
    x = torch.ones(5, dtype=f64, requires_grad=True)
    A = torch.eye(5, dtype=f64)
    b = torch.zeros(5, dtype=f64)
    with tracer.trace() as t:
        f = torch.sin(torch.mv(A, x) + b)
        f.backward(torch.ones(5))
    g = t.graphs[0]
    constants = {n.name: n for n in g.nodes if n.kind == "constant"}
    assert set(constants) == {"A", "b"}
    mv = next(n for n in g.nodes if n.op == "MvBackward0")
    assert any(e.src == mv.id and e.dst == constants["A"].id for e in g.edges)
    assert all(e.grad is None for e in g.edges if g.node(e.dst).kind == "constant")


def test_arriving_gradient_equals_autograd_grad_of_each_tensor() -> None:
    def forward(x, A):
        a = torch.mv(A, x)
        b = torch.tanh(a)
        c = b * x
        d = c.sum() + (a * a).sum()
        return a, b, c, d

    x0 = torch.tensor([0.5, -1.0, 2.0], dtype=f64)
    A0 = torch.tensor([[1.0, 0.5, 0.0], [0.2, -0.3, 1.0], [0.0, 0.4, 0.1]], dtype=f64)

    x, A = x0.clone().requires_grad_(), A0.clone().requires_grad_()
    a, b, c, d = forward(x, A)
    expected = torch.autograd.grad(d, [a, b, c, d, x, A])

    x, A = x0.clone().requires_grad_(), A0.clone().requires_grad_()
    with tracer.trace() as t:
        a, b, c, d = forward(x, A)
        d.backward()
    nodes = {n.name: n for n in t.graphs[0].nodes if n.name}
    for name, want in zip("abcdxA", expected, strict=True):
        got = nodes[name].grads[0]
        assert got is not None, name
        assert got.values == tuple(want.flatten().tolist()), name
    # And the sum over the edges into a node is what arrived there (a feeds two nodes).
    g = t.graphs[0]
    edges_into_a = g.in_edges(nodes["a"].id)
    into_a = [e.grad for e in edges_into_a if e.grad is not None]
    assert len(into_a) == len(edges_into_a)  # each carried its gradient
    total = torch.stack([torch.tensor(e.values, dtype=f64) for e in into_a]).sum(0)
    torch.testing.assert_close(total, expected[0], rtol=0, atol=1e-15)


def test_tracing_never_changes_the_numbers_and_leaves_no_hook() -> None:
    def run(traced: bool) -> tuple[torch.Tensor, torch.Tensor, tracer.Trace | None]:
        torch.manual_seed(0)
        x = torch.randn(7, dtype=torch.float32, requires_grad=True)
        W = torch.randn(4, 7, requires_grad=True)

        def loss():
            h = torch.tanh(W @ x)
            return torch.log1p((h * h).sum()) + torch.softmax(h, 0).max()

        if traced:
            with tracer.trace() as t:
                loss().backward()
            assert x.grad is not None and W.grad is not None
            return x.grad, W.grad, t
        loss().backward()
        assert x.grad is not None and W.grad is not None
        return x.grad, W.grad, None

    gx, gW, _ = run(False)
    tx, tW, _ = run(True)
    assert torch.equal(gx, tx) and torch.equal(gW, tW)

    # No hook is left: a later backward through the same nodes records nothing.
    x = lecture_x()
    with tracer.trace() as t:
        f = torch.log(1 + torch.dot(x, x))
        f.backward(retain_graph=True)
    before = Recording.from_json(t.recording.to_json())
    f.backward()
    assert t.recording.to_json() == before.to_json()


def test_deep_graph_needs_no_recursion() -> None:
    x = torch.tensor(1.0, dtype=f64, requires_grad=True)
    with tracer.trace() as t:
        y = x
        for _ in range(5000):
            y = y * 1.0001
        y.backward()
    assert len(t.graphs[0].nodes) == 5001
    assert t.graphs[0].nodes[-1].step == 5001


def test_graph_is_plain_data_and_deterministic() -> None:
    first, second = get("exercise-b").run(), get("exercise-b").run()
    assert render_dot(first) == render_dot(second)
    assert first.to_json() == second.to_json()
    assert Recording.from_json(first.to_json()) == first
    assert "0x" not in render_dot(first)  # no memory addresses

    def plain(value: object) -> None:
        assert not isinstance(value, torch.Tensor)
        if isinstance(value, Enum):  # a named constant (Check.how): its value is plain
            assert isinstance(value.value, str)
            return
        assert type(value).__module__.split(".")[0] in {"builtins", "tracer"}
        for child in vars(value).values() if hasattr(value, "__dict__") else []:
            walk(child)

    def walk(value: object) -> None:
        if isinstance(value, (list, tuple)):
            for v in value:
                walk(v)
        else:
            plain(value)

    walk(first)


def test_large_tensors_keep_a_summary_only() -> None:
    x = torch.linspace(-1, 1, 100, dtype=f64, requires_grad=True)
    with tracer.trace(max_values=64) as t:
        (x * x).sum().backward()
    leaf_grad = t.graphs[0].leaves()[0].leaf_grad
    assert leaf_grad is not None and leaf_grad.values is None
    assert leaf_grad.shape == (100,)
    assert leaf_grad.max == pytest.approx(2.0) and leaf_grad.min == pytest.approx(-2.0)
    assert leaf_grad.norm == pytest.approx(float((2 * x).detach().norm()))
    with tracer.trace(max_values=100) as t:
        (x * x).sum().backward()
    leaf_grad = t.graphs[0].leaves()[0].leaf_grad
    assert leaf_grad is not None and leaf_grad.values is not None


def test_nan_and_inf_are_counted() -> None:
    x = torch.tensor([0.0, 1.0, -1.0], dtype=f64, requires_grad=True)
    with tracer.trace() as t:
        torch.sqrt(x).sum().backward()
    leaf = t.graphs[0].leaves()[0].leaf_grad
    assert leaf is not None and (leaf.nan, leaf.inf) == (1, 1)


def test_check_reports_largest_error_and_where() -> None:
    x = lecture_x()
    with tracer.trace() as t:
        z = torch.dot(x, x)
        torch.log(1 + z).backward()
    good = t.check(x, 2 * x / (1 + z), quiet=True)
    assert good.passed and good.max_abs < 1e-15
    wrong = 2 * x / (1 + z)
    wrong = wrong.detach().clone()
    wrong[7] += 1e-3
    bad = t.check(x, wrong, quiet=True)
    assert not bad.passed and bad.where == (7,) and bad.max_abs == pytest.approx(1e-3)
    transposed = t.check(x, (2 * x / (1 + z)).reshape(1, 10), quiet=True)
    assert not transposed.passed and "shapes differ" in (transposed.problem or "")
    # The detached wrong formula has no graph of its own; the other two do.
    assert [g.kind for g in t.graphs] == ["backward", "manual", "manual"]


def test_autograd_grad_and_autograd_backward_are_captured() -> None:
    x = torch.tensor([1.0, 2.0], dtype=f64, requires_grad=True)
    with tracer.trace() as t:
        (_g,) = torch.autograd.grad((x * x).sum(), x)
        torch.autograd.backward([(3 * x).sum()])
    assert [gr.kind for gr in t.graphs] == ["backward", "backward"]
    leaf = t.graphs[0].leaves()[0]
    grad = leaf.grads[0]
    assert grad is not None and grad.values == (2.0, 4.0) and leaf.leaf_grad is None
    leaf_grad = t.graphs[1].leaves()[0].leaf_grad
    assert leaf_grad is not None and leaf_grad.values == (3.0, 3.0)


@pytest.mark.parametrize("slug", ["exercise-a", "exercise-b"])
def test_lecture_exercises_golden_dot(slug: str) -> None:
    recording = get(slug).run()
    assert recording.passed
    assert_golden(f"{slug}.full.gv", render_dot(recording))  # the default, full view


def test_manual_graphs_show_the_lecture_nodes() -> None:
    a = get("exercise-a").run().graphs[1]
    b = get("exercise-b").run().graphs[1]
    assert a.kind == b.kind == "manual"
    assert a.nodes[0].op == "MulBackward0"
    assert b.nodes[0].op.startswith("SqueezeBackward")
