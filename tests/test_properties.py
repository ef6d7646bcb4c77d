"""Property tests: random programs over a wide op set, run with and without a trace.

A program is a list of steps over a pool of tensors (leaves first); each step applies an op
to one or two pool members and adds the result. Then one backward style runs from the last
tensor. Traced and untraced, the user must get the same: values, gradients (bitwise, NaN
equal to NaN), exceptions (type and text); and the trace must leave nothing behind and
record, at every node it names, the gradient that `torch.autograd.grad` gives there.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Callable
from typing import Any

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tracer

ENGINE = torch.autograd._engine_run_backward

Unary = Callable[[torch.Tensor], torch.Tensor]
Binary = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _inplace_mul(a: torch.Tensor) -> torch.Tensor:
    b = a * 1.0  # a fresh non-leaf, so that the in-place op is legal
    return b.mul_(1.5)


UNARY: dict[str, Unary] = {
    "sin": torch.sin,
    "exp": lambda a: (a * 0.1).exp(),
    "abs": torch.abs,
    "sgn": lambda a: torch.sgn(a) * a,
    "square": torch.square,
    "sum": lambda a: a.sum(),
    "mean-dim": lambda a: a.mean(dim=-1, keepdim=True) if a.dim() else a,
    "max": lambda a: a.max() if a.numel() else a.sum(),
    "transpose": lambda a: a.t() if a.dim() == 2 else a,
    "reshape": lambda a: a.reshape(-1),
    "index": lambda a: a[..., :1] if a.dim() and a.shape[-1] else a,
    "inplace": _inplace_mul,
    "where": lambda a: torch.where(a.real > 0 if a.is_complex() else a > 0, a, a * -2.0),
    "clone-view": lambda a: a.clone().view(a.shape),
    "unbind": lambda a: a.unbind(0)[0] if a.dim() and a.shape[0] else a,
    "sqrt": lambda a: a.abs().sqrt(),
}
BINARY: dict[str, Binary] = {
    "add": torch.add,
    "mul": torch.mul,
    "sub": lambda a, b: a - 2 * b,
    "div": lambda a, b: a / (b.abs() + 1),
    "matmul": lambda a, b: a @ b.transpose(-1, -2) if a.dim() == 2 and b.dim() == 2 else a * b,
    "stack": lambda a, b: torch.stack([a, b]).sum(0),
}
# Not defined, or not differentiable, for complex tensors.
REAL_ONLY = {"max", "where", "sqrt", "div", "sgn"}

DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.complex128]
SHAPES = [(3,), (2, 3), (0,), (2, 0), ()]
STYLES = ["backward", "grad", "grad-create-graph", "inputs", "retain-twice", "allow-unused"]

step = st.tuples(
    st.sampled_from(sorted(UNARY) + sorted(BINARY)), st.integers(0, 50), st.integers(0, 50)
)
programs = st.fixed_dictionaries(
    {
        "dtype": st.sampled_from(DTYPES),
        "shape": st.sampled_from(SHAPES),
        "steps": st.lists(step, min_size=1, max_size=8),
        "style": st.sampled_from(STYLES),
        "seed": st.integers(0, 2**16),
        # 0: every tensor counts as large, and is summarised as it is made (in the forward
        # recorder, inside the engine): the path real models take.
        "max_values": st.sampled_from([64, 0]),
        # Exact zeros of both signs in the inputs: where sgn, abs, relu and the sign of a
        # zero gradient (a ZeroTensor, or a dense zero) tell apart what tracer must not.
        "zeros": st.booleans(),
    }
)


def run(program: dict[str, Any], traced: bool) -> tuple[Any, tracer.Trace | None]:
    """The program's outcome (values and gradients, or the exception), and its trace."""
    gen = torch.Generator().manual_seed(program["seed"])
    dtype, shape = program["dtype"], program["shape"]
    base = torch.randn(shape, generator=gen, dtype=torch.float64)
    if program["zeros"]:
        base = torch.where(base.abs() < 0.7, torch.copysign(torch.zeros(()), base), base)
    leaves = [
        (base + k if k == 0 or not program["zeros"] else -base).to(dtype).requires_grad_()
        for k in range(2)
    ]
    unused = torch.ones(shape, dtype=dtype, requires_grad=True)
    pool: list[torch.Tensor] = list(leaves)
    trace = tracer.trace(max_values=program["max_values"]) if traced else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's own (complex, half) warnings
            warnings.simplefilter("error", RuntimeWarning)  # tracer giving up is a failure
            with trace if trace is not None else contextlib.nullcontext():
                for name, i, j in program["steps"]:
                    if dtype.is_complex and name in REAL_ONLY:
                        continue
                    a, b = pool[i % len(pool)], pool[j % len(pool)]
                    if name in UNARY:
                        pool.append(UNARY[name](a))
                    elif a.shape == b.shape:
                        pool.append(BINARY[name](a, b))
                out = pool[-1]
                if out.is_complex():
                    out = out.abs()
                out = out.sum()
                if trace is not None:
                    trace.name_tensors({f"v{k}": t for k, t in enumerate(pool)})
                result = _backward(program["style"], out, leaves, unused)
        value = [
            out.detach(),
            [leaf.grad for leaf in leaves],
            result,
        ]
        return ("returned", value), trace
    except Exception as e:
        return ("raised", type(e).__name__, str(e)), trace


