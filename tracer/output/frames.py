"""Frames: the backward pass as one picture per engine step, for slides that cannot run a page.

    write_frames(recording, "frames/")        step-00.svg (the forward graph) … step-09.svg
    write_frames(recording, "frames/", "png")
    write_frames(recording, "backward.pdf")   the same pictures as the pages of one PDF

Each frame is drawn from plain data: a copy of the Recording truncated at step k (the
gradients sent after step k removed, a leaf's `.grad` only once accumulated) with the node
the engine ran at step k outlined (`RenderOptions.highlight`). Steps count across the
backward graphs of the recording in order, so a recording of two passes steps through both.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from io import BytesIO
from pathlib import Path

from tracer.errors import TracerError
from tracer.files import check_folder, make_folder, write_atomic
from tracer.model.graph import Recording
from tracer.output.render import RenderOptions, write
from tracer.view.steps import engine_order, truncated

FRAME_FORMATS = ("svg", "png", "pdf")
# Frames are for projecting: names, ops and gradients.
FRAME_VIEW = RenderOptions(detail="slide")


def frame_options(recording: Recording, position: int, options: RenderOptions) -> RenderOptions:
    """`options` with the node running at `position` outlined (none before backward)."""
    if position == 0:
        return replace(options, highlight=frozenset())
    gi, node = engine_order(recording)[position - 1]
    return replace(options, highlight=frozenset({(gi, node.id)}))


def frame_name(position: int, total: int, fmt: str) -> str:
    return f"step-{position:0{max(2, len(str(total)))}d}.{fmt}"


def check_target(target: Path, fmt: str) -> None:
    """Fail early, with one clear line, when frames cannot be written to `target`."""
    if fmt not in FRAME_FORMATS:
        raise TracerError(
            f"unsupported frame format '{fmt}': use one of " + ", ".join(FRAME_FORMATS)
        )
    if target.suffix.lower() == ".pdf":
        if target.is_dir():
            raise TracerError(f"cannot write {target}: it is a directory; give a file name")
        parent = target.parent if str(target.parent) else Path(".")
        if not parent.is_dir():
            raise TracerError(f"cannot write {target}: the directory {parent} does not exist")
        check_folder(parent, target)
        return
    if target.exists() and not target.is_dir():
        raise TracerError(
            f"--frames {target} is a file: give a folder (or a .pdf file for one PDF)"
        )
    if target.suffix and target.suffix.lower().lstrip(".") in ("svg", "png", "html", "json"):
        raise TracerError(
            f"--frames {target} looks like a file name: give a folder for the frames "
            "(step-00.svg, ...), or a .pdf file for one multi-page PDF"
        )
    check_folder(target)


def write_frames(
    recording: Recording,
    target: str | Path,
    fmt: str = "svg",
    options: RenderOptions = FRAME_VIEW,
) -> list[Path]:
    """One picture per engine step (and one before backward) into the folder `target`, or,
    when `target` ends in .pdf, one PDF with a page per step. Returns the files written."""
    target = Path(target)
    pdf = target.suffix.lower() == ".pdf"
    check_target(target, "pdf" if pdf else fmt)
    if not any(g.kind == "backward" and g.steps for g in recording.graphs):
        raise TracerError("no backward step was recorded: there is nothing to step through")
    total = len(engine_order(recording))
    if pdf:
        return [_write_pdf(recording, target, total, options)]
    make_folder(target)
    return [
        write(
            truncated(recording, k),
            target / frame_name(k, total, fmt),
            frame_options(recording, k, options),
        )
        for k in range(total + 1)
    ]


def _write_pdf(recording: Recording, target: Path, total: int, options: RenderOptions) -> Path:
    """Graphviz draws each frame as a one-page PDF; pypdf joins the pages into one file."""
    from pypdf import PdfWriter

    merged = PdfWriter()
    with tempfile.TemporaryDirectory(prefix="tracer-frames-") as tmp:
        for k in range(total + 1):
            page = write(
                truncated(recording, k),
                Path(tmp) / frame_name(k, total, "pdf"),
                frame_options(recording, k, options),
            )
            merged.append(str(page))
        buffer = BytesIO()
        merged.write(buffer)
    write_atomic(target, buffer.getvalue())
    return target
