"""tracer.derivatives.formulas: torch's derivatives table, mapped onto real grad_fn nodes."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import overload

import pytest
import torch
import torch.nn.functional as F
from torch.autograd.graph import Node

from tracer.derivatives import formulas
from tracer.derivatives.formulas import explain, formula_for, readable, slot_names

# The C++ types of saved values that get no Python getter (gen_autograd_functions.py):
# kept on the node in C++ only, so never a `_saved_*` attribute.
GETTERLESS_TYPES = {
    "at::ScalarType",
    "::std::vector<at::ScalarType>",
    "at::TensorOptions",
    "at::Layout",
    "at::TensorGeometry",
    "torch::autograd::generated::TypeAndSize",
    "::std::vector<::std::vector<int64_t>>",
    "::std::vector<::std::vector<c10::SymInt>>",
    "::std::optional<bool>",
}


@functools.cache
def saved_types() -> dict[tuple[str, str], str]:
    """(op, saved name) → C++ type, straight from torchgen (the tests may import it)."""
    import torchgen
    from torchgen.packaged.autograd.load_derivatives import load_derivatives

    root = Path(torchgen.__file__).parent / "packaged"
    infos, _ = load_derivatives(
        str(root / "autograd/derivatives.yaml"),
        str(root / "ATen/native/native_functions.yaml"),
        str(root / "ATen/native/tags.yaml"),
    )
    return {
        (info.op, str(getattr(a.nctype.name, "name", a.nctype.name))): a.nctype.type.cpp_type()
        for per_key in infos.values()
        for info in per_key.values()
        if info.op
        for a in (*info.all_saved_inputs, *info.all_saved_outputs)
    }


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The table loads (and caches) in a temporary folder, not the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg")))
        patch.setattr(formulas, "_loaded", None)
        yield


@pytest.fixture
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache folder and no table in memory."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(formulas, "_loaded", None)
    return tmp_path


def shown(op: str) -> tuple[str, ...]:
    node = formula_for(op)
    assert node is not None, op
    return tuple(i.formula for i in node.inputs)


# --- known formulas ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "names", "expected"),
    [
        ("SinBackward0", ("self",), ("grad · cos(self)",)),
        ("CosBackward0", ("self",), ("grad · -sin(self)",)),
        ("DotBackward0", ("self", "tensor"), ("grad · tensor", "grad · self")),
        ("MvBackward0", ("self", "vec"), ("grad ⊗ vec", "selfᵀ @ grad")),
        ("MmBackward0", ("self", "mat2"), ("grad @ mat2ᵀ", "selfᵀ @ grad")),
        (
            "AddmmBackward0",
            ("self", "mat1", "mat2"),
            ("grad · beta", "grad @ mat2ᵀ · alpha", "mat1ᵀ @ grad · alpha"),
        ),
        ("MulBackward0", ("self", "other"), ("grad · other", "grad · self")),
        ("DivBackward0", ("self", "other"), ("grad / other", "-grad · (self / other) / other")),
        ("AddBackward0", ("self", "other"), ("grad", "grad · alpha")),
        ("SubBackward0", ("self", "other"), ("grad", "-grad · alpha")),
        ("LogBackward0", ("self",), ("grad / self",)),
        ("ExpBackward0", ("self",), ("grad · result",)),
        ("TanhBackward0", ("self",), ("grad · (1 - result²)",)),
        ("SigmoidBackward0", ("self",), ("grad · result · (1 - result)",)),
        ("SqrtBackward0", ("self",), ("grad / (2 · result)",)),
        ("ReluBackward0", ("self",), ("grad · (result > 0)",)),
        ("PowBackward0", ("self",), ("grad · exponent · self^(exponent - 1)",)),
        ("SumBackward0", ("self",), ("expand(grad, self.shape)",)),
        ("SqueezeBackward4", ("self",), ("unsqueeze_to(grad, dim, self.shape)",)),
        ("TBackward0", ("self",), ("gradᵀ",)),
        (
            "WhereBackward0",
            ("self", "other"),
            ("where(condition, grad, 0)", "where(condition, 0, grad)"),
        ),
        (
            "NllLossBackward0",
            ("self",),
            (
                "nll_loss_backward(grad, self, target, weight, reduction, ignore_index, "
                "total_weight)",
            ),
        ),
    ],
)
def test_known_formulas(op: str, names: tuple[str, ...], expected: tuple[str, ...]) -> None:
    assert slot_names(op) == names
    assert shown(op) == expected


def test_node_formula_fields() -> None:
    node = formula_for("MulBackward0")
    assert node is not None
    assert (node.op, node.function_name) == ("MulBackward0", "mul")
    assert node.schema == "mul.Tensor(Tensor self, Tensor other) -> Tensor"
    assert set(node.saved) == {"self", "other"}  # the scalar types are kept in C++ only
    first = node.inputs[0]
    assert (first.slot, first.name) == (0, "self")
    assert first.source == "mul_tensor_backward(grad, other, self.scalar_type())"
    assert first.saved == ("self_scalar_type", "other")
    assert (first.part, first.shared_with) == (None, ())
    # SqueezeBackward4 is the in-place squeeze_.dim: torchgen numbers the classes of one
    # prefix in the order of derivatives.yaml, in-place variants included.
    squeeze = formula_for("SqueezeBackward4")
    assert squeeze is not None
    assert squeeze.schema.startswith("squeeze_.dim(")
    assert squeeze.inputs[0].saved == ("self_sym_sizes", "dim")


def test_explain_lines_and_bindings() -> None:
    assert explain("SinBackward0", {"self": "z"}) == ["∂/∂self: grad · cos(self)   (self = z)"]
    assert explain("DotBackward0", {"self": "x", "tensor": "x"}) == [
        "∂/∂self: grad · tensor   (self = x, tensor = x)",
        "∂/∂tensor: grad · self   (tensor = x, self = x)",
    ]
    assert explain("AddBackward0") == ["∂/∂self: grad", "∂/∂other: grad · alpha"]
    assert explain("AccumulateGrad") is None


def test_combined_formula_is_shown_once_per_slot() -> None:
    node = formula_for("Atan2Backward0")
    assert node is not None
    assert [(i.name, i.part, i.shared_with) for i in node.inputs] == [
        ("self", 0, ("self", "other")),
        ("other", 1, ("self", "other")),
    ]
    assert node.inputs[0].formula == node.inputs[1].formula
    lines = explain("Atan2Backward0")
    assert lines is not None
    assert lines[1].endswith("[part 1 of one formula for self, other]")


def test_list_input_needs_the_slot_count() -> None:
    assert slot_names("CatBackward0") is None
    assert explain("CatBackward0") is None
    assert slot_names("CatBackward0", 3) == ("tensors[0]", "tensors[1]", "tensors[2]")
    assert slot_names("SinBackward0", 2) is None  # a count that does not fit: no guess
    node = formula_for("CatBackward0", 2)
    assert node is not None
    assert [i.part for i in node.inputs] == [0, 1]
    unlaid = formula_for("CatBackward0")  # the formula, without a layout
    assert unlaid is not None
    assert [(i.name, i.part) for i in unlaid.inputs] == [("tensors", None)]
    # several lists of one length (torch._foreach_*): element i of each list in turn
    assert slot_names("ForeachDivBackward0", 4) == ("self[0]", "self[1]", "other[0]", "other[1]")
    assert slot_names("ForeachDivBackward0", 3) is None


def test_no_formula_for_nodes_outside_the_table() -> None:
    class Double(torch.autograd.Function):
        @staticmethod
        def forward(ctx: object, x: torch.Tensor) -> torch.Tensor:
            return 2 * x

        @staticmethod
        def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
            return 2 * grad

    x = torch.ones(2, requires_grad=True)
    custom = Double.apply(x).grad_fn
    sin = x.sin().grad_fn
    assert sin is not None
    leaf = sin.next_functions[0][0]
    for fn in (custom, leaf):
        name = type(fn).__name__
        assert formula_for(name) is None, name
        assert slot_names(name) is None and explain(name) is None
    assert formula_for("NoSuchBackward0") is None


# --- readability ---------------------------------------------------------------------


def test_readable_rewrites() -> None:
    assert readable("grad * self.cos().conj()") == "grad · cos(self)"
    assert readable("grad * self.cos().conj()", complex=True) == "grad · conj(cos(self))"
    assert readable("handle_r_to_c(self.scalar_type(), grad / (1 + self))") == "grad / (1 + self)"
    assert readable("self.conj().t().mv(grad)") == "selfᵀ @ grad"
    assert readable("grad.ger(vec.conj())") == "grad ⊗ vec"
    assert readable("at::sum_to(grad, self.sym_sizes())") == "sum_to(grad, self.shape)"
    assert readable("grad.expand_symint(self.sym_sizes()) / self.sym_numel()") == (
        "expand(grad, self.shape) / numel(self)"
    )
    assert (
        readable("std::get<0>(at::_unique(index, /*sorted=*/false))") == "_unique(index, False)[0]"
    )
    assert readable("(grad * self).sum(-1, true)") == "sum(grad · self, -1, True)"
    # another overload of a spelled-out helper keeps its name: with a rounding mode,
    # div's gradient is zero, not grad / other
    assert readable("div_tensor_self_backward(grad, other, self.scalar_type(), rounding_mode)") == (
        "div_tensor_self_backward(grad, other, self.dtype, rounding_mode)"
    )
    # A C++ ternary stays verbatim, less namespaces and .conj()
    assert readable("accumulate ? grad : at::zeros_like(self.conj())") == (
        "accumulate ? grad : zeros_like(self)"
    )


def test_every_formula_reads_without_conj_or_namespaces() -> None:
    for op in formulas._table():
        node = formula_for(op)
        assert node is not None, op
        for entry in node.inputs:
            assert entry.formula, op
            assert ".conj()" not in entry.formula, (op, entry.formula)
            assert "::" not in entry.formula, (op, entry.formula)


# --- the mapping onto real nodes -----------------------------------------------------


def test_table_matches_torchs_classes() -> None:
    """Every class torchgen names exists in torch, with exactly the `_saved_*` we list."""
    table = formulas._table()
    assert len(table) > 500
    for op in table:
        cls = getattr(torch._C._functions, op, None)
        assert cls is not None, op
        exposed = {a.removeprefix("_saved_") for a in dir(cls) if a.startswith("_saved_")}
        node = formula_for(op)
        assert node is not None
        assert set(node.saved) == exposed, op
        used = {name for entry in node.inputs for name in entry.saved}
        assert exposed <= used, op  # the node keeps nothing its formulas do not read
        for name in used - exposed:
            assert saved_types()[op, name] in GETTERLESS_TYPES, (op, name)


Shape = tuple[int, ...]


# One overload per count, so that the tuple's length is known where it is unpacked into a
# torch function of fixed arity (`F.conv2d(*leaves(a, b, c))`).
@overload
def leaves(a: Shape, /) -> tuple[torch.Tensor]: ...
@overload
def leaves(a: Shape, b: Shape, /) -> tuple[torch.Tensor, torch.Tensor]: ...
@overload
def leaves(a: Shape, b: Shape, c: Shape, /) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...
@overload
def leaves(
    a: Shape, b: Shape, c: Shape, d: Shape, /
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]: ...
def leaves(*shapes: Shape) -> tuple[torch.Tensor, ...]:
    """Distinct seeded float64 leaves, so a saved tensor tells which input it is."""
    gen = torch.Generator().manual_seed(len(shapes))
    return tuple(
        torch.randn(shape, generator=gen, dtype=torch.float64).requires_grad_() for shape in shapes
    )


# Built in steps (a lambda called on `*leaves(...)` at once is typed wrongly by mypy).
def _pow_tensor() -> torch.Tensor:
    a, b = leaves((3,), (3,))
    return a.exp() ** b


def _foreach_div() -> torch.Tensor:
    a, b, c, d = leaves((2,), (2,), (2,), (2,))
    return torch._foreach_div([a, b], [c, d])[0]


def _set_item() -> torch.Tensor:
    y = leaves((3,))[0].clone()
    y[0] = 5.0
    return y


def _extra_outputs() -> dict[str, Callable[[], torch.Tensor]]:
    index = torch.tensor([0, 2])
    target = torch.tensor([0, 2, 1])
    mask = torch.tensor([True, False, True])
    return {
        "matmul": lambda: torch.matmul(*leaves((2, 3), (3, 4))),
        "matmul batched": lambda: torch.matmul(*leaves((2, 2, 3), (3, 4))),
        "mv": lambda: torch.mv(*leaves((2, 3), (3,))),
        "dot": lambda: torch.dot(*leaves((3,), (3,))),
        "linear": lambda: F.linear(*leaves((5, 3), (4, 3), (4,))),
        "conv2d": lambda: F.conv2d(*leaves((1, 2, 5, 5), (3, 2, 3, 3), (3,))),
        "relu": lambda: F.relu(*leaves((4,))),
        "softmax": lambda: F.softmax(*leaves((2, 3)), dim=1),
        "log_softmax": lambda: F.log_softmax(*leaves((2, 3)), dim=1),
        "nll_loss": lambda: F.nll_loss(F.log_softmax(*leaves((3, 4)), dim=1), target),
        "cross_entropy": lambda: F.cross_entropy(*leaves((3, 4)), target),
        "layer_norm": lambda: F.layer_norm(leaves((2, 4))[0], (4,), *leaves((4,), (4,))),
        "layer_norm plain": lambda: F.layer_norm(*leaves((2, 4)), (4,)),
        "batch_norm eval": lambda: F.batch_norm(
            *leaves((3, 2)),
            torch.zeros(2, dtype=torch.float64),
            torch.ones(2, dtype=torch.float64),
            *leaves((2,), (2,)),
        ),
        "embedding": lambda: F.embedding(index, *leaves((3, 2))),
        "dropout eval": lambda: F.dropout(2 * leaves((3,))[0], p=0.5, training=False),
        "max_pool2d": lambda: F.max_pool2d(*leaves((1, 1, 4, 4)), 2),
        "mse_loss": lambda: F.mse_loss(*leaves((3,), (3,))),
        "index": lambda: leaves((5,))[0][index],
        "mask index": lambda: leaves((3,))[0][mask],
        "slice and select": lambda: leaves((4, 3))[0][1:3][0],
        "where": lambda: torch.where(mask, *leaves((3,), (3,))),
        "abs": lambda: leaves((3,))[0].abs(),
        "sgn": lambda: leaves((3,))[0].sgn(),
        "pow scalar": lambda: leaves((3,))[0] ** 2,
        "pow tensor": _pow_tensor,
        "rpow": lambda: 2 ** leaves((3,))[0],
        "div": lambda: torch.div(*leaves((3,), (3,))),
        "div scalar": lambda: leaves((3,))[0] / 2,
        "sqrt": lambda: leaves((3,))[0].exp().sqrt(),
        "add alpha": lambda: torch.add(*leaves((3,), (3,)), alpha=3),
        "sub alpha": lambda: torch.sub(*leaves((3,), (3,)), alpha=2),
        "rsub": lambda: 1 - leaves((3,))[0],
        "addmm": lambda: torch.addmm(*leaves((2, 4), (2, 3), (3, 4)), beta=0.5, alpha=2),
        "mul": lambda: torch.mul(*leaves((3,), (3,))),
        "mul scalar": lambda: 3 * leaves((3,))[0],
        "cat": lambda: torch.cat(leaves((2,), (3,), (1,))),
        "stack": lambda: torch.stack(leaves((2,), (2,))),
        "foreach div": _foreach_div,
        "transpose": lambda: leaves((2, 3))[0].transpose(0, 1),
        "t": lambda: leaves((2, 3))[0].t(),
        "view": lambda: leaves((6,))[0].view(2, 3),
        "reshape": lambda: leaves((2, 3))[0].t().reshape(6),
        "expand": lambda: leaves((1, 3))[0].expand(2, 3),
        "permute": lambda: leaves((2, 3, 4))[0].permute(2, 0, 1),
        "squeeze": lambda: leaves((1, 3))[0].squeeze(0).unsqueeze(1),
        "squeeze_": lambda: leaves((1, 3))[0].clone().squeeze_(0),
        "sum": lambda: leaves((2, 3))[0].sum(),
        "sum dim": lambda: leaves((2, 3))[0].sum(1),
        "mean": lambda: leaves((2, 3))[0].mean() + leaves((2, 3))[0].mean(0).sum(),
        "elementwise": lambda: leaves((3,))[0].sin().cos().tanh().sigmoid().exp().log(),
        "neg clamp maximum": lambda: torch.maximum(
            -leaves((3,))[0].clamp(-0.5, 0.5), *leaves((3,))
        ),
        "norm": lambda: torch.linalg.vector_norm(*leaves((3,))),
        "in-place": lambda: leaves((3,))[0].clone().mul_(2).add_(1),
        "set item": _set_item,
        "gelu": lambda: F.gelu(*leaves((3,))),
    }


def _nodes(output: torch.Tensor) -> Iterator[Node]:
    seen: set[Node] = set()
    queue = deque([output.grad_fn])
    while queue:
        fn = queue.popleft()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        yield fn
        queue.extend(next_fn for next_fn, _ in fn.next_functions)


WITHOUT_FORMULA = {"AccumulateGrad", "CopySlices"}  # made by autograd itself, not derivatives.yaml


def check_real_node(fn: Node) -> str:
    """The formula of `fn` fits it: slot count, saved attributes, and each slot's input."""
    op = type(fn).__name__
    n_slots = len(fn.next_functions)
    if op in WITHOUT_FORMULA:
        assert formula_for(op, n_slots) is None
        return op
    node = formula_for(op, n_slots)
    assert node is not None, op
    names = slot_names(op, n_slots)
    assert names is not None and len(names) == n_slots, (op, names, n_slots)
    exposed = {a.removeprefix("_saved_") for a in dir(fn) if a.startswith("_saved_")}
    assert set(node.saved) == exposed, op
    for entry in node.inputs:
        for name in set(entry.saved) - exposed:
            assert saved_types()[op, name] in GETTERLESS_TYPES, (op, name)
    # Slot i is the input the i-th formula differentiates: where the input is a leaf the
    # node saved, the saved tensor is that slot's leaf.
    for (next_fn, _), name in zip(fn.next_functions, names, strict=True):
        base, _, element = name.partition("[")
        if type(next_fn).__name__ != "AccumulateGrad" or base not in exposed:
            continue
        saved = getattr(fn, f"_saved_{base}")
        if element:
            saved = saved[int(element.rstrip("]"))]
        variable = next_fn.variable  # type: ignore[union-attr]  # AccumulateGrad's own
        if isinstance(saved, torch.Tensor) and saved.shape == variable.shape:
            assert torch.equal(saved, variable), (op, name)
    return op


