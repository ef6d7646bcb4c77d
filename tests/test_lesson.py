"""The backprop-by-hand lesson: every intermediate's gradient derived by hand and compared
with autograd's, the way such lessons do (a `cmp` helper comparing exactly, then closely),
each comparison a check on the node it concerns, once."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import tracer
from tracer.model.check import How
from tracer.model.explain import InPlaceError


def cmp(name: str, manual: torch.Tensor, t: torch.Tensor) -> tuple[bool, bool, float]:
    """A lesson's own helper: bit-exact, close, and the largest difference."""
    assert t.grad is not None
    exact = torch.all(manual == t.grad).item()
    close = torch.allclose(manual, t.grad)
    largest = (manual - t.grad).abs().max().item()
    return bool(exact), close, largest


def chunked_forward() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    x = torch.randn(4, 3)
    w = torch.randn(3, 2, requires_grad=True)
    h = x @ w
    a = torch.tanh(h)
    loss = (a * a).sum()
    for t in (h, a):
        t.retain_grad()
    loss.backward()
    return {"x": x, "w": w, "h": h, "a": a, "loss": loss}


def test_every_intermediates_gradient_is_checked_once_on_its_node() -> None:
    with tracer.trace() as t:
        v = chunked_forward()
        x, w, h, a = v["x"], v["w"], v["h"], v["a"]
        with torch.no_grad():
            da = 2 * a
            dh = (1 - a**2) * da
            dw = x.T @ dh
        results = [cmp("a", da, a), cmp("h", dh, h), cmp("w", dw, w)]
    assert all(close for _, close, _ in results)
    (graph,) = t.graphs  # no manual graph: computed under no_grad
    checks = {c.name: c for c in t.checks}
    assert sorted(checks) == ["a", "h", "w"]  # one check each, though compared twice
    for name, check in checks.items():
        assert check.ways == (How.EQUALS, How.ALLCLOSE, How.DIFFERENCE) and check.passed, name
        node = graph.nodes[check.node] if check.node is not None else None
        assert node is not None and node.name is not None and name in node.name.split(", ")
    assert graph.nodes[checks["w"].node].kind == "leaf"  # type: ignore[index]


def test_an_exact_comparison_missed_by_rounding_agrees_within_rounding() -> None:
    x = torch.tensor([0.1, 0.2, 0.3, 0.7, 1.3], requires_grad=True)
    with tracer.trace() as t:
        y = (x * x).sum() / 3
        y.backward()
        assert x.grad is not None
        manual = (x + x) / 3  # the same gradient, rounded another way
        assert not torch.equal(manual, x.grad)  # the lesson's exact probe says False
        exact = bool(torch.all(manual == x.grad))
    assert not exact
    (check,) = t.checks
    assert check.passed and not check.bit_exact and check.within_rounding
    assert "agrees within rounding (not bit-exact, max diff" in repr(check)
    assert t.recording.passed is True  # exit status 0 under `trace run`


def test_a_real_disagreement_in_an_exact_comparison_is_one() -> None:
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    with tracer.trace() as t:
        (x * x).sum().backward()
        assert x.grad is not None
        bool(torch.all(3 * x == x.grad))  # a wrong formula
    (check,) = t.checks
    assert not check.passed and not check.within_rounding


def test_tracer_check_on_a_non_leaf_that_retains_its_gradient() -> None:
    x = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    with tracer.trace() as t:
        h = x * 3
        h.retain_grad()
        f = (h * h).sum()
        f.backward()
        check = tracer.check(h, 2 * h.detach(), quiet=True)
    assert check.passed and check.name == "h"
    node = t.graphs[0].nodes[check.node] if check.node is not None else None
    assert node is not None and node.op == "MulBackward0" and node.name == "h"


def test_the_same_comparison_in_two_passes_is_two_checks() -> None:
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    with tracer.trace() as t:
        for _ in range(2):
            x.grad = None
            (x * x).sum().backward()
            manual = 2 * x.detach()
            torch.allclose(x.grad, manual)  # type: ignore[arg-type]
            torch.allclose(x.grad, manual)  # type: ignore[arg-type]
    assert [c.after for c in t.checks] == [1, 2]


