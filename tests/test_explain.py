"""Explaining what autograd did (issue 20, points 1 and 2): why a `.grad` the code reads is
None, where the path to the loss was cut, where a gradient became zero, and where the first
NaN or Inf starts, with the user's line and the value that explains it."""

from __future__ import annotations

import inspect
import textwrap
import warnings
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import tracer
from cli import app
from tracer.model.explain import Cut, Element, NoGradient
from tracer.model.graph import Recording
from tracer.model.location import Locator
from tracer.view.report import first_nan_value, first_non_finite, first_zero, format_report
from tracer.view.text import no_gradient_text

f64 = torch.float64


def _line() -> int:
    """The caller's line number."""
    frame = inspect.currentframe()
    assert frame is not None and frame.f_back is not None
    return frame.f_back.f_lineno


def _reads(t: tracer.Trace) -> dict[str, NoGradient]:
    return {why.name: why for why in t.recording.no_gradients if not why.again}


# -- a .grad read as None: seen where the code reads it -----------------------------------------


def test_each_reason_a_grad_is_none_is_told_where_the_code_reads_it() -> None:
    here = __file__
    with tracer.trace() as t:
        x = torch.tensor([1.0, -2.0], dtype=f64, requires_grad=True)
        w = torch.tensor([0.5, 0.5], dtype=f64, requires_grad=True)
        v = torch.tensor([2.0, 3.0], dtype=f64, requires_grad=True)
        u = torch.tensor([4.0, 5.0], dtype=f64, requires_grad=True)
        n = torch.tensor([1, 2])
        c = torch.ones(2, dtype=f64)
        early = _line() + 1
        assert x.grad is None
        y = x * 2
        detach_line = _line() + 1
        h = w.detach()
        data_line = _line() + 1
        d = v.data
        with torch.no_grad():
            no_grad_line = _line() + 1
            m = u * 3
        (y * h * d * m).sum().backward()
        read = _line() + 1
        grads = (y.grad, w.grad, v.grad, u.grad, n.grad, c.grad, h.grad, x.grad)
    assert grads[-1] is not None and all(g is None for g in grads[:-1])
    found = _reads(t)
    assert found["x"] == NoGradient("x", "no-backward", 0, where=(here, early))
    assert found["y"] == NoGradient("y", "not-leaf", 1, made_by="MulBackward0", where=(here, read))
    assert found["w"] == NoGradient(
        "w", "not-reached", 1, cut=Cut("detach", "detach", (here, detach_line)), where=(here, read)
    )
    assert found["v"].cut == Cut("data", "data", (here, data_line))
    assert found["u"].cut == Cut("no_grad", "mul", (here, no_grad_line))
    assert found["u"].reason == "not-reached"
    assert found["n"] == NoGradient("n", "dtype", 1, dtype="int64", where=(here, read))
    assert found["c"] == NoGradient("c", "no-requires-grad", 1, where=(here, read))
    assert found["h"] == NoGradient(
        "h",
        "no-requires-grad",
        1,
        cut=Cut("detach", "detach", (here, detach_line)),
        where=(here, read),
    )
    assert set(found) == {"x", "y", "w", "v", "u", "n", "c", "h"}  # x.grad, read last: a tensor
    at = Locator()(here, detach_line).spoken()
    expected = (
        "⚠ w.grad is None: w does not reach what backward pass 1 differentiated; the path is "
        f"cut by detach() at {at} (read at {Locator()(here, read).spoken()})"
    )
    assert expected in format_report(t.recording).splitlines()
    assert (
        no_gradient_text(found["y"])
        == "y.grad is None: y is not a leaf (made by MulBackward0); call y.retain_grad() before "
        "backward"
    )


def test_a_grad_set_to_none_after_backward_says_so_and_each_tensor_is_told_once() -> None:
    model = torch.nn.Linear(3, 1)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    with tracer.trace() as t:
        model(torch.ones(2, 3)).sum().backward()
        optimiser.step()
        optimiser.zero_grad()  # torch's own code reads .grad: not the user's read
        for _ in range(3):
            assert model.weight.grad is None
        assert model.weight.grad is None  # another line: recorded, not told again
    found = [why for why in t.recording.no_gradients]
    assert [(w.name, w.reason, w.again) for w in found] == [
        ("model.weight", "cleared", False),
        ("model.weight", "cleared", True),
    ]
    assert format_report(t.recording).count("weight.grad is None") == 1
    assert (
        "model.weight.grad is None: backward pass 1 gave it a gradient, and it was set to None "
        "after (optimizer.zero_grad() does that)" in format_report(t.recording)
    )


