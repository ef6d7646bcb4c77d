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
from tracer.model.explain import Cut, Element, InPlaceError, NoGradient, Start
from tracer.model.flow import ActivationStats, FlowMark, GradientFlow
from tracer.model.forward import ForwardMode
from tracer.model.graph import Edge, Graph, ModuleCall, Node, UnrecordedPasses
from tracer.model.passes import Pass
from tracer.model.tensor import TensorData
from tracer.view.jacobian import JacobianStep

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


def _block(title: str, t: TensorData | None, width: int = 10) -> list[str]:
    """A titled tensor in the terminal report, its rows under its first one."""
    body = ["(none)"] if t is None else format_tensor(t, per_line=5)
    pad = " " * (width + 2)
    return [f"  {title:<{width}}{body[0]}", *(pad + row for row in body[1:])]


def format_check(check: Check) -> str:
    """The terminal report of one check: both gradients, the largest error, the verdict."""
    lines = [check.derivative]
    lines += _block("autograd", check.autograd)
    lines += _block("numeric" if check.how is How.FINITE_DIFFERENCES else "manual", check.manual)
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
    """ "2 backward passes inside torch.func at lecture.py:8 are not recorded: ...",
    "gradcheck at lecture.py:3: 87 backward passes of its own, not recorded" """
    count = "1 backward pass" if entry.passes == 1 else f"{entry.passes} backward passes"
    at = f" at {where}" if where else ""
    if entry.kind == "library":
        return (
            f"{entry.function}{at}: {count} of its own, not recorded (a library function "
            "the code called; each of its passes would be a picture)"
        )
    verb = "is" if entry.passes == 1 else "are"
    return (
        f"{count} inside torch.func{at} {verb} not recorded: a transform (grad, vjp, "
        "jacrev, hessian, ...) differentiates wrapped tensors of its own, not the program's graph"
    )


def passes_text(recorded: list[int], passes_run: int, choose: str = "--passes") -> str | None:
    """ "recorded passes 1, 2, 3, 2000 of 2000; 1996 ran unrecorded (choose with --passes)";
    None when every pass was recorded. `choose`: how the user picks others."""
    unrecorded = passes_run - len(recorded)
    if unrecorded <= 0:
        return None
    numbers = ", ".join(map(str, recorded))
    which = {0: "no pass", 1: f"pass {numbers}"}.get(len(recorded), f"passes {numbers}")
    return f"recorded {which} of {passes_run}; {unrecorded} ran unrecorded (choose with {choose})"


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


def inplace_error_text(error: InPlaceError, where: str | None, saved_where: str | None) -> str:
    """ "b was changed in place by mul_ at train.py:4 after SigmoidBackward0 saved it at
    train.py:3 for backward (version 0, now 1): …"; `where`: the in-place op's line,
    `saved_where`: the line of the op whose node saved it."""
    name = error.name or f"an output of {error.made_by}"
    by = f" by {error.op}" if error.op else ""
    at = f" at {where}" if where else ""
    saver = error.needed_by or "a node"
    saved_at = f" at {saved_where}" if saved_where else ""
    return (
        f"{name} was changed in place{by}{at} after {saver} saved it{saved_at} for backward "
        f"(version {error.expected}, now {error.actual}): change a copy ({name}.clone()), or "
        "make the change before the op that saves it"
    )


def cut_text(cut: Cut, where: str | None) -> str:
    """ "detach() at train.py:4", ".data at cell 2, line 3", "mul under torch.no_grad() at
    train.py:7"; `where`: the cut's line, spoken."""
    at = f" at {where}" if where else ""
    if cut.kind == "detach":
        return f"{cut.op}(){at}"
    if cut.kind == "data":
        return f".data{at}"
    return f"{cut.op} under torch.no_grad(){at}"


def no_gradient_text(why: NoGradient, cut_at: str | None = None, read_at: str | None = None) -> str:
    """ "y.grad is None: y is not a leaf (made by MulBackward0); call y.retain_grad() before
    backward", and the like for each reason (see tracer.model.explain.NoGradientReason);
    `cut_at`: the line of `why.cut`, `read_at`: the line that read the `.grad`, spoken
    ("… (read at train.py:9)")."""
    text = _no_gradient_reason(why, cut_at)
    return text + (f" (read at {read_at})" if read_at else "")


