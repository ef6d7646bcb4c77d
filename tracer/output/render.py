"""Render: a Recording to files. The suffix picks the format (see `write`).

DOT source comes from tracer.output.dot; pictures from Graphviz (tracer.output.graphviz);
JSON from the Recording itself; an HTML step-through page from tracer.output.page. Every
file is made in memory and moved into place (tracer.files).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

from tracer.errors import TracerError
from tracer.files import write_atomic
from tracer.model.graph import Recording
from tracer.output.dot import DETAILS, Detail, RenderOptions, dot_source, dot_utf8
from tracer.output.graphviz import dot_timeout, picture
from tracer.output.page import render_html
from tracer.view.collapse import EVERY_DEPTH

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
LAID_OUT_FORMATS = ("svg", "png", "pdf")  # the formats Graphviz lays out


def render_dot(recording: Recording, options: RenderOptions | None = None) -> str:
    """The DOT source of the picture (deterministic)."""
    return dot_source(recording, options)


def render_svg(recording: Recording, options: RenderOptions | None = None) -> str:
    return picture(recording, "svg", options).decode("utf-8")


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
    """Fail early, with one clear line, when `path` cannot be written (or, for a picture,
    when Graphviz's time limit is set wrong); a symbolic link is followed (the file it
    points to is written), dangling or not."""
    path = Path(path)
    try:
        if path.is_symlink():
            path = Path(os.path.realpath(path))
        if path.is_dir():
            raise TracerError(f"cannot write {path}: it is a directory; give a file name")
        if output_format(path) in LAID_OUT_FORMATS:
            dot_timeout()
        parent = path.parent if str(path.parent) else Path(".")
        if not parent.is_dir():
            raise TracerError(f"cannot write {path}: the directory {parent} does not exist")
        if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
            raise TracerError(f"cannot write {path}: permission denied")
    except OSError as e:
        long = e.errno == errno.ENAMETOOLONG
        hint = "; give a shorter name (at most 255 bytes a name)" if long else ""
        raise TracerError(f"cannot write {path}: {e.strerror or e}{hint}") from None
    return path


def _encode(
    recording: Recording, fmt: str, options: RenderOptions | None, notes: list[str] | None = None
) -> bytes:
    renderers: dict[str, Callable[[], bytes]] = {
        "dot": lambda: dot_utf8(recording, options),
        "gv": lambda: dot_utf8(recording, options),
        "json": lambda: recording.to_json().encode("utf-8"),
        # The page draws its own (slide) view; of `options` it takes the quiz, and the depth
        # and focus it opens folded to.
        "html": lambda: render_html(
            recording,
            quiz=bool(options and options.quiz),
            depth=options.depth if options else None,
            focus=options.focus if options else None,
        ).encode(),
    }
    return renderers[fmt]() if fmt in renderers else picture(recording, fmt, options, notes)


def write(
    recording: Recording,
    path: str | Path,
    options: RenderOptions | None = None,
    notes: list[str] | None = None,
) -> Path:
    """Render to `path` in the format its suffix names (svg, png, pdf, dot, gv, json, html).

    The whole output is produced in memory first and then moved into place, so a failure
    never leaves a partial file and never clobbers an existing good one. A picture that
    Graphviz could lay out only in a lighter view says so in its heading, and in `notes`.
    """
    target = check_writable(path)
    data = _encode(recording, output_format(target), options, notes)
    write_atomic(target, data)
    return Path(path)
