"""The first law, on whole programs: each runs as `python script.py` and as `trace run
script.py`, in separate processes, and what it computed is compared bit for bit (values,
the sign of zeros, strides)."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import drawn

BIN = Path(sys.executable).parent

# Evaluation fast paths: nn.TransformerEncoder and nn.MultiheadAttention in eval() take a
# fused path when nothing needs a gradient and no torch-function mode is active. One
# training step first, so that `trace run` has a pass to draw.
EVALUATION_FAST_PATHS = """
import sys
import torch
from torch import nn

torch.manual_seed(0)
layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True, dropout=0.0)
encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=True)
attention = nn.MultiheadAttention(16, 2, batch_first=True)
x = torch.randn(3, 5, 16)
mask = torch.tensor([[False] * 5, [False] * 3 + [True] * 2, [False] * 4 + [True]])
(encoder(x).sum() + attention(x, x, x)[0].sum()).backward()

encoder.eval()
attention.eval()
out = {}
with torch.no_grad():
    out["encoder, no_grad"] = encoder(x, src_key_padding_mask=mask)
    out["attention, no_grad"] = attention(x, x, x, key_padding_mask=mask)[0]
with torch.inference_mode():
    out["encoder, inference_mode"] = encoder(x, src_key_padding_mask=mask)
    out["attention, inference_mode"] = attention(x, x, x, key_padding_mask=mask)[0]
for p in [*encoder.parameters(), *attention.parameters()]:
    p.requires_grad_(False)
out["encoder, frozen"] = encoder(x, src_key_padding_mask=mask)
out["attention, frozen"] = attention(x, x, x, key_padding_mask=mask)[0]
torch.save({k: (v.clone(), v.stride()) for k, v in out.items()}, sys.argv[1])
"""


def run_both(
    tmp_path: Path, program: str, *args: str, named: str = "program.py"
) -> tuple[dict, dict, str]:
    """The program's results untraced and under `trace run`, each from its own process,
    and what `trace run` printed (stdout, then stderr). The program is the file `named`
    (as both command lines name it) in `tmp_path`, the working directory; it is given the
    file to save its results in, then `args`."""
    script = tmp_path / named
    script.write_text(textwrap.dedent(program), encoding="utf-8")
    plain, traced = tmp_path / "plain.pt", tmp_path / "traced.pt"
    run_in(tmp_path, [sys.executable, named, str(plain), *args])
    trace_run = [str(BIN / "trace"), "run", named, "--out", str(tmp_path / "p")]
    printed = run_in(tmp_path, [*trace_run, "--", str(traced), *args])
    return torch.load(plain), torch.load(traced), printed


def run_inside_a_trace(tmp_path: Path, how: str) -> Any:
    """The results of program.py (written by `run_both`) run by Python with `how` as its
    second argument: "values" or "no values", for a `tracer.trace(values=...)` inside."""
    out = tmp_path / f"{how}.pt"
    run_in(tmp_path, [sys.executable, "program.py", str(out), how])
    return torch.load(out)


def run_in(folder: Path, command: list[str]) -> str:
    """Run `command` in `folder`, which must succeed; what it printed (stdout, stderr)."""
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=folder)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout + done.stderr


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal bit for bit: NaN payloads and the sign of zero included."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    bits = {4: torch.int32, 8: torch.int64, 2: torch.int16}[a.element_size()]
    return torch.equal(a.contiguous().view(bits), b.contiguous().view(bits))


@pytest.mark.slow
def test_evaluation_fast_paths_compute_as_untraced(tmp_path: Path) -> None:
    plain, traced, _ = run_both(tmp_path, EVALUATION_FAST_PATHS)
    assert plain.keys() == traced.keys()
    for name, (value, stride) in plain.items():
        traced_value, traced_stride = traced[name]
        assert same_bits(value, traced_value), name
        assert stride == traced_stride, name


# torch.func's transforms run autograd on wrapped tensors of their own: those passes are
# counted, not recorded, and leave no warning behind.
TORCH_FUNC = """
import sys
import warnings
import torch
from torch.func import grad, hessian, jacrev, vjp

warnings.simplefilter("error", RuntimeWarning)
torch.manual_seed(0)


def f(x):
    return (x.sin() * x).sum()


