"""The gradient flow's chart: `gradient-flow.svg`, per layer over the run, on log scales.

Three panels over the backward passes: each layer's gradient norm (the vanishing and
exploding thresholds drawn as lines, every norm beyond them marked), its grad:data ratio
‖g‖/‖w‖, and its update:data ratio ‖Δw‖/‖w‖ at each optimizer step. One line per layer (a
module owning parameters), coloured from the first layer to the last (viridis).

Written here as SVG text, not by a plotting library. matplotlib drew it first; it cost a
run 0.6 s to import and 0.8–2.7 s to lay out and draw a 2,000-pass chart (its tick labels
alone are mathtext to parse), more than the whole budget of a traced 2,000-step run. What
the chart needs is small: polylines on a log axis with gaps, decade ticks, a legend.

A series longer than the panel is wide keeps, per pixel column, its lowest and highest
value, so a spike is never lost and a long run's file stays small. The SVG is
deterministic, and its elements carry ids the tests and the run's page find: `layer-N`
(the Nth layer's gradient line), `vanishing-threshold`, `exploding-threshold`,
`vanishing-marks`, `exploding-marks`; its text is text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import TypeGuard

from tracer.model.flow import EXPLODING, VANISHING, FlowMark, GradientFlow, LayerFlow

FLOW_CHART = "gradient-flow.svg"
FLOW_DATA = "gradient-flow.json"
# Beyond this many layers a legend would be longer than the chart: a colour bar instead.
_LEGEND_LAYERS = 12
_MARKED = {"vanishing": "#1f6feb", "exploding": "#cf222e"}  # blue, red: as the pictures'
_GRID, _INK, _QUIET = "#d0d7de", "#24292f", "#57606a"
# viridis at ninths of its range (matplotlib's colormap); the lines take 0 to 0.9 of it.
_VIRIDIS = (
    (68, 1, 84), (72, 36, 117), (65, 68, 135), (53, 95, 141), (42, 120, 142),
    (33, 145, 140), (34, 168, 132), (68, 191, 112), (122, 209, 81), (189, 223, 38),
)  # fmt: skip

# The geometry, in SVG user units (pixels).
_WIDTH, _LEFT, _PLOT_WIDTH = 900, 72, 600
_TOP, _PANEL_HEIGHT, _GAP = 48, 210, 44


def _colour(fraction: float) -> str:
    """viridis at `fraction` (0 to 1) as "#rrggbb"."""
    position = min(max(fraction, 0.0), 1.0) * (len(_VIRIDIS) - 1)
    low = min(int(position), len(_VIRIDIS) - 2)
    t = position - low
    rgb = [round(a + (b - a) * t) for a, b in zip(_VIRIDIS[low], _VIRIDIS[low + 1], strict=True)]
    return "#" + "".join(f"{c:02x}" for c in rgb)


def _layer_colour(i: int, layers: int) -> str:
    return _colour(i / max(layers - 1, 1) * 0.9)


def _drawable(v: float | None) -> TypeGuard[float]:
    """Whether a log axis can show `v` (not missing, zero, negative or non-finite)."""
    return v is not None and math.isfinite(v) and v > 0


def _mark_at(value: float) -> float:
    """Where a marked norm is drawn: its value, kept within a decade of the thresholds
    (zero, NaN and Inf cannot be drawn on a log axis, and would be lost)."""
    if math.isnan(value):
        return EXPLODING * 10
    return min(max(value, VANISHING / 10), EXPLODING * 10)


@dataclass(frozen=True)
class _Panel:
    """One panel's place and scales: x linear over [x_low, x_high], y log10 over
    [10^low, 10^high] (or linear over [0, 1] when it has nothing to show on a log axis)."""

    top: float
    x_low: float
    x_high: float
    low: int
    high: int
    log: bool

    def x(self, value: float) -> float:
        span = self.x_high - self.x_low
        return _LEFT + (0.5 if span == 0 else (value - self.x_low) / span) * _PLOT_WIDTH

    def y(self, value: float) -> float:
        fraction = (math.log10(value) - self.low) / (self.high - self.low) if self.log else value
        return self.top + (1 - fraction) * _PANEL_HEIGHT


def _panel(top: float, xs: Sequence[float], values: Sequence[float | None]) -> _Panel:
    """A panel whose y range takes the positive finite `values` in whole decades."""
    x_low, x_high = (min(xs), max(xs)) if xs else (1.0, 1.0)
    shown = [v for v in values if _drawable(v)]
    if not shown:
        return _Panel(top, x_low, x_high, 0, 1, log=False)
    low = math.floor(math.log10(min(shown)))
    high = math.ceil(math.log10(max(shown)))
    return _Panel(top, x_low, x_high, low, max(high, low + 1), log=True)


def _runs(panel: _Panel, xs: Sequence[float], values: Sequence[float | None]) -> list[str]:
    """A series as polyline point lists, split where a value cannot be drawn; a run
    longer than the panel is wide keeps each pixel column's lowest and highest point."""
    runs: list[list[tuple[float, float]]] = [[]]
    for x, v in zip(xs, values, strict=True):
        if not _drawable(v):
            if runs[-1]:
                runs.append([])
            continue
        runs[-1].append((panel.x(x), panel.y(v)))
    return [" ".join(f"{x:.1f},{y:.1f}" for x, y in _thinned(run)) for run in runs if run]


