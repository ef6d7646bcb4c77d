"""Checks: autograd's gradient compared with a result the user gives or shows.

Every way a check is made ends in `judge` (the comparison, placed after the passes so far)
and is recorded by the trace: `tracer.check` / `Trace.check` (a manual result, or finite
differences through `oracle`), the user's own comparisons of a gradient that the forward
recorder sees (`user_comparison`: allclose, ==, torch.equal, isclose, when one side is a
gradient: `gradient_of`), and manual results recognised by tracer.checks.manual.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from types import FrameType
from typing import Any, NamedTuple

import torch

from tracer.checks.compare import compare
from tracer.checks.numeric import FD_TOLERANCES, finite_differences
from tracer.model.check import Check, How
from tracer.model.explain import Cut, NoGradient
from tracer.model.graph import Recording
from tracer.record.names import in_torch, is_user_name, namespaces, outward, user_frame

# Results of torch.autograd.grad by id, with the name of the input each is the gradient of.
GradResults = Mapping[int, tuple[weakref.ref, str]]


def why_no_gradient(
    t: torch.Tensor,
    name: str,
    passes: int,
    in_latest: bool | None,
    *,
    had_grad: bool = False,
    cut: Cut | None = None,
) -> NoGradient:
    """Why `t.grad` is None (the words are tracer.view.text's `no_gradient_text`).
    `passes`: how many backward passes ran; `in_latest`: whether `t` is in the latest one
    (None: not known, as outside a trace); `had_grad`: whether its `.grad` was set after
    that pass; `cut`: where the user's code cut `t` off the graph (or made it by a cut)."""
    if not (t.is_floating_point() or t.is_complex()):
        dtype = str(t.dtype).removeprefix("torch.")
        return NoGradient(name, "dtype", passes, dtype=dtype)
    if t.grad_fn is not None and not t.retains_grad:
        return NoGradient(name, "not-leaf", passes, made_by=type(t.grad_fn).__name__)
    if not t.requires_grad:
        return NoGradient(name, "no-requires-grad", passes, cut=cut)
    if passes == 0:
        return NoGradient(name, "no-backward", passes)
    if in_latest is False and t.grad_fn is None:
        return NoGradient(name, "not-reached", passes, cut=cut)
    if in_latest and had_grad:
        return NoGradient(name, "cleared", passes)
    return NoGradient(name, "none", passes)


def judge(
    recording: Recording,
    name: str,
    grad: torch.Tensor | None,
    manual: torch.Tensor,
    *,
    rtol: float | None,
    atol: float | None,
    max_values: int,
    how: How = How.CHECK,
    verdict: bool | None = None,
    node: int | None = None,
    no_gradient: str | None = None,
) -> Check:
    """The check of `grad` against `manual`, made after the recording's passes so far, of
    the latest pass's output; `verdict`, when given, is the one the user's code saw;
    `node`, the node of the latest pass whose gradient `grad` is."""
    passes = recording.backward_graphs()
    of = None
    if passes and passes[-1].number == recording.passes_run:  # the latest pass, recorded
        last = passes[-1]
        of = last.node(last.roots[0]).name
    result = compare(
        name,
        grad,
        manual,
        rtol=rtol,
        atol=atol,
        max_values=max_values,
        of=of,
        no_gradient=no_gradient,
    )
    passed = result.passed if verdict is None else verdict
    return replace(result, after=recording.passes_run, how=how, passed=passed, node=node)


@dataclass(frozen=True)
class UserComparison:
    """A comparison of two tensors in the user's own code (`torch.allclose(a, b)`, ...)."""

    a: torch.Tensor
    b: torch.Tensor
    rtol: float | None  # None: the dtype's (an exact comparison is judged within it)
    atol: float | None
    verdict: bool | None  # what the user's allclose or isclose saw; None for an exact one
    caller: FrameType  # the user's frame that made it


def user_comparison(
    how: How, args: tuple, kwargs: dict, out: Any, frame: FrameType
) -> UserComparison | None:
    """The comparison the user's code made with `how`, or None when it is not one that can
    check a gradient: tracer's own or a library's, a mask (`x.grad == 0`), other shapes."""
    a = args[0] if args else kwargs.get("input", kwargs.get("trace"))
    b = args[1] if len(args) > 1 else kwargs.get("other")
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        return None
    if how is How.DIFFERENCE and (a.requires_grad or b.requires_grad):
        return None  # an op of a forward pass (cheap to tell: the common case)
    if how is How.ALLCLOSE:
        if not isinstance(out, bool):
            return None
    elif a.shape != b.shape or not (a.is_floating_point() and b.is_floating_point()):
        return None
    caller = user_frame(frame)
    if caller is None or caller is not outward(frame, in_torch):
        return None  # tracer's own comparison, or one inside a library
    if how.tolerant:
        return UserComparison(a, b, None, None, None, caller)
    rtol = float(args[2] if len(args) > 2 else kwargs.get("rtol", 1e-5))
    atol = float(args[3] if len(args) > 3 else kwargs.get("atol", 1e-8))
    verdict = bool(out) if isinstance(out, bool) else bool(out.all())
    return UserComparison(a, b, rtol, atol, verdict, caller)


class GradientOf(NamedTuple):
    """What a tensor is the gradient of: a name, and the tensor when it is at hand."""

    name: str
    tensor: torch.Tensor | None


def gradient_of(
    t: torch.Tensor,
    frame: FrameType,
    grad_results: GradResults,
    named: Iterable[tuple[torch.Tensor, str]],
) -> GradientOf | None:
    """The name `t` is the gradient of, when it is one: a result of torch.autograd.grad
    (`grad_results`), the `.grad` of a named leaf or of a named non-leaf that retains its
    gradient (`named`: tensor, name), or that of a parameter of a module in the user's
    namespaces ("model.weight"); else None."""
    entry = grad_results.get(id(t))
    if entry is not None and entry[0]() is t:
        return GradientOf(entry[1], None)
    for tensor, name in named:
        if (tensor.is_leaf and tensor.requires_grad) or tensor.retains_grad:
            if tensor.grad is t:
                return GradientOf(name, tensor)
    user = user_frame(frame)
    for namespace in namespaces(user) if user is not None else ():
        for name, value in list(namespace.items()):
            if isinstance(value, torch.nn.Module) and is_user_name(name):
                for pname, p in value.named_parameters():
                    if p.grad is t:
                        return GradientOf(f"{name}.{pname}", p)
    return None


def oracle(
    tensor: torch.Tensor,
    manual: torch.Tensor | None,
    fn: Callable[[torch.Tensor], torch.Tensor] | None,
    rtol: float | None,
    atol: float | None,
) -> tuple[torch.Tensor, float | None, float | None, How]:
    """What `check` compares with: the manual result, or finite differences of `fn` (with
    their own, looser tolerances unless given); and the Check's `how`."""
    if manual is not None and fn is not None:
        raise TypeError("tracer.check: give manual= or fn=, not both")
    if manual is not None:
        return manual, rtol, atol, How.CHECK
    if fn is None:
        raise TypeError(
            "tracer.check(x) needs what to compare x.grad with: the hand-derived gradient "
            "(tracer.check(x, manual)), or the function backward differentiated, as a "
            "function of x, for finite differences (tracer.check(x, fn=lambda x: ...))"
        )
    numeric = finite_differences(fn, tensor)
    return (
        numeric,
        FD_TOLERANCES[0] if rtol is None else rtol,
        FD_TOLERANCES[1] if atol is None else atol,
        How.FINITE_DIFFERENCES,
    )
