"""Interception: what tracer installs while a trace is open, and removes when the last one
closes, whatever raised. Five light touches:

- autograd's engine entry point (`torch.autograd.graph._engine_run_backward`, which
  `backward()`, `torch.autograd.backward` and `torch.autograd.grad` all call after
  checking their arguments) is wrapped, in every thread: the pass is handed to the trace
  (`Observer.observe_backward`: walked and hooked just before the engine runs, unhooked
  just after). torch's own argument errors happen before it, unchanged.
- global nn.Module forward hooks: which module call makes each node, and the qualified
  names of parameters (the trace's `ModuleTracker`, tracer.record.modules).
- a `TorchFunctionMode` per trace, the forward recorder (tracer.record.forward), entered
  and left by the trace itself. `values=False` leaves it out.
- torch's entry points that trace a function for `torch.jit.trace` (and
  `torch.jit._get_trace_graph`) are wrapped: the recorder steps off the mode stack while
  they trace, as it does for a module call `torch.jit.trace` traces (the module hooks
  see `torch._C._is_tracing()`). The module hooks read no parameter while torch traces:
  each read would be a value in the traced graph.
- `torch.fx.traceback.format_stack`, which gives anomaly mode each node's forward stack,
  is wrapped: the stack it gives is the untraced one (tracer.record.stacks).

The trace is seen through `Observer`, the seam between this layer and the `Trace` above
it: this module knows nothing else of it.

Each thread's passes and checks go to the trace that thread (its `contextvars` context)
opened; a thread that opened none, such as a worker, reports to the one open trace, if
exactly one is open (`current_trace`).
"""

from __future__ import annotations

import contextvars
import functools
import threading
from collections.abc import Callable
from typing import Any, Protocol

import torch
import torch.autograd
import torch.fx.traceback

from tracer.record.forward import ForwardRecorder
from tracer.record.gradflow import FlowRecorder
from tracer.record.modules import ModuleTracker
from tracer.record.stacks import as_untraced


class Observer(Protocol):
    """What a trace offers the hooks installed in torch (tracer.session.Trace is one)."""

    module_calls: ModuleTracker  # told of every nn.Module call
    forward_recorder: ForwardRecorder | None  # told too: it steps aside for some calls
    flow_recorder: FlowRecorder  # told of module outputs (tracer.record.gradflow)

    def observe_backward(
        self, engine: Callable[..., Any], t_outputs: Any, args: tuple, kwargs: dict
    ) -> Any:
        """Run autograd's `engine` on these arguments, with the pass recorded."""
        ...

    def warn(self, message: str) -> None:
        """Tell the user, once, that something of tracer's went wrong (never raises)."""
        ...


# -- which trace a thread reports to ------------------------------------------------------

_CURRENT: contextvars.ContextVar[Observer | None] = contextvars.ContextVar(
    "tracer_current", default=None
)
_OPEN: list[Observer] = []  # every open trace, in any thread
_LOCK = threading.Lock()


class _Busy(threading.local):
    """Set while this thread captures: nested engine calls and module hooks pass through.
    False by default, as a class attribute: read at every module call, it raises (and
    catches) no AttributeError in a thread that never set it."""

    active = False


busy = _Busy()


def current_trace() -> Observer | None:
    """The trace this thread's code reports to: the one its context opened (while it is
    open: it may have been closed from another thread), else the only open one (a worker
    thread inside a trace), else None."""
    mine = _CURRENT.get()
    if mine is not None and mine in _OPEN:  # a list of one or two: no lock needed to read
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
    # A pass torch.compile runs while it traces (AOT autograd's joint graph, on fake
    # tensors) is the compiler's, not the program's: it passes through.
    if trace is None or busy.active or torch.compiler.is_compiling():
        return original(t_outputs, *args, **kwargs)
    return trace.observe_backward(original, t_outputs, args, kwargs)


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


# -- torch.jit.trace's entry points, wrapped while a trace is open -------------------------

