"""The trace session: `with tracer.trace() as t:` runs the user's code under observation.

A TorchFunctionMode sees every torch call in the block. Ordinary ops pass straight through
(we only note which inputs needed no grad, to draw them as constants); a call to
`Tensor.backward`, `torch.autograd.backward` or `torch.autograd.grad` is captured: the graph
is walked and hooked just before the engine runs, and unhooked just after, and where the
user's code made the call is noted. A `torch.allclose` the user's code makes on a gradient
is recorded as a check, as `tracer.check` would record it, with the verdict the code saw.
"""

from __future__ import annotations

import inspect
import sys
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from tracer.capture import DEFAULT_MAX_VALUES, GradFn, GraphCapture, Known, root_node, summarize
from tracer.check import compare
from tracer.graph import Check, Graph, Node, Recording, TensorData
from tracer.render import RenderOptions, render_svg, write
from tracer.report import format_check

_BACKWARD_CALLS = {torch.Tensor.backward, torch.autograd.backward, torch.autograd.grad}
_ALLCLOSE = {torch.allclose, torch.Tensor.allclose}

# Frames of these modules are machinery, not the user's code, when looking for names.
_INTERNAL_MODULES = ("torch", "contextlib", "tracer.session", "tracer.capture", "tracer.check")
# The exercise runner (tracer.exercises itself, not the modules of exercises under it).
_INTERNAL_EXACT = ("tracer.exercises",)


def _module_in(frame: FrameType, modules: Iterable[str]) -> bool:
    """Whether the frame's code is in one of `modules` or a module under one."""
    module = frame.f_globals.get("__name__", "")
    return any(module == m or module.startswith(m + ".") for m in modules)


def _is_internal(frame: FrameType) -> bool:
    return frame.f_globals.get("__name__", "") in _INTERNAL_EXACT or _module_in(
        frame, _INTERNAL_MODULES
    )


def _outward(start: FrameType | None, skip: Callable[[FrameType], bool]) -> FrameType | None:
    """The innermost frame at or above `start` that `skip` does not match."""
    frame = start
    while frame is not None and skip(frame):
        frame = frame.f_back
    return frame


def user_frame(start: FrameType | None) -> FrameType | None:
    """The innermost frame at or above `start` that belongs to the user's code."""
    return _outward(start, _is_internal)


def _is_user_name(name: str) -> bool:
    """A variable name worth showing: not private ("_x"), not a tool's ("@py_assert1")."""
    return name.isidentifier() and not name.startswith("_")


def _namespaces(frame: FrameType) -> list[Mapping[str, Any]]:
    """Where the frame's code looks names up: its locals, then its globals (once, when the
    code runs at module level, where the two are the same)."""
    if frame.f_locals is frame.f_globals:
        return [frame.f_globals]
    return [frame.f_locals, frame.f_globals]


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, torch.Tensor)]
    return []


# The traces whose `with` block is running, innermost last: `tracer.check` reports to it.
_ACTIVE: list[Trace] = []


class _Recorder(TorchFunctionMode):
    """Routes every torch call in the traced block through the session."""

    def __init__(self, session: Trace) -> None:
        super().__init__()
        self.session = session

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        if func in _BACKWARD_CALLS:
            return self.session._run_backward(func, args, kwargs)
        out = func(*args, **kwargs)
        if func in _ALLCLOSE:
            if isinstance(out, bool):
                self.session._note_allclose(args, kwargs, out, sys._getframe(1))
            return out
        self.session._note_forward(args, kwargs, out)
        return out