def test_a_check_is_drawn_on_its_node() -> None:
    from tracer.output.render import render_dot

    x = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    with tracer.trace() as t:
        h = x * 3
        h.retain_grad()
        (h * h).sum().backward()
        tracer.check(h, 2 * h.detach(), quiet=True)
        tracer.check(x, 17 * x.detach(), quiet=True)  # wrong
    dot = render_dot(t.recording)
    node_lines = {
        line.split(" ", 1)[0].strip(): line for line in dot.splitlines() if "[label=" in line
    }
    h_line = next(line for line in node_lines.values() if "<B>h</B>" in line)
    x_line = next(line for line in node_lines.values() if "<B>x</B>" in line)
    assert "✓ manual agrees · largest error" in h_line
    assert "✗ manual DISAGREES · largest error" in x_line and "agrees" not in x_line


def lesson(wrong_dh: bool) -> tracer.Trace:
    """The chunked forward, each intermediate derived by hand; dh wrong on request."""
    with tracer.trace() as t:
        v = chunked_forward()
        x, w, h, a = v["x"], v["w"], v["h"], v["a"]
        with torch.no_grad():
            da = 2 * a
            dh = (1 + a**2) * da if wrong_dh else (1 - a**2) * da  # tanh' = 1 - tanh²
            dw = x.T @ dh
        for name, manual, tensor in (("w", dw, w), ("h", dh, h), ("a", da, a)):
            cmp(name, manual, tensor)
    return t


def test_the_grade_sheet_is_in_the_engines_order_and_finds_the_first_disagreement() -> None:
    from tracer.view.grades import first_disagreement, format_grade_sheet, grade_sheet

    t = lesson(wrong_dh=True)
    graph = t.graphs[0]
    grades = grade_sheet(graph, t.checks)
    assert [g.check.name for g in grades] == ["a", "h", "w"]  # loss first: as derived
    steps = [g.node.step for g in grades if g.node is not None and g.node.step is not None]
    assert steps == sorted(steps) and len(steps) == 3
    assert [(g.check.passed, g.inherits) for g in grades] == [
        (True, False),
        (False, False),  # where the error starts
        (False, True),  # dw is built from dh: it inherits the error
    ]
    first = first_disagreement(graph, grades)
    assert first is not None and first.grade.check.name == "h"
    assert first.formulas and first.formulas[0].startswith("TanhBackward0 ∂/∂self:")
    sheet = format_grade_sheet(graph, t.checks)
    assert sheet.splitlines()[0].split() == [
        "step",
        "name",
        "shape",
        "exact",
        "close",
        "largest",
        "error",
    ]
    assert "✗ (inherited)" in sheet and sheet.splitlines()[-1].startswith(
        "first disagreement: h (step"
    )


def test_a_correct_lesson_has_no_first_disagreement() -> None:
    from tracer.output.render import render_dot
    from tracer.view.grades import first_disagreement, grade_sheet

    t = lesson(wrong_dh=False)
    graph = t.graphs[0]
    assert first_disagreement(graph, grade_sheet(graph, t.checks)) is None
    assert t.recording.passed is True
    assert "first disagreement" not in render_dot(t.recording)
    wrong = lesson(wrong_dh=True)
    dot = render_dot(wrong.recording)
    assert "first disagreement: h" in dot and "(inherited from above)" in dot


def test_a_large_manual_result_is_one_box_unless_everything_is_asked_for() -> None:
    from tracer.output.render import RenderOptions, render_dot
    from tracer.view.collapse import EVERY_DEPTH

    x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    with tracer.trace() as t:
        (x * x).sum().backward()
        manual = torch.zeros(3)
        for _ in range(60):  # a Python loop of += : 120 ops in the manual graph
            manual = manual + x / 30
        tracer.check(x, manual, quiet=True)
    _, manual_graph = t.graphs
    assert len(manual_graph.nodes) > 100
    dot = render_dot(t.recording)
    assert "120 ops, collapsed" in dot and "DivBackward0" not in dot
    assert "drawn as one box; to see them: --depth all" in dot
    full = render_dot(t.recording, RenderOptions(depth=EVERY_DEPTH))
    assert full.count("DivBackward0") == 60 and "collapsed" not in full


def test_the_gallerys_lesson_checks_every_intermediate_and_fits_a_slide() -> None:
    from tracer.exercises import get
    from tracer.view.collapse import SLIDE_BUDGET, SLIDE_ROWS, rows

    recording = get("backprop-by-hand").run()
    (graph,) = recording.backward_graphs()
    assert recording.passed and len(recording.checks) == 13
    on_nodes = [c.node for c in recording.checks if c.node is not None]
    assert len(set(on_nodes)) == 13  # each on its own node
    intermediates = [graph.nodes[i] for i in on_nodes if graph.nodes[i].kind == "op"]
    assert len(intermediates) == 9  # the rest are the parameters
    assert len(graph.nodes) <= SLIDE_BUDGET and rows(graph) <= SLIDE_ROWS


