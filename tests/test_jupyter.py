"""Jupyter: `%load_ext tracer`, the `%%trace` cell magic and a Trace shown inline: in an
IPython shell in this process, and (slow) in a real kernel (ipykernel, driven by nbclient)
that runs this very Python, whatever `python` is."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

import tracer

X = "[0.1801, 0.3444, 0.4006, 0.6215, 0.2568, 0.3863, 0.5832, 0.4745, 0.8343, 0.0492]"

CELLS = [
    "%load_ext tracer",
    f"import torch\nimport tracer\nx = torch.tensor({X}, dtype=torch.float64, requires_grad=True)",
    # 2: the magic shows one picture per backward call, with the check made after it
    "%%trace t\nz = torch.dot(x, x)\nf = torch.log(1 + z)\nf.backward()\n"
    "tracer.check(x, 2 * x / (1 + z), quiet=True)\nf.item()",
    # 3: the Trace kept by the magic shows itself (Trace._repr_svg_)
    "t",
    # 4: a plain `with tracer.trace()` block, shown inline as the cell's value
    "with tracer.trace() as u:\n    x.grad = None\n    torch.sin(x).sum().backward()\nu",
    # 5: nothing to draw
    "%%trace\ny = 1 + 1",
    # 6: an error after a backward: the picture made so far, then the error
    "%%trace\ntorch.cos(x).sum().backward()\nraise ValueError('boom')",
]


def _kernel_manager(tmp_path: Path):
    """A kernel started with sys.executable (not whichever `python` is on PATH)."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    spec = tmp_path / "kernels" / "tracer-test"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    kernel = {"argv": argv, "display_name": "tracer test", "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(kernel))
    specs = KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")])
    return KernelManager(kernel_name="tracer-test", kernel_spec_manager=specs)


def _execute(nb, tmp_path: Path) -> None:
    from nbclient import NotebookClient

    client = NotebookClient(
        nb,
        km=_kernel_manager(tmp_path),
        timeout=60,
        allow_errors=True,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()


def _svgs(cell) -> list[str]:
    return [
        o["data"]["image/svg+xml"] for o in cell.outputs if "image/svg+xml" in o.get("data", {})
    ]


@pytest.fixture
def shell(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """An IPython shell with `%load_ext tracer` run, its displayed pictures in `.shown`."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.enabled = False
    ip: Any = InteractiveShell.instance(config=config)  # Any: it is given `.shown`
    ip.shown = []
    monkeypatch.setattr("IPython.display.display", lambda data, raw: ip.shown.append(data))
    assert run(ip, "%load_ext tracer").success
    run(ip, f"import torch, tracer\nx = torch.tensor({X}, dtype=torch.float64, requires_grad=True)")
    yield ip
    InteractiveShell.clear_instance()


def run(shell: Any, code: str) -> Any:
    return shell.run_cell(code, store_history=True)  # as Jupyter runs a cell


MAGIC = "%%trace t\nz = torch.dot(x, x)\nf = torch.log(1 + z)\nf.backward()\n"


def test_the_magic_shows_one_picture_per_backward_call_and_the_value(shell: Any) -> None:
    result = run(shell, MAGIC + "x.grad = None\ntorch.sin(x).sum().backward()\nf.item()")
    assert result.success and 1.0 < result.result < 2.0  # the last value, as for any cell
    first, second = (shown["image/svg+xml"] for shown in shell.shown)
    assert "LogBackward0" in first and "SinBackward0" in second
    assert "backward pass 1 at In [3]:4" in first  # the cell's own line numbers
    assert isinstance(shell.user_ns["t"], tracer.Trace)


def test_a_trailing_semicolon_hides_the_value_as_in_any_cell(shell: Any) -> None:
    assert run(shell, MAGIC + "f.item();").result is None
    assert run(shell, "f.item();").result is None
    assert run(shell, "f.item()").result is not None


def test_an_error_shows_the_pictures_so_far_then_raises(shell: Any) -> None:
    result = run(shell, MAGIC + "raise ValueError('boom')")
    assert isinstance(result.error_in_exec, ValueError)
    assert len(shell.shown) == 1 and "LogBackward0" in shell.shown[0]["image/svg+xml"]


def test_inside_an_active_trace_the_magic_just_runs(shell: Any) -> None:
    with tracer.trace() as outer:
        assert run(shell, MAGIC + "f.item()").success
    assert shell.shown == []  # the outer trace records: no second trace, no picture here
    assert len(outer.graphs) == 1 and shell.user_ns["t"] is outer


def test_a_check_shows_itself_readably(shell: Any) -> None:
    run(shell, MAGIC)
    check = run(shell, "tracer.check(x, 2 * x / (1 + z), quiet=True)").result
    assert repr(check).startswith("<Check ∂/∂x: ✓ agree, largest error")
    assert "✓ agree" in check._repr_html_() and "manual" in check._repr_html_()


@pytest.mark.slow
def test_trace_magic_in_a_real_kernel(tmp_path: Path) -> None:
    nb = new_notebook(cells=[new_code_cell(c) for c in CELLS])
    _execute(nb, tmp_path)
    cells = nb.cells
    for cell in cells[:6]:
        assert not [o for o in cell.outputs if o.output_type == "error"], cell.outputs

    (svg,) = _svgs(cells[2])
    assert svg.lstrip().startswith("<?xml") and "</svg>" in svg
    for text in ("LogBackward0", "DotBackward0", "AccumulateGrad", "agree", "backward pass 1"):
        assert text in svg
    values = [o for o in cells[2].outputs if o.output_type == "execute_result"]
    assert values and values[0]["data"]["text/plain"].startswith("1.")  # f.item(), shown

    (kept,) = _svgs(cells[3])
    assert "LogBackward0" in kept
    (plain,) = _svgs(cells[4])
    assert "SinBackward0" in plain

    assert not _svgs(cells[5])
    assert "no backward pass was run" in "".join(o.get("text", "") for o in cells[5].outputs)

    (partial,) = _svgs(cells[6])
    assert "CosBackward0" in partial
    errors = [o for o in cells[6].outputs if o.output_type == "error"]
    assert errors and errors[0]["ename"] == "ValueError"


@pytest.mark.slow
def test_lecture_notebook_in_a_real_kernel(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    nb = nbformat.read(root / "examples" / "lecture.ipynb", as_version=4)
    _execute(nb, tmp_path)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    (svg,) = [s for c in code for s in _svgs(c)]  # the one %%trace cell
    for text in ("SinBackward0", "MvBackward0", "SqueezeBackward4", "agree"):
        assert text in svg
    checked = "".join(o.get("text", "") for c in code for o in c.outputs)
    assert "✓ agree" in checked  # tracer.check's report for exercise a
