"""What the user's code shows: every tensor it displays, prints or binds is handed to the
current trace, which decides whether it is a manual result (the rule is
tracer.checks.manual's). The runners (`trace run`, `trace notebook`, `%%trace`) call these.
"""

from __future__ import annotations

import builtins
import functools
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

import torch

from tracer.checks.manual import Source
from tracer.record.interception import current_trace

if TYPE_CHECKING:
    from tracer.session import Trace


def offer(value: Any, source: Source) -> None:
    """Hand a value the user's code showed (or bound) to the current trace's recogniser.

    Anything but a tensor is ignored; so is everything outside a trace."""
    if not isinstance(value, torch.Tensor):
        return
    trace = current_trace()
    if trace is not None:
        cast("Trace", trace).offer_manual(value, source)  # the only Observer there is


def offer_bindings(namespace: Mapping[str, Any], seen: dict[str, int]) -> None:
    """Offer the tensors newly bound in `namespace` since `seen` (name -> id), as "bound";
    `seen` is updated."""
    for name, value in list(namespace.items()):
        if not isinstance(value, torch.Tensor) or name.startswith("_"):
            continue
        if seen.get(name) != id(value):
            seen[name] = id(value)
            offer(value, "bound")


@contextmanager
def watching_prints() -> Iterator[None]:
    """While the user's code runs, `print` also offers its tensor arguments ("printed");
    the original `print` is back afterwards (unless the code replaced it itself)."""
    original = builtins.print

    @functools.wraps(original)
    def print_and_offer(*args: Any, **kwargs: Any) -> None:
        for value in args:
            offer(value, "printed")
        original(*args, **kwargs)

    builtins.print = print_and_offer
    try:
        yield
    finally:
        if builtins.print is print_and_offer:
            builtins.print = original
