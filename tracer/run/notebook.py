"""`trace notebook`: a notebook's code cells run as Jupyter's "Run All" would, under a trace.

The cells run in an IPython shell (`InteractiveShell`), as in Jupyter: magics (`%time`,
`%%time`, `%load_ext`), `!shell` lines, `display()`, `get_ipython()`, top-level `await` and
`x?` work, and a cell's last value is shown ("Out[3]: …"), unless the cell ends in `;`.
The cells run in order, in one namespace, in the notebook's folder, as `__main__`; the
first cell that fails stops the run, in one line naming the cell and the line.
"""

from __future__ import annotations

import ast
import json
import linecache
import os
import sys
import types
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tracer.errors import TracerError
from tracer.model.location import CELL_FILE, Locator
from tracer.model.options import DEFAULT_CAPTURE, CaptureOptions
from tracer.run.script import as_main, require_file
from tracer.run.usercode import Explain, RunResult, Stopped, describe_error, exit_status, run_traced


def read_notebook(path: str | Path) -> Any:
    """The notebook (converted to version 4 by nbformat), or a TracerError saying what is wrong."""
    import nbformat

    path = Path(path)
    require_file(path, "notebook")
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
    # Version 4 keeps its cells at the top; versions 1 to 3 in "worksheets".
    if (
        not isinstance(raw, dict)
        or "nbformat" not in raw
        or not ({"cells", "worksheets"} & set(raw))
    ):
        raise TracerError(f"{path} is not a notebook: JSON without notebook cells{hint}")
    try:
        nb = nbformat.reads(text, as_version=4)
        nbformat.validate(nb)
    except Exception as e:  # nbformat's errors are many kinds, with long messages
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise TracerError(f"{path} is not a valid notebook: {first}") from None
    return nb


# The names IPython's %%time gives the code of its cell (see CellCompiler in `_shell`).
_TIMED = ("<timed exec>", "<timed eval>")


def _lines_before_body(cell: str, magic: str) -> int | None:
    """How many lines of `cell` come before the body of its cell magic `%%magic`; None when
    the cell does not start with that magic."""
    lines = cell.splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        words = line.split()
        return i + 1 if words[0] == f"%%{magic}" else None
    return None


@contextmanager
def _shell(path: Path) -> Iterator[Any]:
    """An IPython shell for the notebook, as Jupyter's kernel has one, and a clean exit.

    Tracebacks are not printed (the run ends in one line instead); each cell's code is
    named "<cell N>" so that errors and pictures name the cell. The process's `__main__`,
    working directory and linecache are restored afterwards.
    """
    from IPython.core.compilerop import CachingCompiler
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    if InteractiveShell.initialized():
        raise TracerError(
            "already inside IPython: run the notebook from a terminal (`trace notebook "
            f"{path}`), or trace its cells here with `%%trace`"
        )

    class CellCompiler(CachingCompiler):
        """Compiles a `%%time` cell's body as part of its cell: IPython names that code
        "<timed exec>" (or "<timed eval>") and numbers it from the line after the magic;
        here it is "<cell N>" with the cell's own line numbers, as errors and pictures say."""

        cell: tuple[int, str] | None = None  # the cell being run: its number and source

        def __call__(self, source: Any, filename: str, symbol: str, *args: Any, **kw: Any) -> Any:
            if filename in _TIMED and isinstance(source, ast.AST) and self.cell is not None:
                number, text = self.cell
                before = _lines_before_body(text, "time")
                if before is not None:
                    ast.increment_lineno(source, before)
                    filename = f"<cell {number}>"
            return super().__call__(source, filename, symbol, *args, **kw)

    class NotebookShell(InteractiveShell):
        """Jupyter's kernel as far as figures go: there is no screen and no event loop."""

        def enable_gui(self, gui: str | None = None) -> None:
            pass  # no event loop to start: figures are drawn off-screen

        def enable_matplotlib(self, gui: str | None = None) -> Any:
            # Jupyter's kernel draws inline, `%matplotlib` with no backend too; a GUI
            # backend would want a screen: inline as well. `agg` stays agg.
            return super().enable_matplotlib("agg" if gui == "agg" else "inline")

    config = Config()
    config.HistoryManager.enabled = False  # a run leaves nothing in ~/.ipython's history
    config.InteractiveShell.warn_venv = False
    saved_main, saved_cwd = sys.modules.get("__main__"), os.getcwd()
    shell = NotebookShell.instance(config=config, user_module=types.ModuleType("__main__"))
    shell.compile = CellCompiler()
    # Replaced on this one shell only (mypy objects to assigning to a method).
    shell.compile.get_code_name = (  # type: ignore[method-assign]
        lambda raw_code, transformed_code, number: f"<cell {number}>"
    )
    shell.showtraceback = lambda *args, **kwargs: None  # type: ignore[method-assign]
    shell.showsyntaxerror = lambda *args, **kwargs: None  # type: ignore[method-assign]
    shell.showindentationerror = lambda *args, **kwargs: None  # type: ignore[method-assign]
    try:
        with as_main(path, ()), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="To exit: use 'exit'")  # sys.exit()
            os.chdir(path.parent.resolve())
            yield shell
    finally:
        os.chdir(saved_cwd)
        if saved_main is not None:
            sys.modules["__main__"] = saved_main
        for name in [f for f in linecache.cache if CELL_FILE.match(f)]:
            del linecache.cache[name]
        InteractiveShell.clear_instance()


def _offer_shown(result: Any, namespace: dict[str, Any], bound: dict[str, int]) -> None:
    """A cell's displayed value (IPython's `result.result`: None when the cell ends in `;`)
    and the tensors it bound, for tracer.checks.manual to recognise manual results among."""
    from tracer.run.shown import offer, offer_bindings

    offer(result.result, "displayed")
    offer_bindings(namespace, bound)


def run_notebook(path: str | Path, *, capture: CaptureOptions = DEFAULT_CAPTURE) -> RunResult:
    """Run a notebook's code cells in order, in one IPython shell, in this process.

    Each cell's displayed value, printed tensors and new bindings are offered to
    tracer.checks.manual: a manual result shown next to a backward pass is checked."""
    path = Path(path)
    nb = read_notebook(path)
    locate = Locator(path)
    cells = [cell.source for cell in nb.cells if cell.cell_type == "code"]

    bound: dict[str, int] = {}  # name -> id of the tensor it held after the last cell

    def body(explain: Explain) -> None:
        with _shell(path) as shell:
            for number, source in enumerate(cells, start=1):
                shell.execution_count = number  # "Out[N]" and "<cell N>" name the code cell
                shell.compile.cell = (number, source)
                result = shell.run_cell(source, store_history=True)
                error = result.error_before_exec or result.error_in_exec
                if error is None:
                    _offer_shown(result, shell.user_ns, bound)
                    continue
                status = exit_status(error) if isinstance(error, SystemExit) else 0
                if isinstance(error, SystemExit) and status == 0:
                    return  # ends the run normally, as it ends a script
                message = describe_error(error, locate, explain(error))
                if not message.startswith(f"cell {number}"):
                    message = f"cell {number}: {message}"  # raised outside the cell's lines
                raise Stopped(message, status)

    return run_traced(path, locate, body, capture)
