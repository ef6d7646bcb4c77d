"""Interception: what tracer installs while a trace is open, and removes when the last one
closes, whatever raised. Three light touches:

- autograd's engine entry point (`torch.autograd.graph._engine_run_backward`, which
  `backward()`, `torch.autograd.backward` and `torch.autograd.grad` all call after
  checking their arguments) is wrapped, in every thread: the pass is handed to the trace
  (`Trace._run_backward`: walked and hooked just before the engine runs, unhooked just
  after). torch's own argument errors happen before it, unchanged.
- global nn.Module forward hooks: which module call makes each node, and the qualified
  names of parameters (tracer.modules).
- a `TorchFunctionMode` per trace (the forward recorder, `ForwardRecorder`) keeps each
  op's output value on the op's own `grad_fn` (see tracer.node_record), notes inputs
  needing no grad (drawn as constants) and the user's own comparisons of a gradient
  (allclose, ==, equal, isclose: recorded as checks). `values=False` leaves it out.

Each thread's passes and checks go to the trace that thread (its `contextvars` context)
opened; a thread that opened none, such as a worker, reports to the one open trace, if
exactly one is open (`current_trace`).
"""

from __future__ import annotations

import contextvars
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.autograd
from torch.overrides import TorchFunctionMode

from tracer import checks

if TYPE_CHECKING:
    from tracer.session import Trace

_ALLCLOSE = {torch.allclose, torch.Tensor.allclose}
# Elementwise comparisons the user's code may check a gradient with (`x.grad == 4 * x`).
_EQUALITY = {
    torch.Tensor.__eq__: "==",
    torch.Tensor.eq: "==",
    torch.eq: "==",
    torch.equal: "equal",
    torch.isclose: "isclose",
    torch.Tensor.isclose: "isclose",
}
# Their results are gradients the engine made, not forward values of the user's ops.
_BACKWARD_CALLS = {torch.Tensor.backward, torch.autograd.backward, torch.autograd.grad}


# -- which trace a thread reports to ------------------------------------------------------

_CURRENT: contextvars.ContextVar[Trace | None] = contextvars.ContextVar(
    "tracer_current", default=None
)
_OPEN: list[Trace] = []  # every open trace, in any thread
_LOCK = threading.Lock()


class _Busy(threading.local):
    """Set while this thread captures: nested engine calls and module hooks pass through.
    False by default, as a class attribute: read at every module call, it raises (and
    catches) no AttributeError in a thread that never set it."""

    active = False


busy = _Busy()


def current_trace() -> Trace | None:
    """The trace this thread's code reports to: the one its context opened, else the only
    open one (a worker thread inside a trace), else None."""
    mine = _CURRENT.get()
    if mine is not None:
        return mine
    with _LOCK:
        return _OPEN[0] if len(_OPEN) == 1 else None


# -- the engine entry point, wrapped while a trace is open -------------------------------

_ENGINE_NAME = "_engine_run_backward"
_original_engine: Callable[..., Any] | None = None


def _traced_engine(t_outputs: Any, *args: Any, **kwargs: Any) -> Any:
    original = _original_engine
    assert original is not None
    trace = current_trace()
    if trace is None or busy.active:
        return original(t_outputs, *args, **kwargs)
    return trace._run_backward(original, t_outputs, args, kwargs)


def _install_engine_hook() -> None:
    global _original_engine
    if _original_engine is None:
        _original_engine = getattr(torch.autograd, _ENGINE_NAME)
        setattr(torch.autograd, _ENGINE_NAME, _traced_engine)


def _remove_engine_hook() -> None:
    global _original_engine
    if _original_engine is not None:
        setattr(torch.autograd, _ENGINE_NAME, _original_engine)
        _original_engine = None


# -- module hooks, installed while a trace is open -----------------------------------------

_module_hooks: list[Any] = []


def _module_pre_hook(module: torch.nn.Module, args: tuple) -> None:
    trace = current_trace()
    if trace is None or busy.active or torch.compiler.is_compiling():
        return
    try:
        # No DisableTorchFunction here, at every call: the tracker touches tensors only at
        # an outermost module's first call, and disables torch functions there.
        trace._modules.enter(module)
    except Exception as e:  # tracer's problem, never the user's
        trace._warn(f"a module call was not recorded ({type(e).__name__}: {e})")


def _module_hook(module: torch.nn.Module, args: tuple, output: Any) -> None:
    trace = current_trace()
    if trace is None or busy.active or torch.compiler.is_compiling():
        return
    try:
        trace._modules.exit(module)  # reads no tensor: the output is left alone
    except Exception as e:
        trace._warn(f"a module call was not recorded ({type(e).__name__}: {e})")


def _install_module_hooks() -> None:
    """Global forward hooks on every nn.Module: which module call makes each node, and the
    qualified names of parameters (see tracer.modules). Removed with the engine hook."""
    if not _module_hooks:
        hooks = torch.nn.modules.module
        _module_hooks.append(hooks.register_module_forward_pre_hook(_module_pre_hook))
        _module_hooks.append(hooks.register_module_forward_hook(_module_hook, always_call=True))


def _remove_module_hooks() -> None:
    while _module_hooks:
        _module_hooks.pop().remove()


# -- the forward recorder -----------------------------------------------------------------


def tensor_arguments(args: tuple, kwargs: dict) -> list[torch.Tensor]:
    found = []
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            found.append(value)
        elif isinstance(value, (list, tuple)):
            found.extend(v for v in value if isinstance(v, torch.Tensor))
    return found


class ForwardRecorder(TorchFunctionMode):
    """Keeps each op's output value on its grad_fn; notes constants and allclose calls."""

    def __init__(self, session: Trace) -> None:
        super().__init__()
        self.session = session

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if torch.compiler.is_compiling():
            return out  # inside torch.compile's tracing: record nothing, change nothing
        try:
            with torch._C.DisableTorchFunction():  # the user's own modes see only their calls
                if func in _ALLCLOSE:
                    if isinstance(out, bool):
                        checks.note_allclose(self.session, args, kwargs, out, sys._getframe(1))
                elif func in _EQUALITY:
                    checks.note_equality(
                        self.session, _EQUALITY[func], args, kwargs, out, sys._getframe(1)
                    )
                elif func not in _BACKWARD_CALLS:
                    self.session._note_forward(out, args, kwargs)
        except Exception as e:  # tracer's problem, never the user's
            self.session._warn(f"a forward value was not recorded ({type(e).__name__}: {e})")
        return out


def open_trace(trace: Trace) -> contextvars.Token:
    """Register `trace` (its thread's context reports to it) and install the hooks."""
    with _LOCK:
        _OPEN.append(trace)
        _install_engine_hook()
        _install_module_hooks()
    return _CURRENT.set(trace)


def close_trace(trace: Trace, token: contextvars.Token | None) -> None:
    """Unregister `trace`; with no trace left open, remove every hook."""
    if token is not None:
        try:
            _CURRENT.reset(token)
        except ValueError:  # exited in another context than it was entered in
            _CURRENT.set(None)
    with _LOCK:
        if trace in _OPEN:
            _OPEN.remove(trace)
        if not _OPEN:
            _remove_engine_hook()
            _remove_module_hooks()
