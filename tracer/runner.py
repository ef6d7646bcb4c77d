"""Trace the user's own code: a script (`trace run`) or a notebook's code cells (`trace notebook`).

The code is executed in this process, unchanged, exactly as `python script.py` (or a fresh
"Run All" in Jupyter) would execute it: it can do anything a script can. While it runs, a
`tracer.trace()` block records every backward pass (`backward()`, `torch.autograd.backward`,
`torch.autograd.grad`), and each pass becomes one picture, with the comparisons the code
made after it: `tracer.check(...)` calls, and `torch.allclose(...)` calls that involve a
gradient (a leaf's `.grad`, or a result of `torch.autograd.grad`).

The trace (`tracer.session.Trace`) notes where each backward call was made and which pass
each comparison came after; `passes` splits its recording into one `Pass` per backward call
(also for the Jupyter `%%trace` magic). `run_script`, `run_notebook`, `write_pictures` and
`summary_table` are what the CLI calls.
"""

from __future__ import annotations

import ast
import json
import linecache
import os
import re
import runpy
import sys
import sysconfig
import types
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from tracer.capture import DEFAULT_MAX_VALUES
from tracer.errors import TracerError
from tracer.graph import Check, Recording
from tracer.render import FORMATS, RenderOptions, write
from tracer.session import Trace

PICTURE_FORMATS = ("svg", "png", "pdf", "dot", "json", "html")

_FREED_GRAPH = "Trying to backward through the graph a second time"
_CELL_FILE = re.compile(r"^<cell (\d+)>$")


# -- where code is -----------------------------------------------------------------------


@dataclass(frozen=True)
class Location:
    """A line of the user's code: `file` is a path as shown to the user, or "cell 3"."""

    file: str
    line: int
    cell: int | None = None  # the notebook's code cell (1-based), when in a notebook
    main: bool = True  # in the script or notebook itself (not a module it imported)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"

    def spoken(self) -> str:
        """For messages: "cell 3, line 5" or "lecture.py:12"."""
        return f"cell {self.cell}, line {self.line}" if self.cell else str(self)

    def slug(self) -> str:
        """For file names: "cell3-line5", "line12", or "helper-line7" in another module."""
        if self.cell:
            return f"cell{self.cell}-line{self.line}"
        if self.main:
            return f"line{self.line}"
        stem = re.sub(r"[^A-Za-z0-9_]+", "_", Path(self.file).stem) or "code"
        return f"{stem}-line{self.line}"


class Locator:
    """Turns a code object's file name into a `Location` the user recognises."""

    def __init__(self, main: str | Path | None = None, shown: str | None = None) -> None:
        self.main = None if main is None else os.path.abspath(main)
        self.shown = shown or (None if main is None else str(main))
        self.cwd = os.getcwd()

    def __call__(self, filename: str, line: int) -> Location:
        cell = _CELL_FILE.match(filename)
        if cell:
            return Location(f"cell {cell[1]}", line, cell=int(cell[1]))
        if filename.startswith("<"):
            return Location(filename, line, main=False)
        path = os.path.abspath(filename)
        if path == self.main:
            return Location(self.shown or filename, line)
        shown = os.path.relpath(path, self.cwd) if path.startswith(self.cwd + os.sep) else path
        return Location(shown, line, main=False)


def _library_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    dirs = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    dirs.add(os.path.dirname(os.path.abspath(__file__)))  # tracer itself
    return tuple(os.path.abspath(d) + os.sep for d in dirs)


def _is_users(filename: str) -> bool:
    """Whether code in this file is the user's (not Python's, a library's, or ours)."""
    if _CELL_FILE.match(filename):
        return True
    if filename.startswith("<"):
        return False
    return not os.path.abspath(filename).startswith(_library_dirs())


def error_location(tb: TracebackType | None, locate: Locator) -> Location | None:
    """The innermost line of the user's code in a traceback."""
    found = None
    while tb is not None:
        if _is_users(tb.tb_frame.f_code.co_filename):
            found = locate(tb.tb_frame.f_code.co_filename, tb.tb_lineno)
        tb = tb.tb_next
    return found