# Where torch.jit.trace (of a function, not a module) and torch.jit._get_trace_graph start
# torch's tracer; a module's is a method of its C++ object, seen by the module hooks.
_JIT_ENTRY_NAMES = (
    "_create_function_from_trace",
    "_create_function_from_trace_with_dict",
    "_create_graph_by_tracing",
)
_original_jit_entries: dict[str, Callable[..., Any]] = {}


def _jit_entry(original: Callable[..., Any]) -> Callable[..., Any]:
    """`original`, run with this thread's forward recorder off the mode stack."""

    @functools.wraps(original)
    def traced_without_recorder(*args: Any, **kwargs: Any) -> Any:
        trace = current_trace()
        recorder = None if trace is None else trace.forward_recorder
        if recorder is None or recorder.closed:
            return original(*args, **kwargs)
        with recorder.stepped_aside():
            return original(*args, **kwargs)

    return traced_without_recorder


def _install_jit_hooks() -> None:
    if not _original_jit_entries:
        for name in _JIT_ENTRY_NAMES:
            original = getattr(torch._C, name, None)
            if original is not None:  # present in torch 2.1 to 2.13
                _original_jit_entries[name] = original
                setattr(torch._C, name, _jit_entry(original))


def _remove_jit_hooks() -> None:
    for name, original in _original_jit_entries.items():
        setattr(torch._C, name, original)
    _original_jit_entries.clear()


# -- anomaly mode's forward stacks, without tracer's frames while a trace is open ---------

_original_format_stack: Callable[[], list[str]] | None = None


def _untraced_stack() -> list[str]:
    """torch.fx.traceback.format_stack's stack, as it is untraced (see tracer.record.stacks).
    torch calls it while it makes a node: it must not raise."""
    original = _original_format_stack
    assert original is not None
    stack = original()
    try:
        return as_untraced(stack)
    except Exception as e:  # tracer's problem: the stack as it came
        trace = current_trace()
        if trace is not None:
            trace.warn(f"a forward stack keeps tracer's frames ({type(e).__name__}: {e})")
        return stack


def _install_stack_hook() -> None:
    global _original_format_stack
    if _original_format_stack is None:
        _original_format_stack = torch.fx.traceback.format_stack
        torch.fx.traceback.format_stack = _untraced_stack


def _remove_stack_hook() -> None:
    global _original_format_stack
    if _original_format_stack is not None:
        torch.fx.traceback.format_stack = _original_format_stack
        _original_format_stack = None


# -- module hooks, installed while a trace is open -----------------------------------------

_module_hooks: list[Any] = []


def _module_pre_hook(module: torch.nn.Module, args: tuple) -> None:
    # is_compiling() first: torch.compile traces the hooks of the modules it compiles, and
    # a constant True there leaves nothing of ours in its graph (a ContextVar.get would
    # break the graph, and the module would run uncompiled).
    if torch.compiler.is_compiling():
        return
    trace = current_trace()
    if trace is None or busy.active:
        return
    try:
        # No DisableTorchFunction here, at every call: the tracker touches tensors only at
        # an outermost module's first call, and disables torch functions there. Under
        # torch.jit.trace it is not told: its reads of parameters would be traced.
        if not torch._C._is_tracing():
            trace.module_calls.enter(module)
        if trace.forward_recorder is not None:
            trace.forward_recorder.module_entered(module, args)
    except Exception as e:  # tracer's problem, never the user's
        trace.warn(f"a module call was not recorded ({type(e).__name__}: {e})")


def _module_hook(module: torch.nn.Module, args: tuple, output: Any) -> None:
    if torch.compiler.is_compiling():  # see _module_pre_hook
        return
    trace = current_trace()
    if trace is None or busy.active:
        return
    try:
        if not torch._C._is_tracing():  # as in _module_pre_hook
            trace.module_calls.exit(module)  # reads no tensor: the output is left alone
            trace.flow_recorder.module_output(module, output)  # reads it, at recorded passes
        if trace.forward_recorder is not None:
            trace.forward_recorder.module_exited()
    except Exception as e:
        trace.warn(f"a module call was not recorded ({type(e).__name__}: {e})")


