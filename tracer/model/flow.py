"""The gradient flow over a whole run, as plain data: a few numbers per parameter per pass.

Recorded by tracer.record.gradflow after every backward pass, drawn or not (the pass
selection chooses which passes get a picture; the flow keeps every one):

- per parameter, after each pass: the norm of its `.grad` and of the parameter itself
  (their ratio ‖g‖/‖w‖ is the grad:data ratio);
- per parameter, at each optimizer step: the norm of the change the step made and of the
  parameter before it (their ratio ‖Δw‖/‖w‖ is the update:data ratio);
- per module call (modules without submodules), at the passes recorded in full: the mean,
  the standard deviation and, for Tanh and Sigmoid, the saturated fraction of its output.

A layer is a module that owns parameters: its norms are those of all its parameters taken
together (‖g‖ = √Σ‖gᵢ‖²). Torch-free; `to_json` writes standard JSON (a NaN or infinite
number as the string "NaN", "Infinity" or "-Infinity", as Recording.to_json does).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tracer.errors import TracerError
from tracer.model.graph import float_from_json, json_float

# A layer's gradient norm below this is vanishing, above this exploding (the chart marks
# both; a non-finite norm counts as exploding).
VANISHING = 1e-7
EXPLODING = 1e4


@dataclass
class ParameterFlow:
    """One parameter's series. Per pass (index n is pass n + 1): `grad_norm` (None: no
    `.grad` then, or not yet known to the trace) and `data_norm`. Per optimizer step
    (index k is `GradientFlow.steps[k]`): `update_norm` = ‖w_after − w_before‖ and
    `update_base` = ‖w_before‖ (None: this parameter was not in that step)."""

    name: str  # qualified: "fc1.weight"
    module: str  # the module that owns it, qualified: "fc1" ("" the outermost model)
    module_class: str  # "Linear"
    shape: tuple[int, ...]
    grad_norm: list[float | None] = field(default_factory=list)
    data_norm: list[float | None] = field(default_factory=list)
    update_norm: list[float | None] = field(default_factory=list)
    update_base: list[float | None] = field(default_factory=list)

    def grad_to_data(self) -> list[float | None]:
        """‖g‖/‖w‖ per pass."""
        return [_ratio(g, w) for g, w in zip(self.grad_norm, self.data_norm, strict=True)]

    def update_to_data(self) -> list[float | None]:
        """‖Δw‖/‖w‖ per optimizer step."""
        return [_ratio(d, w) for d, w in zip(self.update_norm, self.update_base, strict=True)]


@dataclass
class ActivationStats:
    """A module's output at a pass recorded in full: made by the forward pass before it."""

    pass_number: int
    module: str
    module_class: str
    mean: float
    std: float
    saturated: float | None  # Tanh: |y| > 0.99; Sigmoid: y < 0.01 or y > 0.99; else None


@dataclass
class LayerFlow:
    """A module's parameters taken together: the series the chart draws (see `layers`)."""

    module: str  # as `ParameterFlow.module`
    module_class: str
    grad_norm: list[float | None]
    grad_to_data: list[float | None]
    update_to_data: list[float | None]

    @property
    def label(self) -> str:
        """ "fc1 · Linear"; the outermost model by its class alone."""
        return f"{self.module} · {self.module_class}" if self.module else self.module_class


@dataclass(frozen=True)
class FlowMark:
    """A layer's gradient norm beyond a threshold at one pass (see GradientFlow.marks)."""

    label: str  # the layer's (LayerFlow.label)
    pass_number: int
    kind: str  # "vanishing" | "exploding"
    norm: float


