"""`trace notebook`: a notebook's code cells run as Jupyter runs them, in an IPython shell."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import nbformat
import pytest
from conftest import drawn, one_error_line
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
from typer.testing import CliRunner

from cli import app

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

SIMPLE = """\
import torch
x = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
f = (x * x).sum()
f.backward()
"""


def cli(*args: str | Path):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def notebook(folder: Path, *cells: str, name: str = "nb.ipynb", version: int = 4) -> Path:
    nb = new_notebook(cells=[new_markdown_cell("# a notebook")] + [new_code_cell(c) for c in cells])
    path = folder / name
    path.write_text(nbformat.writes(nb, version=version), encoding="utf-8")
    return path


def pictures(folder: Path) -> list[str]:
    return drawn(folder)


def test_lecture_notebook(tmp_path: Path) -> None:
    result = cli("notebook", EXAMPLES / "lecture.ipynb", "--out", tmp_path / "pics")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""  # `%load_ext tracer` and `%%trace` just run: no warning
    cells = nbformat.read(EXAMPLES / "lecture.ipynb", as_version=4).cells
    code = [c.source for c in cells if c.cell_type == "code"]
    a, b = [i + 1 for i, source in enumerate(code) if ".backward(" in source]
    found = [tmp_path / "pics" / name for name in drawn(tmp_path / "pics")]
    assert [p.name.split("-line")[0] for p in found] == [f"01-cell{a}", f"02-cell{b}"]
    one, two = (ET.fromstring(p.read_text()) and p.read_text() for p in found)
    assert "LogBackward0" in one and "agree" in one
    assert "SinBackward0" in two and "SqueezeBackward4" in two and "agree" in two
    assert "✓ x (check)" in result.stdout and "✓ x (allclose)" in result.stdout
    assert f"cell {a}:" in result.stdout and f"cell {b}:" in result.stdout


def test_cells_run_as_in_jupyter(tmp_path: Path) -> None:
    path = notebook(
        tmp_path,
        '%time y = 1\ntext = """\n%not a magic\n!not a shell line\n"""\n!echo from-the-shell',
        "display('shown by display')\nassert get_ipython() is not None",
        "import asyncio\nawaited = await asyncio.sleep(0, result='awaited')\nawaited",
        "len?",
        "%%time\n" + SIMPLE,
        "x.grad;",  # a trailing ; shows no value, as in Jupyter
        "x.grad",
        "text",
    )
    result = cli("notebook", path, "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    out = result.stdout
    assert "shown by display" in out and "Out[3]: 'awaited'" in out
    assert "Return the number of items" in out  # len? shows len's help
    assert "Out[6]" not in out and "Out[7]: tensor([2., 4.], dtype=torch.float64)" in out
    assert "Out[8]: '\\n%not a magic\\n!not a shell line\\n'" in out  # strings stay as written
    # The backward in the %%time cell, at its line in the cell (IPython numbers the body
    # of a %%time cell from the line after the magic).
    assert pictures(tmp_path / "o") == ["01-cell5-line5.svg"]


def test_a_time_cells_error_names_its_line_in_the_cell(tmp_path: Path) -> None:
    path = notebook(tmp_path, "%%time\ny = 2\n\nraise ValueError('boom')")
    result = cli("notebook", path, "--out", tmp_path / "o")
    assert one_error_line(result) == "error: cell 1, line 4: ValueError: boom"


@pytest.mark.parametrize("magic", ["%matplotlib inline", "%matplotlib", "%matplotlib agg"])
def test_matplotlib_figures_render_off_screen_and_never_block(tmp_path: Path, magic: str) -> None:
    path = notebook(
        tmp_path,
        magic + "\nimport matplotlib.pyplot as plt",
        SIMPLE,
        "fig = plt.figure()\nplt.plot([1, 2, 3])\nplt.show()\nfig.savefig('plot.png')",
    )
    result = cli("notebook", path, "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
    assert pictures(tmp_path / "o") == ["01-cell2-line4.svg"]
    assert (tmp_path / "plot.png").read_bytes().startswith(b"\x89PNG")


def test_a_trace_cell_inside_a_traced_notebook_is_traced_once(tmp_path: Path) -> None:
    path = notebook(
        tmp_path,
        "%load_ext tracer\nimport tracer",
        "%%trace t\n" + SIMPLE + "tracer.check(x, 2 * x.detach(), quiet=True)\nf.item()",
        "type(t).__name__",
    )
    result = cli("notebook", path, "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
    assert pictures(tmp_path / "o") == ["01-cell2-line5.svg"]  # the cell's own line numbers
    assert "Out[2]: 5.0" in result.stdout and "Out[3]: 'Trace'" in result.stdout
    assert "✓ x (check)" in result.stdout


def test_version_3_notebooks_run(tmp_path: Path) -> None:
    path = notebook(tmp_path, SIMPLE, version=3)
    assert '"worksheets"' in path.read_text()
    result = cli("notebook", path, "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
    assert pictures(tmp_path / "o") == ["01-cell1-line4.svg"]


def test_a_cell_error_is_one_line_and_keeps_the_pictures(tmp_path: Path) -> None:
    path = notebook(tmp_path, SIMPLE, "y = 2\n\nraise ValueError('boom')", "never = 1")
    result = cli("notebook", path, "--out", tmp_path / "o")
    assert one_error_line(result) == "error: cell 2, line 3: ValueError: boom"
    assert pictures(tmp_path / "o") == ["01-cell1-line4.svg"]


def test_a_syntax_error_names_cell_and_line(tmp_path: Path) -> None:
    path = notebook(tmp_path, SIMPLE, "y = (1,\nz = 2")
    line = one_error_line(cli("notebook", path, "--out", tmp_path / "o"))
    assert line.startswith("error: cell 2, line ") and "SyntaxError" in line


@pytest.mark.parametrize(("ending", "code"), [("sys.exit(0)", 0), ("sys.exit(4)", 4)])
def test_exit_in_a_cell(tmp_path: Path, ending: str, code: int) -> None:
    path = notebook(tmp_path, SIMPLE, "import sys\n" + ending, "raise ValueError")
    result = cli("notebook", path, "--out", tmp_path / "o")
    assert result.exit_code == code, result.output
    if code:
        assert "cell 2, line 2: the code called exit(4)" in result.stderr


def test_runs_in_its_folder_as_main(tmp_path: Path) -> None:
    (tmp_path / "nbdir").mkdir()
    path = notebook(
        tmp_path / "nbdir",
        "import os\nassert __name__ == '__main__'\nopen('here', 'w').write(os.getcwd())",
        SIMPLE,
    )
    result = cli("notebook", path, "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "nbdir" / "here").read_text() == str(tmp_path / "nbdir")
    assert pictures(tmp_path / "o") == ["01-cell2-line4.svg"]


def test_a_script_given_as_notebook(tmp_path: Path) -> None:
    path = tmp_path / "script.py"
    path.write_text(SIMPLE)
    line = one_error_line(cli("notebook", path))
    assert "not a notebook" in line and "invalid JSON" in line and "trace run" in line


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"cells": [', "invalid JSON at line 1"),
        ('{"a": 1}', "not a notebook"),
        ('{"cells": 3, "nbformat": 4, "nbformat_minor": 5, "metadata": {}}', "not a valid"),
    ],
)
def test_not_a_notebook(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.ipynb"
    path.write_text(text)
    assert expected in one_error_line(cli("notebook", path, "--out", tmp_path / "o"))


def test_a_cells_in_place_error_is_explained(tmp_path: Path) -> None:
    path = notebook(
        tmp_path,
        "import torch\na = torch.tensor([0.5, -1.0], requires_grad=True)\nb = a.sigmoid()",
        "b.mul_(2)",
        "b.sum().backward()",
    )
    result = cli("notebook", path, "--out", tmp_path / "o")
    assert one_error_line(result).startswith(
        "error: cell 3, line 1: RuntimeError: b was changed in place by mul_ at cell 2, "
        "line 1 after SigmoidBackward0 saved it at cell 1, line 3 for backward (version 0, "
        "now 1)"
    )


def test_a_cells_use_of_a_none_grad_is_explained(tmp_path: Path) -> None:
    path = notebook(
        tmp_path,
        "import torch\nw = torch.tensor([0.5, -1.0], requires_grad=True)\ny = w * 3",
        "y.sum().backward()",
        "y.grad.norm()",
    )
    result = cli("notebook", path, "--out", tmp_path / "o")
    assert one_error_line(result) == (
        "error: cell 3, line 1: AttributeError: 'NoneType' object has no attribute 'norm' "
        "(y.grad is None: y is not a leaf (made by MulBackward0); call y.retain_grad() before "
        "backward)"
    )
    assert (
        "⚠ y.grad is None: y is not a leaf (made by MulBackward0); call y.retain_grad() before "
        "backward (read at cell 3, line 1)" in result.stdout.splitlines()
    )
