"""The chain-rule step of every autograd node, read from torch's own derivatives table.

Every torch wheel ships `torchgen/packaged/autograd/derivatives.yaml`, the table from which
the C++ of every `*Backward*` node is generated. torchgen's own loader
(`torchgen.packaged.autograd.load_derivatives`) turns it into one `DifferentiabilityInfo`
per node class, named exactly as the class is (`info.op`: "SinBackward0",
"SqueezeBackward4"), with one formula per differentiable input. This module keeps that
table as plain data and makes its formulas readable::

    >>> from tracer.derivatives.formulas import explain, formula_for, readable, slot_names
    >>> explain("SinBackward0", {"self": "x"})
    ['∂/∂self: grad · cos(self)   (self = x)']
    >>> slot_names("DotBackward0")
    ('self', 'tensor')
    >>> [i.formula for i in formula_for("MvBackward0").inputs]
    ['grad ⊗ vec', 'selfᵀ @ grad']
    >>> readable("grad.div(self.conj())")
    'grad / self'

The public functions:

- `formula_for(op, n_slots=None, *, complex=False) -> NodeFormula | None`: the formula
  (an `InputFormula`) per input slot of the
  node class `op` (a grad_fn class name), in the order of the node's `next_functions`.
  None for a node the table does not describe (AccumulateGrad, a custom
  `torch.autograd.Function`, CopySlices, an unknown name): nothing rather than a guess.
  A custom Function named like a generated class ("MulBackward0") cannot be told apart by
  its name; generated names always end in a digit (or `_copy`), custom ones in "Backward".
- `slot_names(op, n_slots=None) -> tuple[str, ...] | None`: the input name per slot, so the
  two edges of `torch.dot(x, x)` read ∂/∂self and ∂/∂tensor.
- `explain(op, bindings={}, *, complex=False, n_slots=None) -> list[str] | None`: one line
  per slot, `∂/∂self: grad · cos(self)   (self = x)`; `bindings` maps the formula's names
  ("self", "other", "result") to the user's variable names.
- `readable(formula, *, complex=False) -> str`: one derivatives.yaml formula (C++) made
  readable; shown verbatim (less `.conj()` for real tensors) where it cannot be.
- `cache_path() -> Path`: where the disk cache of the installed torch lives.

Notation: `·` is the elementwise product (`*`), `@` a matrix product (`mm`, `mv`,
`matmul`), `⊗` the outer product (`ger`), `ᵀ` a transpose, `x²` a power; methods read as
functions (`self.cos()` → `cos(self)`, `grad.expand(s)` → `expand(grad, s)`), sizes as
`self.shape`, and `_symint` suffixes are dropped. `grad` is the gradient arriving at the
node (`grads[i]`, `grad_<name>` for nodes with several outputs); `result` is its output.
A few FunctionsManual.cpp helpers are spelled out (`mul_tensor_backward(grad, other, …)`
→ `grad · other`, `mm_mat1_backward` → `grad @ mat2ᵀ · alpha`); the others keep their
name, which is torch's C++ function computing that step.

Slots. A node's `next_functions` has one slot per differentiable input of the forward
function, in the function's argument order (torchgen's `args_with_derivatives`: the node's
`set_next_edges(collect_next_edges(...))`), whether or not that input required a gradient
(`torch.dot(x, y)` with only y requiring grad still has two slots, the first `(None, 0)`),
and an optional tensor that was not given still takes its slot. A list input (`cat`'s
`tensors`) takes one slot per element: its length is only known from the node, so pass
`n_slots=len(fn.next_functions)`; without it the layout of such a node is unknown and
`slot_names` says None. With n_slots, a layout that does not add up says None too.

Combined formulas. Some entries compute several inputs' gradients in one call
(`self, other: atan2_backward(grad, self, other, grad_input_mask)`); the call returns a
tuple and slot i takes its `part`-th element. Such a formula is shown once per slot it
feeds, with `InputFormula.part` and `shared_with` saying so. A list input's slots likewise
take the `part`-th element of the list its formula returns.

Saved names. `InputFormula.saved` lists the names the formula reads from what the node
saved in the forward pass: torchgen's `SavedAttribute.nctype.name`. That is an input's own
name ("self", "other"), an output's name (`result` for a single unnamed return, `result0`,
`result1` … for several, else the return's declared name such as `total_weight`), or an
input's name plus a suffix for a property saved instead of the tensor (`self.sym_sizes()`
→ `self_sym_sizes`, `other.scalar_type()` → `other_scalar_type`, `zeros_like(self)` →
`self_info`, `mat1.layout()` → `mat1_layout`). The rule for the node: a saved name `n`
is the attribute `_saved_n` of the grad_fn exactly when its C++ type has a Python getter
(tensors and tensor lists, int and SymInt arrays, ints, SymInts, floats, bools, Scalars,
strings, and optional ints, floats, Scalars, strings and arrays); ScalarType (a dtype
argument such as `input_dtype`, or `other_scalar_type`), TensorOptions, Layout,
TypeAndSize, TensorGeometry, optional bools (`train`) and the `_args_sizes` and
`_args_scalartypes` vectors are kept in C++ only.
`NodeFormula.saved` is that set of exposed names, taken from the getters torchgen
generates (so `_saved_self_sym_sizes` is there; `tracer.record.capture` leaves `_sym_` ones out).

Cost. Nothing is loaded at import. The first call loads the table with torchgen (about
2-3 s), keeps it in memory, and writes it as JSON to `$XDG_CACHE_HOME/tracer/` (or
`~/.cache/tracer/`), one file per torch version, written atomically; later processes read
that file (a few ms) without importing torchgen. The file's key holds the torch version
and the size and mtime of derivatives.yaml; a stale, corrupt or unwritable cache falls
back to torchgen. Without torchgen or pyyaml, every op reads None (with one warning).
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from tracer.errors import TracerError, warn
from tracer.files import make_folder, write_atomic

# Bump when the cached JSON's layout changes: an old file is then reloaded, not misread.
CACHE_FORMAT = 1


@dataclass(frozen=True)
class InputFormula:
    """The gradient one slot of a node sends to its input."""

    slot: int  # index into the node's next_functions
    name: str  # the forward function's argument: "self", "tensor", "vec"; "tensors[1]"
    formula: str  # readable: "grad · cos(self)"
    saved: tuple[str, ...]  # saved names the formula reads (see the module docstring)
    source: str  # the formula as derivatives.yaml writes it (C++)
    # Set when one formula returns the gradients of several inputs (a combined formula or a
    # list input): this slot takes its part-th result; shared_with names all of them.
    part: int | None = None
    shared_with: tuple[str, ...] = ()


@dataclass(frozen=True)
class NodeFormula:
    """What derivatives.yaml says about one grad_fn class."""

    op: str  # the grad_fn class name: "SinBackward0"
    function_name: str  # the forward function: "sin", "squeeze_", "nll_loss_forward"
    schema: str  # its schema: "sin(Tensor self) -> Tensor"
    inputs: tuple[InputFormula, ...]  # one per slot, in next_functions order
    saved: tuple[str, ...]  # the names the node exposes as `_saved_<name>` attributes


# ---------------------------------------------------------------------------------------
# Public functions


def formula_for(
    op: str, n_slots: int | None = None, *, complex: bool = False
) -> NodeFormula | None:
    """The formula per input slot of the grad_fn class `op`, or None when there is none.

    `n_slots` (`len(fn.next_functions)`) lays out list inputs, one slot per element, and
    must fit the layout (else None). Without it, a list input is one entry named after the
    list ("tensors"), whose `slot` counts it as one slot: only the formulas are right then,
    not the layout (`slot_names` and `explain` say None for such a node).
    `complex=True` keeps `.conj()` and `handle_r_to_c`, which do nothing on real tensors.
    """
    entry = _table().get(op)
    if entry is None:
        return None
    lengths = _list_lengths(entry, n_slots)
    if lengths is None:
        if n_slots is not None:
            return None
        lengths = {}  # lists of unknown length: one entry each
    by_name = {name: formula for formula in entry["formulas"] for name in formula["names"]}
    inputs: list[InputFormula] = []
    for arg in entry["inputs"]:
        formula = by_name[arg["name"]]
        text = readable(formula["source"], complex=complex)
        names = tuple(formula["names"])
        shared = len(names) > 1
        count = lengths.get(arg["name"])  # None: not a list
        for element in range(1 if count is None else count):
            if shared:
                part: int | None = names.index(arg["name"])
            else:
                part = None if count is None else element
            inputs.append(
                InputFormula(
                    slot=len(inputs),
                    name=arg["name"] if count is None else f"{arg['name']}[{element}]",
                    formula=text,
                    saved=tuple(formula["saved"]),
                    source=formula["source"],
                    part=part,
                    shared_with=names if shared else (),
                )
            )
    return NodeFormula(
        op=op,
        function_name=entry["function"],
        schema=entry["schema"],
        inputs=tuple(inputs),
        saved=tuple(entry["exposed"]),
    )


def slot_names(op: str, n_slots: int | None = None) -> tuple[str, ...] | None:
    """The input name per slot of `op`'s next_functions: ("self", "tensor") for DotBackward0.

    None when `op` has no formula, when it has a list input and `n_slots` is not given, or
    when `n_slots` does not fit its layout.
    """
    entry = _table().get(op)
    if entry is None or (n_slots is None and _list_inputs(entry)):
        return None
    node = formula_for(op, n_slots)
    return None if node is None else tuple(i.name for i in node.inputs)


def explain(
    op: str,
    bindings: Mapping[str, str] | None = None,
    *,
    complex: bool = False,
    n_slots: int | None = None,
) -> list[str] | None:
    """One line per slot: `∂/∂self: grad · cos(self)   (self = x)`; None without a formula.

    `bindings` maps the formula's names ("self", "other", "result") to the user's
    variable names; the ones a line uses are listed after it.
    """
    bindings = bindings or {}
    node = formula_for(op, n_slots, complex=complex)
    if node is None or (n_slots is None and slot_names(op) is None):
        return None
    lines = []
    for entry in node.inputs:
        line = f"∂/∂{entry.name}: {entry.formula}"
        if entry.part is not None:
            of = ", ".join(entry.shared_with) if entry.shared_with else entry.name.split("[")[0]
            line += f"   [part {entry.part} of one formula for {of}]"
        used = [
            f"{name} = {bindings[name]}"
            for name in _identifiers(entry.formula, entry.name.split("[")[0])
            if name in bindings
        ]
        if used:
            line += f"   ({', '.join(used)})"
        lines.append(line)
    return lines


# ---------------------------------------------------------------------------------------
# Readable formulas: C++ → (a few token rewrites) → Python's ast → text

# Token rewrites that make a C++ formula a Python expression. Order matters: namespaces go
# before `::` becomes `.`, and `!` must not eat `!=`.
_TOKEN_REWRITES: tuple[tuple[str, str], ...] = (
    # `grad.defined() ? f(...) : std::tuple<…>()`: no gradient in, none out; f is the rule.
    (r"^\s*grad\.defined\(\)\s*\?\s*(.*?)\s*:\s*std::tuple<[\w\s,:]*>\(\)\s*$", r"\1"),
    (r"/\*.*?\*/", ""),  # C comments: `/*training=*/false`
    (r"\bstd::get<(\d+)>\(", r"_get\1("),  # a tuple's element: shown as `x[0]`
    (r"\b\w+<[\w\s,:]*>\s*\(", "$("),  # any other template call: not readable
    (r"\b(?:at|c10|std|torch)::", ""),
    (r"::", "."),
    (r"->", "."),
    (r"\btrue\b", "True"),
    (r"\bfalse\b", "False"),
    (r"\b(?:nullopt|nullptr)\b", "None"),
    (r"&&", " and "),
    (r"\|\|", " or "),
    (r"!(?!=)", " not "),
    (r"\{", "["),
    (r"\}", "]"),
)

# Methods shown as infix operators: `grad.div(self)` → `grad / self`, `a.mm(b)` → `a @ b`
# (`@` for matrix products, `·` for the elementwise `*`), `grad.ger(vec)` → `grad ⊗ vec`.
_OPERATOR_METHODS: dict[str, type[ast.operator]] = {
    "mul": ast.Mult,
    "div": ast.Div,
    "add": ast.Add,
    "sub": ast.Sub,
    "pow": ast.Pow,
    "mm": ast.MatMult,
    "mv": ast.MatMult,
    "bmm": ast.MatMult,
    "matmul": ast.MatMult,
}
_OUTER_PRODUCT_METHODS = frozenset({"ger", "outer"})
# Methods shown as a property of the tensor: `self.sym_sizes()` → `self.shape`.
_PROPERTY_METHODS = {
    "sym_sizes": "shape",
    "sizes": "shape",
    "sym_strides": "stride",
    "strides": "stride",
    "scalar_type": "dtype",
    "options": "options",
    "layout": "layout",
    "device": "device",
    "dim": "ndim",
}
# FunctionsManual.cpp helpers whose meaning (for real tensors) is a short expression, keyed
# by name and argument count (another overload, such as div's with a rounding_mode, whose
# gradient is zero, keeps its name); `_i` stands for the i-th argument. Each matches the
# helper's C++ body in torch 2.x.
_HELPER_TEMPLATES: dict[tuple[str, int], str] = {
    ("mul_tensor_backward", 3): "_0 * _1",  # (grad, other, self_st)
    ("div_tensor_self_backward", 3): "_0 / _1",  # (grad, other, self_st)
    ("div_tensor_other_backward", 3): "-_0 * (_1 / _2) / _2",  # (grad, self, other)
    ("maybe_multiply", 2): "_0 * _1",  # (t, s): t when s == 1
    ("mm_mat1_backward", 6): "_0 @ _1.t() * _5",  # (grad, mat2, sizes, strides, layout, alpha)
    ("mm_mat2_backward", 6): "_1.t() @ _0 * _5",  # (grad, mat1, sizes, strides, layout, alpha)
    ("tanh_backward", 2): "_0 * (1 - _1 ** 2)",  # (grad, output)
    ("sigmoid_backward", 2): "_0 * _1 * (1 - _1)",  # (grad, output)
    ("threshold_backward", 3): "_0 * (_1 > _2)",  # (grad, self, threshold): relu's
    ("pow_backward", 3): "_0 * _2 * _1 ** (_2 - 1)",  # (grad, self, exponent)
    ("pow_backward_self", 3): "_0 * _2 * _1 ** (_2 - 1)",  # (grad, self, exponent)
    # (grad, self, exponent, result); torch also returns 0 where self = 0 and exponent ≥ 0
    ("pow_backward_exponent", 4): "_0 * _3 * log(_1)",
}
# Wrappers that change nothing for real tensors: the argument kept.
_REAL_WRAPPERS = {"handle_r_to_c": 1, "conj": 0}

_SUPERSCRIPTS = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")
_BINARY_SYMBOLS = {
    ast.Mult: "·",
    ast.Div: "/",
    ast.Add: "+",
    ast.Sub: "-",
    ast.MatMult: "@",
    ast.Mod: "%",
    ast.FloorDiv: "//",
    ast.BitAnd: "&",
    ast.BitOr: "|",
}
_COMPARE_SYMBOLS = {
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Lt: "<",
    ast.LtE: "≤",
    ast.Gt: ">",
    ast.GtE: "≥",
}
# Precedences, low to high (as Python's): a part binding looser than its place is bracketed.
_OR, _AND, _NOT, _COMPARE, _BITOR, _BITAND, _ADD, _MUL, _UNARY, _POWER, _ATOM = range(11)
_BINARY_PRECEDENCE = {
    ast.Add: _ADD,
    ast.Sub: _ADD,
    ast.Mult: _MUL,
    ast.Div: _MUL,
    ast.MatMult: _MUL,
    ast.Mod: _MUL,
    ast.FloorDiv: _MUL,
    ast.BitAnd: _BITAND,
    ast.BitOr: _BITOR,
}


class _Unreadable(Exception):
    """A formula construct without a readable form: the formula is shown verbatim."""


@cache
def readable(formula: str, *, complex: bool = False) -> str:
    """A derivatives.yaml formula made readable: `grad * self.cos().conj()` → `grad · cos(self)`.

    Where it cannot be (a C++ ternary, a template), the formula verbatim, less the `at::`,
    `c10::` and `std::` namespaces and, unless `complex`, `.conj()`.
    """
    python = formula
    for pattern, replacement in _TOKEN_REWRITES:
        python = re.sub(pattern, replacement, python)
    try:
        tree = ast.parse(python.strip(), mode="eval").body
        return _Printer(complex).show(tree)[0]
    except (SyntaxError, _Unreadable, RecursionError):
        verbatim = re.sub(r"::", ".", re.sub(r"\b(?:at|c10|std|torch)::", "", formula))
        return verbatim if complex else verbatim.replace(".conj()", "")


class _Printer:
    """Shows a formula's Python AST as text, rewriting C++ idioms on the way."""

    def __init__(self, complex: bool) -> None:
        self.complex = complex

    def show(self, node: ast.expr) -> tuple[str, int]:
        """The text of `node` and the precedence of its outermost operator."""
        if isinstance(node, ast.Call):
            return self._call(node)
        if isinstance(node, ast.BinOp):
            return self._binary(node.left, type(node.op), node.right)
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.Not):
                return f"not {self._at(node.operand, _NOT)}", _NOT
            symbol = {ast.USub: "-", ast.UAdd: "+", ast.Invert: "~"}[type(node.op)]
            return symbol + self._at(node.operand, _UNARY), _UNARY
        if isinstance(node, ast.BoolOp):
            precedence = _AND if isinstance(node.op, ast.And) else _OR
            word = " and " if precedence == _AND else " or "
            return word.join(self._at(v, precedence + 1) for v in node.values), precedence
        if isinstance(node, ast.Compare):
            parts = [self._at(node.left, _COMPARE + 1)]
            for operator, right in zip(node.ops, node.comparators, strict=True):
                if type(operator) not in _COMPARE_SYMBOLS:
                    raise _Unreadable(type(operator).__name__)
                parts += [_COMPARE_SYMBOLS[type(operator)], self._at(right, _COMPARE + 1)]
            return " ".join(parts), _COMPARE
        if isinstance(node, ast.Name):
            return node.id, _ATOM
        if isinstance(node, ast.Constant):
            return repr(node.value), _ATOM
        if isinstance(node, ast.Attribute):
            return f"{self._at(node.value, _ATOM)}.{node.attr}", _ATOM
        if isinstance(node, ast.Subscript):
            return f"{self._at(node.value, _ATOM)}[{self.show(node.slice)[0]}]", _ATOM
        if isinstance(node, ast.List | ast.Tuple):
            inner = ", ".join(self.show(e)[0] for e in node.elts)
            return (f"[{inner}]" if isinstance(node, ast.List) else f"({inner})"), _ATOM
        raise _Unreadable(type(node).__name__)

    def _at(self, node: ast.expr, precedence: int) -> str:
        """`node` as a part of an operator binding `precedence`: bracketed if looser."""
        text, own = self.show(node)
        return f"({text})" if own < precedence else text

    def _binary(self, left: ast.expr, op: type, right: ast.expr) -> tuple[str, int]:
        if op is ast.Pow:
            return self._power(left, right)
        if op is ast.Mult and _is_one(right):
            return self.show(left)
        if op is ast.Mult and _is_one(left):
            return self.show(right)
        if op not in _BINARY_PRECEDENCE:
            raise _Unreadable(op.__name__)
        precedence = _BINARY_PRECEDENCE[op]
        # Left-associative: an equal-precedence right part is bracketed (a - (b - c)).
        text = (
            f"{self._at(left, precedence)} {_BINARY_SYMBOLS[op]} {self._at(right, precedence + 1)}"
        )
        return text, precedence

    def _power(self, base: ast.expr, exponent: ast.expr) -> tuple[str, int]:
        base_text = self._at(base, _ATOM)
        if (
            isinstance(exponent, ast.Constant)
            and type(exponent.value) is int
            and exponent.value >= 0
        ):
            return base_text + str(exponent.value).translate(_SUPERSCRIPTS), _POWER
        return f"{base_text}^{self._at(exponent, _ATOM)}", _POWER

    def _call(self, node: ast.Call) -> tuple[str, int]:
        args = list(node.args)
        if any(isinstance(a, ast.Starred) for a in args):
            raise _Unreadable("starred")
        keywords = [f"{k.arg}={self.show(k.value)[0]}" for k in node.keywords if k.arg]
        if isinstance(node.func, ast.Attribute) and not _is_namespace(node.func.value):
            return self._method(node.func.value, _without_symint(node.func.attr), args, keywords)
        name = _without_symint(_dotted(node.func))
        if re.fullmatch(r"_get\d+", name) and len(args) == 1 and not keywords:
            return f"{self._at(args[0], _ATOM)}[{name.removeprefix('_get')}]", _ATOM
        if not self.complex and name in _REAL_WRAPPERS and len(args) > _REAL_WRAPPERS[name]:
            return self.show(args[_REAL_WRAPPERS[name]])
        template = _HELPER_TEMPLATES.get((name, len(args)))
        if template is not None and not keywords:
            return self.show(_Substitute(args).visit(ast.parse(template, mode="eval").body))
        return self._function(name, args, keywords)

    def _method(
        self, receiver: ast.expr, name: str, args: list[ast.expr], keywords: list[str]
    ) -> tuple[str, int]:
        plain = not keywords
        if name == "conj" and not args and plain and not self.complex:
            return self.show(receiver)
        if name in _OPERATOR_METHODS and len(args) == 1 and plain:
            return self._binary(receiver, _OPERATOR_METHODS[name], args[0])
        if name in _OUTER_PRODUCT_METHODS and len(args) == 1 and plain:
            return f"{self._at(receiver, _ATOM)} ⊗ {self._at(args[0], _ATOM)}", _MUL
        if name == "neg" and not args and plain:
            return "-" + self._at(receiver, _UNARY), _UNARY
        if name in ("t", "mT") and not args and plain:
            return self._at(receiver, _ATOM) + "ᵀ", _ATOM
        if name in ("mH", "adjoint") and not args and plain:
            return self._at(receiver, _ATOM) + ("ᴴ" if self.complex else "ᵀ"), _ATOM
        if name in _PROPERTY_METHODS and not args and plain:
            return f"{self._at(receiver, _ATOM)}.{_PROPERTY_METHODS[name]}", _ATOM
        if name in ("sym_size", "size") and len(args) == 1 and plain:
            return f"{self._at(receiver, _ATOM)}.shape[{self.show(args[0])[0]}]", _ATOM
        if name in ("sym_numel", "numel") and not args and plain:
            name = "numel"
        return self._function(name, [receiver, *args], keywords)

    def _function(self, name: str, args: list[ast.expr], keywords: list[str]) -> tuple[str, int]:
        shown = [self.show(a)[0] for a in args] + keywords
        return f"{name}({', '.join(shown)})", _ATOM


