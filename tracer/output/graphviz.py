"""Graphviz: DOT source laid out by the `dot` program, under a time limit.

A graph too large to lay out in time gets one line saying what to do instead, never a hang
(`TRACER_DOT_TIMEOUT`, seconds). The `graphviz` package finds `dot` and tells its version
(`dot_version`); the layout itself is one `dot` process run here, because the package's
`pipe` has no time limit.
"""

from __future__ import annotations

import math
import os
import subprocess
from dataclasses import replace

from tracer.errors import TracerError
from tracer.model.graph import Recording
from tracer.output.dot import RenderOptions, dot_utf8, views

# How long Graphviz may take to lay a picture out (seconds); TRACER_DOT_TIMEOUT changes it.
DOT_TIMEOUT = 120.0

MISSING_DOT = (
    "Graphviz's `dot` program was not found: install it (Debian/Ubuntu: "
    "`apt-get install graphviz`; macOS: `brew install graphviz`; conda: "
    "`conda install graphviz`), or write .dot or .json, which need no `dot`"
)


def dot_version() -> str | None:
    """Graphviz's version ("2.43.0"), or None when `dot` is not installed."""
    import graphviz  # here: only `trace --version` asks

    try:
        return ".".join(str(part) for part in graphviz.version())
    except (graphviz.ExecutableNotFound, RuntimeError, OSError):
        return None


def dot_timeout() -> float:
    """The seconds Graphviz may take: TRACER_DOT_TIMEOUT, or DOT_TIMEOUT; a TracerError
    for a value that is no positive number of seconds."""
    given = os.environ.get("TRACER_DOT_TIMEOUT")
    if given is None:
        return DOT_TIMEOUT
    try:
        limit = float(given)
    except ValueError:
        limit = math.nan
    if not 0 < limit < math.inf:
        raise TracerError(
            f"TRACER_DOT_TIMEOUT={given!r}: give the seconds Graphviz may take as a positive "
            f"number (the default is {DOT_TIMEOUT:g})"
        )
    return limit


class LayoutTimeout(TracerError):
    """Graphviz did not lay a picture out in time (`picture` then draws a lighter view)."""


def lay_out(dot: bytes, fmt: str, nodes: int) -> bytes:
    """The picture of DOT source `dot` (of a recording of `nodes` nodes) in format `fmt`."""
    command = ["dot", f"-T{fmt}"]
    if fmt == "png":
        command.append("-Gdpi=144")  # 72 dpi makes 9-point labels unreadable on a slide
    limit = dot_timeout()
    try:
        done = subprocess.run(command, input=dot, capture_output=True, timeout=limit, check=False)
    except FileNotFoundError:
        raise TracerError(MISSING_DOT) from None
    except subprocess.TimeoutExpired:
        raise LayoutTimeout(
            f"Graphviz's `dot` did not lay out the {nodes:,} nodes within {limit:g} s"
        ) from None
    if done.returncode != 0:
        stderr = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise TracerError(
            f"Graphviz's `dot` failed: {stderr[-1] if stderr else f'exit {done.returncode}'}"
        )
    return done.stdout


def lighter(recording: Recording, options: RenderOptions) -> tuple[RenderOptions, str] | None:
    """The next lighter view to draw when Graphviz cannot lay `options`' out in time, and
    its name: the full view becomes the slide view; then the modules are collapsed one
    level more at a time. None when there is nothing lighter to draw."""
    if options.full:
        return replace(options, detail="slide"), "the slide view"
    drawn = [v for v in views(recording, options) if v.graph.modules]
    if not drawn:
        return None
    depth = max(v.levels if v.depth is None else v.depth for v in drawn)
    if depth <= 0:
        return None
    return replace(options, depth=depth - 1, focus=None), f"modules collapsed to depth {depth - 1}"


def picture(
    recording: Recording,
    fmt: str,
    options: RenderOptions | None = None,
    notes: list[str] | None = None,
) -> bytes:
    """The recording drawn as `options` say, laid out by Graphviz, as a file's bytes.

    When Graphviz cannot finish in time, the next lighter view is drawn (see `lighter`),
    with a line in its heading saying so, also added to `notes` for the terminal; when
    even the lightest cannot, a TracerError says what to do instead."""
    options = options or RenderOptions()
    nodes = sum(len(g.nodes) for g in recording.graphs)
    asked = options
    while True:
        try:
            return lay_out(dot_utf8(recording, options), fmt, nodes)
        except LayoutTimeout as e:
            step = lighter(recording, options)
            if step is None:
                raise TracerError(
                    f"{e}, nor in a lighter view: write .dot or .json instead (no layout "
                    "needed), or allow more time (TRACER_DOT_TIMEOUT=seconds)"
                ) from None
            options, name = step
            note = f"{e} as asked: this is {name}"
            if notes is not None:
                notes.append(note)
            options = replace(options, notes=(*asked.notes, note))