def test_every_real_node_fits_its_formula() -> None:
    met: set[str] = set()
    for label, make in _extra_outputs().items():
        for fn in _nodes(make()):
            try:
                met.add(check_real_node(fn))
            except AssertionError as error:
                raise AssertionError(f"{label}: {error}") from error
    # The ops the task names were all met (so the check above is not vacuous).
    for op in (
        "MmBackward0",
        "AddmmBackward0",
        "ConvolutionBackward0",
        "NllLossBackward0",
        "NativeLayerNormBackward0",
        "EmbeddingBackward0",
        "IndexBackward0",
        "WhereBackward0",
        "CatBackward0",
        "StackBackward0",
        "ForeachDivBackward0",
        "CopySlices",
    ):
        assert op in met, op


def test_every_exercise_node_has_a_fitting_formula() -> None:
    from tracer.exercises import all_exercises

    met = set()
    for exercise in all_exercises():
        for graph in exercise.run().graphs:
            for node in graph.nodes:
                if node.kind != "op" or node.op in WITHOUT_FORMULA:
                    continue
                formula = formula_for(node.op)
                assert formula is not None, (exercise.slug, node.op)
                # The capture keeps `_saved_<name>` less the `_sym_` ones (and None values).
                kept = {s for s in formula.saved if "_sym_" not in s}
                assert {s.name for s in node.saved} <= kept, (exercise.slug, node.op)
                met.add(node.op)
    assert {"DotBackward0", "LogBackward0", "SqueezeBackward4"} <= met


