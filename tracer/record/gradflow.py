"""The gradient flow over a whole run: a few fused reductions per pass (tracer.model.flow).

`FlowRecorder` belongs to one trace. The trace tells it when a backward pass ends
(`after_pass`, for every pass, recorded in full or not) and hands it the outputs of module
calls (`module_output`); while the trace is open it also hangs a pre- and a post-hook on
every optimizer's step (torch.optim's global step hooks), removed when the trace closes,
whatever raised.

- After each pass: the norms of the parameters' `.grad` and of the parameters themselves,
  one `torch._foreach_norm` call and one transfer (`stack(...).tolist()`). The
  parameters are those of the modules called in the trace (tracer.record.modules) and
  those of the optimizers stepped in it. A parameter's norm is read again only when its
  version (torch's count of in-place changes) has moved: after a step, its norm is taken
  with the step's, and the next pass reuses it.
- Around each optimizer step: a copy of the parameters it will change (those with a
  `.grad`), made just before the step and freed just after, for ‖w_after − w_before‖
  (a foreach subtraction, one foreach norm with ‖w_after‖, one transfer); ‖w_before‖ is
  the norm read at the pass. The copy is the only memory the flow holds beyond its
  numbers, and only during the step. A change torch does not count (made through
  `.data`) between a pass and a step is not seen.
- At the passes recorded in full (`selects`), each call of a module without submodules
  gives its output's mean, std and, for Tanh and Sigmoid, the saturated fraction: three
  numbers kept on the device until the pass ends, then moved in one transfer.

Everything runs with torch's modes, grad mode and the user's modes out of the way
(`quiet_torch`): nothing the program computes, and no state of it, changes. Anything
that goes wrong is a warning, and the run goes on.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)

from tracer.model.flow import ActivationStats, GradientFlow, ParameterFlow
from tracer.record.modules import ModuleTracker
from tracer.record.quiet import quiet_torch

# The flat tails of a saturating activation, where its derivative is below about 0.02.
_SATURATED = 0.99
# The most module outputs kept for one pass: forward passes that no backward follows must
# not grow the flow.
_MOST_PENDING = 4096


class _Quiet:
    """`quiet_torch()`, entering only what is needed, at the cost of about a microsecond:
    it runs at every pass and step. The user's dispatch modes are put aside only when there
    are some; else torch functions are off (first: `_set_grad_enabled` is one) and grad
    mode too."""

    def __enter__(self) -> None:
        self._full = quiet_torch() if torch._C._len_torch_dispatch_stack() else None
        if self._full is not None:
            self._full.__enter__()
            return
        self._off = torch._C.DisableTorchFunction()
        self._off.__enter__()
        self._grad = torch.is_grad_enabled()
        torch._C._set_grad_enabled(False)

    def __exit__(self, *exc: Any) -> None:
        if self._full is not None:
            self._full.__exit__(*exc)
            return
        torch._C._set_grad_enabled(self._grad)
        self._off.__exit__(*exc)


def _numbers(norms: Sequence[torch.Tensor]) -> list[float]:
    """The scalar tensors as floats: one transfer when they share a dtype and device (the
    common case, tried first), else one each."""
    if not norms:
        return []
    try:
        return torch.stack(list(norms)).tolist()
    except RuntimeError:  # mixed dtypes or devices
        return [float(n) for n in norms]


def _norms(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor | None]:
    """Each tensor's 2-norm (a scalar tensor, not yet transferred): one fused call, or one
    at a time where the fused one refuses (a sparse gradient); None for one that cannot be
    read at all."""
    try:
        return list(torch._foreach_norm(list(tensors)))
    except Exception:
        pass
    out: list[torch.Tensor | None] = []
    for t in tensors:
        try:
            dense = t.to_dense() if t.layout != torch.strided else t
            out.append(torch.linalg.vector_norm(dense))
        except Exception:
            out.append(None)
    return out


def _floats(norms: list[torch.Tensor | None]) -> list[float | None]:
    present = _numbers([n for n in norms if n is not None])
    it = iter(present)
    return [None if n is None else next(it) for n in norms]


class FlowRecorder:
    """One trace's gradient flow (see the module docstring); `flow` is the plain data."""

    def __init__(
        self,
        modules: ModuleTracker,
        name_of: Callable[[torch.Tensor], str | None],
        warn: Callable[[str], None],
        selects: Callable[[int], bool] | None = None,
    ) -> None:
        self.flow = GradientFlow()
        self._modules = modules
        self._name_of = name_of
        self._warn = warn
        # Whether pass N will be recorded in full (its module outputs are then summarised
        # during the forward pass before it); every pass when not told.
        self._selects = selects
        self._lock = threading.Lock()
        # Each parameter seen, weakly (the flow keeps no tensor alive), with its series.
        self._series: list[tuple[weakref.ref, ParameterFlow]] = []
        self._ids: dict[int, int] = {}  # id(parameter) -> index in _series
        self._named = -1  # the module tracker's count when its parameters were last read
        # Module outputs' (mean, std, saturated) of the pass to come, on the device.
        self._pending: list[tuple[str, str, torch.Tensor]] = []
        # Per optimizer stepping: its parameters and their copies from before the step.
        self._stepping: dict[
            int, tuple[list[torch.Tensor], list[float | None], list[torch.Tensor]]
        ] = {}
        # Each parameter's norm as last read, with its version then (by id): while the
        # version has not moved, the parameter has not changed and is not read again.
        self._norm_at: dict[int, tuple[weakref.ref, int, float | None]] = {}
        self._handles: list[Any] = []

    # -- the trace's side --------------------------------------------------------------------

    def open(self) -> None:
        """Hang the step hooks on every optimizer (removed by `close`)."""
        self._handles = [
            register_optimizer_step_pre_hook(self._before_step),
            register_optimizer_step_post_hook(self._after_step),
        ]

    def close(self) -> None:
        """Remove the hooks; drop what was kept for a step or a pass that never ended."""
        while self._handles:
            self._handles.pop().remove()
        self._stepping.clear()
        self._pending.clear()
        self._norm_at.clear()

    def wants_outputs(self) -> bool:
        """Whether the forward pass running now belongs to a pass recorded in full."""
        return self._selects is None or self._selects(self.flow.passes + 1)

    def after_pass(self, number: int, recorded: bool) -> None:
        """Backward pass `number` (1 is the first) ended: read every parameter's `.grad`.
        `recorded`: whether the pass is recorded in full (its module outputs are kept)."""
        try:
            with self._lock, _Quiet():
                self._read_pass(number, recorded)
        except Exception as e:  # tracer's problem, never the user's
            self._warn(f"the gradient flow misses a pass ({type(e).__name__}: {e})")

    def drop_passes(self, numbers: set[int]) -> None:
        """Passes recorded in full and then dropped (one that might have been the last,
        when another came): no longer recorded, and their module outputs go with them, so
        that what the flow holds beyond its norms is bounded by the selection."""
        if not numbers:
            return
        with self._lock:
            flow = self.flow
            for n in numbers:
                if 0 < n <= flow.passes:
                    flow.recorded[n - 1] = False
            if any(a.pass_number in numbers for a in flow.activations):
                flow.activations = [a for a in flow.activations if a.pass_number not in numbers]

    def module_output(self, module: torch.nn.Module, output: Any) -> None:
        """A module call returned `output`: summarised when its pass is recorded in full
        and the module has no submodules (a layer, an activation)."""
        if (
            module._modules
            or not isinstance(output, torch.Tensor)
            or not torch.is_grad_enabled()  # an evaluation's forward: no pass differentiates it
            or len(self._pending) >= _MOST_PENDING
            or not self.wants_outputs()
        ):
            return
        try:
            with _Quiet():
                stats = _output_stats(module, output)
            if stats is not None:
                name = self._modules.module_name(module)
                self._pending.append((name or "", type(module).__name__, stats))
        except Exception as e:
            self._warn(f"a module output is not in the gradient flow ({type(e).__name__}: {e})")

    # -- reading ----------------------------------------------------------------------------

    def _learn_modules(self) -> None:
        """The parameters of modules called since the last read, each once."""
        if self._modules.named == self._named:
            return
        self._named = self._modules.named
        for t, name, module, cls in self._modules.parameters():
            self._add(t, name, module, cls)

    def _add(self, t: torch.Tensor, name: str, module: str, cls: str) -> ParameterFlow:
        index = self._ids.get(id(t))
        if index is not None and self._series[index][0]() is t:
            return self._series[index][1]
        series = ParameterFlow(name, module, cls, tuple(t.shape))
        series.grad_norm = [None] * self.flow.passes
        series.data_norm = [None] * self.flow.passes
        series.update_norm = [None] * len(self.flow.steps)
        series.update_base = [None] * len(self.flow.steps)
        self._ids[id(t)] = len(self._series)
        self._series.append((weakref.ref(t), series))
        self.flow.parameters.append(series)
        return series

    def _live(self) -> tuple[list[torch.Tensor], list[ParameterFlow]]:
        tensors, series = [], []
        for ref, s in self._series:
            t = ref()
            if t is not None:
                tensors.append(t)
                series.append(s)
        return tensors, series

    def _read_pass(self, number: int, recorded: bool) -> None:
        self._learn_modules()
        flow = self.flow
        while flow.passes < number - 1:  # passes it was not told of (none, so far)
            flow.recorded.append(False)
            for _, s in self._series:
                s.grad_norm.append(None)
                s.data_norm.append(None)
        flow.recorded.append(recorded)
        tensors, series = self._live()
        for _, s in self._series:  # a parameter no longer alive has no norms from now on
            s.grad_norm.append(None)
            s.data_norm.append(None)
        # A parameter made a non-leaf (a view of another's) has no .grad to read, and
        # reading it would warn: only leaves are read.
        every = [t.grad if t.is_leaf else None for t in tensors]
        with_grad = [i for i, g in enumerate(every) if g is not None]
        grads: list[torch.Tensor] = [g for g in every if g is not None]
        grad_norms, data_norms = self._read(grads, tensors)
        for k, i in enumerate(with_grad):
            series[i].grad_norm[-1] = grad_norms[k]
        for i, value in enumerate(data_norms):
            series[i].data_norm[-1] = value
        pending, self._pending = self._pending, []
        if recorded and pending:
            kept = [st for _, _, st in pending]
            try:
                values: list[list[float]] = torch.stack(kept).tolist()  # one transfer
            except RuntimeError:  # outputs on several devices
                values = [st.tolist() for st in kept]
            for (module, cls, _), (mean, std, saturated) in zip(pending, values, strict=True):
                flow.activations.append(
                    ActivationStats(
                        number,
                        module,
                        cls,
                        mean,
                        std,
                        None if saturated != saturated else saturated,  # NaN: not saturating
                    )
                )

    # -- optimizer steps ----------------------------------------------------------------------

    def _before_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        try:
            with self._lock, _Quiet():
                params = []
                for group in optimizer.param_groups:
                    params += [p for p in group["params"] if p.grad is not None]
                if not params:
                    return
                self._learn_modules()
                fresh = [p for p in params if self._known(p) is None]
                for p in fresh:  # an optimizer's tensor no module owns: named by the code
                    name = self._name_of(p) or f"parameter {len(self._series)}"
                    self._add(p, name, name, "")
                if fresh and self.flow.passes:  # their gradient of the pass just ended
                    fresh_grads = [p.grad for p in fresh if p.grad is not None]  # all of them
                    grad_norms, data_norms = self._read(fresh_grads, fresh)
                    for k, p in enumerate(fresh):
                        s = self._known(p)
                        assert s is not None
                        s.grad_norm[-1], s.data_norm[-1] = grad_norms[k], data_norms[k]
                _, bases = self._read([], params)  # as read at the pass, unless changed since
                copies = [torch.empty_like(p) for p in params]
                torch._foreach_copy_(copies, params)
                self._stepping[id(optimizer)] = (params, bases, copies)
        except Exception as e:
            self._warn(f"the gradient flow misses a step ({type(e).__name__}: {e})")

    def _after_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        try:
            with self._lock, _Quiet():
                taken = self._stepping.pop(id(optimizer), None)
                if taken is None:
                    return
                params, bases, before = taken
                torch._foreach_sub_(before, params)
                # ‖Δw‖, and ‖w‖ after the step (the next pass's, unless changed by then).
                deltas, _ = self._read(before, params)
                del before, taken
                self.flow.steps.append(self.flow.passes)
                for _, every in self._series:
                    every.update_norm.append(None)
                    every.update_base.append(None)
                for k, p in enumerate(params):
                    s = self._known(p)
                    if s is not None:
                        s.update_base[-1], s.update_norm[-1] = bases[k], deltas[k]
        except Exception as e:
            self._warn(f"the gradient flow misses a step ({type(e).__name__}: {e})")

    def _read(
        self, others: list[torch.Tensor], params: list[torch.Tensor]
    ) -> tuple[list[float | None], list[float | None]]:
        """The norms of `others` and of `params`, in one fused call and one transfer; a
        parameter whose version has not moved since its norm was last read is not read
        again (an optimizer's step and any in-place change move it)."""
        cached: list[float | None] = []
        stale: list[int] = []
        for i, p in enumerate(params):
            at = self._norm_at.get(id(p))
            if at is not None and at[0]() is p and at[1] == p._version:
                cached.append(at[2])
            else:
                cached.append(None)
                stale.append(i)
        read = others + [params[i] for i in stale]
        numbers = _floats(_norms(read)) if read else []
        for k, i in enumerate(stale):
            cached[i] = numbers[len(others) + k]
            self._norm_at[id(params[i])] = (weakref.ref(params[i]), params[i]._version, cached[i])
        return numbers[: len(others)], cached

    def _known(self, t: torch.Tensor) -> ParameterFlow | None:
        index = self._ids.get(id(t))
        if index is None or self._series[index][0]() is not t:
            return None
        return self._series[index][1]


def _output_stats(module: torch.nn.Module, output: torch.Tensor) -> torch.Tensor | None:
    """(mean, std, saturated fraction or NaN) of a floating-point output, on its device."""
    if not output.is_floating_point() or output.numel() == 0 or output.layout != torch.strided:
        return None
    d = output.detach()
    if d.dtype not in (torch.float32, torch.float64):
        d = d.float()
    std, mean = torch.std_mean(d, correction=0)
    if isinstance(module, torch.nn.Tanh):
        saturated = (d.abs() > _SATURATED).mean(dtype=d.dtype)
    elif isinstance(module, torch.nn.Sigmoid):
        saturated = ((d < 1 - _SATURATED) | (d > _SATURATED)).mean(dtype=d.dtype)
    else:
        saturated = torch.tensor(float("nan"), dtype=d.dtype, device=d.device)
    return torch.stack([mean, std, saturated])
