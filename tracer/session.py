"""The trace session: `with tracer.trace() as t:` runs the user's code under observation.

Two light touches, both removed when the block ends, whatever raised:

- a `TorchFunctionMode` (the forward recorder) keeps, for each op's output, a reference
  to its value on the op's own `grad_fn` (see tracer.node_record): nothing is computed
  during the forward pass, and a graph that never reaches a backward takes its values
  with it when it is freed. It also notes inputs needing no grad (drawn as constants) and
  the user's `torch.allclose` on a gradient (recorded as a check). `values=False` leaves
  it out: structure and gradients only.
- autograd's engine entry point (`torch.autograd.graph._engine_run_backward`, which
  `backward()`, `torch.autograd.backward` and `torch.autograd.grad` all call after
  checking their arguments) is wrapped while any trace is open, in every thread: a pass
  is walked and hooked just before the engine runs, unhooked just after, and summarised
  into plain data. torch's own argument errors happen before it, unchanged.

Each thread's passes and checks go to the trace that thread (its `contextvars` context)
opened; a thread that opened none, such as a worker, reports to the one open trace, if
exactly one is open. Anything that goes wrong inside tracer is reported as a warning and
the user's code runs on untraced: tracing must never break the program it watches.
"""

from __future__ import annotations

import contextvars
import sys
import threading
import warnings
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any

import torch
import torch.autograd
from torch.autograd.graph import GradientEdge
from torch.overrides import TorchFunctionMode

from tracer.capture import GraphCapture, root_node
from tracer.compare import compare
from tracer.errors import TracerError
from tracer.graph import Check, Graph, Node, Recording
from tracer.locate import is_user_file
from tracer.manual import Recogniser
from tracer.modules import ModuleTracker
from tracer.node_record import NodeRecord, record_of
from tracer.quiet import paused_gc
from tracer.render import RenderOptions, render_svg, write
from tracer.report import format_check
from tracer.summary import DEFAULT_MAX_VALUES

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
FINITE_DIFFERENCES = "finite differences"  # a Check's `how` when tracer.numeric made it
_BACKWARD_CALLS = {torch.Tensor.backward, torch.autograd.backward, torch.autograd.grad}


def _outward(start: FrameType | None, skip: Callable[[FrameType], bool]) -> FrameType | None:
    """The innermost frame at or above `start` that `skip` does not match."""
    frame = start
    while frame is not None and skip(frame):
        frame = frame.f_back
    return frame


def user_frame(start: FrameType | None) -> FrameType | None:
    """The innermost frame at or above `start` that belongs to the user's code."""
    return _outward(start, lambda f: not is_user_file(f.f_code.co_filename))


def _in_torch(frame: FrameType) -> bool:
    module = frame.f_globals.get("__name__", "")
    return module == "torch" or module.startswith("torch.")


def _is_user_name(name: str) -> bool:
    """A variable name worth showing: not private ("_x"), not a tool's ("@py_assert1")."""
    return name.isidentifier() and not name.startswith("_")


def _namespaces(frame: FrameType) -> list[Mapping[str, Any]]:
    """Where the frame's code looks names up: its locals, then its globals (once, when the
    code runs at module level, where the two are the same)."""
    if frame.f_locals is frame.f_globals:
        return [frame.f_globals]
    return [frame.f_locals, frame.f_globals]


def _tensors(value: Any) -> list[Any]:
    """The tensors (and gradient edges) in an argument that takes one or a sequence."""
    if isinstance(value, (torch.Tensor, GradientEdge)):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, (torch.Tensor, GradientEdge))]
    return []


# -- which trace a thread reports to ------------------------------------------------------

_CURRENT: contextvars.ContextVar[Trace | None] = contextvars.ContextVar(
    "tracer_current", default=None
)
_OPEN: list[Trace] = []  # every open trace, in any thread
_LOCK = threading.Lock()
_busy = threading.local()  # set while this thread captures: nested engine calls pass through


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
    if trace is None or getattr(_busy, "active", False):
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
    if trace is None or getattr(_busy, "active", False) or torch.compiler.is_compiling():
        return
    try:
        with torch._C.DisableTorchFunction():
            trace._modules.enter(module, args, _variable_naming(sys._getframe(1)))
    except Exception as e:  # tracer's problem, never the user's
        trace._warn(f"a module call was not recorded ({type(e).__name__}: {e})")


