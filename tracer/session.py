"""The trace session: `with tracer.trace() as t:` runs the user's code under observation.

`Trace` holds what one trace records: each backward pass (walked and hooked by
tracer.record.capture, summarised into plain data), the checks made against them
(`tracer.check`, the user's own comparisons, manual results recognised by
tracer.checks.manual), the names the user's code gave (tracer.record.names) and its module
calls (tracer.record.modules). It is the `Observer` that the hooks installed in torch
report to (tracer.record.interception), and it hands the checks what they need as
arguments: the recording, a naming function, the pass's gradients.

Anything that goes wrong inside tracer is reported as a warning and the user's code runs
on untraced: tracing must never break the program it watches.
"""

from __future__ import annotations

import contextvars
import re
import sys
import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any, Literal, cast

import torch
import torch.autograd
from torch.autograd.graph import GradientEdge
from torch.optim.optimizer import register_optimizer_step_pre_hook
from torch.utils.hooks import RemovableHandle

from tracer.checks.compare import compare
from tracer.checks.comparisons import (
    gradient_of,
    judge,
    oracle,
    user_comparison,
    why_no_gradient,
)
from tracer.checks.forward_mode import no_other, run_forward_mode
from tracer.checks.manual import Deciding, Recogniser
from tracer.checks.none_reads import NoneReads
from tracer.errors import TracerError, warn
from tracer.model.check import Check, How
from tracer.model.collector import paused_gc
from tracer.model.explain import InPlaceError, NoGradient
from tracer.model.flow import GradientFlow
from tracer.model.forward import Direction
from tracer.model.graph import Graph, Node, Recording
from tracer.model.location import is_user_file
from tracer.model.options import DEFAULT_MAX_VALUES, CaptureOptions
from tracer.model.selection import PassSelection, selection_of
from tracer.output.render import RenderOptions, render_svg, write
from tracer.record.capture import BackwardOrigins, GraphCapture, NodeFinder, root_node
from tracer.record.forward import ForwardRecorder, drop_closed_recorders
from tracer.record.gradflow import FlowRecorder
from tracer.record.interception import (
    busy,
    close_trace,
    current_trace,
    open_trace,
    watch_modules,
)
from tracer.record.modules import ModuleTracker
from tracer.record.names import (
    Names,
    caller_and_library,
    is_user_name,
    namespaces,
    user_frame,
    variable_naming,
)
from tracer.record.summary import QuickSummary
from tracer.view.report import no_gradient_line
from tracer.view.text import format_check, node_title

# When the recogniser of manual results acts: before a pass is recorded, after, at the end.
Moment = Literal["before", "after", "close"]


def _tensors(value: Any) -> list[Any]:
    """The tensors (and gradient edges) in an argument that takes one or a sequence."""
    if isinstance(value, (torch.Tensor, GradientEdge)):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, (torch.Tensor, GradientEdge))]
    return []


_next_sequence_nr: Callable[[], int] = torch.autograd._get_sequence_nr  # this thread's


def _all_on_cpu(roots: list[Any]) -> bool:
    """Whether the roots are CPU tensors (a GradientEdge root says nothing of its device)."""
    return all(isinstance(r, torch.Tensor) and r.device.type == "cpu" for r in roots)


_BACKWARD_SUFFIX = re.compile(r"Backward\d*$")
# torch's message when a tensor a node saved was changed in place before the node ran.
_VERSION_ERROR = re.compile(
    r"which is output (\d+) of (\w+), is at version (\d+); expected version (\d+)"
)


