"""The forward recorder: a `TorchFunctionMode` that sees every op the user's code runs
inside a trace (with `values=True`, the default).

- Each op's output value is kept on the op's own `grad_fn` (see tracer.record.node_record):
  a small one as a detached alias with its `_version`, a large one summarised at once
  (`QuickSummary`), so that no tensor lives longer than it does untraced; the node is
  stamped with the module call open when the op ran (tracer.record.modules).
- Inputs needing no grad that the op took are noted: they are drawn as constants (a large
  one summarised at once and then held only weakly: the op may not have saved it).
- The user's own comparisons of a gradient (allclose, ==, equal, isclose) are handed to
  `on_comparison`, which decides whether they are checks (tracer.checks.comparisons).
- Where the user's code reads a `.grad` that is None, it tells `on_none_grad` (a mode sees
  that read: torch's getter asks for a torch function while a mode is on the stack); where
  the user's code cuts a tensor off the graph (`detach()`, `.data`, an op under
  `no_grad`), it keeps where, in `cuts`: what a None `.grad` is explained with.
- It steps aside (leaves the mode stack) for a module call that can record nothing: one
  made while grad mode is off (`no_grad`, `inference_mode`), or an evaluation fast path's
  module (`nn.MultiheadAttention`, the Transformer encoder and its layer, in `eval()`) that
  nothing needing a gradient enters. A mode makes `has_torch_function` true, which turns
  those fast paths off: the numbers, the strides and the padded positions would differ.
- It steps aside, too, while `torch.jit.trace` traces (a module call it traces, and the
  whole of a traced function: see tracer.record.interception). torch's tracer takes each
  op's source line from the innermost Python frame, and the names of its values from that
  frame's locals: with the mode on the stack, that frame would be the recorder's.

Anything that goes wrong is `warn`ed about; the user's op result is returned unchanged.
"""

from __future__ import annotations

import sys
import threading
import warnings
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from types import CodeType, FrameType
from typing import Any, NamedTuple

import torch
from torch.overrides import (
    TorchFunctionMode,
    _get_current_function_mode,
    _get_current_function_mode_stack,
    _pop_mode,
    _push_mode,
)

from tracer.model.check import How
from tracer.model.explain import Cut, CutKind
from tracer.model.location import code_place, is_user_file
from tracer.record.modules import ModuleTracker
from tracer.record.names import user_frame
from tracer.record.node_record import ConstantInput, NodeRecord, record_of
from tracer.record.summary import QuickSummary, compact_copy, kept_alias

# The user's comparisons that may check a gradient (`torch.allclose(x.grad, m)`,
# `x.grad == 4 * x`), and what each is as a check.
COMPARISONS: dict[Callable[..., Any], How] = {
    torch.allclose: How.ALLCLOSE,
    torch.Tensor.allclose: How.ALLCLOSE,
    torch.Tensor.__eq__: How.EQUALS,
    torch.Tensor.eq: How.EQUALS,
    torch.eq: How.EQUALS,
    torch.equal: How.EQUAL,
    torch.isclose: How.ISCLOSE,
    torch.Tensor.isclose: How.ISCLOSE,
    # A difference of a gradient and a hand-derived result: the largest error, taken as a
    # lesson takes it. Also an op of the forward pass like any other (it is recorded too).
    torch.Tensor.__sub__: How.DIFFERENCE,
    torch.Tensor.sub: How.DIFFERENCE,
    torch.sub: How.DIFFERENCE,
}
# Their results are gradients the engine made, not forward values of the user's ops.
_BACKWARD_CALLS = {torch.Tensor.backward, torch.autograd.backward, torch.autograd.grad}

# (how, args, kwargs, result, the frame that called the comparison)
OnComparison = Callable[[How, tuple, dict, Any, FrameType], None]
# (the tensor whose .grad the user's code read as None, the user's frame that read it)
OnNoneGrad = Callable[[torch.Tensor, FrameType], None]