class Trace:
    """Records every backward pass run inside `with`, and the checks made against them.

    After the block, `recording` is plain data (no torch objects): render it with
    `render`, compare gradients with `check`.
    """

    def __init__(self, title: str = "", *, max_values: int = DEFAULT_MAX_VALUES) -> None:
        self.max_values = max_values
        self.recording = Recording(title=title)
        self._mode: _Recorder | None = None
        # Torch objects held only while the block runs, then dropped in __exit__.
        self._names: dict[int, str] = {}
        self._named: list[torch.Tensor] = []  # keeps named tensors alive, so ids stay unique
        self._node_names: dict[GradFn, str] = {}
        self._constants: dict[GradFn, list[tuple[int, torch.Tensor]]] = {}
        self._forward: dict[tuple[GradFn, int], TensorData] = {}
        self._forward_fns: set[GradFn] = set()  # the nodes whose op the forward recorder saw
        self._in_earlier_pass: set[GradFn] = set()  # nodes of the graphs captured so far
        self._made_by: str | None = None  # the latest pass run with create_graph=True
        # Results of torch.autograd.grad by id (kept alive, so ids stay unique), with the
        # name of the input each is the gradient of: allclose on one of them is a check.
        self._grad_results: dict[int, tuple[torch.Tensor, str]] = {}

    # -- the block ---------------------------------------------------------------------

    def __enter__(self) -> Trace:
        self._mode = _Recorder(self)
        self._mode.__enter__()
        _ACTIVE.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._mode is not None
        _ACTIVE.remove(self)
        self._mode.__exit__(*exc)
        self._mode = None
        self._names.clear()
        self._named.clear()
        self._node_names.clear()
        self._constants.clear()
        self._forward.clear()
        self._forward_fns.clear()
        self._in_earlier_pass.clear()
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

    # -- names -------------------------------------------------------------------------

    def name_tensors(self, namespace: Mapping[str, Any]) -> None:
        """Learn variable names: each tensor in `namespace` is drawn with its name.

        The first name a tensor is given wins; private names ("_x") are skipped.
        """
        for name, value in namespace.items():
            if not _is_user_name(name) or not isinstance(value, torch.Tensor):
                continue
            if id(value) in self._names:
                continue
            self._names[id(value)] = name
            self._named.append(value)
            if value.grad_fn is not None:
                fn, _ = root_node(value)
                existing = self._node_names.get(fn)
                self._node_names[fn] = name if existing is None else f"{existing}, {name}"

    def _name_from_frame(self, frame: FrameType | None) -> None:
        frame = user_frame(frame)
        for namespace in _namespaces(frame) if frame is not None else ():
            self.name_tensors(namespace)

    # -- capture -----------------------------------------------------------------------

    def _note_forward(self, args: tuple, kwargs: dict, out: Any) -> None:
        """Remember each output's value, and which inputs needing no grad the op took."""
        outputs = [t for t in _tensors(out) if t.grad_fn is not None]
        if not outputs:
            return
        for o in outputs:
            self._forward[(o.grad_fn, o.output_nr)] = summarize(o, self.max_values)
            self._forward_fns.add(o.grad_fn)
        inputs = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
        constants = [(i, t) for i, t in enumerate(inputs) if not t.requires_grad]
        if not constants:
            return
        inputs_nodes = {root_node(t)[0] for t in inputs if t.requires_grad}
        for o in outputs:
            self._constants.setdefault(_constant_user(o.grad_fn, inputs_nodes), constants)

    def _origin(self, fn: GradFn) -> str | None:
        """Which backward pass made `fn`: one not seen in the forward pass or an earlier
        graph, after a pass that ran with create_graph=True."""
        if self._made_by is None or fn in self._in_earlier_pass:
            return None
        if fn in self._forward_fns:
            return None
        return self._made_by

    def _capture(
        self, roots: Iterable[torch.Tensor], kind: str, label: str, create_graph: bool = False
    ) -> GraphCapture:
        known = Known(
            names=self._names,
            node_names=self._node_names,
            constants=self._constants,
            forward=self._forward,
            origin=self._origin,
        )
        return GraphCapture(
            [root_node(t) for t in roots],
            kind=kind,  # type: ignore[arg-type]
            label=label,
            known=known,
            max_values=self.max_values,
            create_graph=create_graph,
        )

    def _run_backward(self, func: Any, args: tuple, kwargs: dict) -> Any:
        bound = inspect.signature(func).bind(*args, **kwargs)
        params = bound.arguments
        if func is torch.Tensor.backward:
            roots, seeds = [params["self"]], [params.get("gradient")]
        elif func is torch.autograd.backward:
            roots = _tensors(params["tensors"])
            seeds = _seeds(params.get("grad_tensors"), len(roots))
        else:  # torch.autograd.grad
            roots = _tensors(params["outputs"])
            seeds = _seeds(params.get("grad_outputs"), len(roots))
        if not roots or any(not r.requires_grad for r in roots):
            return func(*args, **kwargs)  # torch raises its own, clear error
        user = user_frame(sys._getframe(1))
        source = None if user is None else (user.f_code.co_filename, user.f_lineno)
        self._name_from_frame(user)
        n = len(self.recording.backward_graphs()) + 1
        create_graph = bool(params.get("create_graph"))
        label = f"autograd: backward pass {n}"
        if create_graph:
            label += " (create_graph: its gradients have a graph)"
        capture = self._capture(roots, "backward", label, create_graph)
        asked = params.get("inputs")
        if asked is not None:
            capture.add_unreached(_tensors(asked))
        self._in_earlier_pass.update(capture.nodes())
        capture.hook()
        result: Any = None
        try:
            result = func(*args, **kwargs)
        finally:
            # Hooks come off even when backward raises: nothing of ours stays in the graph.
            filled = [
                torch.ones_like(r) if s is None else torch.as_tensor(s, dtype=r.dtype)
                for r, s in zip(roots, seeds, strict=True)
            ]
            returned = None
            if func is torch.autograd.grad and result is not None:
                inputs = _tensors(params["inputs"])
                returned = {
                    root_node(i)[0]: g
                    for i, g in zip(inputs, result, strict=False)
                    if g is not None
                }
                for k, (i, g) in enumerate(zip(inputs, result, strict=False)):
                    if isinstance(g, torch.Tensor):
                        self._grad_results[id(g)] = (g, self._names.get(id(i)) or f"input {k}")
            graph = capture.finish(filled, returned)
        graph.source = source
        if create_graph:
            self._made_by = f"backward pass {n}"
        if any(node.origin for node in graph.nodes):
            graph.label += f" (through the graph {self._made_by} made)"
        self.recording.graphs.append(graph)
        return result

    # -- after the block ---------------------------------------------------------------

    def check(
        self,
        tensor: torch.Tensor,
        manual: torch.Tensor,
        *,
        name: str | None = None,
        rtol: float | None = None,
        atol: float | None = None,
        quiet: bool = False,
    ) -> Check:
        """Compare `tensor.grad` with the hand-derived `manual`; print and return the result.

        When `manual` was computed from tensors that require grad it has a graph of its
        own: that graph is captured too and drawn beside autograd's.
        """
        self._name_from_frame(sys._getframe(1))
        if name is None:
            name = self._names.get(id(tensor)) or f"input {len(self.recording.checks)}"
        result = self._record(name, tensor.grad, manual, rtol=rtol, atol=atol)
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
        of = passes[-1].node(passes[-1].roots[0]).name if passes else None
        result = compare(
            name, grad, manual, rtol=rtol, atol=atol, max_values=self.max_values, of=of
        )
        passed = result.passed if verdict is None else verdict
        result = replace(result, after=len(passes), how=how, passed=passed)
        if manual.grad_fn is not None:
            graph = self._capture([manual], "manual", f"manual {result.derivative}").finish()
            self.recording.graphs.append(graph)
        self.recording.checks.append(result)
        return result

    def _note_allclose(self, args: tuple, kwargs: dict, verdict: bool, frame: FrameType) -> None:
        """The code called allclose: when the user's code (not tracer's, which compares
        with allclose too) compared a gradient with it, record that as a check."""
        caller = _outward(frame, lambda f: _module_in(f, ("torch",)))
        if caller is None or _module_in(caller, ("tracer",)):
            return
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
        if id(t) in self._grad_results:
            return self._grad_results[id(t)][1]
        for tensor in self._named:
            if tensor.is_leaf and tensor.requires_grad and tensor.grad is t:
                return self._names[id(tensor)]
        frame = user_frame(frame)
        for namespace in _namespaces(frame) if frame is not None else ():
            for name, value in namespace.items():
                if isinstance(value, torch.nn.Module) and _is_user_name(name):
                    for pname, p in value.named_parameters():
                        if p.grad is t:
                            return f"{name}.{pname}"
        return None

    def render(self, path: str | Path, options: RenderOptions | None = None) -> Path:
        """Write the recording to `path`; the format follows the suffix (see render.write).

        `options` picks the detail: `RenderOptions("slide")` for projecting; the default
        is the full view.
        """
        return write(self.recording, path, options)

    def _repr_svg_(self) -> str | None:
        """Jupyter's picture of the trace; None (Jupyter then shows the text) with no graph."""
        if not self.recording.graphs:
            return None
        return render_svg(self.recording)


