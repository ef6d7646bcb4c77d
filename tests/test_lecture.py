"""The lecture as written: manual results recognised where the user wrote them
(tracer.checks.manual), the chain-rule step on every node (tracer.derivatives.chainrule), and finite
differences as a second oracle (tracer.checks.numeric)."""

from __future__ import annotations

import random
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
from conftest import drawn
from nbformat.v4 import new_code_cell, new_notebook
from typer.testing import CliRunner

import tracer
from cli import app
from tracer.exercises import get
from tracer.model.graph import Recording
from tracer.output.dot import DISAGREE_FILL
from tracer.output.render import RenderOptions, render_dot

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
f64 = torch.float64


def cli(*args: str | Path):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def traced(command: str, source: Path, out: Path) -> tuple[int, list[Recording], str]:
    """Run `trace run|notebook` with JSON pictures: exit code, one Recording per pass."""
    result = cli(command, source, "--out", out, "--format", "json")
    assert "Traceback" not in result.output, result.output
    found = [out / name for name in drawn(out)] if out.is_dir() else []
    return result.exit_code, [Recording.from_json(p.read_text()) for p in found], result.output


def notebook(folder: Path, *cells: str) -> Path:
    path = folder / "nb.ipynb"
    path.write_text(nbformat.writes(new_notebook(cells=[new_code_cell(c) for c in cells])))
    return path


def manual_root(recording: Recording) -> str:
    (graph,) = [g for g in recording.graphs if g.kind == "manual"]
    return graph.node(graph.roots[0]).op


# -- recognised in the lecture as written ------------------------------------------------


def test_lecture_notebook_as_written_is_checked_and_agrees(tmp_path: Path) -> None:
    code, passes, output = traced(
        "notebook", EXAMPLES / "lecture_as_written.ipynb", tmp_path / "pics"
    )
    assert code == 0, output
    assert len(passes) == 2
    for p in passes:
        (check,) = p.checks
        assert (check.how, check.name, check.passed) == ("recognised", "x", True)
        assert check.of == "f"
    # (a) the manual result `(x / (1 + z))*2`, shown before backward, ends in a Mul.
    assert manual_root(passes[0]) == "MulBackward0"
    # (b) `torch.matmul(vector, matrix)` runs as unsqueeze → mm → in-place squeeze_ of the
    # result in torch 2.x, so the manual graph's last node is the in-place squeeze's class.
    assert manual_root(passes[1]) == "SqueezeBackward4"
    assert "✓ x (recognised)" in output


def test_lecture_notebook_with_a_wrong_formula_disagrees(tmp_path: Path) -> None:
    code, passes, output = traced(
        "notebook", EXAMPLES / "lecture_as_written_sin.ipynb", tmp_path / "pics"
    )
    assert code == 1, output
    (a,), (b,) = passes[0].checks, passes[1].checks
    assert a.passed and a.how == "recognised"
    assert not b.passed and b.how == "recognised" and b.max_abs > 0.1
    dot = render_dot(passes[1])
    assert DISAGREE_FILL in dot and "DISAGREE" in dot and "manual (recognised)" in dot


def test_lecture_script_as_written_is_checked(tmp_path: Path) -> None:
    code, passes, output = traced("run", EXAMPLES / "lecture_as_written.py", tmp_path / "pics")
    assert code == 0, output
    assert [[(c.how, c.passed) for c in p.checks] for p in passes] == [
        [("recognised", True)],
        [("recognised", True)],
    ]


def test_the_users_own_checks_are_not_doubled(tmp_path: Path) -> None:
    """examples/lecture.ipynb shows its manual results and checks them itself: one check."""
    code, passes, _ = traced("notebook", EXAMPLES / "lecture.ipynb", tmp_path / "pics")
    assert code == 0
    assert [[c.how for c in p.checks] for p in passes] == [["check"], ["allclose"]]


# -- no false alarms ----------------------------------------------------------------------


def test_tensors_that_only_have_the_leafs_shape_are_not_flagged(tmp_path: Path) -> None:
    nb = notebook(
        tmp_path,
        "import torch\nx = torch.tensor([0.5, 1.0, 2.0], requires_grad=True)\nx",
        "y = torch.sin(x)\ny",  # a forward intermediate, shown before backward
        "y.sum().backward()\nx.grad",  # the gradient itself
        "x.grad - torch.cos(x)",  # computed from the gradient: a difference, not a result
        "print(y)",  # the intermediate again, after backward
        "w = torch.exp(x)",  # bound only, and wrong: a name can hold anything
        "print(torch.ones(3, dtype=torch.float64))",  # built from no leaf
    )
    code, passes, output = traced("notebook", nb, tmp_path / "pics")
    assert code == 0, output
    (p,) = passes
    assert p.checks == []


