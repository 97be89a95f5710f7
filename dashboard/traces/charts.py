"""A duration-over-time scatter plot, laid out server-side for an inline SVG."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from django.urls import reverse
from django.utils.html import format_html_join
from django.utils.safestring import SafeString

from dashboard.durations import format_us

from .convert import to_datetime
from .selectors import ScatterPoint

WIDTH, HEIGHT = 960, 220
LEFT, RIGHT, TOP, BOTTOM = 64, 12, 10, 26


@dataclass(frozen=True, slots=True)
class Tick:
    position: str
    label: str


@dataclass(frozen=True, slots=True)
class Scatter:
    points: SafeString
    count: int
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    log_scale: bool
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    right_edge: int = WIDTH - RIGHT
    top: int = TOP
    bottom_edge: int = HEIGHT - BOTTOM


def scatter(points: Sequence[ScatterPoint]) -> Scatter | None:
    """Layout for ``points`` (x: start time, y: duration; log scale when spread wide)."""
    if not points:
        return None
    x0 = min(p.start_us for p in points)
    x1 = max(p.start_us for p in points)
    if x1 - x0 < 1_000_000:
        x0, x1 = x0 - 500_000, x1 + 500_000
    low = max(min(p.duration_us for p in points), 1)
    high = max(max(p.duration_us for p in points), low + 1)
    log_scale = high / low > 20
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    bottom = HEIGHT - BOTTOM

    if log_scale:
        lo, hi = math.log10(low), math.log10(high)

        def y_of(value: float) -> float:
            return bottom - (math.log10(max(value, 1)) - lo) / (hi - lo) * plot_h

        decades = range(math.ceil(lo), math.floor(hi) + 1)
        y_values = [10.0**d for d in decades] or [float(low), float(high)]
    else:

        def y_of(value: float) -> float:
            return bottom - value / high * plot_h

        y_values = [high * i / 4 for i in range(5)]

    def x_of(us: int) -> float:
        return LEFT + (us - x0) / (x1 - x0) * plot_w

    base = reverse("traces:search")  # a trace's page is base + "<trace_id>/"
    # Built here rather than in a template loop: 500 points cost ~2 ms instead of ~40.
    plotted = format_html_join(
        "",
        '<a href="{}{}/"><circle class="{}" cx="{}" cy="{}" r="4"><title>{}</title></circle></a>',
        (
            (
                base,
                p.trace_id,
                "pt pt-error" if p.error else "pt",
                f"{x_of(p.start_us):.1f}",
                f"{y_of(p.duration_us):.1f}",
                f"{p.label} · {format_us(p.duration_us)} · {to_datetime(p.start_us):%H:%M:%S}",
            )
            for p in points
        ),
    )
    x_ticks = [
        Tick(f"{x_of(us):.1f}", f"{to_datetime(us):%H:%M:%S}")
        for us in (x0 + (x1 - x0) * i // 4 for i in range(5))
    ]
    y_ticks = [Tick(f"{y_of(v):.1f}", format_us(v)) for v in y_values]
    return Scatter(plotted, len(points), x_ticks, y_ticks, log_scale)
