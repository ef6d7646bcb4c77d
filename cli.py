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
from tracer.render import FORMATS, check_writable, write
from tracer.report import format_check

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


def _exercise_command(ex: exercises.Exercise) -> Callable[..., None]:
    def command(
        out: OutOption = Path("graph.svg"),
        max_values: MaxValuesOption = DEFAULT_MAX_VALUES,
    ) -> None:
        try:
            check_writable(out)
            recording = ex.run(max_values=max_values)
            for check in recording.checks:
                typer.echo(format_check(check))
            write(recording, out)
        except TracerError as e:
            raise fail(str(e)) from None
        typer.echo(f"wrote {out}")
        if recording.passed is False:
            raise typer.Exit(1)

    command.__doc__ = f"{ex.formula}  —  {ex.source}. Trace, check against {ex.manual}, draw."
    return command


for _ex in exercises.all_exercises():
    app.command(_ex.slug, rich_help_panel="Exercises")(_exercise_command(_ex))


# --- run / notebook commands (issue 5) ---


if __name__ == "__main__":
    app()