def test_d2l_equality_on_a_gradient_is_a_check(tmp_path: Path) -> None:
    nb = notebook(
        tmp_path,
        "import torch\nx = torch.arange(4.0, requires_grad=True)",
        "y = 2 * torch.dot(x, x)\ny.backward()",
        "x.grad == 4 * x",
    )
    code, passes, output = traced("notebook", nb, tmp_path / "pics")
    assert code == 0, output
    ((check,),) = [p.checks for p in passes]
    assert (check.how, check.name, check.passed, check.bit_exact) == ("==", "x", True, True)


def test_a_bound_result_that_agrees_is_recognised_in_a_script(tmp_path: Path) -> None:
    script = tmp_path / "s.py"
    script.write_text(
        "import torch\n"
        "t = torch.tensor([0.3, 0.7], dtype=torch.float64, requires_grad=True)\n"
        "g = torch.log(t)\n"  # bound before backward, and a forward intermediate: not it
        "g.sum().backward()\n"
        "by_hand = 1 / t\n"
    )
    code, passes, output = traced("run", script, tmp_path / "pics")
    assert code == 0, output
    ((check,),) = [p.checks for p in passes]
    assert (check.how, check.name, check.passed) == ("recognised", "t", True)


# -- the chain-rule step on every node ----------------------------------------------------


def test_rows_show_the_formula_with_the_users_names() -> None:
    recording = get("exercise-a").run()
    full = render_dot(recording)
    assert "∂/∂self: grad · tensor   (self = x, tensor = x)" in full  # DotBackward0 z
    assert "∂/∂tensor: grad · self   (tensor = x, self = x)" in full
    assert "∂/∂self: grad   (self = z)" in full  # AddBackward0 of 1 + z
    # The two parallel edges of dot(x, x) say which input each feeds.
    assert full.count("<I>∂/∂self</I>") >= 1 and full.count("<I>∂/∂tensor</I>") == 1
    slide = render_dot(recording, RenderOptions("slide"))
    assert "grad · tensor" not in slide and "<I>∂/∂tensor</I>" in slide
    assert "grad · tensor" in render_dot(recording, RenderOptions("slide", explain=True))


def test_constants_are_bound_by_their_position() -> None:
    recording = get("exercise-b").run()
    full = render_dot(recording)
    assert "∂/∂vec: selfᵀ @ grad   (vec = x, self = A)" in full  # MvBackward0
    assert "∂/∂self: grad · cos(self)   (self = z)" in full  # SinBackward0 f


def test_a_node_without_a_formula_says_nothing() -> None:
    class Twice(torch.autograd.Function):
        @staticmethod
        def forward(ctx, t):
            return 2 * t

        @staticmethod
        def backward(ctx, g):
            return 2 * g

    x = torch.tensor([1.0, 2.0], requires_grad=True)
    with tracer.trace() as t:
        Twice.apply(x).sum().backward()
    dot = render_dot(t.recording)
    assert "TwiceBackward" in dot
    assert "∂/∂self: grad   " not in dot  # SumBackward0 has one; TwiceBackward none
    assert dot.count('<FONT POINT-SIZE="9" COLOR="#3b3b8f">') == 1  # the sum's only


def test_the_cli_takes_explain(tmp_path: Path) -> None:
    out = tmp_path / "a.dot"
    result = cli("exercise-a", "--out", out, "--detail", "slide", "--explain")
    assert result.exit_code == 0, result.output
    assert "grad · tensor" in out.read_text()


# -- finite differences ------------------------------------------------------------------


def test_finite_differences_check_without_a_closed_form() -> None:
    x = torch.tensor([0.1801, 0.3444, 0.4006], dtype=f64, requires_grad=True)
    with tracer.trace() as t:
        f = torch.log(1 + torch.dot(x, x))
        f.backward()
    assert x.grad is not None
    grad = x.grad.clone()
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    # numpy's stub types get_state() as get_state(legacy=False), a dict; it is the tuple
    numpy_key = np.random.get_state()[1].copy()  # type: ignore[index]
    states = torch.get_rng_state(), numpy_key, random.getstate()

    def noisy(t: torch.Tensor) -> torch.Tensor:
        torch.rand(1), np.random.random(), random.random()  # the generators must not move
        return torch.log(1 + torch.dot(t, t))

    check = t.check(x, fn=noisy, quiet=True)
    assert check.passed and check.how == "finite differences" and check.max_abs < 1e-8
    assert x.grad is not None and torch.equal(x.grad, grad)
    assert torch.equal(torch.get_rng_state(), states[0])
    assert (np.random.get_state()[1] == states[1]).all()  # type: ignore[index]  # as above
    assert random.getstate() == states[2]
    assert "autograd vs finite differences: ✓ agree" in render_dot(t.recording)
    wrong = tracer.check(x, fn=lambda t: torch.dot(t, t), quiet=True)  # outside a trace
    assert not wrong.passed and wrong.how == "finite differences"


def test_check_says_what_it_needs() -> None:
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    (x * 2).sum().backward()
    with pytest.raises(TypeError, match="fn=lambda x"):
        tracer.check(x)
    with pytest.raises(TypeError, match="real scalar"):
        tracer.check(x, fn=lambda t: t * 2)