def _module_hook(module: torch.nn.Module, args: tuple, output: Any) -> None:
    trace = current_trace()
    if trace is None or getattr(_busy, "active", False) or torch.compiler.is_compiling():
        return
    try:
        with torch._C.DisableTorchFunction():
            trace._modules.exit(module, output)
    except Exception as e:
        trace._warn(f"a module call was not recorded ({type(e).__name__}: {e})")


def _variable_naming(frame: FrameType | None) -> Callable[[Any], str | None]:
    """A function giving the user's variable name for an object (looked up lazily in the
    innermost user frame at or above `frame`)."""

    def variable(value: Any) -> str | None:
        user = user_frame(frame)
        for namespace in _namespaces(user) if user is not None else ():
            for name, v in list(namespace.items()):
                if v is value and _is_user_name(name):
                    return name
        return None

    return variable


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


def _tensor_arguments(args: tuple, kwargs: dict) -> list[torch.Tensor]:
    found = []
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            found.append(value)
        elif isinstance(value, (list, tuple)):
            found.extend(v for v in value if isinstance(v, torch.Tensor))
    return found


class _ForwardRecorder(TorchFunctionMode):
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
                        self.session._note_allclose(args, kwargs, out, sys._getframe(1))
                elif func in _EQUALITY:
                    self.session._note_equality(
                        _EQUALITY[func], args, kwargs, out, sys._getframe(1)
                    )
                elif func not in _BACKWARD_CALLS:
                    self.session._note_forward(out, args, kwargs)
        except Exception as e:  # tracer's problem, never the user's
            self.session._warn(f"a forward value was not recorded ({type(e).__name__}: {e})")
        return out


