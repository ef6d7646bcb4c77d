"""Which `nn.Module` call made each node, and what parameters and buffers are called.

While a trace is open, global module hooks (installed by tracer.session, like the engine
wrapper, and removed whatever raised) tell the trace's `ModuleTracker` when a module's
forward starts and ends. The tracker keeps, per thread, the stack of module calls; the
forward recorder stamps each op's `NodeRecord` with the innermost call open when the op
ran (`stamp`). Qualified names, and each module's parameter count, come from the outermost
module called: one walk of its submodules' own dicts (`_modules`, `_parameters`,
`_buffers`, in `named_modules()` order) at its first call in the trace.

Nodes the forward recorder did not see (the inner ops of a composite call such as
`F.multi_head_attention_forward`, or every op with `values=False`) are placed by autograd's
sequence number, which grows by one with every node the thread creates: each call reads
the thread's counter when it starts and when it ends (every node made inside numbers in
between, whether the call returns it or not), and an unseen node goes to the innermost
call whose interval holds its number. (The counters of two threads overlap: while more
than one thread makes module calls in a trace, the intervals place the unseen nodes
unreliably.) A parameter's leaf goes to the call of the module that owns it; a buffer
drawn as a constant likewise.

The hooks run around every module call of the user's forward, so their common case (a
module already named in this trace) reads a few dicts and the counter, and touches no
tensor: no `grad_fn` made into a Python object, no torch function for a mode to see.
"""

from __future__ import annotations

import bisect
import itertools
import sys
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from tracer.model.graph import ModuleCall, Node
from tracer.record.names import variable_naming
from tracer.record.node_record import NodeRecord

GradFn = Any

# The number autograd will give the next node this thread creates (a thread-local counter
# read without touching any node; torch >= 2.1): every node made before has a lower one.
_next_sequence_nr: Callable[[], int] = torch.autograd._get_sequence_nr


class Call:
    """One module call while the trace is open (torch-free but for the module's id)."""

    __slots__ = ("cls", "end", "module", "name", "order", "params", "parent", "start")

    def __init__(
        self,
        module: int,
        name: str,
        cls: str,
        parent: Call | None,
        params: int,
        start: int,
        order: int,
    ) -> None:
        self.module = module  # id() of the module: tells repeated calls of one module
        self.name = name
        self.cls = cls
        self.parent = parent
        self.params = params
        self.start = start  # sequence numbers of nodes made inside: start < s <= end
        self.end = start
        self.order = order  # position among the trace's calls, in the order they started


class Known:
    """A module the trace has named: its weak reference (telling a reused id apart), its
    qualified name, and its parameter count (its submodules' included)."""

    __slots__ = ("name", "params", "ref")

    def __init__(self, module: torch.nn.Module, name: str, params: int) -> None:
        self.ref = weakref.ref(module)
        self.name = name
        self.params = params


def parameter_count(module: torch.nn.Module) -> int:
    """`sum(p.numel() for p in module.parameters())`: each submodule and parameter once,
    read from the modules' own dicts as torch's `_named_members` does (without its nested
    generators, which cost more than all the rest of the hooks on a large model)."""
    total = 0
    modules: set[int] = set()
    parameters: set[int] = set()
    todo: list[torch.nn.Module | None] = [module]
    while todo:
        m = todo.pop()
        if m is None or id(m) in modules:
            continue
        modules.add(id(m))
        for p in m._parameters.values():
            if p is not None and id(p) not in parameters:
                parameters.add(id(p))
                total += p.numel()
        todo.extend(m._modules.values())
    return total


class _Stacks(threading.local):
    """Each thread's open calls, innermost last (made empty in each thread, on first use)."""

    def __init__(self) -> None:
        self.stack: list[Call] = []


