"""The one exception type for a user's mistake (its message is a single line saying what
to do), and the one way tracer warns about its own trouble (`warn`)."""

from __future__ import annotations

import sys
import warnings


class TracerError(Exception):
    """Bad input or a missing tool. The CLI prints the message alone and exits non-zero."""


def warn(message: str, stacklevel: int = 2) -> None:
    """Tracer's own trouble, as a RuntimeWarning. Where the user's filters turn warnings
    into errors (`warnings.simplefilter("error")`), it is printed to stderr instead: a
    problem of tracer's never becomes the user's exception."""
    try:
        warnings.warn(message, RuntimeWarning, stacklevel=stacklevel + 1)
    except Warning:
        print(f"{message} (a warning)", file=sys.stderr)
