"""Summary: tensors reduced to plain numbers (`TensorData`), many at once, never raising.

No tensor outlives its untraced lifetime: a large one (more than `max_values` numbers) is
summarised as it is made (`QuickSummary`: an op's output, a gradient inside the engine, a
constant, a saved tensor), of every dtype on every device, and a tensor that cannot be
read is noted at once; what is kept until the pass is summarised in a batch (`Summariser`)
is small: a small tensor's alias, or a copy of its numbers when it views larger memory.

Small tensors keep their values (one copy out, statistics in Python). Large ones get
norm, min and max from a few reductions on the tensor itself (no copy, no mask); only
when a result is not finite does the slow path count NaN and Inf, on a copy. A complex
tensor is summarised as its real and imaginary parts: the norm is the complex norm, min
and max are over both parts, its values are the parts in turn. A tensor that cannot be
read (sparse, meta, nested, batched under vmap, quantized, a functorch wrapper, a
subclass) keeps its shape and dtype and a `note` saying why it was not summarised.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any, TypeVar

import torch

from tracer.model.options import DEFAULT_MAX_VALUES
from tracer.model.tensor import TensorData
from tracer.record.quiet import quiet_torch

_NAN = math.nan
_T = TypeVar("_T")

# How many tensors summarised at once are remembered (weakly), so that a view of one of
# them arriving soon after is recognised (see `QuickSummary`).
_RECENT = 8


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
    # (A tensor batched by vmap is one of torch.func's wrapped tensors too.)
    if _functorch_wrapped(t):
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
    if d._is_zerotensor():  # then as any tensor of zeros (a complex one: its parts)
        d = torch.zeros(d.shape, dtype=d.dtype, device=d.device)
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
    """Statistics over the finite values only, counting NaN and Inf: a copy and masks.
    (Detached: this runs outside no_grad too, where `float()` of a tensor needing grad
    warns in the user's terminal.)"""
    x = d.detach().to("cpu", torch.float64)
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


class QuickSummary:
    """Summaries taken as tensors are made, so that tracer keeps no large tensor alive: an
    op's output in the forward recorder, a gradient inside autograd's engine (a hook), a
    tensor a node saved for backward. Untraced, each of these dies when the program or
    the engine lets go of it; traced it must too, so only its numbers are kept.

    `summarise` takes norm, min and max of a large tensor of any dtype on any device at
    once (a few reductions on the tensor itself, no copy; NaN and Inf counted on a copy
    only when there are some), says at once why a tensor that cannot be read was not
    summarised, and leaves only small plain tensors to be kept (their values are read in
    one batch with the pass: `kept_alias`). On a GPU the numbers reach the host in one
    transfer per tensor, which waits for the GPU: the price of keeping no activation.

    A tensor is often a view of one just before it (a view, transpose or reshape node
    passes its gradient on as a view; a view op's output), with the same numbers: the
    statistics of the last few tensors summarised (`_RECENT`) are remembered with a weak
    reference to the tensor, and a tensor over the same memory while it lives gets them
    without a second reduction, unless the memory was written in place since (views share
    one version counter: an in-place op on any of them, or autograd accumulating a
    gradient in place, moves it on). The weak reference keeps nothing alive.
    """

    def __init__(self, max_values: int = DEFAULT_MAX_VALUES) -> None:
        self.max_values = max_values
        # memory -> (its summary, a weak reference to the tensor, its version then)
        self._recent: dict[Hashable, tuple[TensorData, weakref.ref, int]] = {}

    def summarise(self, t: torch.Tensor) -> TensorData | None:
        """`t`'s summary, taken now; None for a small plain tensor, which the caller keeps
        (see `kept_alias`) to be summarised with its pass. Never raises for a tensor it
        cannot read: the summary says why."""
        numel = t.numel()
        plain = type(t) in _PLAIN_TYPES
        # (A small meta, sparse or torch.func tensor is kept too: it holds little memory,
        # and `Summariser.run` notes it. This runs once per op and per node.)
        if numel <= self.max_values and plain:
            return None
        if (
            plain
            and t.is_cpu
            and t.dtype in _REAL
            and t.layout == torch.strided
            and not t.is_neg()
            and not t.is_nested
            and not t._is_zerotensor()
            and not _functorch_wrapped(t)
            and not _dispatch_modes()
        ):
            return self._plain(t, numel)  # nearly every large tensor: the short way
        note = _unreadable(t)
        if note is not None:
            return _empty(t, f"not summarised: {note}")
        if t._is_zerotensor():  # autograd's unallocated zeros: nothing to reduce
            return TensorData(tuple(t.shape), _dtype_name(t), None, 0.0, 0.0, 0.0)
        span = _span(t)
        known = self.known(span, t)
        if known is not None:
            return known
        data = _reduced(t)
        self._remember(span, data, t)
        return data

    def _plain(self, t: torch.Tensor, numel: int) -> TensorData:
        """`summarise` for a plain real CPU tensor, with `_span`, `known`, `_remember` and
        `_reduced` inline: this runs once per op and per node of a pass.

        A dense view that is not contiguous (a transpose, a permutation: most gradients a
        view node passes on) is reduced as the flat run of memory it covers, which holds
        the same numbers: reductions over a permuted tensor take three to four times as
        long as over contiguous memory."""
        dtype = t.dtype
        flat = False
        if t.is_contiguous():
            span: Hashable = (t.data_ptr(), numel, dtype)
        else:
            stride = t.stride()
            flat = _dense(t.shape, stride)
            span = (
                (t.data_ptr(), numel, dtype)
                if flat
                else (t.data_ptr(), dtype, tuple(t.shape), stride)
            )
        version = _safe_version(t)
        recent = self._recent.get(span)
        if recent is not None and recent[2] == version and recent[1]() is not None:
            return _with_shape(recent[0], t)
        try:
            if _function_modes() and _function_enabled():
                with torch._C.DisableTorchFunction():  # ours, or the user's: not our calls
                    low, high, norm = _extremes_and_norm(t, numel, flat)
            else:
                low, high, norm = _extremes_and_norm(t, numel, flat)
            if math.isfinite(norm):
                data = TensorData(
                    tuple(t.shape), _dtype_name(t), None, norm, low.item(), high.item()
                )
            else:  # NaN or Inf somewhere (or a norm that overflowed): counted now
                data = _reduced(t)
        except Exception:
            data = _reduced(t)  # says what it can
        if version is not None:
            self._keep_recent(span, data, t, version)
        return data

    def _remember(self, span: Hashable, data: TensorData, t: torch.Tensor) -> None:
        version = _safe_version(t)
        if version is not None:  # (an inference tensor has no version)
            self._keep_recent(span, data, t, version)

    def _keep_recent(self, span: Hashable, data: TensorData, t: torch.Tensor, version: int) -> None:
        try:
            # A weak reference to the tensor: while it lives, its memory holds its numbers
            # (so a tensor over the same memory is a view of it, not a stranger at a reused
            # address); it keeps nothing alive. Not the storage's: a storage's Python
            # object, once made, counts as one more owner of it for as long as it lives,
            # and the engine adds a gradient into another in place only when it has no
            # other owner (tracing would change the sign of a zero sum). It may die before
            # its memory does: then a second reduction, never a wrong summary.
            ref = weakref.ref(t)
        except TypeError:
            return
        recent = self._recent
        recent[span] = (data, ref, version)
        if len(recent) > _RECENT:
            try:
                del recent[next(iter(recent))]
            except (KeyError, RuntimeError):  # another thread's op changed it just now
                pass

    def known(self, span: Hashable, t: torch.Tensor) -> TensorData | None:
        """The summary of a tensor over memory `span` (see `_span`) of `t`'s storage, if
        one was just taken and the memory has not been written since."""
        recent = self._recent.get(span)
        if recent is None:
            return None
        data, first, version = recent
        if version != _safe_version(t) or first() is None:
            return None  # written in place since, or other memory at the same address
        return _with_shape(data, t)

    def clear(self) -> None:
        self._recent.clear()


def _extremes_and_norm(
    t: torch.Tensor, numel: int, flat: bool
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Min and max (0-d tensors) and the norm of a plain real tensor; `flat`: reduced as
    the one run of memory its dense view covers (see `QuickSummary._plain`)."""
    d = t.detach()  # a detached alias: the reductions build no graph
    if flat:
        d = d.as_strided((numel,), (1,), d.storage_offset())
    low, high = torch.aminmax(d)
    return low, high, torch.linalg.vector_norm(d).item()


def _reduced(t: torch.Tensor) -> TensorData:
    """`t`'s statistics, reduced now, hidden from every mode (ours, or the user's: they
    should see only the user's calls). Never raises: a tensor no reduction can read gets
    a note."""
    try:
        if _dispatch_modes():
            with quiet_torch():
                return _statistics(t)
        if _function_modes() and _function_enabled():
            with torch._C.DisableTorchFunction():
                return _statistics(t)
        return _statistics(t)
    except Exception as e:
        return _empty(t, f"not summarised: {type(e).__name__}")


def _statistics(t: torch.Tensor) -> TensorData:
    """Norm, min and max of a large readable tensor from reductions on the tensor itself,
    never a copy of it (a copy would double the memory a large tensor takes, for a moment):
    a conjugate or negative bit is read, not resolved. A complex tensor is summarised as
    its real and imaginary parts (`torch.view_as_real`): the norm is the complex norm, min
    and max are over both parts. NaN, Inf, and dtypes the reductions do not take (integers,
    bool, and any the fast reductions refuse) go the slow way, on a float64 copy."""
    d = t.detach()  # a detached alias: the reductions build no graph
    negative = d.is_neg()
    if negative:
        d = torch._neg_view(d)  # the stored numbers; negated below
    conjugate = d.is_conj()
    if conjugate:
        d = d.conj()  # the stored numbers; their imaginary parts negated below
    if d.is_complex():
        d = torch.view_as_real(d)
    elif not d.is_floating_point():
        return _slow_statistics(t, _readable(t))
    try:
        reductions = [torch.linalg.vector_norm(d)]
        if conjugate:
            reductions.extend(torch.aminmax(d[..., 0]))
            reductions.extend(torch.aminmax(d[..., 1]))
        else:
            reductions.extend(torch.aminmax(d))
        numbers = (
            [r.item() for r in reductions]
            if d.is_cpu
            else torch.stack(reductions).tolist()  # one transfer from the device
        )
    except Exception:  # a dtype the fast reductions refuse (a float8)
        return _slow_statistics(t, _readable(t))
    norm, low, high = numbers[:3]
    if conjugate:  # the values are the real parts and the negated imaginary parts
        low, high = min(low, -numbers[4]), max(high, -numbers[3])
    if negative:
        low, high = -high, -low
    if not math.isfinite(norm):  # NaN or Inf somewhere (or a norm that overflowed)
        return _slow_statistics(t, _readable(t))
    return TensorData(tuple(t.shape), _dtype_name(t), None, norm, low, high)


def kept_alias(t: torch.Tensor, max_values: int) -> torch.Tensor:
    """What tracer keeps of a small plain tensor until its pass is summarised: a detached
    alias (it shares `t`'s version counter, so a later in-place change is seen), or the
    copy `compact_copy` makes. An alias, not `t` itself: holding `t` would count as a
    second owner of a gradient (AccumulateGrad adopts one as `.grad` only when it has no
    other owner). Hidden from every mode (ours, or the user's)."""
    return _hidden(_alias, t, max_values)


def _hidden(fn: Callable[..., _T], *args: Any) -> _T:
    """`fn(*args)`, hidden from every mode, ours or the user's (they see only the user's
    calls). It runs once per op: no context is entered that is not needed."""
    if _dispatch_modes():
        with quiet_torch():
            return fn(*args)
    if _function_modes() and _function_enabled():
        with torch._C.DisableTorchFunction():
            return fn(*args)
    return fn(*args)


def _alias(t: torch.Tensor, max_values: int) -> torch.Tensor:
    copy = _compact(t, max_values)
    return t.detach() if copy is None else copy


def compact_copy(t: torch.Tensor, max_values: int) -> torch.Tensor | None:
    """A copy of small `t`'s numbers when it is a view into more memory than a small
    tensor takes (a row of a large matrix, a gradient's slice of a concatenation's):
    keeping `t`, or an alias of it, would keep all of that memory alive. None when `t`
    holds no more than its own numbers. Hidden from every mode."""
    return _hidden(_compact, t, max_values)


def _compact(t: torch.Tensor, max_values: int) -> torch.Tensor | None:
    if not t._is_view() or t.layout != torch.strided or t.is_meta:
        return None
    try:
        larger = t.untyped_storage().nbytes() > max(max_values, 1) * t.element_size()
    except Exception:  # a view with no storage to read: nothing to free
        return None
    return t.detach().clone() if larger else None


def _with_shape(data: TensorData, t: torch.Tensor) -> TensorData:
    """`data`, the summary of another view of `t`'s numbers, with `t`'s shape (its values
    are in another order: a view of other shape keeps statistics only)."""
    shape = tuple(t.shape)
    if data.shape == shape:
        return data
    return TensorData(
        shape, data.dtype, None, data.norm, data.min, data.max, data.nan, data.inf, data.note
    )


class Summariser:
    """Collects tensors, then summarises each distinct one once (`run`).

    `add` returns a key; after `run`, `results[key]` is the TensorData. Nothing here raises
    for an odd tensor: what cannot be summarised gets a note.
    """

    def __init__(self, max_values: int = DEFAULT_MAX_VALUES) -> None:
        self.max_values = max_values
        self._tensors: dict[Hashable, torch.Tensor] = {}
        self._results: dict[Hashable, TensorData] = {}
        self._kept: list[torch.Tensor] = []
        self.quick = QuickSummary(max_values)  # for `add_now`

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
        """Like `add`, for a tensor tracer must not keep alive (a gradient, inside autograd's
        engine; a tensor a node saved for backward): summarised at once unless small and
        plain (see `QuickSummary`), and then a copy is kept (see `_now`). Never raises:
        it runs inside the user's backward."""
        try:
            if _dispatch_modes() or _function_modes():
                data, t = _hidden(self._now, t)  # one context for all of its calls
            else:  # no mode to hide from: nearly every gradient inside the engine
                data, t = self._now(t)
        except Exception:  # an odd tensor: `run` says what it can of it
            data = None
        if data is None:
            return self.add(t)
        results = self._results
        key = ("now", len(results))
        results[key] = data
        return key

    def _now(self, t: torch.Tensor) -> tuple[TensorData | None, torch.Tensor]:
        """`t`'s summary taken now, or None and a copy of it to keep for `run`.

        A copy, not an alias: the engine adds a second gradient into the first in place
        only when nothing else shares the first one's memory, and out of place otherwise,
        which can differ in the last bit (the sign of a zero sum: -0.0 + 0.0 is 0.0 in
        place, while a zero tensor added out of place leaves -0.0). A ZeroTensor has no
        memory to share and is never added into in place: it is kept as it is."""
        data = self.quick.summarise(t)
        if data is not None:
            return data, t
        if t._is_zerotensor() or t.layout != torch.strided or t.is_meta:
            return None, t.detach()
        # (a clone of a tensor that needs no grad needs no detach: one call, not two)
        return None, t.detach().clone() if t.requires_grad else t.clone()

    @property
    def results(self) -> Mapping[Hashable, TensorData]:
        """Each key's TensorData (after `run`)."""
        return self._results

    def run(self) -> None:
        """Summarise everything queued; the tensors are released afterwards.

        Large tensors over the same elements (a value and the views of it that later ops
        returned, a gradient passed on as a view) are reduced once.
        """
        with quiet_torch():
            small: list[tuple[Hashable, torch.Tensor, torch.Tensor]] = []
            large: list[tuple[Hashable, torch.Tensor, torch.Tensor]] = []
            first: dict[Hashable, Hashable] = {}  # memory -> the key reduced for it
            copies: list[tuple[Hashable, Hashable, torch.Tensor]] = []
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
                    d = _readable(t)
                    if numel <= self.max_values:
                        small.append((key, t, d))
                        continue
                    memory = _span(d)
                    same = first.get(memory)
                    if same is not None:
                        copies.append((key, same, t))
                        continue
                    if (known := self.quick.known(memory, t)) is not None:
                        self._results[key] = known  # summarised inside the engine
                        continue
                    first[memory] = key
                    large.append((key, t, d))
                except Exception as e:  # an odd tensor must never break the user's program
                    self._results[key] = _empty(t, f"not summarised: {type(e).__name__}")
            self._small(small)
            self._large(large)
            for key, same, t in copies:
                self._results[key] = _with_shape(self._results[same], t)
        self._tensors.clear()
        self._kept.clear()
        self.quick.clear()

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
                table: Iterable[tuple[float, ...]] = zip(*numbers.tolist(), strict=True)
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


def _span(t: torch.Tensor) -> Hashable:
    """The memory `t`'s numbers occupy, as a key: two tensors with the same key hold the
    same numbers (in some order) while both live. A dense tensor (contiguous, or a
    permutation of contiguous: a transpose) covers `numel` elements from its data pointer;
    any other is keyed by its exact view."""
    ptr, dtype = t.data_ptr(), t.dtype
    if t.is_contiguous():
        return (ptr, t.numel(), dtype)
    stride = t.stride()
    if _dense(t.shape, stride):
        return (ptr, t.numel(), dtype)
    return (ptr, dtype, tuple(t.shape), stride)  # this exact view


# (shape, strides) -> whether a view of that layout covers its memory densely: a graph has
# few distinct layouts, met at every pass (see `_dense`).
_DENSE: dict[tuple[tuple[int, ...], tuple[int, ...]], bool] = {}
_DENSE_KEPT = 4096


def _dense(shape: tuple[int, ...], stride: tuple[int, ...]) -> bool:
    """Whether a view of `shape` and `stride` holds `numel` elements in one run of memory
    from its first (a permutation of contiguous strides, size-1 dimensions aside)."""
    key = (shape, stride)  # a torch.Size hashes and compares as its tuple
    dense = _DENSE.get(key)
    if dense is None:
        dense = True
        expected = 1
        for step, size in sorted(zip(stride, shape, strict=True)):
            if size != 1 and step != expected:
                dense = False
                break
            expected *= size
        if len(_DENSE) < _DENSE_KEPT:
            _DENSE[(tuple(shape), tuple(stride))] = dense
    return dense


# How many torch-function and dispatch modes are on this thread's stack, whether torch
# functions are on, whether a tensor is one of torch.func's wrappers: asked for every op
# and every gradient, so bound once (C functions, no Python frame of ours around them).
_function_modes: Callable[[], int] = torch._C._len_torch_function_stack
_dispatch_modes: Callable[[], int] = torch._C._len_torch_dispatch_stack
_function_enabled: Callable[[], bool] = torch._C._is_torch_function_enabled
_functorch_wrapped: Callable[[torch.Tensor], bool] = torch._C._functorch.is_functorch_wrapped_tensor


def _safe_version(t: torch.Tensor) -> int | None:
    try:
        return t._version
    except Exception:
        return None


def summarise(t: torch.Tensor, max_values: int = DEFAULT_MAX_VALUES) -> TensorData:
    """One tensor reduced to plain numbers (values when small, statistics always)."""
    summariser = Summariser(max_values)
    key = summariser.add(t)
    summariser.run()
    return summariser.results[key]
