"""tracer: trace PyTorch's autograd graph, draw the gradient flow, check it against the math.

import torch, tracer
x = torch.tensor([0.1801, 0.3444], dtype=torch.float64, requires_grad=True)
with tracer.trace() as t:
    z = torch.dot(x, x)
    f = torch.log(1 + z)
    f.backward()
t.check(x, manual=2 * x / (1 + z))
t.render("graph.svg")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tracer.errors import TracerError
    from tracer.graph import Check, Edge, Graph, Node, Recording, TensorData
    from tracer.render import RenderOptions, render_dot, render_svg, write
    from tracer.session import Trace, check, trace

# Each public name and the module it lives in, imported on first use: `import tracer` (and
# so `trace --help`, `trace list`) must not import torch, which takes seconds.
_EXPORTS = {
    "Check": "tracer.graph",
    "Edge": "tracer.graph",
    "Graph": "tracer.graph",
    "Node": "tracer.graph",
    "Recording": "tracer.graph",
    "RenderOptions": "tracer.render",
    "TensorData": "tracer.graph",
    "Trace": "tracer.session",
    "TracerError": "tracer.errors",
    "check": "tracer.session",
    "render_dot": "tracer.render",
    "render_svg": "tracer.render",
    "trace": "tracer.session",
    "write": "tracer.render",
}
__all__ = [
    "Check",
    "Edge",
    "Graph",
    "Node",
    "Recording",
    "RenderOptions",
    "TensorData",
    "Trace",
    "TracerError",
    "check",
    "render_dot",
    "render_svg",
    "trace",
    "write",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tracer' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # found directly from now on
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


def load_ipython_extension(ipython: object) -> None:
    """`%load_ext tracer` in Jupyter: the `%%trace` cell magic (see tracer.jupyter)."""
    from tracer.jupyter import load_ipython_extension as load

    load(ipython)