def test_the_largest_difference_a_lesson_takes_is_a_check_too() -> None:
    x = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    with tracer.trace() as t:
        y = x * x
        z = y - 1.0  # an op of the forward pass: no check
        w = y - x  # another: both need a gradient
        (z + w).sum().backward()
        assert x.grad is not None
        largest = (4 * x.detach() - 1 - x.grad).abs().max().item()  # a hand derivation
        manual = 2 * x.detach() + 0.5
        (manual - x.grad).abs().max()  # a wrong one
    assert largest == 0.0
    assert [(c.how, c.passed) for c in t.checks] == [
        (How.DIFFERENCE, True),
        (How.DIFFERENCE, False),
    ]


def test_equal_and_isclose_on_an_intermediate_are_one_check() -> None:
    x = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    with tracer.trace() as t:
        h = x * 3
        h.retain_grad()
        (h * h).sum().backward()
        manual = 2 * h.detach()
        assert h.grad is not None
        assert torch.equal(manual, h.grad)
        assert bool(torch.isclose(manual, h.grad).all())
    (check,) = t.checks
    assert check.name == "h" and check.ways == (How.EQUAL, How.ISCLOSE) and check.passed
    assert check.node is not None and t.graphs[0].nodes[check.node].name == "h"


def test_a_check_of_a_missing_gradient_says_why_it_is_missing() -> None:
    import warnings

    x = torch.tensor([1.0, 2.0], requires_grad=True)
    unused = torch.tensor([3.0], requires_grad=True)
    frozen = torch.tensor([1.0, 1.0])
    with tracer.trace() as t, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's own, on reading a non-leaf's .grad
        early = tracer.check(x, torch.ones(2), quiet=True)
        y = x * 2
        (y * frozen).sum().backward()
        checks = [
            tracer.check(y, torch.ones(2), quiet=True),
            tracer.check(frozen, torch.ones(2), quiet=True),
            tracer.check(unused, torch.ones(1), quiet=True),
        ]
    assert early.problem == "x.grad is None: no backward pass has run yet"
    assert [c.problem for c in checks] == [
        "y.grad is None: y is not a leaf (made by MulBackward0); call y.retain_grad() "
        "before backward",
        "frozen.grad is None: frozen does not require grad (made without requires_grad=True, "
        "under torch.no_grad(), or by .detach() or .data)",
        "unused.grad is None: unused does not reach what backward pass 1 differentiated "
        "(is it used in the loss?)",
    ]
    assert not any(c.passed for c in (early, *checks))
    assert t.recording.passed is False


def test_a_backward_broken_by_an_in_place_change_is_explained_and_unchanged() -> None:
    def program() -> None:
        a = torch.tensor([0.5, -1.0, 2.0], requires_grad=True)
        b = a.sigmoid()
        b.mul_(2)
        b.sum().backward()

    with pytest.raises(RuntimeError) as untraced:
        program()
    with tracer.trace() as t, pytest.raises(RuntimeError) as traced:
        program()
    assert str(traced.value) == str(untraced.value)  # the user's error, as it was
    explained = t.explain(traced.value)
    assert isinstance(explained, InPlaceError)
    assert (explained.name, explained.op, explained.needed_by) == ("b", "mul_", "SigmoidBackward0")
    assert explained.where is not None and explained.where[0] == __file__
    assert (explained.expected, explained.actual) == (0, 1)
    assert t.explain(untraced.value) is None


def test_trace_run_names_the_in_place_change_in_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cli import app

    script = tmp_path / "inplace.py"
    script.write_text(
        "import torch\n"
        "a = torch.tensor([0.5, -1.0, 2.0], requires_grad=True)\n"
        "b = a.sigmoid()\n"
        "b.mul_(2)\n"
        "b.sum().backward()\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(app, ["run", str(script), "--out", str(tmp_path / "p")])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {script}:5: RuntimeError: b was changed in place by mul_ at {script}:4 after "
        f"SigmoidBackward0 saved it at {script}:3 for backward (version 0, now 1): change a copy "
        "(b.clone()), or make the change before the op that saves it"
    ]
