"""Memory: no tensor outlives its untraced lifetime.

Tracer keeps numbers, not tensors: a large forward value, gradient, constant or saved
tensor is summarised as it is made (tracer.record.summary.QuickSummary), whatever its
dtype, and what cannot be read is noted at once. So a tensor's storage dies where it does
untraced, and the peak memory of a program is what it is untraced.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
import weakref
from collections.abc import Callable
from typing import Any

import pytest
import torch

import tracer
from tracer.record.summary import QuickSummary, summarise

# -- the quick summary is the careful one ------------------------------------------------


def _large_tensors() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    f32 = torch.randn(40, 30, generator=gen)
    c64 = torch.randn(40, 30, generator=gen, dtype=torch.complex64)
    with_nan = f32.clone()
    with_nan[3, 4], with_nan[5, 6], with_nan[7, 8] = math.nan, math.inf, -math.inf
    return {
        "float32": f32,
        "float64 transposed": f32.double().t(),
        # Dense views that are not contiguous are reduced as the run of memory they cover
        # (QuickSummary._plain); the careful way reduces the view itself.
        "float32 permuted, at an offset into its storage": torch.randn(2, 8, 10, 12, generator=gen)[
            1
        ].permute(2, 0, 1),
        "float32 permuted, with a dimension of size 1": torch.randn(
            40, 1, 30, generator=gen
        ).permute(2, 1, 0),
        "float32 every other column (not dense)": f32[:, ::2],
        "float32 expanded (a stride of 0)": torch.randn(30, generator=gen).expand(40, 30),
        "float16": f32.half(),
        "bfloat16": f32.bfloat16(),
        "complex64": c64,
        "complex128 conjugate (a conj bit)": c64.to(torch.complex128).conj(),
        "imaginary part of a conjugate (a neg bit)": c64.conj().imag,
        "complex negative view of a conjugate": torch._neg_view(c64.conj()),
        "complex with NaN": torch.complex(with_nan, f32),
        "float32 with NaN and Inf": with_nan,
        "int64": torch.arange(-600, 600).reshape(40, 30),
        "bool": f32 > 0,
        "unallocated zeros": torch._efficientzerotensor(40, 30),
    }


LARGE = _large_tensors()


@pytest.mark.parametrize("name", list(LARGE))
def test_the_quick_summary_is_the_careful_one(name: str) -> None:
    """Summarised at once (reductions on the tensor, its conj and neg bits read, not
    resolved) or in a batch after the pass (a resolved copy, view_as_real): the same
    statistics, min and max exactly, the norm up to the order of summation."""
    t = LARGE[name]
    quick = QuickSummary(max_values=0).summarise(t)
    careful = summarise(t, max_values=0)
    assert quick is not None and quick.note is None and careful.note is None
    assert (quick.shape, quick.dtype, quick.values) == (careful.shape, careful.dtype, None)
    assert (quick.min, quick.max, quick.nan, quick.inf) == (
        careful.min,
        careful.max,
        careful.nan,
        careful.inf,
    )
    assert quick.norm == pytest.approx(careful.norm, rel=1e-3 if t.dtype.itemsize <= 2 else 1e-6)


def test_a_complex_tensors_statistics_are_those_of_its_parts() -> None:
    z = torch.tensor([3 + 4j, -1 - 2j] * 40, dtype=torch.complex64)
    data = QuickSummary(max_values=0).summarise(z.conj())
    assert data is not None
    assert (data.min, data.max) == (-4.0, 3.0)  # conjugated: imaginary parts -4 and 2
    assert data.norm == pytest.approx(math.sqrt(40 * (25 + 5)))


def test_a_dense_view_of_a_tensor_just_summarised_is_not_reduced_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A transpose or permutation of a tensor just summarised covers the same memory: its
    summary is the tensor's, with its own shape, and no reduction runs for it; a view of
    other memory of the same storage (another offset) is reduced."""
    from tracer.record import summary

    reduced: list[tuple[int, ...]] = []
    reduce = summary._extremes_and_norm

    def counted(t: torch.Tensor, numel: int, flat: bool) -> Any:
        reduced.append(tuple(t.shape))
        return reduce(t, numel, flat)

    monkeypatch.setattr(summary, "_extremes_and_norm", counted)
    base = torch.randn(2, 8, 10, 12, generator=torch.Generator().manual_seed(1))
    quick = QuickSummary(max_values=64)
    block = base[1]  # alive while its view is summarised (the cache holds it weakly)
    first = quick.summarise(block)
    view = quick.summarise(block.permute(2, 0, 1))
    other = quick.summarise(base[0].permute(2, 0, 1))
    assert reduced == [(8, 10, 12), (12, 8, 10)]  # base[1] and base[0]'s view, once each
    assert first is not None and view is not None and other is not None
    assert view.shape == (12, 8, 10)
    assert (view.norm, view.min, view.max) == (first.norm, first.min, first.max)
    assert (other.min, other.max) == (base[0].min().item(), base[0].max().item())


class _Subclass(torch.Tensor):
    pass


