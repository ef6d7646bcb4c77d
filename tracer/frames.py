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
from tracer.graph import Node, Recording
from tracer.render import RenderOptions, write, write_atomic
from tracer.report import node_title

FRAME_FORMATS = ("svg", "png", "pdf")
# Frames are for projecting: names, ops and gradients.
FRAME_VIEW = RenderOptions(detail="slide")


def engine_order(recording: Recording) -> list[tuple[int, Node]]:
    """(graph index, node) in the order the engine ran them, pass after pass."""
    return [
        (index, node)
        for index, graph in enumerate(recording.graphs)
        if graph.kind == "backward"
        for node in graph.steps
    ]


def global_steps(recording: Recording) -> dict[tuple[int, int], int]:
    """(graph index, node id) -> 1-based position in `engine_order`."""
    return {(gi, node.id): k for k, (gi, node) in enumerate(engine_order(recording), start=1)}


def truncated(recording: Recording, position: int) -> Recording:
    """A copy of `recording` as it stood after `position` engine steps (0: before backward).

    Nodes that had not run yet lose the gradients they received and leaves their `.grad`;
    edges keep their gradient only when their source had run (it sent it); a pass's seeds
    appear with its first step. The title says which step this is and which node runs.
    """
    order = engine_order(recording)
    if not 0 <= position <= len(order):
        raise ValueError(f"position {position} is outside 0..{len(order)}")
    ran = global_steps(recording)

    def done(gi: int, node_id: int) -> bool:
        return ran.get((gi, node_id), len(order) + 1) <= position

    graphs = []
    for gi, graph in enumerate(recording.graphs):
        if graph.kind != "backward":
            graphs.append(graph)
            continue
        started = any(done(gi, node.id) for node in graph.nodes)
        nodes = [
            node
            if done(gi, node.id)
            else replace(node, grads=(None,) * len(node.grads), leaf_grad=None)
            for node in graph.nodes
        ]
        edges = [e if done(gi, e.src) else replace(e, grad=None) for e in graph.edges]
        seeds = graph.seeds if started else [None] * len(graph.seeds)
        graphs.append(replace(graph, nodes=nodes, edges=edges, seeds=seeds))
    if position == 0:
        where = "before backward: the forward graph"
    else:
        gi, node = order[position - 1]
        where = f"▶ running {node_title(node)}"
    heading = f"step {position} / {len(order)}: {where}"
    title = f"{recording.title} — {heading}" if recording.title else heading
    return Recording(title=title, graphs=graphs, checks=list(recording.checks))


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
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TracerError(f"cannot create {target}: {e.strerror or e}") from None
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
