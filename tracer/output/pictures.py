"""The pictures of `trace run` and `trace notebook`: one file per backward pass, in a folder."""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

from tracer.errors import TracerError
from tracer.files import check_folder, make_folder
from tracer.model.passes import Pass
from tracer.output.graphviz import dot_timeout
from tracer.output.render import FORMATS, LAID_OUT_FORMATS, RenderOptions, write

PICTURE_FORMATS = ("svg", "png", "pdf", "dot", "json", "html")
assert set(PICTURE_FORMATS) <= set(FORMATS)
# What `Pass.picture_name` gives: "01-line12.svg", "02-cell4-line3.png", "03-pass.dot".
_PICTURE_NAME = re.compile(r"^\d{2,}-(?:[\w-]*line\d+|pass)\.\w+$")


def prepare_out_dir(out: Path, fmt: str) -> Path:
    """Check, before any code runs, that pictures can be written to `out`; return it as an
    absolute path, so that code which changes the working directory does not move it."""
    if fmt not in PICTURE_FORMATS:
        raise TracerError(
            f"unsupported picture format '{fmt}': use one of " + ", ".join(PICTURE_FORMATS)
        )
    if fmt in LAID_OUT_FORMATS:
        dot_timeout()
    out = out.absolute()
    try:
        return _writable_folder(out, fmt)
    except OSError as e:  # a name over the file system's limit, say
        raise TracerError(f"cannot write to {out}: {e.strerror or e}") from None


def _writable_folder(out: Path, fmt: str) -> Path:
    if out.is_symlink() and not out.exists():
        raise TracerError(
            f"--out {out} is a broken symbolic link (to {os.readlink(out)}): remove it or give "
            "another folder"
        )
    if out.exists():
        if not out.is_dir():
            raise TracerError(f"--out {out} is a file: give a folder for the pictures")
        check_folder(out)
        return out
    if out.suffix.lower().lstrip(".") in FORMATS:
        raise TracerError(
            f"--out {out} looks like a file name: give a folder; the pictures in it are "
            f"named by backward call (01-line12.{fmt}, ...)"
        )
    check_folder(out)
    return out


def drawn_pictures(written: list[Path]) -> dict[int, Path]:
    """The pictures `write_pictures` wrote, by pass number (they are named by it)."""
    return {int(path.name.split("-", 1)[0]): path for path in written}


class WrittenPictures(NamedTuple):
    """What `write_pictures` did: the pictures written, in order; the older pictures in
    the folder this run did not rewrite; notes (a picture drawn in a lighter view than
    asked); the passes that could not be drawn at all, with why; and the step-through
    pages written beside the pictures (by pass number; the pictures themselves for html)."""

    written: list[Path]
    older: list[Path]
    notes: list[str]
    failed: list[tuple[Pass, str]]
    pages: dict[int, Path] = {}  # noqa: RUF012 (a NamedTuple's default is never changed)


def write_pictures(
    passes: list[Pass],
    out: Path,
    fmt: str = "svg",
    options: RenderOptions | None = None,
    *,
    pages: bool = False,
) -> WrittenPictures:
    """Write one picture per pass into `out`, and with `pages` its step-through page
    beside it (`01-line12.html`, linked from the run's page). A pass that cannot be drawn
    (too large for Graphviz even in its lightest view) is noted and the others are still
    written."""
    if not passes:
        return WrittenPictures([], [], [], [])
    made = [f for f in (out, *out.parents) if not f.exists()]  # deepest first
    make_folder(out)
    width = max(2, len(str(max((p.number for p in passes), default=0))))
    written: list[Path] = []
    notes: list[str] = []
    failed: list[tuple[Pass, str]] = []
    step_pages: dict[int, Path] = {}

    def draw(p: Pass) -> tuple[Path | None, Path | None, str | None, list[str]]:
        """One pass's picture and page: (picture, page, why it failed, notes)."""
        found: list[str] = []
        try:
            picture = write(p.recording, out / p.picture_name(fmt, width), options, found)
            page = None
            if pages:
                page = (
                    picture
                    if fmt == "html"
                    else write(p.recording, out / p.picture_name("html", width))
                )
            return picture, page, None, found
        except TracerError as e:
            return None, None, str(e), found

    try:
        # The passes are drawn two at a time: Graphviz runs as a process of its own, so
        # one pass is laid out while the next one's DOT text is made (a run of a few
        # pictures waits for them at its end). The results keep the passes' order.
        with ThreadPoolExecutor(max_workers=2) as pool:
            for p, (picture, page, error, found) in zip(
                passes, pool.map(draw, passes), strict=True
            ):
                if picture is not None:
                    written.append(picture)
                if page is not None:
                    step_pages[p.number] = page
                if error is not None:
                    failed.append((p, error))
                notes += (f"{p.picture_name(fmt, width)}: {note}" for note in found)
    except BaseException:
        written = []
        raise
    finally:
        if not written:
            for folder in made:  # a failed run leaves no folder it made, once empty
                try:
                    folder.rmdir()
                except OSError:
                    break
    names = {p.name for p in (*written, *step_pages.values())}
    kept = out.iterdir() if out.exists() else ()
    older = sorted(p for p in kept if _PICTURE_NAME.match(p.name) and p.name not in names)
    return WrittenPictures(written, older, notes, failed, step_pages)
