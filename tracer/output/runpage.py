"""The run's page, `index.html` in the folder of `trace run` / `trace notebook`: the pass
table the terminal prints, the gradient flow's chart with its vanishing and exploding
layers, module outputs at the passes recorded in full, every check, and links to each
drawn pass's picture and step-through page.

Self-contained: the chart is inlined (its SVG, with no script), the styles are inline,
and nothing is fetched; the links are relative, to the files beside it. Every text is
formatted by tracer.view.text, as the terminal's.

    write_run(folder, title, passes, pictures, flow) -> the files written
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from urllib.parse import quote

from tracer.files import write_atomic
from tracer.model.flow import FlowMark, GradientFlow
from tracer.model.passes import Pass
from tracer.output.flowchart import FLOW_CHART, FLOW_DATA, flow_svg
from tracer.output.pictures import WrittenPictures, drawn_pictures
from tracer.view.text import (
    ACTIVATION_COLUMNS,
    PASS_COLUMNS,
    activation_cells,
    check_line,
    flow_marks,
    flow_summary,
    pass_cells,
    visible,
)

RUN_PAGE = "index.html"
# The passes whose module outputs the page lists (the rest are in gradient-flow.json):
# the first few and the last, as the pass selection draws them.
_ACTIVATION_PASSES_FIRST = 3


def _text(value: str) -> str:
    return html.escape(visible(value))


def _link(path: Path | None, text: str) -> str:
    if path is None:
        return _text(text)
    return f'<a href="{html.escape(quote(path.name))}">{_text(text)}</a>'


def _inline_svg(svg: str) -> str:
    """The chart's SVG element alone (no XML declaration or doctype inside HTML)."""
    return svg[svg.index("<svg") :]


def _pass_table(passes: Sequence[Pass], drawn: WrittenPictures) -> str:
    pictures = drawn_pictures(drawn.written)
    head = "".join(f"<th>{_text(c)}</th>" for c in (*PASS_COLUMNS, "step through"))
    rows = []
    for p in passes:
        picture = pictures.get(p.number)
        page = drawn.pages.get(p.number)
        cells = pass_cells(p, None if picture is None else picture.name)
        number, where, nodes, checks, picture_text = cells
        verdict = {True: "passed", False: "failed", None: "unchecked"}[p.passed]
        rows.append(
            f'<tr class="{verdict}" data-pass="{p.number}">'
            f'<td class="number">{_text(number)}</td><td>{_text(where)}</td>'
            f'<td class="number">{_text(nodes)}</td><td>{_text(checks)}</td>'
            f"<td>{_link(picture, picture_text)}</td>"
            f"<td>{_link(page, page.name) if page is not None else '—'}</td></tr>"
        )
    return (
        f'<table id="passes"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )


def _activation_table(flow: GradientFlow) -> str:
    recorded = sorted({a.pass_number for a in flow.activations})
    shown = set(recorded[:_ACTIVATION_PASSES_FIRST] + recorded[-1:])
    rows = [
        "<tr>" + "".join(f"<td>{_text(c)}</td>" for c in activation_cells(a)) + "</tr>"
        for a in flow.activations
        if a.pass_number in shown
    ]
    if not rows:
        return '<p class="note">No module output was summarised.</p>'
    head = "".join(f"<th>{_text(c)}</th>" for c in ACTIVATION_COLUMNS)
    more = len(recorded) - len(shown)
    note = (
        f'<p class="note">The module outputs of {more} more pass(es) are in '
        f"{_link(Path(FLOW_DATA), FLOW_DATA)}.</p>"
        if more
        else ""
    )
    return (
        f'<table id="activations"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>{note}"
    )


def _checks(passes: Sequence[Pass]) -> str:
    parts = []
    for p in passes:
        if p.recording.checks:
            lines = "".join(
                f'<li class="check">{_text(check_line(c))}</li>' for c in p.recording.checks
            )
            parts.append(f"<h3>{_text(p.recording.title)}</h3><ul>{lines}</ul>")
    return "".join(parts) or '<p class="note">No check was made.</p>'


def render_run_page(
    title: str,
    passes: Sequence[Pass],
    drawn: WrittenPictures,
    flow: GradientFlow,
    chart: str,
    marks: Sequence[FlowMark] | None = None,
) -> str:
    """The page as one HTML document; `chart` is the flow's SVG (flowchart.flow_svg);
    `marks`: flow.marks(), when already computed."""
    css = (resources.files("tracer") / "assets" / "run.css").read_text(encoding="utf-8")
    if "</style" in css.lower():
        raise AssertionError("the stylesheet would close its own <style> element")
    marks = flow.marks() if marks is None else marks
    described = flow_marks(marks)
    marks_html = (
        '<ul class="marks">' + "".join(f"<li>{_text(m)}</li>" for m in described) + "</ul>"
        if described
        else ""
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_text(title)}</title><style>{css}</style></head>
<body>
<h1>{_text(title)}</h1>
<section><h2>Backward passes</h2>{_pass_table(passes, drawn)}</section>
<section class="chart"><h2>Gradient flow</h2>
<p>{_text(flow_summary(flow, marks))}</p>{marks_html}
<figure id="flow-chart">{_inline_svg(chart)}</figure>
<p class="note">Also as {_link(Path(FLOW_CHART), FLOW_CHART)} and, every number,
{_link(Path(FLOW_DATA), FLOW_DATA)}.</p></section>
<section><h2>Module outputs at the passes recorded in full</h2>{_activation_table(flow)}</section>
<section><h2>Checks</h2>{_checks(passes)}</section>
</body></html>
"""


def write_run(
    folder: Path, title: str, passes: Sequence[Pass], drawn: WrittenPictures, flow: GradientFlow
) -> list[Path]:
    """Write the flow's chart and data and the run's page into `folder`; their paths."""
    layers = flow.layers()
    marks = flow.marks(layers)
    chart = flow_svg(flow, title, layers, marks)
    written = []
    for name, text in (
        (FLOW_CHART, chart),
        (FLOW_DATA, flow.to_json()),
        (RUN_PAGE, render_run_page(title, passes, drawn, flow, chart, marks)),
    ):
        write_atomic(folder / name, text.encode("utf-8"))
        written.append(folder / name)
    return written
