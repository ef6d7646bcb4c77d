"""Forward mode run and checked: a program's forward pass carried along a direction v
(tracer.record.tangents), its output's tangent J·v compared with reverse mode's J·v.

Reverse mode gives J one row at a time: a backward pass seeded with the i-th basis vector
of the output gives row i (vᵀJ for v = e_i). So reverse mode's J·v takes one backward per
output number (m of them), forward mode's one forward pass per direction: the cost
contrast the picture states (MML §5.6).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.autograd.forward_ad as forward_ad

from tracer.checks.compare import compare
from tracer.checks.numeric import random_state_kept
from tracer.errors import TracerError
from tracer.model.forward import Direction, ForwardMode
from tracer.model.options import DEFAULT_MAX_VALUES
from tracer.record.tangents import TangentRecorder

# What torch says when forward AD cannot go through an op (a kernel without a forward
# derivative, a custom Function without `jvp`).
_FORWARD_AD_MISSING = ("forward AD", "forward-mode AD", "forward mode AD")


def requires_grad_leaf(t: torch.Tensor) -> bool:
    """An exercise's inputs: the leaf tensors that require grad (its checked inputs)."""
    return t.is_leaf and t.requires_grad


def no_other(t: torch.Tensor) -> bool:
    """No input beyond those given to the program (see run_forward_mode's `given`)."""
    return False


class _Parts:
    """Each input's part of v, given in the order the inputs are first used: the next
    numbers of v, shaped as the input (zeros beyond v's end: its length is checked once
    all inputs are known, see Direction.resolve)."""

    def __init__(self, direction: Direction) -> None:
        self.direction = direction
        self.used = 0  # how many numbers the inputs so far take

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        start, n = self.used, t.numel()
        self.used += n
        if self.direction.basis is not None:
            numbers = [1.0 if start + i == self.direction.basis - 1 else 0.0 for i in range(n)]
        else:
            given = list((self.direction.values or ())[start : start + n])
            numbers = given + [0.0] * (n - len(given))
        with torch._C.DisableTorchFunction():
            return torch.tensor(numbers, dtype=t.dtype, device=t.device).reshape(t.shape)


def run_forward_mode(
    program: Callable[..., Any],
    direction: Direction,
    is_input: Callable[[torch.Tensor], bool] = requires_grad_leaf,
    max_values: int = DEFAULT_MAX_VALUES,
    given: Sequence[torch.Tensor] = (),
) -> ForwardMode:
    """Run `program` once in forward mode along `direction` and check the output's
    tangent against reverse mode. The inputs are those `is_input` picks, made dual at
    their first use; `given` inputs are made dual first, in order, and passed to the
    program (`program(*duals)`). The output is the tensor of the program's first
    backward call (not run), else what it returns. A TracerError in one line when the
    direction does not fit the inputs, no input is used, or torch's forward AD does not
    support an op the program runs."""
    parts = _Parts(direction)
    recorder = TangentRecorder(is_input, parts, max_values)
    # The program's second run leaves the global random generators as its first left them.
    with forward_ad.dual_level(), random_state_kept():
        try:
            with recorder:
                result = program(*(recorder.dual_of(t) for t in given))
        except (NotImplementedError, RuntimeError) as e:
            if not any(says in str(e) for says in _FORWARD_AD_MISSING):
                raise
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise TracerError(
                f"forward mode is not possible here: {first} (trace it without --forward)"
            ) from None
        recorder.finish_with(result)
        output = recorder.output
        tangent = None if output is None else forward_ad.unpack_dual(output).tangent
    if output is None:
        raise TracerError("forward mode: the program gave no tensor to differentiate")
    if not recorder.inputs:
        raise TracerError(
            "forward mode: no input that requires grad reached an op, so no tangent flows "
            "(give the inputs requires_grad=True)"
        )
    inputs = recorder.input_records()
    sizes = ", ".join(f"{i.name}: {i.tangent.numel}" for i in inputs)
    v = direction.resolve(parts.used, sizes)  # the TracerError for a wrong length
    forward_jv = torch.zeros_like(output) if tangent is None else tangent
    reverse_jv, passes = reverse_mode_jv(output, recorder.inputs, recorder.input_tangents)
    name = recorder.names.get(id(output))
    # Named "v" after the direction: the check reads "∂f/∂v", the directional derivative.
    check = compare("v", forward_jv, reverse_jv, max_values=max_values, of=name)
    return ForwardMode(
        direction=v,
        given=direction.text(),
        inputs=inputs,
        steps=recorder.steps,
        output=recorder.output_step,
        output_name=name,
        outputs=output.numel(),
        backward_passes=passes,
        check=check,
    )


def reverse_mode_jv(
    output: torch.Tensor, inputs: Sequence[torch.Tensor], parts: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, int]:
    """J·v by reverse mode: row i of J by a backward pass seeded with e_i (one pass per
    output number), each row times v. The inputs' `.grad` are not touched (the rows come
    from torch.autograd.grad). Returns J·v in the output's shape, and the passes run."""
    with torch._C.DisableTorchFunction():
        primal = output.detach()
        jv = torch.zeros(primal.numel(), dtype=primal.dtype, device=primal.device)
        if not output.requires_grad:  # it depends on no input: J is zero
            return jv.reshape(primal.shape), 0
        for i in range(primal.numel()):
            seed = torch.zeros_like(jv)
            seed[i] = 1
            rows = torch.autograd.grad(
                output,
                list(inputs),
                grad_outputs=seed.reshape(primal.shape),
                retain_graph=True,
                allow_unused=True,
            )
            jv[i] = sum(
                (
                    (row * part).sum()
                    for row, part in zip(rows, parts, strict=True)
                    if row is not None
                ),
                start=torch.zeros((), dtype=primal.dtype, device=primal.device),
            )
        return jv.reshape(primal.shape), primal.numel()
