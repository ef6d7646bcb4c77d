"""The `trace` command: a thin Typer layer over the tracer library.

    trace list                            the exercises
    trace exercise-a --out graph.svg      trace one, check it, draw it
    trace run script.py -- ARGS           your own script, one picture per backward call

Every user mistake ends in one line on stderr and exit code 2; a check that fails ends in
exit code 1 (the picture of the failure is still written). `trace --help`, `trace list`
and `trace --version` do not import torch: it is imported when code is traced.

This module is installed as `tracer.cli`; the top-level `cli.py` of the repository is a
short shim that imports it, so no top-level `cli` module lands in site-packages.
"""

from __future__ import annotations

import functools
import gc
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup

from tracer import exercises
from tracer.errors import TracerError
from tracer.model.collector import paused_gc
from tracer.model.forward import Direction
from tracer.model.options import DEFAULT_MAX_VALUES, CaptureOptions
from tracer.model.selection import DEFAULT_PASSES, SMALL_RUN, PassSelection, parse_passes
from tracer.output.page import page_capture
from tracer.output.pictures import PICTURE_FORMATS, drawn_pictures
from tracer.output.render import DETAILS, EVERY_DEPTH, FORMATS, RenderOptions, check_writable, write
from tracer.view.grades import format_grade_sheet
from tracer.view.report import format_report
from tracer.view.text import (
    PASS_COLUMNS,
    flow_summary,
    pass_cells,
    passes_text,
    unrecorded_text,
)

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table


@functools.cache
def console() -> Console:
    """The terminal for tables, made on first use: rich's console and tables are imported
    only by the commands that print one (not by `trace SLUG`, which starts torch)."""
    from rich.console import Console

    return Console()


# Whether this process is the console script's own (set by `main`): only then may
# `_import_torch` tune the cyclic collector, which belongs to whoever owns the process.
_OWN_PROCESS = False


def _import_torch() -> None:
    """Import torch for a command about to trace (it takes seconds), in the console
    script's own process: with the cyclic collector paused while torch makes its ~165,000
    objects (it would walk them again and again as they pile up: a tenth of the time
    `import torch` takes), then those frozen (`gc.freeze`): they live as long as the
    process, so no later collection, nor the one at exit, walks them either. Elsewhere (a
    CliRunner in tests) it does nothing: torch is imported where it is used, as usual."""
    if not _OWN_PROCESS or "torch" in sys.modules:
        return
    with paused_gc():
        import torch  # noqa: F401

        gc.freeze()  # before the collector is back, or its next pass walks them all


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one line on stderr; the caller raises the returned Exit."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _help_option(option: Any) -> Any:
    if option is not None:
        option.metavar = ""  # a flag: typer would show "<bool>"
    return option


class _Command(TyperCommand):
    """Help that shows metavars (PATH, N) and flags bare, never typer's raw <bool>, <str>."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if param.param_type_name == "argument":  # its name column says it all
                param.display_type_rich = lambda ctx: None  # type: ignore[attr-defined]

    def get_help_option(self, ctx: Any) -> Any:
        return _help_option(super().get_help_option(ctx))


class _Group(TyperGroup):
    """One line for every mistake on the command line, and the known names for a typo."""

    def get_help_option(self, ctx: Any) -> Any:
        return _help_option(super().get_help_option(ctx))

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            slugs = [e.slug for e in exercises.all_exercises()]
            commands = [c for c in self.commands if c not in slugs]
            raise fail(
                f"unknown exercise or command '{args[0]}': exercises are {', '.join(slugs)}; "
                f"commands are {', '.join(commands)}"
            )
        return super().resolve_command(ctx, args)

    def main(
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        given = (args, prog_name, complete_var)
        if not standalone_mode:
            return super().main(*given, False, windows_expand_args, **extra)
        try:
            code = super().main(*given, False, windows_expand_args, **extra)
        except typer.TyperException as e:  # a usage error: typer would draw a box of it
            ctx = getattr(e, "ctx", None)
            command = f"trace {ctx.info_name}" if ctx is not None else "trace"
            command = "trace" if command == "trace trace" else command
            typer.echo(f"error: {e.format_message()} (see `{command} --help`)", err=True)
            sys.exit(e.exit_code)
        except typer.Abort:
            typer.echo("aborted", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=_Group,
    help="Trace PyTorch's autograd graph, draw the gradient on every edge, check it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(show: bool) -> None:
    if not show:
        return
    from importlib import metadata

    from tracer.output.graphviz import dot_version

    versions = []
    for package in ("tracer", "torch"):
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{package} (not installed)")
    versions.append(f"Graphviz {dot_version() or '(dot not installed)'}")
    typer.echo(", ".join(versions))  # torch's version without importing torch (seconds)
    raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", metavar="", is_eager=True, callback=_version, help="Show the versions."
        ),
    ] = False,
) -> None:
    """Trace PyTorch's autograd graph, draw the gradient on every edge, check it."""


