"""The gradient flow's chart: `gradient-flow.svg`, per layer over the run, on log scales.

Three panels over the backward passes: each layer's gradient norm (the vanishing and
exploding thresholds drawn as lines, every norm beyond them marked), its grad:data ratio
‖g‖/‖w‖, and its update:data ratio ‖Δw‖/‖w‖ at each optimizer step. One line per layer (a
module owning parameters), coloured from the first layer to the last.

matplotlib draws it: the ecosystem's standard for such charts, it writes SVG itself (no
browser, no script in the file), handles log scales and gaps, and is imported here only,
when a chart is drawn (`import tracer` stays light). The SVG is deterministic (fixed ids,
no date) and its elements carry ids the tests and the run's page can find: `layer-N`
(the Nth layer's gradient line), `vanishing-threshold`, `exploding-threshold`,
`vanishing-marks`, `exploding-marks`; its text is text, not paths.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

from tracer.model.flow import EXPLODING, VANISHING, GradientFlow, gradient_kind

FLOW_CHART = "gradient-flow.svg"
FLOW_DATA = "gradient-flow.json"
# Beyond this many layers a legend would be longer than the chart: a colour bar instead.
_LEGEND_LAYERS = 12
_MARKED = {"vanishing": "#1f6feb", "exploding": "#cf222e"}  # blue, red: as the pictures'


def _plotted(values: Sequence[float | None]) -> list[float]:
    """Values a log axis can show; NaN (a gap) for a missing, zero or non-finite one."""
    return [v if v is not None and math.isfinite(v) and v > 0 else math.nan for v in values]


def _mark_at(value: float | None) -> float:
    """Where a marked norm is drawn: its value, kept within a decade of the thresholds
    (zero and Inf cannot be drawn on a log axis, and would be lost)."""
    if value is None or math.isnan(value):
        return EXPLODING * 10
    return min(max(value, VANISHING / 10), EXPLODING * 10)


def _has_positive(ax: Any) -> bool:
    """Whether any line or mark on `ax` has a positive finite value (a log axis can
    show it)."""
    values = [y for line in ax.get_lines() for y in line.get_ydata()]
    values += [y for marks in ax.collections for _, y in marks.get_offsets()]
    return any(math.isfinite(v) and v > 0 for v in values)


def flow_svg(flow: GradientFlow, title: str = "") -> str:
    """The chart as SVG text."""
    import matplotlib  # here: only a run that draws its flow pays for it
    from matplotlib.backends.backend_svg import FigureCanvasSVG
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    layers = flow.layers()
    passes = list(range(1, flow.passes + 1))
    with matplotlib.rc_context({"svg.hashsalt": "tracer", "svg.fonttype": "none"}):
        figure = Figure(figsize=(9, 8.5), layout="constrained")
        FigureCanvasSVG(figure)
        grad_ax, ratio_ax, update_ax = figure.subplots(3, 1, sharex=True)
        colours = matplotlib.colormaps["viridis"]
        for i, layer in enumerate(layers):
            colour = colours(i / max(len(layers) - 1, 1) * 0.9)
            grad_ax.plot(
                passes,
                _plotted(layer.grad_norm),
                color=colour,
                lw=1.2,
                label=layer.label,
                gid=f"layer-{i}",
            )
            ratio_ax.plot(passes, _plotted(layer.grad_to_data), color=colour, lw=1.2)
            update_ax.plot(
                flow.steps,
                _plotted(layer.update_to_data),
                color=colour,
                lw=1.2,
                marker="." if len(flow.steps) < 50 else None,
            )
        for kind, threshold, marker in (
            ("vanishing", VANISHING, "v"),
            ("exploding", EXPLODING, "^"),
        ):
            grad_ax.axhline(threshold, color=_MARKED[kind], ls="--", lw=1, gid=f"{kind}-threshold")
            xs, ys = [], []
            for layer in layers:
                for n, g in enumerate(layer.grad_norm, start=1):
                    if gradient_kind(g) == kind:
                        xs.append(n)
                        ys.append(_mark_at(g))
            if xs:
                grad_ax.scatter(
                    xs,
                    ys,
                    color=_MARKED[kind],
                    marker=marker,
                    s=18,
                    zorder=3,
                    gid=f"{kind}-marks",
                    label=f"{kind} ({len(xs)})",
                )
        for y, text, kind, va in (
            (VANISHING, "vanishing < 1e-7", "vanishing", "top"),
            (EXPLODING, "exploding > 1e4", "exploding", "bottom"),
        ):
            grad_ax.text(
                0.005,
                y,
                text,
                color=_MARKED[kind],
                va=va,
                fontsize=8,
                transform=grad_ax.get_yaxis_transform(),
            )
        grad_ax.set_ylabel("gradient norm ‖g‖")
        ratio_ax.set_ylabel("grad:data ‖g‖/‖w‖")
        update_ax.set_ylabel("update:data ‖Δw‖/‖w‖")
        update_ax.set_xlabel("backward pass (an optimizer step is drawn after the pass before it)")
        update_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        for ax in (grad_ax, ratio_ax, update_ax):
            if _has_positive(ax):  # else a log axis has no range to show: left linear
                ax.set_yscale("log")
            ax.grid(True, which="major", color="#d0d7de", lw=0.5)
        if not flow.steps:
            update_ax.text(
                0.5,
                0.5,
                "no optimizer step in this run",
                ha="center",
                transform=update_ax.transAxes,
                color="#57606a",
            )
        if not layers:
            grad_ax.text(
                0.5,
                0.5,
                "no parameter of a module or optimizer",
                ha="center",
                transform=grad_ax.transAxes,
                color="#57606a",
            )
        elif len(layers) <= _LEGEND_LAYERS:
            grad_ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
        else:
            from matplotlib.cm import ScalarMappable
            from matplotlib.colors import Normalize

            bar = figure.colorbar(
                ScalarMappable(Normalize(0, 1 / 0.9), colours), ax=grad_ax, ticks=[0, 1]
            )
            bar.ax.set_yticklabels([layers[0].label, layers[-1].label], fontsize=8)
        heading = f"Gradient flow over {flow.passes} backward pass(es), per layer"
        figure.suptitle(f"{title}: {heading}" if title else heading)
        out = io.StringIO()
        figure.savefig(out, format="svg", metadata={"Date": None})
    return out.getvalue()
