"""What tracing costs, as ratios measured in this process (or its children) against a
baseline measured the same way, so that they mean the same on any machine:

    .venv/bin/python benchmarks/bench_cost.py            # everything (~10 minutes)
    .venv/bin/python benchmarks/bench_cost.py transformer phases dot startup chain memory

Method: one intra-op thread; each measurement's variants interleaved round by round; the
first round discarded (warm-up), then `gc.freeze()`; the median of 7 rounds. The rows:

- transformer: a 24-layer nn.TransformerEncoder (d_model 64, 4 heads, ff 128, batch 4×32,
  ~1,800 backward nodes), one training step's forward + backward (gradients reset first),
  traced / plain: with forward values (the default) and with `values=False` (structure
  and gradients only); the floors of any Python recorder: the graph walked and a pre-hook
  on every node, doing nothing or reducing each arriving gradient; tracer against the
  second floor (the targets); and the forward pass alone, traced with values / untraced.
- phases: where that step's time goes with `values=False` (walk, hooks, engine, assembly)
  beside the floor's, in thread CPU time: a profile, not a ratio.
- dot: DOT text of that graph, ours / torchviz's `make_dot(...).source`, in the slide view
  (vs plain make_dot) and the full view (vs make_dot(show_attrs=True, show_saved=True)).
- startup: `trace exercise-a --out a.svg`, `trace --help`, `trace list` / `python -c
  "import torch"`, each as a fresh process.
- chain: a 100,000-op chain (`y = sin(y)`), traced / plain, and the seconds to write its
  .dot and .json.
- models: the transformer as a script, `trace run --depth 1 --format svg` (traced, drawn
  with one box per layer, laid out by Graphviz) / `python -c "import torch"`, each as a
  fresh process.
- memory: a 200-step training loop (MLP, SGD, cross-entropy), peak RSS under `trace run`
  / `python`, each as a fresh process; and 24 ops on a 2048×2048 tensor (complex64 and
  float32, times a number or plus a fresh constant), peak above the start, traced / plain.
"""

from __future__ import annotations

import gc
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import tracer
from tracer.output.render import RenderOptions, render_dot
from tracer.view.collapse import EVERY_DEPTH

ROUNDS = 7
BIN = Path(sys.executable).parent
TRACE = str(BIN / "trace")