@pytest.mark.parametrize(
    ("label", "build", "op", "names"),
    [
        ("dot", lambda c, y: torch.dot(c, y), "DotBackward0", ("self", "tensor")),
        ("mv", lambda c, y: torch.mv(c.expand(3, 3), y), "MvBackward0", ("self", "vec")),
        ("mul", lambda c, y: c * y, "MulBackward0", ("self", "other")),
        ("add", lambda c, y: torch.add(c, y, alpha=2), "AddBackward0", ("self", "other")),
        ("sub", lambda c, y: torch.sub(c, y, alpha=2), "SubBackward0", ("self", "other")),
        ("where", lambda c, y: torch.where(c > 0, c, y), "WhereBackward0", ("self", "other")),
        (
            "addmm",
            lambda c, y: torch.addmm(c, c.view(3, 1), y.view(1, 3)),
            "AddmmBackward0",
            ("self", "mat1", "mat2"),
        ),
        ("cat", lambda c, y: torch.cat([c, y]), "CatBackward0", ("tensors[0]", "tensors[1]")),
        ("stack", lambda c, y: torch.stack([c, y]), "StackBackward0", ("tensors[0]", "tensors[1]")),
    ],
)
def test_a_constant_input_keeps_its_slot(
    label: str, build: Callable[..., torch.Tensor], op: str, names: tuple[str, ...]
) -> None:
    """Only the last input needs a gradient: the other slots stay, empty (None)."""
    constant = torch.arange(1.0, 4.0, dtype=torch.float64)
    y = torch.arange(4.0, 7.0, dtype=torch.float64, requires_grad=True)
    fn = build(constant, y).grad_fn
    assert fn is not None and type(fn).__name__ == op
    n_slots = len(fn.next_functions)
    assert slot_names(op, n_slots) == names
    assert [next_fn is None for next_fn, _ in fn.next_functions] == [True] * (n_slots - 1) + [False]
    last = fn.next_functions[-1][0]
    assert getattr(last, "variable", y) is y  # y itself, or a view of it (addmm's mat2)


