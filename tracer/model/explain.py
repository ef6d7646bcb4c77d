"""Explanations as plain data: an error the traced code raised (the words are
tracer.view.text's `inplace_error_text`), and why a tensor's `.grad` is None
(`no_gradient_text`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class InPlaceError:
    """A backward that failed because a tensor some node saved was changed in place after.

    `name` is the tensor's variable name, `op` the in-place op that changed it ("mul_")
    and `where` the user's line that ran it (file name as in the code, line), each None
    when not seen (with `values=False` the forward is not watched). `made_by` is the op
    that made the tensor ("SigmoidBackward0"), `needed_by` the node that saved it and
    needed it as it was when it ran, `saved_where` the user's line that ran that node's op
    (None when not seen), `expected` and `actual` its versions then and now.
    """

    name: str | None
    op: str | None
    where: tuple[str, int] | None
    made_by: str
    needed_by: str | None
    expected: int
    actual: int
    saved_where: tuple[str, int] | None = None


# How the path from a tensor to what backward differentiated was cut: `x.detach()`,
# `x.data`, or an op run on `x` under `torch.no_grad()` (or `inference_mode`).
CutKind = Literal["detach", "data", "no_grad"]


@dataclass(frozen=True)
class Cut:
    """Where the user's code cut a tensor off the graph: `kind` (see CutKind), `op` the op
    that ran ("detach", "data", "mul" under no_grad), `where` the user's line (file name as
    in the code, line), None when not seen."""

    kind: CutKind
    op: str
    where: tuple[str, int] | None


# Why a tensor's `.grad` is None (the words are tracer.view.text's `no_gradient_text`):
# "dtype": an integer or bool tensor, which has no gradient; "not-leaf": made by an op,
# and not asked to retain its gradient; "no-requires-grad": needs no gradient (made
# without requires_grad=True, or by a cut); "no-backward": no backward pass has run;
# "not-reached": not in what the latest pass differentiated; "cleared": it was in the
# latest pass, and its .grad was set to None after (zero_grad); "none": none of these.
NoGradientReason = Literal[
    "dtype", "not-leaf", "no-requires-grad", "no-backward", "not-reached", "cleared", "none"
]


@dataclass(frozen=True)
class NoGradient:
    """A tensor whose `.grad` is None, and why (see NoGradientReason).

    `name` is the tensor's variable name, `made_by` the op that made a non-leaf
    ("MulBackward0"), `dtype` an integer tensor's ("int64"), `after` how many backward
    passes had run, `cut` where its path to the loss was cut (or the cut that made it,
    for "no-requires-grad"), `where` the user's line that read the `.grad` (None for a
    check, which says where it is itself). `again`: the same tensor read as None before,
    on another line (the report tells each tensor once; an error on this line is still
    explained with it).
    """

    name: str
    reason: NoGradientReason
    after: int = 0
    made_by: str | None = None
    dtype: str | None = None
    cut: Cut | None = None
    where: tuple[str, int] | None = None
    again: bool = False


@dataclass(frozen=True)
class Element:
    """One number of a tensor the recording holds, named as torch's formula names it:
    "result = 0 at [0]" (`name` "result", `value` 0.0, `index` (0,))."""

    name: str
    value: float
    index: tuple[int, ...]


# What starts where (see Start): "gradient": the first NaN or Inf gradient; "value": the
# first NaN forward value; "zero": the first all-zero gradient.
StartKind = Literal["gradient", "value", "zero"]
# Why a node sent an all-zero gradient, where the recording tells: "inputs ≤ 0": a ReLU
# (or threshold) whose every input was ≤ 0, so its result is all zero.
ZeroCause = Literal["inputs ≤ 0"]


@dataclass(frozen=True)
class Start:
    """Where a problem starts in a backward pass (the words are tracer.view.text's
    `start_text`; tracer.view.report finds them).

    `node` is the node that made it: for a gradient, the earliest node in the engine's
    order that sent a NaN, Inf or all-zero gradient (to `to`) while what it received was
    finite (not all zero); for a value, the op whose output holds a NaN while its inputs
    held none. `nan` and `inf` count what it made, `formula` is torch's chain-rule step
    for that input (a gradient), `elements` the values that explain it (the formula's
    names, or the op's inputs, at the first bad element), `cause` why a gradient is zero.
    """

    kind: StartKind
    node: int
    to: int | None = None
    nan: int = 0
    inf: int = 0
    formula: str | None = None
    elements: tuple[Element, ...] = ()
    cause: ZeroCause | None = None