def _inside_torch_func(roots: list[Any]) -> bool:
    """Whether a pass runs inside a torch.func transform: on functorch's wrapped tensors,
    or with a transform active (see model.graph.UnrecordedKind)."""
    functorch = torch._C._functorch
    if functorch.peek_interpreter_stack() is not None:
        return True
    return any(
        isinstance(r, torch.Tensor) and functorch.is_functorch_wrapped_tensor(r) for r in roots
    )


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
        jacobians: bool = False,
        passes: str | PassSelection | None = None,
    ) -> None:
        self.options = CaptureOptions(
            max_values=max_values,
            values=values,
            saved=saved,
            jacobians=jacobians,
            passes=selection_of(passes),
        )
        self.recording = Recording(title=title)
        self.module_calls = ModuleTracker()  # module calls and qualified parameter names
        self.forward_recorder: ForwardRecorder | None = None  # while open, with values
        self._token: contextvars.Token | None = None
        self._step_hook: RemovableHandle | None = None  # see _between_passes
        self._names = Names()  # the variable names the user's code gave
        self._origins = BackwardOrigins()  # which create_graph=True pass made a node
        self._latest_nodes: NodeFinder | None = None  # the nodes of the latest pass
        # The latest error explained, by its id (see `explain`).
        self._explained: tuple[int, InPlaceError] | None = None
        # One check per (gradient's name, manual result, pass): the index of each in
        # recording.checks, with the manual result (weakly: its id is the key).
        self._made_checks: dict[tuple[str, int, int], tuple[weakref.ref, int]] = {}
        # Results of torch.autograd.grad by id, with the name of the input each is the
        # gradient of: allclose on one of them is a check.
        self._grad_results: dict[int, tuple[weakref.ref, str]] = {}
        self._warned: set[str] = set()
        self._recording = threading.Lock()  # held while a pass is added to the recording
        self._depth = 0  # how many `with` blocks of this trace are open
        self._recogniser = Recogniser()  # manual results shown by the user's code
        self._quick = QuickSummary(max_values)  # large forward values, summarised as made
        self._none_reads = NoneReads()  # the .grads the user's code read as None
        # The gradient flow over every pass: a few norms per parameter (see `flow`); module
        # outputs only at the passes that may be recorded in full.
        self.flow_recorder = FlowRecorder(
            self.module_calls,
            self.name_of,
            self.warn,
            selects=lambda number: self.options.passes.may_record(number),
        )

    @classmethod
    def with_options(cls, options: CaptureOptions, title: str = "") -> Trace:
        """A trace that records what `options` say."""
        return cls(
            title,
            max_values=options.max_values,
            values=options.values,
            saved=options.saved,
            jacobians=options.jacobians,
            passes=options.passes,
        )

    # -- the block ---------------------------------------------------------------------

    def __enter__(self) -> Trace:
        self._depth += 1
        if self._depth > 1:  # `with t:` inside `with t:`: the outer one records
            return self
        drop_closed_recorders()  # left inert on this thread by a trace closed elsewhere
        self._token = open_trace(self)
        self.flow_recorder.open()
        self._step_hook = register_optimizer_step_pre_hook(self._before_optimizer_step)
        if self.options.values:
            self.forward_recorder = ForwardRecorder(
                self._quick,
                self.module_calls,
                self._note_comparison,
                self.warn,
                on_none_grad=self._note_none_grad,
            )
            self.forward_recorder.__enter__()
            first = self.recording.passes_run + 1
            self.forward_recorder.pause(not self.options.passes.may_record(first))
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth > 0:
            return
        self._recognise("close")
        with self._recording:
            self._drop_unselected(self.recording.passes_run, ended=True)
        try:
            if self.forward_recorder is not None:
                recorder, self.forward_recorder = self.forward_recorder, None
                recorder.close()
        finally:
            if self._step_hook is not None:
                self._step_hook.remove()
                self._step_hook = None
            self.flow_recorder.close()
            close_trace(self, self._token)
            self._token = None
            self._names.clear()
            self._grad_results.clear()
            self._made_checks.clear()
            self._none_reads.clear()
            self._latest_nodes = None
            self._quick.clear()

    @property
    def graphs(self) -> list[Graph]:
        return self.recording.graphs

    @property
    def checks(self) -> list[Check]:
        return self.recording.checks

    @property
    def flow(self) -> GradientFlow:
        """The gradient flow over every pass so far: per parameter, the norms of its
        gradient and of itself after each pass, and of each optimizer step's change to it;
        module outputs' statistics at the passes recorded in full (tracer.model.flow)."""
        return self.flow_recorder.flow

    @property
    def steps(self) -> list[Node]:
        """The nodes of the latest backward pass, in the order the engine ran them."""
        passes = self.recording.backward_graphs()
        return passes[-1].steps if passes else []

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run `fn(*args, **kwargs)` inside the trace, learning its local variable names.

        Names are read from the function's frame as it returns, so tensors it computed are
        named even when backward runs later, outside it.

        They are read by a trace function (`sys.settrace`) that asks for the events of that
        frame alone: a profiler (`cProfile`, `sys.setprofile`) is left alone, and profiles
        the call too. A trace function already set (a debugger's, coverage's) still sees
        every event it asks for, and is set again after, unless `fn` set another.
        """
        code = getattr(fn, "__code__", None)
        if code is None:  # a builtin, a callable object: no frame of its own to read
            return fn(*args, **kwargs)
        theirs: Callable[..., Any] | None = sys.gettrace()  # called as Python calls it

        def reading_names(theirs_local: Any) -> Callable[..., Any]:
            """The trace function of fn's frame: theirs, then the names at its return."""

            def local(frame: FrameType, event: str, arg: Any) -> Any:
                nonlocal theirs_local
                if theirs_local is not None:
                    theirs_local = theirs_local(frame, event, arg)
                if theirs_local is None:
                    frame.f_trace_lines = False  # only the return is wanted: no line events
                if event == "return":
                    self.name_tensors(frame.f_locals)
                return local

            return local

        def on_call(frame: FrameType, event: str, arg: Any) -> Any:
            their_local = None if theirs is None else theirs(frame, event, arg)
            if frame.f_code is not code:
                return their_local  # another frame: only what theirs asks for
            return reading_names(their_local)

        sys.settrace(on_call)
        try:
            return fn(*args, **kwargs)
        finally:
            if sys.gettrace() is on_call:  # else fn set a trace function of its own: kept
                sys.settrace(theirs)

    def warn(self, message: str) -> None:
        """Tell the user, once per message, that something of tracer's went wrong: a
        RuntimeWarning, which never becomes the user's exception."""
        if message not in self._warned:
            self._warned.add(message)
            warn(f"tracer: {message}", stacklevel=3)

    # -- names -------------------------------------------------------------------------

    def name_tensors(self, namespace: Mapping[str, Any]) -> None:
        """Learn variable names: each tensor in `namespace` is drawn with its name.

        The first name a tensor is given wins; private names ("_x") are skipped.
        """
        self._names.learn(namespace)

    def name_of(self, t: torch.Tensor) -> str | None:
        """A parameter's or buffer's qualified name ("fc2.bias") when a module called in
        the trace owns it, else the first variable name the tensor was seen under."""
        return self.module_calls.name_of(t) or self._names.of(t)

    # -- capture -----------------------------------------------------------------------

    def observe_backward(
        self, engine: Callable[..., Any], t_outputs: Any, args: tuple, kwargs: dict
    ) -> Any:
        """Run autograd's engine with this pass captured: tracer.record.interception hands
        every backward call made inside the trace here."""
        roots = _tensors(t_outputs)
        if not roots or any(isinstance(r, torch.Tensor) and not r.requires_grad for r in roots):
            return engine(t_outputs, *args, **kwargs)  # torch raises its own, clear error
        user, library = caller_and_library(sys._getframe(1))
        if library is not None or _inside_torch_func(roots):  # passes of a library's own
            source = None if user is None else (user.f_code.co_filename, user.f_lineno)
            with self._recording:
                if library is None:
                    self.recording.note_unrecorded("torch.func", source)
                else:
                    self.recording.note_unrecorded("library", source, library)
            return engine(t_outputs, *args, **kwargs)
        number = self.recording.passes_run + 1  # as the engine ends in this thread
        if not self.options.passes.may_record(number):
            # Not selected: the engine as untraced, with nothing installed on any node.
            result = engine(t_outputs, *args, **kwargs)
            self._pass_ran(None, None)
            return result
        names = ("grad_tensors", "keep_graph", "create_graph", "inputs", "allow_unreachable")
        params = dict(zip(names, args, strict=False)) | kwargs
        busy.active = True
        try:
            # One pause for the whole pass: capture makes many small objects, and the end of
            # each pause brings a collection over everything made during it
            # (tracer.model.collector).
            with paused_gc():
                try:
                    capture, source = self._prepare(roots, params)
                except Exception as e:
                    self.warn(f"this backward pass is not traced ({type(e).__name__}: {e})")
                    result = engine(t_outputs, *args, **kwargs)
                    self._pass_ran(None, None)
                    return result
                first = _next_sequence_nr()
                try:
                    result = engine(t_outputs, *args, **kwargs)
                except RuntimeError as e:  # the user's error, unchanged; explained if we can
                    self._explain_inplace(e, capture)
                    raise
                finally:
                    capture.unhook()  # whatever raised: nothing of ours stays in the graph
                made = (first, _next_sequence_nr(), _all_on_cpu(roots) and capture.on_cpu())
                counted = self.recording.passes_run
                try:
                    self._finish(capture, source, params, result, made)
                except Exception as e:
                    self.warn(f"a backward pass is not recorded ({type(e).__name__}: {e})")
                    if self.recording.passes_run == counted:  # it ran all the same
                        self._pass_ran(None, None)
                # What the capture keeps besides the recording (its edges, the summaries by
                # key) goes now, before the pause ends: else the collection that ends it
                # walks all of it once more.
                del capture
                return result
        finally:
            busy.active = False

    def _prepare(
        self, roots: list[Any], params: dict[str, Any]
    ) -> tuple[GraphCapture, tuple[str, int] | None]:
        with torch._C.DisableTorchFunction():
            user = user_frame(sys._getframe(1))
            source = None if user is None else (user.f_code.co_filename, user.f_lineno)
            self._names.learn_from(user)
            capture = GraphCapture(
                [root_node(r) for r in roots],
                kind="backward",
                number=0,  # numbered as it is recorded (see _finish)
                name_of=self.name_of,
                options=self.options,
                origins=self._origins,
                modules=self.module_calls,
            )
            asked = _tensors(params.get("inputs") or ())
            capture.add_unreached(asked)
            if asked:
                capture.limit_to(asked)
            every_edge = bool(asked) or params.get("accumulate_grad") is False
            try:
                capture.hook(every_edge)
            except BaseException:
                capture.unhook()
                raise
        return capture, source

    def _finish(
        self,
        capture: GraphCapture,
        source: tuple[str, int] | None,
        params: dict[str, Any],
        result: Any,
        made: tuple[int, int, bool],
    ) -> None:
        """Make the plain graph and record it as the next pass. `made`: the sequence
        numbers this thread gave while the engine ran (first, end) and whether it ran all
        of the pass (see BackwardOrigins)."""
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
        if self._origins.any:  # else no node was made by a pass (see BackwardOrigins)
            graph.through = max((n.made_by for n in graph.nodes if n.made_by), default=None)
        self._pass_ran(graph, capture.nodes, made)

    def _pass_ran(
        self,
        graph: Graph | None,
        nodes: NodeFinder | None,
        made: tuple[int, int, bool] | None = None,
    ) -> None:
        """Every backward pass counted ends here, recorded (`graph`, and the capture's
        `nodes`) or not (None): it gets its number, the passes no longer selected are
        dropped, and the forward recorder is told whether the next pass is wanted."""
        selection = self.options.passes
        # Passes may end in several threads at once: each gets its own number, in the
        # order they end.
        with self._recording:
            number = self.recording.passes_run + 1
            if graph is not None and not selection.may_record(number):
                graph = nodes = None  # another thread's pass took the number it expected
            recognising = graph is not None or bool(self._recogniser.candidates)
            if recognising:
                self._recognise("before")
            if graph is not None:
                graph.number = number
                if graph.create_graph and made is not None:
                    first, end, in_this_thread = made
                    self._origins.add(number, first, end, in_this_thread=in_this_thread)
                self.recording.graphs.append(graph)
            self._latest_nodes = nodes
            self.recording.passes_run = number
            self.flow_recorder.after_pass(number, recorded=graph is not None)
            if recognising:
                self._recognise("after", number)
            self._made_checks.clear()  # keyed by pass: none of them can be made again
            # A pass is dropped only when a later one is recorded (it was recorded while
            # it might be the last, or one of the first ten): its checks go with it.
            if graph is not None or self.recording.checks:
                self._drop_unselected(number)
            self._between_passes()

    def _between_passes(self) -> None:
        """Get ready for the next pass: where it is not recorded in full, the forward
        recorder leaves the mode stack and the global module hooks come off (ops and module
        calls then cost what they cost untraced), as soon as both are safe; where it is,
        both are back. Called as a pass ends and before each optimizer step (the first safe
        point in a training loop: a pass ends inside the recorder's dispatch of
        `backward`, which would put it back on the stack as it returns).

        Module calls matter to a pass recorded in full (clusters, module outputs) and to
        the names, learnt at a model's first call, before the first pass ends. The hooks
        come off only where no module call is open in this thread, so that no call's end
        goes unseen."""
        wanted = self.options.passes.may_record(self.recording.passes_run + 1)
        recorder = self.forward_recorder
        if recorder is not None:
            recorder.pause(not wanted)
        if wanted:
            watch_modules(self, True)
        elif not self.module_calls.in_call() and (recorder is None or recorder.off_stack):
            watch_modules(self, False)

    def _before_optimizer_step(self, *_: object) -> None:
        try:
            self._between_passes()
        except Exception as e:  # tracer's problem, never the user's
            self.warn(f"a pass not recorded is traced more than it needs ({e})")

    def _drop_unselected(self, passes_run: int, *, ended: bool = False) -> None:
        """Forget the recorded passes that can no longer be selected after `passes_run`
        passes (one that might have been the last, when another came; when the trace has
        `ended`, any not selected), and the checks made after a pass not recorded: what
        the trace holds is bounded by the selection."""
        selection = self.options.passes
        if selection.records_every_pass:
            return
        recording = self.recording
        held = [g.number for g in recording.graphs if g.kind == "backward"]
        dropped = {n for n in held if not selection.wants(n, passes_run, ended=ended)}
        recording.drop_passes(dropped)
        self.flow_recorder.drop_passes(dropped)
        if recording.checks:
            kept = set(held) - dropped
            if any(c.after and c.after not in kept for c in recording.checks):
                recording.checks = [c for c in recording.checks if not c.after or c.after in kept]

    # -- errors explained ---------------------------------------------------------------

    def _explain_inplace(self, error: RuntimeError, capture: GraphCapture) -> None:
        """A backward that failed because a saved tensor was changed in place: which
        tensor, by which op at which line, and which node needed it (see `explain`)."""
        try:
            found = _VERSION_ERROR.search(str(error))
            if found is None:
                return
            output, producer = int(found[1]), found[2]
            actual, expected = int(found[3]), int(found[4])
            recorder = self.forward_recorder
            change = None
            for entry in reversed(recorder.inplace if recorder is not None else ()):
                # torch names the node by its op ("Sigmoid") or its class ("...Backward0")
                made_by = entry.made_by
                if (
                    producer in (made_by, _BACKWARD_SUFFIX.sub("", made_by))
                    and entry.output == output
                ):
                    if expected < entry.version <= actual:
                        change = entry
                        break
            needer = capture.last_ran()
            tensor = None if change is None else change.tensor()
            name = None if tensor is None else self.name_of(tensor)
            self._explained = (
                id(error),
                InPlaceError(
                    name=name,
                    op=None if change is None else change.op,
                    where=None if change is None else change.where,
                    made_by=producer,
                    needed_by=None if needer is None else node_title(needer),
                    expected=expected,
                    actual=actual,
                    saved_where=None if needer is None else needer.where,
                ),
            )
        except Exception as e:  # tracer's problem, never the user's
            self.warn(f"an in-place error was not explained ({type(e).__name__}: {e})")

    def explain(self, error: BaseException) -> InPlaceError | NoGradient | None:
        """What tracer can say of an error the traced code raised, beyond its message (a
        backward failing on an in-place change; an AttributeError or TypeError on a line
        that read a `.grad` as None: why it is None), or None."""
        if self._explained is not None and self._explained[0] == id(error):
            return self._explained[1]
        if not isinstance(error, (AttributeError, TypeError)):  # what using None raises
            return None
        where, tb = None, error.__traceback__
        while tb is not None:  # the innermost line of the user's code
            code = tb.tb_frame.f_code
            if is_user_file(code.co_filename):
                where = (code.co_filename, tb.tb_lineno)
            tb = tb.tb_next
        reads = reversed(self.recording.no_gradients)
        return next((why for why in reads if where is not None and why.where == where), None)

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
        gradient by central finite differences instead (see tracer.checks.numeric).
        """
        self._names.learn_from(sys._getframe(1))
        if name is None:
            name = self.name_of(tensor) or f"input {len(self.recording.checks)}"
        manual, rtol, atol, how = oracle(tensor, manual, fn, rtol, atol)
        result = self._record_check(
            name, tensor.grad, manual, rtol=rtol, atol=atol, how=how, of_tensor=tensor
        )
        if not quiet:
            print(format_check(result))
        return result

    def _record_check(
        self,
        name: str,
        grad: torch.Tensor | None,
        manual: torch.Tensor,
        *,
        rtol: float | None,
        atol: float | None,
        how: How,
        verdict: bool | None = None,
        of_tensor: torch.Tensor | None = None,
    ) -> Check:
        """Compare and record a check, with the manual formula's graph when it has one
        (drawn beside autograd's). `of_tensor` is the tensor whose gradient `grad` is,
        when known: the check is placed on its node. The same gradient compared with the
        same manual result again in the same pass (`cmp` helpers compare exactly, then
        closely) adds its way to the check made first instead of a second check."""
        after = self.recording.passes_run
        key = (name, id(manual), after)
        made = self._made_checks.get(key)
        node = None
        if of_tensor is not None and self._latest_nodes is not None and after:
            node = self._latest_nodes.node_of(of_tensor)
        no_gradient = None
        if grad is None and of_tensor is not None:
            no_gradient = no_gradient_line(self._why_no_gradient(of_tensor, name, node))
        result = judge(
            self.recording,
            name,
            grad,
            manual,
            rtol=rtol,
            atol=atol,
            max_values=self.options.max_values,
            how=how,
            verdict=verdict,
            node=node,
            no_gradient=no_gradient,
        )
        if made is not None and made[0]() is manual:
            index = made[1]
            first = self.recording.checks[index]
            if how not in first.ways:
                first = replace(
                    first, also=(*first.also, how), passed=first.passed and result.passed
                )
                self.recording.checks[index] = first
            return first
        self._made_checks[key] = (weakref.ref(manual), len(self.recording.checks))
        if manual.grad_fn is not None:
            with torch._C.DisableTorchFunction():
                capture = GraphCapture(
                    [root_node(manual)],
                    kind="manual",
                    number=result.after,
                    name_of=self.name_of,
                    options=self.options,
                )
                graph = capture.finish()
            graph.derivative = result.derivative
            self.recording.graphs.append(graph)
        self.recording.checks.append(result)
        return result

    def _why_no_gradient(self, t: torch.Tensor, name: str, node: int | None) -> NoGradient:
        """Why `t.grad` is None now; `node`: its node in the latest pass, when in it."""
        # The latest pass's nodes are known only when it was recorded (else None).
        in_latest = None if self._latest_nodes is None else node is not None
        had_grad = False
        if node is not None:
            had_grad = self.recording.backward_graphs()[-1].node(node).leaf_grad is not None
        recorder = self.forward_recorder
        cut = None if recorder is None else recorder.cuts.of(t)
        ran = self.recording.passes_run  # recorded or not: what pass numbers count
        return why_no_gradient(t, name, ran, in_latest, had_grad=had_grad, cut=cut)

    def _note_none_grad(self, t: torch.Tensor, frame: FrameType) -> None:
        """The user's code read `t.grad` and got None (the forward recorder saw it)."""
        self._none_reads.note(t, frame, self._why_none_read, self.recording.no_gradients)

    def _why_none_read(self, t: torch.Tensor, frame: FrameType) -> NoGradient:
        name = self.name_of(t) or variable_naming(frame)(t) or "a tensor"
        node = None if self._latest_nodes is None else self._latest_nodes.node_of(t)
        return self._why_no_gradient(t, name, node)

    def _note_comparison(
        self, how: How, args: tuple, kwargs: dict, out: Any, frame: FrameType
    ) -> None:
        """The forward recorder saw a comparison: when the user's code compared a gradient
        with it, that is a check, with the verdict the code saw."""
        found = user_comparison(how, args, kwargs, out, frame)
        if found is None:
            return
        self._names.learn_from(found.caller)  # also the names the manual graph shows
        for grad, manual in ((found.a, found.b), (found.b, found.a)):
            of = gradient_of(grad, found.caller, self._grad_results, self._names.tensors())
            if of is not None:
                self._record_check(
                    of.name,
                    grad,
                    manual,
                    rtol=found.rtol,
                    atol=found.atol,
                    how=how,
                    verdict=found.verdict,
                    of_tensor=of.tensor,
                )
                return
        # Neither side is a gradient: not a comparison we report.

    # -- manual results the user's code showed (tracer.checks.manual) -----------------------------

    def offer_manual(self, tensor: torch.Tensor, source: str) -> None:
        """A tensor the user's code displayed, printed or bound: maybe a manual result
        (the rule is tracer.checks.manual's). Never raises into the user's code."""
        try:
            with torch._C.DisableTorchFunction():
                self._recogniser.offer(tensor, source, self.recording.passes_run)
        except Exception as e:
            self.warn(f"a shown result was not considered ({type(e).__name__}: {e})")

    def _recognise(self, moment: Moment, number: int = 0) -> None:
        """Let the recogniser act at a pass ("before" / "after" it is recorded) or at the
        end of the trace ("close")."""

        def record(name: str, grad: torch.Tensor, manual: torch.Tensor) -> Check:
            return self._record_check(name, grad, manual, rtol=None, atol=None, how=How.RECOGNISED)

        deciding = Deciding(self.recording, self.name_of, record)
        try:
            with torch._C.DisableTorchFunction():
                if moment == "before":
                    self._recogniser.before_pass_recorded(deciding)
                elif moment == "after":
                    self._recogniser.after_pass_recorded(number)
                else:
                    self._recogniser.close(deciding)
        except Exception as e:
            self.warn(f"shown results were not compared ({type(e).__name__}: {e})")

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
        parts = {part.graphs[0].number: part for part in self.recording.per_pass()}
        if pass_ not in parts:
            numbers = list(parts)
            have = (
                "no backward pass"
                if not numbers
                else f"passes 1 to {len(numbers)}"
                if numbers == list(range(1, len(numbers) + 1))
                else "passes " + ", ".join(map(str, numbers))
            )
            unrecorded = "" if pass_ > self.recording.passes_run else " recorded (see passes=)"
            raise TracerError(
                f"there is no backward pass {pass_}{unrecorded}: this trace has {have}"
            )
        return parts[pass_]

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
    differences of `fn`, see tracer.checks.numeric): inside a trace it is recorded there (see
    `Trace.check`); outside one it is only compared, printed and returned."""
    active = current_trace()
    if active is not None:
        # The only Observer there is: open_trace is only ever given a Trace.
        return cast("Trace", active).check(
            tensor, manual, name=name, rtol=rtol, atol=atol, quiet=quiet, fn=fn
        )
    frame = user_frame(sys._getframe(1))
    if name is None and frame is not None:
        name = next(
            (
                k
                for namespace in namespaces(frame)
                for k, v in namespace.items()
                if v is tensor and is_user_name(k)
            ),
            None,
        )
    manual, rtol, atol, how = oracle(tensor, manual, fn, rtol, atol)
    no_gradient = None
    if tensor.grad is None:  # outside a trace: what passes ran is not known
        why = why_no_gradient(tensor, name or "the tensor", 1, None)
        no_gradient = no_gradient_line(why)
    result = compare(
        name or "input", tensor.grad, manual, rtol=rtol, atol=atol, no_gradient=no_gradient
    )
    result = replace(result, how=how)
    if not quiet:
        print(format_check(result))
    return result


def trace(
    title: str = "",
    *,
    max_values: int = DEFAULT_MAX_VALUES,
    values: bool = True,
    saved: bool = False,
    jacobians: bool = False,
    passes: str | PassSelection | None = None,
) -> Trace:
    """Trace the backward passes run inside the `with` block.

    `values=False` records structure and gradients only (no forward values, constants or
    allclose checks): the cheapest way to watch a large model. `saved=True` also records
    what autograd saved for backward on each node. `jacobians=True` also records each small
    op's local Jacobian, for the step-through page (`t.render("graph.html")`). `passes`
    selects the passes recorded (see tracer.model.selection): "1,2,-1", "1-5", "every 100",
    "all"; by default every pass when the block makes at most 10, else the first 3 and the
    last. A pass not selected runs with nothing of tracer's on its nodes.

    >>> with tracer.trace() as t:
    ...     f = torch.log(1 + torch.dot(x, x))
    ...     f.backward()
    >>> t.render("graph.svg")
    """
    return Trace(
        title,
        max_values=max_values,
        values=values,
        saved=saved,
        jacobians=jacobians,
        passes=passes,
    )


def forward_mode(
    fn: Callable[..., torch.Tensor],
    *inputs: torch.Tensor,
    direction: Any = None,
    title: str = "",
    max_values: int = DEFAULT_MAX_VALUES,
) -> Trace:
    """Forward mode beside reverse mode: trace `fn(*inputs)` and its backward (seeded with
    ones when the output is not a scalar), then run `fn` once more in forward mode
    (`torch.autograd.forward_ad`) along `direction` over the inputs, and check the output's
    tangent J·v against reverse mode's J·v (see tracer.checks.forward_mode).

    `direction`: None (e1), "e3", or numbers (a list, a tensor) for the inputs flattened
    and joined in the order `fn` first uses them. The inputs must require grad; their
    `.grad` receive the one backward, as after `f.backward()`.

    >>> t = tracer.forward_mode(lambda x: torch.log(1 + torch.dot(x, x)), x, direction="e2")
    >>> t.render("forward.svg")
    """
    if isinstance(direction, torch.Tensor):
        direction = direction.detach().flatten().tolist()
    along = Direction.of(direction)
    if not inputs or not all(isinstance(i, torch.Tensor) and i.requires_grad for i in inputs):
        raise TracerError(
            "forward_mode(fn, *inputs): give the inputs as tensors with requires_grad=True"
        )
    with Trace(title, max_values=max_values) as t:
        output = t.call(fn, *inputs)
        if not isinstance(output, torch.Tensor):
            raise TracerError(f"forward_mode: fn returned {type(output).__name__}, not a tensor")
        output.backward(torch.ones_like(output))
    t.recording.forward = run_forward_mode(fn, along, no_other, max_values, given=inputs)
    return t