# --- loading and the disk cache ------------------------------------------------------


def test_disk_cache_round_trip(fresh_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = formulas._table()
    path = formulas.cache_path()
    assert path.parent == fresh_cache / "tracer"
    assert torch.__version__.split("+")[0] in path.name
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["key"]["torch"] and data["key"]["size"] > 0 and "mtime_ns" in data["key"]
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left

    def no_torchgen(yaml_path: Path) -> dict:
        raise AssertionError("read torchgen although the cache is there")

    monkeypatch.setattr(formulas, "_load_from_torchgen", no_torchgen)
    monkeypatch.setattr(formulas, "_loaded", None)
    assert formulas._table() == loaded


@pytest.mark.parametrize("damage", ["garbage", "stale key", "wrong shape"])
def test_damaged_cache_falls_back_to_torchgen(fresh_cache: Path, damage: str) -> None:
    formulas._table()
    path = formulas.cache_path()
    good = json.loads(path.read_text(encoding="utf-8"))
    if damage == "garbage":
        path.write_text("{not json", encoding="utf-8")
    elif damage == "stale key":
        path.write_text(json.dumps({**good, "key": {**good["key"], "size": 1}}), encoding="utf-8")
    else:
        path.write_text(json.dumps({"key": good["key"], "ops": []}), encoding="utf-8")
    formulas._loaded = None
    assert shown("SinBackward0") == ("grad · cos(self)",)
    assert json.loads(path.read_text(encoding="utf-8")) == good  # rewritten


def test_unwritable_cache_still_loads(fresh_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = fresh_cache / "file"
    blocker.write_text("", encoding="utf-8")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # a file: no folder can go under it
    assert shown("SinBackward0") == ("grad · cos(self)",)


def test_cached_path_does_not_load_torchgens_loader(fresh_cache: Path) -> None:
    formulas._table()  # writes the cache
    script = (
        "import sys, tracer.derivatives.formulas as f\n"
        "assert 'tracer.derivatives.formulas' in sys.modules and f._loaded is None\n"
        "print(f.explain('SinBackward0'))\n"
        "loader = [m for m in sys.modules if m.startswith('torchgen.packaged') or m == 'yaml']\n"
        "print(loader)\n"
    )
    env = {**os.environ, "XDG_CACHE_HOME": str(fresh_cache)}
    env["PYTHONPATH"] = str(Path(__file__).parent.parent)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    )
    assert result.stdout.splitlines() == ["['∂/∂self: grad · cos(self)']", "[]"]


def test_module_docstring_example_runs() -> None:
    import doctest

    result = doctest.testmod(formulas, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 4 and result.failed == 0
