"""Forward values, names, backward order, saved tensors, detail levels, problems,
second order — on graphs whose values and order are known by hand."""

from __future__ import annotations

import inspect
import math
from typing import Any

import pytest
import torch

import tracer
from tracer.exercises import get
from tracer.model.explain import Element
from tracer.model.location import Locator
from tracer.output.render import RenderOptions, render_dot
from tracer.view.report import format_report, problems
from tracer.view.text import graph_title, start_text

f64 = torch.float64


def worked_example(x0: float = 0.7) -> tuple[tracer.Trace, torch.Tensor]:
    """MML §5.6 (eq. 5.109): a and c each feed two nodes."""
    x = torch.tensor(x0, dtype=f64, requires_grad=True)
    with tracer.trace() as t:
        a = x**2
        b = torch.exp(a)
        c = a + b
        d = torch.sqrt(c)
        e = torch.cos(c)
        f = d + e
        f.backward()
    return t, x


def by_name(graph: tracer.Graph) -> dict[str, tracer.Node]:
    return {n.name: n for n in graph.nodes if n.name}


def test_each_node_shows_its_forward_value_and_the_gradient_that_reached_it() -> None:
    t, _x = worked_example(0.7)
    nodes = by_name(t.graphs[0])
    a = 0.7**2
    b = math.exp(a)
    c = a + b
    values = {
        "a": a,
        "b": b,
        "c": c,
        "d": math.sqrt(c),
        "e": math.cos(c),
        "f": math.sqrt(c) + math.cos(c),
    }
    for name, want in values.items():
        forward = nodes[name].forward[0]
        assert forward is not None and forward.values == pytest.approx((want,), rel=1e-15), name
    # The gradients, by the chain rule by hand (MML eq. 5.110-5.115).
    df_dc = 1 / (2 * math.sqrt(c)) - math.sin(c)
    grads = {"f": 1.0, "d": 1.0, "e": 1.0, "c": df_dc, "b": df_dc, "a": df_dc * (1 + b)}
    for name, want in grads.items():
        grad = nodes[name].grads[0]
        assert grad is not None and grad.values == pytest.approx((want,), rel=1e-12), name
    leaf_grad, forward = nodes["x"].leaf_grad, nodes["x"].forward[0]
    assert leaf_grad is not None and forward is not None
    assert leaf_grad.values == pytest.approx((2 * 0.7 * df_dc * (1 + b),), rel=1e-12)
    assert forward.values == (0.7,)


def test_names_come_from_the_code_and_none_are_invented() -> None:
    t, _ = worked_example()
    graph = t.graphs[0]
    assert sorted(n.name for n in graph.nodes if n.name) == ["a", "b", "c", "d", "e", "f", "x"]
    assert [n.op for n in graph.nodes if n.name is None] == []
    ex = get("exercise-a").run().graphs[0]
    assert {n.op: n.name for n in ex.nodes} == {
        "LogBackward0": "f",
        "AddBackward0": None,
        "DotBackward0": "z",
        "AccumulateGrad": "x",
    }


def test_names_from_a_function_traced_by_the_api() -> None:
    def model(w: torch.Tensor) -> torch.Tensor:
        hidden = torch.tanh(w * 3)
        loss = (hidden**2).sum()
        return loss

    w = torch.tensor([0.1, 0.2], dtype=f64, requires_grad=True)
    with tracer.trace() as t:
        out = t.call(model, w)
        out.backward()  # outside the function: its locals are gone by now
    names = {n.op: n.name for n in t.graphs[0].nodes}
    assert names["TanhBackward0"] == "hidden"
    assert names["SumBackward0"] == "loss"  # the first name a tensor got wins
    assert names["AccumulateGrad"] == "w"


def test_backward_order_is_the_engines_and_is_shown_as_a_badge() -> None:
    t, _ = worked_example()
    graph = t.graphs[0]
    order = [n.name for n in graph.steps]
    # f first; e was made after d, so the engine (latest first) runs it before d; c only
    # once both d and e are done; a only after c and b; the leaf x last.
    assert order == ["f", "e", "d", "c", "b", "a", "x"]
    assert [n.name for n in t.steps] == order
    dot = render_dot(t.recording)
    assert 'BGCOLOR="#555555"' in dot and ">7</FONT>" in dot


def test_saved_tensors_on_request_including_inputs() -> None:
    x = torch.tensor([1.0, 2.0], dtype=f64, requires_grad=True)
    with tracer.trace(saved=True) as t:
        y = x * x
        s = torch.exp(y).sum()
        s.backward()
    nodes = {n.op: n for n in t.graphs[0].nodes}
    saved = {v.name: v for v in nodes["MulBackward0"].saved}
    assert saved["self"].source == "x" and saved["other"].source == "x"
    tensor = saved["self"].tensor
    assert tensor is not None and tensor.values == (1.0, 2.0)
    exp_saved = {v.name: v for v in nodes["ExpBackward0"].saved}
    assert exp_saved["result"].source == "output"
    slide = render_dot(t.recording, RenderOptions("slide"))
    assert "saved" not in slide
    assert "saved self = x" in render_dot(t.recording, RenderOptions("slide", saved=True))
    assert "saved self = x" in render_dot(t.recording, RenderOptions("full", saved=True))
    # --saved means one thing in every view: without it, no view shows saved tensors
    assert "saved" not in render_dot(t.recording, RenderOptions("full"))


