"""What a trace records (`CaptureOptions`), torch-free so that the command line can show
its defaults without importing torch."""

from __future__ import annotations

from dataclasses import dataclass

from tracer.model.selection import DEFAULT_PASSES, PassSelection

# Tensors of at most this many elements keep their values (TensorData.values).
DEFAULT_MAX_VALUES = 64


@dataclass(frozen=True)
class CaptureOptions:
    """What a trace records (see `tracer.trace`): values of tensors with at most
    `max_values` elements; each op's forward value (`values=False`: structure and
    gradients only, the cheapest); what autograd saved for backward (`saved`); each small
    op's local Jacobian (`jacobians`: for the step-through page, see
    tracer.record.capture.jacobian; off, a trace does nothing more); which backward passes
    (`passes`, see tracer.model.selection)."""

    max_values: int = DEFAULT_MAX_VALUES
    values: bool = True
    saved: bool = False
    jacobians: bool = False
    passes: PassSelection = DEFAULT_PASSES


DEFAULT_CAPTURE = CaptureOptions()