def interleaved(
    variants: dict[str, Callable[[], object]], rounds: int = ROUNDS
) -> dict[str, float]:
    """Median seconds of each variant: one warm-up round, then `rounds` rounds, the
    variants taking turns within each round."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(rounds + 1):
        for name, run in variants.items():
            start = time.perf_counter()
            run()
            elapsed = time.perf_counter() - start
            if round_:
                times[name].append(elapsed)
        if round_ == 0:
            gc.collect()
            gc.freeze()  # what warm-up left behind is never walked again
    gc.unfreeze()
    return {name: statistics.median(values) for name, values in times.items()}


def row(name: str, ratio: float, target: str, unit: str = "×") -> None:
    print(f"  {name:<58}{ratio:>8.2f}{unit}   (target {target})", flush=True)


# -- the transformer -----------------------------------------------------------------------


def transformer() -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(
        d_model=64, nhead=4, dim_feedforward=128, batch_first=True
    )
    model = torch.nn.TransformerEncoder(layer, num_layers=24, enable_nested_tensor=False)
    return model, torch.randn(4, 32, 64)


def floor_walk(out: torch.Tensor) -> set[Any]:
    """The floor's walk: every node of `out`'s graph, found with nothing made per node."""
    nodes: set[Any] = {out.grad_fn}
    queue: list[Any] = [out.grad_fn]
    while queue:
        for child, _ in queue.pop().next_functions:
            if child is not None and child not in nodes:
                nodes.add(child)
                queue.append(child)
    return nodes


def floor_reductions(grads: tuple[torch.Tensor | None, ...]) -> None:
    """The floor's pre-hook: norm, min and max of each arriving gradient, the least a
    summary is."""
    for g in grads:
        if g is not None and g.numel():
            low, high = torch.aminmax(g)
            (torch.linalg.vector_norm(g).item(), low.item(), high.item())


def bench_transformer() -> None:
    model, X = transformer()

    # One training step's forward and backward, gradients reset first as a training loop
    # does (`set_to_none`, PyTorch's default), in both variants alike.
    def plain() -> None:
        model.zero_grad(set_to_none=True)
        model(X).square().mean().backward()

    def traced(values: bool) -> Callable[[], None]:
        def run() -> None:
            model.zero_grad(set_to_none=True)
            with tracer.trace(values=values):
                model(X).square().mean().backward()

        return run

    # The floors of any Python recorder of the gradient flow, without tracer: walk the
    # graph and hang a pre-hook on every node (that does nothing, or that takes the norm,
    # min and max of each gradient arriving, the least a summary is).
    def floor(reduce: bool) -> Callable[[], None]:
        def run() -> None:
            model.zero_grad(set_to_none=True)
            out = model(X).square().mean()
            nodes = floor_walk(out)
            hook = floor_reductions if reduce else (lambda grads: None)
            handles = [node.register_prehook(hook) for node in nodes]
            out.backward()
            for handle in handles:
                handle.remove()

        return run

    # The forward pass alone (the loss made, no backward), untraced and with values: what
    # the forward recorder costs.
    def forward(traced: bool) -> Callable[[], None]:
        def run() -> None:
            if traced:
                with tracer.trace():
                    model(X).square().mean()
            else:
                model(X).square().mean()

        return run

    t = interleaved(
        {
            "plain": plain,
            "forward": forward(False),
            "forward traced": forward(True),
            "values": traced(True),
            "structure": traced(False),
            "hooks": floor(reduce=False),
            "reductions": floor(reduce=True),
        }
    )
    with tracer.trace() as tr:
        model(X).square().mean().backward()
    nodes = len(tr.graphs[0].nodes)
    print(f"transformer: 24 layers, {nodes} backward nodes, plain {t['plain'] * 1e3:.0f} ms")
    row("traced / plain, with forward values (the default)", t["values"] / t["plain"], "-")
    row("traced / plain, values=False (structure, gradients)", t["structure"] / t["plain"], "-")
    print("  floors, without tracer: a walk and a pre-hook on every node, which")
    row("  does nothing / plain", t["hooks"] / t["plain"], "-")
    row("  reduces each arriving gradient / plain", t["reductions"] / t["plain"], "-")
    # The targets are set against the floor any Python recorder of exact gradient
    # statistics pays (the second floor), measured in this same run.
    row("traced / the floor, with forward values", t["values"] / t["reductions"], "≤ 1.3")
    row("traced / the floor, values=False", t["structure"] / t["reductions"], "≤ 1.1")
    row("its forward alone, with values / untraced", t["forward traced"] / t["forward"], "≤ 1.3")


def bench_phases() -> None:
    """Where a traced step's time goes (`values=False`) beside the floor's: thread CPU
    time (what other processes on the machine take is not counted), the median of each
    phase over `ROUNDS` steps after a warm-up. Not a ratio: a profile, for the README's
    account of what is left above the floor."""
    from tracer.record.capture import GraphCapture

    model, X = transformer()
    spent: dict[str, list[float]] = {}

    def timed(name: str, fn: Callable[..., object]) -> Callable[..., object]:
        def run(*args: object, **kwargs: object) -> object:
            start = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                spent.setdefault(name, []).append(time.thread_time() - start)

        return run

    originals = {name: getattr(GraphCapture, name) for name in ("__init__", "hook", "finish")}
    labels = {"__init__": "walk", "hook": "hook", "finish": "unhook, assemble, modules"}

    def measured(name: str, start: float) -> None:
        spent.setdefault(name, []).append(time.thread_time() - start)

    def traced_step() -> None:
        model.zero_grad(set_to_none=True)
        start = time.thread_time()
        with tracer.trace(values=False):
            out = model(X).square().mean()
            measured("traced: forward", start)
            start = time.thread_time()
            out.backward()
            measured("traced: backward, all of it", start)

    def floor_step() -> None:
        model.zero_grad(set_to_none=True)
        start = time.thread_time()
        out = model(X).square().mean()
        measured("floor: forward (plain)", start)
        start = time.thread_time()
        nodes = floor_walk(out)
        measured("floor: walk", start)
        start = time.thread_time()
        handles = [node.register_prehook(floor_reductions) for node in nodes]
        measured("floor: hook", start)
        out.backward()
        for handle in handles:
            handle.remove()

    # autograd's engine entry point, which tracer's own wrapper (installed while a trace is
    # open) calls in turn: the engine with the hooks in it, timed alike in both steps.
    engine = torch.autograd._engine_run_backward
    which = ["floor"]

    def timed_engine(*args: Any, **kwargs: Any) -> Any:
        start = time.thread_time()
        try:
            return engine(*args, **kwargs)
        finally:
            spent.setdefault(f"{which[0]}: the engine with the hooks", []).append(
                time.thread_time() - start
            )

    torch.autograd._engine_run_backward = timed_engine
    for name, fn in originals.items():
        setattr(GraphCapture, name, timed(f"traced: {labels[name]}", fn))
    try:
        for round_ in range(ROUNDS + 1):
            which[0] = "traced"
            traced_step()
            which[0] = "floor"
            floor_step()
            if round_ == 0:
                spent.clear()
                gc.collect()
                gc.freeze()
        gc.unfreeze()
    finally:
        torch.autograd._engine_run_backward = engine
        for name, fn in originals.items():
            setattr(GraphCapture, name, fn)
    median = {name: statistics.median(values) * 1e3 for name, values in spent.items()}
    parts = ("walk", "hook", "the engine with the hooks", "unhook, assemble, modules")
    median["traced: the rest (the capture freed, the collector after its pause)"] = median[
        "traced: backward, all of it"
    ] - sum(median[f"traced: {part}"] for part in parts)
    print("phases: a step's thread CPU time, values=False / the floor (ms, median)")
    for name in sorted(median):
        print(f"  {name:<58}{median[name]:>8.1f} ms", flush=True)


def bench_dot() -> None:
    from torchviz import make_dot

    model, X = transformer()
    with tracer.trace() as tr:
        out = model(X).square().mean()
        out.backward(retain_graph=True)
    recording = tr.recording
    # The whole graph (not collapsed to fit a slide): the same nodes torchviz draws.
    slide = RenderOptions("slide", depth=EVERY_DEPTH)
    full = RenderOptions("full", depth=EVERY_DEPTH)
    params = dict(model.named_parameters())
    t = interleaved(
        {
            "ours slide": lambda: render_dot(recording, slide),
            "torchviz": lambda: make_dot(out, params=params).source,
            "ours full": lambda: render_dot(recording, full),
            "torchviz full": lambda: (
                make_dot(out, params=params, show_attrs=True, show_saved=True).source
            ),
        }
    )
    print("dot: the transformer's graph as DOT text")
    row("slide view / make_dot", t["ours slide"] / t["torchviz"], "≤ 1")
    row("full view / make_dot(show_attrs, show_saved)", t["ours full"] / t["torchviz full"], "≤ 1")


# -- fresh processes ------------------------------------------------------------------------


def _run(command: list[str], cwd: str) -> None:
    subprocess.run(command, cwd=cwd, check=True, capture_output=True)


def bench_startup() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        t = interleaved(
            {
                "import torch": lambda: _run([sys.executable, "-c", "import torch"], tmp),
                "exercise-a": lambda: _run([TRACE, "exercise-a", "--out", "a.svg"], tmp),
                "help": lambda: _run([TRACE, "--help"], tmp),
                "list": lambda: _run([TRACE, "list"], tmp),
            }
        )
    base = t["import torch"]
    print(f"startup: fresh processes; python -c 'import torch' takes {base:.2f} s")
    row("trace exercise-a --out a.svg / import torch", t["exercise-a"] / base, "≤ 1.2")
    row("trace --help / import torch", t["help"] / base, "≤ 0.3")
    row("trace list / import torch", t["list"] / base, "≤ 0.3")


CHAIN = 100_000


def bench_chain() -> None:
    x = torch.tensor([0.1, 0.2, 0.3, 0.4], requires_grad=True)

    def plain() -> None:
        y = x
        for _ in range(CHAIN):
            y = torch.sin(y)
        y.sum().backward()

    def traced() -> None:
        with tracer.trace():
            plain()

    t = interleaved({"plain": plain, "traced": traced}, rounds=ROUNDS)
    with tracer.trace() as tr:
        plain()
    with tempfile.TemporaryDirectory() as tmp:
        seconds = {}
        for suffix in ("dot", "json"):
            start = time.perf_counter()
            tr.render(Path(tmp) / f"chain.{suffix}")
            seconds[suffix] = time.perf_counter() - start
    print(f"chain: {CHAIN:,} ops ({len(tr.graphs[0].nodes):,} nodes), plain {t['plain']:.2f} s")
    row("traced / plain", t["traced"] / t["plain"], "≤ 4")
    row("writing .dot", seconds["dot"], "≤ 5 s", " s")
    row("writing .json", seconds["json"], "≤ 5 s", " s")


TRAINING = textwrap.dedent(
    """
    import torch
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = torch.nn.Sequential(
        torch.nn.Linear(256, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 10)
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = torch.nn.CrossEntropyLoss()
    for step in range(200):
        X = torch.randn(512, 256)
        y = torch.randint(0, 10, (512,))
        loss = loss_fn(model(X), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    """
)


def peak_rss(command: list[str], cwd: str) -> float:
    """The peak resident memory (MiB) of a child process."""
    code = (
        "import resource, subprocess, sys;"
        f"subprocess.run({command!r}, cwd={cwd!r}, check=True, capture_output=True);"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip()) / 1024


def bench_memory() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "train.py"
        script.write_text(TRAINING)
        plain, traced = [], []
        for _ in range(3):  # memory is far less noisy than time
            plain.append(peak_rss([sys.executable, str(script)], tmp))
            traced.append(peak_rss([TRACE, "run", str(script), "--format", "json"], tmp))
    p, t = statistics.median(plain), statistics.median(traced)
    print(f"memory: a 200-step training loop; python peaks at {p:.0f} MiB")
    row("peak under `trace run` / python", t / p, "≤ 1.3")
    print("memory: 24 ops on a 2048×2048 tensor, each intermediate freed; peak above the")
    print("  start, traced / plain")
    for kind, dtype in (("scalar", "complex64"), ("scalar", "float32"), ("constants", "float32")):
        p, t = (chain_peak(kind, dtype, traced) for traced in (False, True))
        what = "y * 1.0001" if kind == "scalar" else "y + a fresh constant"
        row(f"{what}, {dtype} (plain: {p:.0f} MiB)", t / p, "≤ 1.3")


CHAIN_PEAK = textwrap.dedent(
    """
    import contextlib, sys
    import torch
    import tracer

    kind, dtype, traced = sys.argv[1], getattr(torch, sys.argv[2]), sys.argv[3] == "1"

    def resident(field):
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith(field))

    torch.manual_seed(0)
    before = resident("VmRSS:")
    x = torch.randn(2048, 2048, dtype=dtype, requires_grad=True)
    with tracer.trace() if traced else contextlib.nullcontext():
        y = x
        for _ in range(24):
            y = y * 1.0001 if kind == "scalar" else y + torch.randn(2048, 2048, dtype=dtype)
        y.abs().sum().backward()
    print(resident("VmHWM:") - before)
    """
)


def chain_peak(kind: str, dtype: str, traced: bool) -> float:
    """MiB a fresh process's peak takes above what it held after its imports (as
    tests/test_memory.py measures it: glibc's mmap threshold fixed, so that a freed large
    tensor leaves the resident set at once)."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(1 << 20))
    command = [sys.executable, "-c", CHAIN_PEAK, kind, dtype, "1" if traced else "0"]
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    return int(out.stdout.split()[-1]) / 2**20


