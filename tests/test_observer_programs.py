"""The first law, on whole programs: each runs as `python script.py` and as `trace run
script.py`, in separate processes, and what it computed is compared bit for bit (values,
the sign of zeros, strides)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

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


def run_both(tmp_path: Path, program: str) -> tuple[dict, dict, str]:
    """The program's results untraced and under `trace run`, each from its own process,
    and what `trace run` printed (stdout, then stderr)."""
    script = tmp_path / "program.py"
    script.write_text(textwrap.dedent(program), encoding="utf-8")
    plain, traced = tmp_path / "plain.pt", tmp_path / "traced.pt"
    runs = [
        [sys.executable, str(script), str(plain)],
        [str(BIN / "trace"), "run", script.name, "--out", str(tmp_path / "p"), "--", str(traced)],
    ]
    for command in runs:
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
    return torch.load(plain), torch.load(traced), done.stdout + done.stderr


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
    script = tmp_path / "program.py"
    in_process = []
    for values in ("values", "no-values"):
        saved = tmp_path / f"{values}.pt"
        done = subprocess.run(
            [sys.executable, str(script), str(saved), values],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        in_process.append(torch.load(saved))
    assert plain["grad_fn"] == "CompiledFunctionBackward"
    assert plain["graph breaks"] == 0 and plain["graphs"] == 1
    for other in (traced, *in_process):
        assert same_bits(plain["out"][0], other["out"][0])
        assert plain["out"][1] == other["out"][1]
        assert all(same_bits(a, b) for a, b in zip(plain["grads"], other["grads"], strict=True))
        for key in ("grad_fn", "graph breaks", "graphs", "warnings"):
            assert other[key] == plain[key], key
