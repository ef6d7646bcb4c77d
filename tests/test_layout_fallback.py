"""Every picture lays out: when Graphviz cannot finish in time, the next lighter view is
drawn and says so; when none can, one line says what to do; one pass too large never ends
a run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import drawn
from typer.testing import CliRunner

import tracer
from cli import app
from tracer.output import graphviz, pictures
from tracer.output.graphviz import LayoutTimeout, picture
from tracer.output.render import RenderOptions


def recording() -> tracer.Recording:
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    with tracer.trace() as t:
        (x * x).sum().backward()
    return t.recording


def test_a_view_graphviz_cannot_lay_out_in_time_is_drawn_lighter_and_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sources: list[bytes] = []
    real = graphviz.lay_out

    def slow_at_first(dot: bytes, fmt: str, nodes: int) -> bytes:
        sources.append(dot)
        if len(sources) == 1:
            raise LayoutTimeout(f"Graphviz's `dot` did not lay out the {nodes} nodes within 1 s")
        return real(dot, fmt, nodes)

    monkeypatch.setattr(graphviz, "lay_out", slow_at_first)
    notes: list[str] = []
    svg = picture(recording(), "svg", RenderOptions(detail="full"), notes).decode()
    assert notes == [
        "Graphviz's `dot` did not lay out the 3 nodes within 1 s as asked: this is the slide view"
    ]
    assert "this is the slide view" in svg and "this is the slide view" in sources[1].decode()
    assert "this is" not in sources[0].decode()


def test_when_no_view_lays_out_in_time_one_line_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def never(dot: bytes, fmt: str, nodes: int) -> bytes:
        raise LayoutTimeout("Graphviz's `dot` did not lay out the 3 nodes within 1 s")

    monkeypatch.setattr(graphviz, "lay_out", never)
    with pytest.raises(tracer.TracerError) as raised:
        picture(recording(), "svg", RenderOptions(detail="full"))
    message = str(raised.value)
    assert "nor in a lighter view: write .dot or .json instead" in message
    assert "--detail slide" not in message  # no advice that would not work


def test_one_pass_that_cannot_be_drawn_never_ends_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / "three.py"
    script.write_text(
        "import torch\n"
        "x = torch.tensor([1.0, 2.0], requires_grad=True)\n"
        "for _ in range(3):\n"
        "    (x * x).sum().backward()\n",
        encoding="utf-8",
    )
    real = pictures.write

    def second_too_large(
        recording: tracer.Recording,
        path: Path,
        options: RenderOptions | None = None,
        notes: list[str] | None = None,
    ) -> Path:
        if Path(path).name.startswith("02-"):
            raise tracer.TracerError("Graphviz's `dot` did not lay out the 3 nodes within 1 s")
        return real(recording, path, options, notes)

    monkeypatch.setattr(pictures, "write", second_too_large)
    out = tmp_path / "pics"
    result = CliRunner().invoke(
        app, ["run", str(script), "--out", str(out)], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 2, result.output
    assert drawn(out) == ["01-line4.svg", "03-line4.svg"]
    assert "not drawn" in result.stdout  # the summary table is printed
    assert "error: backward pass 2 is not drawn: Graphviz's `dot`" in result.stderr