def _constant_user(output: GradFn, stop: set[GradFn]) -> GradFn:
    """The node of this call's own subgraph that took the constants as inputs.

    A composite op (matmul of a vector by a matrix: unsqueeze, mm, squeeze) makes several
    nodes in one call; the constants belong to the first, breadth-first from the output,
    that has an input needing no grad (a None in its next_functions).
    """
    queue, seen = deque([output]), {output}
    while queue:
        fn = queue.popleft()
        if any(child is None for child, _ in fn.next_functions):
            return fn
        for child, _ in fn.next_functions:
            if child not in seen and child not in stop:
                seen.add(child)
                queue.append(child)
    return output


def _seeds(given: Any, n: int) -> list[Any]:
    if given is None:
        return [None] * n
    if isinstance(given, torch.Tensor):
        return [given]
    return list(given)


def check(
    tensor: torch.Tensor,
    manual: torch.Tensor,
    *,
    name: str | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    quiet: bool = False,
) -> Check:
    """Compare `tensor.grad` with `manual`: inside a trace it is recorded there (see
    `Trace.check`); outside one it is only compared, printed and returned."""
    if _ACTIVE:
        return _ACTIVE[-1].check(tensor, manual, name=name, rtol=rtol, atol=atol, quiet=quiet)
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
    result = compare(name or "input", tensor.grad, manual, rtol=rtol, atol=atol)
    if not quiet:
        print(format_check(result))
    return result


def trace(title: str = "", *, max_values: int = DEFAULT_MAX_VALUES) -> Trace:
    """Trace every backward pass run inside the `with` block.

    >>> with tracer.trace() as t:
    ...     f = torch.log(1 + torch.dot(x, x))
    ...     f.backward()
    >>> t.render("graph.svg")
    """
    return Trace(title, max_values=max_values)
