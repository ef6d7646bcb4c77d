"""`trace run`: a Python file run as `python path args…` would run it, under a trace.

The script runs in a `__main__` module of its own, made as Python makes the one it runs a
script in: `__file__` its absolute path (each frame's file name too), `__loader__` a
`SourceFileLoader`, `__builtins__` the builtins module, `__spec__` and `__package__`
None, an empty `__annotations__`; `sys.argv[0]` the path as given; compiled with none of
tracer's `__future__` flags. It is `sys.modules["__main__"]` while it runs. A zip archive
or a compiled `.pyc` file is run by `runpy.run_path`, as before.
"""

from __future__ import annotations

import builtins
import importlib.machinery
import importlib.util
import io
import os
import pkgutil
import runpy
import sys
import types
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tracer.errors import TracerError
from tracer.model.location import Locator
from tracer.model.options import DEFAULT_CAPTURE, CaptureOptions
from tracer.run.usercode import Explain, RunResult, run_traced


def require_file(path: Path, what: str) -> None:
    """A TracerError unless `path` is an existing file."""
    if not path.exists():
        raise TracerError(f"no such file: {path}")
    if path.is_dir():
        raise TracerError(f"{path} is a directory: give the {what} file")


@contextmanager
def as_main(path: str | Path, argv: Sequence[str]) -> Iterator[None]:
    """sys.argv and sys.path[0] as `python path` would have them (`path` as the user gave
    it: "./train.py" stays so in sys.argv[0]); restored after, with sys.stdout and
    sys.stderr, should the script replace them (tracer's own summary goes where it would
    have gone)."""
    saved_argv, saved_path = sys.argv, list(sys.path)
    saved_streams = sys.stdout, sys.stderr
    sys.argv = [os.fspath(path), *argv]
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    try:
        yield
    finally:
        sys.argv = saved_argv
        sys.path[:] = saved_path
        sys.stdout, sys.stderr = saved_streams


def _offer_bound(namespace: dict[str, object]) -> None:
    """The tensors the script left bound to names, for tracer.checks.manual (see its rule)."""
    from tracer.run.shown import offer_bindings

    offer_bindings(namespace, {})


def _is_source(filename: str) -> bool:
    """Whether Python runs `filename` as source: not a zip archive (anything zipimport
    reads) nor a compiled file (".pyc", or Python's magic number at its start)."""
    if pkgutil.get_importer(filename) is not None:
        return False
    with open(filename, "rb") as f:
        magic = f.read(len(importlib.util.MAGIC_NUMBER))
    return not (filename.endswith(".pyc") or magic == importlib.util.MAGIC_NUMBER)


def run_as_main(path: str | Path) -> dict[str, Any]:
    """Run the file at `path` as `python path` runs it (see the module docstring); its
    namespace when it ends."""
    # Python's own absolute path: the working directory joined on, not normalised
    # ("./train.py" is "/home/me/./train.py").
    filename = os.path.join(os.getcwd(), path)
    if not _is_source(filename):
        return runpy.run_path(os.fspath(path), run_name="__main__")
    with io.open_code(filename) as f:
        source = f.read()  # bytes: compile() reads the coding cookie, as Python does
    code = compile(source, filename, "exec", dont_inherit=True)
    main = types.ModuleType("__main__")  # __doc__, __package__, __loader__, __spec__: None
    main.__dict__.update(__annotations__={}, __builtins__=builtins, __file__=filename)
    main.__dict__["__cached__"] = None
    main.__loader__ = importlib.machinery.SourceFileLoader("__main__", filename)
    saved = sys.modules.get("__main__")
    sys.modules["__main__"] = main
    try:
        exec(code, main.__dict__)
    finally:
        if saved is None:
            sys.modules.pop("__main__", None)
        else:
            sys.modules["__main__"] = saved
    return main.__dict__


def run_script(
    path: str | Path, args: Sequence[str] = (), *, capture: CaptureOptions = DEFAULT_CAPTURE
) -> RunResult:
    """Run a Python file as `python path *args` would, in this process, under a trace.

    The working directory is left as it is, and restored afterwards should the script
    change it.
    """
    given, path = path, Path(path)
    require_file(path, "script")
    if path.suffix == ".ipynb":
        raise TracerError(f"{path} is a notebook: use `trace notebook {path}`")
    locate = Locator(path)

    def body(explain: Explain) -> None:
        cwd = os.getcwd()
        try:
            with as_main(given, args):
                namespace = run_as_main(given)
            _offer_bound(namespace)
        finally:
            os.chdir(cwd)

    return run_traced(path, locate, body, capture)