def test_saved_tensors_are_not_recorded_unless_asked() -> None:
    x = torch.tensor([1.0, 2.0], dtype=f64, requires_grad=True)
    with tracer.trace() as t:
        (x * x).sum().backward()
    assert all(not n.saved for n in t.graphs[0].nodes)


def test_detail_levels() -> None:
    recording = get("exercise-b").run()
    slide = render_dot(recording, RenderOptions("slide"))
    full = render_dot(recording, RenderOptions("full"))
    assert "SinBackward0" in slide and "[0.3547, -0.7758" in slide  # ops and gradients
    for extra in (">value<", "float64 [5]"):
        assert extra not in slide and extra in full


def test_nan_and_inf_stand_out_and_are_named_once() -> None:
    x = torch.tensor([0.0, 4.0], dtype=f64, requires_grad=True)
    with tracer.trace() as t:
        r = torch.sqrt(x)
        r.sum().backward()
    # The Inf arrives at x (its .grad): named there, not again on the edge that carries it.
    assert problems(t.recording) == ["1 Inf in x.grad, backward pass 1"]
    assert "#d62728" in render_dot(t.recording)
    assert "⚠" in format_report(t.recording)


def test_a_gradient_that_turns_nan_is_named_where_it_does_with_its_module() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())
    x = torch.tensor([[0.0, -1.0]], dtype=torch.float32)
    with tracer.trace() as t:
        y = torch.sqrt(model(x) - 1.0).sum()  # sqrt of a negative: NaN, in value and grad
        y.backward()
    # Where each starts, once: the value at the sqrt (not the sum after it), the gradient
    # where sqrt's derivative sends it (not the ReLU and Linear it flows on to).
    assert problems(t.recording) == [
        "2 NaN in the value of SqrtBackward0, backward pass 1",
        "2 NaN in the gradient of SubBackward0, backward pass 1",
    ]


def test_a_problem_is_named_with_the_module_it_occurs_in() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Tanh())
    x = torch.tensor([[1.0, 2.0]])
    with tracer.trace() as t:
        (model(x) * float("nan")).sum().backward()
    found = problems(t.recording)
    assert any("in 1 · Tanh" in p or "in 0 · Linear" in p for p in found), found


def test_an_intended_minus_infinity_in_a_forward_value_is_no_problem() -> None:
    x = torch.tensor([0.5, 1.0, 2.0], dtype=f64, requires_grad=True)
    causal = torch.tensor([0.0, float("-inf"), 0.0], dtype=f64)
    with tracer.trace() as t:
        p = torch.softmax(x + causal, 0)
        (p * p).sum().backward()
    assert problems(t.recording) == []
    assert "#d62728" not in render_dot(t.recording)


def test_a_leaf_that_received_no_gradient_is_marked() -> None:
    x = torch.tensor([1.0, 2.0], dtype=f64, requires_grad=True)
    unused = torch.tensor([3.0], dtype=f64, requires_grad=True)
    with tracer.trace() as t:
        _gx, gu = torch.autograd.grad((x * x).sum(), [x, unused], allow_unused=True)
    assert gu is None
    marked = [n for n in t.graphs[0].nodes if n.received_no_gradient]
    assert [n.name for n in marked] == ["unused"]
    assert any("unused received no gradient" in p for p in problems(t.recording))
    assert "received no gradient" in render_dot(t.recording)


def test_a_pass_asked_for_some_inputs_stops_there_and_flags_nothing_below() -> None:
    w = torch.tensor([1.0, 2.0], dtype=f64, requires_grad=True)
    with tracer.trace() as t:
        h = w * 3.0
        torch.autograd.grad((h * h).sum(), [h])  # stops at h: w is not asked for
        h2 = w * 2.0
        (h2 * h2).sum().backward(inputs=[h2])
    for graph in t.graphs:
        leaf = next(n for n in graph.nodes if n.kind == "leaf")
        assert leaf.outside_pass and not leaf.received_no_gradient
    assert problems(t.recording) == []
    assert "received no gradient" not in render_dot(t.recording)
    assert tracer.Recording.from_json(t.recording.to_json()) == t.recording


