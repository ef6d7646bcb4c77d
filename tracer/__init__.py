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

from tracer.errors import TracerError
from tracer.graph import Check, Edge, Graph, Node, Recording, TensorData
from tracer.render import RenderOptions, render_dot, render_svg, write
from tracer.session import Trace, check, trace

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


def load_ipython_extension(ipython: object) -> None:
    """`%load_ext tracer` in Jupyter: the `%%trace` cell magic (see tracer.jupyter)."""
    from tracer.jupyter import load_ipython_extension as load

    load(ipython)
