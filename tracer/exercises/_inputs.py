"""What every exercise function uses: its return type and its seeded inputs."""

from collections.abc import Mapping

import torch

# An exercise returns the hand-derived gradient of each input it checks, keyed by the input.
Manual = Mapping[torch.Tensor, torch.Tensor]


def randn(gen: torch.Generator, *shape: int) -> torch.Tensor:
    """Seeded standard-normal float64 values: the exercises' inputs."""
    return torch.randn(shape, generator=gen, dtype=torch.float64)