def _thinned(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    if len(points) <= 2 * _PLOT_WIDTH:
        return points
    columns: dict[int, list[tuple[float, float]]] = {}
    for point in points:  # in order of x: each pixel column's points stay together
        columns.setdefault(round(point[0]), []).append(point)
    kept: list[tuple[float, float]] = []
    for column in columns.values():
        lowest = min(column, key=lambda p: p[1])
        highest = max(column, key=lambda p: p[1])
        kept.extend(sorted({lowest, highest}, key=column.index))
    return kept


def _text(x: float, y: float, text: str, **attributes: str) -> str:
    extra = "".join(f' {k.replace("_", "-")}="{escape(v)}"' for k, v in attributes.items())
    return f'<text x="{x:.1f}" y="{y:.1f}"{extra}>{escape(text)}</text>'


def _x_ticks(low: float, high: float) -> list[int]:
    """Whole numbers from low to high, about eight of them, at 1, 2 or 5 × 10^k apart."""
    span = max(high - low, 1)
    step = 1
    for scale in (10**k for k in range(12)):
        step = next((m * scale for m in (1, 2, 5) if span / (m * scale) <= 8), 0)
        if step:
            break
    first = math.ceil(low / step) * step
    return list(range(int(first), int(high) + 1, int(step)))


def _axes(panel: _Panel, label: str, x_ticks: Sequence[int], with_x_labels: bool) -> list[str]:
    """The panel's frame, grid, ticks and labels."""
    top, bottom, right = panel.top, panel.top + _PANEL_HEIGHT, _LEFT + _PLOT_WIDTH
    grid, labels = [], []
    if panel.log:
        every = math.ceil((panel.high - panel.low) / 8)  # at most about 8 labelled decades
        for decade in range(panel.low, panel.high + 1):
            y = panel.y(10.0**decade)
            grid.append(f'<line x1="{_LEFT}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}"/>')
            if (decade - panel.low) % every == 0:
                labels.append(_text(_LEFT - 6, y + 4, f"1e{decade}", text_anchor="end"))
    for tick in x_ticks:
        x = panel.x(tick)
        grid.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}"/>')
        if with_x_labels:
            labels.append(_text(x, bottom + 16, str(tick), text_anchor="middle"))
    middle = top + _PANEL_HEIGHT / 2
    labels.append(
        f'<text x="{_LEFT - 48}" y="{middle:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 {_LEFT - 48} {middle:.1f})">{escape(label)}</text>'
    )
    frame = f'<rect x="{_LEFT}" y="{top}" width="{_PLOT_WIDTH}" height="{_PANEL_HEIGHT}"/>'
    return [
        f'<g stroke="{_GRID}" stroke-width="0.5">',
        *grid,
        f'</g><g font-size="11" fill="{_INK}">',
        *labels,
        f'</g><g fill="none" stroke="{_QUIET}" stroke-width="0.8">{frame}</g>',
    ]


def _note(panel: _Panel, text: str) -> str:
    return _text(
        _LEFT + _PLOT_WIDTH / 2,
        panel.top + _PANEL_HEIGHT / 2,
        text,
        text_anchor="middle",
        fill=_QUIET,
        font_size="13",
    )


def _marks(panel: _Panel, kind: str, marks: Sequence[FlowMark]) -> list[str]:
    """Triangles at the norms beyond a threshold: pointing down for vanishing, up for
    exploding."""
    mine = [m for m in marks if m.kind == kind]
    if not mine:
        return []
    tip = 5 if kind == "vanishing" else -5
    shapes = []
    for mark in mine:
        x, y = panel.x(mark.pass_number), panel.y(_mark_at(mark.norm))
        shapes.append(f'<path d="M{x - 4:.1f},{y - tip:.1f}h8l-4,{2 * tip}z"/>')
    return [f'<g id="{kind}-marks" fill="{_MARKED[kind]}">', *shapes, "</g>"]


def _legend(layers: Sequence[LayerFlow], marks: Sequence[FlowMark], top: float) -> list[str]:
    x = _LEFT + _PLOT_WIDTH + 16
    parts = ['<g font-size="11">']
    if len(layers) <= _LEGEND_LAYERS:
        for i, layer in enumerate(layers):
            y = top + 14 + 18 * i
            colour = _layer_colour(i, len(layers))
            parts.append(
                f'<line x1="{x}" y1="{y - 4}" x2="{x + 20}" y2="{y - 4}" '
                f'stroke="{colour}" stroke-width="2"/>'
            )
            parts.append(_text(x + 26, y, layer.label, fill=_INK))
        y = top + 14 + 18 * len(layers)
    else:  # a colour bar from the first layer to the last
        stops = "".join(
            f'<stop offset="{k / 9:.3f}" stop-color="{_colour(k / 9 * 0.9)}"/>' for k in range(10)
        )
        parts.append(
            f'<defs><linearGradient id="layer-colours" x1="0" y1="0" x2="0" y2="1">{stops}'
            f'</linearGradient></defs><rect x="{x}" y="{top}" width="14" height="120" '
            f'fill="url(#layer-colours)"/>'
        )
        parts.append(_text(x + 20, top + 10, layers[0].label, fill=_INK))
        parts.append(_text(x + 20, top + 120, layers[-1].label, fill=_INK))
        y = top + 144
    for kind in ("vanishing", "exploding"):
        count = sum(m.kind == kind for m in marks)
        if count:
            parts.append(_text(x, y, f"{kind} ({count})", fill=_MARKED[kind]))
            y += 18
    parts.append("</g>")
    return parts


