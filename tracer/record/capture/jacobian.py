"""Local Jacobians: what an op's own backward sends for each basis vector of its outputs.

For the step-through page's Jacobian panel, and only when a trace is asked for them
(`CaptureOptions.jacobians`). A node's post-hook, which the engine runs after the node's
backward and before it frees what the node saved, calls the node again once per element
of its outputs with a basis vector `e_i`: what it returns for input slot s is row i of
∂out/∂in_s. The node's backward is exactly the function that computed the pass's
gradient, so its Jacobian is exact where a formula would be a second implementation.

What keeps this an observer:
- only small ops (at most JACOBIAN_SIZE output elements and as many per input: the
  matrix fits a panel) of real floating dtypes, dense;
- only torch's own generated nodes (`MulBackward0`): never a custom
  `autograd.Function`'s node or anything else that runs Python (a `CopySlices`, whose
  inner node is not exposed, neither), never a leaf's `AccumulateGrad`, and never a node
  whose saved tensors have unpack hooks (`saved_tensors_hooks`, activation
  checkpointing): unpacking again would run the user's hook twice;
- the basis vectors are tracer's own tensors, and the call runs under `no_grad` and hidden
  from the user's modes (`quiet_torch`); nothing the engine holds is passed in or kept: the
  results are reduced to numbers before the hook returns;
- the node's saved tensors are only read (unpacked, which checks their versions as the
  engine's call did); a call that raises keeps no Jacobian and the pass goes on.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any

import torch

from tracer.model.graph import Jacobian
from tracer.record.quiet import quiet_torch
from tracer.record.summary import summarise

# A Jacobian has at most this many rows (output elements) and columns (an input's
# elements): 16 × 16, what a panel shows readably.
JACOBIAN_SIZE = 16

# torch's generated backward nodes: `MulBackward0`, `MvBackward0`, `SoftmaxBackward0`.
_GENERATED = re.compile(r"[A-Za-z0-9_]+Backward\d+")
_REAL = (torch.float64, torch.float32, torch.float16, torch.bfloat16)


@functools.cache
def _raw_saved_attributes(node_type: Any) -> tuple[str, ...]:
    """The `_raw_saved_*` attributes of a grad_fn class (the SavedTensor objects, read
    without unpacking them); once per class."""
    return tuple(a for a in dir(node_type) if a.startswith("_raw_saved_"))


@functools.cache
def _generated(node_type: Any) -> bool:
    """Whether a grad_fn class is one of torch's generated C++ nodes (no Python runs in
    its backward): its name, and no Python class of autograd.Function's among its bases."""
    from torch.autograd.function import BackwardCFunction

    return bool(_GENERATED.fullmatch(node_type.__name__)) and not issubclass(
        node_type, BackwardCFunction
    )


def _without_unpack_hooks(fn: Any) -> bool:
    """Whether unpacking what `fn` saved runs no hook of the user's."""
    for attr in _raw_saved_attributes(fn.__class__):
        try:
            saved = getattr(fn, attr)
        except Exception:
            return False
        for one in saved if isinstance(saved, (list, tuple)) else (saved,):
            if one is not None and getattr(one, "unpack_hook", None) is not None:
                return False
    return True


def _small(t: torch.Tensor | None) -> bool:
    """A plain dense real tensor of at most JACOBIAN_SIZE elements (not a subclass, nor
    one of torch.func's wrapped tensors: a pass under vmap, `is_grads_batched`)."""
    return (
        t is not None
        and type(t) is torch.Tensor
        and not torch._C._functorch.is_functorch_wrapped_tensor(t)
        and t.layout == torch.strided
        and not t.is_meta
        and t.dtype in _REAL
        and 0 < t.numel() <= JACOBIAN_SIZE
    )


def wanted(fn: Any) -> bool:
    """Whether `fn` is a node whose Jacobian may be taken (before the pass: its class and
    saved tensors; the sizes are known only once gradients flow)."""
    return _generated(fn.__class__) and _without_unpack_hooks(fn)


def local_jacobians(
    fn: Any,
    grad_inputs: Sequence[torch.Tensor | None],
    grad_outputs: Sequence[torch.Tensor | None],
) -> list[Jacobian]:
    """The Jacobians of `fn` for each input slot that received a small gradient, taken
    while the pass runs `fn`'s post-hook; [] when the node is not small (or a call raised).
    Never raises: it runs inside the user's backward."""
    outputs = [o for o, g in enumerate(grad_outputs) if g is not None]
    arrived = [g for g in grad_outputs if g is not None]
    if not arrived or not all(_small(g) for g in arrived):
        return []
    if sum(g.numel() for g in arrived) > JACOBIAN_SIZE:
        return []
    slots = [s for s, g in enumerate(grad_inputs) if _small(g)]
    if not slots:
        return []
    try:
        with quiet_torch():
            rows = _rows(fn, grad_outputs, outputs)
            found = (_jacobian(s, outputs, rows, grad_inputs[s]) for s in slots)
            return [j for j in found if j is not None]
    except Exception:  # a node that cannot be called again: no panel for it
        return []


def _rows(
    fn: Any, grad_outputs: Sequence[torch.Tensor | None], outputs: list[int]
) -> list[list[torch.Tensor | None]]:
    """What `fn` sends down each slot for each basis vector of its outputs, in order."""
    zeros = [
        None if g is None else torch.zeros(g.shape, dtype=g.dtype, device=g.device)
        for g in grad_outputs
    ]
    rows: list[list[torch.Tensor | None]] = []
    for o in outputs:
        like = zeros[o]
        assert like is not None
        for i in range(like.numel()):
            basis = like.clone()
            basis.view(-1)[i] = 1
            given = list(zeros)
            given[o] = basis
            sent = fn(*given)
            rows.append(list(sent) if isinstance(sent, (tuple, list)) else [sent])
    return rows


def _jacobian(
    slot: int,
    outputs: list[int],
    rows: list[list[torch.Tensor | None]],
    sent: torch.Tensor | None,
) -> Jacobian | None:
    """One slot's matrix from the rows; None when the node left every row undefined. Each
    row is reduced to the input as the engine reduces what a node returns (summed over the
    dimensions the forward broadcast, cast to the input's dtype), so that J is the
    Jacobian of the input the op was given; a row left undefined is zeros."""
    assert sent is not None
    column = [row[slot] if slot < len(row) else None for row in rows]
    if all(r is None for r in column):
        return None
    matrix = torch.stack(
        [
            torch.zeros(sent.numel(), dtype=sent.dtype)
            if r is None
            else r.detach().sum_to_size(sent.shape).to(sent.dtype).reshape(-1).cpu()
            for r in column
        ]
    )
    return Jacobian(slot, tuple(outputs), summarise(matrix, max_values=matrix.numel()))