# torch warns at every call of a torch.compile'd module while any global module hook is
# installed (ours fire once more, for the compiled wrapper, which the tracker handles): a
# warning the program would not give untraced. Its test, torch's one use of
# `_has_any_global_hook`, counts the user's global hooks alone while ours are installed.
_GLOBAL_HOOKS = (
    "_global_backward_pre_hooks",
    "_global_backward_hooks",
    "_global_forward_pre_hooks",
    "_global_forward_hooks",
    "_global_forward_hooks_always_called",
    "_global_forward_hooks_with_kwargs",
)
_original_any_global_hook: Callable[[], Any] | None = None


def _any_global_hook_but_ours() -> bool:
    ours = {handle.id for handle in _module_hooks}
    module = torch.nn.modules.module
    return any(key not in ours for name in _GLOBAL_HOOKS for key in getattr(module, name, {}))


def _install_module_hooks() -> None:
    """Global forward hooks on every nn.Module: which module call makes each node, and the
    qualified names of parameters (see tracer.record.modules). Removed with the engine hook."""
    global _original_any_global_hook
    if not _module_hooks:
        hooks = torch.nn.modules.module
        _module_hooks.append(hooks.register_module_forward_pre_hook(_module_pre_hook))
        _module_hooks.append(hooks.register_module_forward_hook(_module_hook, always_call=True))
        if _original_any_global_hook is None and hasattr(hooks, "_has_any_global_hook"):
            _original_any_global_hook = hooks._has_any_global_hook
            hooks._has_any_global_hook = _any_global_hook_but_ours


def _remove_module_hooks() -> None:
    global _original_any_global_hook
    while _module_hooks:
        _module_hooks.pop().remove()
    if _original_any_global_hook is not None:
        torch.nn.modules.module._has_any_global_hook = _original_any_global_hook
        _original_any_global_hook = None


# The open traces that need no module call now: their next backward pass is not recorded
# in full (see watch_modules).
_NOT_WATCHING: list[Observer] = []


def watch_modules(trace: Observer, watching: bool) -> None:
    """Whether `trace` needs to see module calls from now on. While no open trace does, the
    global module hooks are off: torch then takes its fast path, and a module call costs
    what it costs untraced (a training step's pass that is not selected). The caller turns
    watching off only where no module call of its thread is open, so that no call's end
    goes unseen; they are on again, for every trace, as soon as one watches."""
    with _LOCK:
        if trace not in _OPEN:
            return
        if watching:
            if trace in _NOT_WATCHING:
                _NOT_WATCHING.remove(trace)
            _install_module_hooks()
        else:
            if trace not in _NOT_WATCHING:
                _NOT_WATCHING.append(trace)
            if all(t in _NOT_WATCHING for t in _OPEN):
                _remove_module_hooks()


def open_trace(trace: Observer) -> contextvars.Token:
    """Register `trace` (its thread's context reports to it) and install the hooks."""
    with _LOCK:
        _OPEN.append(trace)
        _install_engine_hook()
        _install_module_hooks()
        _install_jit_hooks()
        _install_stack_hook()
    return _CURRENT.set(trace)


def close_trace(trace: Observer, token: contextvars.Token | None) -> None:
    """Unregister `trace`; with no trace left open, remove every hook."""
    if token is not None:
        try:
            _CURRENT.reset(token)
        except ValueError:  # exited in another context than it was entered in
            _CURRENT.set(None)
    with _LOCK:
        if trace in _OPEN:
            _OPEN.remove(trace)
        if trace in _NOT_WATCHING:
            _NOT_WATCHING.remove(trace)
        if not _OPEN:
            _remove_engine_hook()
            _remove_module_hooks()
            _remove_jit_hooks()
            _remove_stack_hook()
