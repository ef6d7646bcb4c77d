"""Where code is, and whether it is the user's: the one answer every module asks for.

`is_user_file(filename)` decides from a code object's file name (`co_filename`) whether
the code is the user's: their scripts, modules and notebook cells, not Python's, a
library's or tracer's own (`is_tracer_file`). `Locator` turns such a file name and line
into a `Location` the user recognises ("lecture.py:12", "cell 3, line 5").
"""

from __future__ import annotations

import bisect
import os
import re
import site
import sysconfig
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import CodeType, TracebackType

# `trace notebook` names its cells "<cell 3>"; IPython names them "<ipython-input-3-…>"
# (ipykernel instead writes them to files under a temporary folder: plain paths).
CELL_FILE = re.compile(r"^<cell (\d+)>$")
_USER_PSEUDO_FILES = re.compile(r"^<(cell \d+|ipython-input-\d+-[0-9a-f]+|stdin|string)>$")

_TRACER_DIR = Path(__file__).resolve().parent.parent  # the package: this file is in model/
# Exercise modules are written like the user's code (their variable names are shown);
# the modules beside them whose name starts with "_" (the registry, helpers) are tracer's.
_EXERCISES_DIR = _TRACER_DIR / "exercises"


@cache
def _library_dirs() -> tuple[str, ...]:
    """Python's standard library and every site-packages folder, each ending in a separator."""
    paths = sysconfig.get_paths()
    dirs = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    dirs.update(site.getsitepackages() if hasattr(site, "getsitepackages") else ())
    dirs.add(site.getusersitepackages())
    found = {os.path.abspath(d) for d in dirs} | {os.path.realpath(d) for d in dirs}
    return tuple(sorted(d.rstrip(os.sep) + os.sep for d in found))


@cache
def is_tracer_file(filename: str) -> bool:
    """Whether `filename` is one of tracer's own source files (its exercises are not: they
    count as the user's code, see `is_user_file`)."""
    if filename.startswith("<"):
        return False
    path = Path(os.path.realpath(filename))
    if not path.is_relative_to(_TRACER_DIR):
        return False
    return not (path.parent == _EXERCISES_DIR and not path.name.startswith("_"))


@cache
def is_user_file(filename: str) -> bool:
    """Whether code compiled from `filename` (a frame's `f_code.co_filename`) is the user's.

    The user's: any file outside Python's standard library, site-packages and tracer
    (tracer's exercise modules count as the user's), notebook cells ("<cell 3>", IPython's
    "<ipython-input-3-…>"), and code typed or passed as text ("<stdin>", "<string>", as
    `python -c` gives). Not the user's: other pseudo-files such as "<frozen importlib…>".
    """
    if filename.startswith("<"):
        return bool(_USER_PSEUDO_FILES.match(filename))
    path = Path(os.path.realpath(filename))
    if path.is_relative_to(_TRACER_DIR):
        return path.parent == _EXERCISES_DIR and not path.name.startswith("_")
    absolute = os.path.abspath(filename)
    return not (absolute.startswith(_library_dirs()) or str(path).startswith(_library_dirs()))


# Line tables by code object's id, with the code (which tells a reused id apart). By id:
# a code object's hash is computed from its contents on every call.
_LINE_TABLES: dict[int, tuple[CodeType, list[int], list[int | None]]] = {}
LINE_TABLES_KEPT = 1024


def _line_table(code: CodeType) -> tuple[list[int], list[int | None]]:
    """Where each range of `code`'s bytecode starts, and its line (None: no line)."""
    found = _LINE_TABLES.get(id(code))
    if found is not None and found[0] is code:
        return found[1], found[2]
    starts: list[int] = []
    lines: list[int | None] = []
    for start, _end, line in code.co_lines():
        starts.append(start)
        lines.append(line)
    if len(_LINE_TABLES) >= LINE_TABLES_KEPT:
        _LINE_TABLES.clear()
    _LINE_TABLES[id(code)] = (code, starts, lines)
    return starts, lines


def code_line(code: CodeType, offset: int) -> int | None:
    """The line of the instruction at byte `offset` of `code` (a frame's `f_lasti`): what
    the frame's `f_lineno` said when it ran there. Reading `f_lasti` as code runs costs
    next to nothing, `f_lineno` a scan of the line table; this looks it up once per code."""
    starts, lines = _line_table(code)
    found = bisect.bisect_right(starts, offset) - 1
    return lines[found] if found >= 0 else None


def code_place(code: CodeType, offset: int) -> tuple[str, int] | None:
    """(file name as in the code, line) of byte `offset` of `code`; None without a line."""
    line = code_line(code, offset)
    return None if line is None else (code.co_filename, line)


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
        stem = re.sub(r"[^A-Za-z0-9_]+", "_", Path(self.file).stem).strip("_") or "code"
        return f"{stem}-line{self.line}"


class Locator:
    """Turns a code object's file name into a `Location` the user recognises.

    `main` is the script or notebook being run (shown as `shown`, by default as given);
    other files are shown relative to the working directory when inside it.
    """

    def __init__(self, main: str | Path | None = None, shown: str | None = None) -> None:
        self.main_file = None if main is None else str(main)
        self.main = None if main is None else os.path.abspath(main)
        self.shown = shown or (None if main is None else str(main))
        self.cwd = os.getcwd()

    def __call__(self, filename: str, line: int) -> Location:
        cell = CELL_FILE.match(filename)
        if cell:
            return Location(f"cell {cell[1]}", line, cell=int(cell[1]))
        if filename.startswith("<"):  # "<stdin>", or IPython's name of the cell being run
            if filename == self.main_file:
                return Location(self.shown or filename, line)
            return Location(filename, line, main=False)
        path = os.path.abspath(filename)
        if path == self.main:
            return Location(self.shown or filename, line)
        shown = os.path.relpath(path, self.cwd) if path.startswith(self.cwd + os.sep) else path
        return Location(shown, line, main=False)


def error_location(tb: TracebackType | None, locate: Locator) -> Location | None:
    """The innermost line of the user's code in a traceback."""
    found = None
    while tb is not None:
        if is_user_file(tb.tb_frame.f_code.co_filename):
            found = locate(tb.tb_frame.f_code.co_filename, tb.tb_lineno)
        tb = tb.tb_next
    return found