def describe_error(error: BaseException, locate: Locator) -> str:
    """One line: where in the user's code, and what went wrong."""
    if isinstance(error, SyntaxError) and error.filename:
        where: Location | None = locate(error.filename, error.lineno or 0)
        return f"{where.spoken()}: SyntaxError: {error.msg}"
    where = error_location(error.__traceback__, locate)
    prefix = f"{where.spoken()}: " if where else ""
    if isinstance(error, KeyboardInterrupt):
        return f"{prefix}interrupted"
    if isinstance(error, SystemExit):
        return f"{prefix}the code called exit({error.code!r})"
    text = str(error).strip()
    if isinstance(error, RuntimeError) and _FREED_GRAPH in text:
        return (
            f"{prefix}backward through a graph that was already freed: the first backward() "
            "frees the graph's saved tensors; pass retain_graph=True to the earlier backward "
            "call to run backward through the same graph again"
        )
    first = text.splitlines()[0].strip() if text else ""
    return f"{prefix}{type(error).__name__}" + (f": {first}" if first else "")


# -- one picture per backward pass -------------------------------------------------------


@dataclass
class Pass:
    """One backward call: where the code made it, and its own Recording (its graph, the
    manual graphs captured after it, and the comparisons made after it)."""

    number: int
    location: Location | None
    recording: Recording

    @property
    def nodes(self) -> int:
        return len(self.recording.graphs[0].nodes)

    @property
    def passed(self) -> bool | None:
        return self.recording.passed

    def picture_name(self, fmt: str, width: int = 2) -> str:
        slug = self.location.slug() if self.location else "pass"
        return f"{self.number:0{width}d}-{slug}.{fmt}"


def passes(recording: Recording, locate: Locator | None = None) -> list[Pass]:
    """One Pass per backward call (see `Recording.per_pass`), titled with where it was made."""
    locate = locate or Locator()
    out: list[Pass] = []
    for number, part in enumerate(recording.per_pass(), start=1):
        source = part.graphs[0].source
        where = None if source is None else locate(*source)
        title = f"backward pass {number}" + (f" at {where}" if where else "")
        part.title = f"{part.title}: {title}" if part.title else title
        out.append(Pass(number, where, part))
    return out


def _verdict(check: Check) -> str:
    """How the comparison came out, and what made it: "✓ x (check)", "✗ w (allclose)"."""
    return f"{'✓' if check.passed else '✗'} {check.name} ({check.how})"


# -- running scripts and notebooks -------------------------------------------------------


@dataclass
class RunResult:
    """What running the user's code gave: the passes, and the error that stopped it."""

    source: Path
    passes: list[Pass]
    error: str | None = None  # one line; None when the code ran to its end
    stray_checks: int = 0  # comparisons made before any backward pass
    pictures: list[Path] = field(default_factory=list)
    older_pictures: list[Path] = field(default_factory=list)

    @property
    def passed(self) -> bool | None:
        verdicts = [p.passed for p in self.passes if p.passed is not None]
        return all(verdicts) if verdicts else None


def _require_file(path: Path, what: str) -> None:
    if not path.exists():
        raise TracerError(f"no such file: {path}")
    if path.is_dir():
        raise TracerError(f"{path} is a directory: give the {what} file")


@contextmanager
def _as_main(path: Path, argv: Sequence[str]) -> Iterator[None]:
    """sys.argv and sys.path[0] as `python path` would have them; restored after."""
    saved_argv, saved_path = sys.argv, list(sys.path)
    sys.argv = [str(path), *argv]
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    try:
        yield
    finally:
        sys.argv = saved_argv
        sys.path[:] = saved_path


def _run_traced(
    source: Path, locate: Locator, max_values: int, body: Callable[[], None]
) -> RunResult:
    error = None
    with Trace(max_values=max_values) as t:
        try:
            body()
        except SystemExit as e:
            if e.code not in (None, 0):
                error = describe_error(e, locate)
        except (Exception, KeyboardInterrupt) as e:
            error = e.args[0] if isinstance(e, _CellError) else describe_error(e, locate)
    stray = sum(c.after == 0 for c in t.recording.checks)
    return RunResult(source, passes(t.recording, locate), error, stray)


