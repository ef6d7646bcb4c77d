"""`trace run`: a Python file run as `python path args…` would run it, under a trace."""

from __future__ import annotations

import os
import runpy
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tracer.errors import TracerError
from tracer.model.location import Locator
from tracer.model.options import DEFAULT_CAPTURE, CaptureOptions
from tracer.run.usercode import RunResult, run_traced


def require_file(path: Path, what: str) -> None:
    """A TracerError unless `path` is an existing file."""
    if not path.exists():
        raise TracerError(f"no such file: {path}")
    if path.is_dir():
        raise TracerError(f"{path} is a directory: give the {what} file")


@contextmanager
def as_main(path: Path, argv: Sequence[str]) -> Iterator[None]:
    """sys.argv and sys.path[0] as `python path` would have them; restored after, with
    sys.stdout and sys.stderr, should the script replace them (tracer's own summary goes
    where it would have gone)."""
    saved_argv, saved_path = sys.argv, list(sys.path)
    saved_streams = sys.stdout, sys.stderr
    sys.argv = [str(path), *argv]
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


def run_script(
    path: str | Path, args: Sequence[str] = (), *, capture: CaptureOptions = DEFAULT_CAPTURE
) -> RunResult:
    """Run a Python file as `python path *args` would, in this process, under a trace.

    The working directory is left as it is, and restored afterwards should the script
    change it.
    """
    path = Path(path)
    require_file(path, "script")
    if path.suffix == ".ipynb":
        raise TracerError(f"{path} is a notebook: use `trace notebook {path}`")
    locate = Locator(path)

    def body() -> None:
        cwd = os.getcwd()
        try:
            with as_main(path, args):
                namespace = runpy.run_path(str(path), run_name="__main__")
            _offer_bound(namespace)
        finally:
            os.chdir(cwd)

    return run_traced(path, locate, body, capture)
