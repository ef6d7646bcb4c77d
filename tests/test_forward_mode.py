"""Forward mode beside reverse mode (issue 20, point 5): the tangents are torch's own jvp,
J·v is checked against reverse mode and fails when the two differ, the picture holds a
`tangent` row on every op, the command line's --direction is validated, and a program's
own forward_ad code runs under `trace run` as it runs untraced."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import assert_golden, one_error_line
from test_observer_programs import run_both, same_bits
from typer.testing import CliRunner

import tracer
from tracer.cli import app
from tracer.errors import TracerError
from tracer.exercises import get
from tracer.model.forward import Direction
from tracer.model.graph import Recording
from tracer.output.render import render_dot

f64 = torch.float64


def cli(*args: str | Path):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "250"})


def constant(recording: Recording, name: str) -> torch.Tensor:
    """A tensor of the reverse graph (a constant or a leaf), rebuilt from its exact values."""
    node = next(n for n in recording.graphs[0].nodes if n.name == name)
    data = node.forward[0]
    assert data is not None and data.values is not None
    return torch.tensor(data.values, dtype=f64).reshape(data.shape)


def tangent_of(recording: Recording) -> torch.Tensor:
    forward = recording.forward
    assert forward is not None and forward.output is not None
    data = forward.steps[forward.output].tangent
    assert data.values is not None
    return torch.tensor(data.values, dtype=f64).reshape(data.shape)


# -- the tangents are torch's own -------------------------------------------------------------


@pytest.mark.parametrize("direction", ["e1", "e7", "0.5,-1,0,0,2,0,0,0,0,3"])
def test_exercise_a_tangent_is_torch_func_jvp_bit_for_bit(direction: str) -> None:
    recording = get("exercise-a").run(forward=Direction.parse(direction))
    x = constant(recording, "x")
    forward = recording.forward
    assert forward is not None
    v = torch.tensor(forward.direction, dtype=f64)
    jvp = torch.func.jvp(lambda x: torch.log(1 + torch.dot(x, x)), (x,), (v,))[1]
    assert same_bits(tangent_of(recording), jvp)
    # Jv = ∇f · v, the gradient being the lecture's 2x / (1 + xᵀx)
    assert torch.allclose(tangent_of(recording), torch.dot(2 * x / (1 + x @ x), v))
    # each step's tangent: z = xᵀx has dz = 2xᵀv, f = log(1 + z) has df = dz / (1 + z)
    z = next(s for s in forward.steps if s.name == "z")
    assert z.tangent.values is not None
    assert math.isclose(z.tangent.values[0], float(2 * x @ v), rel_tol=1e-12)
    assert forward.check is not None and forward.check.passed
    assert forward.backward_passes == 1 and forward.outputs == 1 and len(forward.direction) == 10


def test_exercise_b_tangent_is_cos_times_av() -> None:
    recording = get("exercise-b").run(forward=Direction.parse("e2"))
    A, b, x = (constant(recording, n) for n in ("A", "b", "x"))
    v = torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0], dtype=f64)
    jvp = torch.func.jvp(lambda x: torch.sin(torch.mv(A, x) + b), (x,), (v,))[1]
    assert same_bits(tangent_of(recording), jvp)
    assert torch.allclose(tangent_of(recording), torch.cos(A @ x + b) * (A @ v))
    forward = recording.forward
    assert forward is not None and forward.check is not None and forward.check.passed
    # J·v for a vector output: one backward per output number, ten rows of J
    assert forward.backward_passes == 10 and forward.outputs == 10
    assert [s.op for s in forward.steps] == ["mv", "add", "sin"]


@pytest.mark.parametrize("slug", ["gaussian", "mlp", "logdet", "worked-example", "cnn"])
def test_gallery_exercises_agree_in_both_modes(slug: str) -> None:
    recording = get(slug).run(forward=Direction())
    assert recording.forward is not None and recording.forward.check is not None
    assert recording.forward.check.passed and recording.passed


def test_an_op_forward_ad_cannot_do_is_one_line() -> None:
    with pytest.raises(TracerError, match=r"^forward mode is not possible here: .*without"):
        get("transformer-layer").run(forward=Direction())


# -- the check of J·v ---------------------------------------------------------------------------


class Doubling(torch.autograd.Function):
    """2x, with a jvp of its own and a backward that may be wrong (`Doubling.factor`)."""

    factor = 2.0

    @staticmethod
    def forward(x: torch.Tensor) -> torch.Tensor:
        return x * 2

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        pass

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad * Doubling.factor

    @staticmethod
    def jvp(ctx, tangent: torch.Tensor) -> torch.Tensor:
        return tangent * 2


def test_jv_check_fails_when_reverse_mode_is_wrong(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.tensor([1.0, 2.0, 3.0], dtype=f64, requires_grad=True)
    t = tracer.forward_mode(lambda x: torch.sin(Doubling.apply(x)), x, direction=[1, 1, 0])
    assert t.recording.forward is not None and t.recording.forward.check is not None
    assert t.recording.forward.check.passed and t.recording.passed
    monkeypatch.setattr(Doubling, "factor", 3.0)  # a wrong backward: reverse mode's J is off
    x.grad = None
    t = tracer.forward_mode(lambda x: torch.sin(Doubling.apply(x)), x, direction=[1, 1, 0])
    check = t.recording.forward.check if t.recording.forward else None
    assert check is not None and not check.passed and t.recording.passed is False
    assert "✗ DISAGREE" in tracer.render_dot(t.recording)


def test_a_function_without_jvp_is_one_line() -> None:
    class NoJvp(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x: torch.Tensor) -> torch.Tensor:
            return x * 2

        @staticmethod
        def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
            return grad * 2

    x = torch.ones(2, dtype=f64, requires_grad=True)
    with pytest.raises(TracerError, match=r"^forward mode is not possible here"):
        tracer.forward_mode(lambda x: NoJvp.apply(x).sum(), x)


# -- the API, on code nobody here wrote -------------------------------------------------------


def test_forward_mode_on_a_small_module() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)
    ).double()
    x = torch.randn(3, dtype=f64, requires_grad=True)
    v = torch.tensor([0.0, 1.0, 0.0], dtype=f64)
    before = [p.detach().clone() for p in model.parameters()]
    t = tracer.forward_mode(model, x, direction=v)
    jvp = torch.func.jvp(model, (x.detach(),), (v,))[1]
    assert same_bits(tangent_of(t.recording), jvp)
    forward = t.recording.forward
    assert forward is not None and [s.op for s in forward.steps] == ["linear", "tanh", "linear"]
    assert forward.inputs[0].name == "x" and forward.backward_passes == 2
    # the parameters are no inputs: no tangent is made for them, and they are unchanged
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert len(t.graphs) == 1  # the reverse graph of the one backward
    assert x.grad is not None  # as after `model(x).backward(ones)`


def test_in_place_ops_carry_the_tangent_on() -> None:
    x = torch.tensor([0.5, 1.5], dtype=f64, requires_grad=True)

    def f(x: torch.Tensor) -> torch.Tensor:
        y = x * 2
        y.mul_(3)
        y.add_(x)
        return y.sin().sum()

    v = torch.tensor([1.0, 2.0], dtype=f64)
    t = tracer.forward_mode(f, x, direction=v)
    forward = t.recording.forward
    assert forward is not None and forward.check is not None and forward.check.passed
    assert [(s.op, s.after, s.inputs) for s in forward.steps] == [
        ("mul", (), (0,)),
        ("mul_", (0,), ()),
        ("add_", (1,), (0,)),
        ("sin", (2,), ()),
        ("sum", (3,), ()),
    ]
    assert same_bits(tangent_of(t.recording), torch.func.jvp(f, (x.detach(),), (v,))[1])


def test_forward_mode_leaves_the_random_generators_as_one_call_does() -> None:
    x = torch.ones(3, dtype=f64, requires_grad=True)

    def noisy(x: torch.Tensor) -> torch.Tensor:
        return (x * torch.rand(3, dtype=f64)).sum()

    torch.manual_seed(5)
    noisy(x.detach())
    expected = torch.rand(4)
    torch.manual_seed(5)
    t = tracer.forward_mode(noisy, x, direction="e2")
    assert torch.equal(torch.rand(4), expected)
    assert t.recording.passed  # J·v is checked on the forward-mode run's own graph


def test_direction_is_checked_against_the_inputs() -> None:
    x = torch.ones(3, dtype=f64, requires_grad=True)
    with pytest.raises(TracerError, match=r"has 2 numbers, but the inputs \(x: 3\) have 3"):
        tracer.forward_mode(lambda x: (x * x).sum(), x, direction=[1, 0])
    with pytest.raises(TracerError, match=r"basis vectors are e1 … e3"):
        tracer.forward_mode(lambda x: (x * x).sum(), x, direction="e4")
    with pytest.raises(TracerError, match="requires_grad=True"):
        tracer.forward_mode(lambda x: (x * x).sum(), torch.ones(3))
    for bad in ("abc", "e0", "1,,2", ""):
        with pytest.raises(TracerError):
            Direction.parse(bad)


def test_the_recording_with_forward_mode_round_trips_through_json() -> None:
    recording = get("exercise-a").run(forward=Direction.parse("e3"))
    text = recording.to_json()
    json.loads(text)  # standard JSON
    again = Recording.from_json(text)
    assert again == recording
    assert render_dot(again) == render_dot(recording)


# -- the picture ------------------------------------------------------------------------------


def test_exercise_a_forward_golden_dot() -> None:
    recording = get("exercise-a").run(forward=Direction())
    dot = render_dot(recording)
    assert dot.count(">tangent<") == 1 + len(recording.forward.steps)  # type: ignore[union-attr]
    assert "one forward pass per input direction (here 1 of n = 10)" in dot
    assert "one backward per output (here 1 of m = 1)" in dot
    assert_golden("exercise-a.forward.gv", dot)


# -- the command line -------------------------------------------------------------------------


def test_cli_forward_reports_and_draws(tmp_path: Path) -> None:
    r = cli("exercise-b", "--forward", "--out", tmp_path / "b.dot")
    assert r.exit_code == 0, r.output
    assert "J·v: forward mode vs reverse mode: ✓ agree" in r.stdout
    assert "here 1 of n = 5" in r.stdout and "here 10 of m = 10" in r.stdout
    assert "cluster_forward" in (tmp_path / "b.dot").read_text()
    r = cli("exercise-a", "--direction", "e10", "--out", tmp_path / "a.dot")  # implies --forward
    assert r.exit_code == 0 and "along v = e10" in r.stdout


@pytest.mark.parametrize(
    ("direction", "says"),
    [
        ("abc", "give comma-separated numbers"),
        ("e0", "e0 is none"),
        ("1,0", "has 2 numbers, but the inputs (x: 10) have 10"),
        ("e11", "basis vectors are e1 … e10"),
    ],
)
def test_cli_bad_direction_is_one_line_and_writes_nothing(
    tmp_path: Path, direction: str, says: str
) -> None:
    out = tmp_path / "a.svg"
    line = one_error_line(cli("exercise-a", "--direction", direction, "--out", out))
    assert says in line
    assert not out.exists()


# -- the first law: the program's own forward_ad, under `trace run` -----------------------------

OWN_FORWARD_AD = """
import sys
import torch
import torch.autograd.forward_ad as fwAD

x = torch.tensor([0.3, -1.2, 2.5], dtype=torch.float64, requires_grad=True)
v = torch.tensor([1.0, 0.5, -2.0], dtype=torch.float64)
with fwAD.dual_level():
    dual = fwAD.make_dual(x, v)
    y = torch.tanh(dual) * torch.exp(dual).sum()
    primal, tangent = fwAD.unpack_dual(y)
    tangent = tangent.clone()
    primal.sum().backward()
torch.save({"primal": primal.detach(), "tangent": tangent, "grad": x.grad}, sys.argv[1])
"""


@pytest.mark.slow
def test_a_programs_own_forward_ad_runs_as_untraced(tmp_path: Path) -> None:
    plain, traced, printed = run_both(tmp_path, OWN_FORWARD_AD)
    assert plain.keys() == traced.keys()
    for key in plain:
        assert same_bits(plain[key], traced[key]), key
    assert "forward mode" not in printed  # tracer ran no forward mode of its own
