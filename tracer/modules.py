"""Which `nn.Module` call made each node, and what parameters and buffers are called.

While a trace is open, global module hooks (installed by tracer.session, like the engine
wrapper, and removed whatever raised) tell the trace's `ModuleTracker` when a module's
forward starts and ends. The tracker keeps, per thread, the stack of module calls; the
forward recorder stamps each op's `NodeRecord` with the innermost call open when the op
ran (`stamp`). Qualified names come from the outermost module called: its
`named_modules()`, `named_parameters()` and `named_buffers()`, read once per module.

Nodes the forward recorder did not see (the inner ops of a composite call such as
`F.multi_head_attention_forward`, or every op with `values=False`) are placed by autograd's
sequence number, which grows by one with every node the thread creates: each call notes
the highest number seen when it starts and when it ends, and an unseen node goes to the
innermost call whose interval holds its number. A parameter's leaf goes to the call of the
module that owns it; a buffer drawn as a constant likewise.
"""

from __future__ import annotations

import bisect
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from tracer.graph import ModuleCall, Node
from tracer.node_record import NodeRecord, record_of

GradFn = Any


class Call:
    """One module call while the trace is open (torch-free but for the module's id)."""

    __slots__ = ("cls", "end", "module", "name", "order", "params", "parent", "start")

    def __init__(
        self, module: int, name: str, cls: str, parent: Call | None, params: int, start: int
    ) -> None:
        self.module = module  # id() of the module: tells repeated calls of one module
        self.name = name
        self.cls = cls
        self.parent = parent
        self.params = params
        self.start = start  # sequence numbers of nodes made inside: start < s <= end
        self.end = start
        self.order = 0  # position among the trace's calls, in the order they started


def _sequence_nr(fn: GradFn) -> int:
    record_of(fn)  # touching a grad_fn from Python needs a record: see tracer.node_record
    return int(fn._sequence_nr())


