"""PNG charts with matplotlib's Agg backend (no display), fixed size, small files.

Figures are made with `matplotlib.figure.Figure`, not pyplot: pyplot keeps global state and is
not safe from threads, and charts are drawn by the work executor and the digest senders."""

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

from matplotlib.figure import Figure

from kpi.formatting import fmt

SIZE_INCHES = (8, 3.6)
DPI = 100
COLOURS = {"value": "#1f6feb", "target": "#2da44e", "warn": "#d29922"}


@dataclass(frozen=True)
class TrendChart:
    title: str
    unit: str
    labels: Sequence[str]
    values: Sequence[float | None]  # None leaves a gap
    target: float | None = None
    warn: float | None = None
    better: str = "lower"


def trend_png(chart: TrendChart) -> bytes:
    fig = Figure(figsize=SIZE_INCHES, dpi=DPI)
    _draw(fig.subplots(), chart)
    return _png(fig)


def _png(fig) -> bytes:
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=DPI)
    return out.getvalue()


def _draw(ax, chart: TrendChart) -> None:
    xs = list(range(len(chart.labels)))
    ys = [math.nan if v is None else v for v in chart.values]
    ax.plot(xs, ys, marker="o", markersize=4, linewidth=2, color=COLOURS["value"], label="value")
    if chart.target is not None:
        ax.axhline(
            chart.target,
            color=COLOURS["target"],
            linestyle="--",
            linewidth=1.5,
            label=f"target {fmt(chart.target, chart.unit)}",
        )
    if chart.target is not None and chart.warn is not None:
        low, high = sorted((chart.target, chart.warn))
        ax.axhspan(low, high, color=COLOURS["warn"], alpha=0.15, label="at risk")
    ax.set_title(chart.title, loc="left", fontsize=12)
    ax.set_ylabel(chart.unit)
    step = max(1, len(xs) // 12)
    ax.set_xticks(xs[::step])
    ax.set_xticklabels([chart.labels[i] for i in xs[::step]], rotation=30, ha="right", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.legend(loc="best", fontsize=8, frameon=False)


STATUS_COLOURS = {
    "on_target": "#2da44e",
    "at_risk": "#d29922",
    "off_target": "#cf222e",
    "no_data": "#8c959f",
}
GRID_COLUMNS = 4


@dataclass(frozen=True)
class Spark:
    name: str
    status: str
    values: Sequence[float | None]
    target: float | None = None


def sparkline_grid_png(sparks: Sequence[Spark]) -> bytes:
    """Small multiples, one per KPI, coloured by status: the digest's picture at a glance."""
    rows = max(1, math.ceil(len(sparks) / GRID_COLUMNS))
    fig = Figure(figsize=(8, 1.2 * rows + 0.3), dpi=DPI)
    axes = fig.subplots(rows, GRID_COLUMNS, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, spark in zip(axes.flat, sparks, strict=False):
        _spark(ax, spark)
    return _png(fig)


def _spark(ax, spark: Spark) -> None:
    colour = STATUS_COLOURS.get(spark.status, STATUS_COLOURS["no_data"])
    ys = [math.nan if v is None else v for v in spark.values]
    ax.plot(range(len(ys)), ys, color=colour, linewidth=2)
    if spark.target is not None:
        ax.axhline(spark.target, color="#57606a", linestyle=":", linewidth=1)
    ax.set_title(spark.name[:28], fontsize=8, loc="left", color=colour)