# -- options shared by several commands, each declared once ---------------------------------

Detail = Enum("Detail", {d: d for d in DETAILS}, type=str)  # type: ignore[misc]
PictureFormat = Enum("PictureFormat", {f: f for f in PICTURE_FORMATS}, type=str)  # type: ignore[misc]
FrameFormat = Enum("FrameFormat", {f: f for f in ("svg", "png")}, type=str)  # type: ignore[misc]


@dataclass(frozen=True)
class View:
    """How much the pictures show."""

    options: RenderOptions
    capture: CaptureOptions


def view_options(
    detail: Annotated[
        Detail,
        typer.Option(
            "--detail",
            help="slide: names, ops, gradients (for projecting); full: also each node's "
            "forward value beside its gradient, shapes, dtypes and saved tensors.",
        ),
    ] = Detail.full,  # type: ignore[attr-defined]
    saved: Annotated[
        bool,
        typer.Option("--saved", metavar="", help="Show what autograd saved for backward."),
    ] = False,
    max_values: Annotated[
        int,
        typer.Option(
            "--max-values",
            min=0,
            metavar="N",
            help="Tensors with at most N elements show their values; larger, a summary.",
        ),
    ] = DEFAULT_MAX_VALUES,
    explain: Annotated[
        bool,
        typer.Option(
            "--explain",
            metavar="",
            help="Show each op's chain-rule step per input (torch's own formula) in the "
            "slide view too; the full view always shows it.",
        ),
    ] = False,
    depth: Annotated[
        str | None,
        typer.Option(
            "--depth",
            metavar="N",
            show_default=False,
            help="Draw every nn.Module nested deeper than N as one box (its class, "
            "parameter count, the gradients in and out); `all`: every node. Default: the "
            "deepest depth that fits a slide.",
        ),
    ] = None,
    focus: Annotated[
        str | None,
        typer.Option(
            "--focus",
            metavar="NAME",
            show_default=False,
            help="Draw one module (its qualified name: layers.3.self_attn) in full and the "
            "rest collapsed.",
        ),
    ] = None,
    quiz: Annotated[
        bool,
        typer.Option(
            "--quiz",
            metavar="",
            help="The step-through page (.html) hides every gradient until you reveal it; "
            "a small one you may type in and check first.",
        ),
    ] = False,
) -> View:
    return View(
        RenderOptions(
            detail=detail.value,
            saved=saved,
            explain=explain,
            depth=parse_depth(depth),
            focus=focus or None,
            quiz=quiz,
        ),
        CaptureOptions(max_values=max_values, saved=saved),
    )


def parse_depth(depth: str | None) -> int | None:
    """--depth: a number ≥ 0, `all` (nothing collapsed) or nothing (fit the slide)."""
    if depth is None:
        return None
    if depth.strip().lower() == "all":
        return EVERY_DEPTH
    try:
        value = int(depth)
    except ValueError:
        value = -1
    if value < 0:
        raise typer.BadParameter(
            f"'{depth}': give a whole number ≥ 0 or `all`", param_hint="--depth"
        )
    return value


@dataclass(frozen=True)
class Pictures:
    """Where the pictures of `trace run` and `trace notebook` go, and in which format."""

    out: Path | None
    fmt: str
    passes: PassSelection


def picture_options(
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            metavar="FOLDER",
            show_default=False,
            help="The folder for the pictures, one per backward call (default: NAME-traces).",
        ),
    ] = None,
    fmt: Annotated[
        PictureFormat,
        typer.Option("--format", "-f", help="The pictures' format."),
    ] = PictureFormat.svg,  # type: ignore[attr-defined]
    passes: Annotated[
        str | None,
        typer.Option(
            "--passes",
            metavar="SPEC",
            show_default=False,
            help="The backward passes to record and draw: `1,2,-1` (negative counts from "
            "the end), `1-5`, `every 100`, `all`. Default: every pass when the run makes at "
            f"most {SMALL_RUN}, else the first 3 and the last. A pass not recorded runs "
            "with nothing of tracer's on its nodes.",
        ),
    ] = None,
) -> Pictures:
    try:
        selection = DEFAULT_PASSES if passes is None else parse_passes(passes)
    except TracerError as e:
        raise fail(str(e)) from None
    return Pictures(out, fmt.value, selection)


