"""Server-side SVG charts for the stats page.

Drawn here rather than by a JavaScript library: nothing to vendor or load, the page works with
scripts off, and the markup is plain text a test can read. Every label goes through
``format_html``, so a tenant named ``<script>`` is text, not code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe


@dataclass(frozen=True)
class Series:
    name: str
    css_class: str
    values: Sequence[int]


def _n(value: float) -> str:
    return f"{value:.1f}"


def compact(value: float) -> str:
    """An axis label that fits: 2.5, 40, 1.5k, 2M."""
    for size, suffix in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")):
        if abs(value) >= size:
            return f"{value / size:.1f}".removesuffix(".0") + suffix
    return f"{value:.1f}".removesuffix(".0")


def _nice_max(value: int) -> int:
    """A round axis maximum at or above ``value`` (1, 2, 5 × a power of ten)."""
    if value <= 0:
        return 1
    magnitude = 1
    while magnitude * 10 <= value:
        magnitude *= 10
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude  # pragma: no cover - the loop always returns


def stacked_bars(
    *,
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    width: int = 720,
    height: int = 180,
    label_every: int = 10,
) -> SafeString:
    """Bars per label, the series stacked bottom to top, with a y axis and a legend."""
    left, bottom, top = 48, 22, 10
    plot_w, plot_h = width - left - 8, height - bottom - top
    count = max(len(labels), 1)
    totals = [sum(s.values[i] for s in series) for i in range(len(labels))]
    y_max = _nice_max(max(totals, default=0))
    slot = plot_w / count
    bar_w = max(slot * 0.8, 1.0)
    parts: list[str] = []
    for tick in (0, y_max / 2, y_max) if y_max > 1 else (0, y_max):
        y = top + plot_h - plot_h * tick / y_max
        parts.append(
            format_html(
                '<line class="grid" x1="{}" x2="{}" y1="{}" y2="{}"/>'
                '<text class="axis" x="{}" y="{}" text-anchor="end">{}</text>',
                left,
                width - 8,
                _n(y),
                _n(y),
                left - 6,
                _n(y + 4),
                compact(tick),
            )
        )
    for index, label in enumerate(labels):
        x = left + index * slot + (slot - bar_w) / 2
        base = float(top + plot_h)
        tooltip = ", ".join(f"{s.name} {s.values[index]:,}" for s in series)
        for s in series:
            value = s.values[index]
            if value <= 0:
                continue
            h = plot_h * value / y_max
            base -= h
            parts.append(
                format_html(
                    '<rect class="{}" x="{}" y="{}" width="{}" height="{}">'
                    "<title>{}: {}</title></rect>",
                    s.css_class,
                    _n(x),
                    _n(base),
                    _n(bar_w),
                    _n(h),
                    label,
                    tooltip,
                )
            )
        if index % label_every == 0 or index == len(labels) - 1:
            parts.append(
                format_html(
                    '<text class="axis" x="{}" y="{}" text-anchor="middle">{}</text>',
                    _n(x + bar_w / 2),
                    height - 6,
                    label,
                )
            )
    legend = format_html_join(
        "",
        '<span class="legend-item"><span class="swatch {}"></span>{}</span>',
        ((s.css_class, s.name) for s in series),
    )
    svg = format_html(
        '<svg class="chart" viewBox="0 0 {} {}" role="img" aria-label="{}" '
        'xmlns="http://www.w3.org/2000/svg">{}</svg>',
        width,
        height,
        title,
        mark_safe("".join(parts)),  # noqa: S308 - every part above was built by format_html
    )
    return format_html(
        '<figure class="chart-figure">{}<figcaption><span class="chart-title">{}</span> {}'
        "</figcaption></figure>",
        svg,
        title,
        legend,
    )


def meter(*, value: int, maximum: int, label: str = "") -> SafeString:
    """A horizontal bar showing ``value`` of ``maximum`` (utilisation)."""
    percent = 0.0 if maximum <= 0 else min(100.0, 100 * value / maximum)
    level = "high" if percent >= 90 else "mid" if percent >= 60 else "low"
    return format_html(
        '<span class="meter" title="{}"><span class="meter-fill {}" style="width: {}%">'
        "</span></span> {}/{}",
        label or f"{value} of {maximum}",
        level,
        f"{percent:.0f}",
        value,
        maximum,
    )