MODEL_SCRIPT = textwrap.dedent(
    """
    import torch
    torch.set_num_threads(1)
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(
        d_model=64, nhead=4, dim_feedforward=128, batch_first=True
    )
    model = torch.nn.TransformerEncoder(layer, num_layers=24, enable_nested_tensor=False)
    model(torch.randn(4, 32, 64)).square().mean().backward()
    """
)


def bench_models() -> None:
    """The 24-layer transformer (see `transformer`), traced and drawn at --depth 1 to SVG,
    end to end, against starting Python and importing torch."""
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "model.py"
        script.write_text(MODEL_SCRIPT)
        command = [TRACE, "run", str(script), "--depth", "1", "--format", "svg", "--out", "pics"]
        t = interleaved(
            {
                "import torch": lambda: _run([sys.executable, "-c", "import torch"], tmp),
                "model": lambda: _run(command, tmp),
            }
        )
    base = t["import torch"]
    print(
        f"models: python -c 'import torch' takes {base:.2f} s; the traced model {t['model']:.2f} s"
    )
    row("trace run (24 layers) --depth 1 → SVG / import torch", t["model"] / base, "≤ 3")


BENCHES = {
    "transformer": bench_transformer,
    "phases": bench_phases,
    "dot": bench_dot,
    "startup": bench_startup,
    "chain": bench_chain,
    "memory": bench_memory,
    "models": bench_models,
}


def main() -> None:
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    chosen = sys.argv[1:] or list(BENCHES)
    unknown = [c for c in chosen if c not in BENCHES]
    if unknown:
        sys.exit(f"unknown benchmark {', '.join(unknown)}: choose from {', '.join(BENCHES)}")
    print(f"torch {torch.__version__}, {ROUNDS} rounds each, median, one intra-op thread")
    for name in chosen:
        BENCHES[name]()


if __name__ == "__main__":
    main()