def _no_gradient_reason(why: NoGradient, cut_at: str | None) -> str:
    name = why.name
    head = f"{name}.grad is None: "
    cut = None if why.cut is None else cut_text(why.cut, cut_at)
    if why.reason == "dtype":
        return f"{name} is {why.dtype}: only floating-point and complex tensors have gradients"
    if why.reason == "not-leaf":
        return (
            f"{head}{name} is not a leaf (made by {why.made_by}); "
            f"call {name}.retain_grad() before backward"
        )
    if why.reason == "no-requires-grad":
        if cut is not None:
            return f"{head}{name} does not require grad: it was made by {cut}"
        return (
            f"{head}{name} does not require grad (made without requires_grad=True, under "
            "torch.no_grad(), or by .detach() or .data)"
        )
    if why.reason == "no-backward":
        return f"{head}no backward pass has run yet"
    if why.reason == "not-reached":
        text = f"{head}{name} does not reach what backward pass {why.after} differentiated"
        return text + (f"; the path is cut by {cut}" if cut else " (is it used in the loss?)")
    if why.reason == "cleared":
        return (
            f"{head}backward pass {why.after} gave it a gradient, and it was set to None "
            "after (optimizer.zero_grad() does that)"
        )
    return f"{head}autograd gave it no gradient"


def element_text(element: Element) -> str:
    """ "result = 0 at [0]", "self = -1 at [1, 2]"."""
    value = element.value
    number = str(int(value)) if value.is_integer() else _one_number(value)
    index = ", ".join(map(str, element.index))
    return f"{element.name} = {number} at [{index}]"


def counts_text(nan: int, inf: int) -> str:
    """ "1 NaN", "2 NaN and 1 Inf"."""
    return " and ".join(f"{n} {what}" for n, what in ((nan, "NaN"), (inf, "Inf")) if n)


def start_text(start: Start, graph: Graph, at: str | None) -> str:
    """Where a problem starts (see tracer.model.explain.Start), `at` the node's line spoken:
    "first non-finite gradient: SqrtBackward0 (y) at nan.py:4 (step 5) sent 1 Inf to x;
    torch used ∂/∂self: grad / (2 · result)   (self = x, result = y); result = 0 at [0]",
    "first NaN value: LogBackward0 (l) at nan.py:5 made 1 NaN; self = -1 at [0]" (or "first
    Inf value: ExpBackward0 (e) … made 1 Inf; self = 1000 at [2]"),
    "zero gradient from ReluBackward0 (h) at mlp.py:7 (step 3) down: every input ≤ 0"."""
    node = graph.nodes[start.node]
    place = node_title(node) + (f" at {at}" if at else "")
    if node.step is not None and start.kind != "value":
        place += f" (step {node.step})"
    elements = "; " + ", ".join(map(element_text, start.elements)) if start.elements else ""
    if start.kind == "value":
        kind = "NaN" if start.nan else "Inf"
        return f"first {kind} value: {place} made {counts_text(start.nan, start.inf)}{elements}"
    used = f"; torch used {start.formula}" if start.formula else ""
    if start.kind == "zero":
        why = ": every input ≤ 0" if start.cause == "inputs ≤ 0" else f"{used}{elements}"
        return f"zero gradient from {place} down{why}"
    to = "" if start.to is None else f" to {node_title(graph.nodes[start.to])}"
    sent = counts_text(start.nan, start.inf)
    return f"first non-finite gradient: {place} sent {sent}{to}{used}{elements}"


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


# -- the step-through page's Jacobian panel (tracer.view.jacobian) --------------------------


def jacobian_title(step: JacobianStep) -> str:
    """ "J = ∂out/∂in, 2 × 3: rows = output [2] (2 elements), columns = input [3]
    (3 elements)"; several outputs are named in order: "outputs 0 [2], 1 [2]"."""
    rows, columns = step.jacobian.matrix.shape
    outputs = step.jacobian.outputs
    if len(outputs) == 1:
        row_text = f"output {shape_text(step.output_shapes[0])}"
    else:
        shapes = zip(outputs, step.output_shapes, strict=True)
        row_text = "outputs " + ", ".join(f"{o} {shape_text(shape)}" for o, shape in shapes)
    return (
        f"J = ∂out/∂in, {rows} × {columns}: rows = {row_text} ({_elements(rows)}), "
        f"columns = input {shape_text(step.input_shape)} ({_elements(columns)})"
    )


def _elements(count: int) -> str:
    return f"{count} element" + ("s" if count != 1 else "")


def jacobian_lines(step: JacobianStep) -> list[str]:
    """The matrix, a row per line (at most 16 numbers: it is never wrapped)."""
    return format_tensor(step.jacobian.matrix, per_line=step.jacobian.matrix.shape[1])