def _backward(
    style: str, out: torch.Tensor, leaves: list[torch.Tensor], unused: torch.Tensor
) -> Any:
    if style == "backward":
        out.backward()
    elif style == "grad":
        return torch.autograd.grad(out, leaves, allow_unused=True)
    elif style == "grad-create-graph":
        grads = torch.autograd.grad(out, leaves, create_graph=True, allow_unused=True)
        second = sum((g.abs().sum() for g in grads if g is not None and g.requires_grad), 0.0)
        if isinstance(second, torch.Tensor):
            second.backward()
        return [None if g is None else g.detach() for g in grads]
    elif style == "inputs":
        out.backward(inputs=[leaves[0]])
    elif style == "retain-twice":
        out.backward(retain_graph=True)
        out.backward()
    elif style == "allow-unused":
        return torch.autograd.grad(out, [leaves[0], unused], allow_unused=True)
    return None


_BITS = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def same(a: Any, b: Any) -> bool:
    """Bit for bit (the sign of zero and NaN payloads included), a ZeroTensor only for a
    ZeroTensor, through lists and tuples."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        if a.dtype != b.dtype or a.shape != b.shape:
            return False
        if a._is_zerotensor() or b._is_zerotensor():
            return a._is_zerotensor() and b._is_zerotensor()
        a, b = a.detach().resolve_conj().resolve_neg(), b.detach().resolve_conj().resolve_neg()
        if a.is_complex():
            a, b = torch.view_as_real(a), torch.view_as_real(b)
        if a.dtype == torch.bool:
            return torch.equal(a, b)
        bits = _BITS[a.element_size()]
        return torch.equal(a.contiguous().view(bits), b.contiguous().view(bits))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@settings(
    max_examples=int(os.environ.get("TRACER_EXAMPLES", 60)),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(programs)
def test_traced_and_untraced_programs_give_the_user_the_same(program: dict[str, Any]) -> None:
    plain, _ = run(program, traced=False)
    traced, trace = run(program, traced=True)
    assert plain[0] == traced[0], (plain, traced)
    if plain[0] == "raised":
        assert plain == traced
    else:
        assert same(plain[1], traced[1])
    # nothing left behind
    assert torch.autograd._engine_run_backward is ENGINE
    assert torch.overrides._get_current_function_mode_stack() == []
    assert trace is not None and trace.recording.to_json()  # plain data, and it serialises


ORACLE_STYLES = ["backward", "retain-twice"]


def float64_pool(program: dict[str, Any]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The program run in float64 (the oracle tests): its pool, and each pool member's
    value as computed (copied before any later step could change it in place)."""
    gen = torch.Generator().manual_seed(program["seed"])
    base = torch.randn(program["shape"], generator=gen, dtype=torch.float64)
    pool: list[torch.Tensor] = [(base + k).requires_grad_() for k in range(2)]
    computed = [t.detach().clone() for t in pool]
    for name, i, j in program["steps"]:
        a, b = pool[i % len(pool)], pool[j % len(pool)]
        if name in UNARY:
            pool.append(UNARY[name](a))
        elif a.shape == b.shape:
            pool.append(BINARY[name](a, b))
        else:
            continue
        computed.append(pool[-1].detach().clone())
    return pool, computed


