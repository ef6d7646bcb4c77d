"""Running the user's code under a trace: what it gave (`RunResult`), and how it stopped.

Shared by `tracer.run.script` and `tracer.run.notebook`. Whatever the code raises — any
BaseException, even one whose message cannot be printed — ends as one line naming the
place in the user's code; the passes recorded before it are kept.

A process the code forks (`os.fork()`) that comes back out of it, rather than ending in
`os._exit` as a DataLoader's worker does, ends as Python would end it
(`end_forked_child`): tracer's wrap-up — the summary, the pictures — is its parent's.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NoReturn

from tracer.model.explain import InPlaceError, NoGradient
from tracer.model.flow import GradientFlow
from tracer.model.graph import UnrecordedPasses
from tracer.model.location import Location, Locator, error_location, is_user_file
from tracer.model.options import DEFAULT_CAPTURE, CaptureOptions
from tracer.model.passes import Pass, passes
from tracer.view.report import explanations, no_gradient_line
from tracer.view.text import inplace_error_text

_FREED_GRAPH = "Trying to backward through the graph a second time"


@dataclass
class RunResult:
    """What running the user's code gave: the passes, and how the code stopped."""

    source: Path
    passes: list[Pass]
    error: str | None = None  # one line; None when the code ran to its end
    exit_code: int = 0  # the code's own exit status: N from sys.exit(N), else 0
    stray_checks: int = 0  # comparisons made before any backward pass
    pictures: list[Path] = field(default_factory=list)
    older_pictures: list[Path] = field(default_factory=list)
    # Passes seen but not recorded, with where the user's code made them.
    unrecorded: list[tuple[UnrecordedPasses, Location | None]] = field(default_factory=list)
    # What the trace explains, one line each: a .grad read as None and why, where a
    # gradient first became NaN or Inf (tracer.view.report.explanations).
    explained: list[str] = field(default_factory=list)
    passes_run: int = 0  # the backward passes counted, recorded or not (see model.selection)
    # The gradient flow over every pass (tracer.model.flow).
    flow: GradientFlow = field(default_factory=GradientFlow)

    @property
    def passed(self) -> bool | None:
        verdicts = [p.passed for p in self.passes if p.passed is not None]
        return all(verdicts) if verdicts else None


class Stopped(Exception):
    """The user's code stopped; `message` already says where and why, in one line."""

    def __init__(self, message: str, exit_code: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def exit_status(exit: SystemExit) -> int:
    """The process status `python` gives for this SystemExit: 0, N, or 1 for a message."""
    if exit.code is None:
        return 0
    return exit.code if isinstance(exit.code, int) else 1


def _text(value: object, fallback: str) -> str:
    """str(value), or `fallback` when its __str__ itself fails."""
    try:
        return str(value)
    except BaseException:  # a broken __str__ must not lose the pictures
        return fallback


# What the trace can say of an error the user's code raised (tracer.session.Trace.explain):
# handed to the code's runner, which describes its own errors (a notebook's cells).
Explain = Callable[[BaseException], InPlaceError | NoGradient | None]


def describe_error(
    error: BaseException, locate: Locator, explained: InPlaceError | NoGradient | None = None
) -> str:
    """One line: where in the user's code, and what went wrong (`explained`: what the
    trace could say of it, see tracer.session.Trace.explain)."""
    kind = type(error).__name__
    if isinstance(error, SyntaxError) and error.filename:
        place = locate(error.filename, error.lineno or 0)
        return f"{place.spoken()}: SyntaxError: {_text(error.msg, 'invalid syntax')}"
    where = error_location(error.__traceback__, locate)
    prefix = f"{where.spoken()}: " if where else ""
    if isinstance(error, KeyboardInterrupt):
        return f"{prefix}interrupted"
    if isinstance(error, SystemExit):
        try:
            code = repr(error.code)
        except BaseException:
            code = f"<unprintable {type(error.code).__name__}>"
        return f"{prefix}the code called exit({code})"
    if isinstance(explained, InPlaceError):
        at, saved_at = (
            None if place is None else locate(*place).spoken()
            for place in (explained.where, explained.saved_where)
        )
        return f"{prefix}{kind}: {inplace_error_text(explained, at, saved_at)}"
    text = _text(error, f"<unprintable {kind}>").strip()
    if isinstance(explained, NoGradient):  # the error's own line read that .grad
        first = text.splitlines()[0].strip() if text else kind
        why = no_gradient_line(replace(explained, where=None), locate)
        return f"{prefix}{kind}: {first} ({why})"
    if isinstance(error, RuntimeError) and _FREED_GRAPH in text:
        return (
            f"{prefix}backward through a graph that was already freed: the first backward() "
            "frees the graph's saved tensors; pass retain_graph=True to the earlier backward "
            "call to run backward through the same graph again"
        )
    first = text.splitlines()[0].strip() if text else ""
    return f"{prefix}{kind}" + (f": {first}" if first else "")


def end_forked_child(raised: BaseException | None) -> NoReturn:
    """End a process the user's code forked, which came back out of that code having
    `raised` (or not), as Python ends a program: SystemExit as it is (its status, or its
    message printed); another exception's traceback, from the user's code in, through
    `sys.excepthook`, then status 1 (a KeyboardInterrupt too: Python itself would end
    by SIGINT); the end of the code, status 0. Python's exit runs the atexit functions
    (tracer registers none)."""
    if raised is None:
        raise SystemExit(0)
    if isinstance(raised, SystemExit):
        raise raised
    if isinstance(raised, Stopped):  # the notebook runner's: its message says it all
        print(raised.message, file=sys.stderr)
        raise SystemExit(raised.exit_code or 1)
    tb = raised.__traceback__
    while tb is not None and not is_user_file(tb.tb_frame.f_code.co_filename):
        tb = tb.tb_next  # tracer's runner (and runpy, IPython) above the user's code
    # Python prints the exception's own __traceback__, whatever tb it is handed.
    sys.excepthook(type(raised), raised.with_traceback(tb), tb)
    raise SystemExit(1)


def run_traced(
    source: Path,
    locate: Locator,
    body: Callable[[Explain], None],
    capture: CaptureOptions = DEFAULT_CAPTURE,
) -> RunResult:
    """Run `body` (which runs the user's code) under a trace; never raises for the code,
    but in a process the code forked, which it ends (`end_forked_child`)."""
    from tracer.run.shown import watching_prints  # torch: only once user code is run
    from tracer.session import Trace

    error, exit_code = None, 0
    raised: BaseException | None = None
    process = os.getpid()
    with Trace.with_options(capture) as t:
        try:
            with watching_prints():  # printed tensors: maybe manual results (tracer.checks.manual)
                body(t.explain)
        except SystemExit as e:
            raised, exit_code = e, exit_status(e)
            if exit_code:
                error = describe_error(e, locate)
        except Stopped as e:
            raised, error, exit_code = e, e.message, e.exit_code
        except BaseException as e:  # the user's code may raise anything, GeneratorExit too
            raised, error = e, describe_error(e, locate, t.explain(e))
    if os.getpid() != process:
        end_forked_child(raised)
    stray = sum(c.after == 0 for c in t.recording.checks)
    result = RunResult(source, passes(t.recording, locate), error, exit_code, stray, flow=t.flow)
    result.explained = explanations(t.recording, locate)
    result.unrecorded = [
        (entry, None if entry.source is None else locate(*entry.source))
        for entry in t.recording.unrecorded
    ]
    result.passes_run = t.recording.passes_run
    return result