# A property read (`t.grad`, `t.data`) reaches a mode as its descriptor's bound `__get__`,
# a method-wrapper, made anew for each read: known by the descriptor it is bound to. An
# assignment (`t.grad = None`) reaches it as the bound `__set__`, of the same type.
_GRAD: Any = vars(torch._C.TensorBase)["grad"]  # the descriptors (typed as tensors)
_DATA: Any = vars(torch._C.TensorBase)["data"]
_GETTER = type(_GRAD.__get__)
_DETACH, _TORCH_DETACH = torch.Tensor.detach, torch.detach
# How many cuts a trace remembers (the latest; see Cuts).
CUTS_KEPT = 256


class Cuts:
    """Where the user's code cut tensors off the graph: for the input of each cut (the
    tensor whose path to the loss it cut) and for its output (a tensor that then needs no
    gradient), the first cut seen, for the latest CUTS_KEPT tensors. Weak references:
    no tensor lives longer for it, and a reused id is told apart."""

    def __init__(self) -> None:
        self._cuts: dict[int, tuple[weakref.ref, Cut]] = {}

    def note(self, t: torch.Tensor, cut: Cut) -> None:
        entry = self._cuts.get(id(t))
        if entry is not None and entry[0]() is t:
            return  # the first cut of a tensor is where its path was cut
        if len(self._cuts) >= CUTS_KEPT:
            del self._cuts[next(iter(self._cuts))]
        self._cuts[id(t)] = (weakref.ref(t), cut)

    def of(self, t: torch.Tensor) -> Cut | None:
        entry = self._cuts.get(id(t))
        return entry[1] if entry is not None and entry[0]() is t else None


# Modules whose forward, in eval(), takes a fast path when nothing needs a gradient and no
# tensor argument has a __torch_function__ (or a mode is active).
FAST_PATH_MODULES = (
    torch.nn.MultiheadAttention,
    torch.nn.TransformerEncoderLayer,
    torch.nn.TransformerEncoder,
)


class InPlace(NamedTuple):
    """An in-place op the user's code ran on a tensor that was part of a graph: what a
    backward failing on its version counter is explained with (tracer.session)."""

    op: str  # "mul_", "__setitem__"
    made_by: str  # the tensor's grad_fn class before the op: "SigmoidBackward0"
    output: int  # which output of that node the tensor was
    version: int  # the tensor's version after the op
    tensor: weakref.ref  # the tensor (for its name)
    where: tuple[str, int] | None  # the user's line: (file name as in the code, line)


# How many in-place ops a trace remembers (the latest; a training loop makes many).
INPLACE_KEPT = 256
_INPLACE_NAMES: dict[Any, str | None] = {}


def _inplace_name(func: Any) -> str | None:
    """The name of `func` when it changes its first argument in place, else None."""
    try:
        return _INPLACE_NAMES[func]
    except (KeyError, TypeError):
        pass
    name = getattr(func, "__name__", "")
    found = name if (name.endswith("_") and not name.endswith("__")) else None
    if name in ("__setitem__", "__iadd__", "__isub__", "__imul__", "__itruediv__", "__ipow__"):
        found = name
    try:
        _INPLACE_NAMES[func] = found
    except TypeError:  # an unhashable callable
        pass
    return found


def records_nothing(module: torch.nn.Module, args: tuple) -> bool:
    """Whether a call of `module` with `args` can make no node a graph would hold, or
    is traced by `torch.jit.trace` (which must not see the recorder: module docstring)."""
    if not torch.is_grad_enabled() or torch._C._is_tracing():  # no_grad, inference_mode
        return True
    if not isinstance(module, FAST_PATH_MODULES) or module.training:
        return False
    with torch._C.DisableTorchFunction():  # a tensor's attributes: not the user's calls
        if any(isinstance(a, torch.Tensor) and a.requires_grad for a in args):
            return False
        return not any(p.requires_grad for p in module.parameters())


class _Aside(threading.local):
    """How deep this thread is inside module calls the recorder stepped aside for (0: not
    aside), and whether it is off this thread's stack while paused (`off`: the mode it was
    above, and the stack's length then). Modes are per thread, and so is this."""

    depth = 0
    off: tuple[Any, int] | None = None


def _warns_on_read(args: tuple) -> bool:
    """Whether reading `args[0].grad` makes torch warn: a non-leaf that does not retain
    its gradient."""
    with torch._C.DisableTorchFunction():
        t = args[0] if args else None
        return isinstance(t, torch.Tensor) and t.grad_fn is not None and not t.retains_grad