def gradients_at(out: torch.Tensor, named: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torch.autograd.grad of `out` at each named tensor still in its graph."""
    expected = {}
    for name, t in named.items():
        try:
            (g,) = torch.autograd.grad(out, t, retain_graph=True)
        except RuntimeError:  # not part of out's graph, or overwritten in place since
            continue
        expected[name] = g
    return expected


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs.filter(lambda p: p["dtype"] == torch.float64))
def test_every_named_nodes_gradient_is_what_autograd_grad_gives(program: dict[str, Any]) -> None:
    """The gradient recorded as arriving at a node is torch.autograd.grad of the output with
    respect to the tensor that node produced, bit for bit."""
    pool, _ = float64_pool(program)
    out = pool[-1].sum()
    named = {f"v{k}": t for k, t in enumerate(pool) if t.grad_fn is not None}
    expected = gradients_at(out, named)
    with tracer.trace() as trace:
        trace.name_tensors(named)
        out.backward()
    graph = trace.graphs[0]
    checked = 0
    for node in graph.nodes:
        if node.kind != "op" or not node.name or node.step is None:
            continue
        for name in node.name.split(", "):
            if name not in expected or expected[name].numel() > trace.options.max_values:
                continue
            arrived = node.grads[named[name].output_nr]
            assert arrived is not None and arrived.values is not None
            recorded = torch.tensor(arrived.values, dtype=torch.float64)
            assert same(recorded, expected[name].flatten()), name
            checked += 1
    nodes_named = {n for node in graph.nodes if node.name for n in node.name.split(", ")}
    assert checked == len(
        [
            n
            for n in expected
            if n in nodes_named and expected[n].numel() <= trace.options.max_values
        ]
    )


def _statistics_match(data: Any, t: torch.Tensor) -> bool:
    """A summary's statistics are those of `t`: min and max exactly, the norm up to the
    order of summation (a view is reduced in its own order), over the finite values, with
    the NaN and Inf counted (the recording's convention: see tracer.model.tensor)."""
    finite = t[torch.isfinite(t)]
    if data is None or data.shape != tuple(t.shape):
        return False
    if (data.nan, data.inf) != (int(torch.isnan(t).sum()), int(torch.isinf(t).sum())):
        return False
    if not finite.numel():
        return math.isnan(data.min) and math.isnan(data.max)
    norm = torch.linalg.vector_norm(finite).item()
    return (
        data.min == finite.min().item()
        and data.max == finite.max().item()
        and abs(data.norm - norm) <= 1e-12 * max(norm, 1.0)
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs.filter(lambda p: p["dtype"] == torch.float64 and p["shape"] not in [(0,), (2, 0)]))
def test_large_tensors_are_summarised_as_computed(program: dict[str, Any]) -> None:
    """With every tensor counted as large (summarised as it is made, views of the same
    memory once), each named node's forward value and arriving gradient have the
    statistics of the tensor the op computed (taken before anything changed it in place)
    and of torch.autograd.grad at that node."""
    with tracer.trace(max_values=0) as trace:
        pool, computed = float64_pool(program)
        out = pool[-1].sum()
        named = {f"v{k}": t for k, t in enumerate(pool) if t.grad_fn is not None}
        trace.name_tensors(named)
        out.backward(retain_graph=True)
    expected = gradients_at(out, named)
    graph = trace.recording.backward_graphs()[-1]
    checked = 0
    for node in graph.nodes:
        if node.kind != "op" or not node.name or node.step is None:
            continue
        for name in node.name.split(", "):
            if name not in expected:
                continue
            k, t = int(name[1:]), named[name]
            assert _statistics_match(node.forward[t.output_nr], computed[k]), name
            assert _statistics_match(node.grads[t.output_nr], expected[name]), name
            checked += 1
    assert checked or not expected
