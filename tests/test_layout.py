"""The house: imports run one way, down the layers the package docstring names, with no
cycle between modules. Every import counts: at the top, inside functions and under
TYPE_CHECKING."""

from __future__ import annotations

import ast
from pathlib import Path

import tracer

PACKAGE = Path(tracer.__file__).parent
# The layers, lowest first, as tracer's docstring states them.
LAYERS = [
    "errors",
    "files",
    "model",
    "derivatives",
    "view",
    "output",
    "record",
    "checks",
    "session",
    "run",
    "exercises",
    "gallery",
    "cli",
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports_of(path: Path) -> set[str]:
    """The tracer modules `path` imports, wherever the import statement stands."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    return imports_in(path.read_text(encoding="utf-8"), name, package)


def imports_in(source_text: str, name: str, package: str) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(source_text)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "tracer")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            if source.split(".")[0] != "tracer":
                continue
            for alias in node.names:  # `from tracer.view import text` imports a module
                child = f"{source}.{alias.name}"
                found.add(child if _is_module(child) else source)
    found.discard(name)
    return found


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int | None:
    """The index of the module's layer; None for the package itself (the public facade)."""
    parts = module.split(".")
    return None if len(parts) == 1 else LAYERS.index(parts[1])


def test_every_module_is_in_a_named_layer() -> None:
    for module in graph():
        parts = module.split(".")
        assert len(parts) == 1 or parts[1] in LAYERS, f"{module} is in no layer"


def test_the_package_docstring_names_the_layers_in_order() -> None:
    doc = tracer.__doc__ or ""
    positions = [doc.find(f"`{layer}`") for layer in LAYERS]
    assert -1 not in positions, "every layer is named in tracer's docstring"
    assert positions == sorted(positions), "in order, lowest first"


def test_imports_run_down_the_layers() -> None:
    upward = []
    for module, imported in graph().items():
        here = layer_of(module)
        for target in imported:
            there = layer_of(target)
            if there is None:
                if here is not None:
                    upward.append(f"{module} -> {target} (the facade is for users)")
            elif here is not None and there > here:
                upward.append(f"{module} -> {target}")
    assert upward == []


def test_no_module_imports_itself_back() -> None:
    edges = graph()
    cycles = []
    state: dict[str, int] = {}  # 1: on the path being walked, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(edges.get(module, ())):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module)
    assert cycles == []


def test_the_checker_finds_imports_inside_functions_and_type_checking() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from tracer.session import Trace\n"
        "def f():\n    from tracer.view import text\n    from . import tensor\n"
    )
    found = imports_in(source, "tracer.model.probe", "tracer.model")
    assert found == {"tracer.session", "tracer.view.text", "tracer.model.tensor"}