@dataclass
class GradientFlow:
    """The flow of one run: every pass, drawn or not (see the module docstring)."""

    recorded: list[bool] = field(default_factory=list)  # per pass: recorded in full
    steps: list[int] = field(default_factory=list)  # per optimizer step: passes before it
    parameters: list[ParameterFlow] = field(default_factory=list)
    activations: list[ActivationStats] = field(default_factory=list)

    @property
    def passes(self) -> int:
        return len(self.recorded)

    def layers(self) -> list[LayerFlow]:
        """One per module owning parameters, in the order their parameters were first seen."""
        groups: dict[str, list[ParameterFlow]] = {}
        for p in self.parameters:
            groups.setdefault(p.module, []).append(p)
        return [_layer(members) for members in groups.values()]

    def layer_count(self) -> int:
        """How many layers `layers` would give, without computing their series."""
        return len({p.module for p in self.parameters})

    def marks(self, layers: Sequence[LayerFlow] | None = None) -> list[FlowMark]:
        """Every layer's pass whose gradient norm is below VANISHING or above EXPLODING
        (or not finite), in layer order; `layers`: this flow's, when already computed."""
        found = []
        for layer in self.layers() if layers is None else layers:
            for n, g in enumerate(layer.grad_norm, start=1):
                if g is not None and not VANISHING <= g <= EXPLODING:  # NaN too
                    kind = gradient_kind(g)
                    assert kind is not None
                    found.append(FlowMark(layer.label, n, kind, g))
        return found

    # -- JSON ------------------------------------------------------------------------------

    def to_json(self) -> str:
        """Standard JSON; the ratios are written beside the norms they come from (and
        ignored when read back: `from_json` derives them again)."""
        plain = {
            "vanishing_below": VANISHING,
            "exploding_above": EXPLODING,
            "recorded": self.recorded,
            "steps": self.steps,
            "parameters": [
                {
                    "name": p.name,
                    "module": p.module,
                    "module_class": p.module_class,
                    "shape": list(p.shape),
                    "grad_norm": _floats(p.grad_norm),
                    "data_norm": _floats(p.data_norm),
                    "grad_to_data": _floats(p.grad_to_data()),
                    "update_norm": _floats(p.update_norm),
                    "update_base": _floats(p.update_base),
                    "update_to_data": _floats(p.update_to_data()),
                }
                for p in self.parameters
            ],
            "activations": [
                {
                    "pass_number": a.pass_number,
                    "module": a.module,
                    "module_class": a.module_class,
                    "mean": json_float(a.mean),
                    "std": json_float(a.std),
                    "saturated": None if a.saturated is None else json_float(a.saturated),
                }
                for a in self.activations
            ],
        }
        return json.dumps(plain, ensure_ascii=False, allow_nan=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> GradientFlow:
        """What `to_json` wrote; a TracerError in one line for anything else."""
        try:
            raw = json.loads(text)
            flow = cls(
                recorded=[bool(r) for r in raw["recorded"]],
                steps=[int(s) for s in raw["steps"]],
                parameters=[
                    ParameterFlow(
                        name=str(p["name"]),
                        module=str(p["module"]),
                        module_class=str(p["module_class"]),
                        shape=tuple(int(d) for d in p["shape"]),
                        grad_norm=_read_floats(p["grad_norm"]),
                        data_norm=_read_floats(p["data_norm"]),
                        update_norm=_read_floats(p["update_norm"]),
                        update_base=_read_floats(p["update_base"]),
                    )
                    for p in raw["parameters"]
                ],
                activations=[
                    ActivationStats(
                        pass_number=int(a["pass_number"]),
                        module=str(a["module"]),
                        module_class=str(a["module_class"]),
                        mean=float_from_json(a["mean"]),
                        std=float_from_json(a["std"]),
                        saturated=None
                        if a["saturated"] is None
                        else float_from_json(a["saturated"]),
                    )
                    for a in raw["activations"]
                ],
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            what = f"no field {e}" if isinstance(e, KeyError) else str(e).splitlines()[0]
            raise TracerError(f"not a tracer gradient flow: {what}") from None
        for p in flow.parameters:
            if len(p.grad_norm) != flow.passes or len(p.data_norm) != flow.passes:
                raise TracerError(f"not a tracer gradient flow: {p.name} has not one norm a pass")
            if len(p.update_norm) != len(flow.steps) or len(p.update_base) != len(flow.steps):
                raise TracerError(f"not a tracer gradient flow: {p.name} has not one update a step")
        return flow


def gradient_kind(norm: float | None) -> str | None:
    """ "vanishing", "exploding" (a non-finite norm too), or None for a healthy or missing
    one. Exactly zero is vanishing: a gradient that no longer arrives at all."""
    if norm is None:
        return None
    if not math.isfinite(norm) or norm > EXPLODING:
        return "exploding"
    if norm < VANISHING:
        return "vanishing"
    return None


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    if b == 0:
        return math.inf if a else math.nan
    return a / b


def _combined(series: Sequence[list[float | None]]) -> list[float | None]:
    """Element by element, √Σnᵢ² of the norms present (math.hypot: in C, and without the
    overflow of squaring); None where none is. Runs of thousands of passes go through here
    for every layer, so the common case of no gap takes one call per pass."""
    if len(series) == 1:
        return list(series[0])
    combined: list[float | None] = []
    for norms in zip(*series, strict=True):
        if None in norms:
            present = [n for n in norms if n is not None]
            combined.append(math.hypot(*present) if present else None)
        else:
            combined.append(math.hypot(*norms))
    return combined


def _layer(members: list[ParameterFlow]) -> LayerFlow:
    grads = _combined([m.grad_norm for m in members])
    data = _combined([m.data_norm for m in members])
    updates = _combined([m.update_norm for m in members])
    bases = _combined([m.update_base for m in members])
    return LayerFlow(
        module=members[0].module,
        module_class=members[0].module_class,
        grad_norm=grads,
        grad_to_data=[_ratio(g, w) for g, w in zip(grads, data, strict=True)],
        update_to_data=[_ratio(d, w) for d, w in zip(updates, bases, strict=True)],
    )


def _floats(values: Sequence[float | None]) -> list[Any]:
    return [None if v is None else json_float(v) for v in values]


def _read_floats(values: Sequence[Any]) -> list[float | None]:
    return [None if v is None else float_from_json(v) for v in values]
