"""Checks: autograd's gradient compared with a result the user gives or shows.

Every way a check is made ends in `record`: `tracer.check` / `Trace.check` (a manual
result, or finite differences through `oracle`), the user's own comparisons of a gradient
that the forward recorder sees (`note_allclose`: torch.allclose; `note_equality`: ==,
torch.equal, isclose), and manual results recognised by tracer.manual. A manual result
with a graph of its own has that graph captured and drawn beside autograd's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from types import FrameType
from typing import TYPE_CHECKING, Any

import torch

from tracer.capture import GraphCapture, root_node
from tracer.compare import compare
from tracer.graph import Check
from tracer.names import in_torch, is_user_name, namespaces, outward, user_frame

if TYPE_CHECKING:
    from tracer.session import Trace

FINITE_DIFFERENCES = "finite differences"  # a Check's `how` when tracer.numeric made it


def record(
    trace: Trace,
    name: str,
    grad: torch.Tensor | None,
    manual: torch.Tensor,
    *,
    rtol: float | None,
    atol: float | None,
    how: str = "check",
    verdict: bool | None = None,
) -> Check:
    """Compare and record, with the manual formula's graph when it has one; `verdict`,
    when given, is the one the user's code saw (allclose's)."""
    passes = trace.recording.backward_graphs()
    of = None
    if passes:
        last = passes[-1]
        of = last.node(last.roots[0]).name
    result = compare(name, grad, manual, rtol=rtol, atol=atol, max_values=trace.max_values, of=of)
    passed = result.passed if verdict is None else verdict
    result = replace(result, after=len(passes), how=how, passed=passed)
    if manual.grad_fn is not None:
        with torch._C.DisableTorchFunction():
            capture = GraphCapture(
                [root_node(manual)],
                kind="manual",
                number=len(passes),
                name_of=trace.name_of,
                max_values=trace.max_values,
                values=trace.values,
                saved=trace.saved,
            )
            graph = capture.finish()
        graph.derivative = result.derivative
        trace.recording.graphs.append(graph)
    trace.recording.checks.append(result)
    return result


def note_allclose(trace: Trace, args: tuple, kwargs: dict, verdict: bool, frame: FrameType) -> None:
    """The code called allclose: when the user's code (not tracer's, which compares
    with allclose too) compared a gradient with it, record that as a check."""
    caller = user_frame(frame)
    if caller is None or caller is not outward(frame, in_torch):
        return  # tracer's own allclose (or one inside a library): not the user's check
    a = args[0] if args else kwargs.get("input", kwargs.get("trace"))
    b = args[1] if len(args) > 1 else kwargs.get("other")
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        return
    rtol = float(args[2] if len(args) > 2 else kwargs.get("rtol", 1e-5))
    atol = float(args[3] if len(args) > 3 else kwargs.get("atol", 1e-8))
    trace._name_from_frame(caller)  # also the names the manual formula's graph shows
    for grad, manual in ((a, b), (b, a)):
        name = gradient_of(trace, grad, caller)
        if name is not None:
            record(trace, name, grad, manual, rtol=rtol, atol=atol, how="allclose", verdict=verdict)
            return
    # Neither side is a gradient: not a comparison we report.


def gradient_of(trace: Trace, t: torch.Tensor, frame: FrameType) -> str | None:
    """The name `t` is the gradient of, when it is one: a result of torch.autograd.grad,
    the `.grad` of a named leaf, or that of a parameter of a module in the user's
    namespaces ("model.weight"); else None."""
    entry = trace._grad_results.get(id(t))
    if entry is not None and entry[0]() is t:
        return entry[1]
    for tensor, name in trace._names.tensors():
        if tensor.is_leaf and tensor.requires_grad:
            if tensor.grad is t:
                return name
    frame = user_frame(frame)
    for namespace in namespaces(frame) if frame is not None else ():
        for name, value in list(namespace.items()):
            if isinstance(value, torch.nn.Module) and is_user_name(name):
                for pname, p in value.named_parameters():
                    if p.grad is t:
                        return f"{name}.{pname}"
    return None


def note_equality(
    trace: Trace, how: str, args: tuple, kwargs: dict, out: Any, frame: FrameType
) -> None:
    """The code compared a gradient elementwise (`x.grad == 4 * x`, `torch.equal`,
    `torch.isclose`): recorded as a check, with the verdict the code saw (all equal)."""
    a = args[0] if args else kwargs.get("input", kwargs.get("trace"))
    b = args[1] if len(args) > 1 else kwargs.get("other")
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        return  # `x.grad == 0`: a mask, not a comparison with a result
    if a.shape != b.shape or not (a.is_floating_point() and b.is_floating_point()):
        return
    caller = user_frame(frame)
    if caller is None or caller is not outward(frame, in_torch):
        return  # tracer's own comparison, or one inside a library
    if how == "isclose":
        rtol = float(args[2] if len(args) > 2 else kwargs.get("rtol", 1e-5))
        atol = float(args[3] if len(args) > 3 else kwargs.get("atol", 1e-8))
    else:
        rtol = atol = 0.0
    verdict = bool(out) if isinstance(out, bool) else bool(out.all())
    trace._name_from_frame(caller)
    for grad, manual in ((a, b), (b, a)):
        name = gradient_of(trace, grad, caller)
        if name is not None:
            record(trace, name, grad, manual, rtol=rtol, atol=atol, how=how, verdict=verdict)
            return


def oracle(
    tensor: torch.Tensor,
    manual: torch.Tensor | None,
    fn: Callable[[torch.Tensor], torch.Tensor] | None,
    rtol: float | None,
    atol: float | None,
) -> tuple[torch.Tensor, float | None, float | None, str]:
    """What `check` compares with: the manual result, or finite differences of `fn` (with
    their own, looser tolerances unless given); and the Check's `how`."""
    if manual is not None and fn is not None:
        raise TypeError("tracer.check: give manual= or fn=, not both")
    if manual is not None:
        return manual, rtol, atol, "check"
    if fn is None:
        raise TypeError(
            "tracer.check(x) needs what to compare x.grad with: the hand-derived gradient "
            "(tracer.check(x, manual)), or the function backward differentiated, as a "
            "function of x, for finite differences (tracer.check(x, fn=lambda x: ...))"
        )
    from tracer.numeric import FD_TOLERANCES, finite_differences

    numeric = finite_differences(fn, tensor)
    return (
        numeric,
        FD_TOLERANCES[0] if rtol is None else rtol,
        FD_TOLERANCES[1] if atol is None else atol,
        FINITE_DIFFERENCES,
    )
