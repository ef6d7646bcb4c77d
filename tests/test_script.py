"""`trace run`: the user's own script, one picture per backward call."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import drawn
from typer.testing import CliRunner

from cli import app
from tracer.model.graph import Recording

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def cli(*args: str | Path):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def one_error_line(result, code: int = 2) -> str:
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def script(tmp_path: Path, text: str, name: str = "script.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def svg_text(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    root = ET.fromstring(text)  # well-formed XML, an <svg> document
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    return text


def backward_lines(path: Path) -> list[int]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [i + 1 for i, line in enumerate(lines) if ".backward(" in line]


SIMPLE = """\
import torch
x = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
f = (x * x).sum()
f.backward()
"""


# -- the lecture, as a script and as a notebook (the real `trace` command) ---------------------


def test_lecture_script(tmp_path: Path) -> None:
    result = cli("run", EXAMPLES / "lecture.py", "--out", tmp_path / "pics")
    assert result.exit_code == 0, result.output
    a, b = backward_lines(EXAMPLES / "lecture.py")
    first, second = tmp_path / "pics" / f"01-line{a}.svg", tmp_path / "pics" / f"02-line{b}.svg"
    assert drawn(tmp_path / "pics") == [first.name, second.name]
    one, two = svg_text(first), svg_text(second)
    for op in ("LogBackward0", "DotBackward0", "AccumulateGrad", "agree"):
        assert op in one
    for op in ("SinBackward0", "MvBackward0", "SqueezeBackward4", "agree"):
        assert op in two  # the manual formula's graph too: it was compared with allclose
    assert "SinBackward0" not in one and "LogBackward0" not in two
    assert "✓ x (check)" in result.stdout and "✓ x (allclose)" in result.stdout
    assert f"lecture.py:{a}" in result.stdout and f"lecture.py:{b}" in result.stdout
    assert "exercise b: allclose True" in result.stdout  # the script's own output


@pytest.mark.slow
def test_lecture_script_runs_as_plain_python() -> None:
    r = subprocess.run(
        [sys.executable, str(EXAMPLES / "lecture.py")], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr


# -- scripts ------------------------------------------------------------------------------------


def test_script_runs_as_python_would(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    script(tmp_path / "sub", "def grad_of(x):\n    (x * x).sum().backward()\n", "helper_one.py")
    path = script(
        tmp_path / "sub",
        """\
        import json, os, sys
        import torch
        import helper_one  # found through sys.path[0], the script's folder

        x = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
        helper_one.grad_of(x)
        if __name__ == "__main__":
            seen = {"argv": sys.argv, "path0": sys.path[0], "cwd": os.getcwd(), "file": __file__}
            with open("seen.json", "w") as f:
                json.dump(seen, f)
        """,
    )
    result = cli("run", path, "--out", tmp_path / "out", "--lr", "0.1", "pos")
    assert result.exit_code == 0, result.output
    seen = json.loads(Path("seen.json").read_text())  # written in the working directory
    assert seen["argv"] == [str(path), "--lr", "0.1", "pos"]
    assert seen["path0"] == str(tmp_path / "sub")
    assert seen["file"] == str(path)
    assert drawn(tmp_path / "out") == ["01-helper_one-line2.svg"]
    assert "helper_one.py:2" in result.stdout


def test_names_passes_and_checks_per_backward_call(tmp_path: Path) -> None:
    path = script(
        tmp_path,
        """\
        import torch
        import tracer

        x = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
        y = x * 3
        f = y.sum()
        f.backward()
        tracer.check(x, torch.full((2,), 3.0, dtype=torch.float64), quiet=True)

        w = torch.tensor([0.5], dtype=torch.float64, requires_grad=True)
        g = (w * w).sum()
        (dw,) = torch.autograd.grad(g, w)
        ok = torch.allclose(dw, 2 * w.detach())
        assert ok
        """,
    )
    result = cli("run", path, "--out", tmp_path / "out", "--format", "json")
    assert result.exit_code == 0, result.output
    one, two = (tmp_path / "out" / name for name in drawn(tmp_path / "out"))
    assert (one.name, two.name) == ("01-line7.json", "02-line12.json")
    first, second = (Recording.from_json(p.read_text()) for p in (one, two))
    assert "script.py:7" in first.title
    assert {n.name for n in first.graphs[0].nodes} >= {"x", "y", "f"}  # module-level names
    assert [c.name for c in first.checks] == ["x"] and first.passed
    assert [c.name for c in second.checks] == ["w"] and second.passed
    assert len(second.graphs) == 1  # 2 * w.detach() has no graph to draw
    assert "✓ x (check)" in result.stdout and "✓ w (allclose)" in result.stdout


def test_allclose_that_fails_is_a_failed_check(tmp_path: Path) -> None:
    path = script(
        tmp_path,
        SIMPLE + "print('same?', torch.allclose(x.grad, x))\n"
        "print('unrelated', torch.allclose(x.detach(), x.detach()))\n",
    )
    result = cli("run", path, "--out", tmp_path / "out")
    assert result.exit_code == 1, result.output  # the picture is written; the verdict fails
    assert "same? False" in result.stdout and "✗ x (allclose)" in result.stdout
    assert result.stdout.count("(allclose)") == 1  # the allclose without a gradient is no check
    assert "DISAGREE" in svg_text(tmp_path / "out" / "01-line4.svg")


@pytest.mark.parametrize("fmt", ["png", "pdf", "dot"])
def test_picture_formats(tmp_path: Path, fmt: str) -> None:
    result = cli("run", script(tmp_path, SIMPLE), "--out", tmp_path / "o", "-f", fmt)
    assert result.exit_code == 0, result.output
    data = (tmp_path / "o" / f"01-line4.{fmt}").read_bytes()
    assert data.startswith({"png": b"\x89PNG", "pdf": b"%PDF", "dot": b"digraph"}[fmt])


def test_detail_and_older_pictures(tmp_path: Path) -> None:
    path = script(tmp_path, SIMPLE)
    assert cli("run", path, "--out", tmp_path / "o", "--detail", "slide").exit_code == 0
    path.write_text("\n" + SIMPLE)  # the backward call moves to line 5
    result = cli("run", path, "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
    assert drawn(tmp_path / "o") == ["01-line4.svg", "01-line5.svg"]
    # 01-line4.svg and the step-through page written beside it, 01-line4.html
    assert "also holds 2 older picture(s)" in result.stdout


def test_exit_zero_ends_the_script_normally(tmp_path: Path) -> None:
    path = script(tmp_path, SIMPLE + "import sys\nsys.exit(0)\nraise ValueError\n")
    assert cli("run", path, "--out", tmp_path / "o").exit_code == 0


# -- bad input: one line, non-zero exit, pictures made so far kept ------------------------------


def test_missing_file(tmp_path: Path) -> None:
    assert "no such file" in one_error_line(cli("run", tmp_path / "nope.py"))
    assert "no such file" in one_error_line(cli("notebook", tmp_path / "nope.ipynb"))


def test_syntax_error(tmp_path: Path) -> None:
    path = script(tmp_path, "import torch\nx = (1,\ny = 2\n")
    line = one_error_line(cli("run", path, "--out", tmp_path / "o"))
    assert "script.py:" in line and "SyntaxError" in line
    assert not (tmp_path / "o").exists()


def test_no_backward(tmp_path: Path) -> None:
    path = script(tmp_path, "import torch\nprint(torch.ones(2).sum())\n")
    line = one_error_line(cli("run", path, "--out", tmp_path / "o"))
    assert "no backward pass was run" in line and "nothing to draw" in line


def test_backward_twice_suggests_retain_graph(tmp_path: Path) -> None:
    path = script(tmp_path, SIMPLE + "f.backward()\n")
    line = one_error_line(cli("run", path, "--out", tmp_path / "o"))
    assert "script.py:5" in line and "retain_graph=True" in line
    assert (tmp_path / "o" / "01-line4.svg").exists()  # the first pass's picture is kept


def test_exception_in_the_script(tmp_path: Path) -> None:
    path = script(tmp_path, SIMPLE + "def broken():\n    return 1 / 0\n\nbroken()\n")
    result = cli("run", path, "--out", tmp_path / "o")
    line = one_error_line(result)
    assert line == "error: script.py:6: ZeroDivisionError: division by zero".replace(
        "script.py", str(path)
    )
    assert "01-line4.svg" in result.stdout  # the summary lists the picture made so far
    svg_text(tmp_path / "o" / "01-line4.svg")


def test_bad_out_and_format_fail_before_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = script(tmp_path, "open('ran', 'w').close()\n" + SIMPLE)
    (tmp_path / "file").write_text("")
    assert "is a file" in one_error_line(cli("run", path, "--out", tmp_path / "file"))
    assert "svg" in one_error_line(cli("run", path, "--out", tmp_path / "o", "-f", "gif"))
    assert "folder" in one_error_line(cli("run", path, "--out", tmp_path / "graph.svg"))
    assert "huge" in one_error_line(cli("run", path, "--detail", "huge"))
    assert not Path("ran").exists()


def test_an_out_folder_that_cannot_be_made_fails_before_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = script(tmp_path, "open('ran', 'w').close()\n" + SIMPLE)
    # /proc refuses new folders even to root, whose permission bits are never in the way.
    assert "cannot create /proc/pics" in one_error_line(cli("run", path, "--out", "/proc/pics"))
    assert not Path("ran").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("ending", "summary"),
    [("sys.stdout.close()", False), ("sys.stdout = io.StringIO()", True)],
)
def test_a_script_that_closes_or_replaces_stdout(
    tmp_path: Path, ending: str, summary: bool
) -> None:
    path = script(tmp_path, "import io, sys\n" + SIMPLE + ending + "\n")
    trace = Path(sys.executable).parent / "trace"
    done = subprocess.run(
        [str(trace), "run", str(path), "--out", str(tmp_path / "pics")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert drawn(tmp_path / "pics") == ["01-line5.svg"]
    if summary:  # replaced: tracer's summary still reaches the terminal
        assert "Backward passes in" in done.stdout and "wrote 1 picture(s)" in done.stdout
    else:  # closed: said on stderr instead
        assert "closed stdout" in done.stderr


def test_notebook_given_to_run(tmp_path: Path) -> None:
    nb = tmp_path / "nb.ipynb"
    nb.write_text("{}")
    assert "trace notebook" in one_error_line(cli("run", nb))


def test_the_scripts_own_arguments_go_after_a_double_dash(tmp_path: Path) -> None:
    path = script(tmp_path, SIMPLE + "import sys\nopen(sys.argv[1], 'w').write(repr(sys.argv))\n")
    seen = tmp_path / "argv"
    result = cli("run", path, "--out", tmp_path / "o", "--", seen, "--out", "-f")
    assert result.exit_code == 0, result.output
    assert seen.read_text() == repr([str(path), str(seen), "--out", "-f"])
    assert drawn(tmp_path / "o") == ["01-line4.svg"]


def test_a_script_that_changes_directory_still_draws_into_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    path = script(tmp_path, "import os\nos.chdir('elsewhere')\n" + SIMPLE)
    result = cli("run", path, "--out", "pics")
    assert result.exit_code == 0, result.output
    assert drawn(tmp_path / "pics") == ["01-line6.svg"]
    assert not (tmp_path / "elsewhere" / "pics").exists()
    assert Path.cwd() == tmp_path  # and the working directory is back


def test_a_broken_symlink_as_out_fails_before_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pics").symlink_to(tmp_path / "gone")
    path = script(tmp_path, "open('ran', 'w').close()\n" + SIMPLE)
    assert "broken symbolic link" in one_error_line(cli("run", path, "--out", "pics"))
    assert not Path("ran").exists()


@pytest.mark.parametrize(
    ("raise_it", "expected"),
    [
        (
            "class Odd(Exception):\n    def __str__(self):\n        raise RuntimeError\n"
            "raise Odd()",
            "Odd: <unprintable Odd>",
        ),
        ("raise GeneratorExit('stop')", "GeneratorExit: stop"),
        ("raise KeyboardInterrupt", "interrupted"),
    ],
)
def test_any_exception_is_one_line_and_keeps_the_pictures(
    tmp_path: Path, raise_it: str, expected: str
) -> None:
    path = script(tmp_path, SIMPLE + raise_it + "\n")
    line = one_error_line(cli("run", path, "--out", tmp_path / "o"))
    assert line.startswith(f"error: {path}:") and line.endswith(expected)
    svg_text(tmp_path / "o" / "01-line4.svg")


@pytest.mark.parametrize(
    ("ending", "code"), [("sys.exit(3)", 3), ("sys.exit('bye')", 1), ("sys.exit()", 0)]
)
def test_the_scripts_exit_status_is_passed_on(tmp_path: Path, ending: str, code: int) -> None:
    path = script(tmp_path, SIMPLE + "import sys\n" + ending + "\n")
    result = cli("run", path, "--out", tmp_path / "o")
    assert result.exit_code == code, result.output
    assert (tmp_path / "o" / "01-line4.svg").exists()


def test_user_text_is_never_read_as_markup(tmp_path: Path) -> None:
    (tmp_path / "[").mkdir()
    check = "tracer.check(x, 2 * x.detach(), name='[/bold]', quiet=True)\n"
    path = script(tmp_path / "[", "import tracer\n" + SIMPLE + check, name="x].py")
    assert "[/x].py" in str(path)
    result = cli("run", path, "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
    assert "✓ [/bold] (check)" in result.stdout and "[/x].py" in result.stdout
