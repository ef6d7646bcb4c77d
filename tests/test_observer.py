"""The first law: the tracer is an observer. Named regression tests, one per way it once
changed a result, broke valid code, crashed, leaked or stayed behind.

Each runs the same code with and without a trace and compares what the user gets: the
values, the gradients (bitwise), the exception (type and text), and what is left behind
(hooks, modes, the engine entry point).
"""

from __future__ import annotations

import contextlib
import cProfile
import gc
import json
import math
import pstats
import random
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.fx.traceback
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

import tracer
import tracer.record.interception
from tracer.model.graph import Recording
from tracer.output.render import render_dot
from tracer.record.node_record import NodeRecord

ENGINE = torch.autograd._engine_run_backward
JIT_TRACE_FUNCTION = torch._C._create_function_from_trace
FORWARD_STACK = torch.fx.traceback.format_stack
f64 = torch.float64


@contextlib.contextmanager
def maybe_traced(traced: bool) -> Iterator[tracer.Trace | None]:
    if not traced:
        yield None
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a tracer warning means it gave up: a failure here
        with tracer.trace() as t:
            yield t


def outcome(program: Callable[[bool], Any], traced: bool) -> Any:
    """What the user gets: the program's result, or its exception's type and text."""
    try:
        return ("returned", program(traced))
    except Exception as e:
        return ("raised", type(e).__name__, str(e))


def same_for_the_user(program: Callable[[bool], Any]) -> Any:
    plain, traced = outcome(program, False), outcome(program, True)
    assert repr(traced) == repr(plain)
    assert_nothing_left()
    return traced


def assert_nothing_left() -> None:
    assert torch.autograd._engine_run_backward is ENGINE
    assert torch._C._create_function_from_trace is JIT_TRACE_FUNCTION
    assert torch.fx.traceback.format_stack is FORWARD_STACK
    assert torch.overrides._get_current_function_mode_stack() == []
    assert tracer.record.interception.current_trace() is None
    from torch.optim.optimizer import _global_optimizer_post_hooks, _global_optimizer_pre_hooks

    assert not _global_optimizer_pre_hooks and not _global_optimizer_post_hooks  # the flow's


def grads(*tensors: torch.Tensor) -> list[Any]:
    return [None if t.grad is None else t.grad.tolist() for t in tensors]


# -- it changed results ---------------------------------------------------------------------


def test_torch_compile_returns_the_same_value() -> None:
    def program(traced: bool) -> Any:
        torch.manual_seed(0)
        x = torch.randn(4, requires_grad=True)
        f = torch.compile(lambda a: a.exp().mean(), backend="eager")
        with maybe_traced(traced):
            o = f(x)
            o.backward()
        return tuple(o.shape), o.item(), grads(x)

    result = same_for_the_user(program)
    assert result[1][0] == ()  # a scalar, as untraced


def test_torch_sees_the_users_global_module_hooks_but_not_tracers() -> None:
    """torch.compile'd modules warn while a global module hook is installed: tracer's do
    not count (see tracer.record.interception), the user's still do."""
    from torch.nn.modules import module

    untraced = module._has_any_global_hook
    assert not untraced()
    with tracer.trace():
        assert not module._has_any_global_hook()
        handle = module.register_module_forward_hook(lambda m, a, o: None)
        try:
            assert module._has_any_global_hook()
        finally:
            handle.remove()
    assert module._has_any_global_hook is untraced


def test_a_transformer_layer_gives_bitwise_equal_values_and_gradients() -> None:
    def program(traced: bool) -> Any:
        torch.manual_seed(0)
        layer = torch.nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        X = torch.randn(2, 5, 16)
        with maybe_traced(traced):
            out = layer(X)
            out.square().mean().backward()
        copies = []
        for p in layer.parameters():
            assert p.grad is not None
            copies.append(p.grad.clone())
        return out.detach(), copies

    (plain_out, plain_grads), (traced_out, traced_grads) = program(False), program(True)
    assert torch.equal(plain_out, traced_out)
    assert all(torch.equal(a, b) for a, b in zip(plain_grads, traced_grads, strict=True))


# -- valid code that failed only when traced -------------------------------------------------