def flow_svg(
    flow: GradientFlow,
    title: str = "",
    layers: Sequence[LayerFlow] | None = None,
    marks: Sequence[FlowMark] | None = None,
) -> str:
    """The chart as SVG text. `layers`, `marks`: flow.layers() and flow.marks(layers),
    when the caller has them already."""
    layers = flow.layers() if layers is None else layers
    marks = flow.marks(layers) if marks is None else marks
    passes = list(range(1, flow.passes + 1))
    x_axis = passes or [1]
    tops = [_TOP + k * (_PANEL_HEIGHT + _GAP) for k in range(3)]
    thresholds = [VANISHING, EXPLODING] if marks or layers else []
    grad = _panel(tops[0], x_axis, [*(v for layer in layers for v in layer.grad_norm), *thresholds])
    ratio = _panel(tops[1], x_axis, [v for layer in layers for v in layer.grad_to_data])
    update = _panel(tops[2], x_axis, [v for layer in layers for v in layer.update_to_data])
    x_ticks = _x_ticks(grad.x_low, grad.x_high)
    height = tops[2] + _PANEL_HEIGHT + 52
    heading = f"Gradient flow over {flow.passes} backward pass(es), per layer"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{height}" '
        f'viewBox="0 0 {_WIDTH} {height}" font-family="sans-serif">',
        f'<rect width="{_WIDTH}" height="{height}" fill="white"/>',
        _text(
            _WIDTH / 2,
            26,
            f"{title}: {heading}" if title else heading,
            text_anchor="middle",
            font_size="15",
            fill=_INK,
        ),
    ]
    for panel, label, last in (
        (grad, "gradient norm ‖g‖", False),
        (ratio, "grad:data ‖g‖/‖w‖", False),
        (update, "update:data ‖Δw‖/‖w‖", True),
    ):
        parts += _axes(panel, label, x_ticks, with_x_labels=last)
    parts.append(
        _text(
            _LEFT + _PLOT_WIDTH / 2,
            tops[2] + _PANEL_HEIGHT + 38,
            "backward pass (an optimizer step is drawn after the pass before it)",
            text_anchor="middle",
            font_size="12",
            fill=_INK,
        )
    )
    if grad.log and thresholds:
        for kind, threshold, text, below in (
            ("vanishing", VANISHING, "vanishing < 1e-7", True),
            ("exploding", EXPLODING, "exploding > 1e4", False),
        ):
            y = grad.y(threshold)
            parts.append(
                f'<g id="{kind}-threshold" stroke="{_MARKED[kind]}" stroke-dasharray="5,3">'
                f'<line x1="{_LEFT}" y1="{y:.1f}" x2="{_LEFT + _PLOT_WIDTH}" y2="{y:.1f}"/></g>'
            )
            label_y = y + (12 if below else -4)
            parts.append(_text(_LEFT + 4, label_y, text, fill=_MARKED[kind], font_size="10"))
    for i, layer in enumerate(layers):
        colour = _layer_colour(i, len(layers))
        for panel, xs, series, gid in (
            (grad, passes, layer.grad_norm, f' id="layer-{i}"'),
            (ratio, passes, layer.grad_to_data, ""),
            (update, flow.steps, layer.update_to_data, ""),
        ):
            if not panel.log:
                continue
            lines = [f'<polyline points="{points}"/>' for points in _runs(panel, xs, series)]
            if len(xs) < 50 and panel is update:  # few steps: each one a dot too
                lines += [
                    f'<circle cx="{panel.x(x):.1f}" cy="{panel.y(v):.1f}" r="2" fill="{colour}"/>'
                    for x, v in zip(xs, series, strict=True)
                    if _drawable(v)
                ]
            parts.append(
                f'<g{gid} fill="none" stroke="{colour}" stroke-width="1.2" '
                f'stroke-linejoin="round">{"".join(lines)}</g>'
            )
    if grad.log:
        parts += _marks(grad, "vanishing", marks) + _marks(grad, "exploding", marks)
    if not layers:
        parts.append(_note(grad, "no parameter of a module or optimizer"))
    if not flow.steps:
        parts.append(_note(update, "no optimizer step in this run"))
    if layers:
        parts += _legend(layers, marks, tops[0])
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