def test_setting_a_grad_to_none_is_not_a_read() -> None:
    """PyTorch's tutorial clears gradients by hand (`a.grad = None`): an assignment, which
    reaches the recorder as the property's `__set__`, is no read of a None `.grad`."""
    a = torch.tensor(1.0, requires_grad=True)
    with tracer.trace() as t:
        for _ in range(3):
            (a * 3).backward()
            with torch.no_grad():
                gradient = a.grad  # a read, not None
                assert gradient is not None
                a -= 0.1 * gradient
                a.grad = None
    assert t.recording.no_gradients == []
    assert "grad is None" not in format_report(t.recording)


def test_a_loop_reading_a_new_tensors_grad_on_every_step_says_it_once() -> None:
    w = torch.ones(2, dtype=f64, requires_grad=True)
    with tracer.trace() as t:
        for _ in range(5):
            y = w * 2
            y.sum().backward()
            assert y.grad is None
    assert [(r.name, r.reason, r.after) for r in t.recording.no_gradients] == [("y", "not-leaf", 1)]


def test_reading_a_grad_is_the_same_traced_and_untraced() -> None:
    def program() -> tuple[object, ...]:
        x = torch.tensor([1.0, 2.0], dtype=f64, requires_grad=True)
        y = x.exp()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            before, non_leaf = x.grad, y.grad  # torch warns: y is not a leaf
        y.sum().backward()
        grad = x.grad
        assert grad is not None
        said = [(str(w.message), w.category, w.filename, w.lineno) for w in caught]
        return before, non_leaf, grad is x.grad, grad.clone(), said

    plain = program()
    with tracer.trace() as t:
        traced = program()
    assert plain[:3] == traced[:3] == (None, None, True)
    assert torch.equal(plain[3], traced[3])  # type: ignore[arg-type]
    # torch's warning, at the line that read y.grad, traced as untraced.
    assert plain[4] == traced[4] and len(plain[4]) == 1  # type: ignore[arg-type]
    assert plain[4][0][2] == __file__  # type: ignore[index]
    assert {w.name for w in t.recording.no_gradients} == {"x", "y"}
    with warnings.catch_warnings():  # a warning made an error: raised as untraced
        warnings.simplefilter("error")
        y = torch.ones(1, requires_grad=True) * 2
        with pytest.raises(UserWarning) as untraced:
            y.grad  # noqa: B018
        with tracer.trace(), pytest.raises(UserWarning) as under_trace:
            y.grad  # noqa: B018
    assert str(under_trace.value) == str(untraced.value)
    # Nothing of the trace is left on the mode stack.
    assert torch.overrides._get_current_function_mode_stack() == []


def test_a_none_grad_under_trace_run_is_in_the_summary_and_explains_the_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    source = tmp_path / "train.py"
    source.write_text(
        textwrap.dedent(
            """\
            import torch
            w = torch.tensor([0.5, -0.5], requires_grad=True)
            x = torch.tensor([1.0, 2.0])
            h = w.detach()
            loss = (h * x).sum() + (x * x).sum().requires_grad_()
            loss.backward()
            print(w.grad)
            print(w.grad.norm())
            """
        ),
        encoding="utf-8",
    )
    result = CliRunner().invoke(
        app, ["run", "train.py", "--out", str(tmp_path / "out")], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 2, result.output
    reason = (
        "w.grad is None: w does not reach what backward pass 1 differentiated; the path is "
        "cut by detach() at train.py:4"
    )
    assert f"⚠ {reason} (read at train.py:7)" in result.stdout.splitlines()
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: train.py:8: AttributeError: 'NoneType' object has no attribute 'norm' ({reason})"
    )
    assert "Traceback" not in result.output


def test_the_reads_go_to_json_and_back_and_to_their_pass() -> None:
    w = torch.tensor([1.0], requires_grad=True)
    with tracer.trace() as t:
        w.detach().sum()
        (w * 2).sum().backward()
        with torch.no_grad():
            (w + 1).sum()
        y = w * 3
        assert y.grad is None
        (w * 4).sum().backward()
        assert y.grad is None  # read again on another line, after pass 2
    back = Recording.from_json(t.recording.to_json())
    assert back.no_gradients == t.recording.no_gradients
    assert [n.where for n in back.graphs[0].nodes] == [n.where for n in t.graphs[0].nodes]
    first, second = t.recording.per_pass()
    assert [(w.name, w.after) for w in first.no_gradients] == [("y", 1)]
    assert [(w.name, w.after, w.again) for w in second.no_gradients] == [("y", 2, True)]


# -- where a gradient becomes zero, where the first NaN starts ------------------------------------


