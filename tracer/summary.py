"""Summary: tensors reduced to plain numbers (`TensorData`), many at once, never raising.

Capture hands over every tensor a pass touched (forward values, gradients, saved tensors)
only after the pass, so the work here never runs inside autograd's engine. Each tensor
object is summarised once, however often it was handed over (a gradient that is both a
node's arrival and an edge's label).

Small tensors keep their values (one copy out, statistics in Python). Large ones get
norm, min and max from two reductions on the tensor itself (no copy, no mask); only
when a result is not finite does the slow path count NaN and Inf. A tensor that cannot
be read (sparse, meta, nested, batched under vmap, quantized, a functorch wrapper) keeps
its shape and dtype and a `note` saying why it was not summarised.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Any

import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode

from tracer.graph import DEFAULT_MAX_VALUES, TensorData
from tracer.quiet import quiet_torch

_NAN = math.nan


_DTYPE_NAMES: dict[torch.dtype, str] = {}


def _dtype_name(t: torch.Tensor) -> str:
    dtype = t.dtype
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = _DTYPE_NAMES[dtype] = str(dtype).removeprefix("torch.")
    return name


# Tensors of these types whose values can be read as they are (no conjugate or negative
# bit, no complex or bool to convert): the common case takes no detours.
_PLAIN_TYPES = (torch.Tensor, torch.nn.Parameter)
_REAL = {torch.float64, torch.float32, torch.float16, torch.bfloat16}


def _unreadable(t: torch.Tensor) -> str | None:
    """Why the values of `t` cannot be read, or None when they can."""
    if t.layout != torch.strided:
        return f"{str(t.layout).removeprefix('torch.')} layout"
    if t.is_meta:
        return "meta tensor (no data)"
    if t.is_nested:
        return "nested tensor"
    if t.is_quantized:
        return "quantized tensor"
    functorch = torch._C._functorch
    if functorch.is_functorch_wrapped_tensor(t) or functorch.is_batchedtensor(t):
        return "batched or transformed by torch.func (vmap, grad)"
    if type(t) not in _PLAIN_TYPES:
        return f"tensor subclass {type(t).__name__}"
    return None


def _empty(t: torch.Tensor, note: str | None = None) -> TensorData:
    return TensorData(
        shape=tuple(t.shape),
        dtype=_dtype_name(t),
        values=None if note else (),
        norm=_NAN if note else 0.0,
        min=_NAN,
        max=_NAN,
        note=note,
    )


def _readable(t: torch.Tensor) -> torch.Tensor:
    """`t` as a plain real tensor of its values (conjugation and negation resolved)."""
    if t.dtype in _REAL and not t.is_neg() and not t._is_zerotensor():
        return t  # the common case (we run under no_grad: no detach needed)
    d = t.detach()
    if d._is_zerotensor():
        return torch.zeros(d.shape, dtype=d.dtype, device=d.device)
    if d.is_conj():
        d = d.resolve_conj()
    if d.is_neg():
        d = d.resolve_neg()
    if d.is_complex():
        d = torch.view_as_real(d)  # the statistics of the real and imaginary parts
    if d.dtype == torch.bool:
        d = d.to(torch.uint8)
    return d


def _from_values(t: torch.Tensor, values: tuple[float, ...]) -> TensorData:
    norm = math.sqrt(math.fsum(v * v for v in values))
    if math.isfinite(norm):  # no NaN or Inf among them (either would make it so)
        return TensorData(tuple(t.shape), _dtype_name(t), values, norm, min(values), max(values))
    finite = [v for v in values if math.isfinite(v)]
    nan = sum(1 for v in values if math.isnan(v))
    inf = len(values) - len(finite) - nan
    if finite:
        lo, hi, norm = min(finite), max(finite), math.sqrt(math.fsum(v * v for v in finite))
    else:
        lo = hi = norm = _NAN
    return TensorData(tuple(t.shape), _dtype_name(t), values, norm, lo, hi, nan, inf)


def _slow_statistics(t: torch.Tensor, d: torch.Tensor) -> TensorData:
    """Statistics over the finite values only, counting NaN and Inf: a copy and masks."""
    x = d.to("cpu", torch.float64)
    finite_mask = torch.isfinite(x)
    nan = int(torch.isnan(x).sum())
    inf = x.numel() - int(finite_mask.sum()) - nan
    finite = x[finite_mask]
    if finite.numel():
        lo, hi = float(finite.min()), float(finite.max())
        norm = float(torch.linalg.vector_norm(finite))
    else:
        lo = hi = norm = _NAN
    return TensorData(tuple(t.shape), _dtype_name(t), None, norm, lo, hi, nan, inf)


class Summarizer:
    """Collects tensors, then summarises each distinct one once (`run`).

    `add` returns a key; after `run`, `result(key)` is the TensorData. Nothing here raises
    for an odd tensor: what cannot be summarised gets a note.
    """

    def __init__(self, max_values: int = DEFAULT_MAX_VALUES) -> None:
        self.max_values = max_values
        self._tensors: dict[Hashable, torch.Tensor] = {}
        self._results: dict[Hashable, TensorData] = {}
        self._kept: list[torch.Tensor] = []
        # Summarising inside the engine runs torch ops there: only when no dispatch mode of
        # the user's (which would see them) is active.
        self._now = _get_current_dispatch_mode() is None
        self._early: list[tuple[Any, ...]] = []  # (key, shape, dtype, norm, min, max) of add_now

    def add(self, t: torch.Tensor, version: int | None = None) -> Hashable:
        """Queue `t`; `version` is its `_version` when it was recorded (None: now)."""
        if version is not None and _safe_version(t) != version:
            key: Hashable = ("overwritten", id(t))
            self._results[key] = _empty(t, "overwritten in place after it was recorded")
            self._kept.append(t)  # keeps the id unique while we live
            return key
        key = id(t)  # unique while we hold `t`, which we do until `run` is done
        self._tensors[key] = t
        return key

    def add_now(self, t: torch.Tensor) -> Hashable:
        """Like `add`, called from inside autograd's engine (a hook): a large plain CPU
        tensor has its norm, min and max computed right away and is not kept, so that the
        pass's gradients are freed as they would be untraced (keeping them all costs more
        than the reductions: fresh memory for every later gradient). Anything else, and a
        tensor with NaN or Inf (counted later), is kept for `run`."""
        if (
            self._now
            and t.dtype in _REAL
            and t.numel() > self.max_values
            and type(t) in _PLAIN_TYPES
            and t.device.type == "cpu"
            and t.layout == torch.strided
            and not t.is_neg()
            and not t._is_zerotensor()
            and not _is_functorch(t)
        ):
            try:
                d = t.detach()  # no graph of our own, whatever the grad mode (create_graph)
                if _function_modes():  # ours, or the user's: they should not see these
                    with torch._C.DisableTorchFunction():
                        low_high, norm = torch.aminmax(d), torch.linalg.vector_norm(d)
                else:
                    low_high, norm = torch.aminmax(d), torch.linalg.vector_norm(d)
                if math.isfinite(norm.item()):  # then so is every value
                    key = ("now", len(self._early))
                    self._early.append((key, t.shape, t.dtype, norm, *low_high))
                    return key
            except Exception:
                pass  # summarised later, the careful way
        return self.add(t)

    def result(self, key: Hashable) -> TensorData:
        return self._results[key]

    def run(self) -> None:
        """Summarise everything queued; the tensors are released afterwards."""
        with quiet_torch():
            small: list[tuple[Hashable, torch.Tensor, torch.Tensor]] = []
            large: list[tuple[Hashable, torch.Tensor, torch.Tensor]] = []
            for key, t in self._tensors.items():
                try:
                    note = _unreadable(t)
                    if note:
                        self._results[key] = _empty(t, f"not summarised: {note}")
                        continue
                    numel = t.numel()
                    if numel == 0:
                        self._results[key] = _empty(t)
                        continue
                    item = (key, t, _readable(t))
                    (small if numel <= self.max_values else large).append(item)
                except Exception as e:  # an odd tensor must never break the user's program
                    self._results[key] = _empty(t, f"not summarised: {type(e).__name__}")
            self._small(small)
            self._large(large)
            self._finish_early()
        self._tensors.clear()
        self._kept.clear()

    def _finish_early(self) -> None:
        """The reductions `add_now` started, moved to the host in one transfer."""
        if not self._early:
            return
        columns = zip(*(entry[3:] for entry in self._early), strict=True)  # norms, mins, maxs
        table = torch.stack([torch.stack(column).double() for column in columns]).tolist()
        numbers = zip(*table, strict=True)
        for (key, shape, dtype, *_), (norm, lo, hi) in zip(self._early, numbers, strict=True):
            name = _DTYPE_NAMES.get(dtype) or str(dtype).removeprefix("torch.")
            self._results[key] = TensorData(tuple(shape), name, None, norm, lo, hi)
        self._early.clear()

    def _small(self, items: list[tuple[Hashable, torch.Tensor, torch.Tensor]]) -> None:
        """Values and statistics of small tensors, many at once: one concatenation per
        dtype and device, reductions per segment, one copy to the host."""
        groups: dict[tuple[torch.dtype, torch.device], list[Any]] = {}
        for item in items:
            groups.setdefault((item[2].dtype, item[2].device), []).append(item)
        for group in groups.values():
            try:
                flat = torch.cat([d if d.dim() == 1 else d.reshape(-1) for _, _, d in group])
                flat = flat.to(torch.float64)
                lengths = [d.numel() for _, _, d in group]
                segments = torch.tensor(lengths, device=flat.device)
                stats = torch.stack(
                    [
                        torch.segment_reduce(flat * flat, "sum", lengths=segments).sqrt(),
                        torch.segment_reduce(flat, "min", lengths=segments),
                        torch.segment_reduce(flat, "max", lengths=segments),
                    ]
                ).cpu()
                values = flat.cpu().tolist()
                norms, mins, maxs = stats.tolist()
            except Exception:  # one at a time, so that one odd tensor spoils only itself
                for key, t, d in group:
                    try:
                        one = tuple(float(v) for v in d.cpu().reshape(-1).tolist())
                        self._results[key] = _from_values(t, one)
                    except Exception as e:
                        self._results[key] = _empty(t, f"not summarised: {type(e).__name__}")
                continue
            start = 0
            results = self._results
            isfinite = math.isfinite
            for (key, t, _), n, norm, lo, hi in zip(group, lengths, norms, mins, maxs, strict=True):
                one = tuple(values[start : start + n])
                start += n
                if isfinite(norm):  # no NaN or Inf (either would make it so)
                    results[key] = TensorData(tuple(t.shape), _dtype_name(t), one, norm, lo, hi)
                else:
                    results[key] = _from_values(t, one)

    def _large(self, items: list[tuple[Hashable, torch.Tensor, torch.Tensor]]) -> None:
        """Norm, min and max of each large tensor, on the tensor itself (no copy): the
        norms of a dtype and device in one fused call, min and max one call each, the
        results moved to the host in one transfer per group."""
        groups: dict[tuple[torch.dtype, torch.device], list[Any]] = {}
        for key, t, d in items:
            if not d.is_floating_point():
                d = d.to(torch.float64)
            groups.setdefault((d.dtype, d.device), []).append((key, t, d))
        for group in groups.values():
            tensors = [d for _, _, d in group]
            try:
                norms = torch._foreach_norm(tensors)
                lows, highs = zip(*(torch.aminmax(d) for d in tensors), strict=True)
                numbers = torch.stack(
                    [torch.stack(norms), torch.stack(lows), torch.stack(highs)]
                ).to("cpu", torch.float64)
                table = zip(*numbers.tolist(), strict=True)
            except Exception:  # one at a time, so that one odd tensor spoils only itself
                table = (self._one_large(d) for d in tensors)
            for (key, t, d), (norm, lo, hi) in zip(group, table, strict=True):
                if math.isfinite(norm) and math.isfinite(lo) and math.isfinite(hi):
                    self._results[key] = TensorData(
                        tuple(t.shape), _dtype_name(t), None, norm, lo, hi
                    )
                else:  # NaN or Inf somewhere (or a norm that overflowed): count them
                    try:
                        self._results[key] = _slow_statistics(t, d)
                    except Exception as e:
                        self._results[key] = _empty(t, f"not summarised: {type(e).__name__}")

    @staticmethod
    def _one_large(d: torch.Tensor) -> tuple[float, float, float]:
        try:
            lo, hi = torch.aminmax(d)
            return float(torch.linalg.vector_norm(d)), float(lo), float(hi)
        except Exception:
            return _NAN, _NAN, _NAN  # the slow path then says what it can


def _is_functorch(t: torch.Tensor) -> bool:
    return torch._C._functorch.is_functorch_wrapped_tensor(t)


def _function_modes() -> int:
    return torch._C._len_torch_function_stack()


def _safe_version(t: torch.Tensor) -> int | None:
    try:
        return t._version
    except Exception:
        return None


def summarize(t: torch.Tensor, max_values: int = DEFAULT_MAX_VALUES) -> TensorData:
    """One tensor reduced to plain numbers (values when small, statistics always)."""
    summarizer = Summarizer(max_values)
    key = summarizer.add(t)
    summarizer.run()
    return summarizer.result(key)