x = torch.randn(3, requires_grad=True)
out = {"grad": grad(f)(x), "jacrev": jacrev(f)(x), "hessian": hessian(f)(x)}
value, pullback = vjp(f, x)
out["vjp"] = pullback(torch.tensor(1.0))[0]
f(x).backward()
out["x.grad"] = x.grad
torch.save({k: (v.detach().clone(), v.stride()) for k, v in out.items()}, sys.argv[1])
"""


@pytest.mark.slow
def test_torch_func_passes_are_noted_not_recorded(tmp_path: Path) -> None:
    plain, traced, printed = run_both(tmp_path, TORCH_FUNC)
    for name, (value, stride) in plain.items():
        assert same_bits(value, traced[name][0]), name
        assert stride == traced[name][1], name
    assert "tracer:" not in printed  # no warning of tracer's
    assert "3 backward passes inside torch.func at program.py:16 are not recorded" in printed
    assert "1 backward pass inside torch.func at program.py:18" in printed  # the pullback
    assert "01-line19.svg" in printed  # the program's own pass is drawn


# The script's module as Python makes it: each global it starts with (in Python's order),
# sys.argv[0] as given, the file name its code is compiled under. One backward pass, so
# that `trace run` has a pass to draw.
MAIN_MODULE = '''"""The script's own docstring."""
seen = dict(globals())  # before any import of its own

import builtins
import sys

import __main__
import torch


def described(value):
    """Its type, and what tells two of a kind apart."""
    kind = f"{type(value).__module__}.{type(value).__qualname__}"
    if value is builtins:
        return [kind, "the builtins module"]
    if value is builtins.__dict__:
        return [kind, "the builtins module's dict"]
    if value is None or isinstance(value, (str, dict)):
        return [kind, value]
    return [kind, getattr(value, "name", None), getattr(value, "path", None)]  # a loader