def _without_symint(name: str) -> str:
    """The name without torch's symbolic-int spelling: `expand_symint` → `expand`."""
    return name.removesuffix("_symint")


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    raise _Unreadable("call of an expression")


# C++ namespaces and classes left after `at::`, `c10::`, `std::` are dropped.
_NAMESPACES = frozenset({"native", "GradMode", "MemoryFormat", "sparse_csr", "Reduction", "SymInt"})


def _is_namespace(node: ast.expr) -> bool:
    """`native.foo(...)`, `GradMode.is_enabled()`: a qualified function, not a method."""
    return isinstance(node, ast.Name) and node.id in _NAMESPACES


def _is_one(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and type(node.value) in (int, float) and node.value == 1


class _Substitute(ast.NodeTransformer):
    """Replaces the placeholders `_0`, `_1` … of a helper template by call arguments."""

    def __init__(self, args: list[ast.expr]) -> None:
        self.args = args

    def visit_Name(self, node: ast.Name) -> ast.expr:
        placeholder = re.fullmatch(r"_(\d+)", node.id)
        return self.args[int(placeholder[1])] if placeholder else node


def _identifiers(text: str, first: str) -> list[str]:
    """The names in `text`, `first` first, each once, in order of appearance."""
    names = [first, *re.findall(r"[A-Za-z_][A-Za-z_0-9]*", text)]
    return list(dict.fromkeys(names))


# ---------------------------------------------------------------------------------------
# Slot layout


def _list_inputs(entry: Mapping[str, Any]) -> list[str]:
    return [arg["name"] for arg in entry["inputs"] if arg["list"]]


def _list_lengths(entry: Mapping[str, Any], n_slots: int | None) -> dict[str, int] | None:
    """The length of each list input given the node's slot count; None if it cannot be told.

    Lists of one op share a length (torch's `_foreach_*` ops) or there is one list (`cat`);
    several lists of unrelated lengths (cudnn's RNN) cannot be laid out from a count.
    """
    lists = _list_inputs(entry)
    fixed = len(entry["inputs"]) - len(lists)
    if n_slots is None:
        return {} if not lists else None
    if not lists:
        return {} if n_slots == fixed else None
    if (len(lists) > 1 and fixed) or (n_slots - fixed) % len(lists) or n_slots < fixed:
        return None
    return dict.fromkeys(lists, (n_slots - fixed) // len(lists))


# ---------------------------------------------------------------------------------------
# Loading: memory, then the disk cache, then torchgen

_loaded: dict[str, dict[str, Any]] | None = None


def _table() -> dict[str, dict[str, Any]]:
    """op → {"function", "schema", "inputs": [{"name", "list"}], "formulas": [...], "exposed"}."""
    global _loaded
    if _loaded is None:
        _loaded = _load()
    return _loaded


def _derivatives_yaml() -> Path | None:
    """derivatives.yaml in the installed torchgen, found without importing torchgen."""
    spec = importlib.util.find_spec("torchgen")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "packaged/autograd/derivatives.yaml"
    return path if path.is_file() else None


def _torch_version() -> str:
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def cache_path() -> Path:
    """The disk cache of the current torch version (it may not exist yet)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    version = re.sub(r"[^A-Za-z0-9.+_-]", "_", _torch_version())
    return Path(base) / "tracer" / f"derivatives-torch-{version}.json"


def _load() -> dict[str, dict[str, Any]]:
    yaml_path = _derivatives_yaml()
    if yaml_path is None:
        warn("tracer.derivatives.formulas: torchgen's derivatives.yaml not found", stacklevel=3)
        return {}
    stat = yaml_path.stat()
    key = {
        "format": CACHE_FORMAT,
        "torch": _torch_version(),
        "yaml": str(yaml_path),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
    }
    path = cache_path()
    cached = _read_cache(path, key)
    if cached is not None:
        return cached
    try:
        table = _load_from_torchgen(yaml_path)
    except Exception as error:  # torchgen is internal to torch: any change may break this
        warn(f"tracer.derivatives.formulas: cannot load torchgen's table: {error!r}", stacklevel=3)
        return {}
    _write_cache(path, key, table)
    return table


def _read_cache(path: Path, key: Mapping[str, Any]) -> dict[str, dict[str, Any]] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (
        not isinstance(data, dict)
        or data.get("key") != key
        or not isinstance(data.get("ops"), dict)
    ):
        return None
    return data["ops"]


def _write_cache(path: Path, key: Mapping[str, Any], table: Mapping[str, Any]) -> None:
    """Write the cache atomically (tracer.files); a cache that cannot be written is skipped."""
    data = json.dumps({"key": key, "ops": table}, ensure_ascii=False).encode("utf-8")
    try:
        write_atomic(make_folder(path.parent) / path.name, data)
    except TracerError:
        return


def _name(name: Any) -> str:
    """A torchgen name: a str, or a SpecialArgName enum member."""
    return name if isinstance(name, str) else str(name.name)


def _load_from_torchgen(yaml_path: Path) -> dict[str, dict[str, Any]]:
    """Read derivatives.yaml with torchgen's loader (the one torch's build uses)."""
    from torchgen.packaged.autograd import gen_autograd_functions
    from torchgen.packaged.autograd.load_derivatives import load_derivatives

    native = yaml_path.parent.parent / "ATen" / "native"
    infos, _ = load_derivatives(
        str(yaml_path), str(native / "native_functions.yaml"), str(native / "tags.yaml")
    )
    table: dict[str, dict[str, Any]] = {}
    for per_dispatch_key in infos.values():
        for info in per_dispatch_key.values():
            if info.op is None:  # no differentiable input: no node class
                continue
            # The node's Python getters, as torch's build generates them: exactly the
            # `_saved_*` attributes the compiled class has.
            getters = gen_autograd_functions.process_function(
                info, gen_autograd_functions.PY_FUNCTION_PROPS_AND_GETTERS
            )
            table[info.op] = {
                "function": info.name,
                "schema": str(info.func.func),
                "inputs": [
                    {"name": arg.name, "list": "TensorList" in arg.type}
                    for arg in info.args_with_derivatives
                ],
                "formulas": [
                    {
                        "names": list(derivative.var_names),
                        "source": derivative.original_formula,
                        "saved": [
                            _name(attribute.nctype.name)
                            for attribute in (*derivative.saved_inputs, *derivative.saved_outputs)
                        ],
                    }
                    for derivative in info.derivatives
                ],
                "exposed": sorted(set(re.findall(r'"_saved_(\w+)"', getters))),
            }
    return table