def test_a_zero_gradient_is_traced_to_the_relu_where_it_starts() -> None:
    w = torch.tensor([1.0, 2.0], dtype=f64, requires_grad=True)
    with tracer.trace() as t:
        relu_line = _line() + 1
        h = torch.relu(w - 5.0)
        (h * 3).sum().backward()
    assert w.grad is not None and not w.grad.any()
    (graph,) = t.graphs
    start = first_zero(graph)
    assert start is not None and start.cause == "inputs ≤ 0"
    node = graph.nodes[start.node]
    assert (node.op, node.name, node.where) == ("ReluBackward0", "h", (__file__, relu_line))
    at = Locator()(__file__, relu_line).spoken()
    line = (
        f"⚠ zero gradient from ReluBackward0 (h) at {at} (step {node.step}) down: every input ≤ 0"
    )
    assert line in format_report(t.recording).splitlines()
    assert "penwidth=5" in tracer.render_dot(t.recording)  # the node is highlighted
    # A zero on one path while the leaf still gets a gradient on another is no problem.
    with tracer.trace() as other:
        (torch.relu(w - 5.0) + w).sum().backward()
    assert first_zero(other.graphs[0]) is None


def test_the_first_nan_value_names_its_line_and_the_input_that_made_it() -> None:
    x = torch.tensor([2.0, -1.0, 3.0], dtype=f64, requires_grad=True)
    with tracer.trace() as t:
        log_line = _line() + 1
        a = torch.log(x)
        b = a * 2  # NaN in, NaN out: not where it starts
        b.sum().backward()
    (graph,) = t.graphs
    start = first_nan_value(graph)
    assert start is not None and start.nan == 1
    assert graph.nodes[start.node].op == "LogBackward0"
    assert graph.nodes[start.node].where == (__file__, log_line)
    assert start.elements == (Element("self", -1.0, (1,)),)
    at = Locator()(__file__, log_line).spoken()
    assert f"⚠ first NaN value: LogBackward0 (a) at {at} made 1 NaN; self = -1 at [1]" in (
        format_report(t.recording).splitlines()
    )


def test_an_intended_minus_infinity_is_not_a_first_nan() -> None:
    scores = torch.randn(3, 3, dtype=f64, requires_grad=True)
    mask = torch.triu(torch.ones(3, 3, dtype=torch.bool), diagonal=1)
    with tracer.trace() as t:
        masked = scores.masked_fill(mask, float("-inf"))
        weights = torch.softmax(masked, dim=-1)
        weights.sum().backward()
    (graph,) = t.graphs
    assert first_nan_value(graph) is None and first_non_finite(graph) is None
    assert "first" not in format_report(t.recording)


def test_an_overflow_to_infinity_is_a_first_value_but_a_mask_written_before_is_not() -> None:
    scores = torch.tensor([1.0, 2.0, 1000.0], dtype=f64, requires_grad=True)
    mask = torch.tensor([False, True, False])
    with tracer.trace() as t:
        masked = scores.masked_fill(mask, float("-inf"))  # meant: not the first
        weights = torch.softmax(masked, dim=0)
        big = torch.exp(scores)  # exp(1000) overflows: this is where the Inf starts
        (weights.sum() + big.sum()).backward()
    (graph,) = t.graphs
    start = first_nan_value(graph)
    assert start is not None and start.inf == 1 and start.nan == 0
    assert graph.nodes[start.node].op == "ExpBackward0"
    assert start.elements == (Element("self", 1000.0, (2,)),)
    assert any(
        line.startswith("⚠ first Inf value: ExpBackward0 (big)") and "self = 1000 at [2]" in line
        for line in format_report(t.recording).splitlines()
    )


def test_the_first_non_finite_gradient_of_a_model_names_the_module_line_it_can() -> None:
    """Code nobody here wrote: a small nn.Module whose forward takes a square root."""

    class Norm(torch.nn.Module):
        def forward(self, v: torch.Tensor) -> torch.Tensor:
            return torch.sqrt((v * v).sum(dim=-1))

    linear = torch.nn.Linear(2, 2, bias=False)
    model = torch.nn.Sequential(linear, Norm())
    with torch.no_grad():
        linear.weight.zero_()  # every output 0: sqrt's gradient 1 / (2 · 0)
    with tracer.trace() as t:
        model(torch.ones(3, 2)).sum().backward()
    (graph,) = t.graphs
    start = first_non_finite(graph)
    assert start is not None and graph.nodes[start.node].op == "SqrtBackward0"
    # Norm.forward is this file's code, the user's: its line is the one named.
    assert graph.nodes[start.node].where is not None
    assert graph.nodes[start.node].where[0] == __file__  # type: ignore[index]
    assert start.elements and start.elements[0].name == "result"
    assert start.elements[0].value == 0.0


def test_the_readmes_example_prints_what_the_readme_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = Path(__file__).resolve().parent.parent
    monkeypatch.chdir(root)
    result = CliRunner().invoke(
        app, ["run", "examples/why.py", "--out", str(tmp_path / "pics")], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 2, result.output
    readme = (root / "README.md").read_text(encoding="utf-8").splitlines()
    said = [line for line in result.stdout.splitlines() if line.startswith("⚠")]
    said += [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(said) == 5
    assert all(line in readme for line in said), said