def _read_warning_as_untraced(func: Any, args: tuple, kwargs: dict) -> Any:
    """Read a non-leaf's `.grad` with torch's warning about it issued at the line of the
    code that read it, as untraced: torch warns from C++, at the innermost Python frame,
    which under a mode is the recorder's. Caught, and issued again two frames up (this,
    `__torch_function__`, the reader), through the reader's filters and registry. The
    filters are swapped meanwhile (`catch_warnings`: not thread-safe), only for this read."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = func(*args, **kwargs)
    for warning in caught:
        warnings.warn(warning.message, warning.category, stacklevel=3)
    return out


def _user_line(frame: FrameType) -> tuple[CodeType, int] | None:
    """Where the user's code called an op: `frame` (the op's caller) or, for an op written
    in Python (`F.relu`), its caller, as (code, offset: see tracer.model.location.code_line);
    None inside a module's or a library's own code. A line is kept for every op and must
    cost next to nothing: two frames at most, and the line looked up only at capture."""
    code = frame.f_code
    if not is_user_file(code.co_filename):
        back = frame.f_back
        if back is None or not is_user_file(back.f_code.co_filename):
            return None
        frame, code = back, back.f_code
    return (code, frame.f_lasti)


def tensor_arguments(args: tuple, kwargs: dict) -> list[torch.Tensor]:
    found = []
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            found.append(value)
        elif isinstance(value, (list, tuple)):
            found.extend(v for v in value if isinstance(v, torch.Tensor))
    return found


class ForwardRecorder(TorchFunctionMode):
    """Keeps each op's output value on its grad_fn, and the user's line that ran it; notes
    constants and comparisons."""

    # Whether each node keeps the user's line that ran its op (what a first NaN is placed
    # by): on; benchmarks/bench_explain.py turns it off to measure what it costs.
    lines = True

    def __init__(
        self,
        quick: QuickSummary,
        modules: ModuleTracker,
        on_comparison: OnComparison,
        warn: Callable[[str], None],
        on_none_grad: OnNoneGrad | None = None,
    ) -> None:
        super().__init__()
        self.quick = quick
        self.modules = modules
        self.on_comparison = on_comparison
        self.on_none_grad = on_none_grad
        self.cuts = Cuts()
        self.warn = warn
        self._aside = _Aside()
        self.closed = False  # closed from another thread: inert where it is left
        self.inplace: deque[InPlace] = deque(maxlen=INPLACE_KEPT)  # the latest, in order
        # Set while the next backward pass will not be recorded (tracer.model.selection):
        # no op's value is kept, only the user's comparisons are seen (they may check the
        # pass before, which was recorded). See `pause`.
        self.paused = False

    # -- stepping aside for module calls that record nothing (see the module docstring) --

    def pause(self, paused: bool) -> None:
        """Keep no values (`paused`) or keep them again, from the next op on.

        Paused, the recorder also leaves this thread's mode stack, so that an op costs
        nothing of its dispatch, at the first point where that is safe: not inside a
        dispatch of the recorder, which would push it back on its return (a backward
        call is one), but here, when it is the innermost mode, or at the next module
        call. It comes back as soon as it is unpaused, where the stack is as it left it
        (else at the next module call)."""
        if paused == self.paused and (not paused or self._aside.off is not None):
            return  # as it is, off the stack where paused (every pass of a long run)
        self.paused = paused
        self._settle()

    @property
    def off_stack(self) -> bool:
        """Whether the recorder, paused, has left this thread's mode stack (see `pause`)."""
        return self._aside.off is not None

    def _settle(self) -> None:
        """Off this thread's stack while paused, back on when not (see `pause`)."""
        aside = self._aside
        if self.paused:
            if aside.off is None and not aside.depth and _get_current_function_mode() is self:
                _pop_mode()
                aside.off = (_get_current_function_mode(), len(_get_current_function_mode_stack()))
        elif aside.off is not None and not self.closed:
            below, depth = aside.off
            stack = _get_current_function_mode_stack()
            if len(stack) == depth and _get_current_function_mode() is below:
                _push_mode(self)
                aside.off = None

    def module_entered(self, module: torch.nn.Module, args: tuple) -> None:
        if self.paused or self._aside.off is not None:
            self._settle()
        aside = self._aside
        if aside.depth:
            aside.depth += 1
        elif records_nothing(module, args) and _get_current_function_mode() is self:
            _pop_mode()  # this thread's innermost mode is the recorder: off the stack
            aside.depth = 1

    def module_exited(self) -> None:
        aside = self._aside
        if aside.depth:
            aside.depth -= 1
            if aside.depth == 0:
                _push_mode(self)

    @contextmanager
    def stepped_aside(self) -> Iterator[None]:
        """Off this thread's mode stack for the block, as for a module call that records
        nothing (when the recorder is the innermost mode; else it stays where it is)."""
        aside = self._aside
        if aside.depth:
            aside.depth += 1
        elif _get_current_function_mode() is self:
            _pop_mode()
            aside.depth = 1
        else:
            yield
            return
        try:
            yield
        finally:
            self.module_exited()

    def close(self) -> None:
        """Leave this thread's mode stack, wherever on it the recorder is: modes the user
        entered after it (and has not left) stay entered. Aside, it is off the stack
        already. Called in another thread than the one it was entered in, which holds its
        own stack, it cannot leave that stack: it turns inert there (records nothing)."""
        self.closed = True
        if self._aside.depth or self._aside.off is not None:  # off the stack already
            self._aside.depth, self._aside.off = 0, None
            return
        stack = _get_current_function_mode_stack()
        if not any(mode is self for mode in stack):
            return
        above = []
        while (mode := _pop_mode()) is not self:
            above.append(mode)
        for mode in reversed(above):
            _push_mode(mode)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if self.paused and func not in COMPARISONS:
            # First, the shortest way through: a paused recorder still on the stack (no
            # module call came since it paused, see `pause`) does nothing else per op.
            return func(*args, **(kwargs or {}))
        kwargs = kwargs or {}
        if self.closed or torch.compiler.is_compiling() or torch._C._is_tracing():
            # Inside torch.compile's or torch.jit.trace's tracing (under a mode of the
            # user's, where the recorder cannot step aside): record nothing, change
            # nothing, run no op the tracer would put in its graph.
            return func(*args, **kwargs)
        try:
            changed = _INPLACE_NAMES[func]  # known after its first call: no frame of ours
        except (KeyError, TypeError):
            changed = _inplace_name(func)
        before = None
        if changed is not None and args and isinstance(args[0], torch.Tensor):
            with torch._C.DisableTorchFunction():
                fn = args[0].grad_fn
                if fn is not None:
                    before = (type(fn).__name__, args[0].output_nr)
        if type(func) is _GETTER and func.__self__ is _GRAD and _warns_on_read(args):
            out = _read_warning_as_untraced(func, args, kwargs)
        else:
            out = func(*args, **kwargs)
        if before is not None:
            self._note_inplace(changed, before, args[0])
        try:
            how = COMPARISONS.get(func)
        except TypeError:  # an unhashable callable: none of them
            how = None
        if (
            how is None
            and (not isinstance(out, (torch.Tensor, tuple, list)) or type(out) is torch.Size)
            and type(func) is not _GETTER  # a `.grad` read as None is noted below
        ):
            return out  # a number, a size, a bool: nothing to record (about half the calls)
        try:
            with torch._C.DisableTorchFunction():  # the user's own modes see only their calls
                if type(func) is _GETTER and func.__name__ == "__get__":  # not `t.grad = …`
                    self._note_read(func.__self__, args, out)
                elif func is _DETACH or func is _TORCH_DETACH:
                    self._note_cut("detach", "detach", args, out)
                elif changed is None and not torch.is_grad_enabled():
                    self._note_cut("no_grad", getattr(func, "__name__", "op"), args, out)
                if how is not None:
                    self.on_comparison(how, args, kwargs, out, sys._getframe(1))
                if (
                    (how is None or how is How.DIFFERENCE)
                    and func not in _BACKWARD_CALLS
                    and not self.paused
                ):
                    self.note_forward(out, args, kwargs)
        except Exception as e:  # tracer's problem, never the user's
            self.warn(f"a forward value was not recorded ({type(e).__name__}: {e})")
        return out

    def _note_read(self, attribute: Any, args: tuple, out: Any) -> None:
        """A property read: `t.grad` read as None, or `t.data` (a cut)."""
        if attribute is _GRAD and out is None and self.on_none_grad is not None and args:
            frame = sys._getframe(2)  # this, __torch_function__, the code that read it
            if is_user_file(frame.f_code.co_filename):
                self.on_none_grad(args[0], frame)
        elif attribute is _DATA:
            self._note_cut("data", "data", args, out, depth=3)

    def _note_cut(self, kind: CutKind, op: str, args: tuple, out: Any, depth: int = 2) -> None:
        """An op that made a tensor needing no gradient from one that needs it, run by the
        user's own code (`depth`: how far up its frame is): the cut is kept for both."""
        if not isinstance(out, torch.Tensor) or out.requires_grad:
            return
        frame = sys._getframe(depth)
        if not is_user_file(frame.f_code.co_filename):
            return  # torch's own detach() and no_grad code is not where the user cut
        cut = None
        for t in tensor_arguments(args, {}):
            if t.requires_grad:
                cut = cut or Cut(kind, op, code_place(frame.f_code, frame.f_lasti))
                self.cuts.note(t, cut)
        if cut is not None:
            self.cuts.note(out, cut)

    def _note_inplace(self, op: Any, before: tuple[str, int], t: torch.Tensor) -> None:
        try:
            with torch._C.DisableTorchFunction():
                user = user_frame(sys._getframe(2))
                where = None if user is None else (user.f_code.co_filename, user.f_lineno)
                self.inplace.append(
                    InPlace(op, before[0], before[1], t._version, weakref.ref(t), where)
                )
        except Exception as e:  # tracer's problem, never the user's
            self.warn(f"an in-place op was not recorded ({type(e).__name__}: {e})")

    def note_forward(self, out: Any, args: tuple, kwargs: dict) -> None:
        """Keep each output's value on its node, and which inputs needing no grad it took."""
        if isinstance(out, torch.Tensor):
            outputs: Iterable[Any] = (out,)
        elif isinstance(out, (tuple, list)):
            outputs = out
        else:
            return
        first: NodeRecord | None = None
        where = None
        for o in outputs:
            if not isinstance(o, torch.Tensor):
                continue
            fn = o.grad_fn
            if fn is None:
                continue
            record = record_of(fn)
            if first is None and self.lines:  # the op's caller: past this, __torch_function__
                where = _user_line(sys._getframe(2))
            summary = self.quick.summarise(o)  # a large value: at once, so it is not kept
            if summary is None:
                kept = kept_alias(o, self.quick.max_values)
                record.keep(o.output_nr, kept, kept._version)
            else:
                record.keep_summary(o.output_nr, summary)
            self.modules.stamp(record)
            record.where = where
            first = first or record
        if first is None or first.constants is not None:
            return
        constants = [
            self._constant(i, t)
            for i, t in enumerate(tensor_arguments(args, kwargs))
            if not t.requires_grad
        ]
        if constants:
            first.constants = constants

    def _constant(self, position: int, t: torch.Tensor) -> ConstantInput:
        """An input needing no grad, with its value: a large one summarised now (the op
        may not have saved it: it must die when the program lets go of it); a small one
        kept, so that it is drawn with its name even when the program has let go of it
        (a copy of its numbers when it is a view into larger memory)."""
        summary = self.quick.summarise(t)
        if summary is not None:
            return ConstantInput(position, t, summary, 0)
        kept = compact_copy(t, self.quick.max_values)
        if kept is None:
            return ConstantInput(position, t, t, t._version)
        return ConstantInput(position, t, kept, kept._version)


def drop_closed_recorders() -> None:
    """Take recorders closed from another thread off this thread's mode stack (they are
    inert there: see `ForwardRecorder.close`); the user's modes stay as they are."""
    stack = _get_current_function_mode_stack()
    if not any(isinstance(m, ForwardRecorder) and m.closed for m in stack):
        return
    kept = []
    for _ in range(len(stack)):
        mode = _pop_mode()
        if not (isinstance(mode, ForwardRecorder) and mode.closed):
            kept.append(mode)
    for mode in reversed(kept):
        _push_mode(mode)
