"""What tracing costs: traced backward vs untraced, and capture + DOT vs torchviz's make_dot.

Prints ratios measured in this process, so they compare like with like on any machine:

    .venv/bin/python benchmarks/bench_trace.py
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torchviz import make_dot

import tracer
from tracer.render import render_dot


def best_of(fn: Callable[[], object], repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def chain(depth: int) -> Callable[[], torch.Tensor]:
    def build() -> torch.Tensor:
        x = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
        y = x
        for _ in range(depth):
            y = torch.sin(y) * 1.0001
        return y

    return build


def mlp(width: int) -> Callable[[], torch.Tensor]:
    def build() -> torch.Tensor:
        g = torch.Generator().manual_seed(0)
        X = torch.randn(64, width, generator=g)
        h = X
        for _ in range(8):
            W = torch.randn(width, width, generator=g, requires_grad=True)
            h = torch.tanh(h @ W)
        return h.square().mean()

    return build


def untraced(build: Callable[[], torch.Tensor]) -> None:
    build().backward()


def traced(build: Callable[[], torch.Tensor]) -> None:
    with tracer.trace() as t:
        build().backward()
    render_dot(t.recording)


def torchviz(build: Callable[[], torch.Tensor]) -> None:
    out = build()
    make_dot(out).source  # noqa: B018 - building the source is the work measured
    out.backward()


def main() -> None:
    print(f"{'graph':<22}{'nodes':>7}{'traced/untraced':>17}{'traced/torchviz':>17}")
    for name, build in [
        ("chain depth 200", chain(200)),
        ("chain depth 400", chain(400)),
        ("MLP 8 layers, 256", mlp(256)),
    ]:
        with tracer.trace() as t:
            build().backward()
        nodes = len(t.graphs[0].nodes)
        base, ours, viz = (
            best_of(lambda b=build: untraced(b)),
            best_of(lambda b=build: traced(b)),
            best_of(lambda b=build: torchviz(b)),
        )
        print(f"{name:<22}{nodes:>7}{ours / base:>16.1f}x{ours / viz:>16.1f}x")
    try:
        torchviz(chain(1000))
        print("torchviz on a 2,000-node chain: ok")
    except RecursionError:
        print("torchviz on a 2,000-node chain: RecursionError (tracer: ok)")


if __name__ == "__main__":
    main()
