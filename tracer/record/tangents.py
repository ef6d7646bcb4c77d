"""The tangent recorder: a `TorchFunctionMode` that runs a program in forward mode.

Opened only when forward mode is asked for (`trace SLUG --forward`, `tracer.forward_mode`),
inside a `torch.autograd.forward_ad.dual_level`, around a run of its own: never around the
user's traced code. Each input (a tensor `is_input` picks) is made a dual tensor the first
time an op takes it, carrying its part of the direction v (inputs take their parts in the
order the pass first uses them); each op whose output then carries a tangent is a step,
kept as plain numbers at once (value and tangent, with tracer.record.summary). The first
backward call marks the output (the tensor it differentiates) and ends the recording; a
`backward` is not run (reverse mode is checked on the graph as it stands, by
tracer.checks.forward_mode, and the inputs' `.grad` stay as they were), an
`autograd.grad` is (the program uses its result; it touches no `.grad`).
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable
from typing import Any

import torch
import torch.autograd.forward_ad as forward_ad
from torch.overrides import TorchFunctionMode

from tracer.model.forward import ForwardInput, TangentStep
from tracer.model.tensor import TensorData
from tracer.record.names import is_user_name, namespaces, user_frame
from tracer.record.summary import summarise

# Python's reflected operators (`1 + z` calls z.__radd__): the op is the plain one.
_REFLECTED = {"__radd__", "__rsub__", "__rmul__", "__rtruediv__", "__rpow__", "__rmatmul__"}
# Tensor properties that compute a tensor from the tensor (a view): on an input, they take
# its dual. Every other property (grad_fn, grad, shape, is_leaf …) reads the input itself.
_VIEW_PROPERTIES = {"T", "mT", "H", "mH", "real", "imag"}
# Tensor methods that are no ops of the computation: they see the input itself.
_NOT_OPS = {"requires_grad_", "retain_grad", "register_hook", "detach_", "__setstate__"}
# The calls that start a backward pass: the first marks the output of the forward pass.
_BACKWARD_CALLS = {torch.Tensor.backward, torch.autograd.backward, torch.autograd.grad}


def op_name(func: Any) -> str:
    """torch's name of an op: "dot", "log", "add" (for `__add__` and `__radd__`), "mul_"
    (in place), "T" (a property)."""
    name = getattr(func, "__name__", None) or type(func).__name__
    if name in ("__get__", "__set__"):  # a property of Tensor: x.T, x.mT
        name = getattr(getattr(func, "__self__", None), "__name__", name)
    if name in _REFLECTED:
        name = "__" + name[3:]
    return name[2:-2] if name.startswith("__") and name.endswith("__") else name


def _an_op(func: Any) -> bool:
    """Whether `func` computes from its tensors (an op, a view property) rather than
    reading or setting up the tensor itself (grad_fn, requires_grad_ …)."""
    name = getattr(func, "__name__", "")
    if name in ("__get__", "__set__", "__delete__"):
        return name == "__get__" and op_name(func) in _VIEW_PROPERTIES
    return name not in _NOT_OPS


def _in_place(func: Any) -> bool:
    """Whether `func` changes its first argument in place (`mul_`, `add_`)."""
    name = getattr(func, "__name__", "")
    return name.endswith("_") and not name.endswith("__")


class TangentRecorder(TorchFunctionMode):
    """Makes the inputs dual at first use and records each op's value and tangent.

    `tangent_for(t)` gives the next input's tangent (its part of v, see
    tracer.checks.forward_mode). After the run: `inputs` (the primal tensors, in order),
    `input_data`, `steps`, and `output`, the tensor the first backward call was given
    (held until the reverse check is made), with its step.
    """

    def __init__(
        self,
        is_input: Callable[[torch.Tensor], bool],
        tangent_for: Callable[[torch.Tensor], torch.Tensor],
        max_values: int,
    ) -> None:
        super().__init__()
        self.is_input = is_input
        self.tangent_for = tangent_for
        self.max_values = max_values
        self.inputs: list[torch.Tensor] = []
        self.input_data: list[TensorData] = []
        self.input_tangents: list[torch.Tensor] = []  # each input's part of v
        self.steps: list[TangentStep] = []
        self.output: torch.Tensor | None = None
        self.output_step: int | None = None
        self.names: dict[int, str] = {}  # the code's variable names, by id (see learn_names)
        self._duals: dict[int, torch.Tensor] = {}  # an input's id -> its dual tensor
        self._input_of: dict[int, tuple[torch.Tensor, int]] = {}  # a dual's id -> its input
        self._made_by: dict[int, tuple[weakref.ref, int]] = {}  # a tensor's id -> its step
        self._step_tensors: list[weakref.ref] = []  # each step's output, for its name
        self.done = False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.done:
            return func(*args, **kwargs)
        if func in _BACKWARD_CALLS:
            with torch._C.DisableTorchFunction():
                self._finish(args[0] if args else kwargs.get("tensors", kwargs.get("outputs")))
            if func is torch.autograd.grad:  # its result is the program's: it runs (no .grad)
                return func(*args, **kwargs)
            return None
        if not _an_op(func):
            return func(*args, **kwargs)
        # An in-place op changes its first argument: an input stays itself there (an
        # initialiser's, under no_grad); an intermediate result carries its tangent on.
        in_place = _in_place(func)
        with torch._C.DisableTorchFunction():
            changed, rest = (args[:1], args[1:]) if in_place else ((), args)
            rest, kwargs, took = self._dual_arguments(rest, kwargs)
            if in_place and changed and isinstance(changed[0], torch.Tensor):
                took += self._took(changed[0])
            args = (*changed, *rest)
        out = func(*args, **kwargs)
        if took:
            with torch._C.DisableTorchFunction():
                self._note(func, out, took)
        return out

    # -- the inputs ------------------------------------------------------------------------

    def _dual(self, t: torch.Tensor) -> torch.Tensor | None:
        """The dual tensor standing for input `t` (made at its first use), or None when
        `t` is no input."""
        dual = self._duals.get(id(t))
        if dual is not None:
            return dual
        if not torch.is_grad_enabled() or not self.is_input(t):
            return None  # (a module's parameters are initialised in place under no_grad)
        return self.dual_of(t)

    def dual_of(self, t: torch.Tensor) -> torch.Tensor:
        """Make input `t` dual now, with the next part of v: for a program given its inputs
        (its first use may be in a call no mode sees, such as a custom Function's)."""
        with torch._C.DisableTorchFunction():
            tangent = self.tangent_for(t)
            dual = self._duals[id(t)] = forward_ad.make_dual(t, tangent)
            self._input_of[id(dual)] = (dual, len(self.inputs))
            self.inputs.append(t)
            self.input_tangents.append(tangent)
            self.input_data.append(summarise(tangent, self.max_values))
        return dual

    def _dual_arguments(
        self, args: tuple, kwargs: dict
    ) -> tuple[tuple, dict, list[tuple[str, int]]]:
        """The arguments with each input replaced by its dual, and what the op took:
        ("input", index) or ("step", id) per tensor argument that carries a tangent."""
        took: list[tuple[str, int]] = []

        def swap(value: Any) -> Any:
            if isinstance(value, (list, tuple)) and any(isinstance(v, torch.Tensor) for v in value):
                return type(value)(swap(v) for v in value)
            if not isinstance(value, torch.Tensor):
                return value
            dual = self._dual(value)
            if dual is not None:
                took.append(("input", self._input_of[id(dual)][1]))
                return dual
            took.extend(self._took(value))
            return value

        return tuple(swap(a) for a in args), {k: swap(v) for k, v in kwargs.items()}, took

    def _took(self, value: torch.Tensor) -> list[tuple[str, int]]:
        """What an op taking `value` takes: a dual the program was given ("input", k), an
        earlier step's output ("step", id), or neither."""
        given = self._input_of.get(id(value))
        if given is not None and given[0] is value:
            return [("input", given[1])]
        made = self._made_by.get(id(value))
        if made is not None and made[0]() is value:
            return [("step", made[1])]
        return []

    # -- the steps -------------------------------------------------------------------------

    def _note(self, func: Any, out: Any, took: list[tuple[str, int]]) -> None:
        """A step per output that carries a tangent."""
        outputs = out if isinstance(out, (list, tuple)) else (out,)
        for o in outputs:
            if not isinstance(o, torch.Tensor):
                continue
            primal, tangent = forward_ad.unpack_dual(o)
            if tangent is None:
                continue
            step = TangentStep(
                id=len(self.steps),
                op=op_name(func),
                name=None,
                value=summarise(primal, self.max_values),
                tangent=summarise(tangent, self.max_values),
                after=tuple(sorted({i for kind, i in took if kind == "step"})),
                inputs=tuple(sorted({i for kind, i in took if kind == "input"})),
            )
            self._made_by[id(o)] = (weakref.ref(o), step.id)
            self._step_tensors.append(weakref.ref(o))
            self.steps.append(step)

    def _finish(self, output: Any) -> None:
        """The first backward call: its tensor is the output; the names are read."""
        self.done = True
        if isinstance(output, (list, tuple)):
            output = output[0] if output else None
        if isinstance(output, torch.Tensor):
            self.output = output
            made = self._made_by.get(id(output))
            self.output_step = made[1] if made is not None and made[0]() is output else None
        self.learn_names(sys._getframe(2))

    def finish_with(self, output: Any) -> None:
        """The program returned without calling backward: its result is the output."""
        if not self.done:
            self._finish(output)

    def learn_names(self, frame: Any) -> None:
        """Name the steps and the inputs after the variables of the innermost user frame
        at or above `frame` (the first name a tensor is bound to)."""
        user = user_frame(frame)
        for namespace in namespaces(user) if user is not None else ():
            for name, value in list(namespace.items()):
                if not is_user_name(name):
                    continue
                if isinstance(value, torch.Tensor):
                    self.names.setdefault(id(value), name)
                elif isinstance(value, torch.nn.Module):  # its parameters: model.fc.weight
                    for qualified, p in value.named_parameters():
                        self.names.setdefault(id(p), f"{name}.{qualified}")
        for step, ref in zip(self.steps, self._step_tensors, strict=True):
            t = ref()
            if t is not None:
                step.name = self.names.get(id(t))

    def input_records(self) -> list[ForwardInput]:
        """Each input's name (the code's, else "input k") and its part of v."""
        return [
            ForwardInput(self.names.get(id(t), f"input {k}"), data)
            for k, (t, data) in enumerate(zip(self.inputs, self.input_data, strict=True))
        ]