x = torch.ones(2, requires_grad=True)
(x * 2).sum().backward()
torch.save(
    {
        "globals": [[name, described(value)] for name, value in seen.items()],
        "sys.argv[0]": sys.argv[0],
        "sys.modules['__main__'] runs it": sys.modules["__main__"].__dict__ is globals(),
        "import __main__ is it": __main__.__dict__ is globals(),
        "its code's file name": sys._getframe().f_code.co_filename,
    },
    sys.argv[1],
)
'''


@pytest.mark.slow
def test_the_scripts_main_module_is_the_one_python_makes(tmp_path: Path) -> None:
    plain, traced, _ = run_both(tmp_path, MAIN_MODULE, named="./program.py")
    assert traced == plain
    # What was compared: Python's own absolute path, joined on and not normalised.
    file = dict(plain["globals"])["__file__"][1]
    assert Path(file).is_absolute() and file.endswith("/./program.py")


# torch.jit.trace of a module and of a function, with its sanity check (check_trace) on:
# a difference between its two tracings is a TracerWarning, made an error here, or a
# TracingCheckError. The graphs as torch prints them hold each op's source line and the
# names of its values. Run untraced, inside `tracer.trace(values=...)`, or as given.
JIT_TRACE = """
import contextlib
import sys
import warnings

import torch
from torch import nn

import tracer

warnings.simplefilter("error", torch.jit.TracerWarning)
torch.manual_seed(0)


class TwoLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 3)
        self.fc2 = nn.Linear(3, 2)

    def forward(self, x):
        hidden = torch.relu(self.fc1(x))
        return self.fc2(hidden), hidden.sum()


def scaled_sine(x):
    doubled = x * 2
    return doubled.sin().sum()


how = sys.argv[2]
inside = contextlib.nullcontext() if how == "as given" else tracer.trace(values=how == "values")
model, x = TwoLayers(), torch.randn(5, 4, requires_grad=True)
with inside:
    module = torch.jit.trace(model, (x,))
    function = torch.jit.trace(scaled_sine, (x,))
    out, total = module(x)
    (out.sum() + total + function(x)).backward()
graphs = [str(module.graph), module.code, str(module.inlined_graph), str(function.graph)]
grads = [x.grad, *(p.grad for p in model.parameters())]
torch.save({"graphs": graphs, "values": [out, total, *grads]}, sys.argv[1])
"""


@pytest.mark.slow
def test_torch_jit_trace_passes_its_check_and_traces_the_same_graphs(tmp_path: Path) -> None:
    plain, traced, printed = run_both(tmp_path, JIT_TRACE, "as given")
    assert "01-line" in printed and "tracer:" not in printed  # drawn, and no warning of ours
    inside = [run_inside_a_trace(tmp_path, how) for how in ("values", "no values")]
    for result in (traced, *inside):
        assert result["graphs"] == plain["graphs"]
        for value, other in zip(plain["values"], result["values"], strict=True):
            assert same_bits(value.detach(), other.detach())


# Anomaly mode prints, when a node's backward fails or returns NaN, the stack that made
# the node: a module's op, an op of the user's, F.relu (a torch function written in
# Python: it dispatches to a mode through torch.overrides), a custom Function. Inside a
# trace the forward runs through `t.call`.
ANOMALY = """
import contextlib
import sys
import warnings

import torch
import torch.nn.functional as F
from torch import nn

import tracer


class Refuses(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("this backward refuses")


def hidden(x, layer):
    return F.relu(layer(x) * 2)


def refused(x, layer):
    return Refuses.apply(hidden(x, layer)).sum()


def not_a_number(x, layer):
    h = hidden(x, layer)
    return (torch.sqrt(h - h) * 0).sum()


how = sys.argv[2]
torch.manual_seed(0)
layer, x = nn.Linear(3, 3), torch.randn(2, 3, requires_grad=True)
torch.autograd.set_detect_anomaly(True)
printed = []
for loss_of in (refused, not_a_number):
    inside = contextlib.nullcontext() if how == "as given" else tracer.trace(values=how == "values")
    with warnings.catch_warnings(record=True) as seen, inside as t:
        warnings.simplefilter("always")
        loss = loss_of(x, layer) if t is None else t.call(loss_of, x, layer)
        try:
            loss.backward()
        except RuntimeError as e:
            printed.append(str(e))
    printed.extend(str(w.message) for w in seen)
(x * 2).sum().backward()  # a pass that ends, for `trace run` to draw
torch.save(printed, sys.argv[1])
"""


@pytest.mark.slow
def test_anomaly_modes_forward_stacks_show_no_frame_of_tracers(tmp_path: Path) -> None:
    plain, traced, _ = run_both(tmp_path, ANOMALY, "as given")
    assert sum("Traceback of forward call" in text for text in plain) == 2
    assert traced == plain
    for how in ("values", "no values"):
        assert run_inside_a_trace(tmp_path, how) == plain


# `t.call` reads the function's locals with a trace function of that frame's own: the
# profiler `python -m cProfile` set profiles on, the call included.
PROFILED = """
import torch

import tracer


def loss_of(x):
    scaled = x * 3
    return (scaled * scaled).sum()


def after():
    return sum(range(4))


x = torch.tensor([1.0, 2.0], requires_grad=True)
with tracer.trace() as t:
    t.call(loss_of, x).backward()
for _ in range(3):
    after()
"""


@pytest.mark.slow
def test_call_under_python_m_cprofile_is_profiled_and_profiling_goes_on(tmp_path: Path) -> None:
    (tmp_path / "program.py").write_text(PROFILED, encoding="utf-8")
    printed = run_in(tmp_path, [sys.executable, "-m", "cProfile", "program.py"])
    assert re.search(r"^\s+1\s.*program\.py:\d+\(loss_of\)$", printed, re.MULTILINE)
    assert re.search(r"^\s+3\s.*program\.py:\d+\(after\)$", printed, re.MULTILINE)


# A process the program forks: DataLoader's workers (which end in os._exit), then a child
# of its own that makes a backward pass and comes back out of the program: at its end, by
# sys.exit(3), or by raising. The child ends as Python ends it; tracer's wrap-up (the
# summary, the pictures) is the parent's alone. The user's atexit function runs in both.
FORKED = """
import atexit
import os
import sys

import torch
from torch.utils.data import DataLoader, TensorDataset

how = sys.argv[2]
parent = os.getpid()
atexit.register(lambda: print("atexit:", "parent" if os.getpid() == parent else "child"))
torch.manual_seed(0)
x = torch.randn(3, requires_grad=True)
(x * 2).sum().backward()
data = DataLoader(
    TensorDataset(torch.arange(8.0)), batch_size=2, num_workers=2, multiprocessing_context="fork"
)
batches = [batch for (batch,) in data]
child = os.fork()
if child == 0:
    (x * 3).sum().backward()
    print("child: backward done", flush=True)
    if how == "exit 3":
        sys.exit(3)
    if how == "raise":
        raise ValueError("the child's own error")
else:
    _, status = os.waitpid(child, 0)
    ended = os.waitstatus_to_exitcode(status)
    torch.save({"child's status": ended, "batches": batches, "x.grad": x.grad}, sys.argv[1])
"""


@pytest.mark.slow
@pytest.mark.parametrize("how", ["end", "exit 3", "raise"])
def test_a_forked_child_ends_as_python_ends_it_and_leaves_the_wrap_up_to_its_parent(
    tmp_path: Path, how: str
) -> None:
    (tmp_path / "program.py").write_text(FORKED, encoding="utf-8")
    pictures = tmp_path / "p"
    trace_run = [str(BIN / "trace"), "run", "program.py", "--out", str(pictures), "--"]
    runs = {
        "plain": [sys.executable, "program.py", str(tmp_path / "plain.pt"), how],
        "traced": [*trace_run, str(tmp_path / "traced.pt"), how],
    }
    done = {
        name: subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
        for name, command in runs.items()
    }
    plain, traced = torch.load(tmp_path / "plain.pt"), torch.load(tmp_path / "traced.pt")
    assert (
        traced["child's status"] == plain["child's status"] == {"end": 0, "exit 3": 3}.get(how, 1)
    )
    assert all(map(torch.equal, plain["batches"], traced["batches"]))
    assert len(plain["batches"]) == len(traced["batches"]) == 4
    assert same_bits(plain["x.grad"], traced["x.grad"])
    assert done["traced"].returncode == done["plain"].returncode == 0
    assert done["traced"].stderr == done["plain"].stderr  # the child's traceback, if any

    def programs_own(printed: str) -> list[str]:
        return sorted(line for line in printed.splitlines() if line.startswith(("child", "atexit")))

    assert programs_own(done["traced"].stdout) == programs_own(done["plain"].stdout)
    # One summary, the parent's: its one pass, and its one picture in the folder.
    assert done["traced"].stdout.count("Backward passes in program.py") == 1
    assert "wrote 1 picture(s)" in done["traced"].stdout
    assert drawn(pictures) == ["01-line14.svg"]
    assert (pictures / "index.html").is_file()  # the parent's run page, written once


# torch.compile under a trace compiles exactly as untraced: one graph, no graph break (the
# module hooks' ContextVar.get would make one), CompiledFunctionBackward in the graph, the
# same numbers and no warning of tracer's making. The pass AOT autograd runs while it
# compiles is the compiler's own: not recorded.
TORCH_COMPILE = """
import sys
import warnings
import torch
import torch._dynamo
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
compiled = torch.compile(model, backend="aot_eager")
x = torch.randn(5, 4)


def step():
    out = compiled(x)
    out.sum().backward()
    return out


with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    if len(sys.argv) > 2:  # in-process traces, with and without forward values
        import tracer

        with tracer.trace(values=sys.argv[2] == "values") as t:
            out = step()
        assert [g.kind for g in t.graphs] == ["backward"], t.graphs
        assert "CompiledFunctionBackward" in [n.op for n in t.graphs[0].nodes]
    else:
        out = step()
counters = torch._dynamo.utils.counters
found = {
    "out": (out.detach(), out.stride()),
    "grads": [p.grad for p in model.parameters()],
    "grad_fn": type(out.grad_fn).__name__,
    "graph breaks": sum(counters["graph_break"].values()),
    "graphs": counters["stats"]["unique_graphs"],
    "warnings": sorted(str(w.message) for w in caught),
}
torch.save(found, sys.argv[1])
"""


@pytest.mark.slow
def test_torch_compile_compiles_as_untraced(tmp_path: Path) -> None:
    plain, traced, _ = run_both(tmp_path, TORCH_COMPILE)
    inside = [run_inside_a_trace(tmp_path, how) for how in ("values", "no values")]
    assert plain["grad_fn"] == "CompiledFunctionBackward"
    assert plain["graph breaks"] == 0 and plain["graphs"] == 1
    for other in (traced, *inside):
        assert same_bits(plain["out"][0], other["out"][0])
        assert plain["out"][1] == other["out"][1]
        assert all(same_bits(a, b) for a, b in zip(plain["grads"], other["grads"], strict=True))
        for key in ("grad_fn", "graph breaks", "graphs", "warnings"):
            assert other[key] == plain[key], key
