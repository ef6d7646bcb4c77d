"""The gallery: every exercise traced, checked and drawn into one folder, with a README.

    build_gallery("gallery", all_exercises())   writes <slug>.svg, .png, .gv and README.md
    check_gallery("gallery")                    what is wrong with it, without writing

The DOT source (`.gv`) is what `check_gallery` compares, because it is plain text and
deterministic; the SVG and PNG come from Graphviz and are only required to exist.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from tracer.errors import TracerError
from tracer.exercises import Exercise, all_exercises
from tracer.files import make_folder, write_atomic
from tracer.model.graph import Recording
from tracer.model.options import DEFAULT_CAPTURE
from tracer.output.page import page_capture
from tracer.output.render import RenderOptions, render_dot, write
from tracer.view.text import check_line, forward_check_line

README = "README.md"
# The files each exercise gets, by suffix; the DOT source is the one compared by --check.
PICTURES = ("svg", "png", "html")  # html: the stepper page
SOURCE = "gv"

Progress = Callable[[Exercise], None]

# Lecture pictures: names, ops and gradients, readable when projected.
VIEW = RenderOptions(detail="slide")


@dataclass(frozen=True)
class Entry:
    """One exercise of the gallery: what running it recorded, and its DOT source."""

    exercise: Exercise
    recording: Recording
    dot: str

    @property
    def failures(self) -> list[str]:
        found = [
            f"{self.exercise.slug}: {check_line(c, 'exact')}"
            for c in self.recording.checks
            if not c.passed
        ]
        forward = self.recording.forward
        if forward is not None and forward.passed is False:
            found.append(f"{self.exercise.slug}: {forward_check_line(forward)}")
        return found

    @property
    def verdicts(self) -> list[str]:
        """Each check in the picture's words, forward mode's J·v last."""
        lines = [check_line(c, "picture") for c in self.recording.checks]
        forward = self.recording.forward
        return lines if forward is None else [*lines, forward_check_line(forward)]


def run_all(exercises: Sequence[Exercise], progress: Progress | None = None) -> list[Entry]:
    """Run and check every exercise, and render its DOT source (nothing is written)."""
    entries = []
    for ex in exercises:
        entries.append(_run(ex))
        if progress is not None:
            progress(ex)
    return entries


def view(ex: Exercise) -> RenderOptions:
    """The slide view, with the chain-rule step on each node where the catalog asks."""
    return replace(VIEW, explain=True) if ex.explain else VIEW


def _run(ex: Exercise) -> Entry:
    recording = ex.run(page_capture(DEFAULT_CAPTURE, "html"))  # a page per exercise
    return Entry(ex, recording, render_dot(recording, view(ex)))


def build_gallery(
    out_dir: str | Path,
    exercises: Sequence[Exercise] | None = None,
    progress: Progress | None = None,
) -> list[Entry]:
    """Write `<slug>.svg`, `.png` and `.gv` for every exercise, then `README.md`.

    Every file is written atomically. Exercises whose check fails are drawn all the same
    (the picture shows the disagreement); the returned entries say which failed.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise TracerError(f"cannot write the gallery into {out}: it is not a directory")
    make_folder(out)
    exercises = all_exercises() if exercises is None else exercises
    entries = []
    for ex in exercises:
        entry = _run(ex)
        for suffix in PICTURES:
            write(entry.recording, out / f"{ex.slug}.{suffix}", view(ex))
        write_atomic(out / f"{ex.slug}.{SOURCE}", entry.dot.encode("utf-8"))
        entries.append(entry)
        if progress is not None:
            progress(ex)
    write_atomic(out / README, readme(entries).encode("utf-8"))
    return entries


def check_gallery(
    out_dir: str | Path,
    exercises: Sequence[Exercise] | None = None,
    progress: Progress | None = None,
) -> list[str]:
    """Re-run every exercise and compare with the gallery in `out_dir`; writes nothing.

    A problem is a failing check, a `.gv` that differs from the freshly rendered DOT, a
    missing file, a README that is out of date, or a `.gv` of no known exercise.
    """
    out = Path(out_dir)
    exercises = all_exercises() if exercises is None else exercises
    entries = run_all(exercises, progress)
    problems = [failure for entry in entries for failure in entry.failures]
    if not out.is_dir():
        return [*problems, f"{out} is not a gallery folder (create it with `trace gallery`)"]
    for entry in entries:
        slug = entry.exercise.slug
        source = out / f"{slug}.{SOURCE}"
        if not source.is_file():
            problems.append(f"{source} is missing")
        elif source.read_text(encoding="utf-8") != entry.dot:
            problems.append(f"{source} is out of date (it differs from the freshly rendered DOT)")
        problems.extend(
            f"{out / f'{slug}.{s}'} is missing"
            for s in PICTURES
            if not (out / f"{slug}.{s}").is_file()
        )
    readme_path = out / README
    if not readme_path.is_file():
        problems.append(f"{readme_path} is missing")
    elif readme_path.read_text(encoding="utf-8") != readme(entries):
        problems.append(f"{readme_path} is out of date")
    known = {e.slug for e in exercises}
    problems.extend(
        f"{stale} belongs to no exercise (remove it)"
        for stale in sorted(out.glob(f"*.{SOURCE}"))
        if stale.stem not in known
    )
    return problems


# -- the README ------------------------------------------------------------------------


def _cell(text: str) -> str:
    """Text for a Markdown table cell: a bare | would end the cell."""
    return text.replace("|", "\\|")


def readme(entries: Sequence[Entry]) -> str:
    """The gallery's README.md: an index, then one section per exercise."""
    lines = [
        "# The gallery",
        "",
        "Every exercise traced with `tracer`: autograd's graph, with the gradient on every "
        "edge, beside the hand-derived (manual) gradient, and the two compared elementwise.",
        "Generated by `trace gallery`; `trace gallery --check` verifies that it is up to date.",
        "Do not edit by hand.",
        "",
        "| exercise | source | verdict |",
        "|---|---|---|",
    ]
    for entry in entries:
        ex = entry.exercise
        # The picture's wording: rounding-level errors read "< 1e-12", so the README, like
        # the DOT, is the same on every machine and `--check` can compare it.
        verdicts = "; ".join(entry.verdicts)
        lines.append(f"| [{ex.slug}](#{ex.slug}) | {_cell(ex.source)} | {_cell(verdicts)} |")
    for entry in entries:
        ex = entry.exercise
        lines += [
            "",
            f"## {ex.slug}",
            "",
            f"**{ex.title}**",
            "",
            f"![{ex.title}]({ex.slug}.png)",
            "",
            f"- Function: {ex.formula}",
            f"- Manual gradient: {ex.manual}",
            f"- Source: {ex.source}",
            f"- Shapes: {ex.shapes}",
        ]
        lines += [f"- {verdict}" for verdict in entry.verdicts]
        lines.append(
            f"- Files: [{ex.slug}.svg]({ex.slug}.svg), [{ex.slug}.png]({ex.slug}.png), "
            f"[{ex.slug}.gv]({ex.slug}.gv) (DOT source)"
        )
    return "\n".join(lines) + "\n"
