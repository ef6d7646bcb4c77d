"""Recognising the hand-derived ("manual") result where the user wrote it.

A lecture notebook never calls `tracer.check`: it shows its manual result and moves on::

    z = torch.dot(x, x)
    f = torch.log(1 + z)
    (x / (1 + z)) * 2          # the manual result, shown before backward
    f.backward()

The runners (`trace notebook`, `trace run`, `%%trace`) hand every tensor the user's code
shows to `offer(value, source)`; this module decides which of them are manual results,
and of what, and compares them when the gradient exists.

The rule. A tensor `m` is a *candidate manual result* for a leaf `x` when

1. the user's code displayed it (a cell's last value: source "displayed"), printed it
   (an argument of `print`: "printed"), or bound it to a name (a name the cell or script
   left in its namespace: "bound");
2. it is a floating-point tensor computed from tensors that require grad (it has a
   `grad_fn`), through at most `MAX_NODES` autograd nodes;
3. `x` is a leaf requiring grad that `m` was computed from, and `m.shape == x.shape`;
4. `m` is not part of a traced backward pass: a forward intermediate (`y = torch.sin(x)`
   then `y.sum().backward()`) is not a manual result, whether shown before or after;
5. `m` was not computed from a gradient (`x.grad - m` or `x - lr * x.grad` are not manual
   results); and neither `x` nor `x.grad` themselves ever qualify (no `grad_fn`).

The comparison. `m` is compared with the gradient `x` has from a traced backward pass:
the pass just before `m` was shown when `x` had a gradient then, else the next traced pass
that gives `x` one (the lecture shows its formula before calling backward). The
comparison is `tracer.check`'s, recorded as a `Check` with `how="recognised"` after that
pass, with `m`'s own graph drawn beside autograd's. It is made when the next pass starts
or the trace ends, so that these come first and win:

- the user's own comparison of `x` after the same pass (`tracer.check`, `torch.allclose`,
  `==`, `torch.equal`, `isclose`): then nothing is recognised for `x` there;
- one recognised check per leaf and pass: the first candidate that agrees. When none
  agrees, a disagreement is reported only for a candidate that was clearly meant as the
  manual result: displayed or printed (not only bound: a name can hold anything), and
  computed from `x` as its only leaf of that shape with a gradient. The latest such
  candidate is reported (red on the picture, exit status 1).

Nothing here ever raises into the user's code: a failure is the trace's warning.
"""

from __future__ import annotations

import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch

from tracer.checks.compare import compare
from tracer.model.check import Check
from tracer.model.graph import Recording
from tracer.record.node_record import record_of

Source = Literal["displayed", "printed", "bound"]
# Sources that say the user meant the tensor as the result: a disagreement is reported.
CLEARLY_MEANT: frozenset[str] = frozenset({"displayed", "printed"})
# A manual formula is a short expression: a tensor whose graph is larger is not walked.
MAX_NODES = 2_000
# A run keeps at most this many undecided candidates (the oldest are dropped).
MAX_CANDIDATES = 64


@dataclass
class Candidate:
    """A tensor the user's code showed, computed from leaves of its own shape."""

    tensor: torch.Tensor
    source: str
    leaves: list[torch.Tensor]  # leaves requiring grad with the tensor's shape, in walk order
    captured: int  # its node's record.captured when offered (a later walk: in a pass)
    order: int
    after: int | None = None  # the pass whose gradient it is compared with
    grads: dict[int, torch.Tensor] = field(default_factory=dict)  # leaf index -> snapshot


def _leaves_of(tensor: torch.Tensor) -> tuple[list[torch.Tensor], bool] | None:
    """The leaves requiring grad `tensor` was computed from, and whether a gradient was
    among its constants; None when its graph is larger than MAX_NODES."""
    root = tensor.grad_fn
    assert root is not None  # the caller's check: a tensor with no graph has no candidate
    seen = {root}
    queue = deque([root])
    leaves: list[torch.Tensor] = []
    constants: list[torch.Tensor] = []
    while queue:
        fn = queue.popleft()
        if len(seen) > MAX_NODES:
            return None
        next_functions = fn.next_functions
        record = record_of(fn, next_functions)  # a touched node needs its record
        if record.constants:
            constants.extend(t for c in record.constants if (t := c.tensor) is not None)
        if type(fn).__name__ == "AccumulateGrad":
            leaves.append(fn.variable)  # type: ignore[attr-defined]  # AccumulateGrad's own
        for child, _ in next_functions:
            if child is not None and child not in seen:
                seen.add(child)
                queue.append(child)
    from_gradient = any(c is leaf.grad for c in constants for leaf in leaves)
    return leaves, from_gradient


# Records a recognised check: (name, the gradient, the manual result) -> the Check.
RecordCheck = Callable[[str, torch.Tensor, torch.Tensor], Check]


@dataclass(frozen=True)
class Deciding:
    """What deciding needs from the trace: its recording so far, the names of its tensors,
    and how to record a check. Handed in at each decision, never kept."""

    recording: Recording
    name_of: Callable[[torch.Tensor], str | None]
    record: RecordCheck


