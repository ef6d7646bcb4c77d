"""What a whole traced run costs (issue 19), as ratios against the same run untraced:

    .venv/bin/python benchmarks/bench_runs.py              # everything (~15 minutes)
    .venv/bin/python benchmarks/bench_runs.py pass mlp     # some rows

- pass: in this process, an MLP training step whose backward pass is not selected
  (`tracer.trace(passes="1")`, after pass 1) / the same step untraced: the backward call
  alone, and the whole step (forward, backward, optimizer).
- mlp, gpt, cnn: the scripts in benchmarks/scripts/ (a 2,000-step MLP training loop, a
  tiny GPT, a small CNN), each as a fresh process: `trace run SCRIPT --out DIR` with the
  default selection and with `--passes 1,2,3` / `python SCRIPT`; the wall time, and the
  peak memory (the child's ru_maxrss).

Method (benchmarks/bench_cost.py's): one intra-op thread (OMP_NUM_THREADS=1 for the
children); variants interleaved round by round; the first round discarded (warm-up), then
`gc.freeze()`; the median of 7 rounds.
"""

from __future__ import annotations

import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

import tracer

ROUNDS = 7
HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
TRACE = str(BIN / "trace")
SCRIPTS = {"mlp": "mlp.py", "gpt": "tiny_gpt.py", "cnn": "cnn.py"}


def row(name: str, ratio: float, target: str) -> None:
    print(f"  {name:<62}{ratio:>7.2f}×   (target {target})", flush=True)


# -- a pass not selected, in this process ----------------------------------------------------


def _training_step() -> Callable[[], float]:
    """One step of a small MLP's training; returns the seconds its backward call took."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(20, 32), torch.nn.ReLU(), torch.nn.Linear(32, 32), torch.nn.ReLU(),
        torch.nn.Linear(32, 2),
    )  # fmt: skip
    inputs, labels = torch.randn(64, 20), torch.randint(0, 2, (64,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

    def step() -> float:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(inputs), labels)
        start = time.perf_counter()
        loss.backward()
        took = time.perf_counter() - start
        optimizer.step()
        return took

    return step


def bench_pass(steps: int = 300) -> None:
    print("a training step whose backward pass is not selected / untraced (in process)")
    plain_step, traced_step = _training_step(), _training_step()
    trace = tracer.trace(passes="1")
    backward: dict[str, list[float]] = {"plain": [], "traced": []}
    whole: dict[str, list[float]] = {"plain": [], "traced": []}

    def plain() -> tuple[float, float]:
        start = time.perf_counter()
        spent = sum(plain_step() for _ in range(steps))
        return spent, time.perf_counter() - start

    def traced() -> tuple[float, float]:
        start = time.perf_counter()
        with trace:  # pass 1 (the warm-up's first) is recorded; every later one is not
            spent = sum(traced_step() for _ in range(steps))
        return spent, time.perf_counter() - start

    for round_ in range(ROUNDS + 1):
        for name, run in (("plain", plain), ("traced", traced)):
            spent, took = run()
            if round_:
                backward[name].append(spent)
                whole[name].append(took)
        if round_ == 0:
            gc.collect()
            gc.freeze()
    gc.unfreeze()
    assert trace.recording.recorded_passes() == [1]
    med = {k: statistics.median(v) for k, v in backward.items()}
    row("the backward call, not selected / plain", med["traced"] / med["plain"], "≤ 1.02")
    med = {k: statistics.median(v) for k, v in whole.items()}
    row("the whole step (forward, backward, optimizer) / plain", med["traced"] / med["plain"], "—")


# -- whole runs, fresh processes ---------------------------------------------------------------


def _child(command: list[str]) -> tuple[float, int]:
    """Wall seconds and peak memory (KiB, the child's ru_maxrss) of one fresh process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(process.pid, 0)
    took = time.perf_counter() - start
    errors = process.stderr
    assert errors is not None
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed: {errors.read().decode()}")
    errors.close()
    return took, usage.ru_maxrss


def bench_script(key: str) -> None:
    script = str(HERE / "scripts" / SCRIPTS[key])
    print(f"{SCRIPTS[key]}, a whole run / `python {SCRIPTS[key]}` (fresh processes)")
    with tempfile.TemporaryDirectory() as tmp:
        variants = {
            "plain": [sys.executable, script],
            "default": [TRACE, "run", script, "--out", f"{tmp}/default"],
            "first 3": [TRACE, "run", script, "--out", f"{tmp}/first", "--passes", "1,2,3"],
        }
        seconds: dict[str, list[float]] = {k: [] for k in variants}
        peaks: dict[str, list[int]] = {k: [] for k in variants}
        for round_ in range(ROUNDS + 1):
            for name, command in variants.items():
                took, peak = _child(command)
                if round_:
                    seconds[name].append(took)
                    peaks[name].append(peak)
    time_ = {k: statistics.median(v) for k, v in seconds.items()}
    peak_ = {k: statistics.median(v) for k, v in peaks.items()}
    print(f"  (python {SCRIPTS[key]}: {time_['plain']:.1f} s, {peak_['plain'] / 1024:.0f} MiB)")
    for name in ("default", "first 3"):
        passes = "" if name == "default" else " --passes 1,2,3"
        row(f"time, trace run{passes} / python", time_[name] / time_["plain"], "≤ 1.2")
        row(f"peak memory, trace run{passes} / python", peak_[name] / peak_["plain"], "≤ 1.3")


def main(which: list[str]) -> None:
    torch.set_num_threads(1)
    rows = which or ["pass", *SCRIPTS]
    for key in rows:
        if key == "pass":
            bench_pass()
        elif key in SCRIPTS:
            bench_script(key)
        else:
            raise SystemExit(f"unknown row {key!r}: choose from pass, {', '.join(SCRIPTS)}")


if __name__ == "__main__":
    main(sys.argv[1:])
