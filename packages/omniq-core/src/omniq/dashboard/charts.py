"""The throughput chart: completions per minute over the last hour, as inline SVG geometry.

No JavaScript library: the template draws one ``<rect>`` per minute from the
numbers computed here, each with a ``<title>`` (a tooltip and the text a
screen reader reads), and the chart's summary is its accessible name.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = ["HEIGHT", "WIDTH", "Bar", "Chart", "throughput_chart"]

#: the SVG's user units (the CSS scales it to the column's width).
WIDTH = 600
HEIGHT = 80
_GAP = 1


@dataclass(frozen=True)
class Bar:
    """One minute: its rectangle and its label."""

    x: float
    y: float
    width: float
    height: float
    label: str


@dataclass(frozen=True)
class Chart:
    """A chart's bars, its peak and its summary (``42 completed in the last hour, peak 7/min``)."""

    bars: list[Bar]
    peak: int
    total: int
    summary: str
    first: str
    last: str


def throughput_chart(per_minute: list[int], now: datetime) -> Chart:
    """Bars for ``per_minute`` (oldest first; the last is the minute of ``now``, so far)."""
    count = len(per_minute)
    peak = max(per_minute, default=0)
    total = sum(per_minute)
    slot = WIDTH / count if count else WIDTH
    current = now.replace(second=0, microsecond=0)
    bars = []
    for index, value in enumerate(per_minute):
        minute = current - timedelta(minutes=count - 1 - index)
        height = (value / peak) * (HEIGHT - 2) if peak else 0.0
        bars.append(
            Bar(
                x=round(index * slot, 2),
                y=round(HEIGHT - height, 2),
                width=round(max(slot - _GAP, 1.0), 2),
                height=round(height, 2),
                label=f"{minute:%H:%M} UTC: {value} completed",
            )
        )
    summary = f"{total} completed in the last hour" + (f", peak {peak}/min" if peak else "")
    start = current - timedelta(minutes=max(count - 1, 0))
    return Chart(bars=bars, peak=peak, total=total, summary=summary, first=f"{start:%H:%M}", last=f"{current:%H:%M}")