class Recogniser:
    """The candidates of one trace, and the decision (see the module docstring)."""

    def __init__(self) -> None:
        self.candidates: list[Candidate] = []
        self._offered: dict[int, weakref.ref] = {}  # id -> tensor, offered once each
        self._order = 0

    def offer(self, tensor: torch.Tensor, source: str, passes: int) -> None:
        """A tensor the user's code showed, after `passes` backward passes were recorded."""
        for c in self.candidates:
            if c.tensor is tensor:  # shown twice: the clearer source wins
                if source in CLEARLY_MEANT:
                    c.source, c.order = source, self._next()
                return
        known = self._offered.get(id(tensor))
        if known is not None and known() is tensor:
            return  # already judged not to be a candidate
        self._offered[id(tensor)] = weakref.ref(tensor)
        candidate = self._candidate(tensor, source, passes)
        if candidate is None:
            return
        self.candidates.append(candidate)
        if len(self.candidates) > MAX_CANDIDATES:
            del self.candidates[0]

    def _next(self) -> int:
        self._order += 1
        return self._order

    def _candidate(self, tensor: torch.Tensor, source: str, passes: int) -> Candidate | None:
        if tensor.grad_fn is None or not (tensor.is_floating_point() or tensor.is_complex()):
            return None
        record = record_of(tensor.grad_fn)
        if record.captured:
            return None  # walked by a backward pass already: a forward intermediate
        found = _leaves_of(tensor)
        if found is None:
            return None
        leaves, from_gradient = found
        shape = tensor.shape
        same = [leaf for leaf in leaves if leaf.shape == shape and leaf.requires_grad]
        if from_gradient or not same:
            return None
        candidate = Candidate(tensor, source, same, record.captured, self._next())
        if passes and any(leaf.grad is not None for leaf in same):
            candidate.after = passes
            self._snapshot(candidate)
        return candidate

    @staticmethod
    def _snapshot(candidate: Candidate) -> None:
        for i, leaf in enumerate(candidate.leaves):
            if leaf.grad is not None:
                candidate.grads[i] = leaf.grad.detach().clone()

    def _in_a_pass(self, candidate: Candidate) -> bool:
        """Walked by a capture since it was offered: a node of a backward pass."""
        return record_of(candidate.tensor.grad_fn).captured > candidate.captured

    def before_pass_recorded(self, deciding: Deciding) -> None:
        """A pass has run and is about to be recorded: drop its forward intermediates, and
        decide the candidates compared with the previous pass's gradients."""
        self.candidates = [c for c in self.candidates if not self._in_a_pass(c)]
        self.decide(deciding)

    def after_pass_recorded(self, number: int) -> None:
        """Candidates waiting for a gradient take the one this pass gave their leaves."""
        for c in self.candidates:
            if c.after is None and any(leaf.grad is not None for leaf in c.leaves):
                c.after = number
                self._snapshot(c)

    def close(self, deciding: Deciding) -> None:
        """The trace ends: decide everything that has a gradient to compare with."""
        self.candidates = [c for c in self.candidates if not self._in_a_pass(c)]
        self.decide(deciding)
        self.candidates.clear()
        self._offered.clear()

    def decide(self, deciding: Deciding) -> None:
        """Compare the candidates that have their gradient (see the module docstring) and
        record the verdicts; candidates still waiting for a gradient stay."""
        ready = [c for c in self.candidates if c.after is not None]
        self.candidates = [c for c in self.candidates if c.after is None]
        passes = deciding.recording.passes_run
        by_leaf: dict[tuple[int, int], list[tuple[Candidate, int]]] = {}
        leaves: dict[tuple[int, int], torch.Tensor] = {}
        for c in ready:
            if c.after != passes:
                continue  # belongs to a pass whose picture is closed (cannot happen)
            for i in c.grads:
                key = (c.after, id(c.leaves[i]))
                by_leaf.setdefault(key, []).append((c, i))
                leaves[key] = c.leaves[i]
        for key, entries in by_leaf.items():
            self._decide_leaf(leaves[key], entries, deciding)

    def _decide_leaf(
        self, leaf: torch.Tensor, entries: list[tuple[Candidate, int]], deciding: Deciding
    ) -> None:
        name = deciding.name_of(leaf) or "input"
        after = deciding.recording.passes_run
        checked = {c.name for c in deciding.recording.checks if c.after == after}
        if name in checked:
            return  # the user compared it themselves: theirs is the check
        for c, i in entries:
            if compare(name, c.grads[i], c.tensor).passed:
                deciding.record(name, c.grads[i], c.tensor)
                return
        meant = [(c, i) for c, i in entries if c.source in CLEARLY_MEANT and len(c.grads) == 1]
        if meant:
            c, i = max(meant, key=lambda entry: entry[0].order)
            deciding.record(name, c.grads[i], c.tensor)
