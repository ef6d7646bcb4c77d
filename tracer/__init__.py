"""tracer: trace PyTorch's autograd graph, draw the gradient flow, check it against the math.

import torch, tracer
x = torch.tensor([0.1801, 0.3444], dtype=torch.float64, requires_grad=True)
with tracer.trace() as t:
    z = torch.dot(x, x)
    f = torch.log(1 + z)
    f.backward()
t.check(x, manual=2 * x / (1 + z))
t.render("graph.svg")

The house. Data flows one way: code under trace → capture → plain data → views → files.
Each layer is a sub-package (or a module) with one job, and imports only from the layers
below it (tests/test_layout.py holds every import to this, those inside functions too):

    `errors`       TracerError, the one exception for a user's mistake
    `files`        files written atomically, folders made with one clear line
    `model`        the plain-data graph, torch-free: Recording, Graph, Check, options, JSON
    `derivatives`  torch's derivative formulas, and the chain-rule step of each node
    `view`         text, collapsed module calls, the backward pass step by step
    `output`       DOT, Graphviz, files by suffix, the step-through page, frames, pictures
    `record`       what is installed in torch, the forward recorder, capture, summaries
    `checks`       comparisons, finite differences, the user's comparisons, manual results
    `session`      `Trace`: one trace's passes and checks, the seam record reports to
    `run`          scripts, notebooks and Jupyter under a trace
    `exercises`    the exercises, plain functions
    `gallery`      every exercise drawn into one folder
    `cli`          the `trace` command, thin over the rest

This module is the public face: it imports from any layer, lazily, and no layer imports it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tracer.errors import TracerError
    from tracer.model.check import Check
    from tracer.model.forward import Direction
    from tracer.model.graph import Edge, Graph, Node, Recording
    from tracer.model.tensor import TensorData
    from tracer.output.render import RenderOptions, render_dot, render_svg, write
    from tracer.session import Trace, check, forward_mode, trace

# Each public name and the module it lives in, imported on first use: `import tracer` (and
# so `trace --help`, `trace list`) must not import torch, which takes seconds.
_EXPORTS = {
    "Check": "tracer.model.check",
    "Direction": "tracer.model.forward",
    "Edge": "tracer.model.graph",
    "Graph": "tracer.model.graph",
    "Node": "tracer.model.graph",
    "Recording": "tracer.model.graph",
    "RenderOptions": "tracer.output.render",
    "TensorData": "tracer.model.tensor",
    "Trace": "tracer.session",
    "TracerError": "tracer.errors",
    "check": "tracer.session",
    "forward_mode": "tracer.session",
    "render_dot": "tracer.output.render",
    "render_svg": "tracer.output.render",
    "trace": "tracer.session",
    "write": "tracer.output.render",
}
__all__ = [
    "Check",
    "Direction",
    "Edge",
    "Graph",
    "Node",
    "Recording",
    "RenderOptions",
    "TensorData",
    "Trace",
    "TracerError",
    "check",
    "forward_mode",
    "render_dot",
    "render_svg",
    "trace",
    "write",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tracer' has no attribute {name!r}")
    if _EXPORTS[name].startswith("tracer.model."):
        importlib.import_module("tracer.view.text")  # how a Check reads (see model.check)
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # found directly from now on
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


def load_ipython_extension(ipython: object) -> None:
    """`%load_ext tracer` in Jupyter: the `%%trace` cell magic (see tracer.run.jupyter)."""
    from tracer.run.jupyter import load_ipython_extension as load

    load(ipython)
