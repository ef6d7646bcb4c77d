"""Render: a Recording to files. The suffix picks the format (see `write`).

DOT source comes from tracer.dot; pictures from Graphviz's `dot` program, run under a
time limit (a graph too large to lay out gets one line saying what to do instead, never a
hang); JSON from the Recording itself; an HTML step-through page from tracer.stepper.
Every file is made in memory and moved into place, with the mode a new file would get.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from tracer.collapse import EVERY_DEPTH
from tracer.dot import DETAILS, Detail, RenderOptions, dot_source, dot_utf8
from tracer.errors import TracerError
from tracer.graph import Recording
from tracer.quiet import paused_gc

__all__ = [
    "DETAILS",
    "EVERY_DEPTH",
    "FORMATS",
    "Detail",
    "RenderOptions",
    "check_writable",
    "render_dot",
    "render_svg",
    "write",
    "write_atomic",
]

FORMATS = ("svg", "png", "pdf", "dot", "gv", "json", "html")

# How long Graphviz may take to lay a picture out (seconds); TRACER_DOT_TIMEOUT changes it.
DOT_TIMEOUT = 120.0


def render_dot(recording: Recording, options: RenderOptions | None = None) -> str:
    """The DOT source of the picture (deterministic)."""
    with paused_gc():  # many small objects, none cyclic: see tracer.quiet
        return dot_source(recording, options)


def _dot_bytes(recording: Recording, options: RenderOptions | None) -> bytes:
    """The DOT source in UTF-8, for a file or for Graphviz (see `dot_utf8`)."""
    with paused_gc():
        return dot_utf8(recording, options)


def render_svg(recording: Recording, options: RenderOptions | None = None) -> str:
    return _pipe(recording, "svg", options).decode("utf-8")


def _nodes(recording: Recording) -> int:
    return sum(len(g.nodes) for g in recording.graphs)


def _pipe(recording: Recording, fmt: str, options: RenderOptions | None = None) -> bytes:
    """Lay the picture out with Graphviz's `dot` and return the file's bytes."""
    command = ["dot", f"-T{fmt}"]
    if fmt == "png":
        command.append("-Gdpi=144")  # 72 dpi makes 9-point labels unreadable on a slide
    limit = float(os.environ.get("TRACER_DOT_TIMEOUT", DOT_TIMEOUT))
    try:
        done = subprocess.run(
            command,
            input=_dot_bytes(recording, options),
            capture_output=True,
            timeout=limit,
            check=False,
        )
    except FileNotFoundError:
        raise TracerError(
            "Graphviz's `dot` program was not found: install it (Debian/Ubuntu: "
            "`apt-get install graphviz`; macOS: `brew install graphviz`; conda: "
            "`conda install graphviz`), or write .dot or .json, which need no `dot`"
        ) from None
    except subprocess.TimeoutExpired:
        raise TracerError(
            f"Graphviz's `dot` did not lay out the {_nodes(recording):,} nodes within "
            f"{limit:g} s: write .dot or .json instead (no layout needed), draw less "
            "(--detail slide), or allow more time (TRACER_DOT_TIMEOUT=seconds)"
        ) from None
    if done.returncode != 0:
        stderr = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise TracerError(
            f"Graphviz's `dot` failed: {stderr[-1] if stderr else f'exit {done.returncode}'}"
        )
    return done.stdout


def output_format(path: str | Path) -> str:
    """The format for `path` from its suffix, or a TracerError naming the supported ones."""
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        given = f"'.{suffix}'" if suffix else "no suffix"
        raise TracerError(
            f"unsupported output format ({given} in {path}): use one of "
            + ", ".join("." + f for f in FORMATS)
        )
    return suffix


def check_writable(path: str | Path) -> Path:
    """Fail early, with one clear line, when `path` cannot be written; a symbolic link is
    followed (the file it points to is written), dangling or not."""
    path = Path(path)
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    if path.is_dir():
        raise TracerError(f"cannot write {path}: it is a directory; give a file name")
    output_format(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise TracerError(f"cannot write {path}: the directory {parent} does not exist")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise TracerError(f"cannot write {path}: permission denied")
    return path


def _encode(recording: Recording, fmt: str, options: RenderOptions | None) -> bytes:
    renderers: dict[str, Callable[[], bytes]] = {
        "dot": lambda: _dot_bytes(recording, options),
        "gv": lambda: _dot_bytes(recording, options),
        "json": lambda: recording.to_json().encode("utf-8"),
        "html": lambda: _stepper_page(recording),
    }
    return renderers[fmt]() if fmt in renderers else _pipe(recording, fmt, options)


def _stepper_page(recording: Recording) -> bytes:
    from tracer.stepper import render_html  # the page draws its own (slide) view

    return render_html(recording).encode("utf-8")


def write(recording: Recording, path: str | Path, options: RenderOptions | None = None) -> Path:
    """Render to `path` in the format its suffix names (svg, png, pdf, dot, gv, json, html).

    The whole output is produced in memory first and then moved into place, so a failure
    never leaves a partial file and never clobbers an existing good one.
    """
    target = check_writable(path)
    data = _encode(recording, output_format(target), options)
    write_atomic(target, data)
    return Path(path)


def _mode_for(path: Path) -> int:
    """The mode `path` should get: an existing file keeps its own; a new one gets what
    open() would give it (0666 less the umask)."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~_umask()


def _umask() -> int:
    try:  # read without changing it (os.umask can only be read by setting it)
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, then rename it over `path`."""
    path = Path(os.path.realpath(path)) if path.is_symlink() else path
    mode = _mode_for(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise TracerError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise TracerError(f"cannot write {path}: {e.strerror or e}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
