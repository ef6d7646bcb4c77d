"""What the gradient flow costs a training step (tracer.record.gradflow), in process.

    .venv/bin/python benchmarks/bench_flow.py

An MLP's training steps (forward, backward, Adam), each variant a block of STEPS steps:
plain; with the flow recorder as a pass not recorded in full sees it (the norms after the
pass, the optimizer's step hooks); and as a recorded pass sees it (module outputs'
statistics too, through a global forward hook). Ratios against plain in the same
process, variants interleaved round by round, warm-up discarded, `gc.freeze()` after it,
one intra-op thread, median of ROUNDS (bench_cost's helpers).
"""

from __future__ import annotations

import torch
from bench_cost import interleaved, row
from torch import nn

from tracer.record.gradflow import FlowRecorder
from tracer.record.modules import ModuleTracker

STEPS = 50
ROUNDS = 9


def mlp(width: int, depth: int) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Linear(32, width), nn.Tanh()]
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width), nn.Tanh()]
    return nn.Sequential(*layers, nn.Linear(width, 10))


def main() -> None:
    torch.set_num_threads(1)
    for width, depth, batch in ((64, 3, 32), (256, 4, 128)):
        model = mlp(width, depth)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        x, y = torch.randn(batch, 32), torch.randint(0, 10, (batch,))
        tracker = ModuleTracker()
        tracker.enter(model)  # what the trace's module hooks do at the first call
        tracker.exit(model)

        def steps(
            recorder: FlowRecorder | None,
            recorded: bool,
            model: nn.Module = model,
            opt: torch.optim.Optimizer = opt,
            x: torch.Tensor = x,
            y: torch.Tensor = y,
        ) -> None:
            for n in range(STEPS):
                opt.zero_grad()
                nn.functional.cross_entropy(model(x), y).backward()
                if recorder is not None:
                    recorder.after_pass(n + 1, recorded)
                opt.step()

        def with_flow(recorded: bool, tracker: ModuleTracker = tracker) -> None:
            recorder = FlowRecorder(tracker, lambda t: None, print)
            recorder.open()
            hook = None
            if recorded:
                hook = nn.modules.module.register_module_forward_hook(
                    lambda m, a, out: recorder.module_output(m, out)
                )
            try:
                steps(recorder, recorded)
            finally:
                recorder.close()
                if hook is not None:
                    hook.remove()

        times = interleaved(
            {
                "plain": lambda: steps(None, False),
                "flow": lambda: with_flow(False),
                "flow, recorded": lambda: with_flow(True),
            },
            ROUNDS,
        )
        plain = times["plain"]
        print(
            f"MLP {depth}×{width}, batch {batch}: a plain step {plain / STEPS * 1e3:.3f} ms",
            flush=True,
        )
        row(
            "a step with the flow (a pass not recorded in full) / plain",
            times["flow"] / plain,
            "≤ 1.05",
        )
        row(
            "a step with the flow and module outputs (recorded) / plain",
            times["flow, recorded"] / plain,
            "(reference)",
        )


if __name__ == "__main__":
    main()
