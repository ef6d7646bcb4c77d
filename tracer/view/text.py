"""Text for people: tensors printed the way torch prints them, and the check report.

Both the picture (render) and the terminal (CLI, `Trace.check`) use these, so a number
reads the same everywhere.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Literal

from tracer.model.check import Check, How, register_formatters
from tracer.model.explain import InPlaceError
from tracer.model.flow import ActivationStats, GradientFlow
from tracer.model.graph import Edge, Graph, ModuleCall, Node, UnrecordedPasses
from tracer.model.passes import Pass
from tracer.model.tensor import TensorData

# Characters that cannot be shown as themselves: control characters, and lone surrogates
# (a str may hold one; no UTF-8 file can).
UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _visible_one(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(value: str) -> str:
    """User text with each control character and lone surrogate written as its escape
    (`\\x01`, `\\udc80`): what every picture and page shows of them."""
    return UNPRINTABLE.sub(_visible_one, value)


def format_numbers(values: tuple[float, ...]) -> list[str]:
    """Four decimals as torch prints; scientific for all when the magnitudes call for it."""
    if len(values) == 1:
        return [_one_number(values[0])]
    finite = [m for m in map(abs, values) if 0 < m < math.inf]  # no zero, NaN or Inf
    scientific = bool(finite) and (max(finite) >= 1e8 or min(finite) < 1e-4)
    spec = ".4e" if scientific else ".4f"
    # format() already writes "nan" (whatever its sign), "inf" and "-inf" as torch does: only
    # a negative zero ("-0.0000", what a tiny negative rounds to) is rewritten, and only
    # when there is one (a tensor's numbers are formatted by the thousand: this is hot).
    texts = [format(v, spec) for v in values]
    negative_zero = _NEGATIVE_ZERO[spec]
    if negative_zero in texts:
        return [text[1:] if text == negative_zero else text for text in texts]
    return texts


_NEGATIVE_ZERO = {spec: format(-0.0, spec) for spec in (".4f", ".4e")}


def _one_number(v: float) -> str:
    """`format_numbers((v,))[0]`, without the lists (a summary line's norm)."""
    magnitude = abs(v)
    spec = ".4e" if magnitude and (magnitude >= 1e8 or magnitude < 1e-4) else ".4f"
    text = format(v, spec)  # nan, inf and -inf as format_numbers writes them
    return text[1:] if text == _NEGATIVE_ZERO[spec] else text


_INTEGRAL = frozenset(
    {"bool", "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64"}
)


def tensor_numbers(t: TensorData) -> list[str]:
    """A tensor's values as torch prints them: integers as integers (`[0, 2]`), booleans
    as `True`/`False`, floating point with four decimals (see format_numbers)."""
    assert t.values is not None
    if t.dtype == "bool":
        return ["True" if v else "False" for v in t.values]
    if t.dtype in _INTEGRAL:
        return [str(int(v)) for v in t.values]
    return format_numbers(t.values)


def format_error(error: float) -> str:
    """An error for the picture: rounding-level ones (which vary by CPU and maths library)
    as "< 1e-12", so the picture and its DOT are the same on every machine."""
    if error < 1e-12:  # exact 0 on one machine is 1e-17 on another: one text for both
        return "< 1e-12"
    return f"{error:.2g}"


def _vector(numbers: list[str], per_line: int) -> list[str]:
    """A 1-D row in brackets, wrapped every `per_line` numbers."""
    if len(numbers) <= per_line:  # one line: most tensors drawn
        return [f"[{', '.join(numbers)}]"]
    rows = [", ".join(numbers[i : i + per_line]) for i in range(0, len(numbers), per_line)]
    return [f"[{rows[0]},"] + [f" {r}," for r in rows[1:-1]] + [f" {rows[-1]}]"]


def format_tensor(t: TensorData, per_line: int = 5) -> list[str]:
    """The tensor as lines of text, nested as torch prints it; a summary when too large."""
    if t.values is None:
        return [summary_line(t)]
    if t.numel == 0:
        return [f"[] (shape {shape_text(t.shape)})"]
    numbers = tensor_numbers(t)
    if is_complex(t):  # the values are real and imaginary parts in turn: one number each
        numbers = [
            f"{re}{'' if im.startswith('-') else '+'}{im}j"
            for re, im in zip(numbers[::2], numbers[1::2], strict=True)
        ]
    if len(t.shape) == 0:
        return numbers
    if len(t.shape) == 1:
        return _vector(numbers, per_line)
    # A matrix (or more): one bracketed row per line, the leading dimensions flattened.
    # A row of up to 6 stays on one line even where vectors wrap sooner: a matrix should
    # look like one.
    width, row_length = t.shape[-1], max(per_line, 6)
    rows = [_vector(numbers[i : i + width], row_length) for i in range(0, len(numbers), width)]
    if not rows:
        return ["[]"]
    for row in rows[:-1]:
        row[-1] += ","
    lines = [line for row in rows for line in row]
    lines = ["[" + lines[0]] + [" " + line for line in lines[1:]]
    lines[-1] += "]"
    return lines


@lru_cache(maxsize=1024)
def dims_text(shape: tuple[int, ...]) -> str:
    """A shape in a tensor's summary: "16×3", "scalar". Cached: a picture of a model
    writes the same few shapes thousands of times."""
    return "×".join(map(str, shape)) or "scalar"


def is_complex(t: TensorData) -> bool:
    return t.dtype.startswith("complex")


def summary_line(t: TensorData) -> str:
    shape = dims_text(t.shape)
    if t.note:
        return f"{shape} {t.dtype}: {t.note}"
    lo, hi, norm = format_numbers((t.min, t.max, t.norm))
    if t.dtype in _INTEGRAL and math.isfinite(t.min) and math.isfinite(t.max):
        lo, hi = str(int(t.min)), str(int(t.max))
    text = f"{shape} {t.dtype}: ‖·‖ {norm}, min {lo}, max {hi}"
    if is_complex(t):  # the norm is the complex one; no order among complex numbers
        text += " (of the real and imaginary parts)"
    if t.nan or t.inf:
        text += f", {t.nan} NaN, {t.inf} Inf"
    return text


@lru_cache(maxsize=1024)
def shape_text(shape: tuple[int, ...] | None) -> str:
    """A node's shape: "[16, 3]", "scalar" (cached, as `dims_text`)."""
    if shape is None:
        return ""
    return "scalar" if len(shape) == 0 else "[" + ", ".join(str(s) for s in shape) + "]"


def verdict_text(check: Check) -> str:
    """ "✓ agree", "✗ DISAGREE", or, for an exact comparison that a correct formula missed
    by rounding, "✓ agrees within rounding (not bit-exact, max diff 1.5e-08)"."""
    if check.within_rounding:
        return f"✓ agrees within rounding (not bit-exact, max diff {format_error(check.max_abs)})"
    return "✓ agree" if check.passed else "✗ DISAGREE"


# -- one check, in words: every place that shows a check uses these ----------------------


def oracle_text(check: Check) -> str:
    """What autograd was compared with: "finite differences", "manual (recognised)" (a
    result the code showed, see tracer.checks.manual), or "manual"."""
    if check.how is How.FINITE_DIFFERENCES:
        return "finite differences"
    if check.how is How.RECOGNISED:
        return "manual (recognised)"
    return "manual"


CheckStyle = Literal["picture", "exact", "brief"]


def _largest_error(check: Check) -> str:
    """The exact numbers: "largest error 11.2 absolute at [1, 0], 3.75 relative (rtol …)"."""
    at = "" if check.where is None else f" at {list(check.where)}"
    return (
        f"largest error {check.max_abs:.3g} absolute{at}, {check.max_rel:.3g} relative "
        f"(rtol {check.rtol:g}, atol {check.atol:g})"
    )


def check_line(check: Check, style: CheckStyle = "picture") -> str:
    """One check in one line.

    picture: "∂f/∂x: autograd vs manual: ✓ agree (largest error < 1e-12)", the same on
        every machine (see `format_error`): the picture's heading and the gallery's README;
    exact: "∂f/∂x: ✗ DISAGREE, largest error 11.2 absolute at [1, 0], 3.75 relative (rtol
        …)": for messages and the repr;
    brief: "✓ x (check)", the verdict, the tensor and what compared it (tracer.check or
        the code's own allclose): for the summary table of `trace run`.
    """
    if style == "brief":
        ways = ", ".join(map(str, check.ways))
        return f"{'✓' if check.passed else '✗'} {check.name} ({ways})"
    if style == "picture":
        head = f"{check.derivative}: autograd vs {oracle_text(check)}: {verdict_text(check)}"
        if check.problem:
            return f"{head}: {check.problem}"
        if check.within_rounding:  # the verdict says the largest error already
            return head
        return f"{head} (largest error {format_error(check.max_abs)})"
    head = f"{check.derivative}: {verdict_text(check)}"
    return f"{head}: {check.problem}" if check.problem else f"{head}, {_largest_error(check)}"


def check_badge(check: Check) -> str:
    """A check on its node in the picture: "✓ manual agrees · largest error < 1e-12",
    "✓ manual agrees within rounding · max diff 6e-08", "✗ manual DISAGREES · largest
    error 0.31"."""
    oracle = oracle_text(check)
    if check.problem:
        return f"✗ {oracle}: {check.problem}"
    error = format_error(check.max_abs)
    if check.within_rounding:
        return f"✓ {oracle} agrees within rounding · max diff {error}"
    if check.passed:
        return f"✓ {oracle} agrees · largest error {error}"
    return f"✗ {oracle} DISAGREES · largest error {error}"


def checks_brief(checks: Sequence[Check]) -> str:
    """A pass's checks in a table cell: each briefly ("✓ x (check)"), or, beyond three,
    their count ("14 checks: 13 ✓, 1 ✗"); "—" for none."""
    if not checks:
        return "—"
    if len(checks) <= 3:
        return ", ".join(check_line(c, "brief") for c in checks)
    agree = sum(c.passed for c in checks)
    counts = [f"{agree} ✓"] + ([f"{len(checks) - agree} ✗"] if agree < len(checks) else [])
    return f"{len(checks)} checks: {', '.join(counts)}"


def format_check(check: Check) -> str:
    """The terminal report of one check: both gradients, the largest error, the verdict."""
    pad = " " * 12
    lines = [check.derivative]

    def block(title: str, t: TensorData | None) -> None:
        body = ["(none)"] if t is None else format_tensor(t, per_line=5)
        lines.append(f"  {title:<10}{body[0]}")
        lines.extend(pad + row for row in body[1:])

    block("autograd", check.autograd)
    block("numeric" if check.how is How.FINITE_DIFFERENCES else "manual", check.manual)
    lines.append(f"  {check.problem or _largest_error(check)}")
    lines.append(f"  {verdict_text(check)}")
    return "\n".join(lines)


def check_html(check: Check) -> str:
    """The check for Jupyter: the verdict, autograd's and the manual gradient, the error."""
    colour = "#1a7f37" if check.passed else "#cf222e"

    def tensor(t: TensorData | None) -> str:
        return html.escape("(none)" if t is None else "\n".join(format_tensor(t)))

    rows = "".join(
        f'<tr><th style="text-align:left">{title}</th>'
        f'<td style="text-align:left"><pre style="margin:0">{tensor(t)}</pre></td></tr>'
        for title, t in (("autograd", check.autograd), ("manual", check.manual))
    )
    error = html.escape(check.problem or _largest_error(check))
    return (
        f'<div><b>{html.escape(check.derivative)}</b>: <b style="color:{colour}">'
        f"{verdict_text(check)}</b><table>{rows}</table><div>{error}</div></div>"
    )


def graph_title(graph: Graph) -> str:
    """A graph's heading: "autograd: backward pass 2 (create_graph: …)", "manual ∂f/∂x"."""
    if graph.kind == "manual":
        return f"manual {graph.derivative}" if graph.derivative else "manual"
    title = f"autograd: backward pass {graph.number}"
    if graph.create_graph:
        title += " (create_graph: its gradients have a graph)"
    if graph.through is not None:
        title += f" (through the graph backward pass {graph.through} made)"
    return title


def graph_name(graph: Graph) -> str:
    """The graph as a place in messages: "backward pass 2", "manual ∂f/∂x"."""
    if graph.kind == "manual":
        return graph_title(graph)
    return f"backward pass {graph.number}"


def unrecorded_text(entry: UnrecordedPasses, where: str | None) -> str:
    """ "2 backward passes inside torch.func at lecture.py:8 are not recorded: ..." """
    count = "1 backward pass" if entry.passes == 1 else f"{entry.passes} backward passes"
    at = f" at {where}" if where else ""
    verb = "is" if entry.passes == 1 else "are"
    # entry.kind == "torch.func", the only kind there is
    return (
        f"{count} inside torch.func{at} {verb} not recorded: a transform (grad, vjp, "
        "jacrev, hessian, ...) differentiates wrapped tensors of its own, not the program's graph"
    )


# Backward ops that sum a gradient over the dimensions their forward broadcast (or
# expanded): an input's gradient smaller than the one that arrived was summed to its shape.
_BROADCASTING = (
    "Add", "Sub", "Mul", "Div", "Pow", "Where", "Maximum", "Minimum", "Expand", "Atan2",
    "Hypot", "Lerp", "Clamp", "Addcmul", "Addcdiv", "Fmod", "Remainder", "Xlogy",
)  # fmt: skip
# Backward ops that add rows of the gradient that arrived into the rows of their input.
_GATHERING = ("EmbeddingBackward", "IndexBackward", "EmbeddingBagBackward")


def edge_note(edge: Edge, graph: Graph) -> str | None:
    """What the chain rule did to the gradient on its way down this edge, when its shape
    changed: "summed over dim 0: [4, 3] → [3]" (a broadcast in the forward pass), or
    "8 rows added into 10" (an embedding or index backward); None otherwise."""
    if edge.grad is None:
        return None
    sender = graph.nodes[edge.src]
    arrived = next((g for g in sender.grads if g is not None), None)
    if sender.kind != "op" or arrived is None:
        return None
    before, after = arrived.shape, edge.grad.shape
    if before == after:
        return None
    op = sender.op
    if op.startswith(_GATHERING):
        if len(before) >= 1 and len(after) >= 1 and before[-1:] == after[-1:] and len(after) == 2:
            rows = math.prod(before[:-1])
            return f"{rows:,} row{'s' if rows != 1 else ''} added into {after[0]:,}"
        return f"{math.prod(before):,} values added into {math.prod(after):,}"
    if not op.startswith(_BROADCASTING) or len(after) > len(before):
        return None
    padded = (1,) * (len(before) - len(after)) + after
    if any(a not in (1, b) for a, b in zip(padded, before, strict=True)):
        return None  # not a broadcast's reduction
    dims = [i for i, (a, b) in enumerate(zip(padded, before, strict=True)) if a == 1 and b != 1]
    if not dims:
        return None
    which = f"dim {dims[0]}" if len(dims) == 1 else "dims " + ", ".join(map(str, dims))
    return f"summed over {which}: {shape_text(before)} → {shape_text(after)}"


def inplace_error_text(error: InPlaceError, where: str | None) -> str:
    """ "b was changed in place by mul_ at train.py:4 after SigmoidBackward0 saved it for
    backward (version 0, now 1): …"; `where`: the in-place op's line."""
    name = error.name or f"an output of {error.made_by}"
    by = f" by {error.op}" if error.op else ""
    at = f" at {where}" if where else ""
    saver = error.needed_by or "a node"
    return (
        f"{name} was changed in place{by}{at} after {saver} saved it for backward (version "
        f"{error.expected}, now {error.actual}): change a copy ({name}.clone()), or make "
        "the change before the op that saves it"
    )


def node_title(node: Node) -> str:
    if node.kind == "op":
        return f"{node.op} ({node.name})" if node.name else node.op
    return node.name or node.op or "constant"


# -- real models: module titles, the slide view's short tensors, collapsed views -----------

# The slide view writes the values of tensors with at most this many elements (a 4×4
# matrix); a larger one reads as one short line: its shape and norm.
SLIDE_VALUES = 16


def short_summary(t: TensorData) -> str:
    """One short line for a large tensor on a slide: "16×3 ‖·‖ 0.4512"."""
    shape = dims_text(t.shape)
    if t.note:
        return f"{shape}: {t.note}"
    text = f"{shape} ‖·‖ {_one_number(t.norm)}"
    if t.nan or t.inf:
        text += f", {t.nan} NaN, {t.inf} Inf"
    return text


def slide_tensor(t: TensorData, per_line: int = 4) -> list[str]:
    """The slide view's text of a tensor: its values when small, else one short line."""
    if t.values is not None and t.numel <= SLIDE_VALUES:
        return format_tensor(t, per_line)
    return [short_summary(t)]


def repeated_modules(modules: Sequence[ModuleCall]) -> frozenset[tuple[str, str]]:
    """The (name, class) of modules called more than once in a graph."""
    seen: set[tuple[str, str]] = set()
    twice: set[tuple[str, str]] = set()
    for m in modules:
        key = (m.name, m.cls)
        (twice if key in seen else seen).add(key)
    return frozenset(twice)


def module_title(
    call: ModuleCall,
    modules: Sequence[ModuleCall],
    repeated: frozenset[tuple[str, str]] | None = None,
) -> str:
    """ "layers.3 · TransformerEncoderLayer"; "fc (call 2) · Linear" when the graph holds
    several calls of one module; the class alone for the outermost module."""
    if repeated is None:  # callers titling many calls pass it in, computed once
        repeated = repeated_modules(modules)
    again = (call.name, call.cls) in repeated
    name = call.name + (f" (call {call.call})" if again else "")
    return f"{name} · {call.cls}" if name else call.cls


register_formatters(text=lambda check: check_line(check, "exact"), html=check_html)


# -- a run: its passes and its gradient flow (the terminal and the run's page) ----------------

PASS_COLUMNS = ("#", "called at", "nodes", "comparisons", "picture")


def pass_cells(p: Pass, picture: str | None) -> tuple[str, str, str, str, str]:
    """A pass's row in the table of `trace run` (and the run's page), under PASS_COLUMNS:
    `picture` is its file's name, None when it was not drawn."""
    where = str(p.location) if p.location else "?"
    return (
        str(p.number),
        where,
        str(p.nodes),
        checks_brief(p.recording.checks),
        picture or "not drawn",
    )


def flow_number(v: float | None) -> str:
    """A norm or ratio of the gradient flow: three significant digits, "—" when missing."""
    return "—" if v is None else f"{v:.3g}"


def flow_marks(flow: GradientFlow) -> list[str]:
    """Per layer whose gradient vanished or exploded: "fc3 · Linear: vanishing at 120
    passes (first at pass 4, ‖g‖ 3.2e-09)"."""
    found: dict[tuple[str, str], list[tuple[int, float | None]]] = {}
    norms = {layer.label: layer.grad_norm for layer in flow.layers()}
    for label, number, kind in flow.marks():
        found.setdefault((label, kind), []).append((number, norms[label][number - 1]))
    return [
        f"{label}: {kind} at {len(at)} pass(es) (first at pass {at[0][0]}, "
        f"‖g‖ {flow_number(at[0][1])})"
        for (label, kind), at in found.items()
    ]


def flow_summary(flow: GradientFlow) -> str:
    """One line for the terminal: what the flow holds, and whether any layer's gradient
    vanished or exploded."""
    layers = len(flow.layers())
    head = (
        f"gradient flow: {layers} layer(s) over {flow.passes} backward pass(es), "
        f"{len(flow.steps)} optimizer step(s)"
    )
    marks = flow_marks(flow)
    if not marks:
        return f"{head}; no gradient vanished (< 1e-7) or exploded (> 1e4)"
    return f"{head}; " + "; ".join(marks)


ACTIVATION_COLUMNS = ("pass", "module", "mean", "std", "saturated")


def activation_cells(a: ActivationStats) -> tuple[str, str, str, str, str]:
    """A module output's row on the run's page, under ACTIVATION_COLUMNS."""
    module = f"{a.module} · {a.module_class}" if a.module else a.module_class
    saturated = "—" if a.saturated is None else f"{a.saturated:.1%}"
    return (str(a.pass_number), module, flow_number(a.mean), flow_number(a.std), saturated)