def test_a_tensor_that_cannot_be_read_is_noted_at_once() -> None:
    """Large and unreadable (meta, sparse), or a subclass of any size: a note, now, so
    that nothing is kept to say it later."""
    quick = QuickSummary(max_values=64)
    odd = [torch.empty(10, 10, device="meta"), torch.eye(10).to_sparse()]
    odd.append(torch.ones(3).as_subclass(_Subclass))
    for t in odd:
        data = quick.summarise(t)
        assert data is not None and data.note is not None, t
        assert data.note.startswith("not summarised: ")
        assert data.note == summarise(t).note  # what the careful way would say


# -- lifetimes: a storage dies where it dies untraced ----------------------------------------

N = 256  # 65,536 numbers: large


def _forward_value(dtype: torch.dtype) -> Callable[[], bool]:
    """An op's output the program lets go of (a mul by a number saves nothing)."""

    def program() -> bool:
        x = torch.randn(N, N, dtype=dtype, requires_grad=True)
        y = x * 2.0
        storage = weakref.ref(y.untyped_storage())
        z = y * 3.0
        del y
        dead = storage() is None
        z.abs().sum().backward()
        return dead

    return program


def _small_view(dtype: torch.dtype) -> Callable[[], bool]:
    """A small view into a large output (kept until backward, it would keep it all)."""

    def program() -> bool:
        x = torch.randn(N, N, dtype=dtype, requires_grad=True)
        y = x * 2.0
        storage = weakref.ref(y.untyped_storage())
        z = y[0, :3] * 3.0
        del y
        dead = storage() is None
        z.abs().sum().backward()
        return dead

    return program


def _constant(dtype: torch.dtype) -> Callable[[], bool]:
    """An input needing no grad, which the op (an add) does not save."""

    def program() -> bool:
        x = torch.randn(N, N, dtype=dtype, requires_grad=True)
        noise = torch.randn(N, N, dtype=dtype)
        storage = weakref.ref(noise.untyped_storage())
        z = x + noise
        del noise
        dead = storage() is None
        z.abs().sum().backward()
        return dead

    return program


def _gradient(dtype: torch.dtype) -> Callable[[], bool]:
    """A gradient the engine lets go of once the next node has used it: dead by the time
    the leaf's gradient is made."""

    def program() -> bool:
        x = torch.randn(N, N, dtype=dtype, requires_grad=True)
        y = x * 2.0
        seen: list[weakref.ref] = []
        dead: list[bool] = []
        y.register_hook(lambda g: seen.append(weakref.ref(g.untyped_storage())))
        x.register_hook(lambda g: dead.append(seen[0]() is None))
        (y * 3.0).abs().sum().backward()
        return dead == [True]

    return program


PROGRAMS = {
    "forward value": _forward_value,
    "small view": _small_view,
    "constant": _constant,
    "gradient": _gradient,
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64], ids=str)
@pytest.mark.parametrize("kind", list(PROGRAMS))
def test_a_large_tensor_dies_where_it_dies_untraced(kind: str, dtype: torch.dtype) -> None:
    program = PROGRAMS[kind](dtype)
    assert program()  # the premise: untraced, it is freed there
    with tracer.trace(saved=True):
        assert program()


# -- peak memory, each program in a fresh process -----------------------------------------------

_PEAK = textwrap.dedent(
    """
    import contextlib, sys
    import torch
    import tracer

    kind, dtype, device, traced = sys.argv[1], getattr(torch, sys.argv[2]), sys.argv[3], sys.argv[4]

    def resident(field):
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith(field))

    torch.manual_seed(0)
    cuda = device == "cuda"
    before = torch.cuda.memory_allocated() if cuda else resident("VmRSS:")
    x = torch.randn(2048, 2048, dtype=dtype, device=device, requires_grad=True)
    with tracer.trace() if traced == "1" else contextlib.nullcontext():
        y = x
        for _ in range(24):
            if kind == "scalar":
                y = y * 1.0001
            else:  # a fresh constant each step, which the add does not save
                y = y + torch.randn(2048, 2048, dtype=dtype, device=device)
        y.abs().sum().backward()
    peak = torch.cuda.max_memory_allocated() if cuda else resident("VmHWM:")
    print(peak - before)
    """
)


def _peak(kind: str, dtype: str, device: str, traced: bool) -> int:
    """Bytes the program's peak takes above what the process held before it began."""
    env = dict(os.environ)
    # glibc otherwise raises its mmap threshold as large blocks are freed and keeps later
    # ones resident in its heap after they are freed: the peak would be the allocator's
    # whims, not the tensors alive.
    env["MALLOC_MMAP_THRESHOLD_"] = str(1 << 20)
    result = subprocess.run(
        [sys.executable, "-c", _PEAK, kind, dtype, device, "1" if traced else "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return int(result.stdout.split()[-1])


DEVICES: list[Any] = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU here"),
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    ("kind", "dtype"),
    [("scalar", "complex64"), ("scalar", "float32"), ("constants", "float32")],
)
def test_the_peak_traced_is_the_peak_untraced(kind: str, dtype: str, device: str) -> None:
    """24 ops on a 2048×2048 tensor, each intermediate freed as the next is made: traced,
    the peak stays within 1.3× of the untraced one (no tensor is kept for the picture)."""
    plain = _peak(kind, dtype, device, traced=False)
    traced = _peak(kind, dtype, device, traced=True)
    assert traced <= 1.3 * plain, f"traced {traced / 2**20:.0f} MiB, untraced {plain / 2**20:.0f}"