def run_script(
    path: str | Path, args: Sequence[str] = (), *, max_values: int = DEFAULT_MAX_VALUES
) -> RunResult:
    """Run a Python file as `python path *args` would, in this process, under a trace."""
    path = Path(path)
    _require_file(path, "script")
    if path.suffix == ".ipynb":
        raise TracerError(f"{path} is a notebook: use `trace notebook {path}`")
    locate = Locator(path)

    def body() -> None:
        with _as_main(path, args):
            runpy.run_path(str(path), run_name="__main__")

    return _run_traced(path, locate, max_values, body)


class _CellError(Exception):
    """A cell failed; args[0] is the one-line message (already located)."""


def read_notebook(path: str | Path) -> Any:
    """The notebook, read and validated by nbformat, or a TracerError saying what is wrong."""
    import nbformat

    path = Path(path)
    _require_file(path, "notebook")
    hint = f": to trace a script, use `trace run {path}`" if path.suffix == ".py" else ""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise TracerError(f"{path} is not a notebook: it is not UTF-8 text{hint}") from None
    except OSError as e:
        raise TracerError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise TracerError(
            f"{path} is not a notebook: invalid JSON at line {e.lineno}, column {e.colno} "
            f"({e.msg}){hint}"
        ) from None
    if not isinstance(raw, dict) or "cells" not in raw or "nbformat" not in raw:
        raise TracerError(f"{path} is not a notebook: JSON without notebook cells{hint}")
    try:
        nb = nbformat.reads(text, as_version=4)
        nbformat.validate(nb)
    except Exception as e:  # nbformat's errors are many kinds, with long messages
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise TracerError(f"{path} is not a valid notebook: {first}") from None
    return nb


# Cell magics whose body is plain Python that can simply be run.
_RUN_BODY = {"time", "trace"}
_SILENT = ("%load_ext tracer",)


def cell_code(source: str, number: int, warn: Callable[[str], None]) -> str | None:
    """The cell as plain Python (same line numbers), or None when the whole cell is skipped.

    IPython syntax is not Python: a `%%magic` cell is skipped (those that only time or
    trace their body are run); `%magic` and `!shell` lines are skipped, each with a
    warning naming the cell.
    """
    lines = source.splitlines()
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is not None and lines[first].lstrip().startswith("%%"):
        magic = lines[first].strip()[2:].split(maxsplit=1)
        if magic and magic[0] in _RUN_BODY:
            lines[first] = ""
        else:
            warn(f"cell {number}: skipped: `{lines[first].strip()}` is an IPython cell magic")
            return None
    code = "\n".join(lines)
    try:
        compile(code, f"<cell {number}>", "exec", dont_inherit=True)
        return code  # plain Python already; a `%` starting a line here is a modulo
    except SyntaxError:
        pass
    for i, line in enumerate(lines):
        stripped = line.lstrip()
        if stripped.startswith(("%", "!")):
            if not stripped.startswith(_SILENT):
                kind = "shell command" if stripped.startswith("!") else "IPython magic"
                warn(f"cell {number}, line {i + 1}: skipped {kind} `{stripped}`")
            lines[i] = line[: len(line) - len(stripped)] + "pass"
    return "\n".join(lines)


def _run_cell(code: str, number: int, namespace: dict[str, Any]) -> None:
    """Run a cell as Jupyter would: its last expression, if any, is shown (printed here)."""
    filename = f"<cell {number}>"
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    tree = ast.parse(code, filename)
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        stripped = [line.split("#")[0].rstrip() for line in code.splitlines() if line.strip()]
        if not (stripped and stripped[-1].endswith(";")):
            last = ast.Expression(tree.body.pop().value)
    exec(compile(tree, filename, "exec"), namespace)
    if last is not None:
        value = eval(compile(last, filename, "eval"), namespace)
        if value is not None:
            print(repr(value))


