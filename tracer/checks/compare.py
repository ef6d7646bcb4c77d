"""Check: compare autograd's gradient with the hand-derived ("manual") one."""

from __future__ import annotations

import torch

from tracer.model.check import Check
from tracer.model.options import DEFAULT_MAX_VALUES
from tracer.record.summary import summarise

# torch.testing.assert_close's defaults: tight enough to catch a wrong formula, loose
# enough for the rounding of two different but correct ways of computing the same thing.
_TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-7, 1e-7),
    torch.complex128: (1e-7, 1e-7),
    torch.float32: (1.3e-6, 1e-5),
    torch.complex64: (1.3e-6, 1e-5),
    torch.float16: (1e-3, 1e-5),
    torch.bfloat16: (1.6e-2, 1e-5),
}


def tolerances(dtype: torch.dtype) -> tuple[float, float]:
    """(rtol, atol) for comparing tensors of this dtype."""
    return _TOLERANCES.get(dtype, (1.3e-6, 1e-5))


def _unravel(flat: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The index of element `flat` of a row-major tensor of `shape` (torch.unravel_index
    would import sympy: half a second on the check path)."""
    index = []
    for size in reversed(shape):
        flat, i = divmod(flat, size) if size else (flat, 0)
        index.append(i)
    return tuple(reversed(index))


@torch.no_grad()
def compare(
    name: str,
    grad: torch.Tensor | None,
    manual: torch.Tensor,
    *,
    rtol: float | None = None,
    atol: float | None = None,
    max_values: int = DEFAULT_MAX_VALUES,
    of: str | None = None,
    no_gradient: str | None = None,
) -> Check:
    """Compare `grad` (autograd's) with `manual` elementwise, as `torch.allclose` would.
    `no_gradient` says why there is none, when `grad` is None and the caller knows."""
    manual = manual.detach()
    default_rtol, default_atol = tolerances(manual.dtype)
    rtol = default_rtol if rtol is None else rtol
    atol = default_atol if atol is None else atol
    manual_data = summarise(manual, max_values)

    def failed(problem: str) -> Check:
        autograd = None if grad is None else summarise(grad, max_values)
        inf = float("inf")
        return Check(name, autograd, manual_data, inf, inf, None, rtol, atol, False, problem, of)

    if grad is None:
        return failed(
            no_gradient or "autograd gave no gradient (is requires_grad set, and did backward run?)"
        )
    grad = grad.detach()
    if grad.shape != manual.shape:
        return failed(
            f"shapes differ: autograd {list(grad.shape)}, manual {list(manual.shape)} "
            "(.grad has the shape of the tensor; a row/column mix-up?)"
        )
    a = grad.to("cpu", torch.complex128 if grad.is_complex() else torch.float64)
    m = manual.to("cpu", a.dtype)
    err = (a - m).abs()
    err = torch.where(torch.isnan(a) & torch.isnan(m), torch.zeros_like(err), err)
    scale = m.abs()
    rel = torch.where(err == 0, torch.zeros_like(err), err / scale)
    worst = int(torch.nan_to_num(err, nan=float("inf")).flatten().argmax()) if err.numel() else 0
    where = _unravel(worst, tuple(err.shape))
    passed = bool(torch.allclose(a, m, rtol=rtol, atol=atol, equal_nan=True))
    return Check(
        name=name,
        autograd=summarise(grad, max_values),
        manual=manual_data,
        max_abs=float(err.max()) if err.numel() else 0.0,
        max_rel=float(rel.max()) if rel.numel() else 0.0,
        where=where if err.numel() else None,
        rtol=rtol,
        atol=atol,
        passed=passed,
        of=of,
    )