class _Square(torch.autograd.Function):
    """A custom Function: its forward is no torch function the forward recorder sees."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return 2 * x * grad


@pytest.mark.parametrize("values", [True, False])
def test_a_node_made_in_forward_after_a_create_graph_pass_is_not_made_by_it(
    values: bool,
) -> None:
    x = torch.tensor([1.0, 2.0], dtype=f64, requires_grad=True)
    with tracer.trace(values=values) as t:
        (g,) = torch.autograd.grad((x**3).sum(), x, create_graph=True)
        g.sum().backward(retain_graph=True)  # through the graph pass 1 made
        (_Square.apply(x) * 2).sum().backward()  # a new forward: made by no pass
        (g2,) = torch.autograd.grad((x**4).sum(), x, create_graph=True)
        (g * g2).sum().backward()  # through both
    second, third, fourth, fifth = t.graphs[1:]
    assert second.through == 1 and {n.made_by for n in second.nodes} >= {1}
    assert third.through is None
    assert [n.made_by for n in third.nodes] == [None] * len(third.nodes)
    assert "_SquareBackward" in [n.op for n in third.nodes]
    assert fourth.through is None
    made = {n.made_by for n in fifth.nodes}
    assert made == {None, 1, 4} and fifth.through == 4


def test_second_order_draws_both_passes_told_apart() -> None:
    x = torch.tensor([1.0, -2.0], dtype=f64, requires_grad=True)
    v = torch.tensor([0.5, 3.0], dtype=f64)
    with tracer.trace() as t:
        f = (x**3).sum()
        (g,) = torch.autograd.grad(f, x, create_graph=True)
        hvp = (g * v).sum()
        hvp.backward()
    first, second = t.graphs
    assert first.create_graph and not second.create_graph
    assert second.through == 1 and first.through is None
    assert "create_graph" in graph_title(first) and "made" in graph_title(second)
    assert not any(n.made_by for n in first.nodes)
    made = [n for n in second.nodes if n.made_by == 1]
    assert made and all(n.kind == "op" for n in made)
    names = by_name(second)
    assert names["hvp"].made_by is None  # made by the forward code
    assert names["g"].made_by == 1  # made by the first backward
    assert x.grad is not None and torch.equal(x.grad, 6 * x.detach() * v)  # Hessian-vector product
    assert "made by backward pass 1" in render_dot(t.recording)


def test_integer_and_bool_tensors_read_as_torch_prints_them() -> None:
    x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    index, mask = torch.tensor([0, 2]), torch.tensor([True, False, True])
    with tracer.trace() as t:
        (x[index].sum() + (x * mask).sum()).backward()
    dot = render_dot(t.recording)
    assert "[0, 2]" in dot and "[True, False, True]" in dot
    assert "[0.0000, 2.0000]" not in dot


def test_an_edge_whose_gradient_was_summed_or_gathered_says_how() -> None:
    from tracer.view.text import edge_note

    torch.manual_seed(0)
    X = torch.randn(4, 3)
    b = torch.randn(3, requires_grad=True)
    c = torch.randn(4, 1, requires_grad=True)
    table = torch.nn.Embedding(10, 2)
    with tracer.trace() as t:
        h = X + b  # b broadcast over the rows
        k = h * c  # c broadcast over the columns
        e = table(torch.tensor([[1, 2, 2, 5]]))
        (k.sum() + e.sum()).backward()
    graph = t.graphs[0]
    notes = {
        graph.nodes[edge.dst].name: edge_note(edge, graph)
        for edge in graph.edges
        if edge_note(edge, graph)
    }
    assert notes == {
        "b": "summed over dim 0: [4, 3] → [3]",
        "c": "summed over dim 1: [4, 3] → [4, 1]",
        "table.weight": "4 rows added into 10",
    }
    dot = render_dot(t.recording)
    assert all(note is not None and note in dot for note in notes.values())


def test_the_first_non_finite_gradient_is_named_with_the_formula_that_made_it() -> None:
    from tracer.view.report import first_non_finite

    x = torch.tensor([0.0, 4.0], dtype=f64, requires_grad=True)
    with tracer.trace() as t:
        sqrt_line = inspect.currentframe().f_lineno + 1  # type: ignore[union-attr]
        y = torch.sqrt(x)
        z = y * 2
        (z * z.detach()).sum().backward()  # 0 / (2 · 0) at sqrt: a NaN starts there
    (graph,) = t.graphs
    found = first_non_finite(graph)
    assert found is not None and graph.nodes[found.node].op == "SqrtBackward0"
    assert graph.nodes[found.node].where == (__file__, sqrt_line)
    # The value in torch's formula that explains the NaN: 0 / (2 · 0) at element 0.
    assert found.elements == (Element("result", 0.0, (0,)),)
    at = Locator()(__file__, sqrt_line).spoken()
    text = start_text(found, graph, at)
    assert text.startswith(f"first non-finite gradient: SqrtBackward0 (y) at {at} (step ")
    assert text.endswith(
        "sent 1 NaN to x; torch used ∂/∂self: grad / (2 · result)   (self = x, result = y); "
        "result = 0 at [0]"
    )
    assert text in format_report(t.recording) and text in render_dot(t.recording)
    with tracer.trace() as fine:
        (x * 2).sum().backward()
    assert first_non_finite(fine.graphs[0]) is None
