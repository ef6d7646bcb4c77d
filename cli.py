"""The `trace` command: a thin Typer layer over the tracer library.

    trace list                            the exercises
    trace exercise-a --out graph.svg      trace one, check it, draw it

Every user mistake ends in one line on stderr and exit code 2; a check that fails ends
in exit code 1 (the picture of the failure is still written).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from tracer import exercises
from tracer.capture import DEFAULT_MAX_VALUES
from tracer.errors import TracerError
from tracer.render import DETAILS, FORMATS, RenderOptions, check_writable, write
from tracer.report import format_report

console = Console()


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one line on stderr; the caller raises the returned Exit."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


class _Group(TyperGroup):
    """Answers an unknown command with the known exercises, in one line."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            slugs = ", ".join(e.slug for e in exercises.all_exercises())
            commands = ", ".join(c for c in self.commands if "-" not in c)
            typer.echo(
                f"error: unknown exercise or command '{args[0]}': "
                f"exercises are {slugs}; commands are {commands}",
                err=True,
            )
            sys.exit(2)
        return super().resolve_command(ctx, args)


app = typer.Typer(
    cls=_Group,
    help="Trace PyTorch's autograd graph, draw the gradient on every edge, check it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

OutOption = Annotated[
    Path,
    typer.Option(
        "--out",
        "-o",
        help="Where to write the picture; the suffix picks the format: "
        + ", ".join("." + f for f in FORMATS),
    ),
]
DetailOption = Annotated[
    str,
    typer.Option(
        "--detail",
        help="slide: names, ops, gradients (for projecting); full: also each node's "
        "forward value beside its gradient, shapes, dtypes and saved tensors.",
    ),
]
SavedOption = Annotated[
    bool, typer.Option("--saved", help="Show what autograd saved for backward on each node.")
]
MaxValuesOption = Annotated[
    int,
    typer.Option(
        "--max-values",
        min=0,
        help="Tensors with at most this many elements show their values; larger, a summary.",
    ),
]


@app.command("list")
def list_exercises() -> None:
    """List the exercises with their formulas."""
    table = Table(title="Exercises (run one: trace SLUG --out graph.svg)")
    for column in ("slug", "source", "formula", "manual gradient", "shapes"):
        table.add_column(column)
    for e in exercises.all_exercises():
        table.add_row(e.slug, e.source, e.formula, e.manual, e.shapes)
    console.print(table)


def render_options(detail: str, saved: bool) -> RenderOptions:
    if detail not in DETAILS:
        raise TracerError(f"unknown detail level '{detail}': use one of " + ", ".join(DETAILS))
    return RenderOptions(detail=detail, saved=saved)  # type: ignore[arg-type]


FramesOption = Annotated[
    Path | None,
    typer.Option(
        "--frames",
        help="Also step through the backward pass: one picture per engine step into this "
        "folder (step-00.svg, ...), or one page per step when it ends in .pdf. Without "
        "--out, only the frames are written.",
    ),
]
FrameFormatOption = Annotated[
    str, typer.Option("--format", "-f", help="The frames' format (with --frames): svg or png.")
]


def _exercise_command(ex: exercises.Exercise) -> Callable[..., None]:
    def command(
        ctx: typer.Context,
        out: OutOption = Path("graph.svg"),
        detail: DetailOption = "full",
        saved: SavedOption = False,
        max_values: MaxValuesOption = DEFAULT_MAX_VALUES,
        frames: FramesOption = None,
        frame_format: FrameFormatOption = "svg",
    ) -> None:
        from tracer.frames import check_target, write_frames

        # Typer's click: the source is an enum whose DEFAULT means --out was not given.
        given = getattr(ctx.get_parameter_source("out"), "name", "DEFAULT") != "DEFAULT"
        picture = out if frames is None or given else None
        try:
            options = render_options(detail, saved)
            if picture is not None:
                check_writable(picture)
            if frames is not None:
                check_target(frames, frame_format)
            recording = ex.run(max_values=max_values)
            typer.echo(format_report(recording))
            if picture is not None:
                write(recording, picture, options)
                typer.echo(f"wrote {picture}")
            if frames is not None:
                written = write_frames(recording, frames, frame_format, options)
                typer.echo(
                    f"wrote {len(written)} frame(s) to {frames}"
                    if frames.suffix.lower() != ".pdf"
                    else f"wrote {frames}"
                )
        except TracerError as e:
            raise fail(str(e)) from None
        if recording.passed is False:
            raise typer.Exit(1)

    command.__doc__ = f"{ex.formula}  —  {ex.source}. Trace, check against {ex.manual}, draw."
    return command


for _ex in exercises.all_exercises():
    app.command(_ex.slug, rich_help_panel="Exercises")(_exercise_command(_ex))


PictureFormatOption = Annotated[
    str,
    typer.Option(
        "--format",
        "-f",
        help="The pictures' format: svg, png, pdf, dot, json or html (a page that steps "
        "through the backward pass).",
    ),
]
OutDirOption = Annotated[
    Path | None,
    typer.Option(
        "--out",
        "-o",
        help="The folder for the pictures, one per backward call (default: NAME-traces).",
    ),
]


def _trace_user_code(
    source: Path, out: Path | None, fmt: str, look: tuple[str, bool], execute: Callable[[], Any]
) -> None:
    """Run the user's code (`execute`), write its pictures, print the summary, exit."""
    from tracer import runner

    out = out or Path(f"{source.stem}-traces")
    try:
        options = render_options(*look)
        runner.check_out_dir(out, fmt)
        result = execute()
        runner.write_pictures(result, out, fmt, options)
    except TracerError as e:
        raise fail(str(e)) from None
    if result.passes:
        console.print(runner.summary_table(result))
        typer.echo(f"wrote {len(result.pictures)} picture(s) to {out}")
    if result.stray_checks:
        typer.echo(
            f"warning: {result.stray_checks} comparison(s) came before any backward pass "
            "and are in no picture",
            err=True,
        )
    if result.older_pictures:
        typer.echo(f"note: {out} also holds {len(result.older_pictures)} older picture(s)")
    if result.error:
        raise fail(result.error)
    if not result.passes:
        raise fail(f"no backward pass was run: nothing to draw ({source} never called backward)")
    if result.passed is False:
        raise typer.Exit(1)


_RUN_HELP = (
    "Run your script as `python SCRIPT ARGS` would; draw each backward call and its checks."
    "\n\nThe script is executed, unchanged, in this process, in the current directory. "
    "One picture per backward call (01-line12.svg, ...) goes to --out, with the checks made "
    "after it: tracer.check(...), and torch.allclose(...) on a gradient."
)
_NOTEBOOK_HELP = (
    "Run your notebook's code cells as Jupyter would; draw each backward call and its checks."
    "\n\nThe cells are executed, unchanged, in this process: in order, in one namespace, in "
    "the notebook's folder. IPython magics and !shell lines are skipped with a warning. One "
    "picture per backward call (01-cell4-line3.svg, ...) goes to --out."
)


@app.command(
    "run",
    help=_RUN_HELP,
    context_settings={"ignore_unknown_options": True},
    rich_help_panel="Your own code",
)
def run_script(
    script: Annotated[Path, typer.Argument(help="The Python file to run.", show_default=False)],
    args: Annotated[
        list[str] | None,
        typer.Argument(help="Arguments for the script (its sys.argv[1:]).", show_default=False),
    ] = None,
    out: OutDirOption = None,
    fmt: PictureFormatOption = "svg",
    detail: DetailOption = "full",
    saved: SavedOption = False,
    max_values: MaxValuesOption = DEFAULT_MAX_VALUES,
) -> None:
    """Run a script under a trace; one picture per backward call (see `_RUN_HELP`)."""
    from tracer import runner

    _trace_user_code(
        script,
        out,
        fmt,
        (detail, saved),
        lambda: runner.run_script(script, args or (), max_values=max_values),
    )


@app.command("notebook", help=_NOTEBOOK_HELP, rich_help_panel="Your own code")
def run_notebook(
    notebook: Annotated[Path, typer.Argument(help="The .ipynb file.", show_default=False)],
    out: OutDirOption = None,
    fmt: PictureFormatOption = "svg",
    detail: DetailOption = "full",
    saved: SavedOption = False,
    max_values: MaxValuesOption = DEFAULT_MAX_VALUES,
) -> None:
    """Run a notebook under a trace; one picture per backward call (see `_NOTEBOOK_HELP`)."""
    from tracer import runner

    def warn(message: str) -> None:
        typer.echo(f"warning: {message}", err=True)

    _trace_user_code(
        notebook,
        out,
        fmt,
        (detail, saved),
        lambda: runner.run_notebook(notebook, max_values=max_values, warn=warn),
    )


@app.command("gallery")
def gallery(
    out: Annotated[Path, typer.Option("--out", "-o", help="The gallery's folder.")] = Path(
        "gallery"
    ),
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Re-run every exercise and compare with the folder, writing nothing: exit 1 "
            "when a check fails or a file is missing or out of date.",
        ),
    ] = False,
) -> None:
    """Trace, check and draw every exercise into one folder: <slug>.svg, .png, .gv and a
    README.md with each picture, formula, manual gradient and largest error."""
    from rich.progress import Progress

    from tracer.gallery import build_gallery, check_gallery

    every = exercises.all_exercises()
    err = Console(stderr=True)
    try:
        with Progress(console=err, transient=True, disable=not err.is_terminal) as bar:
            task = bar.add_task("checking" if check else "rendering", total=len(every))

            def advance(_: exercises.Exercise) -> None:
                bar.advance(task)

            if check:
                problems = check_gallery(out, every, advance)
            else:
                problems = [f for e in build_gallery(out, every, advance) for f in e.failures]
    except TracerError as e:
        raise fail(str(e)) from None
    if not check:
        typer.echo(f"wrote {len(every)} exercises to {out} (see {out / 'README.md'})")
    for problem in problems:
        typer.echo(f"problem: {problem}", err=True)
    if problems:
        raise typer.Exit(1)
    if check:
        typer.echo(f"{out} is up to date: {len(every)} exercises, every check agrees")


# --- run / notebook commands (issue 5) ---


if __name__ == "__main__":
    app()
