"""Every exercise: its manual gradient agrees with autograd, and with finite differences.

The finite-difference oracle needs nothing from an exercise: it re-runs the exercise's
function, shifting one element of one input as that input is created, and reads off the
value the exercise's `backward` differentiated. So adding an exercise stays one function
and its description, and the oracle is independent of both autograd and the manual formula.
"""

from __future__ import annotations

import importlib
import inspect
import itertools
from pathlib import Path

import pytest
import torch
import typer
from torch.overrides import TorchFunctionMode
from typer.testing import CliRunner

import tracer.exercises
from tracer.cli import exercise_command
from tracer.exercises import COMMANDS, Exercise, all_exercises, register
from tracer.exercises._inputs import Manual
from tracer.view.text import check_line

EXERCISES = all_exercises()
SLUGS = [e.slug for e in EXERCISES]

# -- the finite-difference oracle ---------------------------------------------------------

_BACKWARD = (torch.Tensor.backward, torch.autograd.backward)


class _Replay(TorchFunctionMode):
    """Watches one run of an exercise's function.

    Its inputs are the tensors that become leaves requiring grad, in creation order (from
    a factory with requires_grad=True or from `requires_grad_()`). With `shift` =
    (input, index, delta), that element of that input is moved by delta as it is created.
    `value` sums what each backward call differentiated: ⟨root, seed⟩.
    """

    def __init__(self, shift: tuple[int, tuple[int, ...], float] | None = None) -> None:
        super().__init__()
        self.shift = shift
        self.inputs: list[torch.Tensor] = []
        self.value = 0.0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _BACKWARD:
            self._differentiated(func, args, kwargs)
        out = func(*args, **kwargs)
        new_leaf = isinstance(out, torch.Tensor) and out.requires_grad and out.grad_fn is None
        if new_leaf and not any(out is t for t in self.inputs):
            if self.shift is not None and self.shift[0] == len(self.inputs):
                with torch.no_grad():
                    out[self.shift[1]] += self.shift[2]
            self.inputs.append(out)
        return out

    def _differentiated(self, func, args, kwargs) -> None:
        params = inspect.signature(func).bind(*args, **kwargs).arguments
        if func is torch.Tensor.backward:
            roots, seeds = [params["self"]], [params.get("gradient")]
        else:
            tensors = params["tensors"]
            roots = [tensors] if isinstance(tensors, torch.Tensor) else list(tensors)
            given = params.get("grad_tensors")
            if given is None:
                seeds = [None] * len(roots)
            else:
                seeds = [given] if isinstance(given, torch.Tensor) else list(given)
        for root, seed in zip(roots, seeds, strict=False):
            r = root.detach().double()
            s = torch.ones_like(r) if seed is None else torch.as_tensor(seed).double()
            self.value += float((r * s).sum())


def _value(fn, shift: tuple[int, tuple[int, ...], float]) -> float:
    with _Replay(shift) as replay:
        fn()
    return replay.value


def finite_differences(fn, h: float = 1e-6) -> list[tuple[torch.Tensor, torch.Tensor, str]]:
    """(manual gradient, central-difference estimate, label) for each input `fn` checks.

    An intermediate the exercise checks (a non-leaf that retains its gradient, as the
    backprop-by-hand lesson has) cannot be shifted on its own: its hand derivation is
    checked against autograd's by the exercise, and the leaves it leads to here."""
    with _Replay() as base:
        manual: Manual = fn()
    out = []
    for k, (tensor, formula) in enumerate(manual.items()):
        if tensor.grad_fn is not None and tensor.retains_grad:
            continue
        position = next((i for i, t in enumerate(base.inputs) if t is tensor), None)
        assert position is not None, (
            f"checked input {k} was not created as a leaf requiring grad (use a factory "
            "with requires_grad=True or .requires_grad_()): the oracle cannot shift it"
        )
        assert tensor.dtype == torch.float64, f"checked input {k} is {tensor.dtype}, not float64"
        estimate = torch.zeros(tensor.shape, dtype=torch.float64)
        for index in itertools.product(*(range(n) for n in tensor.shape)):
            plus = _value(fn, (position, index, h))
            minus = _value(fn, (position, index, -h))
            estimate[index] = (plus - minus) / (2 * h)
        out.append((formula.detach(), estimate, f"input {k} {list(tensor.shape)}"))
    assert out, "the exercise checks no leaf: nothing for finite differences to shift"
    return out


