"""Forward mode beside reverse mode, as plain data: the direction `v`, every op of a
forward-mode pass with its value and its tangent, and J·v checked against reverse mode.

Forward mode (`torch.autograd.forward_ad`) pushes a tangent along with each value: the
inputs carry `v`, and every op's output carries the derivative of that output in the
direction `v` (J_op · tangent of its inputs). The output's tangent is J·v, one column
combination of the Jacobian, for the price of one forward pass; reverse mode gives one
row (vᵀJ) per backward pass. `ForwardMode` holds one such pass (tracer.checks.forward_mode
runs it), torch-free, in the order the ops ran.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from tracer.errors import TracerError
from tracer.model.check import Check
from tracer.model.tensor import TensorData

_BASIS = re.compile(r"^e(\d+)$")


@dataclass(frozen=True)
class Direction:
    """The direction `v` along the inputs, flattened and joined in the order the forward
    pass first uses them: the `basis` vector e_k (1-based), or the `values` themselves.
    Its length is known only once the inputs are: `resolve` checks it then. The default
    is e1."""

    basis: int | None = 1
    values: tuple[float, ...] | None = None

    @classmethod
    def parse(cls, text: str) -> Direction:
        """`e3` (the third basis vector) or comma-separated numbers (`0,1,0.5`); a
        TracerError in one line for anything else."""
        given = text.strip().replace(" ", "")
        found = _BASIS.match(given)
        if found is not None:
            k = int(found[1])
            if k < 1:
                raise TracerError(f"direction '{text}': basis vectors are e1, e2, …: e0 is none")
            return cls(basis=k)
        try:
            values = tuple(float(v) for v in given.split(","))
        except ValueError:
            raise TracerError(
                f"direction '{text}': give comma-separated numbers (0,1,0) or a basis vector (e3)"
            ) from None
        return cls(basis=None, values=values)

    @classmethod
    def of(cls, given: Any) -> Direction:
        """A direction from what a caller gave: None (e1), a Direction, text (see
        `parse`), or a sequence of numbers (a list, a tuple, a flat tensor's `tolist()`)."""
        if given is None:
            return cls()
        if isinstance(given, Direction):
            return given
        if isinstance(given, str):
            return cls.parse(given)
        try:
            return cls(basis=None, values=tuple(float(v) for v in given))
        except (TypeError, ValueError):
            raise TracerError(
                f"direction {given!r}: give a sequence of numbers, or text such as 'e3'"
            ) from None

    def text(self) -> str:
        """How the direction was given: "e1", "(0, 1, 0)"."""
        if self.basis is not None:
            return f"e{self.basis}"
        return "(" + ", ".join(f"{v:g}" for v in self.values or ()) + ")"

    def resolve(self, n: int, inputs: str) -> tuple[float, ...]:
        """The direction as n numbers, for inputs of n numbers in all (`inputs` says which,
        for the message); a TracerError when it does not fit them."""
        if self.basis is not None:
            if self.basis > n:
                raise TracerError(
                    f"direction e{self.basis}: the inputs ({inputs}) have {n} numbers, so "
                    f"the basis vectors are e1 … e{n}"
                )
            return tuple(1.0 if i == self.basis - 1 else 0.0 for i in range(n))
        values = self.values or ()
        if len(values) != n:
            raise TracerError(
                f"direction {self.text()} has {len(values)} numbers, but the inputs "
                f"({inputs}) have {n}: give {n} numbers, or a basis vector e1 … e{n}"
            )
        return values


@dataclass(frozen=True)
class ForwardInput:
    """An input the forward pass carried a tangent on: its name, and its part of `v`."""

    name: str
    tangent: TensorData  # v's numbers for this input, in its shape


@dataclass
class TangentStep:
    """One op of the forward-mode pass, in the order it ran: what it is (`op`, torch's
    function name: "dot", "log", "add"), the variable the code bound its output to,
    its output's value and its tangent (the derivative of the value along v), and which
    earlier steps (`after`) and inputs (`inputs`, by index) it took."""

    id: int
    op: str
    name: str | None
    value: TensorData
    tangent: TensorData
    after: tuple[int, ...] = ()
    inputs: tuple[int, ...] = ()


@dataclass
class ForwardMode:
    """One forward-mode pass along `direction` and its check against reverse mode.

    `output` is the step whose value the program differentiated (the tensor it called
    backward on, or the value the function returned): its tangent is J·v. `check`
    compares it (as `Check.autograd`) with reverse mode's J·v (`Check.manual`): J's rows
    by `backward_passes` backward passes (one per output number), times v. `outputs` is
    how many numbers the output has (m), `len(direction)` how many the inputs have (n).
    """

    direction: tuple[float, ...]
    given: str  # how the direction was given: "e1", "(0, 1, 0)"
    inputs: list[ForwardInput] = field(default_factory=list)
    steps: list[TangentStep] = field(default_factory=list)
    output: int | None = None
    output_name: str | None = None
    outputs: int = 1
    backward_passes: int = 0
    check: Check | None = None

    @property
    def passed(self) -> bool | None:
        return None if self.check is None else self.check.passed
