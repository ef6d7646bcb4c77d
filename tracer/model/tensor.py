"""A tensor reduced to plain numbers (`TensorData`): what every graph and check holds."""

from __future__ import annotations

from dataclasses import dataclass


# Not frozen, on purpose: a capture makes thousands of these per pass, and a frozen
# dataclass's __init__ (object.__setattr__ per field) is 6x slower. Treat them as values.
@dataclass
class TensorData:
    """A tensor reduced to plain numbers: its values when small, a summary always.

    `values` is the flattened tensor (row-major) when it has at most the capture's
    `max_values` elements, else None. The statistics ignore NaN and Inf, which are counted.
    A complex tensor's values are its real and imaginary parts in turn; its norm is the
    complex norm, its min and max are over both parts (complex numbers have no order).
    `note` says why a tensor was not summarised (a sparse or meta tensor, one overwritten
    in place after it was recorded): then only its shape and dtype are known.
    """

    shape: tuple[int, ...]
    dtype: str
    values: tuple[float, ...] | None
    norm: float
    min: float
    max: float
    nan: int = 0
    inf: int = 0
    note: str | None = None

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def finite(self) -> bool:
        return self.nan == 0 and self.inf == 0

    @property
    def summarised(self) -> bool:
        return self.note is None