def vjp_verdict(step: JacobianStep) -> str:
    """Whether the gradient the step sent down the edge is vᵀJ."""
    if step.product is None:
        return "vᵀJ cannot be worked out: the gradient that arrived has no recorded values"
    if step.sent is None or step.agrees is None:
        return "nothing with recorded values was sent down this edge to compare with vᵀJ"
    if step.difference == 0:
        return "✓ the gradient sent = vᵀJ, exactly"
    if step.agrees:
        return (
            f"✓ the gradient sent = vᵀJ within rounding (largest difference {step.difference:.1e})"
        )
    return f"✗ the gradient sent ≠ vᵀJ: largest difference {step.difference:.2g}"


# -- forward mode beside reverse mode (tracer.model.forward) ------------------------------


def forward_title(forward: ForwardMode) -> str:
    """ "forward mode: the tangent of f along v = e1 (x: 10)"."""
    sizes = ", ".join(f"{i.name}: {i.tangent.numel}" for i in forward.inputs)
    of = forward.output_name or "the output"
    return f"forward mode: the tangent of {of} along v = {forward.given} ({sizes})"


def forward_cost_lines(forward: ForwardMode) -> tuple[str, str]:
    """The cost contrast (MML §5.6), one line per mode: forward mode gives J·v for one
    input direction per pass, reverse mode vᵀJ for one output per pass."""
    n, m = len(forward.direction), forward.outputs
    return (
        f"forward mode: one forward pass per input direction (here 1 of n = {n});",
        f"reverse mode: one backward per output (here {forward.backward_passes} of m = {m})",
    )


def forward_check_line(forward: ForwardMode) -> str:
    """ "J·v: forward mode vs reverse mode: ✓ agree (largest error < 1e-12)"."""
    check = forward.check
    if check is None:
        return "J·v: not checked"
    head = f"J·v: forward mode vs reverse mode: {verdict_text(check)}"
    if check.problem:
        return f"{head}: {check.problem}"
    return f"{head} (largest error {format_error(check.max_abs)})"


def format_forward(forward: ForwardMode) -> str:
    """The terminal report of forward mode: v, J·v both ways, the verdict, the cost."""
    lines = [forward_title(forward)]
    for given in forward.inputs:
        lines += _block(f"v ({given.name})", given.tangent, 12)
    check = forward.check
    if check is not None:
        lines += _block("J·v forward", check.autograd, 12)
        lines += _block("J·v reverse", check.manual, 12)
        lines.append(f"  {check.problem or _largest_error(check)}")
    lines.append(f"  {forward_check_line(forward)}")
    lines.append("  " + " ".join(forward_cost_lines(forward)))
    return "\n".join(lines)


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


def flow_marks(marks: Sequence[FlowMark]) -> list[str]:
    """Per layer whose gradient vanished or exploded: "fc3 · Linear: vanishing at 120
    passes (first at pass 4, ‖g‖ 3.2e-09)". `marks`: GradientFlow.marks()."""
    found: dict[tuple[str, str], list[FlowMark]] = {}
    for mark in marks:
        found.setdefault((mark.label, mark.kind), []).append(mark)
    return [
        f"{label}: {kind} at {len(at)} pass(es) (first at pass {at[0].pass_number}, "
        f"‖g‖ {flow_number(at[0].norm)})"
        for (label, kind), at in found.items()
    ]


def flow_summary(flow: GradientFlow, marks: Sequence[FlowMark] | None = None) -> str:
    """One line for the terminal: what the flow holds, and whether any layer's gradient
    vanished or exploded. `marks`: flow.marks(), when already computed."""
    head = (
        f"gradient flow: {flow.layer_count()} layer(s) over {flow.passes} backward pass(es), "
        f"{len(flow.steps)} optimizer step(s)"
    )
    described = flow_marks(flow.marks() if marks is None else marks)
    if not described:
        return f"{head}; no gradient vanished (< 1e-7) or exploded (> 1e4)"
    return f"{head}; " + "; ".join(described)


ACTIVATION_COLUMNS = ("pass", "module", "mean", "std", "saturated")


def activation_cells(a: ActivationStats) -> tuple[str, str, str, str, str]:
    """A module output's row on the run's page, under ACTIVATION_COLUMNS."""
    module = f"{a.module} · {a.module_class}" if a.module else a.module_class
    saturated = "—" if a.saturated is None else f"{a.saturated:.1%}"
    return (str(a.pass_number), module, flow_number(a.mean), flow_number(a.std), saturated)