class ModuleTracker:
    """The module calls of one trace, and the qualified names of their tensors."""

    def __init__(self) -> None:
        self._local = _Stacks()
        # Every call, in the order it started (numbered by `_order`). Appending to a list
        # and counting are atomic: the hooks need no lock, which would cost them about as
        # much as the rest of `enter`.
        self._calls: list[Call] = []
        self._order = itertools.count()
        # Their start numbers (non-decreasing per thread), as far as `assign` has read them.
        self._starts: list[int] = []
        self._modules: dict[int, Known] = {}  # by id()
        # By id(), with a weak reference telling a reused id apart.
        self._tensor_names: dict[int, tuple[weakref.ref, str, int]] = {}  # -> name, owner id

    # -- the hooks' side -------------------------------------------------------------------

    def stamp(self, record: NodeRecord) -> None:
        """The forward recorder saw the node of `record` made: it belongs to the innermost
        open call."""
        if record.module is None:
            stack = self._local.stack
            if stack:
                record.module = stack[-1]

    def enter(self, module: torch.nn.Module) -> None:
        """A module's forward starts."""
        known = self._known(module)
        if known is None:  # called outside every module named so far: an outermost one
            known = self._learn_root(module)
        stack = self._local.stack
        parent = stack[-1] if stack else None
        start = _next_sequence_nr() - 1
        call = Call(
            id(module),
            known.name,
            type(module).__name__,
            parent,
            known.params,
            start,
            next(self._order),
        )
        self._calls.append(call)
        stack.append(call)

    def in_call(self) -> bool:
        """Whether a module call is open in this thread (entered, not yet ended)."""
        return bool(self._local.stack)

    def exit(self, module: torch.nn.Module) -> None:
        """A module's forward ended (returned or raised)."""
        stack = self._local.stack
        key = id(module)
        if not stack or stack[-1].module != key:  # not the innermost: see below
            if not any(c.module == key for c in stack):
                return  # entered before the trace opened
        end = _next_sequence_nr() - 1
        call = stack.pop()
        while call.module != key:  # an inner call whose end we never saw
            call.end = end
            call = stack.pop()
        call.end = end

    # -- names -----------------------------------------------------------------------------

    def _known(self, module: torch.nn.Module) -> Known | None:
        known = self._modules.get(id(module))
        return known if known is not None and known.ref() is module else None

    def _learn_root(self, root: torch.nn.Module) -> Known:
        """Learn the names under `root`, outermost; a root without submodules is named by
        the user's variable (`head.weight`, not `weight`), else ""."""
        leaf = all(child is None for child in root._modules.values())
        # The user's frame that called it: the innermost outside tracer and torch.
        name = variable_naming(sys._getframe())(root) if leaf else None
        # numel() is a torch function: the user's modes see only their own calls (and an
        # uninitialised lazy parameter counts 0 instead of raising).
        with torch._C.DisableTorchFunction():
            self._learn(root, name or "")
        return self._modules[id(root)]

    def _learn(self, root: torch.nn.Module, prefix: str = "") -> None:
        """Qualified names and parameter counts under `root`, an outermost module (named
        `prefix`, usually ""), as they are at its first call in the trace; what was learnt
        from an earlier root wins (the model called first, then one of its parts alone).

        One walk in `named_modules(prefix=prefix)` order (depth first, each module once, at
        its first path), over the modules' own dicts: each module's parameters, then its
        buffers, as `named_parameters` and `named_buffers` with `recurse=False` give them.
        """
        learnt: list[tuple[torch.nn.Module, Known]] = []  # the modules first named here
        seen: set[int] = set()  # modules and parameters, by id()
        shared = False  # one of them held twice: subtrees' counts do not add up

        def visit(m: torch.nn.Module, path: str) -> int:
            """Name what `m` holds; its parameter count (its submodules' included)."""
            nonlocal shared
            if id(m) in seen:
                shared = True
                return 0
            seen.add(id(m))
            known = self._known(m)
            fresh = known is None  # else named by an earlier root: its name and count stay
            if known is None:
                known = self._modules[id(m)] = Known(m, path, 0)
                learnt.append((m, known))
            owner = known.name or path
            count = 0
            for local, p in m._parameters.items():
                if p is None:
                    continue
                if id(p) in seen:
                    shared = True
                    continue
                seen.add(id(p))
                count += p.numel()
                self._name_tensor(p, f"{owner}.{local}" if owner else local, m)
            for local, b in m._buffers.items():
                if b is not None:
                    self._name_tensor(b, f"{owner}.{local}" if owner else local, m)
            for local, child in m._modules.items():
                if child is not None:
                    count += visit(child, f"{path}.{local}" if path else local)
            if fresh:
                known.params = count
            return count

        visit(root, prefix)
        if shared:  # tied weights, a module registered twice: count each subtree anew
            for m, known in learnt:
                known.params = parameter_count(m)

    def _name_tensor(self, t: torch.Tensor, qualified: str, owner: torch.nn.Module) -> None:
        """The first name a tensor is given wins (a parameter shared by two modules)."""
        if self.name_of(t) is None:
            self._tensor_names[id(t)] = (weakref.ref(t), qualified, id(owner))

    def name_of(self, t: torch.Tensor) -> str | None:
        """The qualified name of a parameter or buffer ("fc2.bias"), or None."""
        entry = self._tensor_names.get(id(t))
        return entry[1] if entry is not None and entry[0]() is t else None

    def module_name(self, module: torch.nn.Module) -> str | None:
        """The qualified name of a module called in this trace ("layers.3"; "" the
        outermost model), or None for one it has not seen."""
        known = self._known(module)
        return None if known is None else known.name

    def parameters(self) -> list[tuple[torch.Tensor, str, str, str]]:
        """Every live parameter (not buffer) of the modules called in this trace, in the
        order they were named: the tensor, its qualified name, and the qualified name and
        class of the module that owns it (tracer.record.gradflow reads their gradients)."""
        found: list[tuple[torch.Tensor, str, str, str]] = []
        for ref, name, owner in list(self._tensor_names.values()):
            t = ref()
            known = self._modules.get(owner)
            module = None if known is None else known.ref()
            if isinstance(t, torch.nn.Parameter) and module is not None:
                found.append((t, name, known.name if known else "", type(module).__name__))
        return found

    @property
    def named(self) -> int:
        """How many tensors this trace has named: grows when `parameters` may have more."""
        return len(self._tensor_names)

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
        tensors: Mapping[int, torch.Tensor | None],
        users: dict[int, int],
    ) -> list[ModuleCall]:
        """Set `Node.module` on the nodes of a captured graph; return its module calls.

        `tensors` are the leaf and constant tensors by node id (None: a constant the
        program let go of, owned by no module), `users[node]` the first
        node (breadth-first from the roots) that takes a leaf or constant as input. Tensors
        the user's code named (the data `X`, the targets) stay outside every module.
        """
        if not self._calls:
            return []
        self._starts.extend(c.start for c in self._calls[len(self._starts) :])  # calls since
        found: dict[int, Call] = {}
        innermost = self._innermost
        for node_id, fn in enumerate(fns):
            record = records[node_id]
            if record is None:  # a leaf, a constant, or an op with no input needing grad
                if fn is None or nodes[node_id].kind != "op":
                    continue
                call = None
            else:
                call = record.module
            if call is None and not (record is not None and record.seen_forward):
                try:
                    call = innermost(fn._sequence_nr())
                except Exception:  # a node torch will not number: left outside any module
                    call = None
            if call is not None:
                found[node_id] = call
        # The leaves and constants below go to calls found already: these are all of them.
        distinct = set(found.values())
        first_call: dict[int, Call] = {}  # module id -> its first call in this graph
        for call in sorted(distinct, key=lambda c: c.order):
            first_call.setdefault(call.module, call)
        for node_id, t in tensors.items():
            owner = None if t is None else self._owner(t)
            if owner is not None and owner in first_call:
                found[node_id] = first_call[owner]
            elif (owner is not None or nodes[node_id].name is None) and users.get(
                node_id
            ) in found:  # owner not called here, or a module's own unnamed intermediate
                found[node_id] = found[users[node_id]]
        if not found:
            return []
        every: set[Call] = set()  # the calls found, with their ancestors
        for call in distinct:
            c: Call | None = call
            while c is not None and c not in every:
                every.add(c)
                c = c.parent
        ordered = sorted(every, key=lambda c: c.order)
        index = {c: i for i, c in enumerate(ordered)}  # a Call hashes by identity
        count: dict[int, int] = {}
        calls = []
        for i, c in enumerate(ordered):
            count[c.module] = count.get(c.module, 0) + 1
            parent = None if c.parent is None else index.get(c.parent)
            calls.append(ModuleCall(i, c.name, c.cls, parent, count[c.module], c.params))
        for node_id, call in found.items():
            nodes[node_id].module = index[call]
        return calls
