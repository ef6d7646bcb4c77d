"""The forward stacks anomaly mode keeps, as they are untraced: no frame of tracer's.

Under `torch.autograd.set_detect_anomaly(True)` (or `detect_anomaly()`) torch keeps, on
each node it makes, the Python stack that made it, from `torch.fx.traceback.format_stack`
(called from C++), and prints it when the node's backward fails or returns NaN
("Traceback of forward call that caused the error"). While a trace is open that function
is wrapped (tracer.record.interception), and its list of frames passes through
`as_untraced`, which takes out what only tracing put there:

- under `trace run` and `trace notebook`, every frame outside the user's program: the
  console script, typer, the runner of tracer's that calls the program (and runpy's
  frames, for a zip archive or a .pyc file), as `python script.py` has none of them;
- torch's dispatch into the forward recorder: a torch function written in Python
  (`F.relu`, a `Tensor` method) hands its call to the mode on its `handle_torch_function`
  line, through torch.overrides' dispatcher, and the recorder calls the function again.
  Of the two entries into the function, the second is the one an untraced run makes;
- every other frame of tracer's own files (the recorder's `__torch_function__`,
  `Trace.call`, the wrapper itself).

A multi-line entry (torch.fx's own stack of a node, while it preserves node metadata)
is left as it is.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch.overrides

from tracer.model.location import is_tracer_file

# One entry of traceback.format_list: '  File "path", line 12, in name\n' and the line's
# source, maybe with carets under it.
_ENTRY = re.compile(r'  File "(?P<file>.*)", line \d+, in (?P<name>.*)\n')
_DISPATCHER = os.path.realpath(torch.overrides.__file__)
_PACKAGE = Path(__file__).resolve().parent.parent
# The runners that run a whole program in tracer's process (tracer.run, a layer above:
# named here by file only): nothing outside their call of it is the user's.
_RUNNERS = {str(_PACKAGE / "run" / "script.py"), str(_PACKAGE / "run" / "notebook.py")}


class _Frame(NamedTuple):
    file: str  # as the entry writes it
    name: str


def _frame(entry: str) -> _Frame | None:
    """The file and function of a one-frame entry; None for anything else."""
    found = _ENTRY.match(entry)
    if found is None or entry.count('  File "') != 1:
        return None
    return _Frame(found["file"], found["name"])


def _real(file: str) -> str:
    return file if file.startswith("<") else os.path.realpath(file)


def as_untraced(stack: Sequence[str]) -> list[str]:
    """The entries of `stack` (outermost first) that an untraced run has (see the module
    docstring)."""
    frames = [_frame(entry) for entry in stack]
    keep = [True] * len(stack)
    runner = max(
        (i for i, f in enumerate(frames) if f is not None and _real(f.file) in _RUNNERS),
        default=None,
    )
    if runner is not None:
        start = runner + 1
        while start < len(frames) and (f := frames[start]) is not None and "runpy" in f.file:
            start += 1
        keep[:start] = [False] * start
    for i, f in enumerate(frames):
        if f is None or not is_tracer_file(f.file):
            continue
        keep[i] = False
        caller = frames[i - 2] if i >= 2 else None
        dispatcher = frames[i - 1] if i >= 1 else None
        again = frames[i + 1] if i + 1 < len(frames) else None
        if (
            caller is not None
            and dispatcher is not None
            and _real(dispatcher.file) == _DISPATCHER
            and caller == again
        ):
            keep[i - 2] = keep[i - 1] = False
    return [entry for entry, kept in zip(stack, keep, strict=True) if kept]