def uses(**groups: Callable[..., Any]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command the options of each group: `@uses(view=view_options)` replaces the
    command's parameter `view` by view_options's options, and passes it their result."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        own = inspect.signature(command, eval_str=True)
        parameters = [p for p in own.parameters.values() if p.name not in groups]
        names = {}
        for name, group in groups.items():
            shared = _parameters(group)
            names[name] = [p.name for p in shared]
            parameters += [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in shared]

        @functools.wraps(command)
        def wrapper(**given: Any) -> Any:
            for name, group in groups.items():
                given[name] = group(**{p: given.pop(p) for p in names[name]})
            return command(**given)

        wrapper.__signature__ = own.replace(parameters=parameters)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
        return wrapper

    return decorate


@functools.cache
def _parameters(group: Callable[..., Any]) -> tuple[inspect.Parameter, ...]:
    """A group's options, their annotations evaluated once (every exercise's command
    shares view_options's)."""
    return tuple(inspect.signature(group, eval_str=True).parameters.values())


# -- the exercises ----------------------------------------------------------------------------


@app.command("list", cls=_Command)
def list_exercises() -> None:
    """List the exercises with their formulas."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title="Exercises (run one: trace SLUG --out graph.svg)")
    for column in ("slug", "source", "formula", "manual gradient", "shapes"):
        table.add_column(column)
    for e in exercises.all_exercises():  # Text: a formula's [ ] is not rich markup
        table.add_row(*(Text(s) for s in (e.slug, e.source, e.formula, e.manual, e.shapes)))
    console().print(table)


def exercise_command(ex: exercises.Exercise) -> Callable[..., None]:
    """The command `trace SLUG`: trace the exercise, report, draw; exit 1 when it disagrees."""

    @uses(view=view_options)
    def command(
        ctx: typer.Context,
        view: View,
        out: Annotated[
            Path,
            typer.Option(
                "--out",
                "-o",
                metavar="PATH",
                help="Where to write the picture; the suffix picks the format: "
                + ", ".join("." + f for f in FORMATS),
            ),
        ] = Path("graph.svg"),
        frames: Annotated[
            Path | None,
            typer.Option(
                "--frames",
                metavar="PATH",
                show_default=False,
                help="Also step through the backward pass: one picture per engine step into "
                "this folder (step-00.svg, ...), or one page per step when it ends in .pdf. "
                "Without --out, only the frames are written.",
            ),
        ] = None,
        frame_format: Annotated[
            FrameFormat,
            typer.Option("--format", "-f", help="The frames' format (with --frames)."),
        ] = FrameFormat.svg,  # type: ignore[attr-defined]
        forward: Annotated[
            bool,
            typer.Option(
                "--forward",
                metavar="",
                help="Also run it in forward mode (torch.autograd.forward_ad) along a "
                "direction v: the tangent on every op, J·v checked against reverse mode.",
            ),
        ] = False,
        direction: Annotated[
            str | None,
            typer.Option(
                "--direction",
                metavar="V",
                show_default=False,
                help="Forward mode's direction over the inputs: e3 (a basis vector) or "
                "numbers (0,1,0,...); implies --forward. Default: e1.",
            ),
        ] = None,
    ) -> None:
        # Typer's click: the source is an enum whose DEFAULT means --out was not given.
        given = getattr(ctx.get_parameter_source("out"), "name", "DEFAULT") != "DEFAULT"
        picture = out if frames is None or given else None
        try:
            along = Direction.parse(direction) if direction is not None else None
        except TracerError as e:
            raise fail(f"--direction: {e}") from None
        along = along or (Direction() if forward else None)
        _trace_exercise(ex, view, picture, frames, frame_format, along)

    command.__doc__ = escape(
        f"{ex.formula}  —  {ex.source}. Trace, check against {ex.manual}, draw."
    )
    return command


def _trace_exercise(
    ex: exercises.Exercise,
    view: View,
    picture: Path | None,
    frames: Path | None,
    frame_format: FrameFormat,
    forward: Direction | None = None,
) -> None:
    """Trace the exercise (and run it in forward mode along `forward`), print its report,
    write the picture and the frames asked for; every target is checked before tracing.
    Exit 1 when a check disagrees."""
    from tracer.output.frames import check_target, write_frames

    try:
        if picture is not None:
            check_writable(picture)
        if frames is not None:
            check_target(frames, frame_format.value)
        _import_torch()
        fmt = None if picture is None else picture.suffix.lower().lstrip(".")
        recording = ex.run(page_capture(view.capture, fmt), forward)
        typer.echo(format_report(recording))
        for graph in recording.backward_graphs() if len(recording.checks) > 1 else ():
            typer.echo(f"\ngrade sheet of backward pass {graph.number}")
            typer.echo(format_grade_sheet(graph, recording.checks))
        if picture is not None:
            lighter: list[str] = []
            write(recording, picture, view.options, lighter)
            typer.echo(f"wrote {picture}")
            for note in lighter:
                typer.echo(f"note: {note}")
            _print_notes([recording], view.options)
        if frames is not None:
            written = write_frames(recording, frames, frame_format.value, view.options)
            typer.echo(
                f"wrote {len(written)} frame(s) to {frames}"
                if frames.suffix.lower() != ".pdf"
                else f"wrote {frames}"
            )
    except TracerError as e:
        raise fail(str(e)) from None
    if recording.passed is False:
        raise typer.Exit(1)


for _ex in exercises.all_exercises():
    app.command(_ex.slug, cls=_Command, rich_help_panel="Exercises")(exercise_command(_ex))


# -- your own code ----------------------------------------------------------------------------


def summary_table(source: Path, result: Any) -> Table:
    """Each backward call: where it was made, its size, the verdicts, its picture."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(f"Backward passes in {source}"))
    for column in PASS_COLUMNS:
        table.add_column(column, justify="right" if column in ("#", "nodes") else "left")
    drawn = drawn_pictures(result.pictures)
    for p in result.passes:
        style = {True: "green", False: "red", None: ""}[p.passed]
        picture = drawn.get(p.number)
        cells = pass_cells(p, None if picture is None else picture.name)
        table.add_row(*(Text(c) for c in cells), style=style)  # Text: no markup in names
    return table


def _print_notes(recordings: list[Any], options: RenderOptions) -> None:
    """Say which pictures show collapsed modules, and how to see more (one line each)."""
    from tracer.output.dot import notes

    for recording in recordings:
        for note in notes(recording, options):
            typer.echo(f"note: {note}")


def _print_grade_sheets(passes: list[Any]) -> None:
    """Each pass with several checks: its grade sheet, in the engine's order."""
    for p in passes:
        if len(p.recording.checks) > 1:
            typer.echo(f"\n{p.recording.title}: grade sheet")
            typer.echo(format_grade_sheet(p.recording.graphs[0], p.recording.checks))


def _trace_user_code(source: Path, pictures: Pictures, view: View, execute: Any) -> None:
    """Run the user's code (`execute`), write its pictures, print the summary, exit."""
    from tracer.output.pictures import prepare_out_dir, write_pictures
    from tracer.output.runpage import RUN_PAGE, write_run

    out = pictures.out or Path(f"{source.stem}-traces")
    try:
        folder = prepare_out_dir(out, pictures.fmt)
        result = execute(page_capture(replace(view.capture, passes=pictures.passes), pictures.fmt))
        drawn = write_pictures(result.passes, folder, pictures.fmt, view.options, pages=True)
        result.pictures, result.older_pictures = drawn.written, drawn.older
        if result.passes:  # the run's page and its gradient flow, beside the pictures
            write_run(folder, f"Training run of {source}", result.passes, drawn, result.flow)
        for note in drawn.notes:
            typer.echo(f"note: {note}")
        if pictures.fmt not in ("json", "html"):
            _print_notes([p.recording for p in result.passes], view.options)
    except TracerError as e:
        raise fail(str(e)) from None
    if result.passes and sys.stdout.closed:  # the user's code closed it: say so elsewhere
        typer.echo(
            f"note: {source} closed stdout: the summary is not printed; "
            f"{len(result.pictures)} picture(s) are in {out}",
            err=True,
        )
    elif result.passes:
        console().print(summary_table(source, result))
        _print_grade_sheets(result.passes)
        typer.echo(flow_summary(result.flow))
        typer.echo(f"wrote {len(result.pictures)} picture(s) to {out}")
        typer.echo(f"the run's page: {out / RUN_PAGE}")
    selected = passes_text([p.number for p in result.passes], result.passes_run)
    if selected is not None:
        typer.echo(f"note: {selected}")
    if result.stray_checks:
        typer.echo(
            f"warning: {result.stray_checks} comparison(s) came before any backward pass "
            "and are in no picture",
            err=True,
        )
    for entry, where in result.unrecorded:
        typer.echo(f"note: {unrecorded_text(entry, where.spoken() if where else None)}")
    for explained in result.explained:  # a None .grad and why, the first NaN gradient
        typer.echo(f"⚠ {explained}")
    if result.older_pictures:
        typer.echo(f"note: {out} also holds {len(result.older_pictures)} older picture(s)")
    for failed, why in drawn.failed:
        typer.echo(f"error: backward pass {failed.number} is not drawn: {why}", err=True)
    if result.error:
        raise fail(result.error, result.exit_code or 2)
    if result.exit_code:
        raise typer.Exit(result.exit_code)
    if not result.passes and result.passes_run:
        raise fail(f"no backward pass was recorded: nothing to draw ({selected})")
    if not result.passes and result.unrecorded:
        raise fail(
            f"no backward pass was recorded: nothing to draw ({source} ran only the ones above)"
        )
    if not result.passes:
        raise fail(f"no backward pass was run: nothing to draw ({source} never called backward)")
    if result.passed is False:
        raise typer.Exit(1)
    if drawn.failed:
        raise typer.Exit(2)


_EXIT_STATUS = (
    "Exit status: 0; 1 when a comparison disagrees; the code's own N when it calls "
    "sys.exit(N); 2 when it raises, or for a mistake on the command line."
)
_RUN_HELP = (
    "Run your script as `python SCRIPT ARGS` would; draw each backward call and its checks."
    "\n\nThe script is executed, unchanged, in this process, in the current directory. "
    "Its own arguments go after `--`:  trace run train.py --out pics -- --lr 0.1 --epochs 3"
    "\n\nOne picture per backward call recorded (01-line12.svg, ...) goes to --out, with the "
    "checks made after it: tracer.check(...), and torch.allclose(...) on a gradient. "
    "--passes picks the calls recorded (a long training loop: the first 3 and the last)."
    "\n\n" + _EXIT_STATUS
)
_NOTEBOOK_HELP = (
    "Run your notebook's code cells as Jupyter would; draw each backward call and its checks."
    "\n\nThe cells are executed, unchanged, in this process, in an IPython shell: in order, "
    "in one namespace, in the notebook's folder; magics, !shell lines, display() and "
    "top-level await work as in Jupyter. One picture per backward call "
    "(01-cell4-line3.svg, ...) goes to --out."
    "\n\n" + _EXIT_STATUS
)


@app.command(
    "run",
    cls=_Command,
    help=_RUN_HELP,
    context_settings={"ignore_unknown_options": True},
    rich_help_panel="Your own code",
)
@uses(pictures=picture_options, view=view_options)
def run_script(
    pictures: Pictures,
    view: View,
    script: Annotated[
        str,  # as given, not a Path: "./train.py" is the script's sys.argv[0], as in Python
        typer.Argument(metavar="SCRIPT", help="The Python file to run.", show_default=False),
    ],
    args: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="ARGS",
            help="Arguments for the script (its sys.argv[1:]), after `--`.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run a script under a trace; one picture per backward call (see `_RUN_HELP`)."""
    from tracer.run.script import run_script

    _trace_user_code(
        Path(script), pictures, view, lambda c: run_script(script, args or (), capture=c)
    )


@app.command("notebook", cls=_Command, help=_NOTEBOOK_HELP, rich_help_panel="Your own code")
@uses(pictures=picture_options, view=view_options)
def run_notebook(
    pictures: Pictures,
    view: View,
    notebook: Annotated[
        Path, typer.Argument(metavar="NOTEBOOK", help="The .ipynb file.", show_default=False)
    ],
) -> None:
    """Run a notebook under a trace; one picture per backward call (see `_NOTEBOOK_HELP`)."""
    from tracer.run.notebook import run_notebook

    _trace_user_code(notebook, pictures, view, lambda c: run_notebook(notebook, capture=c))


@app.command("gallery", cls=_Command)
def gallery(
    out: Annotated[
        Path, typer.Option("--out", "-o", metavar="FOLDER", help="The gallery's folder.")
    ] = Path("gallery"),
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            metavar="",
            help="Re-run every exercise and compare with the folder, writing nothing: exit 1 "
            "when a check fails or a file is missing or out of date.",
        ),
    ] = False,
) -> None:
    """Trace, check and draw every exercise into one folder: <slug>.svg, .png, .gv and a
    README.md with each picture, formula, manual gradient and largest error."""
    _gallery(out, check)


def _gallery(out: Path, check: bool) -> None:
    """Build (or, `check`, compare) the gallery with a progress bar; exit 1 on a problem."""
    from rich.console import Console
    from rich.progress import Progress

    from tracer.gallery import build_gallery, check_gallery

    every = exercises.all_exercises()
    err = Console(stderr=True)
    _import_torch()
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


def main() -> None:
    """The console script `trace`."""
    global _OWN_PROCESS
    _OWN_PROCESS = True
    app(prog_name="trace")


if __name__ == "__main__":
    main()