def _tensors(value: Any) -> Iterable[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            if isinstance(v, torch.Tensor):
                yield v
    elif isinstance(value, dict):
        for v in value.values():
            if isinstance(v, torch.Tensor):
                yield v


class ModuleTracker:
    """The module calls of one trace, and the qualified names of their tensors."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._calls: list[Call] = []  # every call, in the order it started
        self._starts: list[int] = []  # their start numbers (non-decreasing per thread)
        # By id(), with a weak reference telling a reused id apart.
        self._module_names: dict[int, tuple[weakref.ref, str]] = {}
        self._tensor_names: dict[int, tuple[weakref.ref, str, int]] = {}  # -> name, owner id
        self._params: dict[int, int] = {}
        self._lock = threading.Lock()

    # -- the hooks' side -------------------------------------------------------------------

    def _stack(self) -> list[Call]:
        stack: list[Call] | None = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    def _seen(self) -> int:
        """The highest sequence number this thread has shown us: every node made before
        now has at most this number."""
        seen: int = getattr(self._local, "seen", -1)
        return seen

    def current(self) -> Call | None:
        stack = self._stack()
        return stack[-1] if stack else None

    def stamp(self, record: NodeRecord, fn: GradFn) -> None:
        """The forward recorder saw `fn` made: it belongs to the innermost open call."""
        if record.module is None:
            stack = self._stack()
            if stack:
                record.module = stack[-1]
        self._local.seen = fn._sequence_nr()  # the newest node: numbers only grow

    def enter(
        self,
        module: torch.nn.Module,
        args: tuple,
        variable: Callable[[torch.nn.Module], str | None] = lambda m: None,
    ) -> None:
        """A module's forward starts. `variable` finds the user's name for a module (asked
        once, for an outermost module without submodules: `head.weight`, not `weight`)."""
        stack = self._stack()
        name = self._name(module)
        if name is None:
            leaf = next(iter(module.children()), None) is None
            self._learn(module, (variable(module) or "") if leaf else "")
            name = self._name(module) or ""
        start = self._seen()
        for t in _tensors(args):
            if t.grad_fn is not None:
                start = max(start, _sequence_nr(t.grad_fn))
        params = self._params.get(id(module))
        if params is None:
            params = self._params[id(module)] = sum(p.numel() for p in module.parameters())
        call = Call(
            id(module), name, type(module).__name__, stack[-1] if stack else None, params, start
        )
        with self._lock:
            call.order = len(self._calls)
            self._calls.append(call)
            self._starts.append(start)
        stack.append(call)

    def exit(self, module: torch.nn.Module, output: Any) -> None:
        stack = self._stack()
        if not any(c.module == id(module) for c in stack):
            return  # entered before the trace opened
        call = stack.pop()
        while call.module != id(module):  # an inner call that raised
            call.end = max(call.end, self._seen())
            call = stack.pop()
        end = self._seen()
        for t in _tensors(output):
            fn = t.grad_fn
            if fn is not None:
                seq = _sequence_nr(fn)
                record = record_of(fn)
                if record.module is None and seq > call.start:  # made here, never stamped
                    record.module = call  # (values=False: no recorder)
                end = max(end, seq)
        call.end = end
        self._local.seen = end

    # -- names -----------------------------------------------------------------------------

    def _name(self, module: torch.nn.Module) -> str | None:
        entry = self._module_names.get(id(module))
        return entry[1] if entry is not None and entry[0]() is module else None

    def _learn(self, root: torch.nn.Module, prefix: str = "") -> None:
        """Qualified names under `root`, an outermost module (named `prefix`, usually "");
        names learnt from an earlier root win (the model called first, then one of its
        parts alone)."""
        for name, m in root.named_modules(prefix=prefix, remove_duplicate=False):
            if self._name(m) is None:
                self._module_names[id(m)] = (weakref.ref(m), name)
        for name, m in root.named_modules(prefix=prefix):
            owner = id(m)
            own = [*m.named_parameters(recurse=False), *m.named_buffers(recurse=False)]
            prefix = self._name(m) or name
            for local, t in own:
                if t is None or self.name_of(t) is not None:
                    continue
                qualified = f"{prefix}.{local}" if prefix else local
                self._tensor_names[id(t)] = (weakref.ref(t), qualified, owner)

    def name_of(self, t: torch.Tensor) -> str | None:
        """The qualified name of a parameter or buffer ("fc2.bias"), or None."""
        entry = self._tensor_names.get(id(t))
        return entry[1] if entry is not None and entry[0]() is t else None

    def _owner(self, t: torch.Tensor) -> int | None:
        entry = self._tensor_names.get(id(t))
        return entry[2] if entry is not None and entry[0]() is t else None

    # -- a captured graph's modules ----------------------------------------------------------

    def _innermost(self, seq: int) -> Call | None:
        """The innermost call whose interval holds sequence number `seq`."""
        i = bisect.bisect_left(self._starts, seq) - 1  # the last call starting before it
        call = self._calls[i] if i >= 0 else None
        while call is not None and not (call.start < seq <= call.end):
            call = call.parent
        return call

    def assign(
        self,
        fns: Sequence[GradFn],
        records: Sequence[NodeRecord | None],
        nodes: list[Node],
        tensors: dict[int, torch.Tensor],
        users: dict[int, int],
    ) -> list[ModuleCall]:
        """Set `Node.module` on the nodes of a captured graph; return its module calls.

        `tensors` are the leaf and constant tensors by node id, `users[node]` the first
        node (breadth-first from the roots) that takes a leaf or constant as input. Tensors
        the user's code named (the data `X`, the targets) stay outside every module.
        """
        if not self._calls:
            return []
        found: dict[int, Call] = {}
        for node_id, fn in enumerate(fns):
            if nodes[node_id].kind != "op":
                continue
            record = records[node_id]
            call = None if record is None else record.module
            if call is None and not (record is not None and record.seen_forward):
                try:
                    call = self._innermost(int(fn._sequence_nr()))
                except Exception:  # a node torch will not number: left outside any module
                    call = None
            if call is not None:
                found[node_id] = call
        first_call: dict[int, Call] = {}  # module id -> its first call in this graph
        for call in sorted(set(found.values()), key=lambda c: c.order):
            first_call.setdefault(call.module, call)
        for node_id, t in tensors.items():
            owner = self._owner(t)
            if owner is not None and owner in first_call:
                found[node_id] = first_call[owner]
            elif (owner is not None or nodes[node_id].name is None) and users.get(
                node_id
            ) in found:  # owner not called here, or a module's own unnamed intermediate
                found[node_id] = found[users[node_id]]
        if not found:
            return []
        every: dict[int, Call] = {}  # id(Call) -> Call, with the ancestors
        for call in found.values():
            c: Call | None = call
            while c is not None and id(c) not in every:
                every[id(c)] = c
                c = c.parent
        ordered = sorted(every.values(), key=lambda c: c.order)
        index = {id(c): i for i, c in enumerate(ordered)}
        count: dict[int, int] = {}
        calls = []
        for i, c in enumerate(ordered):
            count[c.module] = count.get(c.module, 0) + 1
            parent = None if c.parent is None else index.get(id(c.parent))
            calls.append(ModuleCall(i, c.name, c.cls, parent, count[c.module], c.params))
        for node_id, call in found.items():
            nodes[node_id].module = index[id(call)]
        return calls
