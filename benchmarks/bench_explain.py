"""What explaining costs (issue 20, points 1 and 2), as ratios against a baseline measured in
the same process, the variants interleaved round by round (bench_cost's `interleaved`: one
warm-up round discarded, `gc.freeze()` after it, median of 7, one intra-op thread):

- lines: the transformer's forward pass traced, each node keeping the user's line that ran
  its op (`ForwardRecorder.lines`, on by default) / the same with it off; and traced / plain;
  and a chain of 2,000 ops run by the user's own code (this file), lines kept / not.
- reads: 10,000 reads of a `.grad` on one line, under a trace whose recorder tells the trace
  of a None read / one that does not (`on_none_grad` None): a None `.grad` (the first read
  of each tensor is recorded, the others found told already) and a set one; and the same
  reads untraced, for scale (every read of a tensor attribute goes through the recorder's
  mode, with or without this).

    .venv/bin/python benchmarks/bench_explain.py
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from bench_cost import interleaved, row, transformer

import tracer
from tracer.record.forward import ForwardRecorder

READS = 10_000


def bench_lines() -> None:
    model, X = transformer()

    def forward(traced: bool, lines: bool = True) -> Callable[[], None]:
        def run() -> None:
            ForwardRecorder.lines = lines
            try:
                if traced:
                    with tracer.trace():
                        model(X).square().mean()
                else:
                    model(X).square().mean()
            finally:
                ForwardRecorder.lines = True

        return run

    t = interleaved(
        {
            "plain": forward(False),
            "lines": forward(True, lines=True),
            "no lines": forward(True, lines=False),
        }
    )
    print(f"transformer forward: plain {t['plain'] * 1e3:.1f} ms")
    row("forward traced, lines kept / not kept", t["lines"] / t["no lines"], "≈ 1")
    row("forward traced with lines / plain", t["lines"] / t["plain"], "(see bench_cost)")

    # Ops the user's own code runs (here: this file's), each op's line kept.
    x = torch.randn(8, requires_grad=True)

    def chain(lines: bool) -> Callable[[], None]:
        def run() -> None:
            ForwardRecorder.lines = lines
            try:
                with tracer.trace():
                    y = x
                    for _ in range(2000):
                        y = y * 1.0001
            finally:
                ForwardRecorder.lines = True

        return run

    t = interleaved({"lines": chain(True), "no lines": chain(False)})
    row("2,000 ops in user code, lines kept / not kept", t["lines"] / t["no lines"], "≈ 1")


def bench_reads() -> None:
    none = torch.zeros(3, requires_grad=True)
    grad = torch.zeros(3, requires_grad=True)
    grad.grad = torch.ones(3)

    def reads(t: torch.Tensor, traced: bool, told: bool = True) -> Callable[[], None]:
        def run() -> None:
            if not traced:
                for _ in range(READS):
                    t.grad  # noqa: B018 -- the read is what is measured
                return
            with tracer.trace() as tr:
                if not told:
                    assert tr.forward_recorder is not None
                    tr.forward_recorder.on_none_grad = None
                for _ in range(READS):
                    t.grad  # noqa: B018

        return run

    t = interleaved(
        {
            "none plain": reads(none, False),
            "none told": reads(none, True),
            "none not told": reads(none, True, told=False),
            "set plain": reads(grad, False),
            "set told": reads(grad, True),
            "set not told": reads(grad, True, told=False),
        }
    )
    print(f"{READS:,} reads of .grad: plain {t['none plain'] * 1e3:.2f} ms (None)")
    row("None .grad read, told / not told", t["none told"] / t["none not told"], "≈ 1")
    row("set .grad read, told / not told", t["set told"] / t["set not told"], "≈ 1")
    row("None .grad read, traced / plain", t["none told"] / t["none plain"], "(the mode's)")
    row("set .grad read, traced / plain", t["set told"] / t["set plain"], "(the mode's)")


def main() -> None:
    torch.set_num_threads(1)
    bench_lines()
    bench_reads()


if __name__ == "__main__":
    main()
