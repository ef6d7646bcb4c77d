"""The exercise registry: an exercise is one decorated function.

An exercise function builds its inputs, runs the forward computation and `backward`,
and returns the hand-derived gradient of each input it checks, keyed by the input::

    @exercise("exercise-a", title=..., source=..., formula=..., manual=..., shapes=...)
    def exercise_a() -> Manual:
        x = torch.tensor([...], dtype=torch.float64, requires_grad=True)
        z = torch.dot(x, x)
        f = torch.log(1 + z)
        f.backward()
        return {x: 2 * x / (1 + z)}

The decorator registers it; every module listed in `_MODULES` is imported on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from tracer.capture import DEFAULT_MAX_VALUES
from tracer.errors import TracerError
from tracer.graph import Recording
from tracer.session import trace

Manual = Mapping[torch.Tensor, torch.Tensor]

# The modules holding exercises, in the order `trace list` shows them.
_MODULES = ("lecture", "chapter5", "classic")


@dataclass(frozen=True)
class Exercise:
    slug: str
    title: str
    source: str
    formula: str  # the function, in Unicode
    manual: str  # the hand-derived gradient, in Unicode
    shapes: str
    fn: Callable[[], Manual]

    def run(self, *, max_values: int = DEFAULT_MAX_VALUES) -> Recording:
        """Trace the exercise and check every manual gradient it returns."""
        with trace(self.title, max_values=max_values) as t:
            manual = self.fn()
            for tensor, formula in manual.items():
                t.check(tensor, formula, quiet=True)
        return t.recording


def randn(gen: torch.Generator, *shape: int) -> torch.Tensor:
    """Seeded standard-normal float64 values: the exercises' inputs."""
    return torch.randn(shape, generator=gen, dtype=torch.float64)


_REGISTRY: dict[str, Exercise] = {}


def exercise(
    slug: str, *, title: str, source: str, formula: str, manual: str, shapes: str
) -> Callable[[Callable[[], Manual]], Callable[[], Manual]]:
    """Register the decorated function as the exercise `slug`."""

    def register(fn: Callable[[], Manual]) -> Callable[[], Manual]:
        if slug in _REGISTRY:
            raise ValueError(f"two exercises are named {slug!r}")
        _REGISTRY[slug] = Exercise(slug, title, source, formula, manual, shapes, fn)
        return fn

    return register


def all_exercises() -> list[Exercise]:
    for module in _MODULES:
        importlib.import_module(f"{__name__}.{module}")
    return list(_REGISTRY.values())


def get(slug: str) -> Exercise:
    """The exercise named `slug`, or a TracerError listing the known ones."""
    known = {e.slug: e for e in all_exercises()}
    if slug not in known:
        raise TracerError(f"unknown exercise '{slug}': known exercises are " + ", ".join(known))
    return known[slug]