class Trace:
    """Records every backward pass run inside `with`, and the checks made against them.

    After the block, `recording` is plain data (no torch objects): render it with
    `render`, compare gradients with `check`.
    """

    def __init__(
        self,
        title: str = "",
        *,
        max_values: int = DEFAULT_MAX_VALUES,
        values: bool = True,
        saved: bool = False,
    ) -> None:
        self.max_values = max_values
        self.values = values
        self.saved = saved
        self.recording = Recording(title=title)
        self._mode: _ForwardRecorder | None = None
        self._token: contextvars.Token | None = None
        # Variable names by tensor id, with a weak reference telling a reused id apart.
        self._names: dict[int, tuple[weakref.ref, str]] = {}
        self._made_by: int | None = None  # the latest pass run with create_graph=True
        # Results of torch.autograd.grad by id, with the name of the input each is the
        # gradient of: allclose on one of them is a check.
        self._grad_results: dict[int, tuple[weakref.ref, str]] = {}
        self._warned: set[str] = set()
        self._recogniser = Recogniser(self)  # manual results shown by the user's code
        self._modules = ModuleTracker()  # module calls and qualified parameter names

    # -- the block ---------------------------------------------------------------------

    def __enter__(self) -> Trace:
        with _LOCK:
            _OPEN.append(self)
            _install_engine_hook()
            _install_module_hooks()
        self._token = _CURRENT.set(self)
        if self.values:
            self._mode = _ForwardRecorder(self)
            self._mode.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._recognise("close")
        try:
            if self._mode is not None:
                self._mode.__exit__(*exc)
                self._mode = None
        finally:
            if self._token is not None:
                try:
                    _CURRENT.reset(self._token)
                except ValueError:  # exited in another context than it was entered in
                    _CURRENT.set(None)
                self._token = None
            with _LOCK:
                if self in _OPEN:
                    _OPEN.remove(self)
                if not _OPEN:
                    _remove_engine_hook()
                    _remove_module_hooks()
            self._names.clear()
            self._grad_results.clear()

    @property
    def graphs(self) -> list[Graph]:
        return self.recording.graphs

    @property
    def checks(self) -> list[Check]:
        return self.recording.checks

    @property
    def steps(self) -> list[Node]:
        """The nodes of the latest backward pass, in the order the engine ran them."""
        passes = self.recording.backward_graphs()
        return passes[-1].steps if passes else []

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run `fn(*args, **kwargs)` inside the trace, learning its local variable names.

        Names are read from the function's frame as it returns, so tensors it computed are
        named even when backward runs later, outside it.
        """
        code = fn.__code__ if hasattr(fn, "__code__") else None

        def profile(frame: FrameType, event: str, arg: Any) -> None:
            if event == "return" and frame.f_code is code:
                self.name_tensors(frame.f_locals)

        previous = sys.getprofile()
        sys.setprofile(profile)
        try:
            return fn(*args, **kwargs)
        finally:
            sys.setprofile(previous)

    def _warn(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            warnings.warn(f"tracer: {message}", RuntimeWarning, stacklevel=3)

    # -- names -------------------------------------------------------------------------

    def name_tensors(self, namespace: Mapping[str, Any]) -> None:
        """Learn variable names: each tensor in `namespace` is drawn with its name.

        The first name a tensor is given wins; private names ("_x") are skipped.
        """
        for name, value in list(namespace.items()):
            if not _is_user_name(name) or not isinstance(value, torch.Tensor):
                continue
            if self.name_of(value) is None:
                self._names[id(value)] = (weakref.ref(value), name)
                if value.grad_fn is not None:  # the node keeps it, as long as it lives
                    record = record_of(value.grad_fn)
                    if name not in record.names:
                        record.names = (*record.names, name)

    def name_of(self, t: torch.Tensor) -> str | None:
        """A parameter's or buffer's qualified name ("fc2.bias") when a module called in
        the trace owns it, else the first variable name the tensor was seen under."""
        qualified = self._modules.name_of(t)
        if qualified is not None:
            return qualified
        entry = self._names.get(id(t))
        return entry[1] if entry is not None and entry[0]() is t else None

    def _name_from_frame(self, frame: FrameType | None) -> None:
        frame = user_frame(frame)
        for namespace in _namespaces(frame) if frame is not None else ():
            self.name_tensors(namespace)

    # -- capture -----------------------------------------------------------------------

    def _note_forward(self, out: Any, args: tuple, kwargs: dict) -> None:
        """Keep each output's value on its node, and which inputs needing no grad it took."""
        if isinstance(out, torch.Tensor):
            outputs: Iterable[Any] = (out,)
        elif isinstance(out, (tuple, list)):
            outputs = out
        else:
            return
        first: NodeRecord | None = None
        for o in outputs:
            if not isinstance(o, torch.Tensor):
                continue
            fn = o.grad_fn
            if fn is None:
                continue
            record = record_of(fn)
            record.keep(o.output_nr, o.detach(), o._version)
            self._modules.stamp(record, fn)
            first = first or record
        if first is None or first.constants is not None:
            return
        constants = [
            (i, t, t._version)
            for i, t in enumerate(_tensor_arguments(args, kwargs))
            if not t.requires_grad
        ]
        if constants:
            first.constants = constants

    def _run_backward(
        self, engine: Callable[..., Any], t_outputs: Any, args: tuple, kwargs: dict
    ) -> Any:
        """Run autograd's engine with this pass captured (see the module docstring)."""
        names = ("grad_tensors", "keep_graph", "create_graph", "inputs", "allow_unreachable")
        params = dict(zip(names, args, strict=False)) | kwargs
        roots = _tensors(t_outputs)
        if not roots or any(isinstance(r, torch.Tensor) and not r.requires_grad for r in roots):
            return engine(t_outputs, *args, **kwargs)  # torch raises its own, clear error
        _busy.active = True
        try:
            try:
                with paused_gc():
                    capture, number, source = self._prepare(roots, params)
            except Exception as e:
                self._warn(f"this backward pass is not traced ({type(e).__name__}: {e})")
                return engine(t_outputs, *args, **kwargs)
            try:
                with paused_gc():  # the hooks make many small objects: see tracer.quiet
                    result = engine(t_outputs, *args, **kwargs)
            finally:
                capture.unhook()  # whatever raised: nothing of ours stays in the graph
            try:
                with paused_gc():
                    self._finish(capture, number, source, params, result)
            except Exception as e:
                self._warn(f"backward pass {number} is not recorded ({type(e).__name__}: {e})")
            return result
        finally:
            _busy.active = False

    def _prepare(
        self, roots: list[Any], params: dict[str, Any]
    ) -> tuple[GraphCapture, int, tuple[str, int] | None]:
        with torch._C.DisableTorchFunction():
            user = user_frame(sys._getframe(1))
            source = None if user is None else (user.f_code.co_filename, user.f_lineno)
            self._name_from_frame(user)
            number = len(self.recording.backward_graphs()) + 1
            capture = GraphCapture(
                [root_node(r) for r in roots],
                kind="backward",
                number=number,
                name_of=self.name_of,
                max_values=self.max_values,
                saved=self.saved,
                made_by=self._made_by,
                modules=self._modules,
            )
            asked = _tensors(params.get("inputs") or ())
            capture.add_unreached(asked)
            every_edge = bool(asked) or params.get("accumulate_grad") is False
            try:
                capture.hook(every_edge)
            except BaseException:
                capture.unhook()
                raise
        return capture, number, source

    def _finish(
        self,
        capture: GraphCapture,
        number: int,
        source: tuple[str, int] | None,
        params: dict[str, Any],
        result: Any,
    ) -> None:
        with torch._C.DisableTorchFunction():
            seeds = list(params.get("grad_tensors") or ())
            returned = None
            if params.get("accumulate_grad") is False and result is not None:
                inputs = _tensors(params.get("inputs") or ())
                returned = {
                    root_node(i)[0]: g
                    for i, g in zip(inputs, result, strict=False)
                    if isinstance(g, torch.Tensor)
                }
                for k, (i, g) in enumerate(zip(inputs, result, strict=False)):
                    if isinstance(g, torch.Tensor):
                        name = (self.name_of(i) if isinstance(i, torch.Tensor) else None) or (
                            f"input {k}"
                        )
                        self._grad_results[id(g)] = (weakref.ref(g), name)
            graph = capture.finish(seeds, returned)
        graph.source = source
        graph.create_graph = bool(params.get("create_graph"))
        if any(node.made_by for node in graph.nodes):
            graph.through = self._made_by
        if graph.create_graph:
            self._made_by = number
        self._recognise("before")
        self.recording.graphs.append(graph)
        self._recognise("after", number)

    # -- checks ------------------------------------------------------------------------

    def check(
        self,
        tensor: torch.Tensor,
        manual: torch.Tensor | None = None,
        *,
        name: str | None = None,
        rtol: float | None = None,
        atol: float | None = None,
        quiet: bool = False,
        fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> Check:
        """Compare `tensor.grad` with the hand-derived `manual`; print and return the result.

        When `manual` was computed from tensors that require grad it has a graph of its
        own: that graph is captured too and drawn beside autograd's. Without `manual`,
        `fn` (the scalar backward differentiated, as a function of `tensor`) gives the
        gradient by central finite differences instead (see tracer.numeric).
        """
        self._name_from_frame(sys._getframe(1))
        if name is None:
            name = self.name_of(tensor) or f"input {len(self.recording.checks)}"
        manual, rtol, atol, how = _oracle(tensor, manual, fn, rtol, atol)
        result = self._record(name, tensor.grad, manual, rtol=rtol, atol=atol, how=how)
        if not quiet:
            print(format_check(result))
        return result

    def _record(
        self,
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
        passes = self.recording.backward_graphs()
        of = None
        if passes:
            last = passes[-1]
            of = last.node(last.roots[0]).name
        result = compare(
            name, grad, manual, rtol=rtol, atol=atol, max_values=self.max_values, of=of
        )
        passed = result.passed if verdict is None else verdict
        result = replace(result, after=len(passes), how=how, passed=passed)
        if manual.grad_fn is not None:
            with torch._C.DisableTorchFunction():
                capture = GraphCapture(
                    [root_node(manual)],
                    kind="manual",
                    number=len(passes),
                    name_of=self.name_of,
                    max_values=self.max_values,
                    saved=self.saved,
                )
                graph = capture.finish()
            graph.derivative = result.derivative
            self.recording.graphs.append(graph)
        self.recording.checks.append(result)
        return result

    def _note_allclose(self, args: tuple, kwargs: dict, verdict: bool, frame: FrameType) -> None:
        """The code called allclose: when the user's code (not tracer's, which compares
        with allclose too) compared a gradient with it, record that as a check."""
        caller = user_frame(frame)
        if caller is None or caller is not _outward(frame, _in_torch):
            return  # tracer's own allclose (or one inside a library): not the user's check
        a = args[0] if args else kwargs.get("input", kwargs.get("self"))
        b = args[1] if len(args) > 1 else kwargs.get("other")
        if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
            return
        rtol = float(args[2] if len(args) > 2 else kwargs.get("rtol", 1e-5))
        atol = float(args[3] if len(args) > 3 else kwargs.get("atol", 1e-8))
        self._name_from_frame(caller)  # also the names the manual formula's graph shows
        for grad, manual in ((a, b), (b, a)):
            name = self._gradient_of(grad, caller)
            if name is not None:
                self._record(
                    name, grad, manual, rtol=rtol, atol=atol, how="allclose", verdict=verdict
                )
                return
        # Neither side is a gradient: not a comparison we report.

    def _gradient_of(self, t: torch.Tensor, frame: FrameType) -> str | None:
        """The name `t` is the gradient of, when it is one: a result of torch.autograd.grad,
        the `.grad` of a named leaf, or that of a parameter of a module in the user's
        namespaces ("model.weight"); else None."""
        entry = self._grad_results.get(id(t))
        if entry is not None and entry[0]() is t:
            return entry[1]
        for ref, name in list(self._names.values()):
            tensor = ref()
            if tensor is not None and tensor.is_leaf and tensor.requires_grad:
                if tensor.grad is t:
                    return name
        frame = user_frame(frame)
        for namespace in _namespaces(frame) if frame is not None else ():
            for name, value in list(namespace.items()):
                if isinstance(value, torch.nn.Module) and _is_user_name(name):
                    for pname, p in value.named_parameters():
                        if p.grad is t:
                            return f"{name}.{pname}"
        return None

    def _note_equality(
        self, how: str, args: tuple, kwargs: dict, out: Any, frame: FrameType
    ) -> None:
        """The code compared a gradient elementwise (`x.grad == 4 * x`, `torch.equal`,
        `torch.isclose`): recorded as a check, with the verdict the code saw (all equal)."""
        a = args[0] if args else kwargs.get("input", kwargs.get("self"))
        b = args[1] if len(args) > 1 else kwargs.get("other")
        if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
            return  # `x.grad == 0`: a mask, not a comparison with a result
        if a.shape != b.shape or not (a.is_floating_point() and b.is_floating_point()):
            return
        caller = user_frame(frame)
        if caller is None or caller is not _outward(frame, _in_torch):
            return  # tracer's own comparison, or one inside a library
        if how == "isclose":
            rtol = float(args[2] if len(args) > 2 else kwargs.get("rtol", 1e-5))
            atol = float(args[3] if len(args) > 3 else kwargs.get("atol", 1e-8))
        else:
            rtol = atol = 0.0
        verdict = bool(out) if isinstance(out, bool) else bool(out.all())
        self._name_from_frame(caller)
        for grad, manual in ((a, b), (b, a)):
            name = self._gradient_of(grad, caller)
            if name is not None:
                self._record(name, grad, manual, rtol=rtol, atol=atol, how=how, verdict=verdict)
                return

    # -- manual results the user's code showed (tracer.manual) -----------------------------

    def offer_manual(self, tensor: torch.Tensor, source: str) -> None:
        """A tensor the user's code displayed, printed or bound: maybe a manual result
        (the rule is tracer.manual's). Never raises into the user's code."""
        try:
            with torch._C.DisableTorchFunction():
                self._recogniser.offer(tensor, source)
        except Exception as e:
            self._warn(f"a shown result was not considered ({type(e).__name__}: {e})")

    def _recognise(self, moment: str, number: int = 0) -> None:
        """Let the recogniser act at a pass ("before" / "after" it is recorded) or at the
        end of the trace ("close")."""
        try:
            with torch._C.DisableTorchFunction():
                if moment == "before":
                    self._recogniser.before_pass_recorded()
                elif moment == "after":
                    self._recogniser.after_pass_recorded(number)
                else:
                    self._recogniser.close()
        except Exception as e:
            self._warn(f"shown results were not compared ({type(e).__name__}: {e})")

    def render(
        self, path: str | Path, options: RenderOptions | None = None, *, pass_: int | None = None
    ) -> Path:
        """Write the recording to `path`; the format follows the suffix (see render.write).

        `options` picks the detail: `RenderOptions("slide")` for projecting; the default
        is the full view. `pass_=N` draws backward pass N alone (1 is the first), with the
        manual graphs and checks made after it; by default every pass is drawn.
        """
        return write(self.pass_recording(pass_), path, options)

    def pass_recording(self, pass_: int | None) -> Recording:
        """The recording of backward pass `pass_` (see Recording.per_pass), or all of it
        for None; a TracerError saying which passes exist for any other number."""
        if pass_ is None:
            return self.recording
        parts = self.recording.per_pass()
        if not 1 <= pass_ <= len(parts):
            have = f"passes 1 to {len(parts)}" if parts else "no backward pass"
            raise TracerError(f"there is no backward pass {pass_}: this trace has {have}")
        return parts[pass_ - 1]

    def _repr_svg_(self) -> str | None:
        """Jupyter's picture of the trace; None (Jupyter then shows the text) with no graph."""
        if not self.recording.graphs:
            return None
        return render_svg(self.recording)


def check(
    tensor: torch.Tensor,
    manual: torch.Tensor | None = None,
    *,
    name: str | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    quiet: bool = False,
    fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Check:
    """Compare `tensor.grad` with `manual` (or, given `fn` instead, with central finite
    differences of `fn`, see tracer.numeric): inside a trace it is recorded there (see
    `Trace.check`); outside one it is only compared, printed and returned."""
    active = current_trace()
    if active is not None:
        return active.check(tensor, manual, name=name, rtol=rtol, atol=atol, quiet=quiet, fn=fn)
    frame = user_frame(sys._getframe(1))
    if name is None and frame is not None:
        name = next(
            (
                k
                for namespace in _namespaces(frame)
                for k, v in namespace.items()
                if v is tensor and _is_user_name(k)
            ),
            None,
        )
    manual, rtol, atol, how = _oracle(tensor, manual, fn, rtol, atol)
    result = compare(name or "input", tensor.grad, manual, rtol=rtol, atol=atol)
    result = replace(result, how=how)
    if not quiet:
        print(format_check(result))
    return result


def _oracle(
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


def trace(
    title: str = "",
    *,
    max_values: int = DEFAULT_MAX_VALUES,
    values: bool = True,
    saved: bool = False,
) -> Trace:
    """Trace every backward pass run inside the `with` block.

    `values=False` records structure and gradients only (no forward values, constants or
    allclose checks): the cheapest way to watch a large model. `saved=True` also records
    what autograd saved for backward on each node.

    >>> with tracer.trace() as t:
    ...     f = torch.log(1 + torch.dot(x, x))
    ...     f.backward()
    >>> t.render("graph.svg")
    """
    return Trace(title, max_values=max_values, values=values, saved=saved)
