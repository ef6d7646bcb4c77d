"""The trace session: where backward was called, allclose on a gradient as a check, and a
recording split into one part per backward pass."""

from __future__ import annotations

import sys
from typing import cast

import torch

import tracer
from tracer.model.graph import Recording

f64 = torch.float64


def test_graph_source_is_the_line_that_called_backward() -> None:
    x = torch.tensor([1.0, 2.0], dtype=f64, requires_grad=True)
    with tracer.trace() as t:
        f = (x * x).sum()
        line = sys._getframe().f_lineno + 1
        f.backward()
        torch.autograd.grad((x * 3).sum(), x)
    first, second = t.graphs
    assert first.source == (__file__, line)
    assert second.source == (__file__, line + 1)
    again = Recording.from_json(t.recording.to_json())
    assert again == t.recording and again.graphs[0].source == (__file__, line)


def test_allclose_on_a_gradient_is_a_check_with_the_verdict_the_code_saw() -> None:
    x = torch.tensor([1.0, 2.0], dtype=f64, requires_grad=True)
    with tracer.trace() as t:
        f = (x * x).sum()
        f.backward()
        right = 2 * x  # has a graph of its own: drawn beside autograd's
        assert x.grad is not None
        same = torch.allclose(x.grad, right)
        wrong = x.grad.allclose(3 * x.detach())  # the Tensor method, the gradient first
        loose = torch.allclose(4 * x.detach(), x.grad, atol=10.0)  # the gradient second
        torch.allclose(x.detach(), x.detach())  # no gradient: no check
    assert (same, wrong, loose) == (True, False, True)
    assert [(c.name, c.how, c.passed) for c in t.checks] == [
        ("x", "allclose", True),
        ("x", "allclose", False),
        ("x", "allclose", True),
    ]
    assert t.checks[0].of == "f" and t.checks[2].atol == 10.0
    assert [g.kind for g in t.graphs] == ["backward", "manual"]
    assert {n.name for n in t.graphs[1].nodes} >= {"right", "x"}


def test_tracer_check_records_one_check_not_one_more_for_its_own_allclose() -> None:
    x = torch.tensor([1.0, 2.0], dtype=f64, requires_grad=True)
    with tracer.trace() as t:
        (x * x).sum().backward()
        tracer.check(x, 2 * x.detach(), quiet=True)
        t.check(x, 2 * x.detach(), quiet=True)
    assert [(c.name, c.how, c.passed) for c in t.checks] == [("x", "check", True)] * 2


def test_allclose_on_autograd_grad_results_and_module_parameters() -> None:
    w = torch.tensor([0.5], dtype=f64, requires_grad=True)
    model = torch.nn.Linear(2, 1).double()
    with tracer.trace() as t:
        (dw,) = torch.autograd.grad((w * w).sum(), w)
        assert torch.allclose(dw, 2 * w.detach())
        model(torch.ones(1, 2, dtype=f64)).sum().backward()
        assert model.bias.grad is not None
        assert torch.allclose(model.bias.grad, torch.ones(1, dtype=f64))
    assert [(c.name, c.how, c.after) for c in t.checks] == [
        ("w", "allclose", 1),
        ("model.bias", "allclose", 2),
    ]


def test_per_pass_splits_graphs_and_checks_by_backward_pass() -> None:
    x = torch.tensor([1.0, 2.0], dtype=f64, requires_grad=True)
    with tracer.trace("two passes") as t:
        tracer.check(x, torch.zeros(2, dtype=f64), quiet=True)  # before any pass
        (x * x).sum().backward()
        tracer.check(x, 2 * x, quiet=True)  # with a manual graph
        x.grad = None
        torch.sin(x).sum().backward()
        # cast: mypy still holds x.grad to the None assigned above, across backward()
        torch.allclose(cast(torch.Tensor, x.grad), torch.cos(x.detach()))
        tracer.check(x, torch.cos(x.detach()), quiet=True)
    assert [c.after for c in t.checks] == [0, 1, 2, 2]
    one, two = t.recording.per_pass()
    assert one.title == two.title == "two passes"
    assert [g.kind for g in one.graphs] == ["backward", "manual"]
    assert [g.kind for g in two.graphs] == ["backward"]
    assert [c.how for c in one.checks] == ["check"]
    assert [c.how for c in two.checks] == ["allclose", "check"]
    assert one.passed and two.passed
    again = Recording.from_json(t.recording.to_json())
    assert [(c.after, c.how) for c in again.checks] == [(c.after, c.how) for c in t.checks]


def test_a_trace_with_no_graph_has_no_picture() -> None:
    with tracer.trace() as t:
        torch.ones(2).sum()
    assert t._repr_svg_() is None
