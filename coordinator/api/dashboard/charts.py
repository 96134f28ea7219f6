"""Metric curves drawn as inline SVG on the server: no chart library, no script, no CDN.

The page embeds the geometry computed here; a browser only has to render SVG.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["Chart", "ChartPoint", "line_chart", "metric_charts"]

WIDTH = 460
HEIGHT = 200
# room for the axis labels: left, right, top, bottom
PAD_L, PAD_R, PAD_T, PAD_B = 52, 16, 14, 30


@dataclass(frozen=True)
class ChartPoint:
    version: int
    value: float
    x: float
    y: float
    deployed: bool


@dataclass(frozen=True)
class Tick:
    label: str
    x: float
    y: float


@dataclass(frozen=True)
class Chart:
    metric: str
    points: list[ChartPoint]
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    width: int = WIDTH
    height: int = HEIGHT
    plot_left: int = PAD_L
    plot_right: int = WIDTH - PAD_R
    plot_top: int = PAD_T
    plot_bottom: int = HEIGHT - PAD_B

    @property
    def polyline(self) -> str:
        """The curve as the ``points`` attribute of an SVG polyline."""
        return " ".join(f"{p.x:.1f},{p.y:.1f}" for p in self.points)

    @property
    def deployed(self) -> ChartPoint | None:
        return next((p for p in self.points if p.deployed), None)


def _scale(value: float, lo: float, hi: float, out_lo: float, out_hi: float) -> float:
    if hi == lo:
        return (out_lo + out_hi) / 2
    return out_lo + (value - lo) / (hi - lo) * (out_hi - out_lo)


def line_chart(
    metric: str, series: Sequence[tuple[int, float]], deployed_version: int | None
) -> Chart:
    """A chart of ``(version, value)`` pairs (sorted by version), the deployed one marked."""
    series = sorted(series)
    versions = [v for v, _ in series]
    values = [y for _, y in series]
    x_lo, x_hi = min(versions), max(versions)
    # the value axis starts at 0 (ranking metrics are >= 0) unless a value is negative
    y_lo, y_hi = min(0.0, *values), max(values)
    if y_hi == y_lo:
        y_hi = y_lo + 1.0
    y_hi *= 1.1 if y_hi > 0 else 1.0
    left, right, top, bottom = PAD_L, WIDTH - PAD_R, PAD_T, HEIGHT - PAD_B
    points = [
        ChartPoint(
            version,
            value,
            _scale(version, x_lo, x_hi, left, right),
            _scale(value, y_lo, y_hi, bottom, top),
            version == deployed_version,
        )
        for version, value in series
    ]
    step = max(1, len(versions) // 8)  # at most ~8 version labels
    x_ticks = [Tick(str(p.version), p.x, bottom + 16) for p in points[::step]]
    y_ticks = [
        Tick(f"{value:.3g}", left - 6, _scale(value, y_lo, y_hi, bottom, top))
        for value in (y_lo + (y_hi - y_lo) * i / 4 for i in range(5))
    ]
    return Chart(metric, points, x_ticks, y_ticks)


def metric_charts(
    rows: Iterable[tuple[int, str, dict[str, float]]],
    deployed_version: int | None,
    split: str = "validation",
) -> list[Chart]:
    """One chart per metric name over the versions evaluated on ``split``.

    ``rows`` are ``(version, split, metrics)`` triples, the aggregated figures.
    """
    series: dict[str, list[tuple[int, float]]] = {}
    for version, row_split, metrics in rows:
        if row_split != split:
            continue
        for name, value in metrics.items():
            series.setdefault(name, []).append((version, float(value)))
    return [line_chart(name, series[name], deployed_version) for name in sorted(series)]