def test_sgn_and_double_backward_through_abs() -> None:
    def program(traced: bool) -> Any:
        x = torch.tensor([1.0, -2.0, 0.0], requires_grad=True)
        with maybe_traced(traced):
            y = torch.sgn(x) * x
            (g,) = torch.autograd.grad(y.sum(), x, create_graph=True)
            g.sum().backward()  # the gradient is an (unallocated) zero tensor
            (h,) = torch.autograd.grad(x.abs().sum(), x, create_graph=True)
            (h * x).sum().backward()
        assert x.grad is not None
        return g.tolist(), x.grad.tolist()

    same_for_the_user(program)


def test_conj_and_complex() -> None:
    def program(traced: bool) -> Any:
        x = torch.tensor([1 + 2j, 3 - 1j], requires_grad=True)
        with maybe_traced(traced):
            (x.conj() * x).real.sum().backward()
        return grads(x)

    same_for_the_user(program)


def test_sparse_coo_and_sparse_embedding() -> None:
    def program(traced: bool) -> Any:
        torch.manual_seed(0)
        emb = torch.nn.Embedding(10, 3, sparse=True)
        v = torch.tensor([3.0, 4.0], requires_grad=True)
        with maybe_traced(traced) as t:
            emb(torch.tensor([1, 2, 1])).sum().backward()
            s = torch.sparse_coo_tensor(torch.tensor([[0, 1], [1, 0]]), v, (2, 2))
            torch.sparse.sum(s).backward()
        if t is not None:  # drawn with what can be read
            leaf = next(n for n in t.graphs[0].nodes if n.kind == "leaf")
            assert leaf.leaf_grad is not None and "sparse_coo" in (leaf.leaf_grad.note or "")
            render_dot(t.recording)
        assert emb.weight.grad is not None
        return emb.weight.grad.coalesce().values().tolist(), grads(v)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch's own note on sparse invariants
        same_for_the_user(program)


def test_jacobian_vectorized_and_batched_grads() -> None:
    def program(traced: bool) -> Any:
        x = torch.tensor([1.0, 2.0], requires_grad=True)
        with maybe_traced(traced):
            j = torch.autograd.functional.jacobian(lambda a: a.sin() * a, x, vectorize=True)
            (g,) = torch.autograd.grad(x.sin(), x, torch.eye(2), is_grads_batched=True)
        return j.tolist(), g.tolist()

    same_for_the_user(program)


def test_meta_tensors_and_an_empty_tensor_render() -> None:
    def program(traced: bool) -> Any:
        m = torch.empty(3, device="meta", requires_grad=True)
        e = torch.zeros(3, 0, requires_grad=True)
        with maybe_traced(traced) as t:
            (m * 2).sum().backward()
            (e * 2).sum().backward()
        if t is not None:
            notes = [n.leaf_grad.note for g in t.graphs for n in g.nodes if n.leaf_grad]
            assert any(note and "meta" in note for note in notes)
            dot = render_dot(t.recording)
            assert "shape [3, 0]" in dot
        assert m.grad is not None and e.grad is not None
        return tuple(m.grad.shape), tuple(e.grad.shape)

    same_for_the_user(program)