def run_notebook(
    path: str | Path,
    *,
    max_values: int = DEFAULT_MAX_VALUES,
    warn: Callable[[str], None] | None = None,
) -> RunResult:
    """Run a notebook's code cells in order, in one namespace, in this process.

    As in Jupyter, the code runs with the notebook's folder as the working directory, and
    `__name__ == "__main__"`. A cell that raises stops the run.
    """
    path = Path(path)
    nb = read_notebook(path)
    warn = warn or (lambda message: print(f"warning: {message}", file=sys.stderr))
    locate = Locator(path)
    module = types.ModuleType("__main__")

    def body() -> None:
        saved_main, saved_cwd = sys.modules.get("__main__"), os.getcwd()
        sys.modules["__main__"] = module
        try:
            with _as_main(path, ()):
                os.chdir(path.parent.resolve())
                number = 0
                for cell in nb.cells:
                    if cell.cell_type != "code":
                        continue
                    number += 1
                    code = cell_code(cell.source, number, warn)
                    if code is not None:
                        _run_one(code, number, module.__dict__, locate)
        finally:
            os.chdir(saved_cwd)
            if saved_main is not None:
                sys.modules["__main__"] = saved_main
            for name in [f for f in linecache.cache if _CELL_FILE.match(f)]:
                del linecache.cache[name]

    return _run_traced(path, locate, max_values, body)


def _run_one(code: str, number: int, namespace: dict[str, Any], locate: Locator) -> None:
    try:
        _run_cell(code, number, namespace)
        return
    except SystemExit as e:
        if e.code in (None, 0):
            raise  # ends the run normally, as it ends a script
        error: BaseException = e
    except (Exception, KeyboardInterrupt) as e:
        error = e
    message = describe_error(error, locate)
    if not message.startswith(f"cell {number}"):
        message = f"cell {number}: {message}"  # raised outside the cell's own lines
    raise _CellError(message) from error


# -- pictures and the summary ------------------------------------------------------------


def check_out_dir(out: Path, fmt: str) -> None:
    """Fail early, before running any code, when pictures could not be written to `out`."""
    if fmt not in PICTURE_FORMATS:
        raise TracerError(
            f"unsupported picture format '{fmt}': use one of " + ", ".join(PICTURE_FORMATS)
        )
    assert fmt in FORMATS
    if out.exists():
        if not out.is_dir():
            raise TracerError(f"--out {out} is a file: give a folder for the pictures")
        if not os.access(out, os.W_OK):
            raise TracerError(f"cannot write to {out}: permission denied")
        return
    if out.suffix.lower().lstrip(".") in FORMATS:
        raise TracerError(
            f"--out {out} looks like a file name: give a folder; the pictures in it are "
            f"named by backward call (01-line12.{fmt}, ...)"
        )
    parent = out.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise TracerError(f"cannot create {out}: {parent} is not writable")


def write_pictures(
    result: RunResult, out: Path, fmt: str = "svg", options: RenderOptions | None = None
) -> list[Path]:
    """Write one picture per backward pass into `out`; returns their paths in order."""
    if not result.passes:
        return []
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TracerError(f"cannot create {out}: {e.strerror or e}") from None
    width = max(2, len(str(len(result.passes))))
    written = [write(p.recording, out / p.picture_name(fmt, width), options) for p in result.passes]
    result.pictures = written
    names = {p.name for p in written}
    pattern = re.compile(r"^\d{2,}-(?:[\w-]*line\d+|pass)\.\w+$")
    result.older_pictures = sorted(
        p for p in out.iterdir() if pattern.match(p.name) and p.name not in names
    )
    return written


def summary_table(result: RunResult) -> Any:
    """A rich Table: each backward call, where it was made, its size, and the verdicts."""
    from rich.table import Table

    table = Table(title=f"Backward passes in {result.source}")
    for column in ("#", "called at", "nodes", "comparisons", "picture"):
        table.add_column(column, justify="right" if column in ("#", "nodes") else "left")
    for i, p in enumerate(result.passes):
        verdicts = ", ".join(_verdict(c) for c in p.recording.checks) or "—"
        style = {True: "green", False: "red", None: ""}[p.passed]
        picture = result.pictures[i].name if i < len(result.pictures) else ""
        where = str(p.location) if p.location else "?"
        table.add_row(str(p.number), where, str(p.nodes), verdicts, picture, style=style)
    return table