# -- a deliberately wrong exercise ----------------------------------------------------------


_X = [[0.5, -1.0], [2.5, 1.5]]


def _wrong_cube() -> Manual:
    X = torch.tensor(_X, dtype=torch.float64, requires_grad=True)
    f = torch.sum(X**3)
    f.backward()
    return {X: 3 * X}  # wrong on purpose: ∂f/∂X = 3X²; the largest error, 11.25, is at [1, 0]


WRONG = Exercise(
    slug="wrong-cube",
    title="wrong-cube: f = Σ X³ (a deliberately wrong manual gradient)",
    source="test fixture",
    formula="f = Σᵢⱼ Xᵢⱼ³",
    manual="∂f/∂X = 3X (wrong: it is 3X²)",
    shapes="X ∈ ℝ²ˣ²",
    function="test_exercises:_wrong_cube",
)


# -- the tests -----------------------------------------------------------------------------


@pytest.mark.parametrize("ex", EXERCISES, ids=SLUGS)
def test_every_check_passes(ex: Exercise) -> None:
    recording = ex.run()
    assert recording.checks, "an exercise checks at least one input"
    for check in recording.checks:
        assert check.passed, check_line(check, "exact")
    assert recording.passed is True


@pytest.mark.parametrize("ex", EXERCISES, ids=SLUGS)
def test_manual_gradient_agrees_with_finite_differences(ex: Exercise) -> None:
    for manual, estimate, label in finite_differences(ex.fn):

        def msg(m: str, lbl: str = label) -> str:
            return f"{lbl}: {m}"

        torch.testing.assert_close(manual, estimate, rtol=1e-5, atol=1e-6, msg=msg)


@pytest.mark.parametrize("ex", EXERCISES, ids=SLUGS)
def test_exercise_is_described(ex: Exercise) -> None:
    for text in (ex.title, ex.source, ex.formula, ex.manual, ex.shapes):
        assert text.strip()
    assert ex.slug in ex.title


def test_the_lecture_comes_first() -> None:
    assert SLUGS[:2] == ["exercise-a", "exercise-b"]


def test_every_exercise_function_is_registered() -> None:
    registered = {e.function for e in EXERCISES}
    for module in {f.partition(":")[0] for f in registered}:
        functions = inspect.getmembers(importlib.import_module(module), inspect.isfunction)
        for name, fn in functions:
            if fn.__module__ == module and not name.startswith("_"):
                assert f"{module}:{name}" in registered, f"{module}.{name} is in no exercise"


@pytest.mark.parametrize(
    ("slug", "why"),
    [(COMMANDS[0], "is a `trace` command"), ("exercise-a", "two exercises"), ("Big_Slug", "use")],
)
def test_the_registry_refuses_bad_slugs(slug: str, why: str) -> None:
    before = dict(tracer.exercises._REGISTRY)
    with pytest.raises(ValueError, match=why):
        register(Exercise(slug, "t", "s", "f", "m", "x", function="test_exercises:_wrong_cube"))
    assert tracer.exercises._REGISTRY == before


def test_the_oracle_catches_a_wrong_formula() -> None:
    [(manual, estimate, _)] = finite_differences(WRONG.fn)
    assert not torch.allclose(manual, estimate, rtol=1e-5, atol=1e-6)
    right = 3 * torch.tensor(_X, dtype=torch.float64) ** 2
    torch.testing.assert_close(estimate, right, rtol=1e-5, atol=1e-6)


def test_a_wrong_formula_fails_and_says_where() -> None:
    recording = WRONG.run()
    assert recording.passed is False
    [check] = recording.checks
    assert not check.passed
    assert check.name == "X"
    assert check.max_abs == pytest.approx(11.25)
    assert check.where == (1, 0)
    assert "DISAGREE" in check_line(check, "exact") and "[1, 0]" in check_line(check, "exact")


def test_trace_of_a_wrong_exercise_exits_1_and_still_draws(tmp_path: Path) -> None:
    app = typer.Typer()
    app.command()(exercise_command(WRONG))  # the command `trace wrong-cube` would be
    r = CliRunner().invoke(app, ["--out", str(tmp_path / "wrong.svg")])
    assert r.exit_code == 1, r.output
    assert "DISAGREE" in r.stdout and "[1, 0]" in r.stdout
    assert (tmp_path / "wrong.svg").read_text().rstrip().endswith("</svg>")