class NamesSeen(TorchFunctionMode):
    """A user's own mode: notes the name of every torch function it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.seen.append(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


def test_the_users_own_mode_sees_only_the_users_calls() -> None:
    def program(traced: bool) -> Any:
        x = torch.tensor([1.0, 2.0], requires_grad=True)
        with (mine := NamesSeen()), maybe_traced(traced):
            (x.sin() * x).sum().backward()
        return mine.seen

    assert same_for_the_user(program)[1] == ["sin", "mul", "sum", "backward"]


def test_the_users_own_mode_sees_no_module_bookkeeping() -> None:
    def program(traced: bool) -> Any:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
        with (mine := NamesSeen()), maybe_traced(traced):
            model(torch.ones(2, 3)).sum().backward()
        return mine.seen, grads(*model.parameters())

    assert "linear" in same_for_the_user(program)[1][0]


def _loss_of(x: torch.Tensor) -> torch.Tensor:
    scaled = x * 3
    return (scaled * scaled).sum()


def _after() -> int:
    return sum(range(4))


def test_call_leaves_the_users_profiler_and_trace_function_running() -> None:
    mine = (_loss_of.__code__, _after.__code__)

    def program(traced: bool) -> tuple[Any, list[str]]:
        x = torch.tensor([1.0, 2.0], requires_grad=True)
        profiler = cProfile.Profile()
        events: list[tuple[str, str, int]] = []  # what a debugger's trace function sees

        def users_trace(frame: Any, event: str, arg: Any) -> Any:
            if frame.f_code in mine:
                events.append((event, frame.f_code.co_name, frame.f_lineno))
            return users_trace

        sys.settrace(users_trace)
        profiler.enable()
        try:
            with maybe_traced(traced) as t:
                loss = _loss_of(x) if t is None else t.call(_loss_of, x)
                loss.backward()
            for _ in range(3):
                _after()
            still_set = sys.getprofile() is profiler, sys.gettrace() is users_trace
        finally:
            profiler.disable()
            sys.settrace(None)
        stats: dict[Any, Any] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
        calls = {
            name: row[1] for (_, _, name), row in stats.items() if name in ("_loss_of", "_after")
        }
        names = [] if t is None else sorted(n.name for n in t.graphs[0].nodes if n.name)
        return (still_set, calls, events, grads(x)), names

    (plain, _), (traced, names) = program(False), program(True)
    assert traced == plain
    assert plain[0] == (True, True) and plain[1] == {"_loss_of": 1, "_after": 3}
    assert "scaled" in names  # t.call still read the function's locals
    assert_nothing_left()


def _noisy_square(t: torch.Tensor) -> torch.Tensor:
    """(t * t).sum(), with a draw from every global generator, each seeded anew first
    (torch.manual_seed also asks for CUDA's seed, queued while CUDA is not initialised)."""
    import numpy

    torch.manual_seed(123)
    random.seed(123)
    numpy.random.seed(123)
    noise = torch.rand(()).item() + random.random() + float(numpy.random.rand())
    if torch.cuda.is_available():
        noise += torch.rand((), device="cuda").item()
    return (t * t).sum() + 0.0 * noise


@pytest.mark.parametrize("inside_a_trace", [True, False])
def test_a_finite_difference_check_leaves_every_global_generator_as_it_was(
    inside_a_trace: bool,
) -> None:
    import numpy

    def later_draws(checks: bool) -> Any:
        """What the program draws after its check; untraced, it makes no check at all."""
        torch.manual_seed(0)
        random.seed(0)
        numpy.random.seed(0)
        x = torch.tensor([0.5, -1.0], dtype=f64, requires_grad=True)
        (x * x).sum().backward()
        if checks:
            with tracer.trace() if inside_a_trace else contextlib.nullcontext():
                assert tracer.check(x, fn=_noisy_square, quiet=True).passed
        cuda = [torch.rand(4, device="cuda").cpu()] if torch.cuda.is_available() else []
        return [torch.rand(4), random.random(), numpy.random.rand(4).tolist(), *cuda]

    plain, checked = later_draws(False), later_draws(True)
    assert plain[1:3] == checked[1:3]  # Python's floats: equal is bitwise
    for a, b in zip([plain[0], *plain[3:]], [checked[0], *checked[3:]], strict=True):
        assert torch.equal(a.view(torch.int32), b.view(torch.int32))  # float32, bit for bit
    if not torch.cuda.is_initialized():
        assert _queued_cuda_seeds() == [0]  # the program's, which CUDA would start from
    assert_nothing_left()


def _queued_cuda_seeds() -> list[int]:
    """The seeds torch.cuda queued for its initialisation (its private record of them:
    each is a callback of torch.cuda.manual_seed_all's, holding the seed it was given)."""
    tracker = torch.cuda._lazy_seed_tracker
    return [
        cell.cell_contents
        for queued in tracker.get_calls()
        if queued is not None
        for cell in queued[0].__closure__ or ()
        if isinstance(cell.cell_contents, int)
    ]


# -- errors stay the user's, and nothing stays behind ----------------------------------------


def test_a_bad_gradient_keeps_torchs_error_and_leaves_no_hook() -> None:
    def program(traced: bool) -> Any:
        x = torch.tensor([1.0, 2.0], requires_grad=True)
        y = x * 2
        with maybe_traced(traced) as t:
            with pytest.raises(TypeError) as raised:
                y.backward(gradient="abc")
            y.sum().backward(retain_graph=True)
        before = None if t is None else t.recording.to_json()
        y.sum().backward()  # untraced: no hook of ours may run
        if t is not None:
            assert t.recording.to_json() == before
        return str(raised.value), grads(x)

    same_for_the_user(program)


class _Boom(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, a: torch.Tensor) -> torch.Tensor:
        return a * 2

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        raise ValueError("custom backward failed")


@pytest.mark.parametrize("where", ["tensor hook", "custom Function", "interrupt"])
def test_whatever_raises_inside_backward_is_the_users_exception(where: str) -> None:
    def program(traced: bool) -> Any:
        x = torch.tensor([1.0, 2.0], requires_grad=True)
        y = x * 3
        if where == "tensor hook":
            y.register_hook(lambda g: (_ for _ in ()).throw(RuntimeError("user hook")))
        elif where == "interrupt":
            y.register_hook(lambda g: (_ for _ in ()).throw(KeyboardInterrupt()))
        else:
            y = _Boom.apply(y)
        with maybe_traced(traced):
            try:
                y.sum().backward()
            except KeyboardInterrupt:
                return "interrupted"
        return "finished"

    same_for_the_user(program)


def test_nothing_is_left_when_the_block_itself_raises() -> None:
    x = torch.tensor([1.0], requires_grad=True)
    with pytest.raises(ZeroDivisionError), tracer.trace():
        (x * 2).sum().backward()
        1 / 0  # noqa: B018
    assert_nothing_left()


# -- threads ---------------------------------------------------------------------------------


def test_a_backward_in_a_worker_thread_is_recorded() -> None:
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    with tracer.trace() as t:
        y = (x * x).sum()
        worker = threading.Thread(target=y.backward)
        worker.start()
        worker.join()
    assert len(t.graphs) == 1 and x.grad is not None and x.grad.tolist() == [2.0, 4.0]
    assert_nothing_left()


def test_passes_ending_in_several_threads_at_once_each_get_their_own_number() -> None:
    threads = 8
    barrier = threading.Barrier(threads)
    x = torch.linspace(0.0, 1.0, 64, dtype=f64, requires_grad=True)

    def work() -> None:
        y = torch.sin(x * 2.0).sum()
        barrier.wait()  # every backward at once
        y.backward()

    with tracer.trace() as t:
        workers = [threading.Thread(target=work) for _ in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    assert sorted(g.number for g in t.graphs) == list(range(1, threads + 1))
    assert [g.number for g in t.graphs] == list(range(1, threads + 1))  # in recorded order
    assert_nothing_left()


def test_each_threads_passes_and_checks_go_to_its_own_trace() -> None:
    results: dict[str, tracer.Trace] = {}
    barrier = threading.Barrier(2)

    def work(name: str, scale: float) -> None:
        x = torch.tensor([1.0, 2.0], dtype=f64, requires_grad=True)
        with tracer.trace(name) as t:
            barrier.wait()  # both traces open at once
            (scale * x * x).sum().backward()
            tracer.check(x, 2 * scale * x.detach(), quiet=True)
            barrier.wait()
        results[name] = t

    threads = [threading.Thread(target=work, args=(n, s)) for n, s in (("a", 1.0), ("b", 3.0))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for name in ("a", "b"):
        t = results[name]
        assert len(t.graphs) == 1 and len(t.checks) == 1 and t.checks[0].passed
    assert results["a"].checks[0].manual.values != results["b"].checks[0].manual.values
    assert_nothing_left()


# -- memory ----------------------------------------------------------------------------------


def _records() -> int:
    gc.collect()
    return sum(type(o) is NodeRecord for o in gc.get_objects())


def test_a_training_loop_keeps_no_graph_alive() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    counts = []
    with tracer.trace(passes="all") as t:  # every pass recorded: none may keep a graph alive
        for step in range(30):
            loss = torch.nn.functional.cross_entropy(
                model(torch.randn(4, 8)), torch.tensor([0, 1, 2, 0])
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            model(torch.randn(4, 8)).sum()  # a graph that never reaches a backward
            if step in (9, 29):
                counts.append(_records())
    assert len(t.graphs) == 30
    assert counts[1] <= counts[0]  # records die with their graphs: no growth over steps


# -- long chains -----------------------------------------------------------------------------

CHAIN = """
import torch, tracer
torch.set_num_threads(1)
x = torch.tensor([0.1, 0.2, 0.3, 0.4], requires_grad=True)
with tracer.trace() as t:
    y = x
    for _ in range(100_000):
        y = torch.sin(y)
    y.sum().backward()
assert len(t.graphs[0].nodes) == 100_002
print("ok")
"""


@pytest.mark.slow
def test_a_100k_op_chain_traces_and_is_freed_without_a_crash() -> None:
    # A crash here is a segfault at interpreter exit, when the chain is freed: a subprocess.
    done = subprocess.run(
        [sys.executable, "-c", CHAIN], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"


_FREE_A_CHAIN = """
import sys, threading, weakref
import torch
import tracer


class Token:
    pass


def traced_chain():
    x = torch.tensor([0.5], requires_grad=True)
    with tracer.trace():
        y = x
        for _ in range(20_000):
            y = y * 1.0
        y.sum().backward()
    middle = y.grad_fn
    for _ in range(10_000):
        middle = middle.next_functions[0][0]
    token = Token()
    middle.metadata["probe"] = token  # freed with that node
    return weakref.ref(token)  # the chain is freed as this frame ends


freed = []
threading.stack_size(1024 * 1024)  # a small C stack: a recursive free overflows it
thread = threading.Thread(target=lambda: freed.append(traced_chain()() is None))
thread.start()
thread.join()
print("freed" if freed == [True] else "kept")
"""


@pytest.mark.slow
def test_a_touched_20k_chain_is_freed_without_recursion(tmp_path: Path) -> None:
    """The keeper in tracer.record.node_record: every node tracer touched holds its children,
    so the chain is freed iteratively. (Without it this program dies of SIGSEGV: freeing
    20,000 touched nodes recurses in C through a 1 MiB stack.)"""
    script = tmp_path / "free_a_chain.py"
    script.write_text(_FREE_A_CHAIN, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "freed"  # and nothing kept it alive


# -- JSON ------------------------------------------------------------------------------------


def test_json_is_standard_json_with_non_finite_numbers_as_strings() -> None:
    x = torch.tensor([0.0, 4.0], requires_grad=True)
    with tracer.trace() as t:
        torch.sqrt(x).sum().backward()

    def refuse(token: str) -> Any:
        raise AssertionError(f"non-standard JSON token {token}")

    text = t.recording.to_json()
    raw = json.loads(text, parse_constant=refuse)
    leaf = next(n for n in raw["graphs"][0]["nodes"] if n["kind"] == "leaf")
    assert leaf["leaf_grad"]["values"] == ["Infinity", 0.25]
    back = Recording.from_json(text)
    leaf_grad = back.graphs[0].nodes[-1].leaf_grad
    assert leaf_grad is not None and leaf_grad.values is not None
    assert math.isinf(leaf_grad.values[0])
    assert back.to_json() == text


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        "{}",
        '{"title": "t", "graphs": 5, "checks": []}',
        "[" * 100_000,  # nested too deep
        '{"title": "t", "graphs": [{"kind": "backward"}], "checks": []}',
    ],
)
def test_a_recording_that_is_not_one_is_a_tracer_error(text: str) -> None:
    with pytest.raises(tracer.TracerError, match=r"^not a tracer recording: "):
        Recording.from_json(text)


def test_a_recording_with_a_dangling_edge_is_a_tracer_error() -> None:
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    with tracer.trace() as t:
        (x * x).sum().backward()
    raw = json.loads(t.recording.to_json())
    assert Recording.from_json(json.dumps(raw)) == t.recording
    raw["graphs"][0]["edges"][0]["dst"] = 99
    with pytest.raises(tracer.TracerError, match="an edge joins a node it does not have"):
        Recording.from_json(json.dumps(raw))


def test_torch_func_passes_are_counted_per_line_and_read_back_from_json() -> None:
    from torch.func import grad

    def f(x: torch.Tensor) -> torch.Tensor:
        return (x * x).sum()

    x = torch.tensor([1.0, 2.0], requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # tracer warns of nothing here
        with tracer.trace() as t:
            for _ in range(3):
                assert torch.equal(grad(f)(x), 2 * x)
    assert t.recording.graphs == []
    [entry] = t.recording.unrecorded
    assert (entry.kind, entry.passes) == ("torch.func", 3)
    assert entry.source is not None and entry.source[0] == __file__
    assert Recording.from_json(t.recording.to_json()) == t.recording
    raw = json.loads(t.recording.to_json())
    raw["unrecorded"][0]["kind"] = "other"
    with pytest.raises(tracer.TracerError, match="unknown kind of unrecorded pass"):
        Recording.from_json(json.dumps(raw))


def test_tracers_own_warning_never_becomes_the_users_exception(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tracer.record.summary import QuickSummary

    def broken(self: QuickSummary, t: torch.Tensor) -> None:
        raise RuntimeError("a fault of tracer's")

    monkeypatch.setattr(QuickSummary, "summarise", broken)
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the user's choice: every warning an exception
        with tracer.trace() as t:
            (x * 3.0).sum().backward()
    assert x.grad is not None and x.grad.tolist() == [3.0, 3.0]
    assert len(t.graphs) == 1
    assert "tracer: a forward value was not recorded" in capsys.readouterr().err
    assert_nothing_left()


def _function_modes() -> list[str]:
    from torch.overrides import _get_current_function_mode_stack

    return [type(m).__name__ for m in _get_current_function_mode_stack()]


class _UsersMode(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


def test_a_mode_the_user_enters_inside_a_trace_stays_entered() -> None:
    mine = _UsersMode()
    t = tracer.trace()
    t.__enter__()
    mine.__enter__()
    t.__exit__(None, None, None)  # the trace ends first: the user's mode is still theirs
    assert _function_modes() == ["_UsersMode"]
    mine.__exit__(None, None, None)
    assert _function_modes() == []
    assert_nothing_left()


def test_a_trace_entered_twice_records_once_and_leaves_nothing() -> None:
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    t = tracer.trace()
    with t:
        with t:
            (x * x).sum().backward()
        assert _function_modes() == ["ForwardRecorder"]  # the outer block still records
        (x * 3.0).sum().backward()
    assert len(t.graphs) == 2
    assert _function_modes() == []
    assert_nothing_left()


def test_a_trace_closed_in_another_thread_leaves_its_recorder_inert_then_gone() -> None:
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    t = tracer.trace()
    t.__enter__()
    closer = threading.Thread(target=t.__exit__, args=(None, None, None))
    closer.start()
    closer.join()
    # This thread's stack cannot be changed from that one: the recorder stays, inert.
    y = torch.sin(x)
    assert y.grad_fn is not None
    assert "tracer" not in y.grad_fn.metadata  # type: ignore[operator]  # a dict at run time
    with tracer.trace():
        assert _function_modes() == ["ForwardRecorder"]  # the new trace's own, the old gone
    assert _function_modes() == []
    assert_nothing_left()


class Calls(TorchDispatchMode):
    """A user's own dispatch mode: notes every op it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.seen.append(str(func))
        return func(*args, **(kwargs or {}))


def test_the_users_dispatch_mode_sees_no_call_of_tracers() -> None:
    def program(traced: bool) -> list[str]:
        x = torch.tensor([1.0, 2.0], requires_grad=True)
        calls = Calls()
        with maybe_traced(traced), calls:
            torch.sin(x * 2.0).sum().backward()
        return calls.seen

    assert program(True) == program(False)
    assert_nothing_left()


def test_a_complex_zero_tensor_is_summarised_without_a_warning() -> None:
    from tracer.record.summary import Summariser

    zeros = torch._efficientzerotensor((3,), dtype=torch.complex64)
    summary = Summariser()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Casting complex values to real discards ..."
        key = summary.add(zeros)
        summary.run()
    data = summary.results[key]
    assert (data.norm, data.min, data.max) == (0.0, 0.0, 0.0) and data.note is None


def test_a_zero_gradient_stays_a_zero_tensor_with_torchs_error() -> None:
    def program(traced: bool) -> Any:
        x = torch.tensor([1.0, -2.0, 0.0], requires_grad=True)
        with maybe_traced(traced):
            (g,) = torch.autograd.grad(torch.sgn(x * 1).sum(), x)
            zero = g._is_zerotensor()
            try:
                g.add_(1)
            except RuntimeError as e:
                return zero, str(e)
        return zero, None

    how, (zero, error) = same_for_the_user(program)
    assert how == "returned" and zero and error is not None
    assert "ZeroTensors are immutable" in error


def test_a_large_forward_value_with_inf_is_summarised_without_a_warning() -> None:
    # A causal mask's -inf in a value that needs grad, larger than max_values: its
    # statistics over the finite values must come without torch's "requires_grad ... to a
    # scalar" warning (it reached the user's terminal, and an error filter made it raise).
    x = torch.randn(300, requires_grad=True)
    mask = torch.arange(300) % 3 == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with tracer.trace() as t:
            masked = x.masked_fill(mask, float("-inf"))
            masked.exp().sum().backward()
    [node] = [n for n in t.graphs[0].nodes if n.op.startswith("MaskedFill")]
    [value] = node.forward
    assert value is not None
    assert value.inf == 100 and value.nan == 0
    finite = x.detach()[~mask]
    assert value.min == float(finite.min()) and value.max == float(finite.max())
