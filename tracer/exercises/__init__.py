"""The exercise registry: what each exercise is, without importing torch to say it.

An exercise is a plain function (in `lecture.py`, `chapter5.py`, `classic.py`) that builds
its inputs, runs the forward computation and `backward`, and returns the hand-derived
gradient of each input it checks, keyed by the input::

    def exercise_a() -> Manual:
        x = torch.tensor([...], dtype=torch.float64, requires_grad=True)
        z = torch.dot(x, x)
        f = torch.log(1 + z)
        f.backward()
        return {x: 2 * x / (1 + z)}

Its description (slug, title, formula, manual gradient, shapes, source) and the function's
name are registered in `_catalog.py`; the function's module is imported when it runs.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tracer.errors import TracerError
from tracer.model.forward import Direction
from tracer.model.graph import Recording
from tracer.model.options import DEFAULT_CAPTURE, CaptureOptions

if TYPE_CHECKING:
    from tracer.exercises._inputs import Manual

# The `trace` command's own commands: `trace SLUG` runs an exercise, so no slug may be one.
COMMANDS = ("list", "run", "notebook", "gallery")
_SLUG = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


@dataclass(frozen=True)
class Exercise:
    slug: str
    title: str
    source: str
    formula: str  # the function, in Unicode
    manual: str  # the hand-derived gradient, in Unicode
    shapes: str
    function: str  # "package.module:function", imported when the exercise runs
    explain: bool = False  # the gallery's slide picture shows each op's chain-rule step
    # Forward mode beside reverse mode, always, along this direction ("e1"): the gallery's
    # variant of an exercise (`exercise-a-forward`); `--forward` adds it to any exercise.
    forward: str | None = None

    @property
    def fn(self) -> Callable[[], Manual]:
        """The exercise's function (this imports its module, and torch)."""
        module, _, name = self.function.partition(":")
        found: Any = getattr(importlib.import_module(module), name)
        return found

    def run(
        self, capture: CaptureOptions = DEFAULT_CAPTURE, forward: Direction | None = None
    ) -> Recording:
        """Trace the exercise, recording what `capture` says, and check every manual
        gradient it returns. With `forward`, run it once more in forward mode along that
        direction, over its inputs that require grad (tracer.checks.forward_mode)."""
        from tracer.checks.forward_mode import run_forward_mode
        from tracer.session import Trace

        if forward is None and self.forward is not None:
            forward = Direction.parse(self.forward)
        fn = self.fn
        with Trace.with_options(capture, self.title) as t:
            manual = fn()
            for tensor, formula in manual.items():
                t.check(tensor, formula, quiet=True)
        if forward is not None:
            t.recording.forward = run_forward_mode(fn, forward, max_values=capture.max_values)
        return t.recording


_REGISTRY: dict[str, Exercise] = {}


def register(*exercises: Exercise) -> None:
    """Add exercises; a ValueError for a slug that is taken, malformed, or a command's."""
    for ex in exercises:
        if not _SLUG.match(ex.slug):
            raise ValueError(f"exercise slug {ex.slug!r}: use lowercase letters, digits and -")
        if ex.slug in COMMANDS:
            raise ValueError(f"exercise slug {ex.slug!r} is a `trace` command: choose another")
        if ex.slug in _REGISTRY:
            raise ValueError(f"two exercises are named {ex.slug!r}")
        if ":" not in ex.function:
            raise ValueError(f"exercise {ex.slug!r}: function must be 'module:function'")
        _REGISTRY[ex.slug] = ex


def all_exercises() -> list[Exercise]:
    importlib.import_module(f"{__name__}._catalog")  # registers them, once
    return list(_REGISTRY.values())


def get(slug: str) -> Exercise:
    """The exercise named `slug`, or a TracerError listing the known ones."""
    known = {e.slug: e for e in all_exercises()}
    if slug not in known:
        raise TracerError(f"unknown exercise '{slug}': known exercises are " + ", ".join(known))
    return known[slug]
